"""The evaluation run: render views the sketch was never made from, run ``backend evaluate``, and
keep the figures on the sketch object.

The backend writes ``metrics.json``, ``report.png`` (contact sheet with the figures printed) and
``turntable.gif``; the summary goes on the sketch object as ``splatsketch_evaluation`` (JSON) and the
pictures' paths as ``splatsketch_report`` / ``splatsketch_turntable``. A failed or cancelled
evaluation changes nothing on the object.
"""

from __future__ import annotations

import json
import os

import bpy
import numpy as np

from ..contract import protocol
from ..scene import id_keys
from .runner import Run, RunError


def sketch_source(obj):
    """The source mesh object of a SplatSketch result, or None."""
    name = obj.get(id_keys.SOURCE) if obj is not None else None
    return bpy.data.objects.get(name) if isinstance(name, str) else None


def format_evaluation(summary: dict) -> str:
    loops = (f", {summary['looping_strokes']} looping stroke(s), turning {summary['turning_mean']:.1f} rad"
             if "looping_strokes" in summary else "")
    outline = f", outline {summary['outline_recall_mean']:.2f}" if "outline_recall_mean" in summary else ""
    levels = "".join(f"; first {level['strokes']}: F {level['f_mean']:.2f}, outline {level['outline_recall_mean']:.2f}"
                     for level in summary.get("levels") or [])
    return (f"held-out F {summary['f_mean']:.2f} (worst view {summary['f_min']:.2f}), precision "
            f"{summary['precision_mean']:.2f}, recall {summary['recall_mean']:.2f}{outline}, chamfer "
            f"{summary['chamfer_px_mean']:.1f} px, interior ink {summary['ink_interior_mean']:.2f}{loops}{levels}")


class EvaluationRun(Run):
    kind = "evaluation"
    output = protocol.METRICS_JSON
    keep_on_success = True  # the sketch object points at report.png / turntable.gif in the folder
    cancel_grace_s = 2.0

    def __init__(self, sketch, python: str, *, user_dir: str, folder: str | None = None, keep_folder: bool = False,
                 pictures: bool = True, log=None):
        super().__init__(sketch.name, python, user_dir=user_dir, folder=folder, keep_folder=keep_folder, log=log)
        self.sketch_name, self.with_pictures = sketch.name, pictures
        self.result_name = sketch.name
        self.evaluation: dict = {}
        self.pictures: dict = {}

    def sketch(self):
        return bpy.data.objects.get(self.sketch_name)

    def validate(self) -> None:
        from ..pictures.capture import CaptureError, read_capture

        sketch = self.sketch()
        if sketch is None:
            raise RunError(f"object '{self.sketch_name}' no longer exists")
        self.capture = None
        if sketch.get(id_keys.CAPTURE):  # made from pictures: scored on the capture's held-out ones
            try:
                self.capture = read_capture(sketch[id_keys.CAPTURE], sketch.get(id_keys.MASKS, ""))
            except CaptureError as error:
                raise RunError(f"'{self.sketch_name}' was made from a capture that cannot be read now: {error}") \
                    from None
            return
        if sketch_source(sketch) is None:
            raise RunError(f"'{self.sketch_name}' has no source object to compare with (its "
                           f"'splatsketch_source' is {sketch.get('splatsketch_source')!r})")

    def prepare(self, folder: str):
        from ..scene.evaluation_folder import iter_write_evaluation

        sketch = self.sketch()
        if self.capture is not None:
            from ..scene.capture_job import iter_write_capture_evaluation

            self.status, self.preparing_what = "Loading held-out pictures", "loading held-out picture"
            return (yield from iter_write_capture_evaluation(
                folder, sketch, self.capture, np.asarray(sketch[id_keys.CENTER], np.float64),
                float(sketch[id_keys.RADIUS])))
        self.status = "Rendering evaluation views"
        return (yield from iter_write_evaluation(folder, sketch, sketch_source(sketch),
                                                 bpy.context.evaluated_depsgraph_get(), turntable=self.with_pictures))

    def progress_preparing(self, done: int, total: int) -> None:
        super().progress_preparing(done, total)
        self.progress = 0.8 * done / total

    def argv(self) -> list[str]:
        title = f"{self.sketch_name} - SplatSketch evaluation"
        return protocol.evaluate_argv(self.folder, report=self.with_pictures, title=title if self.with_pictures else "",
                                      parent_pid=os.getpid(), watch_stdin=True)

    def on_event(self, event: dict) -> None:
        if event.get("type") == protocol.DONE:
            self.pictures = {k: event.get(k) for k in ("report", "turntable")}

    def collect(self) -> None:
        sketch = self.sketch()
        if sketch is None:
            raise RunError(f"object '{self.sketch_name}' was removed during the evaluation")
        with open(os.path.join(self.folder, protocol.METRICS_JSON), encoding="utf-8") as f:
            metrics = json.load(f)
        self.evaluation = {k: metrics[k] for k in protocol.METRIC_SUMMARY_KEYS if k in metrics}
        self.evaluation["per_view_f"] = [round(v["f"], 4) for v in metrics.get("views", [])]
        sketch[id_keys.EVALUATION] = json.dumps(self.evaluation, sort_keys=True)
        for key in ("report", "turntable"):
            if self.pictures.get(key):
                sketch[id_keys.PICTURES[key]] = self.pictures[key]
        self.summary = f"{self.sketch_name}: {format_evaluation(self.evaluation)}"
