"""The result as a native Blender Bézier curve object, and the live preview while the worker runs.

One curve of the backend (control points P0..P3 in normalised space) is one 2-point Bézier spline:
point 0 at P0 with handle_right P1, point 1 at P3 with handle_left P2, every handle FREE so Blender
never moves them. The points are written in world space (``center + radius * p``) with an identity
object matrix, so what the artist edits is exactly what the optimiser produced.
"""

from __future__ import annotations

import json

import bpy
import numpy as np

INK_MATERIAL = "SplatSketch Ink"
CREATED_FLAG = "splatsketch_created"  # on collections we made, so remove_sketch may delete them
_INT_LIMIT = 2**31 - 1  # ID properties hold 32-bit ints


def _world_points(control_points, center, radius) -> np.ndarray:
    points = np.asarray(control_points, dtype=np.float64).reshape(-1, 4, 3)
    return np.asarray(center, dtype=np.float64) + float(radius) * points


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
    """(Re)build one 2-point FREE Bézier spline per curve from world-space ``points [K,4,3]``."""
    curve.splines.clear()
    for _ in range(len(points)):
        spline = curve.splines.new('BEZIER')
        spline.bezier_points.add(1)
        spline.use_cyclic_u = False
        for bp in spline.bezier_points:
            bp.handle_left_type = bp.handle_right_type = 'FREE'  # before the handles: no auto moves
    _set_points(curve, points)


def _set_points(curve, points: np.ndarray) -> None:
    """Write coordinates into existing splines; the outer handles mirror the inner ones."""
    for spline, (p0, p1, p2, p3) in zip(curve.splines, points, strict=True):
        first, last = spline.bezier_points
        first.co, first.handle_right, first.handle_left = p0, p1, 2.0 * p0 - p1
        last.co, last.handle_left, last.handle_right = p3, p2, 2.0 * p3 - p2


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

    ``control_points`` [K,4,3] and ``stroke_width`` are in normalised units; the bevel depth is
    ``stroke_width * radius`` (scene units). ``source_obj`` is only read (its name).
    """
    points = _world_points(control_points, center, radius)
    name = name or f"{source_obj.name} Sketch"
    curve = bpy.data.curves.new(name, 'CURVE')
    curve.dimensions = '3D'
    curve.resolution_u = 16
    curve.bevel_mode = 'ROUND'
    curve.bevel_depth = float(stroke_width) * float(radius)
    curve.bevel_resolution = 3
    curve.use_fill_caps = True  # no round caps for curve bevels in Blender 4.2-5.0: closed ends instead
    _fill_splines(curve, points)
    curve.materials.append(_ink_material())
    obj = bpy.data.objects.new(name, curve)  # Blender makes the name unique (".001")
    _sketch_collection(collection_name).objects.link(obj)
    obj["splatsketch_source"] = source_obj.name
    for key, value in (properties or {}).items():
        if value is not None:
            obj[str(key)] = _property_value(value)
    return obj


def update_sketch(obj, control_points, center, radius: float) -> None:
    """Move the curves in place (live preview); rebuild the splines when the count changed (pruning)."""
    points = _world_points(control_points, center, radius)
    curve = obj.data
    if len(curve.splines) != len(points) or any(len(s.bezier_points) != 2 for s in curve.splines):
        _fill_splines(curve, points)
    else:
        _set_points(curve, points)
    curve.update_tag()
    obj.update_tag()


def world_control_points(obj) -> np.ndarray:
    """``[K,4,3]`` float64 world-space control points read back from a sketch object."""
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    points = np.array([[s.bezier_points[0].co, s.bezier_points[0].handle_right,
                        s.bezier_points[1].handle_left, s.bezier_points[1].co]
                       for s in obj.data.splines], dtype=np.float64).reshape(-1, 4, 3)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def remove_sketch(obj) -> None:
    """Remove a (possibly half-made) sketch: object, curve data, then what became unused because of it.

    The ink material goes only if nothing else uses it; the collection only if it is empty and was
    created by SplatSketch. Used when a run fails or is cancelled, so nothing half-made remains.
    """
    curve = obj.data
    materials = [m for m in getattr(curve, "materials", []) if m is not None]
    collections = list(obj.users_collection)
    bpy.data.objects.remove(obj)
    if curve is not None and curve.users == 0:
        bpy.data.curves.remove(curve)
    for material in materials:
        if material.users == 0 and not material.use_fake_user:
            bpy.data.materials.remove(material)
    for collection in collections:
        if collection.get(CREATED_FLAG) and not collection.objects and not collection.children:
            bpy.data.collections.remove(collection)
