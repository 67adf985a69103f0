"""The worker process: ``python -m backend run JOB_DIR`` and ``python -m backend evaluate JOB_DIR``.

stdout is the protocol (one JSON event per line, docs/JOB_FORMAT.md, names in ``contract.protocol``):
the real stdout is kept for events and file descriptor 1 is pointed at stderr, so a stray print (ours
or a library's) can never corrupt the stream. SIGINT, SIGTERM, a closed stdin (only with
``--watch-stdin``: otherwise stdin is never read, so a shell loop keeps its input) or a vanished
``--parent-pid`` only set a flag; the loop finishes its step, the partial result is written and the
exit code says why it stopped (130 cancelled, 143 terminated). An evaluation stops between views
and writes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from contract.protocol import (
    CLIP_MISSING,
    DONE,
    ERROR,
    EVAL_NPZ,
    EVENT_TYPES,
    EXIT_CANCELLED,
    EXIT_INTERNAL,
    EXIT_MESSAGES,
    EXIT_OK,
    EXIT_TERMINATED,
    FINAL_EVENTS,
    INFO,
    MESH_NPZ,
    METRICS_JSON,
    RESULT_NPZ,
    TURNTABLE_NPZ,
    VIEWS_NPZ,
    WARNING,
    write_json,
)

from .errors import BadJob, ClipWeightsUnavailable, DeviceUnavailable, SketchError, Stopped


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
    """Typed JSON lines on the process's original stdout (or on ``out``, for tests).

    Only the protocol's event types are accepted, and nothing after a final event (``done`` or
    ``error``): either is a bug in the caller and raises ValueError.
    """

    def __init__(self, on_closed=None, out=None):
        if out is None:
            sys.stdout.flush()
            out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
            os.dup2(2, 1)  # anything else written to stdout now lands in stderr
            sys.stdout = sys.stderr
        self._out = out
        self._lock = threading.Lock()
        self._on_closed = on_closed
        self.closed = False
        self.final: str | None = None  # the type of the final event, once one was emitted

    def emit(self, event: dict) -> None:
        """Write one event; a reader that went away (Blender closed) cancels the run instead of crashing it."""
        kind = event.get("type") if isinstance(event, dict) else None
        if kind not in EVENT_TYPES:
            raise ValueError(f"event type {kind!r} is not one of the protocol's: {', '.join(sorted(EVENT_TYPES))}")
        line = json.dumps(_clean(event), separators=(",", ":"), allow_nan=False)
        with self._lock:
            if self.final is not None:
                raise ValueError(f"a {kind!r} event after the final {self.final!r} event: nothing may follow it")
            if kind in FINAL_EVENTS:
                self.final = kind
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
    """Set by SIGINT / SIGTERM, by EOF on stdin (only when ``watch_stdin``: stdin is otherwise left to
    the caller), or when process ``parent_pid`` disappears. ``code`` is the exit code the first stop
    calls for: ``EXIT_TERMINATED`` for SIGTERM, ``EXIT_CANCELLED`` for everything else."""

    def __init__(self, parent_pid: int | None = None, watch_stdin: bool = False):
        self.reason = ""
        self.code = EXIT_CANCELLED
        self._event = threading.Event()
        self._lock = threading.Lock()
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        if watch_stdin:
            threading.Thread(target=self._watch_stdin, daemon=True).start()
        if parent_pid:
            threading.Thread(target=self._watch_parent, args=(parent_pid,), daemon=True).start()

    def set(self, reason: str, code: int = EXIT_CANCELLED) -> None:
        with self._lock:
            if not self._event.is_set():
                self.reason, self.code = reason, code
                self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Stopped` if the flag is set (for work that writes nothing until it is complete)."""
        if self._event.is_set():
            raise Stopped(self.reason)

    def _on_signal(self, signum, frame) -> None:
        self.set(f"signal {signal.Signals(signum).name}",
                 EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_CANCELLED)

    def _watch_stdin(self) -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        self.set("stdin closed")

    def _watch_parent(self, pid: int) -> None:
        while True:  # checked at once, so a parent already gone stops the work before it starts
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self.set(f"parent process {pid} is gone")
                return
            except PermissionError:
                pass
            if self._event.wait(0.5):
                return


def _guarded(events: EventStream, work) -> int:
    """Run ``work()`` (which returns the exit code): a SketchError becomes its one-line ``error`` event
    and code, anything else is a bug: traceback to stderr, ``error`` event, exit 1."""
    try:
        return work()
    except SketchError as exc:
        _final_error(events, str(exc), exc.exit_code)
        return exc.exit_code
    except Exception as exc:  # a bug: keep the traceback for the log, one line for the user
        traceback.print_exc(file=sys.stderr)
        _final_error(events, f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)
        return EXIT_INTERNAL


