"""Errors the worker turns into one clear line and a documented exit code (docs/JOB_FORMAT.md)."""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_JOB = 2
EXIT_CLIP_WEIGHTS = 3
EXIT_DEVICE = 4
EXIT_CANCELLED = 130


class SketchError(Exception):
    """A user-facing failure: ``str(error)`` is the whole message, ``exit_code`` the worker's code."""

    exit_code = EXIT_INTERNAL


class BadJob(SketchError):
    exit_code = EXIT_BAD_JOB


class ClipWeightsUnavailable(SketchError):
    exit_code = EXIT_CLIP_WEIGHTS


class DeviceUnavailable(SketchError):
    exit_code = EXIT_DEVICE
