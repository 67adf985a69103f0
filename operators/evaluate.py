"""Evaluate / Open Report: thin operators over :class:`jobs.evaluation_run.EvaluationRun`."""

from __future__ import annotations

import os

import bpy

from ..jobs.evaluation_run import EvaluationRun, sketch_source
from ..jobs.runner import FAILED
from ..scene import id_keys
from .driver import ModalRun


class SPLATSKETCH_OT_evaluate(ModalRun, bpy.types.Operator):
    """Score the active sketch against its object on 24 views it was never optimised on, and draw a
    report (contact sheet with the figures, turntable GIF)"""

    bl_idname = "splatsketch.evaluate"
    bl_label = "Evaluate Sketch"
    bl_options = set()  # the undo push happens on success only (as Generate)

    @classmethod
    def poll(cls, context):
        state = context.window_manager.splatsketch
        if state.running:
            return False
        obj = context.active_object
        if sketch_source(obj) is None and not (obj is not None and obj.get(id_keys.CAPTURE)):
            cls.poll_message_set("Select a SplatSketch result whose source object (or capture) still exists")
            return False
        return True

    def _begin(self, context, live_preview: bool, log=None):
        from ..preferences import backend_python, user_dir

        python = backend_python(context)
        state = context.window_manager.splatsketch
        state.running, state.cancel_requested = True, False
        state.progress, state.status, state.last_error = 0.0, "Rendering evaluation views", ""
        return EvaluationRun(context.active_object, python, user_dir=user_dir(), log=log)

    def _end(self, context, run: EvaluationRun) -> set[str]:
        state = context.window_manager.splatsketch
        state.running, state.progress, state.status = False, run.progress, run.status
        if run.state == FAILED:
            state.last_error = f"Evaluation failed: {run.message}"
        return self._conclude(run, "Evaluate Sketch", "Evaluation cancelled")


class SPLATSKETCH_OT_open_report(bpy.types.Operator):
    """Open the sketch's evaluation report (contact sheet PNG) in the system's image viewer"""

    bl_idname = "splatsketch.open_report"
    bl_label = "Open Report"
    bl_options = {"INTERNAL"}

    which: bpy.props.EnumProperty(items=[("report", "Contact Sheet", ""), ("turntable", "Turntable", "")],
                                  options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and isinstance(obj.get(id_keys.PICTURES["report"]), str)

    def execute(self, context):
        path = context.active_object.get(id_keys.PICTURES[self.which], "")
        if not path or not os.path.isfile(path):
            self.report({"ERROR"}, f"the report file is gone: {path or '(none)'}; evaluate again")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=path)
        return {"FINISHED"}


CLASSES = (SPLATSKETCH_OT_evaluate, SPLATSKETCH_OT_open_report)
