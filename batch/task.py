"""One asset on a Ray worker: run the headless command in its own process, place its outputs.

Shipped to the workers by value (standard library only), so a worker needs Blender with the
extension, not this package. Outputs are written into ``OUT/.staging/<id>.<attempt>/`` and renamed
into ``OUT/<id>/`` only when complete: a killed run never leaves a half-written folder in place.

How the command ended decides the status (``index.FINISHED`` ones are not redone by a rerun):
- exit 0: ``ok``;
- exit 1: ``failed``, the asset itself (the reason is the CLI's first error line), or ``partial``
  when the sketch was saved but its preview or evaluation failed (outputs placed, redone by a rerun);
- exit 2: ``crashed``: the command or backend on that node cannot run (not the asset's fault);
- killed by a signal, or exit 130/143 (its backend or itself was stopped from outside): the process
  died, not the asset: :class:`BlenderDied` is raised and Ray retries the task (``--retries``);
- over the timeout: stopped, ``timeout`` (not retried now; a rerun tries again).
"""

from __future__ import annotations

import errno
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
STOP_GRACE_S = 30.0  # the CLI's own unwinding (backend cancel, temporary folders) takes up to ~15 s
# A full disk, quota or file-size limit: not the asset's fault, so the asset is "crashed" (a rerun redoes it).
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NO_SPACE_WORDS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT), os.strerror(errno.EFBIG))
LOW_SPACE_BYTES = 1 << 20


class BlenderDied(Exception):
    """The Blender process died (signal, out of memory, node shutting down): worth another try."""


def _die_with_parent() -> None:
    """Linux: the Blender process gets SIGTERM when its Ray worker dies, so none is left orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """The whole process group: a ``--blender`` wrapper script's Blender too, not only the wrapper."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM (the CLI unwinds: backend cancelled, temporary folders removed), then SIGKILL. The group
    hears it even when Blender itself is gone, so a backend it left behind stops too."""
    _signal_group(proc, signal.SIGTERM)
    if proc.poll() is None:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def error_line(text: str) -> str:
    """The CLI's first ``splatsketch: error:`` line (the asset's reason, not the closing summary), else
    the last line of ``text``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line.split("error:", 1)[1].strip() for line in lines if line.startswith("splatsketch: error:")]
    return errors[0] if errors else (lines[-1][:300] if lines else "")


def _error_line(log_path: str) -> str:
    return error_line(_read(log_path))


def attempts_marker(out: str, asset: str) -> str:
    """How many times the asset started in this batch: one byte per start (works on shared storage)."""
    return os.path.join(out, STAGING, f"{asset}.attempts")


def place(staging: str, final: str) -> None:
    """Rename a finished folder into place; an older one (``--force``) is moved aside first."""
    if os.path.exists(final):
        old = f"{staging}.old"
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def _count_attempt(marker: str) -> int:
    with open(marker, "ab") as f:
        f.write(b".")
    return os.path.getsize(marker)


def run_asset(spec: dict) -> dict:
    """Sketch one asset. ``spec``: ``id``, ``out`` (the batch folder), ``argv`` (the command without
    the output options), ``timeout`` (seconds, 0 = none), ``env`` (added to the environment), ``cwd``.
    Returns the fields of its index line that only the run knows. A full disk anywhere on the way is a
    ``crashed`` line with ``no_space`` set, not an exception."""
    try:
        return _run_asset(spec)
    except OSError as error:
        if error.errno not in NO_SPACE_ERRNOS:
            raise
        return no_space_record(spec["out"], error.strerror or str(error))


def no_space_record(out: str, why: str) -> dict:
    return {"status": "crashed", "no_space": True, "node": socket.gethostname(),
            "reason": f"no space left to write in {out} ({why}): free some and rerun"}


