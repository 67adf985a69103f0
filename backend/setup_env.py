"""``python -m backend setup ROOT``: make the managed backend environment, as a child process.

Run by a *base* Python that has only the standard library (Blender's own, or one on PATH), so this
module imports nothing else: no numpy, no torch. It creates ``ROOT/envs/<name>`` (a virtual
environment), installs the backend's runtime set into it (pyproject's ``[project].dependencies``,
torch built for this machine), checks it with ``python -m backend check``, optionally builds
gsplat's CUDA kernels, and only then switches ``ROOT/current.json`` to it. A failure, a cancel or a
vanished parent removes the new environment and leaves the previous one in use: the switch is the
last, atomic step.

stdout carries the protocol's JSON events (progress with ``stage`` and ``package``; ``done`` with
the environment's description); the installer's own output goes to stderr, the set-up log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from contract import protocol
from contract.setup_lock import SetupFailed, acquire_lock

from .worker import EventStream, StopFlag

REPO_ROOT = Path(__file__).resolve().parent.parent  # the extension folder (cwd of `-m backend`)
PYPROJECT = REPO_ROOT / "pyproject.toml"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # torch without CUDA: a tenth of the download
CPU_INDEX_ENV = "SPLATSKETCH_TORCH_CPU_INDEX"  # a studio's mirror of it
PYPI_INDEX = "https://pypi.org/simple"
TORCH_DISTS = ("torch", "torchvision")
MIN_PYTHON = (3, 10)


class Cancelled(BaseException):
    pass


# -- what to install --------------------------------------------------------------------------------


def runtime_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """The backend's runtime set: ``[project].dependencies`` of the repository's pyproject.toml."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError as error:
        raise SetupFailed(f"cannot read the package list {pyproject}: {error.strerror or error}") from None
    try:
        import tomllib
    except ImportError:  # Python 3.10: the one array we need, read plainly
        block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M)
        return re.findall(r'"([^"]+)"', block.group(1)) if block else []
    return list(tomllib.loads(text).get("project", {}).get("dependencies", []))


def dist_name(spec: str) -> str:
    return re.split(r"[\s<>=!~;\[]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def detect_torch_build() -> str:
    """``cuda`` where an NVIDIA driver is present, ``mps`` on Apple silicon, else ``cpu``."""
    if sys.platform == "darwin":
        return "mps" if os.uname().machine == "arm64" else "cpu"
    if os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi"):
        return "cuda"
    return "cpu"


# -- events, stop flag, lock ----------------------------------------------------------------------------


def progress(events: EventStream, fraction: float, stage: str, package: str = "") -> None:
    events.emit({"type": protocol.PROGRESS, "iteration": int(round(100 * min(max(fraction, 0.0), 1.0))),
                 "iterations": 100, "stage": stage, "package": package})


class Stop(StopFlag):
    """The worker's stop flag (signals, watched stdin, vanished parent) that also ends the installer
    running at that moment, so a cancel takes effect at once and leaves no orphan."""

    child: subprocess.Popen | None = None

    def set(self, reason: str, code: int = protocol.EXIT_CANCELLED) -> None:
        super().set(reason, code)
        kill_tree(self.child)

    def check(self) -> None:
        if self():
            raise Cancelled(self.reason)


def kill_tree(child: subprocess.Popen | None) -> None:
    """End an installer and everything it started (pip's build steps): no orphan keeps writing."""
    if child is None or child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            pass


# -- the steps --------------------------------------------------------------------------------------------


def env_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run_child(argv: list[str], stop: Stop, on_line=None, cwd: str | None = None,
              env: dict | None = None) -> tuple[int, list[str]]:
    """Run a step in its own process group; every output line goes to the log (and ``on_line``).
    Returns the exit code and the last 40 lines (what a failure is explained from)."""
    stop.check()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=cwd, env=env, start_new_session=True, text=True, errors="replace", bufsize=1)
    stop.child = child
    tail: list[str] = []
    for line in child.stdout:
        sys.stderr.write(line)
        tail = (tail + [line.rstrip()])[-40:]
        if on_line:
            on_line(line.rstrip())
    code = child.wait()
    stop.child = None
    stop.check()
    return code, tail


