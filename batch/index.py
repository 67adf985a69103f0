"""``OUT/index.jsonl``: one line per finished asset run, appended, the latest line per asset wins.

Only the driver writes it, one whole line per ``write`` on a file opened for appending, then fsync:
a killed batch leaves at most a torn last line, which the next run cuts off before it appends (that
asset simply runs again). ``OUT/.lock`` keeps two batches from writing one folder.
"""

from __future__ import annotations

import fcntl
import json
import os

INDEX = "index.jsonl"
LOCK = ".lock"
# "failed": the asset itself (a bad mesh): rerunning the same bytes fails again (``--retry-failed`` does).
# Not finished, so a rerun redoes them: "partial" (saved, preview/evaluation failed), "timeout", "crashed".
FINISHED = ("ok", "failed")
STATUSES = ("ok", "failed", "partial", "timeout", "crashed")


class LockedError(Exception):
    """The output folder cannot be taken: another batch holds it, or it cannot be written."""


def lock(out: str):
    """Hold ``OUT/.lock`` for the life of the returned file object (released when the process ends)."""
    try:
        f = open(os.path.join(out, LOCK), "a+")
    except OSError as error:
        raise LockedError(f"cannot write in {out}: {error.strerror or error}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise LockedError(f"another splatsketch-batch ({holder}) is writing {out}") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    return f


def read(out: str, repair: bool = False) -> dict[str, dict]:
    """The latest line of each asset id. A torn last line (a killed writer) is skipped, and with
    ``repair`` (the driver, holding the lock) cut off the file so the next line starts clean."""
    path = os.path.join(out, INDEX)
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        if repair:
            with open(path, "r+b") as f:
                f.truncate(keep)
        data = data[:keep]
    latest: dict[str, dict] = {}
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "asset" in record:
            latest[record["asset"]] = record
    return latest


def append(out: str, record: dict) -> None:
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(os.path.join(out, INDEX), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def is_done(record: dict | None, content_hash: str, settings_hash: str, out: str, retry_failed: bool = False) -> bool:
    """A rerun skips the asset: same bytes, same settings, finished, and (if it succeeded) outputs there."""
    if not record or record.get("status") not in FINISHED or (retry_failed and record["status"] == "failed"):
        return False
    if record.get("content_hash") != content_hash or record.get("settings_hash") != settings_hash:
        return False
    if record["status"] == "ok":
        return all(os.path.exists(os.path.join(out, p)) for p in record.get("outputs", {}).values())
    return True


def score(record: dict) -> tuple[str, float, bool] | None:
    """``(label, value, higher is better)`` of a finished line: the held-out line F-score when it was
    evaluated, else the held-out loss; None when it has neither (failed before sketching)."""
    metrics = record.get("metrics") or {}
    if isinstance(metrics.get("f_mean"), (int, float)):
        return "F", float(metrics["f_mean"]), True
    if isinstance(metrics.get("heldout_loss"), (int, float)):
        return "loss", float(metrics["heldout_loss"]), False
    return None
