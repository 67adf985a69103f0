"""CLIP weights: are they on this machine, and the Get CLIP Weights run (``backend clip-weights``).

The download runs only when the user pressed the button and Blender's online access is on (the
operator checks both before anything starts); the worker's own ``allow_download`` stays off."""

from __future__ import annotations

import json
import os
import subprocess

from ..contract import protocol
from .backend_process import EXTENSION_DIR
from .runner import Run


def clip_args(settings_clip: dict) -> dict:
    return {"model": settings_clip.get("model", ""), "pretrained": settings_clip.get("pretrained", ""),
            "checkpoint": settings_clip.get("checkpoint", ""), "cache_dir": settings_clip.get("cache_dir", "")}


def clip_weights_status(python: str, clip: dict, timeout: float = 120.0) -> dict:
    """``{"present": bool, ...}`` from ``backend clip-weights`` (seconds: it imports open_clip), or
    ``{"present": None, "error": ...}`` when the backend cannot tell."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    try:
        done = subprocess.run([python, "-m", "backend", *protocol.clip_weights_argv(**clip_args(clip))],
                              capture_output=True, text=True, timeout=timeout, cwd=EXTENSION_DIR, env=env)
        event = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as error:
        return {"present": None, "error": f"could not ask the backend: {error}"}
    if event.get("type") != protocol.DONE:
        return {"present": None, "error": event.get("message", "no answer")}
    return {**event, "checkpoint": clip.get("checkpoint", "")}


def describe_clip(info: dict) -> str:
    name = f"{info.get('model', '?')}/{info.get('pretrained', '?')}"
    if info.get("present") and info.get("checkpoint"):  # a local file: the tag does not apply
        return f"CLIP {info.get('model', '?')}: local file {os.path.basename(info['checkpoint'])}"
    if info.get("present"):
        return f"CLIP {name}: present"
    if info.get("present") is None:
        return f"CLIP weights: unknown ({info.get('error', '')})"
    size = f", about {info['size_mb']} MB" if info.get("size_mb") else ""
    return f"CLIP {name}: not on this machine{size}"


class ClipWeightsRun(Run):
    kind = "clip"
    cancel_grace_s = 5.0

    def __init__(self, python: str, clip: dict, *, user_dir: str, log=None):
        super().__init__("clip-weights", python, user_dir=user_dir, log=log)
        self.clip = clip_args(clip)
        self.result_name = ""
        self.info: dict = {}

    def prepare(self, folder: str):
        return {}
        yield  # nothing to render

    def argv(self) -> list[str]:
        return protocol.clip_weights_argv(**self.clip, fetch=True, parent_pid=os.getpid(), watch_stdin=True)

    def describe_progress(self, event: dict) -> tuple[float, str]:
        total = max(1, event.get("iterations", 1))
        return (min(1.0, event.get("iteration", 0) / total),
                f"{event.get('stage', 'Downloading')}: {event.get('megabytes', 0):.0f} of about {total} MB")

    def output_ready(self) -> bool:
        return bool(self.done_event and self.done_event.get("present"))

    def collect(self) -> None:
        self.info = dict(self.done_event or {})
        self.summary = f"CLIP weights ready: {self.info.get('path')} ({self.info.get('megabytes')} MB)"
