"""The Blender side of the backend set-up (the operators and the resolution order), under the bpy
wheel, with real set-up processes on small real wheels (tests/backend/test_setup_env.py makes them).
The full runtime set is installed in tests/addon/test_setup_backend_e2e.py."""

import json
import os
import shutil
import subprocess
import sys

import bpy
import pytest
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tests", "backend"))
from test_setup_env import make_wheel  # noqa: E402

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


def test_a_second_set_up_is_refused_while_one_runs(addon, user):
    runner = addon.jobs.runner
    os.makedirs(user, exist_ok=True)
    runner.claim(user)  # this process is "running" a set-up on the folder
    base, _ = addon.jobs.environment.find_base_python("")
    run = addon.jobs.setup.SetupRun(base, user_dir=addon.preferences.user_dir())
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
