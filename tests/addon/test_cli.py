"""The headless handler (``blender -b -c splatsketch ARGS``) on every bad-input case.

Each case checks the one-line message, the exit code, and that the scene's objects, meshes, curves,
materials and collections are exactly what they were. The handler is called with an argv list, as
``bpy.utils.register_cli_command`` calls it. None of these cases reaches the worker.
"""

import os
import subprocess
import sys

import bpy
import numpy as np
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


# --- outputs against inputs -----------------------------------------------------------------------

CUBE_OBJ = "".join(f"v {x} {y} {z}\n" for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)) + \
    "f 1 2 4 3\nf 5 7 8 6\nf 1 5 6 2\nf 3 4 8 7\nf 1 3 7 5\nf 2 6 8 4\n"


@pytest.fixture
def cube_obj(tmp_path):
    path = tmp_path / "cube.obj"
    path.write_text(CUBE_OBJ)
    return path


@pytest.mark.parametrize("option, name", [("--json", "cube.obj"), ("--preview", "cube.obj"),
                                          ("--json", "hard.json"), ("--report", "link.png"),
                                          ("--output", "link.blend")])
def test_an_output_naming_an_input_is_refused_before_anything_runs(addon, capsys, tmp_path, cube_obj, option, name):
    """The same file, by its own name, a symlink or a hard link: refused, the mesh untouched."""
    (tmp_path / "link.png").symlink_to(cube_obj)
    (tmp_path / "link.blend").symlink_to(cube_obj)
    os.link(cube_obj, tmp_path / "hard.json")
    code, out, err, before = run_cli(addon, capsys, "--input", str(cube_obj), option, str(tmp_path / name),
                                     "--python", str(tmp_path / "never-reached"))
    line = only_line(err)
    assert code == 2 and f"{option} '" in line and "same file as --input" in line, line
    assert cube_obj.read_text() == CUBE_OBJ and scene_state() == before


@pytest.mark.parametrize("argv, clash", [
    (("--preview", "a.png", "--report", "a.png"), "--report"),
    (("--json", "a.png", "--preview", "a.png"), "--preview"),
    (("--report", "r.png", "--preview", "r.gif"), "--report (its turntable)"),
    (("--output", "x.blend", "--json", "x.blend"), "--json"),
])
def test_two_outputs_naming_one_file_are_refused(addon, capsys, tmp_path, cube_obj, argv, clash):
    argv = [a if a.startswith("--") else str(tmp_path / a) for a in argv]
    code, out, err, before = run_cli(addon, capsys, "--input", str(cube_obj), *argv,
                                     "--python", str(tmp_path / "never-reached"))
    line = only_line(err)
    assert code == 2 and line.startswith(f"splatsketch: error: {clash} '") and "same file as" in line, line
    assert sorted(os.listdir(tmp_path)) == ["cube.obj"] and scene_state() == before


def test_only_output_may_name_the_open_blend(addon, capsys, tmp_path):
    """Saving the sketches into the open file is what ``--output`` naming it asks for; a report over
    it is a mistake."""
    path = tmp_path / "user.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    stamp = path.read_bytes()
    code, out, err, before = run_cli(addon, capsys, "--object", "Cube", "--json", str(path),
                                     "--python", str(tmp_path / "never-reached"))
    assert code == 2 and "same file as the open .blend file" in only_line(err) and path.read_bytes() == stamp
    code, out, err, before = run_cli(addon, capsys, "--object", "Cube", "--output", str(path),
                                     "--python", str(tmp_path / "never-reached"))
    line = only_line(err)
    assert code == 2 and "same file" not in line and "never-reached" in line and path.read_bytes() == stamp


def test_an_output_over_a_capture_picture_is_refused(addon, capsys, tmp_path, backend_python):
    from test_images import write_sphere_capture

    folder = write_sphere_capture(addon, str(tmp_path / "capture"), train=3, test=1, size=32)
    picture = tmp_path / "capture" / "train" / "r_1.png"
    stamp = picture.read_bytes()
    code, out, err, before = run_cli(addon, capsys, "--images", folder, "--preview", str(picture),
                                     "--python", backend_python)
    line = only_line(err)
    assert code == 2 and "same file as a picture of --images 'capture'" in line, line
    assert picture.read_bytes() == stamp and scene_state() == before


def test_an_existing_output_blend_is_kept_as_blend1_whatever_the_preference(addon, capsys, tmp_path):
    """The overwrite policy: the new file replaces it, the old one stays beside it, and the user is told."""
    path = tmp_path / "out.blend"
    path.write_bytes(b"the user's previous file")
    files = bpy.context.preferences.filepaths
    saved = files.save_version
    files.save_version = 0
    try:
        addon.cli.files.save_blend(str(path))
        assert files.save_version == 0
    finally:
        files.save_version = saved
    assert (tmp_path / "out.blend1").read_bytes() == b"the user's previous file"
    assert path.stat().st_size > 1000 and f"kept as {path}1" in capsys.readouterr().out


