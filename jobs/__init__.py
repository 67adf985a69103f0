"""Running the backend worker from Blender without importing bpy (testable on its own)."""

from .worker import (  # noqa: F401
    Worker,
    describe_backend,
    format_duration,
    message_for_exit,
    probe_backend,
    progress_of,
    resolve_backend_python,
)
