"""Feed the four entry points a few hundred generated bad inputs and count how each one ended.

    .venv/bin/python bench/fuzz.py [--out DIR] [--only cli,images,backend,batch] [--match TEXT] [--jobs 2]

Entry points: the headless command (`bin/splatsketch`: bad mesh files and bad flags), sketches from
pictures (`bin/splatsketch --images`: bad captures), the backend (`python -m backend run`: bad job
folders) and the batch tool (`bin/splatsketch-batch`: bad `index.jsonl` lines and flags). Each case
runs in a fresh folder of its own; every file in it is hashed before and after, so a file that
changed without being one of the case's declared outputs is counted (goal 0), as is any run whose
output holds a Python traceback (goal 0). A case ends as one of:

    refused   non-zero exit, no traceback (the clear one-line refusal bad input should get)
    accepted  exit 0 (the input was odd but usable; listed so a reader can check it should be)
    traceback a traceback on stdout or stderr, whatever the exit code
    hung      still running after the time limit (killed)

Settings are tiny (2 strokes, 2 iterations, 4 views of 32 px) so an accepted case costs seconds.
Prints a table per entry point and writes ``DIR/fuzz.json`` with every case, its argv and its tail.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from contract import protocol  # noqa: E402 - the contract's file names and job writer

PY = str(REPO / ".venv" / "bin" / "python")
CLI = [PY, str(REPO / "bin" / "splatsketch")]
BATCH = [PY, str(REPO / "bin" / "splatsketch-batch")]
TINY = ["--curves", "2", "--iterations", "2", "--views", "4", "--heldout-views", "2", "--image-size", "32",
        "--no-clip"]
CUBE_OBJ = """v -1 -1 -1\nv 1 -1 -1\nv 1 1 -1\nv -1 1 -1\nv -1 -1 1\nv 1 -1 1\nv 1 1 1\nv -1 1 1
f 1 3 2\nf 1 4 3\nf 5 6 7\nf 5 7 8\nf 1 2 6\nf 1 6 5\nf 2 3 7\nf 2 7 6\nf 3 4 8\nf 3 8 7\nf 4 1 5\nf 4 5 8
"""


@dataclass
class Case:
    entry: str                      # cli | images | backend | batch
    name: str
    argv: list[str]
    make: object                    # callable(folder: Path) -> None, writes the case's inputs
    outputs: tuple[str, ...] = ()   # paths (relative to the case folder) the case may create or change
    timeout: float = 180.0
    result: dict = field(default_factory=dict)


# -- inputs --------------------------------------------------------------------------------------------


def write(rel: str, data: bytes | str):
    def make(folder: Path) -> None:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return make


def both(*makers):
    def make(folder: Path) -> None:
        for m in makers:
            m(folder)
    return make


def cube_obj(rel: str = "cube.obj"):
    return write(rel, CUBE_OBJ)


def mesh_cases(rng: random.Random) -> list[Case]:
    """Bad mesh files given to ``--input``."""
    bad: list[tuple[str, str, bytes | str]] = [
        ("empty obj", "m.obj", b""),
        ("empty ply", "m.ply", b""),
        ("empty stl", "m.stl", b""),
        ("empty glb", "m.glb", b""),
        ("empty gltf", "m.gltf", b""),
        ("only vertices", "m.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n"),
        ("face out of range", "m.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n"),
        ("negative face index out of range", "m.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf -1 -2 -7\n"),
        ("nan vertex", "m.obj", CUBE_OBJ.replace("v 1 1 1", "v nan 1 1")),
        ("inf vertex", "m.obj", CUBE_OBJ.replace("v 1 1 1", "v inf 1 1")),
        ("all vertices at one point", "m.obj", "v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n"),
        ("collinear triangle", "m.obj", "v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n"),
        ("huge coordinates", "m.obj", CUBE_OBJ.replace(" 1", " 1e30")),
        ("tiny object", "m.obj", CUBE_OBJ.replace("1", "1e-9")),
        ("far from origin", "m.obj", "\n".join(
            f"v {float(p[0]) + 1e7} {p[1]} {p[2]}" if line.startswith("v ") else line
            for line in CUBE_OBJ.splitlines() for p in [line.split()[1:] or ["0", "0", "0"]])),
        ("text garbage obj", "m.obj", "hello world\nthis is not a mesh\n"),
        ("binary garbage obj", "m.obj", bytes(rng.randrange(256) for _ in range(4096))),
        ("binary garbage ply", "m.ply", bytes(rng.randrange(256) for _ in range(4096))),
        ("binary garbage stl", "m.stl", bytes(rng.randrange(256) for _ in range(4096))),
        ("binary garbage glb", "m.glb", bytes(rng.randrange(256) for _ in range(4096))),
        ("gltf not json", "m.gltf", "{ this is not json"),
        ("gltf empty object", "m.gltf", "{}"),
        ("gltf wrong version", "m.gltf", json.dumps({"asset": {"version": "9.0"}})),
        ("gltf buffer outside", "m.gltf", json.dumps({
            "asset": {"version": "2.0"}, "buffers": [{"uri": "../../../etc/passwd", "byteLength": 64}]})),
        ("ply header lies", "m.ply",
         "ply\nformat ascii 1.0\nelement vertex 1000000\nproperty float x\nproperty float y\nproperty float z\n"
         "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n"),
        ("ply binary truncated", "m.ply",
         b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
         b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n" + b"\0" * 10),
        ("stl binary count lies", "m.stl", b"\0" * 80 + struct.pack("<I", 10_000_000) + b"\0" * 50),
        ("stl ascii no facets", "m.stl", "solid x\nendsolid x\n"),
        ("glb bad magic", "m.glb", b"glTX" + struct.pack("<II", 2, 20) + b"\0" * 8),
        ("glb length lies", "m.glb", b"glTF" + struct.pack("<II", 2, 1 << 30) + b"\0" * 8),
        ("obj with one line per vertex index 0", "m.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n"),
        ("obj points only", "m.obj", "v 0 0 0\nv 1 0 0\np 1 2\n"),
        ("obj lines only", "m.obj", "v 0 0 0\nv 1 0 0\nl 1 2\n"),
        ("obj utf16", "m.obj", CUBE_OBJ.encode("utf-16")),
    ]
    cases = [Case("cli", f"mesh: {name}", [*CLI, "--input", rel, *TINY], write(rel, data)) for name, rel, data in bad]
    cases += [
        Case("cli", "mesh: missing file", [*CLI, "--input", "nothing.obj", *TINY], both()),
        Case("cli", "mesh: folder named like a mesh", [*CLI, "--input", "dir.obj", *TINY],
             lambda f: (f / "dir.obj").mkdir()),
        Case("cli", "mesh: unsupported extension", [*CLI, "--input", "m.fbx", *TINY], write("m.fbx", CUBE_OBJ)),
        Case("cli", "mesh: no extension", [*CLI, "--input", "mesh", *TINY], write("mesh", CUBE_OBJ)),
        Case("cli", "mesh: symlink loop", [*CLI, "--input", "loop.obj", *TINY],
             lambda f: os.symlink("loop.obj", f / "loop.obj")),
        Case("cli", "mesh: dangling symlink", [*CLI, "--input", "gone.obj", *TINY],
             lambda f: os.symlink("nowhere.obj", f / "gone.obj")),
        Case("cli", "mesh: zip named obj", [*CLI, "--input", "z.obj", *TINY], _zip_named("z.obj")),
        Case("cli", "mesh: blend that is text", [*CLI, "x.blend", *TINY], write("x.blend", "not a blend")),
        Case("cli", "mesh: blend missing", [*CLI, "missing.blend", *TINY], both()),
    ]
    return cases


def _zip_named(rel: str):
    def make(folder: Path) -> None:
        with zipfile.ZipFile(folder / rel, "w") as z:
            z.writestr("cube.obj", CUBE_OBJ)
    return make


def flag_cases(rng: random.Random) -> list[Case]:
    """Bad flags and outputs on a good cube (the outputs must never land on an input or each other)."""
    good = ["--input", "cube.obj"]
    bad_values = {
        "--curves": ["0", "-3", "abc", "1e9", "2.5", ""],
        "--iterations": ["-1", "nan", "10000000000"],
        "--views": ["0", "-1", "x", "100000"],
        "--heldout-views": ["-1", "y"],
        "--image-size": ["0", "-32", "100000", "3.5"],
        "--width": ["nan", "inf", "-1", "0", "1e9", "w"],
        "--seed": ["-5", "1e3", "18446744073709551616", "s"],
        "--init": ["bogus", ""],
        "--segments": ["0", "17", "q"],
        "--lr": ["nan", "-1", "inf"],
        "--best-of": ["0", "1000"],
        "--views-per-step": ["0", "-2"],
        "--preset": ["nope"],
        "--device": ["tpu"],
        "--python": ["/nonexistent/python", "cube.obj"],
    }
    cases = [Case("cli", f"flag: {flag} {value!r}", [*CLI, *good, *TINY, flag, value], cube_obj())
             for flag, values in bad_values.items() for value in values]
    outputs = [
        ("--json onto the input", ["--json", "cube.obj"]),
        ("--preview onto the input", ["--preview", "cube.obj"]),
        ("--report onto the input", ["--report", "cube.obj"]),
        ("--output onto the input", ["--output", "cube.obj"]),
        ("--json and --preview the same file", ["--json", "o.png", "--preview", "o.png"]),
        ("--report and --preview the same file", ["--report", "o.png", "--preview", "o.png"]),
        ("--json onto the input through ./", ["--json", "./cube.obj"]),
        ("--json onto the input through a symlink", ["--json", "link.json"]),
        ("--output in a missing folder", ["--output", "no/such/dir/x.blend"]),
        ("--json in a missing folder", ["--json", "no/such/dir/x.json"]),
        ("--json is a folder", ["--json", "adir"]),
        ("--preview not png", ["--preview", "p.jpg"]),
        ("--output not blend", ["--output", "x.txt"]),
        ("--job-dir is a file", ["--job-dir", "cube.obj"]),
        ("unknown flag", ["--frobnicate"]),
        ("--evaluate with no backend", ["--evaluate", "--python", "/bin/false"]),
    ]

    def outputs_input(folder: Path) -> None:
        cube_obj()(folder)
        (folder / "adir").mkdir()
        os.symlink("cube.obj", folder / "link.json")
    cases += [Case("cli", f"output: {name}", [*CLI, *good, *TINY, *extra], outputs_input,
                   outputs=("o.png", "x.blend", "p.jpg", "x.txt", "o.gif"))
              for name, extra in outputs]
    for _ in range(10):  # random mixes of two bad flags
        a, b = rng.sample(sorted(bad_values), 2)
        argv = [*CLI, *good, *TINY, a, rng.choice(bad_values[a]), b, rng.choice(bad_values[b])]
        cases.append(Case("cli", f"flags: {a} + {b}", argv, cube_obj()))
    return cases


# -- captures -------------------------------------------------------------------------------------------


def capture(frames: list | object, angle: object = 0.6, pictures: dict[str, bytes] | None = None,
            raw: str | None = None):
    def make(folder: Path) -> None:
        cap = folder / "cap"
        cap.mkdir()
        text = raw if raw is not None else json.dumps({"camera_angle_x": angle, "frames": frames})
        (cap / "transforms_train.json").write_text(text)
        for rel, data in (pictures or {}).items():
            (cap / rel).parent.mkdir(parents=True, exist_ok=True)
            (cap / rel).write_bytes(data)
    return make


def png_bytes(size: int = 32) -> bytes:
    """A real RGBA PNG of a disc (written by the contract-free numpy encoder in pictures/pixels.py)."""
    from scene import png

    yy, xx = np.mgrid[:size, :size]
    disc = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < (size / 3) ** 2
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[disc] = (200, 100, 50, 255)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "p.png")
        png.write_png(path, rgba)
        return Path(path).read_bytes()


def pose(i: int, n: int) -> list[list[float]]:
    angle = 2 * np.pi * i / n
    eye = np.array([4 * np.cos(angle), 4 * np.sin(angle), 1.0])
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -forward, eye
    return m.tolist()


def capture_cases(rng: random.Random) -> list[Case]:
    pic = png_bytes()
    good_pics = {f"train/r_{i}.png": pic for i in range(6)}
    good = [{"file_path": f"./train/r_{i}", "transform_matrix": pose(i, 6)} for i in range(6)]
    deep = "[" * 200_000 + "]" * 200_000
    bad = [
        ("json empty", capture([], raw="")),
        ("json not json", capture([], raw="{ nope")),
        ("json nested 200000 deep", capture([], raw='{"camera_angle_x": 0.6, "frames": ' + deep + "}")),
        ("json a list", capture([], raw="[1, 2, 3]")),
        ("json 50 MB of spaces", capture([], raw=" " * (50 << 20) + "{}")),
        ("no frames", capture([], pictures=good_pics)),
        ("frames not a list", capture({"a": 1}, pictures=good_pics)),
        ("frame not an object", capture([1, 2, 3], pictures=good_pics)),
        ("angle missing", capture(good, angle=None, pictures=good_pics)),
        ("angle a string", capture(good, angle="wide", pictures=good_pics)),
        ("angle negative", capture(good, angle=-1.0, pictures=good_pics)),
        ("angle pi", capture(good, angle=3.1416, pictures=good_pics)),
        ("angle nan", capture(good, angle=float("nan"), pictures=good_pics)),
        ("matrix 3x3", capture([{**f, "transform_matrix": np.eye(3).tolist()} for f in good], pictures=good_pics)),
        ("matrix with nan", capture([{**f, "transform_matrix": [[float("nan")] * 4] * 4} for f in good],
                                    pictures=good_pics)),
        ("matrix singular", capture([{**f, "transform_matrix": np.zeros((4, 4)).tolist()} for f in good],
                                    pictures=good_pics)),
        ("matrix strings", capture([{**f, "transform_matrix": "eye"} for f in good], pictures=good_pics)),
        ("file_path missing", capture([{"transform_matrix": f["transform_matrix"]} for f in good],
                                      pictures=good_pics)),
        ("file_path a number", capture([{**f, "file_path": 7} for f in good], pictures=good_pics)),
        ("pictures missing", capture(good)),
        ("file_path escapes the folder", capture([{**f, "file_path": "../../../../../../etc/passwd"} for f in good],
                                                 pictures=good_pics)),
        ("file_path absolute", capture([{**f, "file_path": "/etc/hostname"} for f in good], pictures=good_pics)),
        ("picture is garbage", capture(good, pictures={k: b"\x89PNG\r\n\x1a\nxx" for k in good_pics})),
        ("picture is empty", capture(good, pictures={k: b"" for k in good_pics})),
        ("pictures of two sizes", capture(good, pictures={**good_pics, "train/r_0.png": png_bytes(48)})),
        ("all pictures blank", capture(good, pictures={k: png_bytes(32)[:0] + _blank_png() for k in good_pics})),
        ("one frame", capture(good[:1], pictures=good_pics)),
        ("cameras all at one point", capture([{**f, "transform_matrix": pose(0, 6)} for f in good],
                                             pictures=good_pics)),
        ("20000 frames", capture([{"file_path": f"./train/r_{i % 6}", "transform_matrix": pose(i, 20000)}
                                  for i in range(20000)], pictures=good_pics)),
    ]

    def symlink_out(folder: Path) -> None:
        capture(good, pictures={k: pic for k in list(good_pics)[1:]})(folder)
        os.symlink("/etc/hostname", folder / "cap" / "train" / "r_0.png")
    cases = [Case("images", f"capture: {name}", [*CLI, "--images", "cap", *TINY], make) for name, make in bad]
    cases += [
        Case("images", "capture: picture symlinked out of the folder", [*CLI, "--images", "cap", *TINY], symlink_out),
        Case("images", "capture: folder missing", [*CLI, "--images", "nocap", *TINY], both()),
        Case("images", "capture: folder without transforms", [*CLI, "--images", "cap", *TINY],
             lambda f: (f / "cap").mkdir()),
        Case("images", "capture: bad masks folder", [*CLI, "--images", "cap", "--masks", "nomasks", *TINY],
             capture(good, pictures=good_pics)),
        Case("images", "capture: bad one beside a good mesh", [*CLI, "--images", "cap", "--input", "cube.obj", *TINY],
             both(capture([], raw='{"camera_angle_x": 0.6, "frames": ' + deep + "}"), cube_obj())),
    ]
    return cases


def _blank_png() -> bytes:
    from scene import png

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "b.png")
        png.write_png(path, np.zeros((32, 32, 4), np.uint8))
        return Path(path).read_bytes()


# -- job folders ----------------------------------------------------------------------------------------


def good_job(folder: Path, **settings) -> None:
    sys.path.insert(0, str(REPO / "tests" / "backend"))
    import synthetic

    synthetic.write_job(folder, {"curves": 2, "iterations": 2, **settings}, train=4, heldout=2, size=32)
    views = _views(folder)
    if "depth" not in views:  # a depth map where the object covers the picture, as the add-on writes
        views["depth"] = np.where(views["rgba"][..., 3] > 0, 3.0, 0.0).astype(np.float32)
        _save_views(folder, views)


def job_case(name: str, mutate, timeout: float = 120.0) -> Case:
    def make(folder: Path) -> None:
        good_job(folder / "job")
        mutate(folder / "job")
    return Case("backend", f"job: {name}", [PY, "-m", "backend", "run", "job"], make,
                outputs=tuple(f"job/{n}" for n in (protocol.RESULT_NPZ, protocol.RESULT_JSON, "result.json.tmp")),
                timeout=timeout)


def _views(job: Path) -> dict:
    with np.load(job / protocol.VIEWS_NPZ, allow_pickle=False) as z:
        return dict(z)


def _save_views(job: Path, views: dict) -> None:
    np.savez(job / protocol.VIEWS_NPZ, **views)


def _set(job: Path, key: str, value) -> None:
    meta = json.loads((job / protocol.JOB_JSON).read_text())
    meta["settings"][key] = value
    (job / protocol.JOB_JSON).write_text(json.dumps(meta))


def _huge_npz_header(job: Path, name: str, shape: tuple, dtype: str = "<f4") -> None:
    """An .npz whose member declares ``shape`` without holding the bytes (how a hostile file looks)."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64
    views = _views(job)
    with zipfile.ZipFile(job / protocol.VIEWS_NPZ, "w") as z:
        for key, array in views.items():
            if key != name:
                with z.open(f"{key}.npy", "w") as f:
                    np.lib.format.write_array(f, array)
        z.writestr(f"{name}.npy", blob)


