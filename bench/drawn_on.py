"""A 4-second turntable of a sketch drawing itself on (the README's first picture), in real Blender.

Run inside Blender with the extension installed (it uses the add-on's own operators, as an artist
would: Pen strokes, Animate Drawing over the first 3 seconds):

    blender -b --python bench/drawn_on.py -- JOB_DIR MESH OUT_DIR

``JOB_DIR`` is a sketch's job folder (``--job-dir`` of the headless command: job.json, result.npz),
``MESH`` the file it was made from; the sketch is rebuilt from them (a .blend saved by a newer
Blender does not open in an older one). Writes ``OUT_DIR/frames/f_0001.png ...`` (96 frames, 400 px,
Workbench), ``OUT_DIR/animated.blend`` and ``OUT_DIR/checks.json``: the drawn-on keys read back
after reopening the file, and the Grease Pencil copy made from it (strokes, Build modifier).
"""

import importlib
import json
import math
import os
import sys

import bpy
import numpy as np

FPS, FRAMES, DRAWN_BY = 24, 96, 72
ADDON = next((m for m in sys.modules if m.startswith("bl_ext.") and m.endswith(".splatsketch")), None)


def rebuild(job: str, mesh: str):
    """The source mesh imported and the sketch made from the job's result, as the add-on makes it."""
    meta = json.load(open(os.path.join(job, "job.json"), encoding="utf-8"))
    bpy.ops.wm.read_homefile(use_empty=True)
    if mesh.lower().endswith((".glb", ".gltf")):
        bpy.ops.import_scene.gltf(filepath=mesh)
    else:
        bpy.ops.wm.obj_import(filepath=mesh)
    source = next(o for o in bpy.data.objects if o.type == "MESH")
    sketch_object = importlib.import_module(ADDON + ".scene.sketch_object")
    with np.load(os.path.join(job, "result.npz")) as result:
        points = result["control_points"]
    metrics = open(os.path.join(job, "result.json"), encoding="utf-8").read()
    return source, sketch_object.create_sketch(source, points, meta["source"]["center"], meta["source"]["radius"],
                                               meta["settings"]["stroke_width"],
                                               properties={"splatsketch_metrics": metrics})


def turntable(scene, sketch) -> None:
    """A camera on an empty that turns once over the clip, white world, flat black ink."""
    pivot = bpy.data.objects.new("Turntable", None)
    scene.collection.objects.link(pivot)
    pivot.location = sketch.matrix_world.translation
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.parent, scene.camera = pivot, camera
    radius = max(sketch.dimensions) * 0.5
    camera.location = (0.0, -2.9 * radius, 1.1 * radius)
    camera.rotation_euler = (math.atan2(2.9, 1.1), 0.0, 0.0)
    edit = bpy.context.preferences.edit
    interpolation, edit.keyframe_new_interpolation_type = edit.keyframe_new_interpolation_type, "LINEAR"
    for frame, angle in ((1, 0.0), (FRAMES + 1, 2 * math.pi)):  # an even turn
        pivot.rotation_euler = (0.0, 0.0, angle)
        pivot.keyframe_insert("rotation_euler", index=2, frame=frame)
    edit.keyframe_new_interpolation_type = interpolation
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light, scene.display.shading.color_type = "FLAT", "MATERIAL"
    scene.world = scene.world or bpy.data.worlds.new("World")
    scene.world.color = (1.0, 1.0, 1.0)
    scene.view_settings.view_transform = "Standard"
    scene.render.resolution_x = scene.render.resolution_y = 400
    scene.render.image_settings.file_format = "PNG"


def main(job: str, mesh: str, out: str) -> None:
    os.makedirs(os.path.join(out, "frames"), exist_ok=True)
    source, sketch = rebuild(job, mesh)
    source.hide_render = True
    context, scene = bpy.context, bpy.context.scene
    context.view_layer.objects.active = sketch
    context.window_manager.splatsketch.last_result = sketch.name
    scene.render.fps, scene.frame_start, scene.frame_end = FPS, 1, FRAMES
    assert bpy.ops.splatsketch.stroke_style(style="PEN") == {"FINISHED"}
    assert bpy.ops.splatsketch.animate_drawing(frame_start=1, frame_end=DRAWN_BY, overlap=0.3) == {"FINISHED"}
    turntable(scene, sketch)
    scene.render.filepath = os.path.join(out, "frames", "f_")
    bpy.ops.render.render(animation=True)
    path, name = os.path.join(out, "animated.blend"), sketch.name
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    sketch = bpy.data.objects[name]
    style = importlib.import_module(ADDON + ".scene.stroke_style")
    checks = {"blender": bpy.app.version_string, "drawing_range_after_reopen": style.drawing_range(sketch)}
    context.window_manager.splatsketch.last_result = name
    before = set(bpy.data.objects)
    checks["convert"] = sorted(bpy.ops.splatsketch.convert_grease_pencil())
    gp = next(o for o in bpy.data.objects if o not in before)
    modifiers = getattr(gp, "grease_pencil_modifiers", None) or gp.modifiers
    checks["grease_pencil"] = {"type": gp.type, "build": [(m.mode, m.length) for m in modifiers if "BUILD" in m.type]}
    with open(os.path.join(out, "checks.json"), "w", encoding="utf-8") as f:
        json.dump(checks, f, indent=1)
    print("CHECKS", json.dumps(checks))


if __name__ == "__main__":
    if ADDON is None:
        sys.exit("drawn_on.py: the SplatSketch extension is not installed in this Blender")
    main(*sys.argv[sys.argv.index("--") + 1:][:3])