def create_env(env: Path, stop: Stop) -> None:
    if sys.version_info < MIN_PYTHON:
        raise SetupFailed(f"Python {sys.version.split()[0]} ({sys.executable}) is too old: the backend needs "
                          f"{'.'.join(map(str, MIN_PYTHON))} or newer; choose another Python in Preferences")
    code, lines = run_child([sys.executable, "-m", "venv", str(env)], stop)
    if code != 0:
        tail = " ".join(lines)
        if "No space left on device" in tail or "Errno 28" in tail or _disk_full(env.parent):
            raise SetupFailed(_classify(["No space left on device"], env.parent.parent, ""))
        raise SetupFailed(
            f"Python {sys.version.split()[0]} ({sys.executable}) cannot create virtual environments "
            f"({'ensurepip is missing' if 'ensurepip' in tail else 'venv failed'}): install its venv module "
            "(Debian/Ubuntu: `apt install python3-venv`) or choose another Python in Preferences > Add-ons > "
            "SplatSketch > Base Python")


def _disk_full(folder: Path, need: int = 64 << 20) -> bool:
    """Less than ``need`` bytes free where the environment goes (venv's ensurepip hides ENOSPC)."""
    try:
        return shutil.disk_usage(folder).free < need
    except OSError:
        return False


def _reachable(url: str) -> bool:
    """Whether the package index answers at all (any HTTP status): pip without retries says only
    "no matching distribution" when it is offline, the same words as for a missing package."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=10).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def _classify(tail: list[str], root: Path, spec_hint: str, index: str = "") -> str:
    """One line for what went wrong in an install, from the installer's last lines."""
    text = "\n".join(tail)
    if "No space left on device" in text or "Errno 28" in text or _disk_full(root):
        free = shutil.disk_usage(root).free // (1 << 20) if root.exists() else 0
        return f"the disk holding {root} is full ({free} MiB free): free some space and press Set Up again"
    missing = re.search(r"(?:No matching distribution found for|satisfies the requirement) ([^\s(]+)", text)
    offline = re.search(r"(Failed to establish a new connection|Network is unreachable|Temporary failure in name "
                        r"resolution|Connection refused|ConnectionError|timed out|Name or service not known)", text)
    if offline or (missing and index and not _reachable(index)):
        where = f" {index}" if index else ""
        return (f"could not reach the package index{where} (offline?): connect to the network, or install from a "
                "wheel folder (Preferences: Wheel Folder; headless: --find-links DIR)")
    if missing:
        return f"the package index has no {missing.group(1)} for this Python and machine ({spec_hint})"
    last = next((line for line in reversed(tail) if line.strip()), "no output")
    return f"the installer failed: {last.strip()[:200]}"


