"""Training targets drawn from the mesh against Freestyle's: wall seconds per phase and held-out F.

Each mesh is sketched by the headless command at its defaults twice, ``--targets freestyle`` and
``--targets mesh``, and both sketches are scored on the same 24 evaluation views (Freestyle's lines,
rendered once per mesh here), so the two columns differ only in where the training lines came from.

    .venv/bin/python bench/target_speed.py [--meshes spot,duck] [--out out/targets]
          [--picture docs/images/targets.png]

Prints a table (phases from the command's ``--json``: start, targets, features, optimisation,
write-back; total is the command's wall time) and writes ``results.json`` in ``--out``. A mesh
whose results are there is not run again (``--rerun mesh`` reruns that mode). ``--picture`` draws training-view
line images of four meshes, Freestyle's beside the mesh's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import quality  # noqa: E402 - the suite's meshes, importer and evaluation views

MODES = ("freestyle", "mesh")
PHASES = ("start", "targets", "features", "optimisation", "write_back")
PICTURE_MESHES = ("duck", "plane", "lamp", "wicker_chair")
PICTURE_VIEWS = (0, 7, 15)


def log(message: str) -> None:
    print(f"[targets {time.strftime('%H:%M:%S')}] {message}", flush=True)


def eval_views(name: str, out: Path) -> Path:
    """``<out>/<name>/eval.npz``: the evaluation's 24 Freestyle views, rendered once per mesh."""
    path = out / name / "eval.npz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _, targets, mesh, evaluation = quality._scene_modules()
    import bpy

    obj = quality.import_joined(quality.mesh_path(name))
    vertices, _ = mesh.evaluated_mesh_world(obj, bpy.context.evaluated_depsgraph_get())
    center, radius = mesh.bounding_sphere(vertices)
    cams = evaluation.eval_cameras(quality.EVAL_VIEWS, quality.EVAL_SIZE, quality.EVAL_PHASE)
    targets.drain(evaluation.iter_write_views(str(path), obj, *cams, quality.EVAL_SIZE, center, radius))
    return path


def sketch(name: str, mode: str, out: Path) -> dict:
    """One headless run at the defaults; its phases, wall seconds and job folder."""
    folder = out / name / mode
    shutil.rmtree(folder, ignore_errors=True)  # a rerun starts from nothing
    folder.mkdir(parents=True)
    report = folder / "run.json"
    command = [str(REPO / ".venv" / "bin" / "python"), str(REPO / "bin" / "splatsketch"),
               "--input", str(quality.mesh_path(name)), "--targets", mode, "--output", str(folder / "sketch.blend"),
               "--json", str(report), "--job-dir", str(folder / "jobs")]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} ({mode}): the command failed with {done.returncode}:\n{done.stderr[-2000:]}")
    asset = json.loads(report.read_text())["assets"][0]
    job = next((folder / "jobs").glob("*/result.npz")).parent
    return {"wall": wall, "phases": asset.get("phases", {}), "job": str(job)}


def held_out_f(job: str, views: Path) -> float:
    """Mean F on the evaluation views (``python -m backend evaluate --views``)."""
    done = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "backend", "evaluate", job,
                           "--views", str(views)], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"evaluating {job} failed with {done.returncode}:\n{done.stderr[-2000:]}")
    return float(json.loads((Path(job) / "metrics.json").read_text())["f_mean"])


def run_mesh(name: str, out: Path, rerun: set) -> dict:
    """Both modes of one mesh; a mode with results is only run again when named in ``rerun``."""
    path = out / name / "results.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    todo = [mode for mode in MODES if mode not in result or mode in rerun]
    if not todo:
        return result
    views = eval_views(name, out)
    for mode in todo:
        log(f"{name}: sketching with {mode} targets")
        result[mode] = sketch(name, mode, out)
        result[mode]["f"] = held_out_f(result[mode]["job"], views)
        log(f"{name} {mode}: {result[mode]['wall']:.1f} s, F {result[mode]['f']:.4f}, {result[mode]['phases']}")
        path.write_text(json.dumps(result, indent=2))
    return result


