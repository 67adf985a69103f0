"""The quality suite: every test mesh x a fixed set of configurations, scored on views never optimised on.

    .venv/bin/python bench/quality.py [--meshes spot,duck] [--configs defaults,seed_setup] [--out out/quality]
                                      [--iterations N] [--clip-weights FILE_OR_CACHE] [--stage all|prepare|run|report]

Three stages, each cached under ``--out`` so an interrupted suite resumes where it stopped:

1. ``prepare`` (this process, the ``bpy`` wheel, never torch): import each mesh from
   ../shared/data/meshes/, join it into one object and write ONE job folder per mesh
   (``<out>/<mesh>/job``: 24 training + 8 held-out views at 224 px, scene.job_folder.write_job) plus
   ``eval.npz`` (24 orbit views at 256 px, phase 0.25 so they are disjoint from both training and
   held-out views, never used for optimisation) and ``turntable.npz`` (24 frames at 160 px around the
   object at 20 degrees elevation, for the GIF).
2. ``run``: for each configuration a job folder ``<out>/<mesh>/<config>`` whose arrays are hard links
   to the cached ones (single-view configurations get their own, smaller ``views.npz``; the oracle ones
   one made of ``eval.npz``), then the
   backend as subprocesses: ``python -m backend run DIR`` and ``python -m backend evaluate DIR``.
3. ``report`` (a separate process: torch + PIL, never bpy): ``results.json``, ``TABLE.md``, per mesh a
   contact sheet PNG with the figures printed on it and a turntable GIF of the sketch beside the
   object's line drawing.

CLIP configurations run only where ``--clip-weights`` names an existing file or cache folder; otherwise
their rows say "not measured". Random-weight CLIP is never reported as quality.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # ``backend`` for the report stage (the script runs from bench/)
if str(REPO / "bench") not in sys.path:
    sys.path.insert(0, str(REPO / "bench"))  # its configurations, also when loaded from its file

from quality_configs import CONFIGS, DEFAULT_CONFIGS, EXPERIMENTS, GEOMETRY_ONLY  # noqa: E402

from contract.protocol import (  # noqa: E402 - after the path set-up above
    EVAL_NPZ,
    JOB_JSON,
    MESH_NPZ,
    METRICS_JSON,
    RESULT_JSON,
    RESULT_NPZ,
    TURNTABLE_NPZ,
    VIEWS_NPZ,
    evaluate_argv,
    run_argv,
)

MESH_DIR = (REPO.parent / "shared" / "data" / "meshes").resolve()
if not MESH_DIR.is_dir() and shutil.which("git"):  # a git worktree elsewhere: beside its main checkout
    _GIT_DIR = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=REPO,
                              capture_output=True, text=True).stdout.strip()
    MESH_DIR = Path(_GIT_DIR).parent.parent / "shared" / "data" / "meshes" if _GIT_DIR else MESH_DIR

# name -> file (relative to MESH_DIR). Every mesh of SOURCES.md.
MESHES = {
    "duck": "Duck.glb",
    "spot": "spot.obj",
    "teapot": "teapot.obj",
    "fish": "fish.obj",
    "plane": "plane.obj",
    "mug": "mug.ply",
    "lamp": "lamp.obj",
    "chair": "chair_model.obj",
    "wicker_chair": "WickerChair.glb",
    "stool": "painted_wooden_stool/painted_wooden_stool_1k.gltf",
}

# Made in Blender rather than read from a file; not in the default set (--meshes sphere). A control:
# every view's silhouette is a different great circle, so no fixed set of 3D curves can be precise in
# many views (bench/ceiling.py: any static sketch's mean F stays below about 0.55 on it).
SYNTHETIC = {"sphere": "UV sphere, 96 x 48, smooth shading"}

TRAIN_VIEWS, HELDOUT_VIEWS, JOB_SIZE = 24, 8, 224
EVAL_VIEWS, EVAL_SIZE, EVAL_PHASE = 24, 256, 0.25
TURNTABLE_SIZE = 160
SINGLE_VIEW_ELEVATION = 20.0  # the one training view of the single-view configurations: a 3/4 view
EVAL_KEYS = ("viewmats", "Ks", "rgba", "lines", "lines_hidden")
# Settings that only change what the worker prints, never the result.
QUIET = {"snapshot_every": 0, "progress_every": 50}
FIGURES = ("f_mean", "f_min", "precision_mean", "recall_mean", "outline_recall_mean", "chamfer_px_mean",
           "surface_distance_mean",
           "ink_interior_mean", "runtime_s")


def log(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", flush=True)


def mesh_path(name: str) -> Path:
    if name in SYNTHETIC:
        return Path(name)
    if name not in MESHES:
        raise SystemExit(f"unknown mesh '{name}' (known: {', '.join(MESHES)})")
    path = MESH_DIR / MESHES[name]
    if not path.exists():
        raise SystemExit(f"mesh '{name}' is missing: expected the file {path} (see {MESH_DIR / 'SOURCES.md'})")
    return path


# --- stage 1: job folders (bpy) ------------------------------------------------------------------

def _scene_module(name: str):
    """A module of scene/ (or backend/) imported as part of a package rooted at the repository, so its
    relative imports work, without running the extension's register()."""
    import importlib
    import types

    alias = "splatsketch_quality"
    if alias not in sys.modules:
        package = types.ModuleType(alias)
        package.__path__ = [str(REPO)]
        sys.modules[alias] = package
    return importlib.import_module(f"{alias}.{name}")


