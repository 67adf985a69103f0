"""The worker process: ``python -m backend run JOB_DIR``.

stdout is the protocol (one JSON event per line, docs/JOB_FORMAT.md): the real stdout is kept for
events and file descriptor 1 is pointed at stderr, so a stray print (ours or a library's) can never
corrupt the stream. SIGINT/SIGTERM, a closed stdin pipe or a vanished parent only set a flag; the
loop finishes its step, the partial result is written and the exit code says it was cancelled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import stat
import sys
import threading
import traceback
from pathlib import Path

from .errors import (
    EXIT_CANCELLED,
    EXIT_INTERNAL,
    EXIT_OK,
    BadJob,
    ClipWeightsUnavailable,
    DeviceUnavailable,
    SketchError,
)


def _clean(value):
    """JSON-safe copy: non-finite floats become null (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class EventStream:
    """Typed JSON lines on the process's original stdout."""

    def __init__(self, on_closed=None):
        sys.stdout.flush()
        self._out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)  # anything else written to stdout now lands in stderr
        sys.stdout = sys.stderr
        self._lock = threading.Lock()
        self._on_closed = on_closed
        self.closed = False

    def emit(self, event: dict) -> None:
        """Write one event; a reader that went away (Blender closed) cancels the run instead of crashing it."""
        line = json.dumps(_clean(event), separators=(",", ":"), allow_nan=False)
        with self._lock:
            if self.closed:
                return
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, OSError):
                self.closed = True
                if self._on_closed:
                    self._on_closed("the reader of the event stream went away")


class StopFlag:
    """Set by signals, by EOF on a stdin pipe, or when the parent process disappears."""

    def __init__(self, parent_pid: int | None):
        self.reason = ""
        self._event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: self.set(f"signal {signal.Signals(signum).name}"))
        if stat.S_ISFIFO(os.fstat(0).st_mode):
            threading.Thread(target=self._watch_stdin, daemon=True).start()
        if parent_pid:
            threading.Thread(target=self._watch_parent, args=(parent_pid,), daemon=True).start()

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()

    def _watch_stdin(self) -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        self.set("stdin closed")

    def _watch_parent(self, pid: int) -> None:
        while not self._event.wait(0.5):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self.set(f"parent process {pid} is gone")
            except PermissionError:
                pass


