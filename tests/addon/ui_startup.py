"""Startup script of ui_screenshot.sh: Suzanne, sidebar open, Generate invoked as a click would (modal);
with SPLATSKETCH_UI_EVALUATE=1 the finished sketch is then selected and Evaluate invoked (modal too)."""
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
        cube = bpy.data.objects.get("Cube")
        if cube:
            bpy.data.objects.remove(cube)
        bpy.ops.mesh.primitive_monkey_add()
        bpy.ops.object.shade_smooth()
        area.spaces.active.show_region_ui = True
        bpy.ops.view3d.view_selected()
    props = bpy.context.scene.splatsketch
    props.curves, props.iterations, props.train_views, props.image_size = 16, 300, 12, 128
    props.heldout_views, props.use_clip = 4, False
    props.seed = 1
    # Region.active_panel_category is read-only: ui_screenshot.sh clicks the "Sketch" tab instead
    bpy.app.timers.register(generate, first_interval=2.0)


def generate():
    win, area, region = view3d()
    with bpy.context.temp_override(window=win, area=area, region=region):
        print("INVOKE", bpy.ops.splatsketch.generate("INVOKE_DEFAULT"), flush=True)
    if os.environ.get("SPLATSKETCH_UI_EVALUATE") == "1":
        bpy.app.timers.register(evaluate_when_done, first_interval=5.0)


def evaluate_when_done():
    state = bpy.context.window_manager.splatsketch
    if state.running or not state.last_result:
        return 1.0  # poll again in a second
    sketch = bpy.data.objects[state.last_result]
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj == sketch)
    bpy.context.view_layer.objects.active = sketch
    win, area, region = view3d()
    with bpy.context.temp_override(window=win, area=area, region=region):
        print("EVALUATE", bpy.ops.splatsketch.evaluate("INVOKE_DEFAULT"), flush=True)
    return None


bpy.app.timers.register(setup, first_interval=1.0)
