"""One sketch run on the Blender side: job folder -> worker -> Bézier object, in non-blocking steps.

The modal operator calls :meth:`SketchRun.step` from a 0.1 s timer; the blocking path (``blender -b``,
the CLI, scripts) calls the very same method in a loop. Objects are looked up by name on every step
rather than held as Python references, because an undo or a file load while the worker runs
invalidates ID pointers; a missing preview is simply re-created from the next snapshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time

import bpy
import numpy as np

from ..jobs import Worker, format_duration, message_for_exit, probe_backend, progress_of
from ..preferences import EXTENSION_DIR

RUNNING, SUCCEEDED, FAILED, CANCELLED = "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
_ACTIVE: set[SketchRun] = set()  # runs with a live worker, so unregister() can stop them


class RunError(Exception):
    """A user-facing problem found before or while running; ``str()`` is the whole message."""


def user_folder(sub: str) -> str:
    """``<extension user folder>/<sub>``; a temp folder when not installed as an extension."""
    try:
        base = bpy.utils.extension_path_user(__package__.rpartition(".")[0], create=True)
    except (ValueError, AttributeError):
        base = os.path.join(tempfile.gettempdir(), "splatsketch")
    path = os.path.join(base, sub)
    os.makedirs(path, exist_ok=True)
    return path


def _prune(folder: str, keep: int) -> None:
    """Keep the ``keep`` newest entries of a jobs/logs folder so it cannot grow forever."""
    entries = sorted((os.path.join(folder, n) for n in os.listdir(folder)), key=os.path.getmtime)
    for path in entries[:-keep] if keep else entries:
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


class StepRun:
    """What the modal operator and the blocking loop drive: ``begin`` / ``advance`` (one rendered view
    per call while ``preparing``) / ``step`` (poll the worker) / ``cancel``; subclasses give those."""

    state: str = RUNNING

    def start(self, context) -> None:
        """Validate, render every view and launch the worker, blocking; raise RunError with the reason."""
        self.begin(context)
        while self.preparing:
            self.advance()

    def run_blocking(self, interval: float = 0.1) -> str:
        """The same steps as the modal operator, in a loop (timers never fire under ``blender -b``)."""
        try:
            while self.step() == RUNNING:
                time.sleep(interval)
        except KeyboardInterrupt:
            self.cancel()
            while self.step() == RUNNING:
                time.sleep(interval)
        return self.state


class SketchRun(StepRun):
    """Everything about one object's run; :meth:`step` advances it without blocking."""

    def __init__(self, source, settings: dict, params: dict, python: str, *, live_preview: bool,
                 job_dir: str | None = None, keep_job: bool = False, log=None):
        self.source_name = source.name
        self.settings, self.params, self.python = settings, params, python
        self.live_preview, self.keep_job = live_preview, keep_job
        self.job_dir = job_dir
        self.log = log or (lambda line: None)
        self.worker = Worker()
        self.state = RUNNING
        self.message = ""
        self.progress, self.status = 0.0, "Starting"
        self.preview_name = ""
        self.result_name = ""
        self.center = self.radius = None
        self.done_event: dict | None = None
        self.warnings: list[str] = []
        self.summary = ""
        self.metrics: dict = {}
        self.started = time.monotonic()
        self._logged = 0.0
        self.changed = False  # set when an event arrived; the modal redraws only then

    # -- start ---------------------------------------------------------------------------------
    def begin(self, context) -> None:
        """Validate and set up the job; the target views then render one per :meth:`advance`."""
        from ..scene.job_folder import iter_write_job
        from ..scene.mesh import source_problem

        source = self.source()
        problem = source_problem(source) if source else f"object '{self.source_name}' no longer exists"
        if problem:
            raise RunError(problem)
        info = probe_backend(self.python)
        if isinstance(info, str):
            raise RunError(info)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.source_name)[:40] or "object"
        if self.job_dir is None:
            root = user_folder("jobs")
            _prune(root, keep=8)
            self.job_dir = tempfile.mkdtemp(prefix=f"{safe}-{stamp}-", dir=root)
        os.makedirs(self.job_dir, exist_ok=True)
        log_dir = user_folder("logs")
        _prune(log_dir, keep=20)
        self._log_path = os.path.join(log_dir, f"{safe}-{stamp}-{os.getpid()}.log")
        self.status = "Rendering target views"
        self._prepare = iter_write_job(self.job_dir, source, context.evaluated_depsgraph_get(), self.settings,
                                       **self.params)

    @property
    def preparing(self) -> bool:
        return getattr(self, "_prepare", None) is not None

    def advance(self) -> None:
        """Render the next target view (Blender stays responsive between two); after the last one,
        launch the worker. Raise RunError if the job cannot be prepared (nothing is left behind)."""
        try:
            done, total = next(self._prepare)
            self.status, self.changed = f"Rendering view {done}/{total}", True
            return
        except StopIteration as finished:
            placed = finished.value
        except Exception as error:  # a render failure must not leave a half-made job behind
            self._prepare = None
            self._discard_job()
            raise RunError(f"could not prepare the job: {error}") from error
        self._prepare = None
        self.center, self.radius = np.asarray(placed["center"], dtype=np.float64), float(placed["radius"])
        self.worker.start(self.python, self.job_dir, os.getpid(), self._log_path, cwd=EXTENSION_DIR)
        _ACTIVE.add(self)
        self.status, self.changed = "Worker started", True

    def _stop_preparing(self) -> None:
        """Cancelled while the views render: close the renderer (it removes what it made), drop the job."""
        if self.preparing:
            self._prepare.close()
            self._prepare = None
            self._discard_job()
            self._fail(CANCELLED, "cancelled")

    def source(self):
        return bpy.data.objects.get(self.source_name)

    # -- step ------------------------------------------------------------------------------------
    def step(self) -> str:
        """Handle the worker's new events; return RUNNING, SUCCEEDED, FAILED or CANCELLED."""
        if self.state != RUNNING:
            return self.state
        finished = self.worker.finished  # read before polling so no event can slip past the last poll
        for event in self.worker.poll():
            self._handle(event)
        if finished:
            self._finish()
        return self.state

    def _handle(self, event: dict) -> None:
        kind = event.get("type")
        self.changed = True
        if kind == "progress":
            self.progress, self.status = progress_of(event)
            now = time.monotonic()
            if now - self._logged >= 2.0 or event.get("iteration") == event.get("iterations"):
                self._logged = now  # one line every 2 s keeps batch logs readable
                self.log(f"[{self.source_name}] {self.status}")
        elif kind == "snapshot" and self.live_preview:
            self._show(np.asarray(event["control_points"], dtype=np.float32))
        elif kind == "warning":
            self.warnings.append(event.get("message", ""))
            self.log(f"[{self.source_name}] warning: {event.get('message', '')}")
        elif kind == "info":
            self.log(f"[{self.source_name}] {event.get('message', '')}")
        elif kind == "done":
            self.done_event = event

    def _show(self, control_points) -> None:
        from ..scene.sketch_object import create_sketch, update_sketch

        if not len(control_points) or self.source() is None:
            return
        preview = bpy.data.objects.get(self.preview_name) if self.preview_name else None
        if preview is not None:
            update_sketch(preview, control_points, self.center, self.radius)
        else:
            preview = create_sketch(self.source(), control_points, self.center, self.radius,
                                    self.settings.get("stroke_width", 0.012))
            self.preview_name = preview.name

    # -- finish ----------------------------------------------------------------------------------
    def _finish(self) -> None:
        _ACTIVE.discard(self)
        code = self.worker.exit_code
        result = os.path.join(self.job_dir, "result.npz")
        if code == 0 and not self.worker.cancelled and os.path.isfile(result):
            try:
                self._write_result(result)
                self.state = SUCCEEDED
            except Exception as error:  # a bad result must leave the scene as it was
                self._fail(FAILED, f"could not read the worker's result: {error}")
        elif self.worker.cancelled or code == 130:
            self._fail(CANCELLED, "cancelled")
        else:
            message = message_for_exit(code, self.worker.last_error, self.worker.log_path)
            self._fail(FAILED, message or "the worker finished without writing result.npz")
        if self.state == SUCCEEDED or not self.keep_job:
            self._discard_job()

    def _write_result(self, path: str) -> None:
        from ..scene.sketch_object import create_sketch

        with np.load(path, allow_pickle=False) as data:
            control_points = np.asarray(data["control_points"], dtype=np.float32)
        summary_path = os.path.join(self.job_dir, "result.json")
        self.metrics = {}
        if os.path.isfile(summary_path):
            with open(summary_path, encoding="utf-8") as f:
                self.metrics = json.load(f)
        seconds = time.monotonic() - self.started
        properties = {
            "splatsketch_settings": json.dumps(self.settings, sort_keys=True),
            "splatsketch_metrics": json.dumps(self.metrics, sort_keys=True),
            "splatsketch_seed": int(self.metrics.get("seed", self.settings.get("seed", 0))),
            "splatsketch_seconds": round(seconds, 2),
        }
        self._remove_preview()
        obj = create_sketch(self.source(), control_points, self.center, self.radius,
                            self.settings.get("stroke_width", 0.012), properties=properties)
        self.result_name = obj.name
        self.control_points = control_points
        loss = self.metrics.get("heldout_loss")
        self.summary = (f"{obj.name}: {len(control_points)} curves, {self.metrics.get('iterations', '?')} "
                        f"iterations, {format_duration(seconds)}"
                        + (f", held-out loss {loss:.4g}" if isinstance(loss, (int, float)) else ""))
        self.progress, self.status = 1.0, "Done"

    def _fail(self, state: str, message: str) -> None:
        self._remove_preview()
        self.state, self.message = state, message
        self.status = "Cancelled" if state == CANCELLED else "Failed"

    def _remove_preview(self) -> None:
        from ..scene.sketch_object import remove_sketch

        preview = bpy.data.objects.get(self.preview_name) if self.preview_name else None
        if preview is not None:
            remove_sketch(preview)
        self.preview_name = ""

    def _discard_job(self) -> None:
        if self.job_dir and not self.keep_job:
            shutil.rmtree(self.job_dir, ignore_errors=True)

    # -- control ---------------------------------------------------------------------------------
    def cancel(self) -> None:
        if self.preparing:
            self._stop_preparing()
        else:
            self.worker.cancel()

    def abort(self) -> None:
        """Stop now (add-on disabled, file loaded, Blender quitting): kill the worker, drop the preview."""
        if self.preparing:
            self._stop_preparing()
        if self.state == RUNNING:
            self.worker.cancel(grace_s=0.0)
            self.worker.poll()
            self.worker.wait(5.0)
            try:
                self._fail(CANCELLED, "cancelled")
            except ReferenceError:
                pass
            self._discard_job()
        _ACTIVE.discard(self)


def abort_all() -> None:
    for run in list(_ACTIVE):
        run.abort()
