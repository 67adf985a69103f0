"""The artist's path, headless and for real: from an empty user folder, install the built zip into a
real Blender, ``--setup-backend`` from a local wheel folder (made from the project's own .venv by
bench/wheel_folder.py, so nothing is downloaded), then ``--demo`` with no ``--python``: the sketch
comes from the managed environment. (A broken environment found by Check and fixed by Repair:
tests/addon/test_backend_setup_ui.py, on small real wheels.)

Slow (installing torch takes a minute or two); needs ../shared/tools/real-blender (or
$SPLATSKETCH_BLENDER) and a backend .venv. $SPLATSKETCH_WHEELS names a ready wheel folder.
"""

import json
import os
import shutil
import subprocess
import tempfile

import pytest
from conftest import BACKEND_PYTHON, REPO
from test_real_blender import blender_command, install_zip, run_blender


@pytest.fixture(scope="module")
def wheels():
    given = os.environ.get("SPLATSKETCH_WHEELS")
    if given:
        yield given
        return
    if not os.path.isfile(BACKEND_PYTHON):
        pytest.skip(f"no backend .venv at {BACKEND_PYTHON} to make the wheel folder from: run `make backend`")
    folder = tempfile.mkdtemp(prefix="splatsketch-wheels-", dir="/tmp")
    done = subprocess.run([BACKEND_PYTHON, os.path.join(REPO, "bench", "wheel_folder.py"), folder],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"no local wheel folder could be made: {done.stderr.strip()[-300:]}")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def fresh_blender():
    command = blender_command()
    work = tempfile.mkdtemp(prefix="splatsketch-setup-", dir="/tmp")  # /tmp is visible inside the chroot
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    # an empty user folder; pip reads no machine configuration, so only the wheel folder is used
    env.update(BLENDER_USER_RESOURCES=os.path.join(work, "user"), HOME=os.path.join(work, "home"),
               PIP_CONFIG_FILE=os.devnull)
    os.makedirs(env["HOME"])
    install_zip(command, env, work)
    yield command, env, work
    shutil.rmtree(work, ignore_errors=True)


def _managed(work: str) -> dict:
    found = [os.path.join(root, "current.json") for root, _, files in os.walk(os.path.join(work, "user"))
             if "current.json" in files]
    assert len(found) == 1, found
    with open(found[0]) as f:
        return json.load(f)


def test_zip_then_set_up_then_demo_without_python(fresh_blender, wheels):
    command, env, work = fresh_blender
    before = run_blender(command, ["-b", "-c", "splatsketch", "--check-backend"], env)
    assert before.returncode == 1 and "Set Up Backend" in before.stderr, before.stdout + before.stderr

    setup = run_blender(command, ["-b", "-c", "splatsketch", "--setup-backend", "--torch", "cpu",
                                  "--find-links", wheels], env, timeout=1800)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    assert "Backend ready: torch" in setup.stdout and "Installing" in setup.stdout
    info = _managed(work)
    assert info["python"].startswith(os.path.join(work, "user")) and info["check"]["torch"]

    check = run_blender(command, ["-b", "-c", "splatsketch", "--check-backend"], env)
    assert check.returncode == 0 and "backend ready" in check.stdout and info["python"] in check.stdout

    out = os.path.join(work, "out.blend")
    demo = run_blender(command, ["-b", "-c", "splatsketch", "--demo", "--preset", "preview", "--output", out], env)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "done: Suzanne Sketch" in demo.stdout and os.path.isfile(out)
    look = run_blender(command, ["-b", out, "--python-expr", "import bpy; o = bpy.data.objects['Suzanne Sketch']; "
                                 "print('SPLINES', len(o.data.splines)); "
                                 "print('OBJECTS', sorted(bpy.data.objects.keys()))"], env)
    assert "SPLINES 16" in look.stdout, look.stdout + look.stderr
    assert "OBJECTS ['Suzanne', 'Suzanne Sketch']" in look.stdout, "no startup Cube/Camera/Light in the demo"
