"""The sketch run: render the object's target views into a job folder, run ``backend run``, and turn
``result.npz`` into a native Bézier curve object (with a live preview from snapshots meanwhile).

Objects are looked up by name on every step rather than held as Python references, because an undo
or a file load while the worker runs invalidates ID pointers; a missing preview is simply re-created
from the next snapshot.
"""

from __future__ import annotations

import json
import os
import time

import bpy
import numpy as np

from ..contract import protocol
from ..scene import id_keys
from .backend_process import format_duration
from .runner import Run, RunError


class SketchRun(Run):
    kind = "job"
    output = protocol.RESULT_NPZ

    def __init__(self, source, settings: dict, params: dict, python: str, *, user_dir: str, live_preview: bool,
                 job_dir: str | None = None, keep_job: bool = False, log=None):
        """``source``: the mesh object (only its name is kept: see the module's docstring)."""
        super().__init__(source.name, python, user_dir=user_dir, folder=job_dir, keep_folder=keep_job, log=log)
        self.source_name = source.name
        self.settings, self.params, self.live_preview = settings, params, live_preview
        self.preview_name = self.result_name = ""
        self.center = self.radius = None
        self.metrics: dict = {}
        self.control_points = None
        self.prepare_seconds = self.collect_seconds = 0.0

    @property
    def job_dir(self) -> str | None:
        return self.folder

    def source(self):
        return bpy.data.objects.get(self.source_name)

    # -- hooks ------------------------------------------------------------------------------------
    def validate(self) -> None:
        from ..scene.mesh import source_problem

        source = self.source()
        problem = source_problem(source) if source else f"object '{self.source_name}' no longer exists"
        if problem:
            raise RunError(problem)

    def prepare(self, folder: str):
        from ..scene.job_folder import iter_write_job

        self.status = "Rendering target views"
        started = time.monotonic()
        placed = yield from iter_write_job(folder, self.source(), bpy.context.evaluated_depsgraph_get(),
                                           self.settings, **self.params)
        self.prepare_seconds = time.monotonic() - started
        self.center, self.radius = np.asarray(placed["center"], dtype=np.float64), float(placed["radius"])
        return placed

    def argv(self) -> list[str]:
        return protocol.run_argv(self.folder, parent_pid=os.getpid(), watch_stdin=True)

    def on_event(self, event: dict) -> None:
        if event.get("type") == protocol.SNAPSHOT and self.live_preview:
            self._show(np.asarray(event["control_points"], dtype=np.float32))

    def sketch_source(self):
        """The object the sketch belongs to (None for pictures); RunError if it went away."""
        if self.source() is None:
            raise RunError(f"object '{self.source_name}' was removed during the run")
        return self.source()

    def sketch_properties(self) -> dict:
        return {}

    def source_gone(self) -> bool:
        return self.source() is None

    def phases(self, total: float) -> dict:
        """Wall seconds of the run's phases: targets (Blender's renders and the backend's drawing),
        features (the initial strokes), optimisation, write-back (the curve object), and start: what
        they leave of ``total`` (Blender and the backend starting, reading and writing the job)."""
        backend = self.metrics.get("phases") if isinstance(self.metrics.get("phases"), dict) else {}
        out = {"targets": self.prepare_seconds + backend.get("targets", 0.0),
               "features": backend.get("features", 0.0), "optimisation": backend.get("optimisation", 0.0),
               "write_back": self.collect_seconds}
        out = {"start": max(total - sum(out.values()), 0.0), **out}
        return {key: round(value, 2) for key, value in out.items()}

    def read_result(self) -> np.ndarray:
        """The backend's strokes ``[K,3S+1,3]``; its summary (``result.json``) into ``metrics``."""
        with np.load(os.path.join(self.folder, protocol.RESULT_NPZ), allow_pickle=False) as data:
            control_points = np.asarray(data["control_points"], dtype=np.float32)
        summary_path = os.path.join(self.folder, protocol.RESULT_JSON)
        self.metrics = {}
        if os.path.isfile(summary_path):
            with open(summary_path, encoding="utf-8") as f:
                self.metrics = json.load(f)
        return control_points

    def collect(self) -> None:
        from ..scene.sketch_object import create_sketch

        collecting = time.monotonic()
        source = self.sketch_source()
        control_points = self.read_result()
        seconds = time.monotonic() - self.started
        properties = {
            id_keys.SETTINGS: json.dumps(self.settings, sort_keys=True),
            id_keys.METRICS: json.dumps(self.metrics, sort_keys=True),
            id_keys.SEED: int(self.metrics.get("seed", self.settings.get("seed", 0))),
            id_keys.SECONDS: round(seconds, 2),
            **self.sketch_properties(),
        }
        self.discard_scene()
        obj = create_sketch(source, control_points, self.center, self.radius,
                            self.settings.get("stroke_width", 0.012), name=f"{self.source_name} Sketch",
                            properties=properties)
        self.result_name, self.control_points = obj.name, control_points
        self.collect_seconds = time.monotonic() - collecting
        loss = self.metrics.get("heldout_loss")
        self.summary = (f"{obj.name}: {len(control_points)} curves, {self.metrics.get('iterations', '?')} "
                        f"iterations, {format_duration(seconds)}"
                        + (f", held-out loss {loss:.4g}" if isinstance(loss, (int, float)) else ""))

    def discard_scene(self) -> None:
        from ..scene.sketch_object import remove_sketch

        preview = bpy.data.objects.get(self.preview_name) if self.preview_name else None
        if preview is not None:
            remove_sketch(preview)
        self.preview_name = ""

    # -- live preview -----------------------------------------------------------------------------
    def _show(self, control_points) -> None:
        from ..scene.sketch_object import create_sketch, update_sketch

        if not len(control_points) or self.source_gone():
            return
        preview = bpy.data.objects.get(self.preview_name) if self.preview_name else None
        if preview is not None:
            update_sketch(preview, control_points, self.center, self.radius)
        else:
            preview = create_sketch(self.source(), control_points, self.center, self.radius,
                                    self.settings.get("stroke_width", 0.012), name=f"{self.source_name} Sketch")
            self.preview_name = preview.name


