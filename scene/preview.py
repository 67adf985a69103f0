"""A contact sheet PNG: the object (top row) above its sketch (bottom row) from a few orbit views.

For the CLI's ``--preview`` and for looking at results. Rendered in temporary scenes holding copies
of the object and the sketch, so the user's scene is never touched; the copies are moved into the
normalised frame (the bounding sphere at the origin, radius 1), so an object a millionth of a unit
across or a million units away looks like any other; the sketch's bevel is widened on the copy when
it would be thinner than a pixel. Workbench renders both rows, or Cycles on the CPU
where there is no GPU context (:func:`.targets.surface_engine`), as for the target views.
"""

from __future__ import annotations

import os

import numpy as np

from ..contract import cameras
from ..pictures import pixels
from . import mesh, targets
from .sketch_object import normalised_copy, world_control_points
from .stroke_style import set_stroke_width, stroke_width

SHEET_MARGIN = 4
CYCLES_SKETCH_SAMPLES = 16


def _sketch_scene(sketch_copy, size: int, min_bevel: float, engine: str):
    """The sketch's copy in black on a transparent film (its own black material in Workbench's flat
    light; a black emission override in Cycles)."""
    scene = targets.new_scene("SplatSketch Preview", engine, size)
    scene.collection.objects.link(sketch_copy)
    if engine == 'BLENDER_WORKBENCH':
        scene.display.shading.light = 'FLAT'
        scene.display.shading.color_type = 'MATERIAL'
    else:
        targets.cycles_settings(scene, CYCLES_SKETCH_SAMPLES)
        scene.view_layers[0].material_override = targets.shader_material(
            "SplatSketch Preview Ink", "ShaderNodeEmission", (0.0, 0.0, 0.0))
    scene.render.image_settings.file_format = 'PNG'
    scene.render.image_settings.color_mode = 'RGBA'
    set_stroke_width(sketch_copy, max(stroke_width(sketch_copy), min_bevel))
    return scene


def render_contact_sheet(source_obj, sketch_obj, path: str, views: int = 4, size: int = 256, title: str = "") -> str:
    """Write the sheet to ``path`` and return it: ``views`` columns of ``size`` px, two rows.

    ``title`` is stored in the PNG as a text chunk (no font rendering in a headless Blender).
    """
    import bpy

    depsgraph = bpy.context.evaluated_depsgraph_get()
    vertices, _ = mesh.evaluated_mesh_world(source_obj, depsgraph)
    center, radius = mesh.bounding_sphere(np.concatenate([vertices, world_control_points(sketch_obj).reshape(-1, 3)]))
    viewmats, Ks = cameras.orbit_cameras(views, size, elevation_deg=(5.0, 40.0))
    rows = [[], []]
    with targets.temporary_data() as folder:  # both copies in the normalised frame: see _normalise_mesh
        engine = targets.surface_engine()
        source_copy = targets.copy_evaluated(source_obj)
        _normalise_mesh(source_copy, center, radius)
        sketch_copy = normalised_copy(sketch_obj, center, radius)
        surface = targets.surface_scene(source_copy, size, engine)
        min_bevel = 0.75 * cameras.orbit_distance() / float(Ks[0, 0, 0])  # 3/4 of a pixel at the centre
        lines = _sketch_scene(sketch_copy, size, min_bevel=min_bevel, engine=engine)
        cam = surface.camera
        lines.collection.objects.link(cam)
        lines.camera = cam
        for v in range(views):
            targets.place_camera(cam, viewmats[v], Ks[v], size, np.zeros(3), 1.0)
            exr = targets.render_still(surface, os.path.join(folder, f"object_{v}.exr"))
            rows[0].append(pixels.over_white(pixels.surface_rgba(pixels.read_exr_channels(exr))))
            sketch = targets.render_still(lines, os.path.join(folder, f"sketch_{v}.png"))
            rows[1].append(pixels.over_white(targets.read_image_rgba(sketch)))
    sheet = pixels.contact_sheet(rows, SHEET_MARGIN)
    return pixels.write_png(path, sheet, text={"Title": title} if title else None)


