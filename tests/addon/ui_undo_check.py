"""Run inside real Blender's UI (test_real_blender.py): Generate invoked modally, then one Ctrl+Z.

Prints BEFORE / AFTER RUN / AFTER UNDO / AFTER REDO lines (object and collection names) for the
test to compare, then quits. SPLATSKETCH_BACKEND_PYTHON names the worker's Python.
"""

import os

import bpy

ADDON = "bl_ext.user_default.splatsketch"


def view3d():
    win = bpy.context.window_manager.windows[0]
    for area in win.screen.areas:
        if area.type == "VIEW_3D":
            return dict(window=win, area=area, region=next(r for r in area.regions if r.type == "WINDOW"))


def setup():
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.backend_python = os.environ["SPLATSKETCH_BACKEND_PYTHON"]
    with bpy.context.temp_override(**view3d()):
        bpy.ops.mesh.primitive_monkey_add()
        props = bpy.context.scene.splatsketch
        props.curves, props.iterations, props.train_views, props.image_size = 4, 8, 4, 64
        props.heldout_views, props.use_clip, props.views_per_step = 2, False, 2
        bpy.ops.ed.undo_push(message="before sketch")
        print("BEFORE", names(), flush=True)
        print("INVOKE", bpy.ops.splatsketch.generate("INVOKE_DEFAULT"), flush=True)
    bpy.app.timers.register(wait, first_interval=1.0)


def names():
    return sorted(o.name for o in bpy.data.objects) + sorted("C:" + c.name for c in bpy.data.collections)


def wait():
    state = bpy.context.window_manager.splatsketch
    if state.running:
        return 0.5
    print("RESULT", repr(state.last_result), repr(state.summary), repr(state.last_error), flush=True)
    print("AFTER RUN", names(), flush=True)
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo()
    print("AFTER UNDO", names(), flush=True)
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.redo()
    print("AFTER REDO", names(), flush=True)
    bpy.ops.wm.quit_blender()


bpy.app.timers.register(setup, first_interval=1.0)
bpy.app.timers.register(lambda: bpy.ops.wm.quit_blender(), first_interval=400.0)  # never hang a test
