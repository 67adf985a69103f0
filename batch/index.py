"""``OUT/index.jsonl``: one line per finished asset run, appended, the latest line per asset wins.

Only the driver writes it, one whole line per ``write`` on a file opened for appending, then fsync:
a killed batch leaves at most a torn last line, which the next run cuts off before it appends (that
asset simply runs again). ``OUT/.lock`` keeps two batches from writing one folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os

INDEX = "index.jsonl"
LOCK = ".lock"
# "failed": the asset itself (a bad mesh): rerunning the same bytes fails again (``--retry-failed`` does).
# Not finished, so a rerun redoes them: "partial" (saved, preview/evaluation failed), "timeout", "crashed".
FINISHED = ("ok", "failed")
STATUSES = ("ok", "failed", "partial", "timeout", "crashed")
# Not a run: the asset's source was renamed and its sketch moved to ``renamed_to`` (its card goes with it).
RENAMED = "renamed"
# The type each field must have when present: a line that breaks it is skipped, not trusted.
FIELD_TYPES = {"source": str, "content_hash": str, "settings_hash": str, "reason": str, "log": str, "node": str,
               "finished": str, "renamed_to": str, "renamed_from": str, "seconds": (int, float, type(None)),
               "attempts": int, "metrics": (dict, type(None)), "outputs": dict, "assets": list, "selection": list}


class LockedError(Exception):
    """The output folder cannot be taken: another batch holds it, or it cannot be written."""


class WriteError(Exception):
    """A line could not be appended (a full disk): the file is as it was before the attempt."""


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
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
    except OSError as error:  # a full disk: nothing could run there anyway
        f.close()
        raise LockedError(f"cannot write in {out}: {error.strerror or error}") from None
    return f


def problem(record) -> str:
    """Why an index line cannot be used (a hand edit, another tool), or "" when its fields have the
    types every reader relies on."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("asset"), str) or not record["asset"]:
        return "no 'asset' name"
    if record.get("status") not in (*STATUSES, RENAMED):
        return f"unknown status {record.get('status')!r}"
    for key, types in FIELD_TYPES.items():
        if key in record and (not isinstance(record[key], types) or isinstance(record[key], bool)):
            return f"'{key}' has the wrong type"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in record.get("outputs", {}).items()):
        return "'outputs' holds a non-path"
    if not all(isinstance(a, dict) for a in record.get("assets", [])):
        return "'assets' holds a non-object"
    if not all(isinstance(a, str) for a in record.get("selection", [])):
        return "'selection' holds a non-string"
    return ""


def read(out: str, repair: bool = False, warn=None) -> dict[str, dict]:
    """The latest usable line of each asset id. A torn last line (a killed writer) is skipped, and with
    ``repair`` (the driver, holding the lock) cut off the file so the next line starts clean. Lines that
    are not JSON or have wrong types are skipped (an earlier good line of that asset stays); ``warn``
    hears one sentence about them."""
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
    bad: list[str] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser's stack
            bad.append(f"line {number}: not JSON")
            continue
        why = problem(record)
        if why:
            bad.append(f"line {number}: {why}")
        else:
            latest[record["asset"]] = record
    if bad and warn:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        warn(f"{path}: skipped {len(bad)} unusable line(s) ({bad[0]}{more}); those assets count as not done")
    return latest


def append(out: str, record: dict) -> None:
    """One whole line or nothing: a write the disk cannot take (or takes only part of) is cut back off,
    so the file never holds half a line in its middle. Raises :class:`WriteError` then."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    try:
        fd = os.open(os.path.join(out, INDEX), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as error:
        raise WriteError(f"cannot write {os.path.join(out, INDEX)}: {error.strerror or error}") from None
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as error:
            os.ftruncate(fd, size)
            raise WriteError(f"cannot write {os.path.join(out, INDEX)}: {error.strerror or error}") from None
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
