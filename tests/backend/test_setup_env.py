"""``python -m backend setup``: the managed environment, made by a real base Python with real venv and
real pip, from real (small) wheels on this machine, never from the network.

Each fault leaves the previous environment in use and nothing half-made: a missing package, a
package index that answers 404, no network, a full disk, a cancel, a parent that dies, a second
set-up while one runs, a base Python without venv. The full runtime set (torch, open_clip, gsplat)
is installed by tests/addon/test_setup_backend_e2e.py from a local wheel folder.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE = shutil.which("python3") or sys.executable  # a plain Python with venv, as users have


def make_wheel(folder: Path, name: str, version: str = "1.0", requires: tuple = ()) -> Path:
    """A real, minimal pure-Python wheel with one module ``name``."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                            + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            data = text.encode()
            zf.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


@pytest.fixture
def wheels(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "ssk-probe-a")
    make_wheel(folder, "ssk-probe-b", requires=("ssk-probe-a",))
    return folder


def setup_env(root: Path, *args: str, python: str = BASE, env: dict | None = None, wait: bool = True):
    # This machine's pip settings (a wheel folder, extra local indexes) stay out: each test names its source.
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIP_")},
           "PIP_CONFIG_FILE": os.devnull, "PIP_RETRIES": "0", "PIP_TIMEOUT": "5", **(env or {})}
    proc = subprocess.Popen([python, "-m", "backend", "setup", str(root), *args], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, [json.loads(line) for line in out.splitlines() if line.strip()], err


def current(root: Path) -> dict | None:
    path = root / "current.json"
    return json.loads(path.read_text()) if path.exists() else None


def envs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "envs").iterdir()) if (root / "envs").is_dir() else []


