"""The contract between the Blender side and the backend, in one place (docs/JOB_FORMAT.md).

Both sides import this module, so it imports neither torch nor bpy, and numpy only inside the
job-folder writer (the backend set-up runs it on a bare Python that has no numpy yet). Everything
that crosses the seam is named here: exit codes, the closed set of event types, file names, the
schema version, view and metric keys, and the argv of every backend sub-command.
A producer or consumer that writes one of these as a literal instead is a bug waiting for the day
the two drift apart.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# 2: strokes are chains of S cubic segments (result control points [K,3S+1,3], setting 'segments').
# 3: a job may hold kept strokes (KEPT_NPZ): drawn with the sketch and counted as covering their
#    lines, never moved; the result is the other strokes. Schema-1 and -2 jobs are valid schema-3 jobs.
SCHEMA_VERSION = 3
READABLE_SCHEMAS = (1, 2, 3)

# -- exit codes of `python -m backend ...` -------------------------------------------------------
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: traceback in the log, an `error` event on stdout
EXIT_BAD_JOB = 2  # the job (or the command line) is wrong: nothing was written
EXIT_CLIP_WEIGHTS = 3
EXIT_DEVICE = 4
EXIT_SETUP = 5  # the backend set-up could not make the environment (no venv, index, disk): nothing switched
EXIT_CANCELLED = 130  # SIGINT, closed stdin (when watched), parent gone: partial result written
EXIT_TERMINATED = 143  # SIGTERM (a scheduler or `timeout`): stopped as cleanly as a cancel

EXIT_MESSAGES = {
    EXIT_INTERNAL: "the worker failed with an internal error (a bug)",
    EXIT_BAD_JOB: "the job was rejected",
    EXIT_CLIP_WEIGHTS: "CLIP weights are unavailable",
    EXIT_DEVICE: "the requested device is unavailable",
    EXIT_SETUP: "the backend set-up failed",
    EXIT_CANCELLED: "cancelled",
    EXIT_TERMINATED: "terminated",
}
STOPPED_CODES = (EXIT_CANCELLED, EXIT_TERMINATED)

# -- exit codes of the headless command (`blender -b -c splatsketch ...`) --------------------------
CLI_OK = 0
CLI_ASSET_FAILED = 1  # some asset failed (reported); the others still ran
CLI_USAGE = 2  # bad arguments or backend: nothing ran
CLI_INTERRUPTED = EXIT_CANCELLED  # Ctrl-C
CLI_TERMINATED = EXIT_TERMINATED  # SIGTERM
MESH_FORMATS = (".obj", ".ply", ".stl", ".gltf", ".glb")  # what `--input` imports (scene/assets.py)
SETTINGS_LINE = "SPLATSKETCH_SETTINGS"  # `--print-settings` prints this, a space, then the resolved settings' JSON

# -- events (worker stdout: one JSON object per line) -------------------------------------------
INFO, PROGRESS, SNAPSHOT, WARNING, ERROR, DONE = "info", "progress", "snapshot", "warning", "error", "done"
EVENT_TYPES = frozenset({INFO, PROGRESS, SNAPSHOT, WARNING, ERROR, DONE})
FINAL_EVENTS = frozenset({DONE, ERROR})  # nothing may follow either
# A warning's field: true when the CLIP weights were missing and the run fell back to geometry only
# (the add-on marks its CLIP state from this field, never from the message's words).
CLIP_MISSING = "clip_missing"

# -- file names ----------------------------------------------------------------------------------
JOB_JSON = "job.json"
VIEWS_NPZ = "views.npz"
MESH_NPZ = "mesh.npz"
KEPT_NPZ = "kept.npz"  # the artist's kept strokes: 'control_points' [F,3S+1,3], normalised (any S)
RESULT_NPZ = "result.npz"
RESULT_JSON = "result.json"
EVAL_NPZ = "eval.npz"
TURNTABLE_NPZ = "turntable.npz"
METRICS_JSON = "metrics.json"
REPORT_PNG = "report.png"
TURNTABLE_GIF = "turntable.gif"
OWNER_FILE = ".owner"  # "PID" of the process using a job folder: pruning skips live owners
JOB_INPUTS = (JOB_JSON, VIEWS_NPZ, MESH_NPZ, KEPT_NPZ)

# -- arrays and summaries --------------------------------------------------------------------------
VIEW_KEYS = ("viewmats", "Ks", "is_train", "rgba", "lines", "lines_hidden", "depth")
# The per-view images the backend draws from mesh.npz when views.npz leaves them out (setting "targets").
DRAWN_KEYS = ("rgba", "lines", "lines_hidden", "depth")
# What the add-on keeps on a sketch object from metrics.json (the per-view list is reduced to F).
METRIC_SUMMARY_KEYS = (
    "f_mean", "f_min", "f_std", "precision_mean", "recall_mean", "outline_recall_mean", "outline_recall_min",
    "levels", "chamfer_px_mean", "ink_outside_mean",
    "ink_interior_mean", "surface_distance_mean", "surface_distance_max", "surface_coverage", "curves",
    "clip_model", "clip_similarity_mean", "clip_similarity_min", "tolerance_px", "image_size",
    "sketch_drawn_as", "lines_source", "evaluated_on", "looping_strokes", "looping_share", "turning_mean",
    "turning_max",
)

# -- argv of every backend sub-command (after `python -m backend`) ---------------------------------


def run_argv(job_dir: str, parent_pid: int | None = None, watch_stdin: bool = False) -> list[str]:
    """``run JOB_DIR``: ``parent_pid`` and ``watch_stdin`` make it stop when its caller goes away."""
    return ["run", str(job_dir), *_watch_args(parent_pid, watch_stdin)]


def evaluate_argv(job_dir: str, *, views: str | None = None, report: bool = False, title: str = "",
                  clip_args: list[str] | tuple = (), parent_pid: int | None = None,
                  watch_stdin: bool = False) -> list[str]:
    argv = ["evaluate", str(job_dir)]
    if views:
        argv += ["--views", str(views)]
    if report:
        argv += ["--report"] + (["--title", title] if title else [])
    return argv + list(clip_args) + _watch_args(parent_pid, watch_stdin)


def check_argv(quick: bool = False) -> list[str]:
    """``check``: one JSON line about this Python's packages; ``quick`` does not import them."""
    return ["check"] + (["--quick"] if quick else [])