def _final_error(events: EventStream, message: str, code: int) -> None:
    if events.final is None:
        events.emit({"type": ERROR, "message": message, "code": code})
    else:  # the stream is finished (a bug after the final event): the log still says what happened
        print(f"error after the final event: {message}", file=sys.stderr)


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


def run_job(job_dir: str, parent_pid: int | None = None, watch_stdin: bool = False) -> int:
    stop = StopFlag(parent_pid, watch_stdin)
    events = EventStream(on_closed=stop.set)
    return _guarded(events, lambda: _run(Path(job_dir), events, stop))


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
    events.emit({"type": INFO, "message": f"device {device}; renderer {renderer.name}: {why}"})

    clip_bundle = None
    if cfg.uses_clip():
        from .losses.clip_model import load_clip

        try:
            clip_bundle = load_clip(cfg.clip, device)
        except ClipWeightsUnavailable as exc:
            if not cfg.clip.allow_geometry_fallback:
                raise
            weights = geometry_only(cfg, job.arrays)
            events.emit({"type": WARNING, CLIP_MISSING: True,
                         "message": f"CLIP WEIGHTS MISSING: {exc} -- running the geometry-only "
                                    f"objective ({', '.join(weights)}) instead, as this job allows"})
            cfg = dataclasses.replace(cfg, losses=weights)
    if cfg.uses_clip():
        from .losses.clip import describe

        events.emit({"type": INFO, "message": describe(cfg, device)})
    targets = build_targets(job.arrays, cfg, device)
    started = time.perf_counter()
    result = optimize(cfg, targets, renderer, emit=events.emit, should_stop=stop,
                      load_clip=(lambda: clip_bundle) if clip_bundle is not None else None)
    optimised = time.perf_counter() - started
    summary = {
        "iterations": result.iterations, "seconds": result.seconds, "seed": result.seed,
        "cancelled": result.cancelled, "cancel_reason": stop.reason, "pruned": result.pruned, "kept": result.kept,
        "losses": result.losses, "heldout_loss": result.heldout_loss, "objective": cfg.losses,
        "renderer": renderer.name, "device": str(device), "runs": result.runs,
        "curves": int(result.control_points.shape[0]),
        "kept_strokes": 0 if targets.kept is None else int(targets.kept.shape[0]),
        # Strokes are stored most important first; the held-out line F of the first n, n = 1..K.
        "first_strokes_f": [round(f, 4) for f in result.first_f],
        # Wall seconds of the backend's phases: drawing the views from the mesh, the initial strokes, the rest.
        "phases": {"targets": round(job.drawn_seconds, 3), "features": round(result.init_seconds, 3),
                   "optimisation": round(optimised - result.init_seconds, 3)},
    }
    write_result(folder, result, _clean(summary))
    done = {"type": DONE, "result": RESULT_NPZ, "iterations": result.iterations, "seconds": result.seconds,
            "cancelled": result.cancelled, "pruned": result.pruned, "kept": result.kept,
            "loss": result.loss_history[-1] if result.loss_history else None, "heldout_loss": result.heldout_loss}
    if result.cancelled:
        done["cancel_reason"] = stop.reason
    events.emit(done)
    if not result.cancelled:
        return EXIT_OK
    print(f"{EXIT_MESSAGES[stop.code]} ({stop.reason}) after {result.iterations} of {cfg.iterations} iterations: "
          f"partial result written to {folder / RESULT_NPZ}", file=sys.stderr)
    return stop.code


def evaluate_job(job_dir: str, views_path: str | None = None, report: bool = False, title: str = "",
                 clip=None, parent_pid: int | None = None, watch_stdin: bool = False) -> int:
    """Write ``metrics.json`` for a finished job (and with ``report`` the contact sheet and turntable
    pictures); stdout carries the same typed events as ``run``. ``clip`` (a ClipConfig) adds a CLIP
    similarity with that model: weights that cannot be loaded stop it with exit code 3, as in ``run``.

    Everything is checked and computed before the first file is written: a rejected, failed or
    stopped evaluation leaves the folder as it was."""
    stop = StopFlag(parent_pid, watch_stdin)
    events = EventStream(on_closed=stop.set)
    return _guarded(events, lambda: _evaluate(Path(job_dir), views_path, report, title, clip, events, stop))


