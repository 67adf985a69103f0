"""Set Up / Repair / Remove the managed backend environment, from Preferences (thin operators over
:class:`jobs.setup.SetupRun`, driven like Generate: modal with progress and Cancel in the UI,
blocking in scripts)."""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty

from ..jobs.runner import FAILED
from .driver import ModalRun, redraw


class SPLATSKETCH_OT_setup_backend(ModalRun, bpy.types.Operator):
    """Make the Python environment SplatSketch runs in (torch, open_clip, gsplat), in the background"""

    bl_idname = "splatsketch.setup_backend"
    bl_label = "Set Up Backend"
    bl_options = {"INTERNAL"}

    repair: BoolProperty(name="Repair", default=False, options={"SKIP_SAVE"},
                         description="Reinstall into a fresh environment; the current one stays until it is ready")

    @classmethod
    def poll(cls, context):
        if context.window_manager.splatsketch.running:
            cls.poll_message_set("Wait for the running sketch or set-up to end")
            return False
        return True

    def _begin(self, context, live_preview: bool, log=None):
        from ..jobs.environment import find_base_python
        from ..jobs.setup import SetupRun
        from ..preferences import get_preferences, user_dir

        prefs, state = get_preferences(context), context.window_manager.splatsketch
        base, problem = find_base_python(getattr(prefs, "base_python", ""))
        if problem:
            state.backend_report, state.backend_error = problem, True
            self.report({"ERROR"}, problem)
            return None
        state.running, state.cancel_requested = True, False
        state.progress, state.status, state.backend_report, state.backend_error = 0.0, "Starting", "", False
        return SetupRun(base, user_dir=user_dir(), torch=getattr(prefs, "torch_build", "auto"),
                        find_links=bpy.path.abspath(getattr(prefs, "wheel_folder", "")),
                        build_kernels=bool(getattr(prefs, "build_kernels", False)), log=log)

    def _end(self, context, run) -> set[str]:
        state = context.window_manager.splatsketch
        state.running, state.progress, state.status = False, run.progress, run.status
        state.setup_log = getattr(run, "log_path", "") or state.setup_log
        if run.state == FAILED:
            state.backend_report, state.backend_error = f"Set-up failed: {run.message}", True
        elif run.summary:
            state.backend_report, state.backend_error = run.summary, False
        return self._conclude(run, "Set Up Backend", "Backend set-up cancelled: the previous backend is unchanged")


class SPLATSKETCH_OT_remove_backend(bpy.types.Operator):
    """Delete the environment Set Up Backend made (gigabytes); your own Backend Python is untouched"""

    bl_idname = "splatsketch.remove_backend"
    bl_label = "Remove Backend"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return not context.window_manager.splatsketch.running

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        from ..jobs.setup import remove_managed
        from ..preferences import user_dir

        state = context.window_manager.splatsketch
        problem = remove_managed(user_dir())
        state.backend_report, state.backend_error = problem or "Backend removed", bool(problem)
        self.report({"ERROR"} if problem else {"INFO"}, state.backend_report)
        redraw(context)
        return {"CANCELLED"} if problem else {"FINISHED"}


class SPLATSKETCH_OT_open_setup_log(bpy.types.Operator):
    """Open the last backend set-up's log"""

    bl_idname = "splatsketch.open_setup_log"
    bl_label = "Open Set-Up Log"
    bl_options = {"INTERNAL"}

    def execute(self, context):
        path = context.window_manager.splatsketch.setup_log
        if not path or not os.path.isfile(path):
            self.report({"ERROR"}, f"the log is gone: {path or '(none)'}")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=path)
        return {"FINISHED"}


CLASSES = (SPLATSKETCH_OT_setup_backend, SPLATSKETCH_OT_remove_backend, SPLATSKETCH_OT_open_setup_log)