def backend_cases(rng: random.Random) -> list[Case]:
    def rm(name):
        return lambda j: (j / name).unlink()

    def text(name, data):
        return lambda j: (j / name).write_text(data)

    def view_edit(key, fn):
        def m(j):
            v = _views(j)
            v[key] = fn(v[key])
            _save_views(j, v)
        return m

    def drop_key(key):
        def m(j):
            v = _views(j)
            v.pop(key)
            _save_views(j, v)
        return m

    cases = [
        job_case("control: a good job", lambda j: None),
        job_case("job.json missing", rm(protocol.JOB_JSON)),
        job_case("views.npz missing", rm(protocol.VIEWS_NPZ)),
        job_case("job.json empty", text(protocol.JOB_JSON, "")),
        job_case("job.json not json", text(protocol.JOB_JSON, "{")),
        job_case("job.json a list", text(protocol.JOB_JSON, "[]")),
        job_case("job.json nested deep", text(protocol.JOB_JSON, "[" * 100_000 + "]" * 100_000)),
        job_case("schema 99", text(protocol.JOB_JSON, json.dumps({"schema": 99, "settings": {}}))),
        job_case("schema a string", text(protocol.JOB_JSON, json.dumps({"schema": "2", "settings": {}}))),
        job_case("settings a list", text(protocol.JOB_JSON, json.dumps({"schema": 2, "settings": []}))),
        job_case("views.npz garbage", text(protocol.VIEWS_NPZ, "garbage")),
        job_case("views.npz truncated", lambda j: (j / protocol.VIEWS_NPZ).write_bytes(
            (j / protocol.VIEWS_NPZ).read_bytes()[:200])),
        job_case("views.npz pickled", lambda j: np.savez(j / protocol.VIEWS_NPZ, **{
            **_views(j), "viewmats": np.array([object()], dtype=object)})),
        job_case("12 TiB rgba declared", lambda j: _huge_npz_header(j, "rgba", (1 << 20, 4096, 4096, 4), "|u1")),
        job_case("huge lines declared", lambda j: _huge_npz_header(j, "lines", (1 << 16, 1 << 16, 1 << 16), "|u1")),
        job_case("negative shape declared", lambda j: _huge_npz_header(j, "depth", (-4, 32, 32))),
        job_case("mesh.npz garbage", text(protocol.MESH_NPZ, "x")),
        job_case("mesh faces out of range", lambda j: np.savez(
            j / protocol.MESH_NPZ, vertices=np.zeros((3, 3), np.float32), faces=np.array([[0, 1, 99]], np.int32))),
        job_case("mesh faces negative", lambda j: np.savez(j / protocol.MESH_NPZ, vertices=np.zeros((3, 3), np.float32),
                                                           faces=np.array([[0, -1, 2]], np.int32))),
        job_case("mesh vertices nan", lambda j: np.savez(j / protocol.MESH_NPZ,
                                                         vertices=np.full((3, 3), np.nan, np.float32),
                                                         faces=np.array([[0, 1, 2]], np.int32))),
        job_case("mesh empty", lambda j: np.savez(j / protocol.MESH_NPZ, vertices=np.zeros((0, 3), np.float32),
                                                  faces=np.zeros((0, 3), np.int32))),
        job_case("mesh faces float", lambda j: np.savez(j / protocol.MESH_NPZ, vertices=np.zeros((3, 3), np.float32),
                                                        faces=np.zeros((1, 3), np.float32))),
        job_case("mesh 2-column vertices", lambda j: np.savez(j / protocol.MESH_NPZ,
                                                              vertices=np.zeros((3, 2), np.float32),
                                                              faces=np.zeros((1, 3), np.int32))),
    ]
    for key in ("viewmats", "Ks", "is_train", "rgba", "lines", "depth"):
        cases.append(job_case(f"{key} missing", drop_key(key)))
        cases.append(job_case(f"{key} wrong dtype", view_edit(key, lambda a: a.astype(np.complex64))))
        cases.append(job_case(f"{key} one view short", view_edit(key, lambda a: a[:-1])))
        cases.append(job_case(f"{key} scalar", view_edit(key, lambda a: np.array(1, a.dtype))))
    for key in ("viewmats", "Ks", "depth"):
        cases.append(job_case(f"{key} nan", view_edit(key, lambda a: np.full_like(a, np.nan))))
        cases.append(job_case(f"{key} inf", view_edit(key, lambda a: np.full_like(a, np.inf))))
    cases.append(job_case("Ks singular", view_edit("Ks", np.zeros_like)))
    cases.append(job_case("viewmats zero", view_edit("viewmats", np.zeros_like)))
    cases.append(job_case("no training view", view_edit("is_train", np.zeros_like)))
    cases.append(job_case("rgba 1x1", view_edit("rgba", lambda a: a[:, :1, :1])))
    settings = [("curves", 0), ("curves", "x"), ("curves", 1e9), ("iterations", -1), ("iterations", 1e12),
                ("lr", "nan"), ("lr", -1.0), ("stroke_width", 0.0), ("stroke_width", 1e9), ("seed", -1),
                ("seed", 2**70), ("init", "bogus"), ("segments", 0), ("segments", 99), ("views_per_step", 0),
                ("best_of", 0), ("weights", {"nope": 1.0}), ("weights", {"lines": "x"}), ("weights", []),
                ("unknown_setting", 1), ("samples_per_curve", 1), ("hard_views", -1.0), ("split_at", 2.0),
                ("device", "tpu"), ("clip", {"model": 7}), ("prompt", 12)]
    for key, value in settings:
        cases.append(job_case(f"setting {key}={value!r}", lambda j, k=key, v=value: _set(j, k, v)))
    return cases