def table(results: dict) -> str:
    head = "| mesh | targets | " + " | ".join(PHASES) + " | total s | held-out F |"
    rows = [head, "|" + "---|" * (len(PHASES) + 4)]
    for name, result in results.items():
        for mode in MODES:
            r = result[mode]
            phases = " | ".join(f"{r['phases'].get(p, 0.0):.1f}" for p in PHASES)
            rows.append(f"| {name} | {mode} | {phases} | {r['wall']:.1f} | {r['f']:.4f} |")
    return "\n".join(rows)


def summary(results: dict) -> str:
    def median(mode, key):
        return statistics.median(r[mode]["phases"].get(key, 0.0) if key else r[mode]["wall"] for r in results.values())

    ratio = sum(r["mesh"]["wall"] for r in results.values()) / sum(r["freestyle"]["wall"] for r in results.values())
    diffs = {name: r["mesh"]["f"] - r["freestyle"]["f"] for name, r in results.items()}
    worst = min(diffs, key=diffs.get)
    return "\n".join([
        f"meshes: {len(results)}",
        f"targets, median s: freestyle {median('freestyle', 'targets'):.1f}, mesh {median('mesh', 'targets'):.1f}",
        f"total wall, median s: freestyle {median('freestyle', None):.1f}, mesh {median('mesh', None):.1f}; "
        f"sum ratio mesh/freestyle {ratio:.2f}",
        f"held-out F mean: freestyle {statistics.mean(r['freestyle']['f'] for r in results.values()):.4f}, "
        f"mesh {statistics.mean(r['mesh']['f'] for r in results.values()):.4f}; "
        f"largest drop {diffs[worst]:+.4f} ({worst})",
    ])


def picture(results: dict, out: Path, dest: Path) -> None:
    """Training-view lines, Freestyle | mesh | both over each other (black both, red Freestyle only,
    blue mesh only), for four meshes and three views."""
    from PIL import Image

    from backend.mesh_targets import mesh_views  # torch: only when drawing
    rows = []
    for name in [m for m in PICTURE_MESHES if m in results]:
        job = Path(results[name]["mesh"]["job"])
        with np.load(Path(results[name]["freestyle"]["job"]) / "views.npz") as data:
            freestyle = data["lines"] > 127
        with np.load(job / "views.npz") as data, np.load(job / "mesh.npz") as mesh:
            size = int(round(2 * float(data["Ks"][0, 0, 2])))  # the cameras' centred principal point
            drawn = mesh_views(mesh["vertices"], mesh["faces"], data["viewmats"][list(PICTURE_VIEWS)],
                               data["Ks"][list(PICTURE_VIEWS)], size, size)["lines"] > 127
        for i, v in enumerate(PICTURE_VIEWS):
            tiles = []
            for mask in (freestyle[v], drawn[i]):
                tile = np.full(mask.shape + (3,), 255, np.uint8)
                tile[mask] = 0
                tiles.append(tile)
            both = np.full(mask.shape + (3,), 255, np.uint8)
            both[freestyle[v] & ~drawn[i]] = (220, 30, 30)
            both[drawn[i] & ~freestyle[v]] = (40, 90, 255)
            both[freestyle[v] & drawn[i]] = 0
            tiles.append(both)
            rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=180) for t in tiles], 1))
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(dest)
    log(f"picture: {dest}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default=",".join(quality.MESHES), help="comma-separated (default: all ten)")
    parser.add_argument("--out", default=str(REPO / "out" / "targets"))
    parser.add_argument("--rerun", default="", help=f"comma-separated modes ({','.join(MODES)}) to run again where "
                                                   "they have results")
    parser.add_argument("--picture", default=None, metavar="PNG", help="line images side by side, written here")
    args = parser.parse_args(argv)
    out = Path(args.out)
    results = {}
    for name in [m for m in args.meshes.split(",") if m]:
        quality.mesh_path(name)
        results[name] = run_mesh(name, out, set(args.rerun.split(",")) - {""})
    print(table(results))
    print(summary(results))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if args.picture:
        picture(results, out, Path(args.picture))
    return 0


if __name__ == "__main__":
    sys.exit(main())