# --- mesh files the importers would misread -------------------------------------------------------

def test_a_folder_named_like_a_mesh_is_called_a_folder(addon, capsys, tmp_path):
    (tmp_path / "x.obj").mkdir()
    code, out, err, before = run_cli(addon, capsys, "--input", str(tmp_path / "x.obj"))
    assert code == 1 and "is a folder, not a mesh file" in only_line(err) and scene_state() == before


def test_a_job_dir_that_is_a_file_is_refused_before_anything_runs(addon, capsys, tmp_path):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    code, out, err, before = run_cli(addon, capsys, "--demo", "--job-dir", str(taken))
    assert code == 2 and "--job-dir" in only_line(err) and "is a file, expected a folder" in err
    assert taken.read_text() == "mine" and scene_state() == before


def _tetrahedron_files(folder, bad: tuple) -> dict:
    """The same tetrahedron, its last vertex ``bad``, in each format and encoding the importers read."""
    import base64
    import json
    import struct

    text = [("0", "0", "0"), ("1", "0", "0"), ("0", "1", "0"), bad]
    with np.errstate(over="ignore"):  # 1e39 is infinite in float32, as the binary files store it
        points = np.array([[float(v) if v != "abc" else np.nan for v in p] for p in text]).astype(np.float32)
    faces = [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    files = {"obj": "".join(f"v {' '.join(p)}\n" for p in text) + "".join(f"f {a + 1} {b + 1} {c + 1}\n"
                                                                           for a, b, c in faces)}
    header = "ply\nformat {}\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n" \
             "element face 4\nproperty list uchar int vertex_indices\nend_header\n"
    files["ascii.ply"] = header.format("ascii 1.0") + "".join(f"{' '.join(p)}\n" for p in text) + \
        "".join(f"3 {a} {b} {c}\n" for a, b, c in faces)
    files["binary.ply"] = header.format("binary_little_endian 1.0").encode() + \
        points.tobytes() + b"".join(struct.pack("<B3i", 3, *f) for f in faces)
    files["ascii.stl"] = "solid t\n" + "".join(
        " facet normal 0 0 0\n  outer loop\n" + "".join(f"   vertex {' '.join(text[i])}\n" for i in f)
        + "  endloop\n endfacet\n" for f in faces) + "endsolid t\n"
    files["binary.stl"] = bytes(80) + struct.pack("<I", 4) + b"".join(
        bytes(12) + points[list(f)].tobytes() + bytes(2) for f in faces)
    data = points.tobytes() + b"".join(struct.pack("<3H", *f) for f in faces)
    gltf = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
            "buffers": [{"byteLength": len(data)}],
            "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": 48},
                            {"buffer": 0, "byteOffset": 48, "byteLength": 24}],
            "accessors": [{"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3",
                           "min": [0, 0, 0], "max": [1, 1, 1]},
                          {"bufferView": 1, "componentType": 5123, "count": 12, "type": "SCALAR"}]}
    chunk = json.dumps(gltf).encode().ljust(-(-len(json.dumps(gltf)) // 4) * 4, b" ")
    files["glb"] = b"glTF" + struct.pack("<II", 2, 28 + len(chunk) + len(data)) + \
        struct.pack("<I", len(chunk)) + b"JSON" + chunk + struct.pack("<I", len(data)) + b"BIN\0" + data
    gltf["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    files["gltf"] = json.dumps(gltf)
    paths = {}
    for name, content in files.items():
        path = folder / f"tetra_{name.replace('.', '_')}.{name.split('.')[-1]}"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        paths[name] = path
    return paths


@pytest.mark.parametrize("bad", [("nan", "0", "1"), ("0", "inf", "1"), ("0", "0", "1e39")], ids=["nan", "inf", "big"])
def test_non_finite_vertices_are_refused_not_silently_zeroed(addon, capsys, tmp_path, bad):
    """Blender's importers make such a coordinate 0 without a word: the sketch would be of another shape."""
    for name, path in _tetrahedron_files(tmp_path, bad).items():
        code, out, err, before = run_cli(addon, capsys, "--input", str(path))
        line = only_line(err)
        assert code == 1 and "not a finite number" in line and "would silently make" in line, (name, line)
        assert scene_state() == before, name


def test_a_word_where_a_coordinate_should_be_is_named(addon, capsys, tmp_path):
    path = _tetrahedron_files(tmp_path, ("0", "abc", "1"))["obj"]
    code, out, err, before = run_cli(addon, capsys, "--input", str(path))
    assert code == 1 and "(first: 'v 0 abc 1')" in only_line(err) and scene_state() == before


def test_finite_tetrahedra_import_in_every_format(addon, tmp_path):
    """The same files with finite numbers: nothing refused, the coordinates arrive as written."""
    for name, path in _tetrahedron_files(tmp_path, ("0", "0", "1")).items():
        bpy.ops.wm.read_homefile(use_factory_startup=True, use_empty=True)
        obj = addon.cli.import_asset(bpy.context, str(path))
        assert len(obj.data.polygons) == 4, name
