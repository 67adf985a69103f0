"""Target renders where Blender has no GPU context: found out before Workbench would abort, Cycles instead.

Run under the bpy wheels (5.0.1 and 4.2.0). The end-to-end cases start a child Python with bpy in a
private mount namespace where libEGL (or only its Mesa vendor library) is hidden behind /dev/null:
there the first Workbench render would abort the process ("Couldn't open libEGL.so.1",
or libepoxy's "Couldn't find current GLX or EGL context"). Real Blender 4.3: test_real_blender.py.
"""

import glob
import os
import shlex
import subprocess
import sys

import bpy
import numpy as np
import pytest
from test_scene import REPO, cameras, counts, sphere_of, targets, user_state


@pytest.fixture
def probe_state(monkeypatch):
    """Forget this process's probe answer for the test (and restore it after)."""
    monkeypatch.setattr(targets, "_gpu_problem", targets._UNPROBED)
    monkeypatch.setattr(targets, "_told", False)


def test_probe_without_libegl_needs_no_child(probe_state, monkeypatch):
    monkeypatch.setattr(targets, "_gpu_initialised", lambda: False)
    monkeypatch.setattr(targets, "_egl_problem", lambda: "libEGL.so.1 cannot be loaded: gone")
    monkeypatch.setattr(targets, "_child_render_problem", lambda: pytest.fail("no child when libEGL is missing"))
    assert targets.gpu_context_problem() == "libEGL.so.1 cannot be loaded: gone"
    monkeypatch.setattr(targets, "_egl_problem", lambda: pytest.fail("asked once per process"))
    assert targets.gpu_context_problem() == "libEGL.so.1 cannot be loaded: gone"


def test_probe_child_decides_when_libegl_loads(probe_state, monkeypatch):
    monkeypatch.setattr(targets, "_gpu_initialised", lambda: False)
    monkeypatch.setattr(targets, "_egl_problem", lambda: None)
    monkeypatch.setattr(targets, "_child_render_problem", lambda: "a Workbench test render ... died of signal 6: x")
    assert targets.surface_engine() == 'CYCLES'