def _scene_modules():
    return tuple(_scene_module(f"scene.{name}") for name in ("job_folder", "targets", "mesh", "evaluation_folder"))


def import_joined(path: Path):
    """Import one mesh file into an empty scene as one mesh object, with the CLI's own importer
    (``scene/assets.py``), so the suite measures what ``--input`` gives users."""
    import bpy

    assets = _scene_module("scene.assets")
    bpy.ops.wm.read_homefile(use_factory_startup=True)
    assets.clear_startup_scene(list(bpy.data.objects))
    try:
        return assets.import_asset(bpy.context, str(path))
    except ValueError as error:
        raise SystemExit(f"{path}: {error}") from None


def make_synthetic(name: str):
    """The control meshes of ``SYNTHETIC``, in an empty scene."""
    import bpy

    bpy.ops.wm.read_homefile(use_factory_startup=True)
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj, do_unlink=True)
    bpy.ops.mesh.primitive_uv_sphere_add(segments=96, ring_count=48, radius=1.0)
    bpy.ops.object.shade_smooth()
    return bpy.context.active_object


def prepare_mesh(name: str, out: Path) -> Path:
    """``<out>/<name>/job`` with job.json, views.npz, mesh.npz, eval.npz, turntable.npz (built once)."""
    job = out / name / "job"
    if all((job / f).exists() for f in (JOB_JSON, VIEWS_NPZ, MESH_NPZ, EVAL_NPZ, TURNTABLE_NPZ)):
        return job
    path = mesh_path(name)
    import bpy

    job_folder, targets, mesh, evaluation = _scene_modules()
    start = time.perf_counter()
    obj = make_synthetic(name) if name in SYNTHETIC else import_joined(path)
    obj.name = name
    depsgraph = bpy.context.evaluated_depsgraph_get()
    if not (job / VIEWS_NPZ).exists():
        if job.exists():
            shutil.rmtree(job)
        info = job_folder.write_job(str(job), obj, depsgraph, {}, TRAIN_VIEWS, HELDOUT_VIEWS, JOB_SIZE)
        log(f"{name}: job folder ({info['views']} views, {info['seconds_per_view']:.1f} s/view)")
    vertices, _ = mesh.evaluated_mesh_world(obj, depsgraph)
    center, radius = mesh.bounding_sphere(vertices)
    for npz, cams, size in ((EVAL_NPZ, evaluation.eval_cameras(EVAL_VIEWS, EVAL_SIZE, EVAL_PHASE), EVAL_SIZE),
                            (TURNTABLE_NPZ, evaluation.turntable_cameras(), TURNTABLE_SIZE)):
        if not (job / npz).exists():
            targets.drain(evaluation.iter_write_views(str(job / npz), obj, *cams, size, center, radius))
    log(f"{name}: prepared in {time.perf_counter() - start:.0f} s ({path.name})")
    return job


