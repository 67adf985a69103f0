"""Errors the worker turns into one clear line and a documented exit code (docs/JOB_FORMAT.md)."""

from contract.protocol import (  # noqa: F401 - the codes live in the protocol; re-exported for the backend
    EXIT_BAD_JOB,
    EXIT_CANCELLED,
    EXIT_CLIP_WEIGHTS,
    EXIT_DEVICE,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_TERMINATED,
)


class SketchError(Exception):
    """A user-facing failure: ``str(error)`` is the whole message, ``exit_code`` the worker's code."""

    exit_code = EXIT_INTERNAL


class BadJob(SketchError):
    exit_code = EXIT_BAD_JOB


class ClipWeightsUnavailable(SketchError):
    exit_code = EXIT_CLIP_WEIGHTS


class DeviceUnavailable(SketchError):
    exit_code = EXIT_DEVICE


class Stopped(Exception):
    """Work that writes nothing until it is complete (an evaluation) saw the stop flag: the caller
    writes nothing and exits with the stop's code (130 cancelled, 143 terminated)."""


def check_stop(should_stop) -> None:
    """Raise :class:`Stopped` when ``should_stop`` (a callable or None) says so."""
    if should_stop is not None and should_stop():
        raise Stopped("stopped")