def test_egl_check_trusts_a_display(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    assert targets._egl_problem() is None  # GLX there; the child probe is the judge


def test_child_failure_is_one_readable_phrase(monkeypatch):
    def aborted(*args, **kwargs):
        return subprocess.CompletedProcess(args, -6, "Blender 4.3\n", "could not get a list of mounted file-systems\n"
                                           "Couldn't open libEGL.so.1: libEGL.so.1: file too short\n")
    monkeypatch.setattr(targets.subprocess, "run", aborted)
    assert targets._child_render_problem() == ("a Workbench test render in a child Blender died of signal 6: "
                                               "Couldn't open libEGL.so.1: libEGL.so.1: file too short")


def test_child_probe_here_renders():
    """This machine has a GPU context (the other add-on tests render with Workbench): the child agrees."""
    assert targets._child_render_problem() is None


def test_surface_engine_says_it_once(probe_state, monkeypatch, capsys):
    monkeypatch.setattr(targets, "_gpu_problem", "no libEGL here")
    assert targets.surface_engine() == targets.surface_engine() == 'CYCLES'
    assert capsys.readouterr().out == "splatsketch: no GPU context (no libEGL here): rendering targets with Cycles\n"


def test_cycles_targets_match_workbench(suzanne, monkeypatch):
    """The Cycles surface render gives the Workbench one's silhouette, depth and lines, and cleans up."""
    suzanne.data.materials.append(bpy.data.materials.new("Red"))
    suzanne.data.materials[0].diffuse_color = (0.8, 0.05, 0.05, 1.0)
    center, radius = sphere_of(suzanne)
    size = 96
    viewmats, Ks, _ = cameras.train_and_heldout_cameras(2, 0, size)
    monkeypatch.setattr(targets, "_gpu_problem", None)
    workbench = targets.render_targets(suzanne, viewmats, Ks, size, center, radius)
    monkeypatch.setattr(targets, "_gpu_problem", "forced by the test")
    monkeypatch.setattr(targets, "_told", True)
    before, state = counts(), user_state()
    cycles = targets.render_targets(suzanne, viewmats, Ks, size, center, radius)
    assert counts() == before and user_state() == state
    for key in ("rgba", "lines", "lines_hidden", "depth"):
        assert cycles[key].shape == workbench[key].shape and cycles[key].dtype == workbench[key].dtype
    for v in range(2):
        a, b = workbench["rgba"][v, ..., 3] > 127, cycles["rgba"][v, ..., 3] > 127
        assert (a & b).sum() / (a | b).sum() > 0.97
        both = (workbench["depth"][v] > 0) & (cycles["depth"][v] > 0)
        assert both.sum() > 0.95 * a.sum()
        assert np.median(np.abs(workbench["depth"][v] - cycles["depth"][v])[both]) < 1e-3
        rgb = cycles["rgba"][v][b][:, :3].astype(float).mean(0)
        assert rgb[0] > 2 * rgb[1] and rgb[0] > 2 * rgb[2]  # the viewport colour, shaded
        assert 60 < rgb[0] < 250
        assert (workbench["lines"][v] == cycles["lines"][v]).mean() > 0.99  # the same lines render


def _egl_files(pattern: str) -> list[str]:
    found = {os.path.realpath(p) for d in ("/usr/lib", "/usr/lib64", "/lib", "/lib64")
             for p in glob.glob(os.path.join(d, pattern)) + glob.glob(os.path.join(d, "*", pattern))}
    return sorted(p for p in found if os.path.isfile(p))


_CHILD = """\
import importlib, sys, types
import bpy
package = types.ModuleType("splatsketch_child")
package.__path__ = [sys.argv[1]]
sys.modules["splatsketch_child"] = package
targets = importlib.import_module("splatsketch_child.scene.targets")
cameras = importlib.import_module("splatsketch_child.contract.cameras")
mesh = importlib.import_module("splatsketch_child.scene.mesh")
bpy.ops.mesh.primitive_monkey_add()
obj = bpy.context.active_object
center, radius = mesh.bounding_sphere(mesh.evaluated_mesh_world(obj, bpy.context.evaluated_depsgraph_get())[0])
viewmats, Ks, _ = cameras.train_and_heldout_cameras(1, 0, 48)
out = targets.render_targets(obj, viewmats, Ks, 48, center, radius)
print("COVER", (out["rgba"][0, ..., 3] > 127).mean(), "LINES", int((out["lines"][0] > 127).sum()),
      "DEPTH", float(out["depth"][0].max()), flush=True)
"""


@pytest.mark.parametrize("hide, reason", [
    ("libEGL.so*", "libEGL.so.1 cannot be loaded"),  # no libEGL at all: found in-process, no child
    ("libEGL_mesa.so*", "child Blender died of signal 6"),  # libglvnd's libEGL with no driver: the child probe
])
def test_bpy_without_egl_renders_targets_with_cycles(hide, reason, tmp_path):
    files = _egl_files(hide)
    if not files:
        pytest.skip(f"no {hide} on this machine to hide")
    script = "".join(f"mount --bind /dev/null {shlex.quote(f)}; " for f in files)
    script += f"exec {shlex.quote(sys.executable)} -c {shlex.quote(_CHILD)} {shlex.quote(REPO)}"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["HOME"] = str(tmp_path)
    argv = ["unshare", "--mount", "--propagation", "private"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    if subprocess.run(argv + ["true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a private mount namespace here (unshare) to hide libEGL in")
    done = subprocess.run(argv + ["sh", "-c", script], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                          timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    notes = [line for line in done.stdout.splitlines() if "no GPU context" in line]
    assert len(notes) == 1 and reason in notes[0] and notes[0].endswith(": rendering targets with Cycles"), log[-3000:]
    cover, lines, depth = (float(x) for x in log.split("COVER ")[1].split()[::2][:3])
    assert 0.05 < cover < 0.7 and lines > 30 and 1.0 < depth < 5.0