def setup_argv(env_root: str, *, torch: str = "auto", find_links: str = "", index_url: str = "",
               build_kernels: bool = False, packages: list[str] | tuple = (), parent_pid: int | None = None,
               watch_stdin: bool = False) -> list[str]:
    """``setup ENV_ROOT``: make the managed backend environment (run by a base Python, no torch)."""
    argv = ["setup", str(env_root), "--torch", torch]
    if find_links:
        argv += ["--find-links", str(find_links)]
    if index_url:
        argv += ["--index-url", index_url]
    if build_kernels:
        argv.append("--build-kernels")
    for spec in packages:
        argv += ["--package", spec]
    return argv + _watch_args(parent_pid, watch_stdin)


def clip_weights_argv(model: str, pretrained: str, *, checkpoint: str = "", cache_dir: str = "", fetch: bool = False,
                      parent_pid: int | None = None, watch_stdin: bool = False) -> list[str]:
    """``clip-weights``: whether the weights are here (``done`` carries ``present``); ``fetch`` gets them."""
    argv = ["clip-weights", "--model", model, "--pretrained", pretrained]
    if checkpoint:
        argv += ["--checkpoint", checkpoint]
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    return argv + (["--fetch"] if fetch else []) + _watch_args(parent_pid, watch_stdin)


# -- the managed backend environment -----------------------------------------------------------------
ENVS_DIR = "envs"  # <root>/envs/<name>/: one virtual environment per set-up
CURRENT_JSON = "current.json"  # <root>/current.json: which one is in use (switched atomically)


def _watch_args(parent_pid: int | None, watch_stdin: bool) -> list[str]:
    return (["--parent-pid", str(int(parent_pid))] if parent_pid else []) + (["--watch-stdin"] if watch_stdin else [])


# -- writing job folders --------------------------------------------------------------------------


def write_atomic(path, write) -> None:
    """Call ``write(tmp)`` on a temporary name in the same folder, then rename: no half files."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_npz(path, **arrays) -> None:
    """An ``.npz`` of plain arrays (readable with ``allow_pickle=False``), written atomically."""
    import numpy as np

    def save(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})

    write_atomic(path, save)


def write_json(path, data) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, allow_nan=False, default=str),
                                                        encoding="utf-8"))


def job_meta(settings: dict, source: dict | None = None) -> dict:
    """The content of ``job.json``."""
    return {"schema": SCHEMA_VERSION, "settings": dict(settings), "source": dict(source or {})}


def write_job_folder(folder, settings: dict, source: dict, views: dict | None = None, mesh: dict | None = None,
                     **extra_npz: dict) -> None:
    """Write a job folder: ``views.npz`` / ``mesh.npz`` / any ``extra_npz`` (``name=arrays``, e.g.
    ``result=...``, ``eval=...``), then ``job.json`` last, each atomically, so a reader that finds
    ``job.json`` finds the arrays too. dtypes are the contract's (docs/JOB_FORMAT.md)."""
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if views is not None:
        write_npz(folder / VIEWS_NPZ, **_typed_views(views))
    if mesh is not None:
        write_npz(folder / MESH_NPZ, vertices=np.asarray(mesh["vertices"], np.float32),
                  faces=np.asarray(mesh["faces"], np.int32))
    for name, arrays in extra_npz.items():
        write_npz(folder / f"{name}.npz", **arrays)
    write_json(folder / JOB_JSON, job_meta(settings, source))


def _typed_views(views: dict) -> dict:
    import numpy as np

    dtypes = {"viewmats": np.float32, "Ks": np.float32, "is_train": bool, "rgba": np.uint8, "lines": np.uint8,
              "lines_hidden": np.uint8, "depth": np.float32}
    unknown = set(views) - set(dtypes)
    if unknown:
        raise ValueError(f"views have unknown arrays {sorted(unknown)} (known: {', '.join(VIEW_KEYS)})")
    return {k: np.asarray(v, dtypes[k]) for k, v in views.items()}
