"""Job folders: load and validate (every problem is one line and exit code 2), run, write results.

See docs/JOB_FORMAT.md for the contract. Validation happens before anything is written, so a bad
job leaves the folder exactly as it was.
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.protocol import (  # noqa: F401 - write_atomic stays importable from here for older callers
    DRAWN_KEYS,
    JOB_JSON,
    KEPT_NPZ,
    MESH_NPZ,
    READABLE_SCHEMAS,
    RESULT_JSON,
    RESULT_NPZ,
    VIEWS_NPZ,
    write_atomic,
    write_json,
    write_npz,
)
from contract.settings import CLIP_LOSSES, GEOMETRY_ONLY_WEIGHTS, OptimizeConfig, SettingsError, settings_from_dict

from .errors import BadJob

MAX_VIEWS = 4096
MAX_IMAGE_SIZE = 4096
MAX_NPZ_BYTES = 8 * 2 ** 30  # all the arrays of one .npz: far above any real job (a few hundred MB at most)


@dataclass
class Job:
    folder: Path
    config: OptimizeConfig
    arrays: dict[str, np.ndarray]  # views.npz (+ mesh.npz keys 'vertices', 'faces')
    source: dict
    drawn_seconds: float = 0.0  # time spent drawing the views' images from the mesh (setting "targets")


def load_npz(path: Path, required: bool) -> dict[str, np.ndarray]:
    if not path.exists():
        if required:
            raise BadJob(f"{path}: missing (the job folder needs {path.name}, see docs/JOB_FORMAT.md)")
        return {}
    try:
        _check_sizes(path)
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise BadJob(f"{path}: not a readable .npz of plain arrays ({exc})") from None


def _check_sizes(path: Path) -> None:
    """Refuse an .npz whose arrays declare more bytes than the file holds, or more than MAX_NPZ_BYTES
    in all, from their headers alone: loading allocates what a header declares before reading a byte."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            with archive.open(member) as f:
                version = np.lib.format.read_magic(f)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(f))
                declared = math.prod(shape) * dtype.itemsize
                held = member.file_size - f.tell()
            name = member.filename.removesuffix(".npy")
            if declared > held:
                raise BadJob(f"{path}: '{name}' declares {list(shape)} {dtype} ({_size(declared)}) but holds "
                             f"{_size(held)}")
            total += declared
    if total > MAX_NPZ_BYTES:
        raise BadJob(f"{path}: its arrays hold {_size(total)}, more than the limit of {_size(MAX_NPZ_BYTES)}")


def _size(count: int) -> str:
    return f"{count / 2 ** 30:.1f} GiB" if count >= 2 ** 30 else f"{count} bytes"


