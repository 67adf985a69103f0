"""The result as a native Blender Bézier curve object, and the live preview while the worker runs.

One stroke of the backend is one Bézier spline: S cubic segments (control points ``[3S+1,3]`` in
normalised space, anchors at rows 0, 3, ..., 3S) are S+1 spline points, point j at row 3j with
handle_left row 3j-1 and handle_right row 3j+1. Interior joints are G1 (collinear handles), so their
handles are ALIGNED: dragging one handle in Blender keeps the stroke smooth, as an artist expects.
The end points' outer handles mirror the inner ones and are FREE (they shape nothing).

The tubes are drawn by the object's strokes modifier (``stroke_style``): the artist's stroke limit,
width, taper and drawn-on animation live there, and the splines stay plain editable curves.

The object sits at the source's centre (its location; no rotation, scale 1) and the points are
written relative to it: ``world = center + radius * p`` is worked out in float64 and Blender's float32
then only holds the small offsets, so a sketch a million units from the origin keeps its shape
instead of snapping to a 1/16-unit grid. Lengths stay in scene units (the bevel too).
"""

from __future__ import annotations

import json

import bpy
import mathutils
import numpy as np

from . import id_keys, stroke_style

INK_MATERIAL = "SplatSketch Ink"
CREATED_FLAG = id_keys.CREATED  # on collections we made, so remove_sketch may delete them
_INT_LIMIT = 2**31 - 1  # ID properties hold 32-bit ints


def _local_points(control_points, center, radius, origin) -> np.ndarray:
    """Normalised ``control_points`` as offsets from ``origin`` (the object's location), in float64."""
    points = np.asarray(control_points, dtype=np.float64)
    if points.size == 0:
        points = points.reshape(0, 4, 3)
    if points.ndim != 3 or points.shape[2] != 3 or points.shape[1] < 4 or (points.shape[1] - 1) % 3:
        raise ValueError(f"stroke control points must be [K, 3*S+1, 3], got {list(points.shape)}")
    return (np.asarray(center, dtype=np.float64) - np.asarray(origin, dtype=np.float64)) + float(radius) * points


def _location(obj) -> np.ndarray:
    """The object's world location as Blender stores it (float32 values, read as float64)."""
    return np.array(obj.matrix_world.translation, dtype=np.float64)


def _ink_material():
    """The shared black material (reused across runs): black in Workbench, EEVEE and Cycles."""
    material = bpy.data.materials.get(INK_MATERIAL)
    if material is None:
        material = bpy.data.materials.new(INK_MATERIAL)
        material.diffuse_color = (0.0, 0.0, 0.0, 1.0)
        material.roughness = 1.0
        material.specular_intensity = 0.0
        if material.node_tree is None:  # Blender < 5.0
            material.use_nodes = True
        for node in material.node_tree.nodes:
            if node.type == 'BSDF_PRINCIPLED':
                node.inputs["Base Color"].default_value = (0.0, 0.0, 0.0, 1.0)
                node.inputs["Roughness"].default_value = 1.0
    return material


def _sketch_collection(name: str):
    """The result collection, created under the scene's master collection (and linked) if missing."""
    scene = bpy.context.scene
    collection = bpy.data.collections.get(name)
    if collection is None:
        collection = bpy.data.collections.new(name)
        collection[CREATED_FLAG] = True
    if collection not in scene.collection.children_recursive:
        scene.collection.children.link(collection)
    return collection


def _fill_splines(curve, points: np.ndarray) -> None:
    """(Re)build one Bézier spline of S+1 points per stroke from object-space ``points [K,3S+1,3]``."""
    curve.splines.clear()
    anchors = (points.shape[1] - 1) // 3 + 1
    for _ in range(len(points)):
        spline = curve.splines.new('BEZIER')
        spline.bezier_points.add(anchors - 1)
        spline.use_cyclic_u = False
        for bp in spline.bezier_points:
            bp.handle_left_type = bp.handle_right_type = 'FREE'  # before the handles: no auto moves
    _set_points(curve, points)