def imports(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def test_set_up_from_a_wheel_folder(tmp_path, wheels):
    root = tmp_path / "backend"
    code, events, err = setup_env(root, "--find-links", str(wheels), "--package", "ssk-probe-b")
    assert code == 0, err
    assert [e["type"] for e in events][-1] == "done" and "error" not in [e["type"] for e in events]
    stages = {e["stage"] for e in events if e["type"] == "progress"}
    assert {"Creating the environment", "Collecting", "Installing", "Checking", "Ready"} <= stages, stages
    fractions = [e["iteration"] for e in events if e["type"] == "progress"]
    assert fractions == sorted(fractions), "the bar never goes backwards"
    assert any(e.get("package") == "ssk_probe_a" or e.get("package") == "ssk-probe-a" for e in events), events
    info = current(root)
    assert info and Path(info["python"]).is_file() and envs(root) == [info["env"]]
    assert imports(info["python"], "ssk_probe_a") and imports(info["python"], "ssk_probe_b")
    assert not (root / "setup.lock").exists()


def test_the_runtime_set_is_pyprojects_dependencies():
    sys.path.insert(0, str(REPO))
    import tomllib

    from backend.setup_env import runtime_requirements

    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert runtime_requirements() == listed
    assert {"torch", "torchvision", "open-clip-torch", "gsplat", "numpy"} <= {
        s.split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("_", "-") for s in listed}


def _set_up_once(tmp_path, wheels) -> tuple[Path, dict]:
    root = tmp_path / "backend"
    code, _, err = setup_env(root, "--find-links", str(wheels), "--package", "ssk-probe-a")
    assert code == 0, err
    return root, current(root)


def _unchanged(root: Path, before: dict) -> None:
    assert current(root) == before, "the previous environment must stay in use"
    assert envs(root) == [before["env"]], "the new environment must be removed"
    assert imports(before["python"], "ssk_probe_a")
    assert not (root / "setup.lock").exists()


def test_a_package_missing_from_the_wheel_folder_keeps_the_previous_environment(tmp_path, wheels):
    root, before = _set_up_once(tmp_path, wheels)
    code, events, _ = setup_env(root, "--find-links", str(wheels), "--package", "ssk-missing")
    assert code == 5 and events[-1]["type"] == "error"
    assert "has no ssk-missing" in events[-1]["message"] and "Traceback" not in events[-1]["message"]
    _unchanged(root, before)


class _Index(http.server.SimpleHTTPRequestHandler):
    stall = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.server.stall_seconds:
            time.sleep(self.server.stall_seconds)
        super().do_GET()


def serve_index(site: Path, wheels: Path):
    """A PEP 503 package index on loopback holding ``wheels`` (every other name answers 404)."""
    for wheel in wheels.iterdir():
        name = wheel.name.split("-")[0].replace("_", "-")
        folder = site / "simple" / name
        folder.mkdir(parents=True)
        shutil.copy(wheel, folder / wheel.name)
        (folder / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>')
    handler = lambda *a, **k: _Index(*a, directory=str(site), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.stall_seconds = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/simple"


@pytest.fixture
def index(tmp_path, wheels):
    server, url = serve_index(tmp_path / "site", wheels)
    yield server, url
    server.shutdown()


def test_the_index_answers_404_for_a_package(tmp_path, wheels, index):
    root, before = _set_up_once(tmp_path, wheels)
    _, url = index
    code, events, _ = setup_env(root, "--index-url", url, "--package", "ssk-probe-a", "--package", "ssk-nowhere")
    assert code == 5 and "has no ssk-nowhere" in events[-1]["message"]
    _unchanged(root, before)


def test_no_network_and_no_wheel_folder(tmp_path, wheels):
    root, before = _set_up_once(tmp_path, wheels)
    code, events, _ = setup_env(root, "--index-url", "http://127.0.0.1:9/simple", "--package", "ssk-probe-a")
    message = events[-1]["message"]
    assert code == 5 and "could not reach the package index" in message and "wheel folder" in message
    _unchanged(root, before)


def test_a_full_disk_keeps_the_previous_environment(tmp_path, wheels):
    """The user folder on a 12 MiB tmpfs: the venv (with pip, ~20 MiB) cannot be written."""
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        root = small / "backend"
        root.mkdir()
        (root / "current.json").write_text(json.dumps({"python": "/previous/python", "env": "previous"}))
        code, events, _ = setup_env(root, "--find-links", str(wheels), "--package", "ssk-probe-a")
        assert code == 5, events
        assert "disk" in events[-1]["message"] and "full" in events[-1]["message"], events[-1]
        assert json.loads((root / "current.json").read_text())["env"] == "previous"
        assert envs(root) == [] and not (root / "setup.lock").exists()
    finally:
        subprocess.run(["umount", str(small)])


def _installers_of(root: Path) -> list[str]:
    """Processes still running from the set-up's environment (there must be none after it ends)."""
    # -ww: unlimited width. Piped, ps cuts lines at 80 columns, which cut a long pytest tmp path before
    # "envs" and made the stalled-index tests fail or pass by the length of their folder names.
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(root / "envs") in line]


def _start_stalled(tmp_path, index, *extra: str):
    """A set-up whose package index takes a minute to answer: it is surely mid-install meanwhile."""
    server, url = index
    server.stall_seconds = 60
    root = tmp_path / "backend"
    proc = setup_env(root, "--index-url", url, "--package", "ssk-probe-a", *extra, wait=False)
    deadline = time.monotonic() + 120
    while not _installers_of(root):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return root, proc


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cancel_mid_install_leaves_nothing(tmp_path, wheels, index, sig, code):
    root, before = _set_up_once(tmp_path, wheels)
    root, proc = _start_stalled(tmp_path, index)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    last = json.loads(out.splitlines()[-1])
    assert proc.returncode == code and "cancelled" in last["message"] and "unchanged" in last["message"]
    _unchanged(root, before)
    assert not _installers_of(root), "no orphan installer"


def test_blender_closed_mid_install(tmp_path, wheels, index):
    """--parent-pid: when the parent (Blender) disappears, the set-up stops and cleans up."""
    root, before = _set_up_once(tmp_path, wheels)
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    root, proc = _start_stalled(tmp_path, index, "--parent-pid", str(parent.pid))
    parent.kill()
    parent.wait()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "parent process" in json.loads(out.splitlines()[-1])["message"]
    _unchanged(root, before)
    assert not _installers_of(root)


def test_a_second_set_up_while_one_runs_is_refused(tmp_path, wheels, index):
    root, proc = _start_stalled(tmp_path, index)
    try:
        code, events, _ = setup_env(root, "--find-links", str(wheels), "--package", "ssk-probe-a")
        assert code == 5 and "another backend set-up is running" in events[-1]["message"]
        assert proc.poll() is None, "the first set-up goes on"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert envs(root) == [] and current(root) is None


# Takes the set-up lock once per line of stdin (the instant to try at), says "held" or "refused",
# and holds it until the next line.
_TAKER = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from contract.setup_lock import SetupFailed, acquire_lock
for line in sys.stdin:
    start = float(line)
    while time.time() < start:  # spin, not sleep: both processes try within microseconds
        pass
    try:
        lock = acquire_lock(Path(sys.argv[2]))
    except SetupFailed:
        print("refused", flush=True)
        continue
    print("held", flush=True)
    sys.stdin.readline()
    lock.release()
    print("released", flush=True)
"""


@pytest.mark.parametrize("stale", [False, True], ids=["no-lock-file", "lock-of-a-dead-set-up"])
def test_two_set_ups_at_the_same_instant_never_both_hold_the_lock(tmp_path, stale):
    """Two real processes try at the same instant, 30 times: exactly one holds the lock each time,
    also when the file left by a set-up that died (its PID) is there first."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    takers = [subprocess.Popen([sys.executable, "-c", _TAKER, str(REPO), str(tmp_path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, bufsize=1) for _ in range(2)]
    holders = []
    try:
        for _ in range(30):
            if stale:
                (tmp_path / "setup.lock").write_text(str(dead.pid))
            start = time.time() + 0.05
            for taker in takers:
                taker.stdin.write(f"{start}\n")
                taker.stdin.flush()
            answers = [taker.stdout.readline().strip() for taker in takers]
            holders.append(answers.count("held"))
            for taker in (t for t, answer in zip(takers, answers) if answer == "held"):
                taker.stdin.write("release\n")
                taker.stdin.flush()
                assert taker.stdout.readline().strip() == "released"
    finally:
        for taker in takers:
            taker.stdin.close()
            taker.wait(30)
    assert holders == [1] * 30, f"holders per try: {holders}"
    assert not (tmp_path / "setup.lock").exists()


def test_a_set_up_recovers_the_lock_of_one_that_was_killed(tmp_path, wheels, index):
    """kill -9 mid-install: the lock file stays with a dead PID; the next set-up takes it and works."""
    root, proc = _start_stalled(tmp_path, index)
    pid = int((root / "setup.lock").read_text())
    proc.kill()
    proc.communicate(timeout=60)
    for line in _installers_of(root):  # its installer, in a session of its own, outlives it
        os.kill(int(line.split()[0]), signal.SIGKILL)
    assert (root / "setup.lock").exists() and pid == proc.pid
    code, events, err = setup_env(root, "--find-links", str(wheels), "--package", "ssk-probe-a")
    assert code == 0, err
    info = current(root)
    assert envs(root) == [info["env"]] and imports(info["python"], "ssk_probe_a")


@pytest.fixture
def torch_indexes(tmp_path):
    """Two indexes on loopback with a probe distribution named torchvision (installed in the torch
    round, like torch, but checked by nothing else): the configured index holds 1.0, a mirror of
    PyTorch's CPU index 2.0."""
    served = []
    for version, name in (("1.0", "configured"), ("2.0", "cpu-mirror")):
        folder = tmp_path / f"{name}-wheels"
        folder.mkdir()
        make_wheel(folder, "torchvision", version)
        make_wheel(folder, "ssk-probe-a")
        served.append(serve_index(tmp_path / name, folder))
    yield [url for _, url in served]
    for server, _ in served:
        server.shutdown()


def _torch_round(tmp_path, configured: str, cpu_index: str):
    root = tmp_path / "backend"
    code, events, err = setup_env(root, "--torch", "cpu", "--package", "torchvision", "--package", "ssk-probe-a",
                                  env={"PIP_INDEX_URL": configured, "SPLATSKETCH_TORCH_CPU_INDEX": cpu_index})
    assert code == 0, err
    info = current(root)
    version = subprocess.run([info["python"], "-c", "import torchvision; print(torchvision.VERSION)"],
                             capture_output=True, text=True).stdout.strip()
    return version, [e["message"] for e in events if e["type"] == "warning"], err, info


def test_torch_comes_from_the_configured_index_when_the_cpu_index_cannot_be_reached(tmp_path, torch_indexes):
    configured, _ = torch_indexes
    closed = "http://127.0.0.1:9/whl/cpu"  # the discard port: nothing listens, the connection is refused
    version, warnings, log, info = _torch_round(tmp_path, configured, closed)
    assert version == "1.0", "torchvision from the configured index"
    assert len(warnings) == 1 and f"CPU index {closed} could not be reached" in warnings[0], warnings
    assert f"torch comes from {configured} instead" in warnings[0]
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        assert "the CUDA build" in warnings[0] and "about 6 GB on disk instead of about 1 GB" in warnings[0]
    assert warnings[0] in log, "the set-up log says it too"
    assert info["torch_note"] == warnings[0], "current.json keeps it for the Preferences box"
    assert info["disk_bytes"] > 10 << 20, "the environment's size, measured (pip alone is ~15 MB)"


def test_torch_comes_from_the_cpu_index_when_it_answers(tmp_path, torch_indexes):
    configured, cpu_mirror = torch_indexes
    version, warnings, _, info = _torch_round(tmp_path, configured, cpu_mirror)
    assert version == "2.0" and warnings == [] and info["torch_note"] == ""


def test_no_index_at_all_is_one_line(tmp_path):
    """Neither the CPU index nor the configured one answers: the set-up fails saying which, nothing
    switched."""
    root = tmp_path / "backend"
    code, events, _ = setup_env(root, "--torch", "cpu", "--package", "torchvision",
                                env={"PIP_INDEX_URL": "http://127.0.0.1:9/simple",
                                     "SPLATSKETCH_TORCH_CPU_INDEX": "http://127.0.0.1:9/whl/cpu"})
    kinds = [e["type"] for e in events]
    assert code == 5 and kinds.count("warning") == 1 and kinds[-1] == "error", events
    assert "could not reach the package index http://127.0.0.1:9/simple" in events[-1]["message"]
    assert current(root) is None and envs(root) == []


REAL_BLENDER = REPO.parent / "shared" / "tools" / "real-blender"


@pytest.mark.skipif(not REAL_BLENDER.is_file(), reason="needs ../shared/tools/real-blender (Debian 13's python3.13)")
def test_a_base_python_without_venv_is_named_with_the_fix(tmp_path, wheels):
    """Debian's own python3 without python3-venv (the real one: Blender 4.3's Python in Debian 13 has
    no ensurepip): one line naming the package to install, nothing made."""
    root = tmp_path / "backend"
    script = (f"cd {REPO} && env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null /usr/bin/python3.13 -m backend setup "
              f"{root} --find-links {wheels} --package ssk-probe-a; echo rc=$?")
    done = subprocess.run([str(REAL_BLENDER), "sh", script], capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines and lines[-1] == "rc=5", done.stdout + done.stderr
    message = json.loads(lines[-2])["message"]
    assert "cannot create virtual environments" in message and "python3-venv" in message, message
    assert current(root) is None and envs(root) == []