def _check(arrays, path: Path, key: str, dtypes, shape, required=True):
    """Check one array's dtype and shape; ``shape`` uses None for free sizes and names for shared ones."""
    if key not in arrays:
        if required:
            raise BadJob(f"{path}: missing array '{key}'")
        return
    a = arrays[key]
    if a.dtype.kind not in dtypes:
        raise BadJob(f"{path}: '{key}' has dtype {a.dtype}, expected {'/'.join(dtypes)}")
    if a.ndim != len(shape) or any(s is not None and not isinstance(s, str) and a.shape[i] != s
                                   for i, s in enumerate(shape)):
        expected = "[" + ",".join("?" if s is None else str(s) for s in shape) + "]"
        raise BadJob(f"{path}: '{key}' has shape {list(a.shape)}, expected {expected}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise BadJob(f"{path}: '{key}' contains NaN or infinite values")


def _load_cameras(path: Path, what: str) -> tuple[dict[str, np.ndarray], int]:
    """An .npz holding cameras (``viewmats`` [V,4,4], ``Ks`` [V,3,3]) and more, validated; V > 0."""
    arrays = load_npz(path, required=True)
    _check(arrays, path, "viewmats", "f", (None, 4, 4))
    count = arrays["viewmats"].shape[0]
    if count == 0:
        raise BadJob(f"{path}: zero {what}")
    _check(arrays, path, "Ks", "f", (count, 3, 3))
    return arrays, count


def load_eval_npz(path: Path) -> dict[str, np.ndarray]:
    """Evaluation views (``eval.npz``: viewmats, Ks, rgba, lines, optional lines_hidden), validated."""
    arrays, views = _load_cameras(path, "views")
    _check(arrays, path, "rgba", "u", (views, None, None, 4))
    H, W = arrays["rgba"].shape[1:3]
    _check(arrays, path, "lines", "u", (views, H, W))
    _check(arrays, path, "lines_hidden", "u", (views, H, W), required=False)
    return arrays


def load_turntable_npz(path: Path) -> dict[str, np.ndarray]:
    """Turntable frames for the report's GIF (``turntable.npz``: viewmats, Ks, lines), validated."""
    arrays, frames = _load_cameras(path, "frames")
    _check(arrays, path, "lines", "u", (frames, None, None))
    return arrays


def load_result(path: Path) -> dict[str, np.ndarray]:
    """A result.npz (control_points [K,3S+1,3]: S-segment strokes, widths [K]), validated."""
    arrays = load_npz(path, required=True)
    _check(arrays, path, "control_points", "f", (None, None, 3))
    rows = arrays["control_points"].shape[1]
    if rows < 4 or (rows - 1) % 3:
        raise BadJob(f"{path}: 'control_points' must be [K, 3*S+1, 3] (S cubic segments per stroke), "
                     f"got {list(arrays['control_points'].shape)}")
    _check(arrays, path, "widths", "f", (arrays["control_points"].shape[0],))
    return arrays


def load_mesh(path: Path) -> dict[str, np.ndarray]:
    """``mesh.npz`` checked (``vertices`` [N,3] float, ``faces`` [F,3] indexing them), or {} if absent."""
    mesh = load_npz(path, required=False)
    if mesh:
        _check(mesh, path, "vertices", "f", (None, 3))
        _check(mesh, path, "faces", "iu", (None, 3))
        faces = mesh["faces"]
        if faces.shape[0] == 0:
            raise BadJob(f"{path}: 'faces' is empty")
        if faces.min() < 0 or faces.max() >= mesh["vertices"].shape[0]:
            raise BadJob(f"{path}: 'faces' indexes vertices that do not exist")
    return mesh


def load_job(folder) -> Job:
    """Read and validate a job folder; raise :class:`BadJob` with one clear line on any problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadJob(f"{folder}: no such job folder")
    job_json = folder / JOB_JSON
    if not job_json.is_file():
        raise BadJob(f"{job_json}: missing (see docs/JOB_FORMAT.md)")
    try:
        meta = json.loads(job_json.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadJob(f"{job_json}: malformed JSON ({exc})") from None
    except RecursionError:  # nested deeper than the parser's stack: no job.json is
        raise BadJob(f"{job_json}: malformed JSON (nested too deep)") from None
    if not isinstance(meta, dict):
        raise BadJob(f"{job_json}: must hold a JSON object")
    if meta.get("schema") not in READABLE_SCHEMAS:
        raise BadJob(f"{job_json}: schema {meta.get('schema')!r} is not one this backend reads "
                     f"({', '.join(map(str, READABLE_SCHEMAS))}); make the job again with this version of SplatSketch")
    try:
        config = settings_from_dict(meta.get("settings", {}))
    except SettingsError as exc:
        raise BadJob(f"{job_json}: {exc}") from None

    views_path = folder / VIEWS_NPZ
    arrays = load_npz(views_path, required=True)
    _check(arrays, views_path, "viewmats", "f", (None, 4, 4))
    views = arrays["viewmats"].shape[0]
    if views == 0:
        raise BadJob(f"{views_path}: zero views")
    if views > MAX_VIEWS:
        raise BadJob(f"{views_path}: {views} views is more than the limit of {MAX_VIEWS}")
    _check(arrays, views_path, "Ks", "f", (views, 3, 3))
    _check(arrays, views_path, "is_train", "b", (views,))
    mesh = load_mesh(folder / MESH_NPZ)
    drawn_seconds = _draw_from_mesh(arrays, mesh, config, views_path)
    _check(arrays, views_path, "rgba", "u", (views, None, None, 4))
    if arrays["rgba"].dtype != np.uint8:
        raise BadJob(f"{views_path}: 'rgba' has dtype {arrays['rgba'].dtype}, expected uint8")
    height, width = arrays["rgba"].shape[1:3]
    if not (8 <= height <= MAX_IMAGE_SIZE and 8 <= width <= MAX_IMAGE_SIZE):
        raise BadJob(f"{views_path}: images of {width}x{height} px are outside 8..{MAX_IMAGE_SIZE} px")
    for key in ("lines", "lines_hidden"):
        _check(arrays, views_path, key, "u", (views, height, width), required=False)
    _check(arrays, views_path, "depth", "f", (views, height, width), required=False)
    for key in ("lines", "lines_hidden", "depth"):
        if key in arrays and arrays[key].shape[1:] != (height, width):
            raise BadJob(f"{views_path}: '{key}' is {arrays[key].shape[2]}x{arrays[key].shape[1]} px "
                         f"but 'rgba' is {width}x{height} px")
    if not arrays["is_train"].any():
        raise BadJob(f"{views_path}: 'is_train' marks no training view")
    if (np.abs(np.linalg.det(arrays["viewmats"][:, :3, :3]) - 1.0) > 1e-2).any():
        raise BadJob(f"{views_path}: 'viewmats' must be rigid world-to-camera matrices (rotation + translation)")
    if (arrays["Ks"][:, 0, 0] <= 0).any() or (arrays["Ks"][:, 1, 1] <= 0).any():
        raise BadJob(f"{views_path}: 'Ks' has a non-positive focal length")

    arrays.update(mesh)
    kept = _load_kept(folder / KEPT_NPZ)
    if kept is not None:
        arrays["kept_strokes"] = kept

    needs = {"lines": "lines" in arrays, "surface": bool(mesh)}
    for name, present in needs.items():
        if config.losses.get(name, 0) > 0 and not present:
            what = f"line images ('lines' in {VIEWS_NPZ})" if name == "lines" else f"the mesh ({MESH_NPZ})"
            raise BadJob(f"{job_json}: loss '{name}' needs {what}, which the job does not have")
    if config.init in ("surface", "contour", "features") and not mesh:
        raise BadJob(f"{job_json}: init '{config.init}' needs the mesh ({MESH_NPZ})")
    if config.init in ("contour", "features") and "lines" not in arrays:
        raise BadJob(f"{job_json}: init 'contour' needs line images ('lines' in {VIEWS_NPZ})")
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    return Job(folder, config, arrays, source, drawn_seconds)


def _load_kept(path: Path) -> np.ndarray | None:
    """``kept.npz``'s strokes ``[F,3S+1,3]`` (normalised; ``load_npz`` checks they are finite), or None
    without the file."""
    kept = load_npz(path, required=False)
    if not kept:
        return None
    _check(kept, path, "control_points", "f", (None, None, 3))
    points = kept["control_points"]
    if points.shape[1] < 4 or (points.shape[1] - 1) % 3:
        raise BadJob(f"{path}: 'control_points' must be [F,3S+1,3] (S cubic segments), got {list(points.shape)}")
    return points.astype(np.float32)


def _draw_from_mesh(arrays: dict, mesh: dict, config: OptimizeConfig, path: Path) -> float:
    """With the setting ``targets`` "mesh", draw the images views.npz leaves out from the mesh; the
    seconds taken. Their size is the cameras' (principal point at the centre, as the add-on's are)."""
    if config.targets != "mesh" or not mesh or all(key in arrays for key in DRAWN_KEYS):
        return 0.0
    centre = arrays["Ks"][:, :2, 2].astype(np.float64)
    width, height = (int(round(2 * c)) for c in centre[0])
    if not np.allclose(centre, [width / 2, height / 2], atol=1e-3) or not (
            8 <= height <= MAX_IMAGE_SIZE and 8 <= width <= MAX_IMAGE_SIZE):
        raise BadJob(f"{path}: the images left out for the backend to draw need every camera's principal point at "
                     f"the centre of an image of 8..{MAX_IMAGE_SIZE} px (it gives their size)")
    from .mesh_targets import draw_missing

    started = time.perf_counter()
    arrays.update(draw_missing({**arrays, **mesh}, (height, width), config.device))
    return time.perf_counter() - started


def geometry_only(config: OptimizeConfig, arrays: dict) -> dict[str, float]:
    """Loss weights with the CLIP terms dropped (used when weights are missing and that is allowed)."""
    weights = {k: v for k, v in config.losses.items() if k not in CLIP_LOSSES}
    if not any(v > 0 for v in weights.values()):
        weights = {k: v for k, v in GEOMETRY_ONLY_WEIGHTS.items()
                   if (k != "lines" or "lines" in arrays) and (k != "surface" or "vertices" in arrays)}
    return weights


def write_result(folder: Path, result, summary: dict) -> None:
    """``result.npz`` (the contract's float32 arrays) then ``result.json``, each written atomically."""
    write_npz(folder / RESULT_NPZ, control_points=result.control_points.numpy().astype(np.float32),
              widths=result.widths.numpy().astype(np.float32),
              view_losses=result.view_losses.numpy().astype(np.float32),
              loss_history=np.asarray(result.loss_history, dtype=np.float32))
    write_json(folder / RESULT_JSON, summary)
