"""One runner for every background process: job folder, log, probe, start, poll, cancel, abort.

No ``bpy`` here: a run kind (:mod:`jobs.sketch_run`, :mod:`jobs.evaluation_run`) supplies only what differs
(``validate``, ``prepare``, ``argv``, ``on_event``, ``collect``, ``discard_scene``), and the same
:class:`Run` is driven by the modal operator (one :meth:`Run.step` per timer tick), by the blocking
loop under ``blender -b`` (:meth:`Run.run_blocking`) and by tests.

States: ``RUNNING`` until the run ends ``SUCCEEDED``, ``FAILED`` or ``CANCELLED``; a run that did not
succeed leaves the scene as it was (``discard_scene``) and removes its folder unless asked to keep it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

from ..contract import protocol
from ..stop_request import Terminated, check_stop
from .backend_process import EXTENSION_DIR, Worker, format_duration, message_for_exit, probe_backend

RUNNING, SUCCEEDED, FAILED, CANCELLED = "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
KEEP_FOLDERS, KEEP_LOGS = 8, 20
_ACTIVE: set = set()  # runs with a live worker, so unregister() can stop them


class RunError(Exception):
    """A user-facing problem found before or while running; ``str()`` is the whole message."""


def safe_name(name: str, fallback: str = "object") -> str:
    """A file-name part from an object name: no separators, no ``..``, no leading dot, at most 40 chars."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    safe = re.sub(r"\.{2,}", "_", safe).lstrip(".")[:40]
    return safe or fallback


def claim(folder: str) -> None:
    """Mark ``folder`` as in use by this process (pruning in other processes skips it)."""
    with open(os.path.join(folder, protocol.OWNER_FILE), "w", encoding="utf-8") as f:
        f.write(str(os.getpid()))


def in_use(folder: str) -> bool:
    """True while the process that claimed ``folder`` is alive."""
    try:
        with open(os.path.join(folder, protocol.OWNER_FILE), encoding="utf-8") as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # alive, someone else's
    return True