def _serves(index: str, name: str) -> bool:
    """Whether the package index answers for ``name`` (its PEP 503 page), the way pip will ask it."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{index.rstrip('/')}/{name}/", timeout=10).close()
    except (urllib.error.URLError, OSError, ValueError):  # HTTPError too: a 404 or a proxy's 403
        return False
    return True


def default_index() -> str:
    """The index pip uses when told none: the configured one, else PyPI (for messages)."""
    return os.environ.get("PIP_INDEX_URL", "").strip() or PYPI_INDEX


def cpu_torch_index(dist: str, events: EventStream) -> tuple[str, str]:
    """``(index, note)`` for a CPU build's torch (``dist``: the first of torch/torchvision asked for):
    PyTorch's CPU index (or the mirror in $SPLATSKETCH_TORCH_CPU_INDEX) when it answers for it; else
    ``("", note)``: the default index's torch, which runs on a CPU as well, rather than no backend at
    all, with a note on what it costs."""
    url = os.environ.get(CPU_INDEX_ENV, "").strip() or CPU_INDEX
    if _serves(url, dist):
        return url, ""
    cuda_wheel = sys.platform.startswith("linux") and os.uname().machine == "x86_64"
    cost = ("the CUDA build: it runs on the CPU too, but takes about 6 GB on disk instead of about 1 GB"
            if cuda_wheel else "about the size of the CPU build here")
    note = f"PyTorch's CPU index {url} could not be reached: torch comes from {default_index()} instead, {cost}"
    sys.stderr.write(f"{note}\n")  # the set-up log
    events.emit({"type": protocol.WARNING, "message": note})
    return "", note


def install(env: Path, root: Path, specs: list[str], torch_index: str, find_links: str, index_url: str, stop: Stop,
            events: EventStream) -> None:
    """pip into the new environment; torch and torchvision first, from ``torch_index`` when given."""
    python = str(env_python(env))
    base = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    if find_links:
        source = ["--no-index", "--find-links", str(find_links)]
    elif index_url:
        source = ["--index-url", index_url]
    else:
        source = []
    torch_specs = [s for s in specs if dist_name(s) in TORCH_DISTS]
    rest = [s for s in specs if dist_name(s) not in TORCH_DISTS]
    rounds = []
    if torch_specs:
        torch_source = source or (["--index-url", torch_index] if torch_index else [])
        rounds.append((torch_specs, torch_source))
    if rest:
        rounds.append((rest, source))
    seen: list[str] = []
    collecting = "Collecting" if find_links else "Downloading"  # a wheel folder is read, not downloaded
    span = {"low": 0.1, "high": 0.75}  # each round of installs fills its own part of the bar, in order

    def on_line(line: str) -> None:
        found = re.match(r"(?:Collecting|Processing|Downloading|Obtaining)\s+(\S+)", line.strip())
        if found:
            package = re.split(r"[<>=!~\[-]", os.path.basename(found.group(1)).split(".whl")[0], maxsplit=1)[0]
            if package and package not in seen:
                seen.append(package)
                low, high = span["low"], span["high"]
                fraction = low + 0.8 * (high - low) * min(1.0, len(seen) / max(8, 3 * len(chunk_specs)))
                progress(events, fraction, collecting, package)
        elif line.startswith("Installing collected packages"):
            names = line.split(":", 1)[-1].strip()
            short = names if len(names) <= 60 else names[:names.rfind(",", 0, 60)] + ", ..."
            progress(events, span["low"] + 0.9 * (span["high"] - span["low"]), "Installing", short)

    share = (0.75 - 0.1) / max(1, len(rounds))
    for number, (chunk, chunk_source) in enumerate(rounds):
        chunk_specs = chunk
        span.update(low=0.1 + number * share, high=0.1 + (number + 1) * share)
        seen.clear()
        code, tail = run_child(base + chunk_source + chunk, stop, on_line, env=_installer_env())
        if code != 0:
            index = "" if find_links else (chunk_source[1] if chunk_source[:1] == ["--index-url"] else default_index())
            raise SetupFailed(_classify(tail, root, ", ".join(chunk), index))


def _installer_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)  # Blender's Python home must not leak into the environment's Python
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_env(env: Path, specs: list[str], stop: Stop) -> dict:
    """``python -m backend check`` in the new environment; torch (when asked for) must import."""
    lines: list[str] = []
    code, _ = run_child([str(env_python(env)), "-m", "backend", *protocol.check_argv()], stop, lines.append,
                     cwd=str(REPO_ROOT), env=_installer_env())
    info = {}
    for line in reversed(lines):
        try:
            info = json.loads(line)
            break
        except ValueError:
            continue
    wanted = {dist_name(s) for s in specs}
    if "torch" in wanted and not info.get("torch"):
        detail = info.get("torch_error") or (lines[-1] if lines else f"exit code {code}")
        raise SetupFailed(f"the new environment cannot import torch: {detail}")
    return info


def build_kernels(env: Path, stop: Stop, events: EventStream) -> bool:
    """Compile gsplat's CUDA extension once (minutes); a failure only means the torch renderer."""
    progress(events, 0.92, "Building GPU kernels", "gsplat")
    code, tail = run_child([str(env_python(env)), "-c", "from gsplat.cuda._backend import _C; assert _C is not None"],
                     stop, env=_installer_env())
    if code != 0:
        last = next((line for line in reversed(tail) if line.strip()), "")
        events.emit({"type": protocol.WARNING, "message": f"gsplat's GPU kernels could not be built ({last[:160]}): "
                                                          "Generate uses the torch renderer"})
    return code == 0


