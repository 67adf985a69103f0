"""What the batch shows while it runs: a progress bar on a terminal (a line per finished asset in a
log), and the summary table at the end."""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(self, total: int, concurrency: int = 1, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.done, self.failed, self.running = total, 0, 0, 0
        self.concurrency = max(1, concurrency)
        self.seconds: list[float] = []  # of the assets that succeeded: failures are often instant
        self.started = time.monotonic()
        self._drawn = 0.0

    def finished(self, ok: bool, seconds: float) -> None:
        self.done += ok
        self.failed += not ok
        if ok:
            self.seconds.append(seconds)

    def eta(self) -> str:
        """What is left at the mean time per sketched asset, ``concurrency`` at a time."""
        if not self.seconds:
            return "--"
        left = self.total - self.done - self.failed
        return duration(left * sum(self.seconds) / len(self.seconds) / min(self.concurrency, max(1, left)))

    def counts(self) -> str:
        return (f"{self.done + self.failed}/{self.total} · {self.done} done · {self.failed} failed · "
                f"{self.running} running · ETA {self.eta()}")

    def bar(self, force: bool = False) -> None:
        """Redraw the bar (terminals only; at most twice a second unless ``force``)."""
        if not self.tty or (not force and time.monotonic() - self._drawn < 0.5):
            return
        width = 24
        filled = int(width * (self.done + self.failed) / max(1, self.total))
        self.stream.write(f"\r\x1b[K[{'#' * filled}{'.' * (width - filled)}] {self.counts()}")
        self.stream.flush()
        self._drawn = time.monotonic()

    def say(self, line: str) -> None:
        """A line above the bar (in a log: the line, then the counts)."""
        if self.tty:
            self.stream.write(f"\r\x1b[K{line}\n")
            self.bar(force=True)
        else:
            self.stream.write(f"{line}  ({self.counts()})\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def summary_table(rows: list[dict], limit: int = 40) -> str:
    """Asset, status, attempts, seconds, score, reason: every row when few, else the failures first."""
    if len(rows) > limit:
        shown = [r for r in rows if not r["status"].startswith("ok")][:limit]
        note = f"({len(rows) - len(shown)} more rows in index.jsonl: the sketched assets"
        note += ", and more failures)" if len(shown) == limit else ")"
    else:
        shown, note = rows, ""
    header = ("asset", "status", "tries", "time", "score", "reason")
    table = [header] + [(r["name"], r["status"], str(r.get("attempts", "")), duration(r.get("seconds") or 0),
                         r.get("score", ""), (r.get("reason") or "")[:80]) for r in shown]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + ([note] if note else []))
