"""Generate / Cancel: thin operators over :class:`operators.run.SketchRun`.

Invoked from the UI the run is MODAL, polled by a 0.1 s timer so Blender stays usable (Esc or the
Cancel button stop it); executed without invoke (scripts, ``blender -b``) the same steps run
BLOCKING, because timers never fire in background mode. One undo step covers the result: nothing
is pushed while the worker runs, and Ctrl+Z is swallowed meanwhile so undo cannot pull the preview
object out from under the run; on success an explicit undo push records the finished sketch.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty

from ..backend.config import SettingsError
from ..preferences import backend_python, get_preferences
from ..properties import job_params, settings_dict
from .run import CANCELLED, FAILED, RUNNING, SUCCEEDED, RunError, SketchRun


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
    return SketchRun(source, settings, job_params(context.scene.splatsketch), python,
                     live_preview=live_preview, log=log, **overrides)


def sync_state(state, run: SketchRun) -> None:
    """Mirror a run into the WindowManager state the panel draws (the modal step's visible half)."""
    state.progress, state.status = run.progress, run.status
    if run.state == SUCCEEDED:
        state.summary, state.last_result, state.last_error = run.summary, run.result_name, ""
    elif run.state != RUNNING:
        state.last_error = "" if run.state == CANCELLED else run.message


def redraw(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


class ModalRun:
    """The modal/blocking driver shared by Generate and Evaluate: subclasses give ``_begin(context,
    live_preview, log)`` (a run object with begin/advance/step/cancel/abort, or None) and
    ``_end(context, run)``."""

    _run = None
    _timer = None

    def _conclude(self, run, undo_message: str, cancelled_message: str) -> set[str]:
        """Report how the run ended; on success one undo step records what it made."""
        if run.state == SUCCEEDED:
            self.report({"INFO"}, run.summary)
            if not bpy.app.background:
                bpy.ops.ed.undo_push(message=undo_message)
            return {"FINISHED"}
        self.report({"WARNING"} if run.state == CANCELLED else {"ERROR"},
                    cancelled_message if run.state == CANCELLED else run.message)
        return {"CANCELLED"}

    def execute(self, context):
        run = self._begin(context, live_preview=False, log=print)
        if run is None:
            return {"CANCELLED"}
        try:
            run.start(context)
            run.run_blocking()
        except RunError as error:
            run.state, run.message = FAILED, str(error)
        except BaseException:  # a bug or Ctrl+C while rendering: stop the worker, unlock the panel
            run.abort()
            context.window_manager.splatsketch.running = False
            raise
        return self._end(context, run)

    def invoke(self, context, _event):
        run = self._begin(context, live_preview=True)
        if run is None:
            return {"CANCELLED"}
        self._run, self._started = run, False
        self._timer = context.window_manager.event_timer_add(0.1, window=context.window)
        context.window_manager.modal_handler_add(self)
        redraw(context)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        try:
            return self._modal(context, event)
        except Exception as error:  # never leave the panel stuck in "running" behind a dead modal
            self._run.abort()
            self._remove_timer(context)
            state = context.window_manager.splatsketch
            state.running, state.last_error = False, f"internal error: {error}"
            self.report({"ERROR"}, f"SplatSketch internal error: {error}")
            redraw(context)
            return {"CANCELLED"}

    def _modal(self, context, event):
        run, state = self._run, context.window_manager.splatsketch
        if event.type == "ESC" and event.value == "PRESS":
            state.cancel_requested = True
        elif event.type == "Z" and (event.ctrl or event.oskey) and event.value == "PRESS":
            self.report({"WARNING"}, "Undo is unavailable while a sketch runs (Esc cancels it)")
            return {"RUNNING_MODAL"}
        if state.cancel_requested and run.state == RUNNING:
            state.status = "Cancelling"
            run.cancel()
        if event.type != "TIMER":  # any timer tick is fine: a step never blocks
            return {"RUNNING_MODAL"} if event.type == "ESC" else {"PASS_THROUGH"}
        if not self._started:  # the first tick comes after the panel has drawn "Rendering..."
            self._started = True
            if state.cancel_requested:
                run.state = CANCELLED
            else:
                try:
                    run.begin(context)
                except RunError as error:
                    run.state, run.message = FAILED, str(error)
        if run.state == RUNNING and run.preparing:  # one target view per tick: the UI stays responsive
            try:
                run.advance()
            except RunError as error:
                run.state, run.message = FAILED, str(error)
            if run.state == RUNNING:
                sync_state(state, run)
                redraw(context)
                return {"RUNNING_MODAL"}
        if run.step() == RUNNING:
            if run.changed:  # redrawing every tick would steal CPU from the worker on small machines
                run.changed = False
                sync_state(state, run)
                redraw(context)
            return {"RUNNING_MODAL"}
        self._remove_timer(context)
        result = self._end(context, run)
        redraw(context)
        return result

    def cancel(self, context):
        """Blender ends the modal itself (file load, quit): stop the worker and leave no preview."""
        if self._run is not None:
            self._run.abort()
        self._remove_timer(context)
        context.window_manager.splatsketch.running = False

    def _remove_timer(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None


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
        state = context.window_manager.splatsketch
        state.running = False
        sync_state(state, run)
        for warning in run.warnings:
            self.report({"WARNING"}, warning)
        return self._conclude(run, "Generate Sketch", "Sketch cancelled")



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
