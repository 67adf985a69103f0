"""Startup script for looking at *Add > Sketch from Images* in real Blender's UI (Xvfb): sidebar open,
then the operator run as the file browser runs it once a json is picked (EXEC in a window: the run
goes modal, as Generate). SPLATSKETCH_CAPTURE names the capture's transforms_train.json. Used by
hand with ui_screenshot.sh's recipe (see docs/QUALITY.md, "Sketches from pictures")."""
import os

import bpy

ADDON = "bl_ext.user_default.splatsketch"


def view3d():
    win = bpy.context.window_manager.windows[0]
    for area in win.screen.areas:
        if area.type == "VIEW_3D":
            return win, area, next(r for r in area.regions if r.type == "WINDOW")


def setup():
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.backend_python = os.environ["SPLATSKETCH_BACKEND_PYTHON"]
    prefs.allow_geometry_fallback = True
    win, area, region = view3d()
    with bpy.context.temp_override(window=win, area=area, region=region):
        for name in ("Cube", "Light", "Camera"):
            if bpy.data.objects.get(name):
                bpy.data.objects.remove(bpy.data.objects[name])
        area.spaces.active.show_region_ui = True
    props = bpy.context.scene.splatsketch
    props.curves, props.iterations, props.use_clip = 16, 400, False
    bpy.app.timers.register(sketch, first_interval=12.0)  # after the shell has shot the Add menu


def sketch():
    win, area, region = view3d()
    with bpy.context.temp_override(window=win, area=area, region=region):
        result = bpy.ops.splatsketch.sketch_from_images("EXEC_DEFAULT", filepath=os.environ["SPLATSKETCH_CAPTURE"])
        print("EXEC", result, flush=True)
        bpy.ops.view3d.view_all()
    return None


bpy.app.timers.register(setup, first_interval=1.0)