def prune_old(folder: str, keep: int) -> None:
    """Keep the ``keep`` newest entries of a jobs/logs folder so it cannot grow forever; never remove
    a folder a live process still uses (parallel runs share the folder)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    entries = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            entries.append((os.path.getmtime(path), path))
        except OSError:  # removed by another process meanwhile
            pass
    entries.sort()
    for _, path in entries[:-keep] if keep else entries:
        if os.path.isdir(path):
            if not in_use(path):
                shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError:
                pass


class Run:
    """The shared skeleton. Subclasses set ``kind`` (folder and log names) and ``output`` (the file
    the backend writes on success) and give the hooks below."""

    kind = "job"
    output = protocol.RESULT_NPZ
    keep_on_success = False  # True: what the backend wrote stays in use after the run (report pictures)
    cancel_grace_s = 10.0
    log_every_s = 2.0

    def __init__(self, name: str, python: str, *, user_dir: str, folder: str | None = None,
                 keep_folder: bool = False, log=None):
        self.name, self.python, self.user_dir = name, python, user_dir
        self.folder, self.keep_folder = folder, keep_folder
        self.log = log or (lambda line: None)
        self.worker = Worker()
        self.state, self.message = RUNNING, ""
        self.progress, self.status = 0.0, "Starting"
        self.summary = ""
        self.warnings: list[str] = []
        self.clip_missing = False  # a warning said the CLIP weights were missing (protocol.CLIP_MISSING)
        self.done_event: dict | None = None
        self.changed = False  # set when something new happened; the modal redraws only then
        self.started = time.monotonic()
        self._prepare = None
        self._created_folder = False
        self._logged = 0.0

    # -- hooks ------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise RunError when the run cannot start (object gone, not a mesh...)."""

    def probe(self) -> None:
        """Raise RunError when the backend Python cannot run this (no torch...)."""
        info = probe_backend(self.python)
        if isinstance(info, str):
            raise RunError(info)

    def describe_progress(self, event: dict) -> tuple[float, str]:
        """``(factor 0..1, status line)`` of a progress event."""
        from .backend_process import progress_of

        return progress_of(event)

    def prepare(self, folder: str):
        """A generator writing the job folder, yielding ``(done, total)`` per rendered view; on any
        failure or ``close()`` it must leave nothing half-written. Its return value is kept in
        ``self.prepared``."""
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The backend sub-command (a :mod:`contract.protocol` builder)."""
        raise NotImplementedError

    def on_event(self, event: dict) -> None:
        """A worker event besides the ones the runner handles (progress, warning, info, done)."""

    def output_ready(self) -> bool:
        """Whether the backend left what this run needs (by default: the ``output`` file)."""
        return os.path.isfile(os.path.join(self.folder, self.output))

    def collect(self) -> None:
        """Read the backend's output into the scene; raise to fail (the scene must stay unchanged)."""

    def discard_scene(self) -> None:
        """Undo what the run showed in the scene meanwhile (a live preview)."""

    # -- start ------------------------------------------------------------------------------------
    def begin(self) -> None:
        """Validate, probe the backend and make the folder; the views then render one per :meth:`advance`."""
        self.validate()
        self.probe()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = safe_name(self.name, self.kind)
        if self.folder is None:
            root = self._user_subfolder(f"{self.kind}s")
            prune_old(root, KEEP_FOLDERS)
            self.folder = tempfile.mkdtemp(prefix=f"{safe}-{stamp}-", dir=root)
            self._created_folder = True
        else:
            self._created_folder = not os.path.isdir(self.folder)
            os.makedirs(self.folder, exist_ok=True)
        claim(self.folder)
        logs = self._user_subfolder("logs")
        prune_old(logs, KEEP_LOGS)
        self.log_path = os.path.join(logs, f"{self.kind}-{safe}-{stamp}-{os.getpid()}.log")
        self.status = "Rendering views"
        self._prepare = self.prepare(self.folder)

    def _user_subfolder(self, sub: str) -> str:
        path = os.path.join(self.user_dir, sub)
        os.makedirs(path, exist_ok=True)
        return path

    @property
    def preparing(self) -> bool:
        return self._prepare is not None

    def advance(self) -> None:
        """Render the next view (the UI stays responsive between two); after the last one, start the
        backend. Raise RunError if the job cannot be prepared (nothing is left behind)."""
        try:
            done, total = next(self._prepare)
        except StopIteration as finished:
            self.prepared = finished.value
        except Exception as error:  # a render failure must not leave a half-made job behind
            self._prepare = None
            self._remove_folder()
            raise RunError(f"could not prepare the {self.kind}: {error}") from error
        else:
            self.progress_preparing(done, total)
            return
        self._prepare = None
        self.worker.start(self.python, self.argv(), self.log_path, cwd=EXTENSION_DIR)
        _ACTIVE.add(self)
        self.status, self.changed = "Backend started", True

    preparing_what = "rendering view"  # what one prepare step does, for the status line and the log

    def progress_preparing(self, done: int, total: int) -> None:
        self.status, self.changed = f"{self.preparing_what.capitalize()} {done}/{total}", True
        now = time.monotonic()
        if now - self._logged >= self.log_every_s or done == total:
            self._logged = now
            self.log(f"[{self.name}] {self.preparing_what} {done}/{total}")

    def start(self) -> None:
        """Everything up to a running backend, blocking; raise RunError with the reason."""
        self.begin()
        while self.preparing:
            check_stop()
            self.advance()

    # -- step -------------------------------------------------------------------------------------
    def step(self) -> str:
        """Handle the backend's new events; return the state."""
        if self.state != RUNNING:
            return self.state
        finished = self.worker.finished  # read before polling so no event can slip past the last poll
        for event in self.worker.poll():
            self._handle(event)
        if finished:
            self._finish()
        return self.state

    def _handle(self, event: dict) -> None:
        kind, self.changed = event.get("type"), True
        if kind == protocol.PROGRESS:
            self.progress, self.status = self.describe_progress(event)
            now = time.monotonic()
            if now - self._logged >= self.log_every_s or event.get("iteration") == event.get("iterations"):
                self._logged = now
                self.log(f"[{self.name}] {self.status}")
        elif kind == protocol.WARNING:
            self.warnings.append(event.get("message", ""))
            self.clip_missing |= bool(event.get(protocol.CLIP_MISSING))
            self.log(f"[{self.name}] warning: {event.get('message', '')}")
        elif kind == protocol.INFO:
            self.log(f"[{self.name}] {event.get('message', '')}")
        elif kind == protocol.DONE:
            self.done_event = event
        self.on_event(event)

    def _finish(self) -> None:
        _ACTIVE.discard(self)
        code = self.worker.exit_code
        if self.worker.cancelled or code in protocol.STOPPED_CODES:
            self._fail(CANCELLED, protocol.EXIT_MESSAGES.get(code, "cancelled"))
        elif code != protocol.EXIT_OK or not self.output_ready():
            self._fail(FAILED, message_for_exit(code, self.worker.last_error, self.worker.log_path)
                       or f"the backend finished without writing {self.output}")
        else:
            try:
                self.collect()
                self.state, self.progress, self.status = SUCCEEDED, 1.0, "Done"
            except RunError as error:
                self._fail(FAILED, str(error))
            except Exception as error:  # a bad output must leave the scene as it was
                self._fail(FAILED, f"could not read the backend's {self.output}: {error}")
        if self.state == SUCCEEDED:
            self._release_folder(keep=self.keep_on_success)

    def _fail(self, state: str, message: str) -> None:
        try:
            self.discard_scene()
        except ReferenceError:  # the file was closed under us: nothing left to undo
            pass
        self.state, self.message = state, message
        self.status = "Cancelled" if state == CANCELLED else "Failed"
        self._release_folder()

    def _release_folder(self, keep: bool = False) -> None:
        """The run is over: drop the folder, or (kept) only its claim, so pruning may take it later."""
        if self.keep_folder or keep:
            if self.folder:
                try:
                    os.remove(os.path.join(self.folder, protocol.OWNER_FILE))
                except OSError:
                    pass
        else:
            self._remove_folder()

    def _remove_folder(self) -> None:
        if self.folder and not self.keep_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        elif self.folder and self._created_folder and os.path.isdir(self.folder):
            # asked to keep it, but a run that failed before its job was written leaves no empty shell
            try:
                os.remove(os.path.join(self.folder, protocol.OWNER_FILE))
                os.rmdir(self.folder)
            except OSError:
                pass

    # -- control ----------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the run to stop; while views render that is immediate, else the backend finishes its step."""
        if self.preparing:
            self._prepare.close()  # the generator removes what it wrote
            self._prepare = None
            self._remove_folder()
            self._fail(CANCELLED, "cancelled")
        elif self.state == RUNNING:
            self.worker.cancel(self.cancel_grace_s)

    def abort(self) -> None:
        """Stop now (add-on disabled, file loaded, Blender quitting, a bug): kill the backend."""
        if self.preparing:
            self.cancel()
        if self.state == RUNNING:
            self.worker.cancel(grace_s=0.0)
            self.worker.poll()
            self.worker.wait(5.0)
            self._fail(CANCELLED, "cancelled")
        _ACTIVE.discard(self)

    def run_blocking(self, interval: float = 0.1) -> str:
        """The same steps as the modal operator, in a loop (timers never fire under ``blender -b``).

        Ctrl-C or SIGTERM (:class:`Terminated`) cancel the run cleanly, wait for it to end, then
        propagate, so a caller stops the rest of its work too."""
        try:
            if self.state == RUNNING and self._prepare is None and self.worker.process is None:
                self.start()
            while self.step() == RUNNING:
                check_stop()
                time.sleep(interval)
        except (KeyboardInterrupt, Terminated):
            self.cancel()
            deadline = time.monotonic() + self.cancel_grace_s + 5.0
            while self.step() == RUNNING and time.monotonic() < deadline:
                time.sleep(interval)
            if self.state == RUNNING:
                self.abort()
            raise
        return self.state

    def elapsed(self) -> str:
        return format_duration(time.monotonic() - self.started)


def abort_all() -> None:
    for run in list(_ACTIVE):
        run.abort()
