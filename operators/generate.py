"""Generate / Cancel: thin operators over :class:`jobs.sketch.SketchRun`, driven by
:class:`operators.driver.ModalRun` (modal from the UI, blocking from scripts)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty

from ..backend.config import SettingsError
from ..jobs.runner import RunError
from ..jobs.sketch import SketchRun
from ..preferences import backend_python, get_preferences, user_dir
from ..properties import job_params, settings_dict
from .driver import ModalRun, sync_state


def target_object(context):
    """The panel's chosen object, else the active object."""
    props = context.scene.splatsketch
    return props.source or context.active_object


def prepare_run(context, source, *, live_preview: bool, log=None, **overrides) -> SketchRun:
    """Settings from the panel and preferences; raise RunError for anything the user must fix."""
    from ..scene.mesh import source_problem

    if source is None:
        raise RunError("no object: select a mesh, or pick one in the Sketch panel")
    problem = source_problem(source)
    if problem:
        raise RunError(problem)
    prefs = get_preferences(context)
    try:
        settings = settings_dict(context.scene.splatsketch, prefs)
    except SettingsError as error:
        raise RunError(str(error)) from error
    python = backend_python(context)
    return SketchRun(source, settings, job_params(context.scene.splatsketch), python, user_dir=user_dir(),
                     live_preview=live_preview, log=log, **overrides)


class SPLATSKETCH_OT_generate(ModalRun, bpy.types.Operator):
    """Optimise a few 3D Bézier curves that sketch the object from every side"""

    bl_idname = "splatsketch.generate"
    bl_label = "Generate Sketch"
    bl_options = set()  # no REGISTER/UNDO: a redo panel would re-run minutes of work, blocking

    new_seed: BoolProperty(name="New Seed", default=False, options={"SKIP_SAVE", "HIDDEN"},
                           description="Increase the seed first (Run Again)")

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not context.window_manager.splatsketch.running

    def _begin(self, context, live_preview: bool, log=None) -> SketchRun | None:
        state = context.window_manager.splatsketch
        if self.new_seed:
            context.scene.splatsketch.seed += 1
        try:
            run = prepare_run(context, target_object(context), live_preview=live_preview, log=log)
        except RunError as error:
            state.last_error = str(error)
            self.report({"ERROR"}, str(error))
            return None
        state.running, state.cancel_requested = True, False
        state.progress, state.status, state.last_error = 0.0, "Rendering target views", ""
        return run

    def _end(self, context, run: SketchRun) -> set[str]:
        return end_sketch(self, context, run, "Generate Sketch")


def end_sketch(operator, context, run: SketchRun, undo_message: str) -> set[str]:
    """The end of a sketch run from any operator (Generate, Sketch from Images): mirror it into the
    panel, pass its warnings on, and conclude (one undo step on success)."""
    state = context.window_manager.splatsketch
    state.running = False
    sync_state(state, run)
    for warning in run.warnings:
        operator.report({"WARNING"}, warning)
        if warning.startswith("CLIP WEIGHTS MISSING"):
            state.clip_status = "missing"
    return operator._conclude(run, undo_message, "Sketch cancelled")



class SPLATSKETCH_OT_cancel(bpy.types.Operator):
    """Stop the running sketch; the scene stays as it was"""

    bl_idname = "splatsketch.cancel"
    bl_label = "Cancel Sketch"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return context.window_manager.splatsketch.running

    def execute(self, context):
        state = context.window_manager.splatsketch
        state.cancel_requested, state.status = True, "Cancelling"
        return {"FINISHED"}


CLASSES = (SPLATSKETCH_OT_generate, SPLATSKETCH_OT_cancel)