def disk_bytes(folder: Path) -> int:
    """What an environment takes on disk (its files, links not followed): the box says it."""
    total = 0
    for where, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(where, name)).st_size
            except OSError:
                pass
    return total


def switch(root: Path, env: Path, description: dict) -> None:
    """Point ``current.json`` at the new environment (atomic), then remove the others."""
    protocol.write_json(root / protocol.CURRENT_JSON, description)
    for other in (root / protocol.ENVS_DIR).iterdir():
        if other != env:
            shutil.rmtree(other, ignore_errors=True)


def main(args) -> int:
    stop = Stop(args.parent_pid, args.watch_stdin)
    events = EventStream(on_closed=stop.set)
    root = Path(args.root).resolve()
    env = None
    lock = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(root)
        build = detect_torch_build() if args.torch == "auto" else args.torch
        specs = list(args.package) or runtime_requirements()
        if not specs:
            raise SetupFailed(f"no packages to install ({PYPROJECT} lists no dependencies)")
        env = root / protocol.ENVS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        env.parent.mkdir(parents=True, exist_ok=True)
        python = f"Python {sys.version.split()[0]} ({sys.executable})"
        events.emit({"type": protocol.INFO,
                     "message": f"setting up the backend in {env} with {python}; torch build: {build}"})
        progress(events, 0.02, "Creating the environment")
        create_env(env, stop)
        progress(events, 0.1, "Collecting packages")
        torch_index, torch_note = "", ""
        torch_dists = [dist_name(s) for s in specs if dist_name(s) in TORCH_DISTS]
        if build == "cpu" and torch_dists and not (args.find_links or args.index_url):
            torch_index, torch_note = cpu_torch_index(torch_dists[0], events)
        install(env, root, specs, torch_index, args.find_links, args.index_url, stop, events)
        progress(events, 0.88, "Checking")
        info = check_env(env, specs, stop)
        kernels = build_kernels(env, stop, events) if args.build_kernels and build == "cuda" else False
        description = {
            "python": str(env_python(env)), "env": env.name, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "base_python": sys.executable, "torch_build": build, "packages": specs,
            "find_links": args.find_links or "", "gsplat_kernels": kernels, "check": info,
            "disk_bytes": disk_bytes(env), "torch_note": torch_note,
        }
        stop.check()
        switch(root, env, description)
        progress(events, 1.0, "Ready")
        events.emit({"type": protocol.DONE, "result": protocol.CURRENT_JSON, "python": description["python"],
                     "torch_build": build, "torch": info.get("torch"), "cuda": info.get("cuda", "")})
        return protocol.EXIT_OK
    except Cancelled as stopped:
        _discard(env)
        events.emit({"type": protocol.ERROR, "message": f"set-up cancelled ({stopped}): the previous backend is "
                                                        "unchanged", "code": stop.code})
        return stop.code
    except SetupFailed as error:
        _discard(env)
        events.emit({"type": protocol.ERROR, "message": str(error), "code": protocol.EXIT_SETUP})
        return protocol.EXIT_SETUP
    except OSError as error:  # the disk filled up under us, a folder we cannot write
        _discard(env)
        if error.errno == 28:
            message = _classify(["No space left on device"], root, "")
        else:
            message = f"cannot write {error.filename or root}: {error.strerror or error}"
        events.emit({"type": protocol.ERROR, "message": message, "code": protocol.EXIT_SETUP})
        return protocol.EXIT_SETUP
    finally:
        kill_tree(stop.child)
        if lock is not None:
            lock.release()


def _discard(env: Path | None) -> None:
    if env is not None and env.exists():
        shutil.rmtree(env, ignore_errors=True)