class CaptureSketchRun(SketchRun):
    """A sketch from a multi-view capture (``transforms_train.json`` + pictures) instead of a mesh:
    the same run, preview and result, in the capture's own world frame (scene/capture_job.py)."""

    def __init__(self, capture, settings: dict, params: dict, python: str, *, user_dir: str, live_preview: bool,
                 job_dir: str | None = None, keep_job: bool = False, log=None):
        """``capture``: a checked :class:`pictures.capture.Capture` (``read_capture``); like a source
        object, it has a ``name``."""
        super().__init__(capture, settings, params, python, user_dir=user_dir, live_preview=live_preview,
                         job_dir=job_dir, keep_job=keep_job, log=log)
        self.capture = capture
        self.bad_input = False  # the pictures themselves were unusable (sizes, alpha, poses)

    def source(self):
        return None

    def validate(self) -> None:
        pass  # read_capture checked the json files and that every picture exists

    def prepare(self, folder: str):
        from ..pictures.capture import CaptureError
        from ..scene.capture_job import iter_write_capture_job

        self.status = "Loading pictures"
        try:
            placed = yield from iter_write_capture_job(folder, self.capture, self.settings, **self.params)
        except CaptureError:
            self.bad_input = True
            raise
        self.center, self.radius = np.asarray(placed["center"], dtype=np.float64), float(placed["radius"])
        return placed

    def sketch_source(self):
        return None

    def source_gone(self) -> bool:
        return False

    preparing_what = "reading pictures, step"  # decoding, then the hull, then each view's lines

    def sketch_properties(self) -> dict:
        return {id_keys.CAPTURE: self.capture.train_json, id_keys.MASKS: self.capture.masks,
                id_keys.CENTER: [float(c) for c in self.center], id_keys.RADIUS: float(self.radius)}


def parse_strokes(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]; RunError for anything else."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise RunError(f"'{text}': stroke numbers are like '0-3,7'") from None
        if first < 0 or last < first:
            raise RunError(f"'{text}': stroke numbers are like '0-3,7'")
        out += range(first, last + 1)
    if not out:
        raise RunError("no strokes to keep given")
    return sorted(set(out))


