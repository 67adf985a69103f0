"""The Blender half of evaluating a sketch: a folder the backend can score (``python -m backend
evaluate DIR --report``) without ever having seen the optimisation's views.

Written for a finished sketch object and its source mesh: ``result.npz`` (the curves, normalised),
``mesh.npz``, ``job.json`` (where the normalised space sits), ``eval.npz`` (24 orbit views at 256 px,
Fibonacci phase 0.25, disjoint from the training phase 0 and held-out phase 0.5 sets, with Freestyle
visible and hidden lines) and ``turntable.npz`` (one turn at 20 degrees elevation for the GIF).
The quality suite (bench/quality.py) writes its evaluation views with the same functions, so a user's
figures and the suite's are the same measurement.
"""

from __future__ import annotations

import math
import os
import shutil

import numpy as np

from ..contract import cameras, protocol
from . import mesh, targets
from .sketch_object import world_control_points
from .stroke_style import shown_count, stroke_width

EVAL_VIEWS, EVAL_SIZE, EVAL_PHASE = 24, 256, 0.25
TURNTABLE_FRAMES, TURNTABLE_SIZE, TURNTABLE_ELEVATION = 24, 160, 20.0


def eval_cameras(count: int = EVAL_VIEWS, size: int = EVAL_SIZE, phase: float = EVAL_PHASE):
    return cameras.orbit_cameras(count, size, phase=phase)


def turntable_cameras(frames: int = TURNTABLE_FRAMES, size: int = TURNTABLE_SIZE,
                      elevation: float = TURNTABLE_ELEVATION):
    """One turn around the object at a fixed elevation (normalised space), starting at a 3/4 view."""
    distance = cameras.orbit_distance()
    e = math.radians(elevation)
    angles = np.linspace(0, 2 * math.pi, frames, endpoint=False) + math.pi / 4
    eyes = distance * np.stack([np.cos(e) * np.cos(angles), np.cos(e) * np.sin(angles),
                                np.full(frames, np.sin(e))], axis=1)
    Ks = np.repeat(cameras.intrinsics(size)[None], frames, 0)
    return np.stack([cameras.look_at(eye) for eye in eyes]).astype(np.float32), Ks.astype(np.float32)


def iter_write_views(path: str, obj, viewmats, Ks, size: int, center, radius: float):
    """Render ``obj`` from the given cameras (one view per step) into ``path`` (views.npz keys)."""
    views = yield from targets.iter_render_targets(obj, viewmats, Ks, size, center, radius)
    protocol.write_npz(path, viewmats=np.asarray(viewmats, np.float32), Ks=np.asarray(Ks, np.float32),
                       rgba=views["rgba"], lines=views["lines"], lines_hidden=views["lines_hidden"])


def iter_write_eval_views(folder: str, obj, center, radius: float, turntable: bool = True):
    """``eval.npz`` (and ``turntable.npz``) for ``obj``; yields ``(views_done, views)``."""
    sets = [(protocol.EVAL_NPZ, *eval_cameras(), EVAL_SIZE)]
    if turntable:
        sets.append((protocol.TURNTABLE_NPZ, *turntable_cameras(), TURNTABLE_SIZE))
    total, done = sum(len(s[1]) for s in sets), 0
    for name, viewmats, Ks, size in sets:
        for step, _ in iter_write_views(os.path.join(folder, name), obj, viewmats, Ks, size, center, radius):
            yield done + step, total
        done += len(viewmats)


def iter_write_evaluation(folder: str, sketch_obj, source_obj, depsgraph, turntable: bool = True):
    """Everything ``python -m backend evaluate`` needs for ``sketch_obj`` against ``source_obj``.

    Yields ``(views_done, views)`` while the evaluation views render; on any failure (or closing
    the generator early) ``folder`` is removed, so no half-written evaluation remains.
    """
    problem = mesh.source_problem(source_obj)
    if problem:
        raise ValueError(problem)
    if sketch_obj.type != 'CURVE' or not len(sketch_obj.data.splines) or any(
            s.type != 'BEZIER' or len(s.bezier_points) < 2 for s in sketch_obj.data.splines):
        raise ValueError(f"'{sketch_obj.name}' is not a SplatSketch result (open Bézier splines of 2 or more points)")
    if not shown_count(sketch_obj):
        raise ValueError(f"'{sketch_obj.name}' has no strokes to show: nothing to evaluate")
    os.makedirs(folder, exist_ok=True)
    try:
        vertices, faces = mesh.evaluated_mesh_world(source_obj, depsgraph)
        center, radius = mesh.bounding_sphere(vertices)
        control_points = (world_control_points(sketch_obj, shown_only=True) - center) / radius
        width = stroke_width(sketch_obj) / radius
        source = {"name": source_obj.name, "center": [float(c) for c in center], "radius": float(radius),
                  "sketch": sketch_obj.name}
        protocol.write_job_folder(
            folder, {}, source, mesh={"vertices": (vertices - center) / radius, "faces": faces},
            result={"control_points": control_points.astype(np.float32),
                    "widths": np.full(len(control_points), width, np.float32)})
        yield from iter_write_eval_views(folder, source_obj, center, radius, turntable)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return source
