"""The headless command as a separate process (``bin/splatsketch``, the bpy wheel): what a user's
terminal shows, what signals do, what lands in the saved file and in the job folders.

Each test gives the process its own HOME, Blender user folder and TMPDIR, so it can check that
nothing is left behind in them.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import bpy
import pytest
from conftest import BACKEND_PYTHON, REPO

pytestmark = pytest.mark.usefixtures("addon")
SPLATSKETCH = os.path.join(REPO, "bin", "splatsketch")
TINY = ["--no-clip", "--curves", "3", "--iterations", "4", "--views", "3", "--heldout-views", "1",
        "--image-size", "48", "--views-per-step", "2"]


@pytest.fixture
def sandbox(tmp_path, backend_python):
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {**os.environ, "HOME": str(home), "BLENDER_USER_RESOURCES": str(home / "blender"), "TMPDIR": str(tmp)}
    return env, home, tmp


def _cli(env, *argv, **kwargs):
    return subprocess.Popen([sys.executable, SPLATSKETCH, *argv, "--python", BACKEND_PYTHON], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            **kwargs)


def _leftovers(home, tmp) -> list[str]:
    """Job folders and render folders that are still there (logs may stay: they are the record)."""
    found = []
    for root, dirs, _files in os.walk(home):
        for name in dirs:
            path = os.path.join(root, name)
            if os.path.basename(root) in ("jobs", "evaluations"):
                found.append(path)
    # torch's own caches (multiprocessing, inductor) are not ours to remove
    found += [os.path.join(tmp, n) for n in os.listdir(tmp) if not n.startswith(("pymp", "torchinductor_"))]
    return found


def test_input_run_is_quiet_and_saves_an_empty_scene_with_the_sketch(sandbox, tmp_path):
    """--input with no file opened: no startup Cube/Camera/Light in the saved .blend; the terminal
    shows progress (Freestyle's renders included) and no Blender chatter ("Saved:", Freestyle, EGL)."""
    env, home, tmp = sandbox
    bpy.ops.mesh.primitive_monkey_add()
    asset = tmp_path / "monkey.obj"
    bpy.ops.wm.obj_export(filepath=str(asset), export_selected_objects=True)
    out = tmp_path / "out.blend"
    done = _cli(env, "--input", str(asset), *TINY, "--targets", "freestyle", "--output", str(out))
    stdout, stderr = done.communicate(timeout=600)
    assert done.returncode == 0, stderr
    for noise in ("Saved:", "strokes set empty", "EGL", "Fra:"):
        assert noise not in stdout + stderr, f"Blender chatter reached the terminal: {noise!r}\n{stdout}"
    assert "rendering view" in stdout and "Iteration" in stdout and f"saved {out}" in stdout
    assert stderr.strip() == "", stderr
    bpy.ops.wm.open_mainfile(filepath=str(out))
    assert sorted(o.name for o in bpy.data.objects) == ["monkey", "monkey Sketch"]
    assert not _leftovers(home, tmp)


def test_object_names_cannot_escape_the_job_dir(sandbox, tmp_path):
    env, home, tmp = sandbox
    bpy.ops.wm.read_homefile(use_factory_startup=True)
    bpy.ops.mesh.primitive_monkey_add()
    bpy.context.active_object.name = "../../escaped/x"
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    jobs = tmp_path / "deep" / "jobs"
    done = _cli(env, str(blend), "--object", "../../escaped/x", *TINY, "--job-dir", str(jobs),
                "--preview", str(tmp_path / "sheet.png"))
    stdout, stderr = done.communicate(timeout=600)
    assert done.returncode == 0, stderr
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "deep" / "escaped").exists()
    made = [os.path.join(r, f) for r, _, files in os.walk(tmp_path) for f in files if f.endswith(".npz")]
    assert made and all(p.startswith(str(jobs) + os.sep) for p in made), made
    assert (tmp_path / "sheet.png").is_file()


def test_nothing_saved_when_every_asset_fails(sandbox, tmp_path):
    env, home, tmp = sandbox
    out = tmp_path / "out.blend"
    done = _cli(env, "--object", "Nope", "--input", str(tmp_path / "missing.obj"), *TINY, "--output", str(out))
    stdout, stderr = done.communicate(timeout=300)
    assert done.returncode == 1 and "Traceback" not in stderr
    assert "nothing saved" in stderr and not out.exists()


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_while_targets_render_cancels_cleanly(sandbox, tmp_path, sig, code, word):
    """A scheduler's SIGTERM (or Ctrl-C) while Freestyle renders the target views: one line, exit 143 (130),
    no traceback, no job or render folder left behind, nothing saved."""
    env, home, tmp = sandbox
    out = tmp_path / "out.blend"
    proc = _cli(env, "--demo", "--targets", "freestyle", "--views", "200", "--image-size", "64", "--output", str(out))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not any("rendering view" in line for line in lines):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, lines
        time.sleep(0.2)
    proc.send_signal(sig)
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and word in lines[0], stderr
    assert not out.exists() and not _leftovers(home, tmp)


def test_an_existing_output_is_replaced_and_the_old_file_kept_as_blend1(sandbox, tmp_path):
    """The overwrite policy, as a user sees it: the run saves, the previous file stays as OUT.blend1,
    and the terminal says so."""
    env, home, tmp = sandbox
    bpy.ops.wm.read_homefile(use_factory_startup=True, use_empty=True)
    bpy.ops.mesh.primitive_cube_add()
    asset = tmp_path / "box.obj"
    bpy.ops.wm.obj_export(filepath=str(asset), export_selected_objects=True)
    out = tmp_path / "out.blend"
    out.write_bytes(b"the user's previous file")
    done = _cli(env, "--input", str(asset), *TINY, "--output", str(out))
    stdout, stderr = done.communicate(timeout=600)
    assert done.returncode == 0, stderr
    assert f"saved {out} (the file it replaced is kept as {out}1)" in stdout, stdout
    assert (tmp_path / "out.blend1").read_bytes() == b"the user's previous file"
    bpy.ops.wm.open_mainfile(filepath=str(out))
    assert "box Sketch" in bpy.data.objects


def test_a_blend_argument_that_is_not_a_blend_is_one_line_exit_2(sandbox, tmp_path):
    env, _, _ = sandbox
    fake = tmp_path / "scene.blend"
    fake.write_text("not a blend file")
    proc = _cli(env, str(fake), "--demo")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    assert "Traceback" not in out + err and f"cannot open '{fake}'" in err
    assert fake.read_text() == "not a blend file"