# --- stage 2: configuration job folders and backend runs (no bpy, no torch) ------------------------

def single_view_index(viewmats: np.ndarray, is_train: np.ndarray, elevation=SINGLE_VIEW_ELEVATION) -> int:
    """The training view whose camera elevation is closest to ``elevation`` degrees."""
    best, best_err = -1, float("inf")
    for v in np.nonzero(is_train)[0]:
        R, t = viewmats[v, :3, :3].astype(np.float64), viewmats[v, :3, 3].astype(np.float64)
        eye = -R.T @ t
        err = abs(math.degrees(math.asin(eye[2] / np.linalg.norm(eye))) - elevation)
        if err < best_err:
            best, best_err = int(v), err
    return best


def write_single_view(src: Path, dst: Path) -> int:
    """``dst`` = ``src``'s views.npz with ONE training view (the others dropped) plus every held-out view."""
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    is_train = arrays["is_train"].astype(bool)
    keep = single_view_index(arrays["viewmats"], is_train)
    select = np.zeros(len(is_train), bool)
    select[keep] = True
    select |= ~is_train
    _save_views(dst, {k: v[select] for k, v in arrays.items()})
    return keep


def write_all_train(src: Path, dst: Path) -> None:
    """``dst`` = ``src``'s views.npz with the held-out views trained on too (more views, same renders)."""
    arrays = _load(src)
    arrays["is_train"] = np.ones_like(arrays["is_train"], dtype=bool)
    _save_views(dst, arrays)


def write_eval_as_views(src: Path, dst: Path) -> None:
    """``dst`` = a views.npz whose training views ARE the evaluation views (same lines the metric uses)."""
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in EVAL_KEYS if k in data.files}
    arrays["is_train"] = np.ones(len(arrays["Ks"]), bool)
    _save_views(dst, arrays)


def _save_views(dst: Path, arrays: dict) -> None:
    """Through the protocol's atomic writer: an interrupted suite never leaves half a file."""
    from contract.protocol import write_npz

    write_npz(dst, **arrays)


