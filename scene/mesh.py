"""The source mesh as numpy arrays: evaluated (modifiers applied), triangulated, in world space.

The backend works in a normalised space (bounding sphere at the origin, radius 1); the add-on keeps
``center`` and ``radius`` from :func:`bounding_sphere` to map results back (``world = center + radius * p``).

Faces are handed on wound one way (:func:`mixed_winding`, :func:`wind_consistently`): a mesh whose
faces point every which way (a double-sided export after Blender drops the duplicate of each face) has
a "crease" at every other edge for Freestyle and for the feature lines, and blotchy smooth shading;
the sketch would hatch the whole surface.
"""

from __future__ import annotations

import bpy
import numpy as np


def source_problem(obj) -> str | None:
    """A message for the user if ``obj`` cannot be sketched, else None.

    Checked on the evaluated mesh, so a mesh whose modifiers remove every face is refused too.
    """
    if obj is None:
        return "No object selected: select a mesh object to sketch"
    if obj.type != 'MESH':
        kind = obj.type.lower().replace("_", " ")
        article = "an" if kind[0] in "aeiou" else "a"
        return f"'{obj.name}' is {article} {kind} object, not a mesh: select a mesh object"
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        faces = len(mesh.polygons) if mesh is not None else 0
    finally:
        evaluated.to_mesh_clear()
    if faces == 0:
        return f"Mesh '{obj.name}' has no faces (after modifiers): there is no surface to sketch"
    return None


def _loops(mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vertex, polygon, following)`` per loop: its vertex, its polygon and the loop after it in
    that polygon (``foreach_get``, so a large mesh costs little)."""
    starts = np.empty(len(mesh.polygons), np.int64)
    totals = np.empty(len(mesh.polygons), np.int64)
    mesh.polygons.foreach_get("loop_start", starts)
    mesh.polygons.foreach_get("loop_total", totals)
    vertex = np.empty(len(mesh.loops), np.int64)
    mesh.loops.foreach_get("vertex_index", vertex)
    corner = np.arange(len(vertex)) - np.repeat(np.cumsum(totals) - totals, totals)  # position in its polygon
    own = np.repeat(starts, totals) + corner
    polygon = np.empty(len(vertex), np.int64)
    polygon[own] = np.repeat(np.arange(len(starts)), totals)
    following = np.empty(len(vertex), np.int64)
    following[own] = np.repeat(starts, totals) + (corner + 1) % np.repeat(totals, totals)
    return vertex, polygon, following


def mixed_winding(mesh) -> bool:
    """Whether some edge between exactly two faces is walked the same way by both (their normals
    disagree about which side is out)."""
    if len(mesh.loops) == 0:
        return False
    vertex, _, following = _loops(mesh)
    start, end, count = vertex, vertex[following], len(mesh.vertices)
    _, edge, uses = np.unique(np.minimum(start, end) * count + np.maximum(start, end),
                              return_inverse=True, return_counts=True)
    shared = uses[edge] == 2
    directed = np.unique(start[shared] * count + end[shared])
    return len(directed) < int(shared.sum())


def _follows(face, vertex: int) -> int:
    """The vertex after ``vertex`` round a bmesh face."""
    for loop in face.loops:
        if loop.vert.index == vertex:
            return loop.link_loop_next.vert.index
    return -1


def wind_consistently(mesh, write: bool) -> np.ndarray:
    """Rewind the faces of ``mesh`` one way, outward (Blender's Recalculate Outside, on every
    connected part, so a part wound inward throughout turns outward too).

    Returns a bool per polygon: True where it is reversed (read from the loop order, so a face of
    zero area counts too). Written back into ``mesh`` only with ``write`` (a render copy is ours to
    change; the evaluated mesh of the user's object is not); custom normals are kept, each turned to
    its face's new side, or the smooth shading would stay blotched.
    """
    import bmesh  # importable only once bpy is (the bpy wheel)

    custom = write and mesh.has_custom_normals
    if custom:
        vertex, polygon, _ = _loops(mesh)
        normals = np.empty((len(vertex), 3), np.float32)
        mesh.corner_normals.foreach_get("vector", normals.ravel())
        corners = polygon * len(mesh.vertices) + vertex  # a corner is its (polygon, vertex), whatever the loop order
        by_corner = np.argsort(corners)
    bm = bmesh.new()
    try:
        bm.from_mesh(mesh)
        bm.verts.index_update()
        walked = [(face.loops[0].vert.index, face.loops[0].link_loop_next.vert.index) for face in bm.faces]
        bmesh.ops.recalc_face_normals(bm, faces=bm.faces[:])
        flipped = np.array([_follows(face, first) != second for face, (first, second) in zip(bm.faces, walked)],
                           dtype=bool)
        if write:
            bm.to_mesh(mesh)
    finally:
        bm.free()
    if custom:
        vertex, polygon, following = _loops(mesh)
        kept = normals[by_corner[np.searchsorted(corners[by_corner], polygon * len(mesh.vertices) + vertex)]]
        co = np.empty((len(mesh.vertices), 3))
        mesh.vertices.foreach_get("co", co.ravel())
        sides = np.zeros((len(mesh.polygons), 3))  # each face's normal by Newell's sum, from the new loop order
        np.add.at(sides, polygon, np.cross(co[vertex], co[vertex[following]]))
        facing = np.einsum("ij,ij->i", kept, sides[polygon]) < 0.0
        kept[facing] *= -1.0
        mesh.normals_split_custom_set(kept.tolist())
    return flipped


def evaluated_mesh_world(obj, depsgraph) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices [N,3] float64, faces [F,3] int32)`` of the evaluated mesh, world space.

    Uses the mesh's loop triangles (Blender's own triangulation, cached on the evaluated mesh), so
    nothing is added to ``bpy.data``; the temporary mesh is freed before returning. Triangles of a
    mesh with :func:`mixed_winding` come back wound consistently (the object itself is not changed).
    """
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        if mesh is None:
            raise ValueError(f"'{obj.name}' has no mesh data")
        count = len(mesh.vertices)
        local = np.empty(count * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", local)
        mesh.calc_loop_triangles()
        faces = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", faces)
        faces = faces.reshape(-1, 3)
        if mixed_winding(mesh):
            reversed_polygons = wind_consistently(mesh, write=False)
            polygon = np.empty(len(mesh.loop_triangles), dtype=np.int64)
            mesh.loop_triangles.foreach_get("polygon_index", polygon)
            flip = reversed_polygons[polygon]
            faces[flip] = faces[flip][:, ::-1]
        matrix = np.array(evaluated.matrix_world, dtype=np.float64)
    finally:
        evaluated.to_mesh_clear()
    local = local.reshape(count, 3)
    world = local @ matrix[:3, :3].T + matrix[:3, 3]
    return world, faces


def bounding_sphere(vertices) -> tuple[np.ndarray, float]:
    """Centre (of the bounding box) and radius (farthest vertex from it) of a point set.

    The box centre is stable and cheap; the radius then bounds every vertex, so the unit sphere of
    the normalised space encloses the whole mesh (the cameras are placed around it).
    """
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if len(vertices) == 0 or not np.isfinite(vertices).all():
        raise ValueError("The mesh has no vertices (or non-finite ones): cannot place cameras around it")
    center = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    radius = float(np.linalg.norm(vertices - center, axis=1).max())
    if not radius > 0.0:
        raise ValueError("The mesh has zero size (all vertices at one point): nothing to sketch")
    return center, radius
