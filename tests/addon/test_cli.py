"""The headless handler (``blender -b -c splatsketch ARGS``) on every bad-input case of issue 3.

Each case checks the one-line message, the exit code, and that the scene's objects, meshes, curves,
materials and collections are exactly what they were. The handler is called with an argv list, as
``bpy.utils.register_cli_command`` calls it. None of these cases reaches the worker.
"""

import os
import subprocess
import sys

import bpy
import pytest
from conftest import scene_state

pytestmark = pytest.mark.usefixtures("addon")


def run_cli(addon, capsys, *argv):
    before = scene_state()
    code = addon.cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err, before


def only_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_help(addon, capsys):
    code, out, err, _ = run_cli(addon, capsys, "--help")
    assert code == 0 and "--object" in out and "--input" in out and "Exit codes" in out


def test_bad_option_value(addon, capsys):
    code, out, err, before = run_cli(addon, capsys, "--curves", "many")
    assert code == 2 and "invalid int value" in err and scene_state() == before


def test_no_object(addon, capsys):
    bpy.ops.wm.read_homefile(use_factory_startup=True, use_empty=True)
    code, out, err, before = run_cli(addon, capsys)
    assert code == 2 and "no object to sketch" in only_line(err) and scene_state() == before


def test_nonexistent_object(addon, capsys):
    code, out, err, before = run_cli(addon, capsys, "--object", "Nope")
    assert code == 1 and "object 'Nope' does not exist" in only_line(err) and scene_state() == before


def test_non_mesh_object(addon, capsys):
    code, out, err, before = run_cli(addon, capsys, "--object", "Camera")
    assert code == 1 and "not a mesh" in only_line(err) and scene_state() == before


def test_mesh_without_faces(addon, capsys):
    mesh = bpy.data.meshes.new("Dots")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 1)], [])
    bpy.context.scene.collection.objects.link(bpy.data.objects.new("Dots", mesh))
    code, out, err, before = run_cli(addon, capsys, "--objects", "Dots")
    assert code == 1 and "has no faces" in only_line(err) and scene_state() == before


def test_missing_collection(addon, capsys):
    code, out, err, before = run_cli(addon, capsys, "--collection", "Props")
    assert code == 1 and "collection 'Props' does not exist" in only_line(err) and scene_state() == before


def test_nonexistent_file(addon, capsys, tmp_path):
    code, out, err, before = run_cli(addon, capsys, "--input", str(tmp_path / "missing.obj"))
    assert code == 1 and "does not exist" in only_line(err) and scene_state() == before


def test_unsupported_file_type(addon, capsys, tmp_path):
    path = tmp_path / "model.fbx"
    path.write_bytes(b"not really")
    code, out, err, before = run_cli(addon, capsys, "--input", str(path))
    assert code == 1 and "unsupported file type '.fbx'" in only_line(err) and scene_state() == before


def test_broken_file_leaves_nothing_behind(addon, capsys, tmp_path):
    path = tmp_path / "broken.glb"
    path.write_bytes(b"glTF\x02\x00\x00\x00garbage")
    code, out, err, before = run_cli(addon, capsys, "--input", str(path))
    assert code == 1 and "broken.glb" in only_line(err) and scene_state() == before


@pytest.mark.parametrize("ext", [".obj", ".ply", ".stl", ".glb"])
def test_importers_give_one_mesh(addon, tmp_path, ext):
    """Good files import through Blender's own importers as one mesh named after the file."""
    bpy.ops.mesh.primitive_monkey_add()
    bpy.ops.mesh.primitive_cube_add(location=(3, 0, 0))
    path = str(tmp_path / f"pair{ext}")
    exporters = {".obj": bpy.ops.wm.obj_export, ".ply": bpy.ops.wm.ply_export, ".stl": bpy.ops.wm.stl_export,
                 ".glb": bpy.ops.export_scene.gltf}
    exporters[ext](filepath=path)
    bpy.ops.wm.read_homefile(use_factory_startup=True, use_empty=True)
    obj = addon.cli.import_asset(bpy.context, path)
    assert obj.type == "MESH" and obj.name == "pair" and len(obj.data.polygons) > 500
    assert [o.name for o in bpy.data.objects if o.type == "MESH"] == ["pair"]


def test_missing_backend_python(addon, capsys, tmp_path):
    code, out, err, before = run_cli(addon, capsys, "--object", "Cube", "--python", str(tmp_path / "py"))
    line = only_line(err)
    assert code == 2 and "does not exist" in line and "Preferences" in line and scene_state() == before


def test_backend_python_without_torch(addon, capsys, tmp_path):
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    code, out, err, before = run_cli(addon, capsys, "--object", "Cube", "--python", str(venv / "bin" / "python"))
    assert code == 2 and "has no torch: press Set Up Backend" in only_line(err) and scene_state() == before


@pytest.mark.parametrize("option", ["--output", "--preview", "--json", "--report"])
def test_unwritable_output_is_refused_before_running(addon, capsys, tmp_path, option):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a file where a folder should be: unwritable even for root
    name = {"--output": "out.blend", "--preview": "out.png", "--json": "out.json", "--report": "r.png"}[option]
    code, out, err, before = run_cli(addon, capsys, "--object", "Cube", option, str(blocker / name),
                                     "--python", str(tmp_path / "never-reached"))
    assert code == 2 and f"cannot write {option}" in only_line(err) and scene_state() == before


def test_report_must_be_a_png(addon, capsys, tmp_path):
    code, out, err, before = run_cli(addon, capsys, "--object", "Cube", "--report", str(tmp_path / "r.jpg"))
    assert code == 2 and "must end in .png" in only_line(err) and scene_state() == before


def test_output_must_be_a_blend(addon, capsys, tmp_path):
    code, out, err, before = run_cli(addon, capsys, "--object", "Cube", "--output", str(tmp_path / "x.txt"))
    assert code == 2 and "must end in .blend" in only_line(err) and scene_state() == before


def test_open_blend_is_never_written_without_output(addon, capsys, tmp_path):
    path = tmp_path / "user.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    stamp = os.stat(path).st_mtime_ns, path.read_bytes()
    code, out, err, before = run_cli(addon, capsys, "--object", "Nope")
    assert code == 1 and (os.stat(path).st_mtime_ns, path.read_bytes()) == stamp
    assert "nothing saved" in out and bpy.data.filepath == str(path)


def test_unknown_preset_is_refused(addon, capsys):
    code, out, err, before = run_cli(addon, capsys, "--preset", "ultra")
    assert code == 2 and "--preset" in err and scene_state() == before
