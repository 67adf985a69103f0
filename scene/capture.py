"""Multi-view captures as sketch targets, numpy only: the NeRF-synthetic layout read, checked and
turned into the job folder's arrays (docs/JOB_FORMAT.md) without a mesh.

A capture is ``transforms_train.json`` (+ ``transforms_test.json``): ``camera_angle_x`` (or
instant-ngp's ``fl_x``/``fl_y``/``cx``/``cy``) and per frame ``file_path`` and a 4x4 camera-to-world
``transform_matrix`` in Blender's camera convention (-Z forward, +Y up), RGBA images whose alpha is
the silhouette (or a mask folder). What a mesh gives the mesh path comes from the images instead:

* the normalised space (centre, radius) is the bounding sphere of the silhouettes' visual hull;
* ``mesh.npz`` is that hull, carved from the training silhouettes (a wire thinner than the carving's
  cells kept as a thin tube) and meshed by surface nets, so the
  ``surface`` term, the ``features`` start and re-seeding work unchanged (it bounds the object from
  outside: concavities no silhouette sees are filled);
* ``lines`` are the silhouette's boundary plus the image's own edges (Canny on luminance) and thin
  lines (ridges and valleys of the luminance: a rib, a seam, a wire in front of the body), which is
  what an artist reads in a picture: occluding contours, creases, strong colour boundaries and
  drawn-in details.

Image decoding is the caller's (Blender's loader handles every format); everything else is here, so
the bad-input checks and the geometry are testable without Blender. Every problem is a
:class:`CaptureError` with one line naming the file and what is wrong. Loops that can run long on a
large capture (its frames, the hull's views, growing lines) look at the headless command's stop
request (``jobs.runner.check_stop``), so Ctrl-C or SIGTERM stops them within a second.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..backend import cameras
from ..jobs.runner import check_stop

TRAIN_JSON, TEST_JSON, SINGLE_JSON = "transforms_train.json", "transforms_test.json", "transforms.json"
IMAGE_EXTENSIONS = ("", ".png", ".PNG", ".jpg", ".jpeg", ".exr")
ALPHA_THRESHOLD = 0.5
HULL_COARSE, HULL_FINE = 48, 128  # voxels per side: where the object is, then its hull
CARVE_PART = 1 << 19  # grid points a view carves between two stop checks (a fraction of a second)
THIN_GAP = 2  # grid points between the plain hull and a part only the reach test keeps (a wire)
NEAR_HALVES = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # px: the silhouette max-filters a cell's reach picks from
EDGE_HIGH, EDGE_LOW = 0.06, 0.03  # Canny hysteresis on luminance gradient (per pixel, after a 1 px blur)
# Thin lines: hysteresis on ``|second derivative across the line| - |gradient|`` (per pixel, 1 px blur),
# which a step (a facet, a shading terminator) keeps near zero; not looked for within RIDGE_MARGIN px
# of the silhouette, where the shading's dark band along the outline would read as a line.
RIDGE_HIGH, RIDGE_LOW, RIDGE_MARGIN = 0.02, 0.01, 4
DEPTH_JUMP = 0.1  # normalised units (radius 1) between neighbour pixels: an occluding contour
# The picture's step a hull's depth jump needs (depth_edges): about one 8-bit grey level beyond the
# shading's slope, i.e. any step at all; chosen on four meshes' captures (docs/QUALITY.md).
DEPTH_CONTRAST, DEPTH_CONTRAST_REACH = 0.004, 3
HULL_SAMPLES_PER_EDGE = 3  # surface samples per triangle edge for the hull's depth maps
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

def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` box-filter weights: each output pixel averages the input it covers."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    left, right = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in)[None]
    overlap = np.clip(np.minimum(right, j + 1) - np.maximum(left, j), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-averaged resize of straight-alpha uint8 ``[H,W,4]`` (colour averaged premultiplied)."""
    if rgba.shape[:2] == (height, width):
        return rgba
    wy, wx = _area_weights(rgba.shape[0], height), _area_weights(rgba.shape[1], width)
    f = rgba.astype(np.float64) / 255.0
    f[..., :3] *= f[..., 3:]
    h, w, c = f.shape
    rows = (wy @ f.reshape(h, w * c)).reshape(height, w, c)  # two separable passes, both matrix products
    out = np.matmul(wx, rows)  # [width, w] @ [height, w, c] -> [height, width, c]
    alpha = out[..., 3:]
    out[..., :3] = np.where(alpha > 1e-6, out[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def target_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The job's image size: the longer side ``size`` (never enlarged)."""
    scale = min(1.0, size / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


def _blur(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, radius, mode="edge")
    rows = sum(k * padded[:, i:i + image.shape[1]] for i, k in enumerate(kernel))
    return sum(k * rows[i:i + image.shape[0]] for i, k in enumerate(kernel))


def _grow(mask: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Pixels of ``within`` 8-connected to ``mask`` (hysteresis)."""
    grown = mask.copy()
    while True:  # one pixel a pass: a long line in a large picture takes thousands
        check_stop()
        p = np.pad(grown, 1)
        near = np.zeros_like(grown)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                near |= p[dy:dy + grown.shape[0], dx:dx + grown.shape[1]]
        nxt = near & within | grown
        if (nxt == grown).all():
            return grown
        grown = nxt


def _erode(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask


def silhouette(rgba: np.ndarray) -> np.ndarray:
    return rgba[..., 3] >= 255 * ALPHA_THRESHOLD


def _box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum of ``a`` over the (2r+1)^2 square round each pixel (zeros beyond the border)."""
    c = np.pad(np.pad(a, r).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    n, (h, w) = 2 * r + 1, a.shape
    return c[n:n + h, n:n + w] - c[:h, n:n + w] - c[n:n + h, :w] + c[:h, :w]


def depth_edges(depth: np.ndarray, inside: np.ndarray, luminance: np.ndarray | None = None,
                jump: float = DEPTH_JUMP, contrast: float = DEPTH_CONTRAST) -> np.ndarray:
    """Occluding contours inside the silhouette: pixels whose 4-neighbour lies ``jump`` or more
    behind them (the line is drawn on the near surface, as Freestyle draws it).

    Given the picture's ``luminance``, a jump is kept only where the picture steps across it, on
    average along the line (within DEPTH_CONTRAST_REACH px), by ``contrast`` more than the shading
    changes over the same 3 px on either side: a real occluding contour puts two surfaces side by side,
    which shade differently if faintly (a teapot's knob on its lid); the membrane a visual hull
    stretches over a concavity (a bowl's opening) has holes whose jumps the picture, seeing the smooth
    inside, does not show. A jump where the picture changes less than its slope counts as no step (0)
    in the average. Measured on the shared meshes' captures (docs/QUALITY.md).
    """
    known = inside & (depth > 0)
    edges = np.zeros_like(known)
    change = np.zeros(depth.shape)
    pad = 5
    padded_depth, padded_known = np.pad(depth, pad), np.pad(known, pad)
    padded_lum = np.pad(luminance, pad, mode="edge") if luminance is not None else None
    h, w = depth.shape
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        def at(a, k, dy=dy, dx=dx):  # ``a`` at the pixel k steps along (dy, dx)
            return a[pad + k * dy:pad + k * dy + h, pad + k * dx:pad + k * dx + w]

        here = known & at(padded_known, 1) & (at(padded_depth, 1) - depth > jump)
        edges |= here
        if padded_lum is not None:  # the step across the jump, less the shading's slope beside it
            step = np.abs(at(padded_lum, 2) - at(padded_lum, -1))
            ramp = 0.5 * (np.abs(at(padded_lum, -1) - at(padded_lum, -4))
                          + np.abs(at(padded_lum, 5) - at(padded_lum, 2)))
            change = np.where(here, np.maximum(change, step - ramp), change)
    edges &= _erode(inside, 2)
    if luminance is not None:
        mean = _box_sum(change * edges, DEPTH_CONTRAST_REACH) / np.maximum(
            _box_sum(edges.astype(np.float64), DEPTH_CONTRAST_REACH), 1.0)
        edges &= mean >= contrast
    return edges


def _thin(strength: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Non-maximum suppression: pixels whose ``strength`` is a peak across ``angle`` (degrees, the
    direction across the line), compared with the two neighbours in that direction."""
    p = np.pad(strength, 1)
    neighbours = {0: (p[1:-1, :-2], p[1:-1, 2:]), 45: (p[:-2, 2:], p[2:, :-2]),
                  90: (p[:-2, 1:-1], p[2:, 1:-1]), 135: (p[:-2, :-2], p[2:, 2:])}
    direction = (np.rint(((angle + 180.0) % 180.0) / 45.0).astype(int) % 4) * 45
    peak = np.zeros(strength.shape, bool)
    for d, (a, b) in neighbours.items():
        peak |= (direction == d) & (strength >= a) & (strength >= b)
    return peak


def _hysteresis(strength: np.ndarray, candidates: np.ndarray, high: float, low: float) -> np.ndarray:
    return _grow(candidates & (strength >= high), candidates & (strength >= low))


def _smooth_luminance(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(luminance blurred by 1 px, silhouette). Lines are looked for on the object only: its own mean
    fills the background, so the silhouette (drawn from alpha) does not show up again, offset by the blur."""
    inside = silhouette(rgba)
    luminance = (rgba[..., :3].astype(np.float64) / 255.0) @ np.array([0.2126, 0.7152, 0.0722])
    fill = luminance[inside].mean() if inside.any() else 0.0
    return _blur(np.where(inside, luminance, fill)), inside


def canny_edges(rgba: np.ndarray, high: float = EDGE_HIGH, low: float = EDGE_LOW) -> np.ndarray:
    """bool ``[H,W]``: steps of the luminance inside the silhouette. Smooth shading varies slowly and
    stays under the thresholds; creases and strong colour boundaries cross them."""
    smooth, inside = _smooth_luminance(rgba)
    gy, gx = np.gradient(smooth)
    magnitude = np.hypot(gx, gy)
    candidates = _thin(magnitude, np.rad2deg(np.arctan2(gy, gx))) & _erode(inside, 2)
    return _hysteresis(magnitude, candidates, high, low)


def ridge_lines(rgba: np.ndarray, high: float = RIDGE_HIGH, low: float = RIDGE_LOW,
                margin: int = RIDGE_MARGIN) -> np.ndarray:
    """bool ``[H,W]``: thin bright or dark lines of the luminance (a rib, a seam, a wire in front of
    the body), where the Hessian's larger eigenvalue beats the gradient (both per pixel, after a 1 px
    blur). A line a few pixels wide has no gradient at its centre and a strong second derivative; a
    step's second derivative never exceeds its gradient by much (Canny finds steps), so the facets of
    a flat-shaded mesh stay out. Nothing within ``margin`` px of the silhouette, where the shading's
    dark band along the outline would read as a line."""
    smooth, inside = _smooth_luminance(rgba)
    gy, gx = np.gradient(smooth)
    gyy, gyx = np.gradient(gy)
    gxy, gxx = np.gradient(gx)
    cross = 0.5 * (gxy + gyx)
    half, root = 0.5 * (gxx + gyy), np.hypot(0.5 * (gxx - gyy), cross)
    larger = np.where(half >= 0, half + root, half - root)  # the eigenvalue of larger magnitude
    vx, vy = cross, larger - gxx  # its eigenvector, across the line
    flat = np.hypot(vx, vy) < 1e-12
    vx, vy = np.where(flat, larger - gyy, vx), np.where(flat, cross, vy)
    strength = np.abs(larger) - np.hypot(gx, gy)
    candidates = _thin(strength, np.rad2deg(np.arctan2(vy, vx))) & _erode(inside, margin)
    return _hysteresis(strength, candidates, high, low)


def pool_lines(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A line mask at ``width`` x ``height``: a pixel is on a line if any pixel it covers is."""
    if mask.shape == (height, width):
        return mask
    wy, wx = _area_weights(mask.shape[0], height), _area_weights(mask.shape[1], width)
    return (wy @ mask.astype(np.float64) @ wx.T) > 0


def line_image(rgba: np.ndarray, high: float = EDGE_HIGH, low: float = EDGE_LOW, depth=None,
               ridges: bool = True, detail: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[H,W]`` (255 = line): the silhouette's boundary, ``canny_edges``, ``ridge_lines`` and
    (given a ``depth`` map, e.g. of the visual hull) its occluding contours, as a part in front of a
    body of the same shade shows only in depth. With ``detail`` (the same picture, larger) the thin
    lines are found there and pooled: a rib three pixels wide in the picture is a smudge at the job's
    size. Steps are found at the job's size, where the thresholds were measured (at the picture's
    size a bevel's highlight doubles every edge)."""
    inside = silhouette(rgba)
    boundary = inside & ~_erode(inside)
    edges = canny_edges(rgba, high, low)
    if ridges:
        sharp = rgba if detail is None else detail
        margin = int(math.ceil(RIDGE_MARGIN * sharp.shape[0] / rgba.shape[0]))  # the same width on the object
        edges |= pool_lines(ridge_lines(sharp, margin=margin), *rgba.shape[1::-1]) & _erode(inside, 2)
    if depth is not None:
        edges |= depth_edges(depth, inside, _smooth_luminance(rgba)[0])
    return np.where(boundary | edges, 255, 0).astype(np.uint8)


# -- where the object is, and its visual hull -------------------------------------------------------

def _sample(alpha: np.ndarray, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Bilinear alpha at pixel coordinates ``uv`` [N,2] (centres at +0.5); 0 off the image or behind."""
    h, w = alpha.shape
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    inside = (z > 1e-6) & (x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1)
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.minimum(x.astype(int), w - 2), np.minimum(y.astype(int), h - 2)
    fx, fy = x - x0, y - y0
    value = (alpha[y0, x0] * (1 - fx) * (1 - fy) + alpha[y0, x0 + 1] * fx * (1 - fy)
             + alpha[y0 + 1, x0] * (1 - fx) * fy + alpha[y0 + 1, x0 + 1] * fx * fy)
    return np.where(inside, value, 0.0)


def _dilations(alpha: np.ndarray, halves) -> list[np.ndarray]:
    """``alpha``'s max-filters over squares of half-size ``halves`` px (increasing, from 0), each from
    the one before: the max of three windows of half-size a, s apart, covers a + s while s <= 2a + 1."""
    out, grown, have = [], alpha, 0
    for half in halves:
        shift = half - have
        for axis in (0, 1) if shift else ():
            rows = np.moveaxis(grown, axis, 0)
            padded, n = np.pad(rows, ((shift, shift), (0, 0))), rows.shape[0]
            rows = np.maximum(np.maximum(padded[:n], padded[shift:shift + n]), padded[2 * shift:2 * shift + n])
            grown = np.moveaxis(rows, 0, axis)
        out.append(grown)
        have = half
    return out


def carve(viewmats, Ks, alphas, lo, hi, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``[n,n,n]`` occupancy in 0..1 at each grid point (the smallest alpha any view sees there;
    off-image counts as empty, as every picture is assumed to show the whole object) and ``[n,n,n]``
    bool: could the object be within half a cell's diagonal of the point (every view has silhouette
    within that sphere's projected radius). The second keeps parts thinner than a cell, a wire between
    grid points, that the first carves away."""
    axis = [np.linspace(lo[i], hi[i], n, dtype=np.float32) for i in range(3)]
    points = np.stack(np.meshgrid(*axis, indexing="ij"), axis=-1).reshape(-1, 3)
    reach = 0.5 * float(np.linalg.norm((np.asarray(hi, float) - np.asarray(lo, float)) / (n - 1)))
    field = np.ones(len(points), np.float32)
    near = np.ones(len(points), bool)
    alive = np.arange(len(points))  # points some view may still keep: later views only look at these
    for viewmat, K, alpha in zip(viewmats, Ks, alphas):
        viewmat, K, alpha = (np.asarray(a, np.float32) for a in (viewmat, K, alpha))
        cam = points[alive] @ viewmat[:3, :3].T + viewmat[:3, 3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = cam[:, :2] / z[:, None] * K[[0, 1], [0, 1]] + K[:2, 2]
            radius = np.where(z > 1e-6, reach * float(K[0, 0]) / np.maximum(z, 1e-6), 0.0)  # the sphere's, in px
        level = np.minimum(np.searchsorted(NEAR_HALVES, radius), len(NEAR_HALVES) - 1)
        grown = _dilations(alpha, NEAR_HALVES[:int(level.max()) + 1])
        seen = np.zeros(len(alive), bool)
        # In parts, with a stop check before each: the first view looks at every grid point (a second or more).
        for part in (slice(i, i + CARVE_PART) for i in range(0, len(alive), CARVE_PART)):
            check_stop()
            field[alive[part]] = np.minimum(field[alive[part]], _sample(alpha, uv[part], z[part]))
            for lv in np.unique(level[part]):
                pick = np.flatnonzero(level[part] == lv) + part.start
                seen[pick] = _sample(grown[lv], uv[pick], z[pick]) > ALPHA_THRESHOLD
        near[alive] &= seen
        alive = alive[near[alive] | (field[alive] > 0)]
    return field.reshape(n, n, n), near.reshape(n, n, n)


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one grid point in each of the 26 directions."""
    padded, n = np.pad(mask, 1), mask.shape
    grown = np.zeros_like(mask)
    for d in np.ndindex(3, 3, 3):
        grown |= padded[d[0]:d[0] + n[0], d[1]:d[1] + n[1], d[2]:d[2] + n[2]]
    return grown


def with_thin_parts(field: np.ndarray, near: np.ndarray, gap: int = THIN_GAP) -> np.ndarray:
    """``field`` with the parts only ``near`` keeps made solid: what lies more than ``gap`` grid points
    from the plain hull (a wire between grid points), grown back ``gap`` steps within ``near`` so it
    joins the hull as a tube one cell thick. The shell ``near`` adds round a solid hull (its reach,
    up to ``gap`` cells) is left out, so the hull keeps its surface where it has one."""
    inside = field > ALPHA_THRESHOLD
    around = inside
    for _ in range(gap):
        around = _neighbours(around)
    add = near & ~around
    for _ in range(gap):
        add |= near & _neighbours(add)
    return np.where(add & ~inside, 1.0, field).astype(np.float32)


def locate(viewmats, Ks, alphas) -> tuple[np.ndarray, float]:
    """A first guess of where the object is: the point nearest every ray through a silhouette's
    centroid, and a half-size that holds each silhouette's extent at that distance."""
    normal_sum, rhs, spans = np.zeros((3, 3)), np.zeros(3), []
    for viewmat, K, alpha in zip(viewmats, Ks, alphas):
        ys, xs = np.nonzero(alpha >= ALPHA_THRESHOLD)
        inv = np.linalg.inv(viewmat)
        origin = inv[:3, 3]
        pixel = np.array([(xs.mean() + 0.5 - K[0, 2]) / K[0, 0], (ys.mean() + 0.5 - K[1, 2]) / K[1, 1], 1.0])
        direction = inv[:3, :3] @ pixel
        direction /= np.linalg.norm(direction)
        projector = np.eye(3) - np.outer(direction, direction)
        normal_sum += projector
        rhs += projector @ origin
        spans.append(max(xs.max() - xs.min(), ys.max() - ys.min()) / 2.0 / min(K[0, 0], K[1, 1]))
    center = np.linalg.lstsq(normal_sum, rhs, rcond=None)[0]
    depths = np.array([(viewmat[:3, :3] @ center + viewmat[:3, 3])[2] for viewmat in viewmats])
    if (depths <= 0).any():
        raise CaptureError(f"the cameras do not look at one object: {int((depths <= 0).sum())} of {len(depths)} "
                           "have the point their silhouettes point at behind them (check the poses' convention: "
                           "camera-to-world, Blender/OpenGL axes)")
    half = 1.5 * max(s * d for s, d in zip(spans, depths))
    return center, float(half)


def surface_nets(field: np.ndarray, lo, hi, level: float = ALPHA_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh ``(vertices [N,3], faces [F,3])`` of ``field``'s ``level`` set on the grid
    spanning ``lo``..``hi``: one vertex per cell the surface crosses (the mean of its edge crossings),
    two triangles per crossed grid edge, wound so normals point out of the region above ``level``."""
    n = np.array(field.shape)
    inside = field > level
    cells = n - 1
    corner = lambda c: inside[c[0]:c[0] + cells[0], c[1]:c[1] + cells[1], c[2]:c[2] + cells[2]]  # noqa: E731
    any_in, all_in = np.zeros(tuple(cells), bool), np.ones(tuple(cells), bool)
    for c in np.ndindex(2, 2, 2):
        any_in |= corner(c)
        all_in &= corner(c)
    active = any_in & ~all_in
    where = np.stack(np.nonzero(active), axis=1)  # [M,3] cells the surface crosses
    total, count = np.zeros((len(where), 3)), np.zeros(len(where))
    for a in np.ndindex(2, 2, 2):
        for axis in range(3):
            if a[axis]:
                continue
            b = tuple(a[i] + (i == axis) for i in range(3))
            va = field[where[:, 0] + a[0], where[:, 1] + a[1], where[:, 2] + a[2]]
            vb = field[where[:, 0] + b[0], where[:, 1] + b[1], where[:, 2] + b[2]]
            crossed = (va > level) != (vb > level)
            t = np.where(crossed, (level - va) / np.where(crossed, vb - va, 1.0), 0.0)
            offset = np.array(a, float) + np.eye(3)[axis] * t[:, None]
            total += np.where(crossed[:, None], offset, 0.0)
            count += crossed
    index = np.full(tuple(cells), -1, np.int64)
    index[active] = np.arange(len(where))
    grid = where + total / count[:, None]
    step = (np.asarray(hi, float) - np.asarray(lo, float)) / (n - 1)
    vertices = np.asarray(lo, float) + grid * step
    faces = []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        a = inside[tuple(slice(0, n[i] - 1) if i == axis else slice(1, n[i] - 1) for i in range(3))]
        b = inside[tuple(slice(1, n[i]) if i == axis else slice(1, n[i] - 1) for i in range(3))]
        sign = a & ~b  # inside at the low end: the outward normal points along +axis
        for edges, flip in ((np.nonzero(sign), False), (np.nonzero(b & ~a), True)):
            e = np.stack(edges, axis=1)
            e[:, u] += 1
            e[:, v] += 1  # back to grid-point coordinates of the edge's start
            quad = []
            for du, dv in ((-1, -1), (0, -1), (0, 0), (-1, 0)):
                c = e.copy()
                c[:, u] += du
                c[:, v] += dv
                quad.append(index[c[:, 0], c[:, 1], c[:, 2]])
            q = np.stack(quad, axis=1)
            if flip:
                q = q[:, ::-1]
            faces += [q[:, [0, 1, 2]], q[:, [0, 2, 3]]]
    faces = np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)
    return vertices, faces[(faces >= 0).all(axis=1)].astype(np.int32)


def visual_hull(viewmats, Ks, alphas) -> tuple[np.ndarray, np.ndarray]:
    """The silhouettes' visual hull as a mesh in the capture's world frame."""
    center, half = locate(viewmats, Ks, alphas)
    for _ in range(4):  # grow the box until the hull is inside it
        lo, hi = center - half, center + half
        field, near = carve(viewmats, Ks, alphas, lo, hi, HULL_COARSE)
        occupied = (field > ALPHA_THRESHOLD) | near
        if not occupied.any():
            raise CaptureError("the silhouettes have no common volume: the cameras do not look at one object "
                               "(check the poses: camera-to-world, Blender/OpenGL axes)")
        touches = occupied[[0, -1]].any() or occupied[:, [0, -1]].any() or occupied[:, :, [0, -1]].any()
        if not touches:
            break
        half *= 2.0
    idx = np.stack(np.nonzero(occupied), axis=1)
    step = 2 * half / (HULL_COARSE - 1)
    box_lo, box_hi = lo + (idx.min(0) - 1.5) * step, lo + (idx.max(0) + 1.5) * step
    middle, extent = (box_lo + box_hi) / 2, (box_hi - box_lo).max() / 2
    lo, hi = middle - extent, middle + extent
    vertices, faces = surface_nets(with_thin_parts(*carve(viewmats, Ks, alphas, lo, hi, HULL_FINE)), lo, hi)
    if len(faces) == 0:
        raise CaptureError("the silhouettes' common volume is too thin to mesh")
    return vertices, faces


def normalised_viewmat(viewmat, center, radius: float) -> np.ndarray:
    """The same camera in normalised space (``p = (world - center) / radius``): camera coordinates
    scaled by 1 / radius, which projects every point to the same pixel."""
    out = np.array(viewmat, dtype=np.float64)
    out[:3, 3] = (out[:3, :3] @ np.asarray(center, np.float64) + out[:3, 3]) / radius
    return out


def surface_samples(vertices, faces, per_edge: int = HULL_SAMPLES_PER_EDGE) -> np.ndarray:
    """Points on every triangle on a barycentric grid (``per_edge`` steps per edge), dense enough
    that a z-buffer of them has no holes where the triangles are about a pixel across."""
    steps = [(i, j) for i in range(per_edge + 1) for j in range(per_edge + 1 - i)]
    weights = np.array([(i, j, per_edge - i - j) for i, j in steps], np.float64) / per_edge  # [B,3]
    tri = np.asarray(vertices, np.float64)[np.asarray(faces)]  # [F,3,3]
    return np.einsum("bk,fkc->fbc", weights, tri).reshape(-1, 3)


def depth_map(points, viewmat, K, width: int, height: int) -> np.ndarray:
    """Camera z of the nearest of ``points`` in each pixel (0 where none): a point z-buffer."""
    uv, z = cameras.project_points(points, viewmat, K)
    x, y = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    ok = (z > 1e-6) & (x >= 0) & (y >= 0) & (x < width) & (y < height)
    flat = np.full(width * height, np.inf)
    np.minimum.at(flat, y[ok] * width + x[ok], z[ok])
    return np.where(np.isfinite(flat), flat, 0.0).reshape(height, width).astype(np.float32)


class HullContours:
    """The hull's contour generators, seen from any camera: where the (smoothed) vertex normals turn
    from facing the camera to facing away, on the mesh's edges. Behind the hull's own depth map they
    are the lines a picture cannot show but a wire sketch may draw (Freestyle's hidden lines)."""

    def __init__(self, vertices, faces, smoothing: int = 2):
        self.vertices = np.asarray(vertices, np.float64)
        faces = np.asarray(faces, np.int64)
        tri = self.vertices[faces]
        face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # area-weighted
        normals = np.zeros_like(self.vertices)
        for k in range(3):
            np.add.at(normals, faces[:, k], face_normals)
        edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
        self.edges = np.unique(edges, axis=0)
        for _ in range(smoothing):  # the voxel staircase would make the contour zig-zag
            summed = normals.copy()
            np.add.at(summed, self.edges[:, 0], normals[self.edges[:, 1]])
            np.add.at(summed, self.edges[:, 1], normals[self.edges[:, 0]])
            normals = summed
        self.normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)

    def hidden(self, viewmat, K, depth: np.ndarray, margin: float = 0.05) -> np.ndarray:
        """bool ``[H,W]``: contour-generator pixels more than ``margin`` behind ``depth``."""
        eye = np.linalg.inv(np.asarray(viewmat, np.float64))[:3, 3]
        facing = np.einsum("nc,nc->n", self.normals, eye - self.vertices)
        a, b = self.edges[:, 0], self.edges[:, 1]
        crossing = np.sign(facing[a]) != np.sign(facing[b])
        a, b = a[crossing], b[crossing]
        t = (facing[a] / (facing[a] - facing[b]))[:, None]
        points = self.vertices[a] + t * (self.vertices[b] - self.vertices[a])
        uv, z = cameras.project_points(points, viewmat, K)
        h, w = depth.shape
        x, y = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        ok = (z > 1e-6) & (x >= 0) & (y >= 0) & (x < w) & (y < h)
        x, y, z = x[ok], y[ok], z[ok]
        front = depth[y, x]
        behind = (front > 0) & (z > front + margin)
        out = np.zeros((h, w), bool)
        out[y[behind], x[behind]] = True
        return out