# -- batch ----------------------------------------------------------------------------------------------


def batch_case(name: str, index_lines: list[str] | None, extra: list[str] = (), timeout: float = 300.0) -> Case:
    def make(folder: Path) -> None:
        cube_obj("lib/cube.obj")(folder)
        if index_lines is not None:
            (folder / "out").mkdir()
            (folder / "out" / "index.jsonl").write_text("".join(line + "\n" for line in index_lines))
    argv = [*BATCH, "lib", "--out", "out", "--cpus", "2", "--jobs", "1", *TINY, *extra]
    # the whole of out/ is the batch's own output (index, gallery, asset folders)
    return Case("batch", f"batch: {name}", argv, make, outputs=("out/",), timeout=timeout)


def batch_cases(rng: random.Random) -> list[Case]:
    lines = [
        '{"asset": "zzz", "metrics": [1]}',
        '{"asset": 7}',
        '[1, 2, 3]',
        'not json at all',
        '{"asset": "cube", "status": 5}',
        '{"asset": "cube", "status": "ok", "content_hash": 1, "settings_hash": []}',
        '{"asset": null, "status": "ok"}',
        '{"asset": "x", "status": "ok", "outputs": "nope"}',
        '"just a string"',
        '{"asset": "x", "seconds": "slow", "status": "failed"}',
        "[" * 50_000 + "]" * 50_000,
        '{"asset": "x", "status": "ok", "metrics": {"f_score": "high"}}',
    ]
    cases = [batch_case(f"index line {line[:40]!r}", [line]) for line in lines]
    cases += [
        batch_case("index of binary garbage", [bytes(rng.randrange(256) for _ in range(200)).decode("latin-1")]),
        batch_case("bad flag --jobs 0", None, ["--jobs", "0"]),
        batch_case("bad flag --timeout -1", None, ["--timeout", "-1"]),
        batch_case("bad flag --cpus-per-task 999", None, ["--cpus-per-task", "999"]),
        batch_case("bad passthrough --curves x", None, ["--curves", "x"]),
        batch_case("--out is a file", None, ["--out", "lib/cube.obj"]),
    ]
    return cases


