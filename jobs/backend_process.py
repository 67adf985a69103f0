"""The worker process seen from Blender: start, poll without blocking, cancel, explain exit codes.

No ``bpy`` here (as Blender's own ``bl_extension_utils.py``): the same code serves the modal
operator (polled from a 0.1 s timer), the blocking path under ``blender -b`` and tests. Stdout is the
protocol (one JSON object per line, docs/JOB_FORMAT.md) and is read by a thread into a queue, so a
poll never waits on the pipe; stderr goes straight to a log file, so a chatty traceback can never
fill a pipe and stall the worker.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from ..contract import protocol
from ..contract.protocol import EXIT_MESSAGES

EXTENSION_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where `-m backend` is found
CANCEL_GRACE_S = 10.0  # the worker finishes its step and writes a partial result within this time
SET_UP_HINT = ("press Set Up Backend in Preferences > Add-ons > SplatSketch (headless: "
               "`blender -b -c splatsketch --setup-backend`), or name a Python with torch there")


class Worker:
    """One ``python -m backend ARGV`` process (argv from :mod:`contract.protocol`) and its event stream."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.log_path = ""
        self._events: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._kill_at: float | None = None
        self.last_error: dict | None = None
        self.cancelled = False

    def start(self, python: str, argv: list[str], log_path: str, cwd: str, env: dict | None = None) -> None:
        """Launch ``python -m backend *argv`` with cwd = the extension folder, so ``-m backend`` finds
        the package. ``argv`` comes from a protocol builder (``run_argv``, ``evaluate_argv``)."""
        env = dict(os.environ if env is None else env)
        env.pop("PYTHONHOME", None)  # Blender's own Python home must not leak into another Python
        env["PYTHONUNBUFFERED"] = "1"
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [python, "-m", "backend", *argv],
                cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            )
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict) or "type" not in event:
                    raise ValueError(line)
            except ValueError:  # a stray print in the worker: keep it visible, never crash on it
                event = {"type": protocol.WARNING, "message": f"unexpected worker output: {line[:200]}"}
            self._events.put(event)
        stream.close()

    def poll(self) -> list[dict]:
        """Every event that arrived since the last call (never blocks); enforces the cancel grace."""
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event.get("type") == protocol.ERROR:
                self.last_error = event
            events.append(event)
        if self._kill_at is not None and time.monotonic() > self._kill_at and self.running:
            self.process.kill()
        return events

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def finished(self) -> bool:
        """The process has exited and every line it wrote has been read (poll may still have some)."""
        if self.process is None or self.process.poll() is None:
            return False
        return self._reader is None or not self._reader.is_alive()

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Ask the worker to stop (SIGINT and closed stdin); kill it if it is still alive after grace_s."""
        if not self.running or (self.cancelled and grace_s > 0):
            return  # already asked: keep the first deadline, or a stream of events would postpone it
        self.cancelled = True
        self._kill_at = time.monotonic() + grace_s
        try:
            self.process.stdin.close()
        except OSError:
            pass
        if sys.platform != "win32":
            try:
                self.process.send_signal(signal.SIGINT)
            except OSError:
                pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the worker exits and its output is read; return the exit code."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(timeout)
        return self.process.poll()


def message_for_exit(code: int | None, last_error: dict | None = None, log_path: str = "") -> str:
    """One line for the user saying what happened and what to do; ``""`` for success."""
    detail = (last_error or {}).get("message", "")
    see_log = f" (log: {log_path})" if log_path else ""
    if code == protocol.EXIT_OK:
        return ""
    if code is None:
        return "the worker is still running"
    if code in protocol.STOPPED_CODES:
        return EXIT_MESSAGES[code]
    if code == protocol.EXIT_CLIP_WEIGHTS:
        return f"{detail or EXIT_MESSAGES[code]}; provide the weights, or allow the geometry-only " \
               "fallback in Preferences > Add-ons > SplatSketch"
    if code == protocol.EXIT_DEVICE:
        return f"{detail or EXIT_MESSAGES[code]}; choose another device in Preferences > Add-ons > SplatSketch"
    if code in (protocol.EXIT_INTERNAL, protocol.EXIT_BAD_JOB, protocol.EXIT_SETUP):
        return f"{EXIT_MESSAGES[code]}: {detail or 'no message'}{see_log}"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the worker was killed by {name}{hint}; the scene is unchanged{see_log}"
    return f"the worker exited unexpectedly with code {code}{see_log}"


def probe_backend(python: str, full: bool = False, timeout: float = 120.0) -> dict | str:
    """What the backend Python has (a dict), or one line saying what is missing and how to fix it."""
    fix_hint = SET_UP_HINT
    if not os.path.isfile(python):
        import shutil

        if os.sep in python or not shutil.which(python):
            return f"the backend Python {python} does not exist: {fix_hint}"
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    argv = protocol.check_argv(quick=not full)
    try:
        done = subprocess.run([python, "-m", "backend", *argv], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=EXTENSION_DIR)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"the backend Python {python} could not run ({error}): {fix_hint}"
    try:
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return f"the backend Python {python} failed: {done.stderr.strip()[-300:]}"
    if not info.get("torch") or not info.get("numpy"):
        missing = "torch" if not info.get("torch") else "numpy"
        return f"the backend Python {python} has no {missing}: {SET_UP_HINT}"
    return info


def describe_backend(info: dict) -> str:
    """One line for the "Check backend" report, honest about CPU-only machines."""
    device = (f"CUDA: {info['cuda']}" if info.get("cuda") else "Apple MPS" if info.get("mps")
              else "CPU only: expect minutes per sketch (about 3 on 2 cores, geometry-only; CLIP is slower)")
    parts = [f"Python {info['python']}", f"torch {info['torch']}", device,
             f"gsplat {info['gsplat']}" if info.get("gsplat") else "no gsplat (torch renderer)",
             f"open_clip {info['open_clip']}" if info.get("open_clip") else "no open_clip (geometry only)"]
    return ", ".join(parts)


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_of(event: dict) -> tuple[float, str]:
    """``(factor 0..1, "Iteration 40/300 · loss 0.123 · 1m05s left")`` from a ``progress`` event."""
    it, total = int(event.get("iteration", 0)), max(1, int(event.get("iterations", 1)))
    run, runs = int(event.get("run", 1)), max(1, int(event.get("runs", 1)))
    # run is 1-based in the text; best-of-N runs fill the bar one after another
    factor = min(1.0, max(0.0, ((run - 1) + it / total) / runs))
    text = f"Iteration {it}/{total}" + (f" (run {run}/{runs})" if runs > 1 else "")
    loss = event.get("loss")
    if isinstance(loss, (int, float)):
        text += f" · loss {loss:.4g}"
    return factor, text + f" · {format_duration(event.get('eta_s'))} left"
