"""Evaluate a finished sketch on views never used to make it: figures on the object, a report to look at.

:class:`EvaluationRun` has the same non-blocking steps as :class:`operators.run.SketchRun` (begin,
one view per :meth:`advance`, then :meth:`step` polls the backend), so the panel's modal operator and
the CLI's blocking loop drive it the same way. The backend writes ``metrics.json``, ``report.png``
(contact sheet with the figures printed) and ``turntable.gif``; the summary goes on the sketch object
as ``splatsketch_evaluation`` (JSON) and the pictures' paths as ``splatsketch_report`` /
``splatsketch_turntable``. A failed or cancelled evaluation changes nothing on the object.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time

import bpy

from ..jobs import Worker, message_for_exit, probe_backend
from ..preferences import EXTENSION_DIR
from .generate import ModalRun
from .run import CANCELLED, FAILED, RUNNING, SUCCEEDED, RunError, StepRun, _prune, user_folder

SUMMARY_KEYS = ("f_mean", "f_min", "f_std", "precision_mean", "recall_mean", "chamfer_px_mean", "ink_outside_mean",
                "ink_interior_mean", "surface_distance_mean", "surface_distance_max", "surface_coverage",
                "curves", "clip_model", "clip_similarity_mean", "clip_similarity_min",
                "tolerance_px", "image_size", "sketch_drawn_as", "lines_source", "evaluated_on")


def sketch_source(obj):
    """The source mesh object of a SplatSketch result, or None."""
    name = obj.get("splatsketch_source") if obj is not None else None
    return bpy.data.objects.get(name) if isinstance(name, str) else None


def format_evaluation(summary: dict) -> str:
    return (f"held-out F {summary['f_mean']:.2f} (worst view {summary['f_min']:.2f}), precision "
            f"{summary['precision_mean']:.2f}, recall {summary['recall_mean']:.2f}, chamfer "
            f"{summary['chamfer_px_mean']:.1f} px, interior ink {summary['ink_interior_mean']:.2f}")


class EvaluationRun(StepRun):
    """Render the evaluation views of one sketch's source, then score them in the backend."""

    def __init__(self, sketch, python: str, *, folder: str | None = None, keep_folder: bool = False,
                 pictures: bool = True, log=None):
        self.sketch_name = sketch.name
        self.python, self.folder, self.keep_folder, self.with_pictures = python, folder, keep_folder, pictures
        self.log = log or (lambda line: None)
        self.worker = Worker()
        self.state, self.message = RUNNING, ""
        self.progress, self.status = 0.0, "Starting"
        self.summary, self.result_name = "", sketch.name
        self.evaluation: dict = {}
        self.pictures: dict = {}
        self.warnings: list[str] = []
        self.changed = False
        self._prepare = None

    def sketch(self):
        return bpy.data.objects.get(self.sketch_name)

    def begin(self, context) -> None:
        from ..scene.evaluation import iter_write_evaluation

        sketch = self.sketch()
        if sketch is None:
            raise RunError(f"object '{self.sketch_name}' no longer exists")
        source = sketch_source(sketch)
        if source is None:
            raise RunError(f"'{self.sketch_name}' has no source object to compare with (its "
                           f"'splatsketch_source' is {sketch.get('splatsketch_source')!r})")
        info = probe_backend(self.python)
        if isinstance(info, str):
            raise RunError(info)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.sketch_name)[:40] or "sketch"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if self.folder is None:
            root = user_folder("evaluations")
            _prune(root, keep=8)
            self.folder = tempfile.mkdtemp(prefix=f"{safe}-{stamp}-", dir=root)
        self._log_path = os.path.join(user_folder("logs"), f"evaluate-{safe}-{stamp}-{os.getpid()}.log")
        self.status = "Rendering evaluation views"
        self._prepare = iter_write_evaluation(self.folder, sketch, source, context.evaluated_depsgraph_get(),
                                              turntable=self.with_pictures)

    @property
    def preparing(self) -> bool:
        return self._prepare is not None

    def advance(self) -> None:
        try:
            done, total = next(self._prepare)
            self.progress, self.status, self.changed = 0.8 * done / total, f"Rendering view {done}/{total}", True
            return
        except StopIteration:
            pass
        except Exception as error:  # the folder is already removed by the generator
            self._prepare = None
            raise RunError(f"could not render the evaluation views: {error}") from error
        self._prepare = None
        title = f"{self.sketch_name} - SplatSketch evaluation"
        command = ["evaluate", self.folder] + (["--report", "--title", title] if self.with_pictures else [])
        self.worker.start(self.python, self.folder, os.getpid(), self._log_path, cwd=EXTENSION_DIR, command=command)
        self.progress, self.status, self.changed = 0.85, "Scoring", True

    def step(self) -> str:
        if self.state != RUNNING:
            return self.state
        finished = self.worker.finished
        for event in self.worker.poll():
            self.changed = True
            if event.get("type") == "done":
                self.pictures = {k: event.get(k) for k in ("report", "turntable")}
        if finished:
            self._finish()
        return self.state

    def _finish(self) -> None:
        code = self.worker.exit_code
        metrics_path = os.path.join(self.folder, "metrics.json")
        if self.worker.cancelled or code == 130:
            self._fail(CANCELLED, "cancelled")
        elif code != 0 or not os.path.isfile(metrics_path):
            self._fail(FAILED, message_for_exit(code, self.worker.last_error, self.worker.log_path)
                       or "the evaluation finished without writing metrics.json")
        else:
            sketch = self.sketch()
            if sketch is None:
                self._fail(FAILED, f"object '{self.sketch_name}' was removed during the evaluation")
                return
            with open(metrics_path, encoding="utf-8") as f:
                metrics = json.load(f)
            self.evaluation = {k: metrics[k] for k in SUMMARY_KEYS if k in metrics}
            self.evaluation["per_view_f"] = [round(v["f"], 4) for v in metrics.get("views", [])]
            sketch["splatsketch_evaluation"] = json.dumps(self.evaluation, sort_keys=True)
            for key in ("report", "turntable"):
                if self.pictures.get(key):
                    sketch[f"splatsketch_{key}"] = self.pictures[key]
            self.summary = f"{self.sketch_name}: {format_evaluation(self.evaluation)}"
            self.progress, self.status, self.state = 1.0, "Done", SUCCEEDED

    def _fail(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        self.status = "Cancelled" if state == CANCELLED else "Failed"
        if not self.keep_folder and self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def cancel(self) -> None:
        if self.preparing:
            self._prepare.close()
            self._prepare = None
            self._fail(CANCELLED, "cancelled")
        else:
            self.worker.cancel(grace_s=2.0)

    def abort(self) -> None:
        self.cancel()
        if self.worker.running:
            self.worker.cancel(grace_s=0.0)
            self.worker.poll()
            self.worker.wait(5.0)
        if self.state == RUNNING:
            self._fail(CANCELLED, "cancelled")



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
        if sketch_source(context.active_object) is None:
            cls.poll_message_set("Select a SplatSketch result whose source object still exists")
            return False
        return True

    def _begin(self, context, live_preview: bool, log=None):
        from ..preferences import backend_python

        python = backend_python(context)
        state = context.window_manager.splatsketch
        state.running, state.cancel_requested = True, False
        state.progress, state.status, state.last_error = 0.0, "Rendering evaluation views", ""
        return EvaluationRun(context.active_object, python, log=log)

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
        return obj is not None and isinstance(obj.get("splatsketch_report"), str)

    def execute(self, context):
        path = context.active_object.get(f"splatsketch_{self.which}", "")
        if not path or not os.path.isfile(path):
            self.report({"ERROR"}, f"the report file is gone: {path or '(none)'}; evaluate again")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=path)
        return {"FINISHED"}


CLASSES = (SPLATSKETCH_OT_evaluate, SPLATSKETCH_OT_open_report)