# -- running --------------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            try:
                out[rel] = "link:" + os.readlink(path) if path.is_symlink() else _hash(path)
            except OSError as error:
                out[rel] = f"unreadable:{error.errno}"
    return out


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_case(case: Case, root: Path, index: int) -> dict:
    folder = root / f"{index:03d}"
    folder.mkdir(parents=True)
    try:
        case.make(folder)
    except Exception as error:  # a generator bug is the harness's, not the program's: say so, run nothing
        return {"entry": case.entry, "name": case.name, "argv": case.argv[2:], "rc": None, "outcome": "not made",
                "seconds": 0.0, "inputs_changed": [], "unexpected_files": [], "tail": [repr(error)]}
    before = snapshot(folder)
    env = {**os.environ, "HOME": str(folder / ".home"), "BLENDER_USER_RESOURCES": str(folder / ".blender"),
           "PYTHONPATH": str(REPO) if case.entry == "backend" else os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    try:
        proc = subprocess.run(case.argv, cwd=folder if case.entry != "backend" else folder, env=env,
                              capture_output=True, text=True, timeout=case.timeout, errors="replace",
                              stdin=subprocess.DEVNULL)
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as expired:
        rc = None
        text = b"".join(part or b"" for part in (expired.stdout, expired.stderr)).decode(errors="replace")
    seconds = time.perf_counter() - start
    after = snapshot(folder)
    allowed = case.outputs
    changed = sorted(rel for rel in set(before) | set(after)
                     if before.get(rel) != after.get(rel) and not rel.startswith((".home", ".blender"))
                     and not any(rel == a or (a.endswith("/") and rel.startswith(a)) for a in allowed)
                     and rel in before)  # an input changed or vanished (new files are judged below)
    created = sorted(rel for rel in set(after) - set(before)
                     if not rel.startswith((".home", ".blender"))
                     and not any(rel == a or (a.endswith("/") and rel.startswith(a)) for a in allowed))
    if rc is None:
        outcome = "hung"
    elif "Traceback (most recent call last)" in text:
        outcome = "traceback"
    elif rc == 0:
        outcome = "accepted"
    else:
        outcome = "refused"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return {"entry": case.entry, "name": case.name, "argv": case.argv[2:], "rc": rc, "outcome": outcome,
            "seconds": round(seconds, 1), "inputs_changed": changed, "unexpected_files": created,
            "tail": lines[-3:] if outcome != "traceback" else lines[-12:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="", help="where the cases and fuzz.json go (default: a temp folder)")
    parser.add_argument("--only", default="cli,images,backend,batch", help="entry points to fuzz")
    parser.add_argument("--jobs", type=int, default=2, help="cases at once (batch cases always run alone)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the case folders")
    parser.add_argument("--match", default="", help="only the cases whose name holds this text")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    makers = {"cli": lambda: mesh_cases(rng) + flag_cases(rng), "images": lambda: capture_cases(rng),
              "backend": lambda: backend_cases(rng), "batch": lambda: batch_cases(rng)}
    wanted = [w for w in args.only.split(",") if w]
    cases = [case for entry in wanted for case in makers[entry]() if args.match in case.name]
    root = Path(args.out or tempfile.mkdtemp(prefix="splatsketch-fuzz-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "cases", ignore_errors=True)
    print(f"{len(cases)} cases in {root}", flush=True)
    results: list[dict] = [{}] * len(cases)

    def one(i: int) -> None:
        results[i] = run_case(cases[i], root / "cases", i)
        r = results[i]
        flag = "" if r["outcome"] in ("refused", "accepted") and not r["inputs_changed"] else "  <-- "
        print(f"{i:3d} {r['entry']:8s} {r['outcome']:9s} rc={r['rc']!s:4s} {r['seconds']:6.1f}s  {r['name']}"
              f"{flag}{(r['tail'] or [''])[-1][:100] if flag else ''}", flush=True)

    parallel = [i for i, c in enumerate(cases) if c.entry != "batch"]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(one, parallel))
    for i, c in enumerate(cases):
        if c.entry == "batch":
            one(i)
    (root / "fuzz.json").write_text(json.dumps(results, indent=1))

    print(f"\n{'entry':10s} {'cases':>5s} {'refused':>8s} {'accepted':>8s} {'traceback':>9s} {'hung':>5s} "
          f"{'inputs changed':>14s} {'stray files':>11s}")
    totals = [0] * 7
    for entry in wanted + ["all"]:
        rows = [r for r in results if entry in ("all", r["entry"])]
        outcomes = ("refused", "accepted", "traceback", "hung")
        counts = [len(rows), *(sum(r["outcome"] == o for r in rows) for o in outcomes),
                  sum(bool(r["inputs_changed"]) for r in rows), sum(bool(r["unexpected_files"]) for r in rows)]
        if entry == "all":
            counts = totals
        else:
            totals = [a + b for a, b in zip(totals, counts)]
        print(f"{entry:10s} {counts[0]:5d} {counts[1]:8d} {counts[2]:8d} {counts[3]:9d} {counts[4]:5d} "
              f"{counts[5]:14d} {counts[6]:11d}")
    accepted = [r["name"] for r in results if r["outcome"] == "accepted"]
    if accepted:
        print("\naccepted (exit 0): " + "; ".join(accepted))
    if not args.keep:
        shutil.rmtree(root / "cases", ignore_errors=True)
    print(f"\ndetails: {root / 'fuzz.json'}")
    bad = sum(r["outcome"] in ("traceback", "hung") or bool(r["inputs_changed"]) for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