def resolve_device(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("device 'cuda' was requested but torch sees no CUDA GPU (use device 'auto' or 'cpu')")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceUnavailable("device 'mps' was requested but this machine has no Apple GPU (use 'auto' or 'cpu')")
    return torch.device(name)


def run_job(job_dir: str, parent_pid: int | None = None) -> int:
    stop = StopFlag(parent_pid)
    events = EventStream(on_closed=stop.set)
    try:
        return _run(Path(job_dir), events, stop)
    except SketchError as exc:
        events.emit({"type": "error", "message": str(exc), "code": exc.exit_code})
        return exc.exit_code
    except Exception as exc:  # a bug: keep the traceback for the log, one line for the user
        traceback.print_exc(file=sys.stderr)
        events.emit({"type": "error", "message": f"internal error: {type(exc).__name__}: {exc}", "code": EXIT_INTERNAL})
        return EXIT_INTERNAL


def _run(folder: Path, events: EventStream, stop: StopFlag) -> int:
    from .job import geometry_only, load_job, write_result

    job = load_job(folder)
    import torch

    from .optimize import optimize
    from .prepare import build_targets
    from .render import choose_renderer

    cfg = job.config
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu" and not cfg.uses_clip():
        # The geometry-only step works on tensors too small for intra-op threads: one thread is as
        # fast and, on a busy machine, 13x cheaper in CPU time (docs/PERFORMANCE.md).
        torch.set_num_threads(1)
    renderer, why = choose_renderer(cfg.renderer, device)
    events.emit({"type": "info", "message": f"device {device}; renderer {renderer.name}: {why}"})

    clip_bundle = None
    if cfg.uses_clip():
        from .losses.clip_model import load_clip

        try:
            clip_bundle = load_clip(cfg.clip, device)
        except ClipWeightsUnavailable as exc:
            if not cfg.clip.allow_geometry_fallback:
                raise
            weights = geometry_only(cfg, job.arrays)
            events.emit({"type": "warning", "message": f"CLIP WEIGHTS MISSING: {exc} -- running the geometry-only "
                                                       f"objective ({', '.join(weights)}) instead, as this job allows"})
            cfg = dataclasses.replace(cfg, losses=weights)
    targets = build_targets(job.arrays, cfg, device)
    result = optimize(cfg, targets, renderer, emit=events.emit, should_stop=stop,
                      load_clip=(lambda: clip_bundle) if clip_bundle is not None else None)
    summary = {
        "iterations": result.iterations, "seconds": result.seconds, "seed": result.seed,
        "cancelled": result.cancelled, "cancel_reason": stop.reason, "pruned": result.pruned, "kept": result.kept,
        "losses": result.losses, "heldout_loss": result.heldout_loss, "objective": cfg.losses,
        "renderer": renderer.name, "device": str(device), "runs": result.runs,
        "curves": int(result.control_points.shape[0]),
    }
    write_result(folder, result, _clean(summary))
    events.emit({"type": "done", "result": "result.npz", "iterations": result.iterations, "seconds": result.seconds,
                 "cancelled": result.cancelled, "pruned": result.pruned, "kept": result.kept,
                 "loss": result.loss_history[-1] if result.loss_history else None,
                 "heldout_loss": result.heldout_loss})
    return EXIT_CANCELLED if result.cancelled else EXIT_OK


def evaluate_job(job_dir: str, views_path: str | None = None, report: bool = False, title: str = "",
                 clip=None) -> int:
    """Write ``metrics.json`` for a finished job (and with ``report`` the contact sheet and turntable
    pictures); stdout carries the same typed events as ``run``. ``clip`` (a ClipConfig) adds a CLIP
    similarity with that model: weights that cannot be loaded stop it with exit code 3, as in ``run``."""
    events = EventStream()
    try:
        from .evaluate import EvalViews, evaluate
        from .job import load_eval_npz, load_job, load_mesh, load_result, write_atomic

        folder = Path(job_dir)
        if not folder.is_dir():
            raise BadJob(f"{folder}: no such job folder")
        result = load_result(folder / "result.npz")
        path = Path(views_path) if views_path else folder / "eval.npz"
        mesh = load_mesh(folder / "mesh.npz")
        if path.exists():
            views = EvalViews.from_arrays(load_eval_npz(path))
            source = path.name
        else:
            job = load_job(job_dir)
            if "lines" not in job.arrays or job.arrays["is_train"].all():
                raise BadJob(f"{folder}: no eval.npz and no held-out views with line images to evaluate on")
            views = EvalViews.from_arrays(job.arrays, ~job.arrays["is_train"])
            source = "held-out views of views.npz"
        bundle = None
        if clip is not None:
            import torch

            from .losses.clip_model import load_clip

            bundle = load_clip(clip, torch.device("cpu"))
        widths = result["widths"]
        metrics = evaluate(result["control_points"], float(widths[0]) if len(widths) else 0.01, views,
                           mesh.get("vertices"), mesh.get("faces"), clip_bundle=bundle)
        metrics["evaluated_on"] = source
        metrics["lines_source"] = "Blender Freestyle (visible + hidden line sets)"
        write_atomic(folder / "metrics.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(_clean(metrics), indent=2), encoding="utf-8"))
        summary = {k: v for k, v in metrics.items() if k != "views"}
        pictures = {}
        if report:
            if path.resolve() != (folder / "eval.npz").resolve():
                raise BadJob(f"{folder}: a report needs eval.npz in the job folder")
            from .report import write_report

            pictures = write_report(folder, title)
        events.emit({"type": "done", "result": "metrics.json", "metrics": summary, **pictures})
        return EXIT_OK
    except SketchError as exc:
        events.emit({"type": "error", "message": str(exc), "code": exc.exit_code})
        return exc.exit_code


def check_backend() -> int:
    """One JSON line describing this Python's backend packages (the add-on's "Check backend")."""
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable}
    for name in ("torch", "open_clip", "gsplat", "numpy"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "unknown")
        except Exception as exc:  # noqa: BLE001 - report whatever stops the import
            info[name] = None
            info[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
    if info.get("torch"):
        import torch

        info["cuda"] = torch.cuda.is_available()
        info["device_name"] = torch.cuda.get_device_name(0) if info["cuda"] else "CPU"
        info["threads"] = torch.get_num_threads()
    print(json.dumps(info))
    return 0 if info.get("torch") else 1


__all__ = ["run_job", "check_backend", "EventStream", "StopFlag", "resolve_device"]
