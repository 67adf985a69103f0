"""The headless command's stop request: Ctrl-C or SIGTERM, honoured at the next safe point.

Standard library only, at the bottom of the add-on, so the runner, the scene's long loops and the
picture code (a capture's frames, the hull's views) all look at the same request."""

from __future__ import annotations


class Terminated(BaseException):
    """SIGTERM, raised where a run can stop cleanly: unwinds like KeyboardInterrupt, so clean-up runs."""


_stop_request: list[str] = []  # "SIGINT" / "SIGTERM", set by the CLI's signal handlers


def request_stop(signal_name: str) -> None:
    """Ask every blocking run to stop at its next safe point (between two views, between two polls).

    Signal handlers only set this: an exception raised inside a render would be swallowed by
    Blender's render engine callbacks and leave a half-rendered job going on."""
    if not _stop_request:
        _stop_request.append(signal_name)


def clear_stop() -> None:
    _stop_request.clear()


def check_stop() -> None:
    """Raise KeyboardInterrupt (SIGINT) or :class:`Terminated` (SIGTERM) if a stop was requested."""
    if _stop_request:
        raise Terminated() if _stop_request[0] == "SIGTERM" else KeyboardInterrupt()