def keep_strokes_problem(sketch, keep: list[int], new: int, fallback=None) -> str:
    """Why strokes ``keep`` of ``sketch`` cannot be kept with ``new`` made again, or ''. A curve drawn
    by hand (no SplatSketch source) is sketched on ``fallback`` (the panel's Object)."""
    from ..scene.mesh import source_problem

    if sketch is None or sketch.type != "CURVE":
        return "select a SplatSketch result, or a curve of strokes drawn by hand"
    source = kept_source(sketch, fallback)
    if source is None and sketch.get(id_keys.SOURCE):
        return (f"'{sketch.name}' has no source object any more (it was sketched from "
                f"'{sketch.get('splatsketch_source')}'): its strokes can only be made again on it")
    if source is None:
        return f"'{sketch.name}' was drawn by hand: pick the mesh it sketches as the Sketch panel's Object"
    if source_problem(source):
        return source_problem(source)
    total = len(sketch.data.splines)
    wrong = [i for i in keep if not 0 <= i < total]
    if wrong:
        return f"'{sketch.name}' has strokes 0-{total - 1}: there is no stroke {wrong[0]} to keep"
    splines = list(sketch.data.splines)
    if any(splines[i].type != "BEZIER" or len(splines[i].bezier_points) < 2 for i in keep):
        return "a kept stroke is not a Bézier spline of 2 or more points"
    if new < 1:
        return "nothing to make: every stroke is kept (Add Strokes adds new ones)"
    return ""


def kept_source(sketch, fallback=None):
    """The mesh a sketch was made from, if it still exists; ``fallback`` for a curve drawn by hand."""
    name = sketch.get(id_keys.SOURCE, "") or ""
    return bpy.data.objects.get(name) if name else fallback


class KeepStrokesRun(SketchRun):
    """Regenerate Others / Add Strokes: a run on the sketch's source object with some of the sketch's
    strokes kept. The kept strokes go into the job (``kept.npz``: drawn, counted as covering their
    lines, never moved); at the end the sketch's other strokes are replaced by the new ones, which
    follow the kept ones in order of importance. The kept splines are not touched at all, and until
    the run succeeds nothing in the sketch changes (a failed or cancelled run leaves it as it was)."""

    def __init__(self, sketch, keep: list[int], source, settings: dict, params: dict, python: str, *,
                 user_dir: str, live_preview: bool, job_dir: str | None = None, keep_job: bool = False, log=None):
        super().__init__(source, settings, params, python, user_dir=user_dir, live_preview=live_preview,
                         job_dir=job_dir, keep_job=keep_job, log=log)
        self.sketch_name, self.keep = sketch.name, sorted(set(keep))
        self.splines = len(sketch.data.splines)

    def sketch(self):
        return bpy.data.objects.get(self.sketch_name)

    def unchanged_sketch(self):
        """The sketch, as it was when the run was set up; RunError (and the sketch left as it is) if not."""
        sketch = self.sketch()
        if sketch is None:
            raise RunError(f"sketch '{self.sketch_name}' no longer exists")
        if len(sketch.data.splines) != self.splines:
            raise RunError(f"'{self.sketch_name}' changed (strokes added or removed) since the run was set up: "
                           "left as it is")
        return sketch

    def validate(self) -> None:
        super().validate()
        self.unchanged_sketch()

    def prepare(self, folder: str):
        from ..scene.sketch_object import world_control_points

        placed = yield from super().prepare(folder)
        kept = world_control_points(self.sketch(), indices=self.keep)
        protocol.write_npz(os.path.join(folder, protocol.KEPT_NPZ),
                           control_points=((kept - self.center) / self.radius).astype(np.float32))
        return placed

    def collect(self) -> None:
        from ..scene.sketch_object import replace_strokes

        collecting = time.monotonic()
        self.sketch_source()
        sketch = self.unchanged_sketch()
        control_points = self.read_result()
        self.discard_scene()
        replace_strokes(sketch, self.keep, control_points, self.center, self.radius,
                        float(self.settings.get("stroke_width", 0.012)) * self.radius)
        sketch[id_keys.SOURCE] = self.source_name
        sketch[id_keys.METRICS] = json.dumps(self.metrics, sort_keys=True)
        self.result_name, self.control_points = sketch.name, control_points
        self.collect_seconds = time.monotonic() - collecting
        self.summary = (f"{sketch.name}: kept {len(self.keep)} strokes, {len(control_points)} new, "
                        f"{format_duration(time.monotonic() - self.started)}")