def _evaluation_views(folder: Path, views_path: str | None):
    """The views to score on and where they come from: ``--views FILE``, else ``eval.npz``, else the
    held-out views of ``views.npz``; ``(EvalViews, source name, path or None)``."""
    from .evaluation import EvalViews
    from .job import load_eval_npz, load_job

    if views_path:
        path = Path(views_path)
        if not path.is_file():
            raise BadJob(f"{path}: no such views file (--views)")
        return EvalViews.from_arrays(load_eval_npz(path)), path.name, path
    path = folder / EVAL_NPZ
    if path.exists():
        return EvalViews.from_arrays(load_eval_npz(path)), path.name, path
    job = load_job(folder)
    if "lines" not in job.arrays or job.arrays["is_train"].all():
        raise BadJob(f"{folder}: no {EVAL_NPZ} and no held-out views with line images to evaluate on")
    return EvalViews.from_arrays(job.arrays, ~job.arrays["is_train"]), f"held-out views of {VIEWS_NPZ}", None


def _evaluate(folder: Path, views_path: str | None, report: bool, title: str, clip, events: EventStream,
              stop: StopFlag) -> int:
    from .job import load_mesh, load_result, load_turntable_npz

    # 1. check everything
    if not folder.is_dir():
        raise BadJob(f"{folder}: no such job folder")
    result = load_result(folder / RESULT_NPZ)
    mesh = load_mesh(folder / MESH_NPZ)
    views, source, path = _evaluation_views(folder, views_path)
    if report:
        if path is None or path.resolve() != (folder / EVAL_NPZ).resolve():
            where = f"the views come from {path}" if path is not None else f"there is no {EVAL_NPZ}"
            raise BadJob(f"{folder}: a report draws the views it scores and needs them as {EVAL_NPZ} in the job "
                         f"folder, but {where}")
        if (folder / TURNTABLE_NPZ).exists():
            load_turntable_npz(folder / TURNTABLE_NPZ)
        import PIL  # noqa: F401 - the report needs Pillow: fail before anything is written
    bundle = None
    if clip is not None:
        import torch

        from .losses.clip_model import load_clip

        bundle = load_clip(clip, torch.device("cpu"))

    # 2. compute (stopping between views), 3. write
    from .evaluation import evaluate

    events.emit({"type": INFO, "message": f"scoring {len(views.viewmats)} views of {source}"
                                          + (f" (CLIP similarity with {bundle.name})" if bundle else "")})
    try:
        widths = result["widths"]
        metrics = evaluate(result["control_points"], float(widths[0]) if len(widths) else 0.01, views,
                           mesh.get("vertices"), mesh.get("faces"), clip_bundle=bundle, should_stop=stop)
        metrics["evaluated_on"] = source
        metrics["lines_source"] = "Blender Freestyle (visible + hidden line sets)"
        pictures = None
        if report:
            from .report import draw_report

            pictures = draw_report(folder, _clean(metrics), title, should_stop=stop)
        stop.check()
    except Stopped:
        events.emit({"type": DONE, "result": None, "cancelled": True, "cancel_reason": stop.reason})
        print(f"{EXIT_MESSAGES[stop.code]} ({stop.reason}): evaluation stopped, nothing written", file=sys.stderr)
        return stop.code
    write_json(folder / METRICS_JSON, _clean(metrics))
    written = {}
    if pictures is not None:
        from .report import save_report

        written = save_report(folder, pictures)
    summary = {k: v for k, v in metrics.items() if k != "views"}
    events.emit({"type": DONE, "result": METRICS_JSON, "cancelled": False, "metrics": summary, **written})
    return EXIT_OK


def check_backend(quick: bool = False) -> int:
    """One JSON line describing this Python's backend packages (the add-on's probe and "Check").

    ``quick`` only looks for the packages (milliseconds; done before every run); otherwise they are
    imported (torch takes seconds) and the GPU is named. Keys: ``python``, ``executable``, one per
    package (its version, True when only found, None when missing, with ``<name>_error``), ``cuda``
    (the GPU's name, "" without), ``mps``."""
    import importlib.util

    info: dict = {"python": sys.version.split()[0], "executable": sys.executable}
    for name in ("torch", "open_clip", "gsplat", "numpy"):
        if quick:
            info[name] = True if importlib.util.find_spec(name) is not None else None
            continue
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "unknown")
        except Exception as exc:  # noqa: BLE001 - report whatever stops the import
            info[name] = None
            info[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
    if info.get("torch") and not quick:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
        info["device_name"] = info["cuda"] or "CPU"
        info["mps"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        info["threads"] = torch.get_num_threads()
    print(json.dumps(info))
    return EXIT_OK if info.get("torch") else EXIT_INTERNAL  # no torch: the JSON line says why


__all__ = ["run_job", "evaluate_job", "check_backend", "EventStream", "StopFlag", "resolve_device"]