def _set_points(curve, points: np.ndarray, splines=None) -> None:
    """Write coordinates into existing splines (``splines``: those, else all), then make the interior
    joints ALIGNED: their handles are collinear already, so Blender keeps them where they are."""
    for spline, stroke in zip(curve.splines if splines is None else splines, points, strict=True):
        bps = spline.bezier_points
        last = len(bps) - 1
        for j, bp in enumerate(bps):
            if 0 < j < last:
                bp.handle_left_type = bp.handle_right_type = 'FREE'  # so the writes below are kept as given
            co = stroke[3 * j]
            left = stroke[3 * j - 1] if j > 0 else 2.0 * co - stroke[1]
            right = stroke[3 * j + 1] if j < last else 2.0 * co - stroke[3 * j - 1]
            bp.co, bp.handle_left, bp.handle_right = co, left, right
        for bp in list(bps)[1:last]:
            bp.handle_left_type = bp.handle_right_type = 'ALIGNED'


def _property_value(value):
    """Custom properties hold scalars, strings and flat number lists; anything else goes as JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or isinstance(value, (float, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) <= _INT_LIMIT else float(value)
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= _INT_LIMIT for v in value):
        return [float(v) for v in value] if any(isinstance(v, float) for v in value) else list(value)
    return json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def create_sketch(source_obj, control_points, center, radius: float, stroke_width: float, name: str | None = None,
                  collection_name: str = "SplatSketch", properties: dict | None = None):
    """Make the result Curve object "<source> Sketch" in the "SplatSketch" collection.

    ``control_points`` [K,3S+1,3] (most important first) and ``stroke_width`` are in normalised units;
    the tubes' radius is ``stroke_width * radius`` (scene units), all strokes shown. ``source_obj`` is
    only read (its name); it is None for a
    sketch made from pictures (then ``name`` is required and ``properties`` say where it came from).
    """
    name = name or f"{source_obj.name} Sketch"
    curve = bpy.data.curves.new(name, 'CURVE')
    curve.dimensions = '3D'
    curve.resolution_u = 16
    curve.materials.append(_ink_material())
    obj = bpy.data.objects.new(name, curve)  # Blender makes the name unique (".001")
    # matrix_world, not location: it takes effect at once, before the next depsgraph update
    obj.matrix_world = mathutils.Matrix.Translation([float(c) for c in center])
    _fill_splines(curve, _local_points(control_points, center, radius, _location(obj)))
    stroke_style.add_style(obj, float(stroke_width) * float(radius))
    _sketch_collection(collection_name).objects.link(obj)
    if source_obj is not None:
        obj[id_keys.SOURCE] = source_obj.name
    for key, value in (properties or {}).items():
        if value is not None:
            obj[str(key)] = _property_value(value)
    return obj


def update_sketch(obj, control_points, center, radius: float) -> None:
    """Move the curves in place (live preview); rebuild the splines when the count changed (pruning)."""
    points = _local_points(control_points, center, radius, _location(obj))
    curve = obj.data
    anchors = (points.shape[1] - 1) // 3 + 1
    if len(curve.splines) != len(points) or any(len(s.bezier_points) != anchors for s in curve.splines):
        _fill_splines(curve, points)
    else:
        _set_points(curve, points)
    curve.update_tag()
    obj.update_tag()


def replace_strokes(obj, keep, control_points, center, radius: float, width: float) -> None:
    """Keep the splines ``keep`` (indices) exactly as they are, remove the others, and add one spline
    per new stroke ``control_points [K,3S+1,3]`` (normalised) after them; every stroke shown. A curve
    without the strokes modifier (drawn by hand) gets it, with tubes of radius ``width`` (scene units)."""
    curve = obj.data
    keep = set(keep)
    for index in sorted(set(range(len(curve.splines))) - keep, reverse=True):
        curve.splines.remove(curve.splines[index])
    points = _local_points(control_points, center, radius, _location(obj))
    linear = np.array(obj.matrix_world, dtype=np.float64)[:3, :3]
    if not np.allclose(linear, np.eye(3)):  # a curve drawn by hand may be rotated or scaled
        points = points @ np.linalg.inv(linear).T
    anchors = (points.shape[1] - 1) // 3 + 1
    first = len(curve.splines)
    for _ in range(len(points)):
        spline = curve.splines.new('BEZIER')
        spline.bezier_points.add(anchors - 1)
        spline.use_cyclic_u = False
        for bp in spline.bezier_points:
            bp.handle_left_type = bp.handle_right_type = 'FREE'
    _set_points(curve, points, list(curve.splines)[first:])
    if stroke_style.style_modifier(obj) is None:  # strokes drawn by hand: drawn as a sketch from now on
        if not curve.materials:
            curve.materials.append(_ink_material())
        stroke_style.add_style(obj, width)
    stroke_style.set_input(obj, "Stroke Limit", stroke_style.ALL_STROKES)
    curve.update_tag()
    obj.update_tag()


def world_control_points(obj, shown_only: bool = False, indices=None) -> np.ndarray:
    """``[K,3S+1,3]`` float64 world-space control points read back from a sketch object; with
    ``shown_only`` only the strokes the artist has shown (Strokes Shown), as they are scored; with
    ``indices`` only those splines.

    S is the longest spline's segment count; a shorter spline (an artist may delete or add points) is
    padded with zero-length segments at its end point, which draw nothing. A spline of one point is a
    zero-length stroke; a cyclic spline is read open (its closing segment is not drawn by the backend).
    """
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    strokes = []
    splines = list(obj.data.splines)
    if indices is not None:
        splines = [splines[i] for i in indices]
    for spline in splines[:stroke_style.shown_count(obj)] if shown_only else splines:
        bps = spline.bezier_points
        rows = [bps[0].co]
        for a, b in zip(bps[:-1], bps[1:]):
            rows += [a.handle_right, b.handle_left, b.co]
        strokes.append(np.array(rows, dtype=np.float64).reshape(-1, 3))
    width = max((len(r) for r in strokes), default=4)
    width = max(width, 4)
    padded = [np.vstack([r, np.repeat(r[-1:], width - len(r), axis=0)]) for r in strokes]
    points = np.array(padded, dtype=np.float64).reshape(-1, width, 3)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def normalised_copy(obj, center, radius: float):
    """A copy of the sketch ``obj`` (object and curve) in the normalised frame (``world = center +
    radius * p``), identity matrix, bevel scaled alike, handles FREE so they stay where written.

    For pictures of it: Blender builds a curve's tube in object space, where a sketch a millionth of
    a unit across (or a million units away, in float32) has no room left for one.
    """
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    copy = obj.copy()
    copy.data = obj.data.copy()
    copy.matrix_world = mathutils.Matrix.Identity(4)
    center = np.asarray(center, dtype=np.float64)
    for spline in copy.data.splines:
        bps = spline.bezier_points
        for bp in bps:
            bp.handle_left_type = bp.handle_right_type = 'FREE'
        for key in ("co", "handle_left", "handle_right"):
            local = np.empty(len(bps) * 3)
            bps.foreach_get(key, local)
            world = local.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
            bps.foreach_set(key, ((world - center) / radius).ravel())
    scale = float(np.cbrt(abs(np.linalg.det(matrix[:3, :3]))))  # the object's own (mean) scale
    stroke_style.set_stroke_width(copy, stroke_style.stroke_width(obj) * scale / radius)
    if stroke_style.style_modifier(copy) is not None:  # the whole sketch, not the animation's current frame
        copy.animation_data_clear()
        stroke_style.set_input(copy, "Drawn", 1.0)
    return copy


def remove_sketch(obj) -> None:
    """Remove a (possibly half-made) sketch: object, curve data, then what became unused because of it.

    The ink material and the strokes' node group go only if nothing else uses them; the collection
    only if it is empty and was created by SplatSketch. Used when a run fails or is cancelled, so
    nothing half-made remains.
    """
    curve = obj.data
    materials = [m for m in getattr(curve, "materials", []) if m is not None]
    groups = [m.node_group for m in obj.modifiers if m.type == "NODES" and m.node_group is not None]
    collections = list(obj.users_collection)
    bpy.data.objects.remove(obj)
    for group in groups:
        if group.users == 0 and not group.use_fake_user:
            bpy.data.node_groups.remove(group)
    if curve is not None and curve.users == 0:
        bpy.data.curves.remove(curve)
    for material in materials:
        if material.users == 0 and not material.use_fake_user:
            bpy.data.materials.remove(material)
    for collection in collections:
        if collection.get(CREATED_FLAG) and not collection.objects and not collection.children:
            bpy.data.collections.remove(collection)