def _normalise_mesh(copy, center, radius: float) -> None:
    """Move the mesh copy ``copy`` into the normalised frame (``world = center + radius * p``), in
    float64: its vertices become ``(v + offset) / radius`` around its own centre and its matrix keeps
    only the rotation and scale. Cameras then sit a few units away, as for any object, instead of a
    millionth of a unit or a million units from the origin, where float32 has no precision left.
    """
    import mathutils

    matrix = np.array(copy.matrix_world, dtype=np.float64)
    linear = matrix[:3, :3]
    offset = np.linalg.pinv(linear) @ (matrix[:3, 3] - np.asarray(center, dtype=np.float64))
    vertices = copy.data.vertices
    co = np.empty(len(vertices) * 3)
    vertices.foreach_get("co", co)
    vertices.foreach_set("co", ((co.reshape(-1, 3) + offset) / radius).ravel())
    copy.data.update()
    normalised = np.eye(4)
    normalised[:3, :3] = linear
    copy.matrix_world = mathutils.Matrix(normalised.tolist())


def _centred(picture: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The picture padded to a square around its principal point, and its K there: the only camera
    Blender's renders take (square pixels, centred principal point)."""
    h, w = picture.shape[:2]
    cx, cy = float(K[0, 2]), float(K[1, 2])
    size = int(np.ceil(2 * max(cx, w - cx, cy, h - cy)))
    left, top = int(round(size / 2 - cx)), int(round(size / 2 - cy))
    square = np.zeros((size, size, 4), np.uint8)
    square[top:top + h, left:left + w] = picture[:size - top, :size - left]
    K = K.copy()
    K[0, 2] = K[1, 2] = size / 2
    K[1, 1] = K[0, 0]  # Blender's camera has square pixels: a capture with fx != fy is previewed stretched
    return square, K


def render_capture_sheet(cap, sketch_obj, center, radius: float, path: str, views: int = 4, size: int = 256,
                         title: str = "") -> str:
    """The sheet for a sketch made from pictures: ``views`` of the capture's training pictures (top
    row) above the sketch drawn from the same cameras (bottom row)."""
    from ..pictures import capture, visual_hull

    frames = [cap.train[i] for i in capture.pick_spread(cap.train, views)]
    rows = [[], []]
    with targets.temporary_data() as folder:
        sketch_copy = normalised_copy(sketch_obj, center, radius)
        engine = targets.surface_engine()
        scenes: dict = {}
        for v, frame in enumerate(frames):
            picture = targets.read_image_rgba(frame.image)
            full = (picture.shape[1], picture.shape[0])
            width, height = pixels.target_size(*full, size)
            viewmat, K = capture.camera(frame, *full)
            K[:2] *= np.array([[width / full[0]], [height / full[1]]])
            picture, K = _centred(pixels.resize_rgba(picture, width, height), K)
            side = picture.shape[0]
            if side not in scenes:
                distance = float(np.linalg.norm(np.linalg.inv(viewmat)[:3, 3] - center)) / radius  # normalised
                scenes[side] = _sketch_scene(sketch_copy if not scenes else sketch_copy.copy(), side, engine=engine,
                                             min_bevel=0.75 * distance / float(K[0, 0]))
                targets.new_camera(scenes[side])
            scene = scenes[side]
            targets.place_camera(scene.camera, visual_hull.normalised_viewmat(viewmat, center, radius), K, side,
                                 np.zeros(3), 1.0)
            rows[0].append(pixels.over_white(picture))
            drawn = targets.render_still(scene, os.path.join(folder, f"sketch_{v}.png"))
            rows[1].append(pixels.over_white(targets.read_image_rgba(drawn)))
    return pixels.write_png(path, pixels.contact_sheet(rows, SHEET_MARGIN), text={"Title": title} if title else None)
