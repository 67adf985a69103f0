"""Add > Sketch from Images...: a file browser on a capture's ``transforms*.json``, then the same run
as Generate (progress in the sidebar, live preview, Esc / Cancel), driven by
:class:`operators.driver.ModalRun`. The sketch lands in the capture's own world frame."""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, StringProperty

from ..contract.settings import SettingsError
from ..jobs.runner import RunError
from ..jobs.sketch_run import CaptureSketchRun
from ..preferences import backend_python, get_preferences, user_dir
from ..properties import job_params, settings_dict
from .driver import ModalRun
from .generate import end_sketch


class SPLATSKETCH_OT_sketch_from_images(ModalRun, bpy.types.Operator):
    """Sketch an object from multi-view pictures with known cameras (NeRF synthetic layout:
    transforms_train.json, RGBA pictures), no mesh needed"""

    bl_idname = "splatsketch.sketch_from_images"
    bl_label = "Sketch from Images"
    bl_options = set()  # as Generate: no redo panel re-running minutes of work

    filepath: StringProperty(name="Capture", subtype="FILE_PATH",
                             description="transforms_train.json (or transforms.json) of the capture")
    filter_glob: StringProperty(default="transforms*.json", options={"HIDDEN"})
    masks: StringProperty(name="Masks", subtype="DIR_PATH", default="",
                          description="Optional folder of masks (white = object) mirroring the pictures' paths, "
                                      "for pictures without a transparent background")

    new_seed: BoolProperty(name="New Seed", default=False, options={"SKIP_SAVE", "HIDDEN"},
                           description="Increase the seed first and run the capture again (Run Again)")

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not context.window_manager.splatsketch.running

    def invoke(self, context, _event):
        if self.new_seed and self.filepath:  # Run Again: the capture is known, no file browser
            return ModalRun.invoke(self, context, None)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if bpy.app.background or context.window is None:
            return ModalRun.execute(self, context)  # scripts and blender -b: blocking
        return ModalRun.invoke(self, context, None)  # back from the file browser: modal, as Generate

    def _begin(self, context, live_preview: bool, log=None) -> CaptureSketchRun | None:
        from ..pictures.capture import CaptureError, read_capture

        state = context.window_manager.splatsketch
        if self.new_seed:
            context.scene.splatsketch.seed += 1
        try:
            if not self.filepath:
                raise RunError("no capture chosen: pick its transforms_train.json")
            masks = bpy.path.abspath(self.masks) if self.masks else ""
            capture = read_capture(bpy.path.abspath(self.filepath), os.path.normpath(masks) if masks else "")
            settings = settings_dict(context.scene.splatsketch, get_preferences(context))
        except (CaptureError, SettingsError, RunError) as error:
            state.last_error = str(error)
            self.report({"ERROR"}, str(error))
            return None
        run = CaptureSketchRun(capture, settings, job_params(context.scene.splatsketch), backend_python(context),
                               user_dir=user_dir(), live_preview=live_preview, log=log)
        state.running, state.cancel_requested = True, False
        state.progress, state.status, state.last_error = 0.0, "Loading pictures", ""
        return run

    def _end(self, context, run: CaptureSketchRun) -> set[str]:
        return end_sketch(self, context, run, "Sketch from Images")


def menu_add(self, _context):
    self.layout.operator(SPLATSKETCH_OT_sketch_from_images.bl_idname, text="Sketch from Images...",
                         icon="OUTLINER_OB_CURVE")


CLASSES = (SPLATSKETCH_OT_sketch_from_images,)
