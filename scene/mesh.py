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


def mixed_winding(mesh) -> bool:
    """Whether some edge between exactly two faces is walked the same way by both (their normals
    disagree about which side is out). Read with ``foreach_get`` so a clean mesh costs little."""
    loops = len(mesh.loops)
    if loops == 0:
        return False
    starts = np.empty(len(mesh.polygons), np.int64)
    totals = np.empty(len(mesh.polygons), np.int64)
    mesh.polygons.foreach_get("loop_start", starts)
    mesh.polygons.foreach_get("loop_total", totals)
    verts = np.empty(loops, np.int64)
    mesh.loops.foreach_get("vertex_index", verts)
    following = np.arange(1, loops + 1)
    following[starts + totals - 1] = starts  # each polygon's last loop is followed by its first
    start, end = verts, verts[following]
    count = len(mesh.vertices)
    _, edge, uses = np.unique(np.minimum(start, end) * count + np.maximum(start, end),
                              return_inverse=True, return_counts=True)
    shared = uses[edge] == 2
    directed = np.unique(start[shared] * count + end[shared])
    return len(directed) < int(shared.sum())


def wind_consistently(mesh, write: bool) -> np.ndarray:
    """Rewind the faces of ``mesh`` one way, outward (Blender's Recalculate Outside).

    Returns a bool per polygon: True where it is reversed. Written back into ``mesh`` only with
    ``write`` (a render copy is ours to change; the evaluated mesh of the user's object is not).
    """
    import bmesh  # importable only once bpy is (the bpy wheel)

    bm = bmesh.new()
    try:
        bm.from_mesh(mesh)
        bm.normal_update()
        before = [face.normal.copy() for face in bm.faces]
        bmesh.ops.recalc_face_normals(bm, faces=bm.faces[:])
        flipped = np.array([face.normal.dot(normal) < 0.0 for face, normal in zip(bm.faces, before)], dtype=bool)
        if write:
            bm.to_mesh(mesh)
    finally:
        bm.free()
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
