"""Which Python runs the backend, and the managed environment the extension makes for it (no bpy).

Resolution order (one function, :func:`resolve_backend_python`): the Preferences' Backend Python,
then the managed environment (``<extension user folder>/backend``, made by Set Up Backend or
``--setup-backend``), then a development checkout's ``.venv``, then ``python3`` on PATH (which the
probe then explains). The managed environment lives in the extension's *user* folder, never in the
installed extension folder, so updating or reinstalling the zip keeps it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from ..contract import protocol

MANAGED_DIR = "backend"
MIN_BASE = (3, 10)


def managed_root(user_dir: str) -> str:
    return os.path.join(user_dir, MANAGED_DIR)


def managed_env(user_dir: str) -> dict | None:
    """``current.json`` of the managed environment when its Python exists, else None."""
    try:
        with open(os.path.join(managed_root(user_dir), protocol.CURRENT_JSON), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not os.path.isfile(str(data.get("python", ""))):
        return None
    return data


def resolve_backend_python(setting: str, extension_dir: str, user_dir: str | None = None) -> str:
    """The Python that runs the backend (see the module's docstring for the order)."""
    if setting:
        return os.path.abspath(os.path.expanduser(setting))
    managed = managed_env(user_dir) if user_dir else None
    if managed:
        return managed["python"]
    for rel in (".venv/bin/python", ".venv/Scripts/python.exe"):
        candidate = os.path.join(extension_dir, rel)
        if os.path.isfile(candidate):
            return candidate
    return shutil.which("python3") or shutil.which("python") or "python3"


_CAN_MAKE_ENVS = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"


def base_python_problem(python: str) -> str:
    """'' when ``python`` can make the backend's environment, else why not (one line)."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    try:
        done = subprocess.run([python, "-c", _CAN_MAKE_ENVS], capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{python} could not run ({error})"
    if done.returncode != 0:
        if "ensurepip" in done.stderr or "venv" in done.stderr:
            return f"{python} cannot create virtual environments (no venv/ensurepip module)"
        return f"{python} failed: {done.stderr.strip()[-200:]}"
    version = tuple(int(p) for p in done.stdout.strip().split("."))
    if version < MIN_BASE:
        return f"{python} is Python {done.stdout.strip()}, the backend needs {'.'.join(map(str, MIN_BASE))}+"
    return ""


def find_base_python(preference: str = "") -> tuple[str, str]:
    """``(python, "")`` for the interpreter that will make the environment, or ``("", why not)``.

    The user's choice if given; else Blender's own Python where it can create environments; else a
    Python >= 3.10 on PATH."""
    if preference:
        python = os.path.abspath(os.path.expanduser(preference))
        problem = base_python_problem(python) if os.path.isfile(python) else f"{python} does not exist"
        return ("", problem) if problem else (python, "")
    tried = []
    candidates = [sys.executable] + [shutil.which(n) for n in ("python3", "python3.13", "python3.12", "python3.11",
                                                               "python3.10", "python")]
    for python in dict.fromkeys(c for c in candidates if c):
        problem = base_python_problem(python)
        if not problem:
            return python, ""
        tried.append(problem)
    return "", ("no Python here can create the backend's environment (" + "; ".join(tried) + "): install "
                "Python 3.10+ with its venv module (Debian/Ubuntu: `apt install python3-venv`), or name one "
                "in Preferences > Add-ons > SplatSketch > Base Python")


# Runs in the managed environment: which of the packages it was made with can no longer be imported
# (a package folder deleted leaves its metadata behind, so importability is what is checked).
_MISSING = r"""
import importlib.metadata as md, importlib.util, json, re, sys
modules = {}
for module, dists in md.packages_distributions().items():
    for dist in dists:
        modules.setdefault(re.sub(r"[-_.]+", "-", dist).lower(), []).append(module)
missing = []
for spec in sys.argv[1:]:
    name = re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]).lower()
    found = [m for m in modules.get(name, []) if not m.startswith("_") and importlib.util.find_spec(m) is not None]
    if not found:
        missing.append(name)
print(json.dumps(missing))
"""


def broken_packages(info: dict) -> list[str] | str:
    """The packages of the managed environment that cannot be imported any more ([] when whole), or
    why the environment could not be asked."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    try:
        done = subprocess.run([info["python"], "-c", _MISSING, *info.get("packages", [])], capture_output=True,
                              text=True, timeout=120, env=env)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as error:
        return f"its Python {info.get('python')} does not run ({error})"


def check_managed(user_dir: str) -> str:
    """'' when the managed environment is whole (or there is none), else one line saying what is wrong."""
    info = managed_env(user_dir)
    if info is None:
        root = managed_root(user_dir)
        if os.path.isfile(os.path.join(root, protocol.CURRENT_JSON)):
            return f"the backend environment in {root} is gone or broken: press Repair (headless: --setup-backend)"
        return ""
    broken = broken_packages(info)
    if isinstance(broken, str):
        return f"the backend environment is broken: {broken}: press Repair (headless: --setup-backend)"
    if broken:
        return (f"the backend environment {os.path.dirname(os.path.dirname(info['python']))} is missing "
                f"{', '.join(broken)}: press Repair in Preferences > Add-ons > SplatSketch (headless: --setup-backend)")
    return ""


def describe_size(info: dict | None) -> str:
    """What the environment takes on disk, e.g. "1.2 GB" ('' for one made before it was measured)."""
    size = (info or {}).get("disk_bytes")
    if not isinstance(size, int) or size <= 0:
        return ""
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def describe_env(info: dict | None) -> str:
    """One line for the Preferences box and ``--check-backend``."""
    if not info:
        return "not set up"
    check = info.get("check") or {}
    torch = str(check.get("torch", "?"))
    if check.get("cuda"):
        device = f"CUDA ({check['cuda']})"
    elif check.get("mps"):
        device = "Apple MPS"
    else:  # say so when a CUDA build landed on a machine without a GPU (a wheel folder decides the build)
        device = "CPU" + (" (a CUDA build; no NVIDIA GPU here)" if "+cu" in torch else "")
    renderer = "gsplat kernels built" if info.get("gsplat_kernels") else "torch renderer"
    return f"ready: torch {torch}, {device}, {renderer} (made {info.get('created', '?')})"
