"""Set Up / Repair / Remove the managed backend environment, from Preferences (thin operators over
:class:`jobs.setup_run.SetupRun`, driven like Generate: modal with progress and Cancel in the UI,
blocking in scripts)."""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty

from ..jobs.runner import FAILED
from .driver import ModalRun, redraw


def show_clip_state(state, info: dict) -> None:
    """What the panel and the Preferences say about the CLIP weights, from ``backend clip-weights``."""
    from ..jobs.clip_fetch_run import describe_clip

    state.clip_status = {True: "present", False: "missing"}.get(info.get("present"), "")
    state.clip_report = describe_clip(info)


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
        from ..jobs.setup_run import SetupRun
        from ..preferences import get_preferences, user_dir

        prefs, state = get_preferences(context), context.window_manager.splatsketch
        base, problem = find_base_python(getattr(prefs, "base_python", ""))
        if problem:
            state.backend_report, state.backend_error = problem, True
            self.report({"ERROR"}, problem)
            return None
        state.running, state.cancel_requested = True, False
        state.progress, state.status, state.backend_report, state.backend_error = 0.0, "Starting", "", False
        from ..preferences import clip_settings

        return SetupRun(base, user_dir=user_dir(), torch=getattr(prefs, "torch_build", "auto"),
                        find_links=bpy.path.abspath(getattr(prefs, "wheel_folder", "")),
                        build_kernels=bool(getattr(prefs, "build_kernels", False)), clip=clip_settings(prefs),
                        log=log)

    def _end(self, context, run) -> set[str]:
        state = context.window_manager.splatsketch
        state.running, state.progress, state.status = False, run.progress, run.status
        state.setup_log = getattr(run, "log_path", "") or state.setup_log
        if run.state == FAILED:
            state.backend_report, state.backend_error = f"Set-up failed: {run.message}", True
        elif run.summary:
            state.backend_report, state.backend_error = run.summary, False
            if run.clip_info is not None:
                show_clip_state(state, run.clip_info)
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
        from ..jobs.setup_run import remove_managed
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


class SPLATSKETCH_OT_get_clip_weights(ModalRun, bpy.types.Operator):
    """Download the CLIP weights the CLIP objective needs into the cache folder (needs online access)"""

    bl_idname = "splatsketch.get_clip_weights"
    bl_label = "Get CLIP Weights"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        if not getattr(bpy.app, "online_access", True):
            cls.poll_message_set("Online access is off: Preferences > System > Network > Allow Online Access")
            return False
        return not context.window_manager.splatsketch.running

    def _begin(self, context, live_preview: bool, log=None):
        from ..jobs.clip_fetch_run import ClipWeightsRun
        from ..preferences import backend_python, clip_settings, get_preferences, user_dir

        if not getattr(bpy.app, "online_access", True):  # scripts bypass poll: never download then
            self.report({"ERROR"}, "online access is off: nothing was downloaded")
            return None
        state = context.window_manager.splatsketch
        state.running, state.cancel_requested, state.progress, state.status = True, False, 0.0, "Starting"
        return ClipWeightsRun(backend_python(context), clip_settings(get_preferences(context)), user_dir=user_dir(),
                              log=log)

    def _end(self, context, run) -> set[str]:
        state = context.window_manager.splatsketch
        state.running, state.progress, state.status = False, run.progress, run.status
        if run.state == FAILED:
            state.clip_report, state.clip_status = f"Download failed: {run.message}", "missing"
        elif run.summary:
            state.clip_report, state.clip_status = run.summary, "present"
        return self._conclude(run, "Get CLIP Weights", "Download cancelled")


class SPLATSKETCH_OT_use_clip_file(bpy.types.Operator):
    """Use a CLIP weights file you already have (for example RN101.pt from another machine)"""

    bl_idname = "splatsketch.use_clip_file"
    bl_label = "Use Local File"
    bl_options = {"INTERNAL"}

    filepath: bpy.props.StringProperty(subtype="FILE_PATH")
    filter_glob: bpy.props.StringProperty(default="*.pt;*.pth;*.bin;*.safetensors", options={"HIDDEN"})

    def invoke(self, context, _event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        from ..preferences import get_preferences

        if not os.path.isfile(self.filepath):
            self.report({"ERROR"}, f"no such file: {self.filepath}")
            return {"CANCELLED"}
        get_preferences(context).clip_checkpoint = self.filepath
        state = context.window_manager.splatsketch
        state.clip_status, state.clip_report = "present", f"CLIP weights: {self.filepath}"
        return {"FINISHED"}


CLASSES = (SPLATSKETCH_OT_setup_backend, SPLATSKETCH_OT_remove_backend, SPLATSKETCH_OT_open_setup_log,
           SPLATSKETCH_OT_get_clip_weights, SPLATSKETCH_OT_use_clip_file)

