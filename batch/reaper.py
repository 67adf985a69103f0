"""Nothing outlives the batch: the driver runs in a child process of a small reaper.

Ray's local instance starts agents (dashboard, runtime env) that outlive a driver killed with SIGKILL
by a minute or more, and a killed driver cannot clean anything itself. So ``bin/splatsketch-batch``
forks: the child is the driver; the parent is a Linux *child subreaper*, so every process the driver
leaves behind (Ray's, Blender's) becomes its child, and it stops them when the driver is gone, then
removes ``OUT/.staging`` if no other batch took the folder meanwhile. Ctrl-C and SIGTERM are passed
on to the driver (its own process group, so it hears a terminal's Ctrl-C once); killing the parent
stops the driver (SIGTERM, its orderly stop) through the parent-death signal.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import sys
import time

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
TERM_GRACE_S = 5.0  # then SIGKILL: Ray's agents ignore SIGTERM while their raylet is gone
BLENDER_GRACE_S = 30.0  # a Blender process unwinds (backend cancelled, job folder removed) on SIGTERM


def _prctl(option: int, value: int) -> bool:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def supervise(driver) -> int:
    """Run ``driver(fd)`` (returns an exit code) in a child; reap what it leaves. The driver writes its
    output folder to ``fd`` (a pipe; None where there is no reaper) once it holds that folder."""
    if not sys.platform.startswith("linux") or not _prctl(PR_SET_CHILD_SUBREAPER, 1):
        return driver(None)
    parent = os.getpid()
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(143)
        os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the reaper only, which passes it on once
        code = 1
        try:
            code = driver(write_end)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: _forward(pid, signum))
    status = _wait_for(pid)
    code = os.waitstatus_to_exitcode(status)
    killed = code < 0
    reap_children(BLENDER_GRACE_S if killed else TERM_GRACE_S)
    out = _read_all(read_end)
    if killed and out:
        clean_staging(out)
    return 128 - code if killed else code


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_for(pid: int) -> int:
    """The driver's wait status; other children that end meanwhile (orphans) are reaped on the way."""
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if done == pid:
            return status


def children() -> list[tuple[int, bool]]:
    """This process's children, from /proc (the orphans handed to this subreaper among them), each
    with whether it is a zombie."""
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[1]) == me:
            found.append((int(name), fields[0] == b"Z"))
    return found


def _reap_zombies() -> None:
    while True:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not done:
            return


def reap_children(grace: float) -> None:
    """SIGTERM every child (and the orphans that keep arriving as their parents end), SIGKILL what is
    left after ``grace`` seconds; return when none is left, not even a zombie.

    A zombie among the children means another look: /proc is read one process at a time, so a scan can
    read an orphan's parent before that parent ended and the parent after it (a zombie), and miss the
    orphan it has just handed over (Ray's agents, when their raylet is killed)."""
    deadline, asked = time.monotonic() + grace, set()
    while True:
        _reap_zombies()
        found = children()
        if not found:
            return
        late = time.monotonic() > deadline
        for pid in (pid for pid, zombie in found if not zombie):
            if late or pid not in asked:
                _forward(pid, signal.SIGKILL if late else signal.SIGTERM)
                asked.add(pid)
        time.sleep(0.1)


def _read_all(fd: int) -> str:
    data = b""
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    return data.decode(errors="replace").strip()


def clean_staging(out: str) -> None:
    """The killed driver's half-made outputs and job folders go, unless another batch holds the folder."""
    from . import index, task

    try:
        with open(os.path.join(out, index.LOCK), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(os.path.join(out, task.STAGING), ignore_errors=True)
    except OSError:  # held by a newer batch, or the folder is gone
        pass