def _link(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        os.symlink(os.path.relpath(src, dst.parent), dst)


def config_settings(config: str, iterations: int | None, clip_weights: str | None) -> dict:
    override, _, needs_clip, _ = CONFIGS[config]
    settings = {"losses": dict(GEOMETRY_ONLY), "seed": 0, **QUIET, **override}
    if iterations is not None:
        settings["iterations"] = iterations
    if needs_clip:
        weights = Path(clip_weights)
        settings["clip"] = {"checkpoint": str(weights)} if weights.is_file() else {"cache_dir": str(weights)}
    return settings


def make_config_job(base: Path, folder: Path, config: str, settings: dict) -> None:
    """A job folder for one configuration sharing the cached arrays (hard links)."""
    folder.mkdir(parents=True, exist_ok=True)
    views = CONFIGS[config][1]
    for name in (MESH_NPZ, EVAL_NPZ):
        _link(base / name, folder / name)
    fresh = not (folder / VIEWS_NPZ).exists() or (folder / VIEWS_NPZ).samefile(base / VIEWS_NPZ)
    if views == "single" and fresh:
        write_single_view(base / VIEWS_NPZ, folder / VIEWS_NPZ)
    elif views == "eval" and fresh:
        write_eval_as_views(base / EVAL_NPZ, folder / VIEWS_NPZ)
    elif views == "all" and fresh:
        write_all_train(base / VIEWS_NPZ, folder / VIEWS_NPZ)
    elif views == "train":
        _link(base / VIEWS_NPZ, folder / VIEWS_NPZ)
    from contract.protocol import job_meta, write_json

    source = json.loads((base / JOB_JSON).read_text()).get("source", {})
    write_json(folder / JOB_JSON, job_meta(settings, source))


def _backend(python: str, *args: str, log_path: Path) -> tuple[int, float, list[dict]]:
    start = time.perf_counter()
    proc = subprocess.run([python, "-m", "backend", *args], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(args)}  (exit {proc.returncode}, {seconds:.1f} s)\n{proc.stderr[-4000:]}\n")
    return proc.returncode, seconds, events


def effective_settings(config: str, settings: dict) -> dict:
    """Every field as the worker will see it (defaults filled in), plus the view set: two configurations
    with equal effective settings give the same sketch (``init_surface`` is ``defaults`` while the
    project's default init is ``surface``), so the suite runs one and links the other."""
    from contract.settings import settings_from_dict, settings_to_dict

    return {**settings_to_dict(settings_from_dict(settings)), "views": CONFIGS[config][1]}


def _same_run(out: Path, mesh: str, config: str, settings: dict) -> Path | None:
    """A finished configuration folder of ``mesh`` whose effective settings equal ``config``'s."""
    mine = effective_settings(config, settings)
    for other in sorted(CONFIGS):
        folder = out / mesh / other
        if other == config or not (folder / "suite.json").exists() or not (folder / METRICS_JSON).exists():
            continue
        record = json.loads((folder / "suite.json").read_text())
        if not record.get("error") and record.get("config") == other and \
                effective_settings(other, record["settings"]) == mine:
            return folder
    return None


EVAL_CLIP_MODEL = "ViT-B-32"  # scoring backbone: not the RN101 the CLIP objective trains with


def eval_clip_args(weights: str | None, model: str = EVAL_CLIP_MODEL) -> list[str]:
    """``backend evaluate`` options for the CLIP similarity, when weights for ``model`` are given."""
    if not weights:
        return []
    path = Path(weights)
    return ["--clip-model", model, "--clip-checkpoint" if path.is_file() else "--clip-cache", str(path)]


def run_config(python: str, base: Path, out: Path, mesh: str, config: str, settings: dict, force: bool = False,
               eval_args: tuple = ()) -> dict:
    folder = out / mesh / config
    stamp = folder / "suite.json"
    if not force and stamp.exists() and (folder / METRICS_JSON).exists():
        previous = json.loads(stamp.read_text())
        if previous.get("settings") == settings:
            return previous
    make_config_job(base, folder, config, settings)
    for stale in (RESULT_NPZ, RESULT_JSON, METRICS_JSON, "suite.json", "backend.log"):
        (folder / stale).unlink(missing_ok=True)
    twin = None if force else _same_run(out, mesh, config, settings)
    if twin is not None:  # identical effective settings: share the run instead of repeating it
        for name in (RESULT_NPZ, RESULT_JSON, METRICS_JSON):
            _link(twin / name, folder / name)
        record = {**json.loads((twin / "suite.json").read_text()), "config": config, "settings": settings,
                  "same_as": twin.name}
        stamp.write_text(json.dumps(record, indent=2))
        log(f"{mesh}/{config}: same effective settings as {twin.name}, its run is shared")
        return record
    log(f"{mesh}/{config}: running")
    code, run_s, events = _backend(python, *run_argv(folder), log_path=folder / "backend.log")
    record = {"mesh": mesh, "config": config, "settings": settings, "run_exit": code, "runtime_s": run_s,
              "code": _code_version()}
    if code != 0:
        errors = [e.get("message") for e in events if e.get("type") == "error"]
        record["error"] = errors[-1] if errors else f"worker exit {code} (see {folder / 'backend.log'})"
        log(f"{mesh}/{config}: FAILED: {record['error']}")
        stamp.write_text(json.dumps(record, indent=2))
        return record
    result = json.loads((folder / RESULT_JSON).read_text())
    record["loop_s"] = result.get("seconds")
    record["device"] = result.get("device")
    record["kept"] = len(result.get("kept", [])) or result.get("curves")
    code, eval_s, events = _backend(python, *evaluate_argv(folder, clip_args=eval_args),
                                    log_path=folder / "backend.log")
    record["eval_exit"] = code
    if code != 0:
        record["error"] = f"evaluate exit {code} (see {folder / 'backend.log'})"
    record["eval_s"] = eval_s
    log(f"{mesh}/{config}: done in {run_s:.0f} s")
    stamp.write_text(json.dumps(record, indent=2))
    return record


# --- stage 3: results, table, pictures (torch + PIL, never bpy) -----------------------------------

def _code_version() -> dict:
    """The commit the report was made at, and whether backend/ had uncommitted changes."""
    def git(*args):
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None

    return {"commit": git("rev-parse", "HEAD"), "backend_dirty": bool(git("status", "--porcelain", "backend"))}


def collect(out: Path, meshes: list[str], configs: list[str], clip_weights: str | None) -> dict:
    rows = []
    for mesh in meshes:
        for config in configs:
            folder = out / mesh / config
            row = {"mesh": mesh, "config": config, "description": CONFIGS[config][3]}
            if CONFIGS[config][2] and not (clip_weights and Path(clip_weights).exists()):
                row["status"] = "not measured (no CLIP weights: pass --clip-weights FILE_OR_CACHE)"
                rows.append(row)
                continue
            stamp = folder / "suite.json"
            if not stamp.exists():
                row["status"] = "not run"
                rows.append(row)
                continue
            record = json.loads(stamp.read_text())
            row.update({k: record.get(k) for k in ("settings", "runtime_s", "loop_s", "device", "kept", "error")})
            metrics_path = folder / METRICS_JSON
            if record.get("error") or not metrics_path.exists():
                row["status"] = "failed"
            else:
                metrics = json.loads(metrics_path.read_text())
                row["status"] = "measured"
                row["metrics"] = {k: v for k, v in metrics.items() if k != "views"}
                row["per_view_f"] = [v["f"] for v in metrics["views"]]
            rows.append(row)
    return {"meshes": meshes, "configs": configs, "rows": rows, "code": _code_version(),
            "eval": {"views": EVAL_VIEWS, "size_px": EVAL_SIZE, "phase": EVAL_PHASE, "tolerance_px": 2.0,
                     "lines": "Blender Freestyle (silhouette, crease, border, contour): recall vs visible lines, "
                              "precision vs visible + hidden lines"},
            "train": {"views": TRAIN_VIEWS, "heldout": HELDOUT_VIEWS, "size_px": JOB_SIZE}}


def _figure(row: dict, key: str):
    if key == "runtime_s":
        return row.get("runtime_s")
    return (row.get("metrics") or {}).get(key)


def table_markdown(results: dict) -> str:
    head = ("| mesh | config | F mean | F min | min/mean | precision | recall | outline | chamfer px | surf. dist | "
            "interior ink | CLIP sim. | curves | runtime s |")
    lines = [head, "|" + "---|" * 14]
    for row in results["rows"]:
        if row["status"] != "measured":
            lines.append(f"| {row['mesh']} | {row['config']} | {row['status']} |" + " |" * 10)
            continue
        m = row["metrics"]
        ratio = m["f_min"] / m["f_mean"] if m["f_mean"] else float("nan")
        clip = f"{m['clip_similarity_mean']:.3f}" if "clip_similarity_mean" in m else "not measured"
        lines.append(f"| {row['mesh']} | {row['config']} | {m['f_mean']:.3f} | {m['f_min']:.3f} | {ratio:.2f} | "
                     f"{m['precision_mean']:.3f} | {m['recall_mean']:.3f} | "
                     f"{m.get('outline_recall_mean', float('nan')):.3f} | {m['chamfer_px_mean']:.2f} | "
                     f"{m.get('surface_distance_mean', float('nan')):.4f} | {m['ink_interior_mean']:.3f} | "
                     f"{clip} | {m['curves']} | {row['runtime_s']:.0f} |")
    return "\n".join(lines) + "\n"


def summary_markdown(results: dict) -> str:
    """The issue's comparisons, mesh by mesh: defaults vs seed setup, the 0.8 bar, interior ink at 40."""
    by = {(r["mesh"], r["config"]): r.get("metrics") for r in results["rows"] if r["status"] == "measured"}
    out = ["| mesh | defaults F mean / min | seed F mean / min | defaults beat seed | bar F>=0.8 and min>=0.85 mean "
           "| interior ink k40 defaults / no-rep.: px per view (share of ink) | less interior ink |",
           "|" + "---|" * 7]
    for mesh in results["meshes"]:
        d, s = by.get((mesh, "defaults")), by.get((mesh, "seed_setup"))
        a, b = by.get((mesh, "k40_defaults")), by.get((mesh, "k40_no_repulsion_no_prune"))
        cells = [mesh]
        if d and s:
            cells += [f"{d['f_mean']:.3f} / {d['f_min']:.3f}", f"{s['f_mean']:.3f} / {s['f_min']:.3f}",
                      "yes" if d["f_mean"] > s["f_mean"] and d["f_min"] > s["f_min"] else "NO"]
        else:
            cells += ["-", "-", "-"]
        cells.append(("yes" if d["f_mean"] >= 0.8 and d["f_min"] >= 0.85 * d["f_mean"] else "NO") if d else "-")
        if a and b:
            if "ink_interior_px_mean" in a and "ink_interior_px_mean" in b:  # the amount left: what the issue asks
                cells += [f"{a['ink_interior_px_mean']:.0f} / {b['ink_interior_px_mean']:.0f} "
                          f"({a['ink_interior_mean']:.3f} / {b['ink_interior_mean']:.3f})",
                          "yes" if a["ink_interior_px_mean"] < b["ink_interior_px_mean"] else "NO"]
            else:  # results scored before the pixel count existed: the share only
                cells += [f"({a['ink_interior_mean']:.3f} / {b['ink_interior_mean']:.3f})",
                          "yes" if a["ink_interior_mean"] < b["ink_interior_mean"] else "NO"]
        else:
            cells += ["-", "-"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n" + "\n" + comparisons_markdown(results, by)


def comparisons_markdown(results: dict, by: dict) -> str:
    """Each fix against its alternative, mesh by mesh: does it win on held-out mean F and on per-view min?"""
    pairs = [("multi-view vs 1 view", "defaults", "single_view"),
             ("surface vs random init", "init_surface", "init_random"),
             ("contour vs random init", "init_contour", "init_random"),
             ("16: no repulsion vs repulsion", "defaults", "repulsion"),
             ("best of 3 vs 1 seed", "best_of_3", "defaults")]
    out = ["| mesh | " + " | ".join(name for name, _, _ in pairs) + " |", "|" + "---|" * (len(pairs) + 1)]
    for mesh in results["meshes"]:
        cells = [mesh]
        for _, mine, other in pairs:
            a, b = by.get((mesh, mine)), by.get((mesh, other))
            if not (a and b):
                cells.append("-")
                continue
            cells.append(f"{a['f_mean'] - b['f_mean']:+.3f} / {a['f_min'] - b['f_min']:+.3f}")
        out.append("| " + " | ".join(cells) + " |")
    return ("Differences in held-out F (mean / per-view minimum), the first configuration minus the second:\n\n"
            + "\n".join(out) + "\n")


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _result(folder: Path):
    path = folder / RESULT_NPZ
    if not path.exists():
        return None
    r = _load(path)
    widths = r["widths"]
    return r["control_points"], float(widths[0]) if len(widths) else 0.01


SHEET_CONFIGS = ("defaults", "seed_setup", "single_view", "init_random", "k40_defaults", "k40_no_repulsion_no_prune")


def contact_sheet(out: Path, mesh: str, results: dict, views=(0, 5, 10, 15, 20), tile: int = 160,
                  configs=SHEET_CONFIGS, name: str = "sheet") -> Path | None:
    """Rows: object, its line drawing, then one sketch row per configuration; F per tile printed."""
    from backend.report import draw_sheet, ink_image, line_drawing, over_white, sketch_ink

    base = out / mesh / "job"
    if not (base / EVAL_NPZ).exists():
        return None
    ev = _load(base / EVAL_NPZ)
    size = ev["lines"].shape[1]
    views = [v for v in views if v < len(ev["viewmats"])]
    rows = [("object", [over_white(ev["rgba"][v]) for v in views], None),
            ("lines (hidden: blue)", [line_drawing(ev["lines"][v], ev["lines_hidden"][v]) for v in views], None)]
    metrics = {r["config"]: r for r in results["rows"] if r["mesh"] == mesh and r["status"] == "measured"}
    for config in configs:
        if config not in metrics:
            continue
        res = _result(out / mesh / config)
        if res is None:
            continue
        ink = sketch_ink(res[0], res[1], ev["viewmats"][views], ev["Ks"][views], size)
        row = metrics[config]
        m = row["metrics"]
        label = (f"{config}: F {m['f_mean']:.2f} min {m['f_min']:.2f}  P {m['precision_mean']:.2f} "
                 f"R {m['recall_mean']:.2f}  ch {m['chamfer_px_mean']:.1f}px  int {m['ink_interior_mean']:.2f}  "
                 f"K {m['curves']}  loops {m.get('looping_strokes', '-')}  {row['runtime_s']:.0f}s")
        rows.append((label, [ink_image(ink[i]) for i in range(len(views))],
                     [(f"F {row['per_view_f'][v]:.2f}", row["per_view_f"][v]) for v in views]))
    header = [(f"{mesh}: held-out eval views {list(views)} of {len(ev['viewmats'])} ({size}px, tol 2px)", (0, 0, 0))]
    sheet = draw_sheet(header, rows, tile)
    path = out / f"{mesh}_{name}.png"
    sheet.save(path, optimize=True)
    return path


def turntable_gif(out: Path, mesh: str, config: str = "defaults") -> Path | None:
    """Animated GIF: the object's line drawing (left) beside the sketch (right), one turn."""
    from backend.report import turntable_gif as draw_turntable

    folder = out / mesh / config
    if _result(folder) is None:
        return None
    if not (folder / TURNTABLE_NPZ).exists() and (out / mesh / "job" / TURNTABLE_NPZ).exists():
        _link(out / mesh / "job" / TURNTABLE_NPZ, folder / TURNTABLE_NPZ)
    return draw_turntable(folder, out / f"{mesh}_turntable.gif", title=f"{mesh} lines")


def doc_pictures(out: Path, meshes: list[str], dest: Path, width: int = 640, colors: int = 32,
                 sheet_name: str = "sheet") -> list[Path]:
    """Small copies of the sheets (palette PNG, ``width`` px wide) and GIFs (every 2nd frame) for docs/."""
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for mesh in meshes:
        sheet = out / f"{mesh}_{sheet_name}.png"
        if sheet.exists():
            image = Image.open(sheet).convert("RGB")
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
            image.quantize(colors).save(dest / sheet.name, optimize=True)
            written.append(dest / sheet.name)
        gif = out / f"{mesh}_turntable.gif"
        if gif.exists():
            source = Image.open(gif)
            frames = []
            for i in range(0, source.n_frames, 2):
                source.seek(i)
                frames.append(source.convert("RGB").quantize(colors))
            frames[0].save(dest / gif.name, save_all=True, append_images=frames[1:], duration=200, loop=0,
                           optimize=True)
            written.append(dest / gif.name)
    return written


def report(out: Path, meshes: list[str], configs: list[str], clip_weights: str | None, pictures: bool = True) -> dict:
    results = collect(out, meshes, configs, clip_weights)
    if pictures:
        for mesh in meshes:
            sheet, gif = contact_sheet(out, mesh, results), turntable_gif(out, mesh)
            results.setdefault("pictures", {})[mesh] = {"sheet": str(sheet) if sheet else None,
                                                       "turntable": str(gif) if gif else None}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    devices = sorted({str(r.get("device")) for r in results["rows"] if r["status"] == "measured"})
    text = ["# Quality suite", "",
            f"Held-out evaluation: {EVAL_VIEWS} orbit views at {EVAL_SIZE} px never used for optimisation, "
            "tolerance 2 px; F from precision vs Freestyle visible + hidden lines and recall vs visible lines. "
            f"Backend device(s): {', '.join(devices) or '-'}. Runtime: wall time of `python -m backend run`.", "",
            table_markdown(results), "", "## The issue's checks", "", summary_markdown(results)]
    (out / "TABLE.md").write_text("\n".join(text))
    return results


# --- command line --------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default=",".join(MESHES), help=f"comma-separated (default all: {','.join(MESHES)})")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help=f"comma-separated (default: {','.join(DEFAULT_CONFIGS)}; "
                             f"experiments: {','.join(EXPERIMENTS)})")
    parser.add_argument("--out", default=str(REPO / "out" / "quality"))
    parser.add_argument("--iterations", type=int, default=None, help="default: the project's default")
    parser.add_argument("--clip-weights", default=None, help="CLIP checkpoint file or open_clip cache folder")
    parser.add_argument("--eval-clip-weights", default=None,
                        help=f"weights file or cache folder of {EVAL_CLIP_MODEL} (openai): adds a CLIP similarity "
                             "to every row, scored with another backbone than the training one")
    parser.add_argument("--stage", choices=("all", "prepare", "run", "report"), default="all")
    parser.add_argument("--python", default=None, help="backend Python (default: .venv/bin/python)")
    parser.add_argument("--jobs", type=int, default=1, help="backend runs at a time (default 1: be frugal)")
    parser.add_argument("--force", action="store_true", help="rerun configurations that have results")
    parser.add_argument("--no-pictures", action="store_true")
    parser.add_argument("--docs", default=None, help="small copies of the pictures for docs/")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    meshes = [m for m in args.meshes.split(",") if m]
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"unknown configuration '{c}' (known: {', '.join(CONFIGS)})")
    for m in meshes:
        mesh_path(m) if args.stage in ("all", "prepare") else None
    venv = REPO / ".venv" / "bin" / "python"
    python = args.python or (str(venv) if venv.exists() else sys.executable)

    if args.stage in ("all", "prepare"):
        for mesh in meshes:
            prepare_mesh(mesh, out)
    if args.stage in ("all", "run"):
        clip_ok = bool(args.clip_weights) and Path(args.clip_weights).exists()
        for mesh in meshes:
            if not (out / mesh / "job" / EVAL_NPZ).exists():
                raise SystemExit(f"{out / mesh / 'job'}: no cached job folder; run with --stage prepare first")
        tasks = []  # configuration-major: an interrupted suite still has the first comparisons on every mesh
        for config in configs:
            if CONFIGS[config][2] and not clip_ok:
                continue
            for mesh in meshes:
                tasks.append((mesh, config, config_settings(config, args.iterations, args.clip_weights)))
        if args.eval_clip_weights and not Path(args.eval_clip_weights).exists():
            raise SystemExit(f"--eval-clip-weights {args.eval_clip_weights}: no such file or folder")
        eval_args = tuple(eval_clip_args(args.eval_clip_weights))
        if args.jobs <= 1:
            for mesh, config, settings in tasks:
                run_config(python, out / mesh / "job", out, mesh, config, settings, args.force, eval_args)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(lambda t: run_config(python, out / t[0] / "job", out, t[0], t[1], t[2], args.force,
                                                   eval_args), tasks))
    if args.stage in ("all", "report"):
        if args.stage == "all" and "bpy" in sys.modules:
            # pictures need torch (the backend renderer) and PIL: never in the process that imported bpy
            cmd = [python, str(Path(__file__).resolve()), "--stage", "report", "--out", str(out),
                   "--meshes", ",".join(meshes), "--configs", ",".join(configs)]
            if args.clip_weights:
                cmd += ["--clip-weights", args.clip_weights]
            if args.no_pictures:
                cmd.append("--no-pictures")
            if args.docs:
                cmd += ["--docs", args.docs]
            return subprocess.call(cmd)
        report(out, meshes, configs, args.clip_weights, pictures=not args.no_pictures)
        if args.docs:
            for path in doc_pictures(out, meshes, Path(args.docs)):
                log(f"docs picture {path} ({path.stat().st_size // 1024} KB)")
        log(f"wrote {out / 'results.json'} and {out / 'TABLE.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
