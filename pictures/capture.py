"""A multi-view capture read and checked, numpy only: the NeRF-synthetic layout.

A capture is ``transforms_train.json`` (+ ``transforms_test.json``): ``camera_angle_x`` (or
instant-ngp's ``fl_x``/``fl_y``/``cx``/``cy``) and per frame ``file_path`` and a 4x4 camera-to-world
``transform_matrix`` in Blender's camera convention (-Z forward, +Y up), RGBA images whose alpha is
the silhouette (or a mask folder). What a mesh gives a job comes from the pictures instead
(``scene/capture_job.py`` puts it together): the lines from :mod:`line_detector`, the normalised space
and ``mesh.npz`` from :mod:`visual_hull`.

Image decoding is the caller's (Blender's loader handles every format); everything else is here, so
the bad-input checks are testable without Blender. Every problem is a :class:`CaptureError` with one
line naming the file and what is wrong. Reading tens of thousands of frames looks at the headless
command's stop request, so Ctrl-C or SIGTERM stops it within a second.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..contract import cameras
from ..stop_request import check_stop

TRAIN_JSON, TEST_JSON, SINGLE_JSON = "transforms_train.json", "transforms_test.json", "transforms.json"
IMAGE_EXTENSIONS = ("", ".png", ".PNG", ".jpg", ".jpeg", ".exr")
TEST_SPLIT_EVERY = 8  # without transforms_test.json every 8th training frame is held out
# What a transforms json may hold: a capture needs four levels (file, frames, frame, matrix rows) and a
# few hundred bytes a frame, so these leave room for any real capture and refuse a hostile file before
# it is parsed (a deeply nested one would exhaust the parser's recursion, a huge one the memory).
MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_FRAMES = 64 * 2 ** 20, 32, 50_000
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


class CaptureError(ValueError):
    """A capture that cannot be sketched: one line naming the file and the problem."""


@dataclass
class Frame:
    image: str  # resolved path of the picture
    camera_to_world: np.ndarray  # [4,4] float64, Blender camera convention
    intrinsics: dict  # fx, fy, cx, cy (pixels) or angle_x (radians); resolved against the image size later
    mask: str = ""  # resolved path of its mask, when the capture has a mask folder


@dataclass
class Capture:
    name: str
    train_json: str
    train: list[Frame]
    test: list[Frame] = field(default_factory=list)
    test_source: str = ""  # the test json, or "every Nth training frame"
    masks: str = ""  # the mask folder, if the silhouettes come from masks


# -- reading and checking ------------------------------------------------------------------------

def resolve(path: str) -> tuple[str, str | None]:
    """``(train json, test json or None)`` for a capture folder or one of its json files."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        for name in (TRAIN_JSON, SINGLE_JSON):
            if os.path.isfile(os.path.join(path, name)):
                train = os.path.join(path, name)
                break
        else:
            raise CaptureError(f"{path}: no {TRAIN_JSON} or {SINGLE_JSON} in this folder")
    elif os.path.isfile(path):
        if not path.lower().endswith(".json"):
            raise CaptureError(f"{path}: expected a capture folder or its transforms json")
        train = path
    else:
        raise CaptureError(f"{path}: no such file or folder")
    test = os.path.join(os.path.dirname(train), TEST_JSON)
    return train, test if os.path.basename(train) != TEST_JSON and os.path.isfile(test) else None


