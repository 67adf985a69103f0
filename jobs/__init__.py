"""Running background processes from Blender: the runner and the backend process need no bpy
(``runner.py``, ``backend_process.py``, ``environment.py``, ``setup_run.py``, ``clip_fetch_run.py``);
``sketch_run.py`` and ``evaluation_run.py`` are the run kinds that read and write the scene."""

from .backend_process import (  # noqa: F401
    Worker,
    describe_backend,
    format_duration,
    message_for_exit,
    probe_backend,
    progress_of,
)
from .environment import resolve_backend_python  # noqa: F401
