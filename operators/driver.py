"""Drive a :class:`jobs.runner.Run` from an operator: MODAL from the UI, BLOCKING from scripts.

Invoked from the UI the run is polled by a 0.1 s timer so Blender stays usable (Esc or the Cancel
button stop it; one view renders per tick, so the UI stays responsive while targets render);
executed without invoke (scripts, ``blender -b``) the same steps run in a loop, because timers never
fire in background mode. One undo step covers the result: nothing is pushed while the backend runs,
and Ctrl+Z is swallowed meanwhile so undo cannot pull the preview object out from under the run.
"""

from __future__ import annotations

import bpy

from ..jobs.runner import CANCELLED, FAILED, RUNNING, SUCCEEDED, RunError


def redraw(context) -> None:
    """Redraw what shows a run: the sidebar (3D views) and the Preferences' Backend box."""
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()


def sync_state(state, run) -> None:
    """Mirror a run into the WindowManager state the panel draws (the modal step's visible half)."""
    state.progress, state.status = run.progress, run.status
    if run.state == SUCCEEDED and not run.result_name:  # a run that makes no object (backend set-up)
        state.last_error = ""
    elif run.state == SUCCEEDED:
        state.summary, state.last_result, state.last_error = run.summary, run.result_name, ""
    elif run.state != RUNNING:
        state.last_error = "" if run.state == CANCELLED else run.message


class ModalRun:
    """The modal/blocking driver shared by Generate and Evaluate (a mix-in before ``Operator``).

    A subclass gives ``_begin(context, live_preview, log)`` (a :class:`jobs.runner.Run`, or None when
    it reported why it cannot start) and ``_end(context, run)`` (mirror the ended run into the UI and
    return the operator's result, usually through :meth:`_conclude`). That contract is checked when
    the class is made, as Blender's extension manager checks its mix-ins, so a missing hook fails at
    registration and not on the first click."""

    _run = None
    _timer = None
    _HOOKS = ("_begin", "_end")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [name for name in cls._HOOKS if not callable(getattr(cls, name, None))]
        if missing:
            raise TypeError(f"{cls.__name__} uses ModalRun but does not define {', '.join(missing)}")

    def _conclude(self, run, undo_message: str, cancelled_message: str) -> set[str]:
        """Report how the run ended; on success one undo step records what it made."""
        if run.state == SUCCEEDED:
            self.report({"INFO"}, run.summary)
            if not bpy.app.background and run.result_name:  # a set-up or a download changes no data
                bpy.ops.ed.undo_push(message=undo_message)
            return {"FINISHED"}
        self.report({"WARNING"} if run.state == CANCELLED else {"ERROR"},
                    cancelled_message if run.state == CANCELLED else run.message)
        return {"CANCELLED"}

    def execute(self, context):
        run = self._begin(context, live_preview=False, log=print)
        if run is None:
            return {"CANCELLED"}
        context.window_manager.splatsketch.run_kind = run.kind
        try:
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
        context.window_manager.splatsketch.run_kind = run.kind
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
                    run.begin()
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