def _number(value, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CaptureError(f"{where}: '{what}' must be a finite number, got {value!r}")
    return float(value)


def _intrinsics(block: dict, where: str, inherited: dict | None = None) -> dict:
    """Focal length and principal point of a file or frame (instant-ngp keys win over the angle)."""
    found = dict(inherited or {})
    if "fl_x" in block:
        found = {"fx": _number(block["fl_x"], where, "fl_x")}
        found["fy"] = _number(block.get("fl_y", block["fl_x"]), where, "fl_y")
    elif "camera_angle_x" in block:
        angle = _number(block["camera_angle_x"], where, "camera_angle_x")
        if not 0.0 < angle < math.pi:
            raise CaptureError(f"{where}: 'camera_angle_x' {angle} is not an angle in radians between 0 and pi")
        found = {"angle_x": angle}
    for key in ("cx", "cy"):
        if key in block:
            found[key] = _number(block[key], where, key)
    if any(k in found and found[k] <= 0 for k in ("fx", "fy")):
        raise CaptureError(f"{where}: the focal length must be positive")
    return found


def _rigid(matrix, where: str) -> np.ndarray:
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        m = None
    if m is None or m.shape != (4, 4):
        raise CaptureError(f"{where}: 'transform_matrix' must be a 4x4 list of numbers")
    if not np.isfinite(m).all():
        raise CaptureError(f"{where}: 'transform_matrix' has non-finite values")
    rotation = m[:3, :3]
    if (np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6 or np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3
            or np.linalg.det(rotation) < 0):
        raise CaptureError(f"{where}: 'transform_matrix' is not a rigid camera-to-world matrix "
                           "(rotation + translation, last row 0 0 0 1)")
    return m


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def _image_path(folder: str, relative, where: str) -> str:
    """The picture a frame names, which must lie inside the capture ``folder`` (after following links):
    a capture is often someone else's download, and its json must not make us read other files."""
    if not isinstance(relative, str) or not relative.strip():
        raise CaptureError(f"{where}: 'file_path' must name an image")
    base = os.path.normpath(os.path.join(folder, relative))
    if not _inside(base, os.path.normpath(folder)):
        raise CaptureError(f"{where}: 'file_path' {relative!r} points outside the capture folder {folder}; "
                           "its pictures must be inside it")
    for ext in IMAGE_EXTENSIONS:
        if os.path.isfile(base + ext):
            return _real_inside(base + ext, folder, where)
    raise CaptureError(f"{where}: image '{relative}' not found (looked for {base}"
                       f"{' with .png/.jpg' if not os.path.splitext(base)[1] else ''})")


def _real_inside(path: str, folder: str, where: str) -> str:
    """``path`` if the file it finally names (links followed) is inside ``folder``'s own real folder."""
    real = os.path.realpath(path)
    if not _inside(real, os.path.realpath(folder)):
        raise CaptureError(f"{where}: {path} is a link to {real}, outside the folder {folder}; "
                           "its pictures must be inside it")
    return path


def _json_depth(raw: bytes) -> int:
    """How deeply ``raw``'s arrays and objects nest, counted without parsing (so without recursion):
    brackets outside strings, as a running sum."""
    code = np.frombuffer(_JSON_STRING.sub(b'""', raw), np.uint8)
    step = np.isin(code, (ord("["), ord("{"))).astype(np.int64) - np.isin(code, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


def load_json(path: str):
    """A transforms json, read within MAX_JSON_BYTES and MAX_JSON_DEPTH; :class:`CaptureError` otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as error:
        raise CaptureError(f"{path}: cannot read it ({error.strerror or error})") from None
    if len(raw) > MAX_JSON_BYTES:
        raise CaptureError(f"{path}: larger than {MAX_JSON_BYTES // 2 ** 20} MiB, too large for a capture's json")
    if _json_depth(raw) > MAX_JSON_DEPTH:
        raise CaptureError(f"{path}: nested more than {MAX_JSON_DEPTH} levels deep, not a capture's json")
    try:
        return json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as error:
        raise CaptureError(f"{path}: malformed JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise CaptureError(f"{path}: cannot read it ({error})") from None


def read_frames(path: str, masks: str = "") -> list[Frame]:
    """Every frame of one transforms json, checked; images must exist (they are not decoded here)."""
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise CaptureError(f"{path}: expected an object with a 'frames' list (NeRF synthetic layout)")
    if len(data["frames"]) > MAX_FRAMES:
        raise CaptureError(f"{path}: {len(data['frames'])} frames, more than the {MAX_FRAMES} a capture may have")
    shared = _intrinsics(data, path)
    folder, frames = os.path.dirname(path), []
    for i, entry in enumerate(data["frames"]):
        check_stop()  # tens of thousands of frames, each a few file-system calls
        where = f"{path}: frame {i}"
        if not isinstance(entry, dict):
            raise CaptureError(f"{where}: expected an object with 'file_path' and 'transform_matrix'")
        intrinsics = _intrinsics(entry, where, shared)
        if "fx" not in intrinsics and "angle_x" not in intrinsics:
            raise CaptureError(f"{path}: no 'camera_angle_x' (or 'fl_x'): the field of view is unknown")
        image = _image_path(folder, entry.get("file_path"), where)
        mask = ""
        if masks:  # the mask mirrors the picture's path under the capture: masks/train/r_0.png
            stem = os.path.splitext(os.path.relpath(image, folder))[0]
            mask = next((os.path.join(masks, stem + ext) for ext in (".png", ".PNG", ".jpg")
                         if os.path.isfile(os.path.join(masks, stem + ext))), "")
            if not mask:
                raise CaptureError(f"{where}: no mask {os.path.join(masks, stem)}.png for {image}")
            _real_inside(mask, masks, where)
        if "transform_matrix" not in entry:
            raise CaptureError(f"{where}: no 'transform_matrix'")
        frames.append(Frame(image, _rigid(entry["transform_matrix"], where), intrinsics, mask))
    return frames


def read_capture(path: str, masks: str = "") -> Capture:
    """The capture at ``path`` (folder or json), every frame checked; held-out frames from
    ``transforms_test.json`` beside it, else every ``TEST_SPLIT_EVERY``-th training frame."""
    if masks and not os.path.isdir(masks):
        raise CaptureError(f"{masks}: the mask folder does not exist")
    train_json, test_json = resolve(path)
    train = read_frames(train_json, masks)
    test = read_frames(test_json, masks) if test_json else []
    source = test_json or ""
    if not test and len(train) >= 2 * TEST_SPLIT_EVERY:
        test, train = train[::TEST_SPLIT_EVERY], [f for i, f in enumerate(train) if i % TEST_SPLIT_EVERY]
        source = f"every {TEST_SPLIT_EVERY}th frame of {os.path.basename(train_json)}"
    if len(train) < 2:
        raise CaptureError(f"{train_json}: {len(train)} frame(s); a sketch needs at least 2 views")
    folder = os.path.dirname(train_json)
    name = os.path.basename(folder) or "capture"
    return Capture(name, train_json, train, test, source, os.path.abspath(masks) if masks else "")


def camera(frame: Frame, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV ``(viewmat [4,4], K [3,3])`` of a frame whose image is ``width`` x ``height`` px."""
    i = frame.intrinsics
    fx = i["fx"] if "fx" in i else 0.5 * width / math.tan(0.5 * i["angle_x"])
    fy = i.get("fy", fx)
    K = np.array([[fx, 0.0, i.get("cx", width / 2.0)], [0.0, fy, i.get("cy", height / 2.0)], [0.0, 0.0, 1.0]])
    return cameras.viewmat_from_blender(frame.camera_to_world), K


def pick_spread(frames: list[Frame], count: int) -> list[int]:
    """Indices of ``count`` frames whose cameras are spread as evenly as possible (farthest point
    sampling of the viewing directions, starting at frame 0), in the capture's order."""
    if count >= len(frames):
        return list(range(len(frames)))
    forward = np.stack([-f.camera_to_world[:3, 2] for f in frames])  # Blender cameras look down -Z
    chosen, distance = [0], np.linalg.norm(forward - forward[0], axis=1)
    while len(chosen) < count:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(forward - forward[nxt], axis=1))
    return sorted(chosen)


# -- pixels ----------------------------------------------------------------------------------------
