"""The Blender side of the backend set-up (the operators and the resolution order), under the bpy
wheel, with real set-up processes on small real wheels (tests/backend/test_setup_env.py makes them).
The full runtime set is installed in tests/addon/test_setup_backend_e2e.py."""

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import bpy
import pytest
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tests", "backend"))
from test_addon import _draw  # noqa: E402
from test_setup_env import make_wheel, serve_index  # noqa: E402

pytestmark = pytest.mark.usefixtures("addon")


@pytest.fixture
def user(addon, tmp_path, monkeypatch):
    """A clean managed-environment folder, and pip reading none of this machine's configuration."""
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    root = addon.jobs.environment.managed_root(addon.preferences.user_dir())
    shutil.rmtree(root, ignore_errors=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)
    prefs = addon.preferences.get_preferences()
    prefs.backend_python = prefs.wheel_folder = prefs.base_python = ""


def _tiny_env(root: str, tmp_path) -> dict:
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    make_wheel(wheels, "ssk-probe-a")
    done = subprocess.run([shutil.which("python3"), "-m", "backend", "setup", root, "--find-links", str(wheels),
                           "--package", "ssk-probe-a"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(os.path.join(root, "current.json")) as f:
        return json.load(f)


def test_resolution_order_preferences_then_managed_then_checkout(addon, user, tmp_path):
    env = addon.jobs.environment
    checkout = env.resolve_backend_python("", REPO, addon.preferences.user_dir())
    assert checkout == os.path.join(REPO, ".venv", "bin", "python")  # nothing set up: the checkout's .venv
    info = _tiny_env(user, tmp_path)
    assert addon.preferences.backend_python() == info["python"], "the managed environment comes before .venv"
    prefs = addon.preferences.get_preferences()
    prefs.backend_python = "/opt/studio/python"
    assert addon.preferences.backend_python() == "/opt/studio/python", "the preference comes first"


def test_set_up_that_fails_keeps_the_previous_environment_and_says_why(addon, user, tmp_path):
    before = _tiny_env(user, tmp_path)
    prefs = addon.preferences.get_preferences()
    prefs.wheel_folder = str(tmp_path / "wheels")  # holds no torch: the runtime set cannot be installed
    with pytest.raises(RuntimeError, match="has no torch"):
        bpy.ops.splatsketch.setup_backend()  # blocking path, as from a script
    state = bpy.context.window_manager.splatsketch
    assert state.backend_error and "Set-up failed" in state.backend_report and not state.running
    with open(os.path.join(user, "current.json")) as f:
        assert json.load(f) == before
    assert sorted(os.listdir(os.path.join(user, "envs"))) == [before["env"]]


def _setup_module(addon):
    """``jobs.setup_run`` imported by name: whether an earlier test already imported it (and so made it an
    attribute of ``jobs``) depends on how the tests were spread over the workers."""
    return importlib.import_module(f"{addon.__name__}.jobs.setup_run")


def test_a_second_set_up_is_refused_while_one_runs(addon, user):
    runner = addon.jobs.runner
    os.makedirs(user, exist_ok=True)
    runner.claim(user)  # this process is "running" a set-up on the folder
    base, _ = addon.jobs.environment.find_base_python("")
    run = _setup_module(addon).SetupRun(base, user_dir=addon.preferences.user_dir())
    with pytest.raises(runner.RunError, match="already running"):
        run.begin()
    os.remove(os.path.join(user, ".owner"))


def test_check_names_a_broken_environment_and_repair_fixes_it(addon, user, tmp_path):
    """A package folder deleted from the environment (its metadata stays): Check says which package
    is missing and how to fix it; Repair (a second set-up) makes a new, whole environment."""
    info = _tiny_env(user, tmp_path)
    site = subprocess.run([info["python"], "-c", "import ssk_probe_a; print(ssk_probe_a.__file__)"],
                          capture_output=True, text=True).stdout.strip()
    os.remove(site)
    problem = addon.jobs.environment.check_managed(addon.preferences.user_dir())
    assert "missing ssk-probe-a" in problem and "Repair" in problem
    fixed = _tiny_env(user, tmp_path)
    assert fixed["env"] != info["env"] and addon.jobs.environment.check_managed(addon.preferences.user_dir()) == ""
    assert not os.path.exists(os.path.dirname(os.path.dirname(info["python"]))), "the broken one is removed"


def test_remove_deletes_the_managed_environment(addon, user, tmp_path):
    _tiny_env(user, tmp_path)
    assert bpy.ops.splatsketch.remove_backend() == {"FINISHED"}
    assert not os.path.exists(user) and addon.jobs.environment.managed_env(addon.preferences.user_dir()) is None


def test_no_download_is_attempted_with_online_access_off(addon):
    assert not bpy.app.online_access, "the wheel runs with online access off"
    assert not bpy.ops.splatsketch.get_clip_weights.poll()
    with pytest.raises(RuntimeError):
        bpy.ops.splatsketch.get_clip_weights()
    assert not bpy.context.window_manager.splatsketch.running


def test_base_python_problems_are_one_line(addon, tmp_path):
    env = addon.jobs.environment
    python, problem = env.find_base_python(str(tmp_path / "nope"))
    assert python == "" and "does not exist" in problem
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python, problem = env.find_base_python(str(venv / "bin" / "python"))
    assert python and problem == "", "a venv's Python has venv and ensurepip: it can make environments"


def test_remove_is_refused_while_a_set_up_elsewhere_runs(addon, user, tmp_path):
    """A set-up run from a script (no Blender claim on the folder) is mid-install: Remove leaves the
    folder alone, so the set-up's switch never names a deleted environment."""
    before = _tiny_env(user, tmp_path)
    server, url = serve_index(tmp_path / "site", tmp_path / "wheels")
    server.stall_seconds = 60  # the installer waits on the index: the set-up surely runs meanwhile
    setup = subprocess.Popen([shutil.which("python3"), "-m", "backend", "setup", user, "--index-url", url,
                              "--package", "ssk-probe-a"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(os.listdir(os.path.join(user, "envs"))) < 2:
            assert setup.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        with pytest.raises(RuntimeError, match="another backend set-up is running"):
            bpy.ops.splatsketch.remove_backend()
        state = bpy.context.window_manager.splatsketch
        assert state.backend_error and "nothing was removed" in state.backend_report
        assert addon.jobs.environment.managed_env(addon.preferences.user_dir()) == before
    finally:
        setup.send_signal(signal.SIGINT)
        setup.communicate(timeout=60)
        server.shutdown()
    assert sorted(os.listdir(os.path.join(user, "envs"))) == [before["env"]]


def test_torch_from_pypi_is_said_in_the_log_and_the_box(addon, user, tmp_path, monkeypatch):
    """PyTorch's CPU index unreachable, the configured index reachable: the set-up works, its log
    and the Preferences box say where torch came from and what it costs on disk."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "torchvision")  # installed in the torch round, like torch
    server, url = serve_index(tmp_path / "site", wheels)
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("SPLATSKETCH_TORCH_CPU_INDEX", "http://127.0.0.1:9/whl/cpu")  # nothing listens there
    base, _ = addon.jobs.environment.find_base_python("")
    run = _setup_module(addon).SetupRun(base, user_dir=addon.preferences.user_dir(), torch="cpu",
                                    packages=("torchvision",))
    try:
        assert run.run_blocking() == addon.jobs.runner.SUCCEEDED, run.message
    finally:
        server.shutdown()
    assert len(run.warnings) == 1 and "could not be reached" in run.warnings[0], run.warnings
    with open(run.log_path, encoding="utf-8") as f:
        assert run.warnings[0] in f.read()
    prefs = addon.preferences.get_preferences()
    shown = " ".join(str(call) for call in _draw(type(prefs), bpy.context, prefs) if call[0] == "label")
    assert "http://127.0.0.1:9/whl/cpu could not be reached" in shown and " on disk" in shown, shown
