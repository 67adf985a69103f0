"""Generate / Cancel: thin operators over :class:`jobs.sketch_run.SketchRun`, driven by
:class:`operators.driver.ModalRun` (modal from the UI, blocking from scripts)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty

from ..contract.settings import SettingsError
from ..jobs.runner import RunError
from ..jobs.sketch_run import SketchRun, parse_strokes
from ..preferences import backend_python, get_preferences, user_dir
from ..properties import job_params, settings_dict
from .driver import ModalRun, sync_state


def target_object(context):
    """The panel's chosen object, else the active object."""
    props = context.scene.splatsketch
    return props.source or context.active_object


def panel_settings(context) -> dict:
    """The job's settings from the panel and preferences; RunError when they are not valid."""
    try:
        return settings_dict(context.scene.splatsketch, get_preferences(context))
    except SettingsError as error:
        raise RunError(str(error)) from error


def prepare_run(context, source, *, live_preview: bool, log=None, **overrides) -> SketchRun:
    """Settings from the panel and preferences; raise RunError for anything the user must fix."""
    from ..scene.mesh import source_problem

    if source is None:
        raise RunError("no object: select a mesh, or pick one in the Sketch panel")
    problem = source_problem(source)
    if problem:
        raise RunError(problem)
    return SketchRun(source, panel_settings(context), job_params(context.scene.splatsketch), backend_python(context),
                     user_dir=user_dir(), live_preview=live_preview, log=log, **overrides)


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
    if run.clip_missing:
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


def keep_strokes_run(context, sketch, keep: list[int], new: int, *, live_preview: bool, log=None, **overrides):
    """A :class:`KeepStrokesRun` on ``sketch`` keeping the splines ``keep`` and making ``new`` strokes,
    with the panel's settings; RunError for anything the artist must fix (nothing changes then)."""
    from ..jobs.sketch_run import KeepStrokesRun, keep_strokes_problem, kept_source

    if context.window_manager.splatsketch.running:
        raise RunError("a SplatSketch run is going: wait for it to finish or cancel it")
    fallback = context.scene.splatsketch.source
    problem = keep_strokes_problem(sketch, keep, new, fallback)
    if problem:
        raise RunError(problem)
    settings = dict(panel_settings(context), curves=new)
    return KeepStrokesRun(sketch, keep, kept_source(sketch, fallback), settings, job_params(context.scene.splatsketch),
                          backend_python(context), user_dir=user_dir(), live_preview=live_preview, log=log,
                          **overrides)


def _selected(curve_obj) -> list[int]:
    if curve_obj.mode == "EDIT":
        curve_obj.update_from_editmode()
    return [i for i, s in enumerate(curve_obj.data.splines)
            if any(p.select_control_point or p.select_left_handle or p.select_right_handle for p in s.bezier_points)]


def selected_strokes(context, sketch) -> list[int]:
    """The splines of ``sketch`` with a selected point (edit mode's selection, read back into the curve
    data); RunError when strokes of another curve in Edit Mode are selected too (only the active
    sketch's strokes can be kept)."""
    for other in getattr(context, "objects_in_mode", None) or ():
        if other != sketch and other.type == "CURVE" and _selected(other):
            raise RunError(f"strokes of '{other.name}' are selected too: only the active sketch's ('{sketch.name}') "
                           "strokes can be kept")
    return _selected(sketch)


class _KeepStrokes(ModalRun):
    """Shared by Regenerate Others and Add Strokes: leave edit mode, run, one undo step on success."""

    bl_options = set()

    @classmethod
    def poll(cls, context):
        if context.window_manager.splatsketch.running:
            cls.poll_message_set("A SplatSketch run is going")
            return False
        return True

    def _kept_and_new(self, sketch) -> tuple[list[int], int]:
        raise NotImplementedError

    def _begin(self, context, live_preview: bool, log=None):
        state = context.window_manager.splatsketch
        sketch = context.active_object
        try:
            if sketch is None or sketch.type != "CURVE":
                raise RunError("select a SplatSketch result, or a curve of strokes drawn by hand")
            keep, new = self._kept_and_new(sketch)
            run = keep_strokes_run(context, sketch, keep, new, live_preview=live_preview, log=log)
        except RunError as error:
            state.last_error = str(error)
            self.report({"ERROR"}, str(error))
            return None
        if sketch.mode == "EDIT":
            bpy.ops.object.mode_set(mode="OBJECT")
        state.running, state.cancel_requested = True, False
        state.progress, state.status, state.last_error = 0.0, "Rendering target views", ""
        return run

    def _end(self, context, run) -> set[str]:
        return end_sketch(self, context, run, self.bl_label)


class SPLATSKETCH_OT_regenerate_strokes(_KeepStrokes, bpy.types.Operator):
    """Keep the selected strokes (in Edit Mode) exactly as they are and make the others again, from
    fresh starts on the lines the kept strokes leave uncovered"""

    bl_idname = "splatsketch.regenerate_strokes"
    bl_label = "Regenerate Others"

    keep_selected: BoolProperty(name="Keep Selected", default=True,
                                description="Keep the selected strokes (off: keep all but the selected)")
    keep: bpy.props.StringProperty(name="Keep", default="", options={"SKIP_SAVE"},
                                   description="Stroke numbers to keep instead of the selection, e.g. '0-3,7' "
                                               "(0 is the most important)")

    def _kept_and_new(self, sketch):
        total = len(sketch.data.splines)
        if self.keep:
            keep = parse_strokes(self.keep)
        else:
            selected = selected_strokes(bpy.context, sketch)
            if not selected:
                raise RunError("no stroke selected: select the strokes to keep in Edit Mode (or the ones to "
                               "regenerate, with Keep Selected off)")
            keep = selected if self.keep_selected else [i for i in range(total) if i not in selected]
        return keep, total - len(set(keep) & set(range(total)))


class SPLATSKETCH_OT_add_strokes(_KeepStrokes, bpy.types.Operator):
    """Add N strokes where the sketch still misses the object's lines; every stroke there stays as it is"""

    bl_idname = "splatsketch.add_strokes"
    bl_label = "Add Strokes"

    count: bpy.props.IntProperty(name="Strokes", default=4, min=1, max=1024, description="How many to add")

    def _kept_and_new(self, sketch):
        return list(range(len(sketch.data.splines))), self.count


CLASSES = (SPLATSKETCH_OT_generate, SPLATSKETCH_OT_cancel, SPLATSKETCH_OT_regenerate_strokes,
           SPLATSKETCH_OT_add_strokes)
