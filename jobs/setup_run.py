"""The backend set-up run: a base Python runs ``python -m backend setup`` (backend/setup_env.py) to
make the managed environment, with the runner's progress, cancel and log; no bpy here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..contract import protocol
from ..contract.setup_lock import SetupFailed, acquire_lock
from .environment import base_python_problem, describe_env, managed_root
from .runner import Run, RunError, in_use


class SetupRun(Run):
    kind = "setup"
    output = protocol.CURRENT_JSON
    cancel_grace_s = 10.0
    log_every_s = 0.0  # a few dozen progress events, one per package: every one is worth a line

    def __init__(self, base_python: str, *, user_dir: str, torch: str = "auto", find_links: str = "",
                 build_kernels: bool = False, packages: tuple = (), clip: dict | None = None, log=None):
        super().__init__("backend", base_python, user_dir=user_dir, folder=managed_root(user_dir),
                         keep_folder=True, log=log)
        self.torch, self.find_links, self.build_kernels, self.packages = torch, find_links, build_kernels, packages
        self.result_name = ""
        self.info: dict = {}
        self.clip, self.clip_info = clip, None

    def validate(self) -> None:
        if in_use(self.folder):
            raise RunError("a backend set-up is already running; wait for it or press Cancel")
        if self.find_links and not os.path.isdir(self.find_links):
            raise RunError(f"the wheel folder {self.find_links} does not exist")

    def probe(self) -> None:
        problem = base_python_problem(self.python)
        if problem:
            raise RunError(f"{problem}: choose another Base Python in Preferences > Add-ons > SplatSketch")

    def prepare(self, folder: str):
        return {}
        yield  # nothing to render: the set-up starts at once

    def argv(self) -> list[str]:
        return protocol.setup_argv(self.folder, torch=self.torch, find_links=self.find_links,
                                   build_kernels=self.build_kernels, packages=self.packages,
                                   parent_pid=os.getpid(), watch_stdin=True)

    def describe_progress(self, event: dict) -> tuple[float, str]:
        package = f" {event['package']}" if event.get("package") else ""
        return (event.get("iteration", 0) / max(1, event.get("iterations", 100)),
                f"{event.get('stage', 'Setting up')}{package}")

    def collect(self) -> None:
        with open(os.path.join(self.folder, protocol.CURRENT_JSON), encoding="utf-8") as f:
            self.info = json.load(f)
        self.summary = f"Backend {describe_env(self.info)}"
        if self.clip is not None:  # tell the panel now whether CLIP can run (seconds: imports open_clip)
            from .clip_fetch_run import clip_weights_status

            self.clip_info = clip_weights_status(self.info["python"], self.clip)


def remove_managed(user_dir: str) -> str:
    """Delete the managed environment; '' when done, else why not."""
    root = managed_root(user_dir)
    if in_use(root):
        return "a backend set-up is running: cancel it first"
    if not os.path.isdir(root):
        return "the backend is not set up"
    try:  # a set-up started elsewhere (a script, another Blender) holds the lock: its environment stays
        lock = acquire_lock(Path(root))
    except SetupFailed as error:
        return f"{error}; nothing was removed"
    try:
        os.remove(os.path.join(root, protocol.CURRENT_JSON))
    except FileNotFoundError:
        pass
    finally:
        shutil.rmtree(root, ignore_errors=True)
        lock.release()
    return ""
