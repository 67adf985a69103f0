"""One asset on a Ray worker: run the headless command in its own process, place its outputs.

Shipped to the workers by value (standard library only), so a worker needs Blender with the
extension, not this package. Outputs are written into ``OUT/.staging/<id>.<attempt>/`` and renamed
into ``OUT/<id>/`` only when complete: a killed run never leaves a half-written folder in place.

How the command ended decides what happens next:
- exit 0: the sketch is made; exit 1: the asset itself failed (the reason is the CLI's error line);
- killed by a signal, or exit 143 (someone sent SIGTERM): the process died, not the asset:
  :class:`BlenderDied` is raised and Ray retries the task (a bounded number of times);
- exit 130 (Ctrl-C reached it): the batch is stopping: not retried, and not final in the index;
- over the timeout: killed and recorded as failed, not retried (it would time out again).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

STAGING = ".staging"
LOGS = "logs"
BLEND, METRICS, SHEET = "sketch.blend", "metrics.json", "sheet.png"


class BlenderDied(Exception):
    """The Blender process died (signal, out of memory, node shutting down): worth another try."""


def _die_with_parent() -> None:
    """Linux: the Blender process gets SIGTERM when its Ray worker dies, so none is left orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM (the CLI unwinds: backend cancelled, temporary folders removed), then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _error_line(log_path: str) -> str:
    """The CLI's first ``splatsketch: error:`` line (its one-line reason), else the log's last line."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    errors = [line.split("error:", 1)[1].strip() for line in lines if line.startswith("splatsketch: error:")]
    return errors[0] if errors else (lines[-1][:300] if lines else "")  # the first: the asset's, not the summary


def _place(staging: str, final: str) -> None:
    """Rename the finished folder into place; an older one (``--force``) is moved aside first."""
    if os.path.exists(final):
        old = f"{staging}.old"
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def _count_attempt(marker: str) -> int:
    """How many times this asset has started in this batch (one byte per start: works on shared storage)."""
    with open(marker, "ab") as f:
        f.write(b".")
    return os.path.getsize(marker)


def run_asset(spec: dict) -> dict:
    """Sketch one asset. ``spec``: ``id``, ``out`` (the batch folder), ``argv`` (the command without
    the output options), ``timeout`` (seconds, 0 = none), ``env`` (added to the environment).
    Returns the fields of its index line that only the run knows."""
    out, asset = spec["out"], spec["id"]
    staging_root = os.path.join(out, STAGING)
    os.makedirs(staging_root, exist_ok=True)
    attempt = _count_attempt(os.path.join(staging_root, f"{asset}.attempts"))
    staging = os.path.join(staging_root, f"{asset}.{uuid.uuid4().hex[:8]}")
    os.makedirs(staging)
    log_path = os.path.join(staging, "log.txt")
    argv = [*spec["argv"], "--output", os.path.join(staging, BLEND), "--preview", os.path.join(staging, SHEET),
            "--json", os.path.join(staging, METRICS)]
    env = {**os.environ, **spec.get("env", {})}
    started, timeout = time.monotonic(), float(spec.get("timeout") or 0)
    try:
        with open(log_path, "wb") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            cwd = spec.get("cwd") if spec.get("cwd") and os.path.isdir(spec["cwd"]) else None  # the driver's, if here
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=cwd, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            try:
                while proc.poll() is None:  # short waits: a Ray cancel (KeyboardInterrupt) lands between them
                    if timeout and time.monotonic() - started > timeout:
                        _stop(proc, grace=10.0)
                        break
                    time.sleep(0.25)
            finally:
                _stop(proc)
        seconds = round(time.monotonic() - started, 2)
        code = proc.returncode
        record = {"attempts": attempt, "seconds": seconds, "node": socket.gethostname(), "exit_code": code}
        timed_out = timeout and seconds > timeout and code != 0
        if code == 0:
            with open(os.path.join(staging, METRICS), encoding="utf-8") as f:
                report = json.load(f)
            report["output"] = os.path.join(out, asset, BLEND)  # where it will be, not the staging name
            with open(os.path.join(staging, METRICS), "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
            _place(staging, os.path.join(out, asset))
            stale = os.path.join(out, LOGS, f"{asset}.log")
            if os.path.exists(stale):  # logs/ holds the assets whose last run did not succeed
                os.remove(stale)
            assets = report.get("assets", [])
            record.update(status="ok", reason="", assets=[_asset_figures(a) for a in assets],
                          settings=report.get("settings", {}), job=report.get("job", {}))
            return record
        logs = os.path.join(out, LOGS)
        os.makedirs(logs, exist_ok=True)
        os.replace(log_path, os.path.join(logs, f"{asset}.log"))  # kept for every run that did not succeed
        if timed_out:
            reason = f"timed out after {timeout:.0f} s (--timeout)"
        elif code == 130:  # Ctrl-C reached it too: the batch is stopping; not retried, not final
            record.update(status="interrupted", reason="interrupted")
            return record
        elif code < 0 or code in (137, 143):
            name = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else f"exit {code}"
            raise BlenderDied(f"the Blender process died ({name}) on attempt {attempt}")
        else:
            reason = _error_line(os.path.join(logs, f"{asset}.log")) or f"the headless command exited {code}"
        record.update(status="failed", reason=reason)
        return record
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _asset_figures(report: dict) -> dict:
    """The parts of the CLI's per-asset report worth keeping in the index (not the per-view lists)."""
    metrics = report.get("metrics") or {}
    keep = {k: report[k] for k in ("name", "status", "message", "seconds", "result", "summary") if k in report}
    wanted = ("iterations", "seconds", "seed", "heldout_loss", "losses")
    keep["metrics"] = {k: metrics[k] for k in wanted if k in metrics}
    if "evaluation" in report:
        keep["evaluation"] = report["evaluation"]
    return keep


def check_command(argv: list[str], env: dict, cwd: str = "", timeout: float = 300) -> tuple[int, str, str]:
    """Run ``argv`` (the command with ``--print-settings``) where the assets will run: (code, stdout, stderr)."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **env}, cwd=cwd if cwd and os.path.isdir(cwd) else None)
    except OSError as error:
        return 2, "", f"cannot start {argv[0]}: {error.strerror or error}"
    except subprocess.TimeoutExpired:
        return 2, "", f"{argv[0]} did not answer within {timeout:.0f} s"
    return done.returncode, done.stdout, done.stderr