def _out_of_space(folder: str, log_text: str) -> bool:
    """Whether a failed command most likely ran out of disk: its log says so, or the disk is all but full."""
    if any(words in log_text for words in NO_SPACE_WORDS):
        return True
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < LOW_SPACE_BYTES


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _run_asset(spec: dict) -> dict:
    out, asset = spec["out"], spec["id"]
    staging_root = os.path.join(out, STAGING)
    os.makedirs(staging_root, exist_ok=True)
    attempt = _count_attempt(attempts_marker(out, asset))
    staging = os.path.join(staging_root, f"{asset}.{uuid.uuid4().hex[:8]}")
    jobs = f"{staging}.jobs"  # the CLI's job folders: here, not in the extension's user folder, so they go too
    # Blender's and Python's temporary folders too: a Blender killed mid-run cannot remove its own, and
    # whatever is left under .staging goes with the next run's clean-up.
    scratch = f"{staging}.tmp"
    os.makedirs(staging)
    os.makedirs(scratch)
    log_path = os.path.join(staging, "log.txt")
    argv = [*spec["argv"], "--output", os.path.join(staging, BLEND), "--preview", os.path.join(staging, SHEET),
            "--json", os.path.join(staging, METRICS), "--job-dir", jobs]
    env = {**os.environ, **spec.get("env", {}), "TMPDIR": scratch, "TEMP": scratch, "TMP": scratch}
    cwd = spec.get("cwd") if spec.get("cwd") and os.path.isdir(spec["cwd"]) else None  # the driver's, if here
    started, timeout, timed_out, proc = time.monotonic(), float(spec.get("timeout") or 0), False, None
    try:
        with open(log_path, "wb") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                # Its own process group (a terminal's Ctrl-C goes to the driver, which cancels), and
                # SIGTERM if this worker dies.
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        env=env, cwd=cwd, start_new_session=True,
                                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)
                while proc.poll() is None:  # short waits: a Ray cancel (KeyboardInterrupt) lands between them
                    if timeout and time.monotonic() - started > timeout:
                        timed_out = True
                        break
                    time.sleep(0.25)
            finally:
                if proc is not None:
                    _stop(proc)
        seconds = round(time.monotonic() - started, 2)
        code = proc.returncode
        record = {"attempts": attempt, "seconds": seconds, "node": socket.gethostname(), "exit_code": code}
        saved = os.path.exists(os.path.join(staging, BLEND)) and os.path.exists(os.path.join(staging, METRICS))
        if code == 0 or (code == 1 and saved and not timed_out):
            try:
                report = _finish_outputs(staging, out, asset)
            except ValueError:  # a report cut short: on a full disk the command may not have noticed
                if not _out_of_space(staging, _read(log_path)):
                    raise
                return {**record, **no_space_record(out, "its report was cut short")}
            assets = report.get("assets", [])
            record.update(status="ok", reason="", assets=[_asset_figures(a) for a in assets],
                          settings=report.get("settings", {}), job=report.get("job", {}))
            if code == 0:
                place(staging, os.path.join(out, asset))
                stale = os.path.join(out, LOGS, f"{asset}.log")
                if os.path.exists(stale):  # logs/ holds the assets whose last run did not succeed
                    os.remove(stale)
                return record
            reason = _error_line(log_path) or "the sketch was saved, but a later step failed"
            record.update(status="partial", reason=reason)
            shutil.copyfile(log_path, _log_copy(out, asset))
            place(staging, os.path.join(out, asset))
            return record
        if code > 0 and code not in (130, 137, 143) and not timed_out and _out_of_space(staging, _read(log_path)):
            return {**record, **no_space_record(out, _error_line(log_path) or "the disk is full")}
        log_copy = _log_copy(out, asset)
        os.replace(log_path, log_copy)  # kept for every run that did not succeed
        if timed_out:
            record.update(status="timeout", reason=f"timed out after {timeout:.0f} s (--timeout)")
        elif code < 0 or code in (130, 137, 143):
            name = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else f"exit {code}"
            raise BlenderDied(f"the Blender process died ({name}) on attempt {attempt}")
        elif code == 1:
            record.update(status="failed", reason=_error_line(log_copy) or "the headless command exited 1")
        else:
            record.update(status="crashed", reason=f"exit {code} on {socket.gethostname()}: "
                                                   f"{_error_line(log_copy) or 'no message'}")
        return record
    finally:
        for folder in (staging, jobs, scratch):
            shutil.rmtree(folder, ignore_errors=True)


def _log_copy(out: str, asset: str) -> str:
    logs = os.path.join(out, LOGS)
    os.makedirs(logs, exist_ok=True)
    return os.path.join(logs, f"{asset}.log")


def _finish_outputs(staging: str, out: str, asset: str) -> dict:
    """The CLI's report, with ``output`` pointing where the .blend will be, not at the staging name."""
    with open(os.path.join(staging, METRICS), encoding="utf-8") as f:
        report = json.load(f)
    report["output"] = os.path.join(out, asset, BLEND)
    with open(os.path.join(staging, METRICS), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


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
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=timeout,
                              env={**os.environ, **env}, cwd=cwd if cwd and os.path.isdir(cwd) else None)
    except OSError as error:
        return 2, "", f"cannot start {argv[0]}: {error.strerror or error}"
    except subprocess.TimeoutExpired:
        return 2, "", f"{argv[0]} did not answer within {timeout:.0f} s"
    return done.returncode, done.stdout, done.stderr
