"""The backend set-up's lock: one set-up at a time in an extension's user folder.

Both sides hold it: ``python -m backend setup`` for the life of the set-up, and the add-on while it
removes an environment, so the two never work in the same folder at once."""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range lock instead
    fcntl = None

LOCK = "setup.lock"


class SetupFailed(Exception):
    """One line for the user; nothing was switched."""



class SetupLock:
    """``ROOT/setup.lock``, held with the kernel's file lock for the life of the set-up.

    The kernel grants it to one process at a time and drops it when that process ends, however it
    ends: a lock left by a set-up that died is free again without anyone judging it stale. The PID in
    the file only names the holder when a second set-up is refused."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        # removed while still held: a set-up that opened this file meanwhile finds it gone and retries
        if _same_file(self.path, self.fd):
            try:
                self.path.unlink()
            except OSError:  # removed by Remove Backend meanwhile, or Windows keeping an open file
                pass
        os.close(self.fd)


def _try_lock(fd: int) -> bool:
    """Take the file lock on ``fd`` without waiting; False while another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a released lock file is removed)."""
    try:
        here, there = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def acquire_lock(root: Path) -> SetupLock:
    """Hold ``ROOT/setup.lock`` (with this PID in it); a second set-up is refused while one runs."""
    path = root / LOCK
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            try:
                holder = f" (process {int(path.read_text().strip())})"
            except (OSError, ValueError):  # not written yet, or just removed
                holder = ""
            raise SetupFailed(f"another backend set-up is running{holder}; wait for it or cancel it")
        if _same_file(path, fd):
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return SetupLock(path, fd)
        os.close(fd)  # released and removed between our open and our lock: lock the file there now
    raise SetupFailed(f"cannot take the set-up lock {path}")
