"""Running background processes from Blender: the runner and the worker process need no bpy
(``runner.py``, ``worker.py``, ``environment.py``, ``setup.py``); ``sketch.py`` and
``evaluation.py`` are the two run kinds that read and write the scene."""

from .backend_process import (  # noqa: F401
    Worker,
    describe_backend,
    format_duration,
    message_for_exit,
    probe_backend,
    progress_of,
)
from .environment import resolve_backend_python  # noqa: F401
