"""Sketches from pictures alone vs from the mesh, scored the same way: the mesh's Freestyle lines on
views neither run saw.

    .venv/bin/python bench/images_vs_mesh.py [--meshes teapot,duck] [--out out/images] [--jobs 2]
                                             [--views 48] [--test 24] [--size 400] [-- CLI FLAGS...]

Per mesh, each step cached under ``--out/<mesh>/`` (delete a folder to redo it):

1. ``capture/``: a 48-picture capture of the mesh (bench/make_capture.py; NeRF synthetic layout).
2. ``images/``: ``bin/splatsketch --images capture --no-clip --job-dir ...`` (the user's command, its
   default settings plus any CLI FLAGS), which keeps the job folder and its ``result.npz``.
3. ``job/`` (the quality suite's prepare stage: 24 + 8 views of the mesh at 224 px, ``eval.npz``: 24
   orbit views at 256 px with Freestyle lines) and ``mesh/``: the backend run on the mesh's own
   targets with exactly the settings of step 2 (read from its ``job.json``).
4. ``eval_images/`` and ``eval_mesh/``: ``python -m backend evaluate`` of each sketch on ``eval.npz``
   (the image sketch's curves mapped from the capture's normalised frame through world space into the
   mesh's), and ``images/evaluation``: the image sketch on the capture's own held-out pictures.

Prints and writes ``TABLE.md`` / ``results.json``: F from the mesh, F from pictures, their ratio (goal
>= 0.9), chamfer, worst view, wall time of each sketch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from contract.protocol import EVAL_NPZ, JOB_JSON, MESH_NPZ, METRICS_JSON, RESULT_NPZ, VIEWS_NPZ, write_npz  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from quality import MESHES  # noqa: E402


def log(message: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd: list[str], logfile: Path, env: dict) -> float:
    start = time.perf_counter()
    with open(logfile, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        code = subprocess.call([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if code:
        raise RuntimeError(f"exit {code}: {' '.join(map(str, cmd))} (see {logfile})")
    return time.perf_counter() - start


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def eval_folder(folder: Path, mesh_job: Path, control_points: np.ndarray, widths: np.ndarray) -> None:
    """A folder that scores ``control_points`` (the mesh job's normalised frame) on its eval.npz."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in (EVAL_NPZ, MESH_NPZ, JOB_JSON):
        _link(mesh_job / name, folder / name)
    write_npz(folder / RESULT_NPZ, control_points=control_points.astype(np.float32), widths=widths.astype(np.float32))


def to_frame(result: Path, source: dict, target: dict) -> tuple[np.ndarray, np.ndarray]:
    """Curves of ``result`` moved from one job's normalised frame into another's (through world space)."""
    with np.load(result, allow_pickle=False) as data:
        points, widths = data["control_points"].astype(np.float64), data["widths"].astype(np.float64)
    world = np.asarray(source["center"]) + source["radius"] * points
    scale = source["radius"] / target["radius"]
    return (world - np.asarray(target["center"])) / target["radius"], widths * scale


def one_mesh(name: str, out: Path, python: str, extra: list[str], args) -> dict:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    logfile = folder / "log.txt"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    capture = folder / "capture"
    if not (capture / "transforms_test.json").exists():
        run([python, "bench/make_capture.py", name, capture, "--views", args.views, "--test", args.test,
             "--size", args.size], logfile, env)
    images = folder / "images"
    timing_path = folder / "seconds.json"
    seconds = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    if not (images / name / RESULT_NPZ).exists() and not any(images.glob(f"*/{RESULT_NPZ}")):
        shutil.rmtree(images, ignore_errors=True)
        seconds["images"] = run([python, "bin/splatsketch", "--images", capture, "--no-clip", "--job-dir", images,
                                 "--evaluate", "--json", folder / "images.json", "--preview",
                                 folder / "images_sheet.png", *extra], logfile, env)
    image_job = next(images.glob(f"*/{RESULT_NPZ}")).parent
    image_meta = json.loads((image_job / JOB_JSON).read_text())
    mesh_job = folder / "job"
    if not (mesh_job / EVAL_NPZ).exists():
        run([python, "bench/quality.py", "--meshes", name, "--stage", "prepare", "--out", out], logfile, env)
    mesh_meta = json.loads((mesh_job / JOB_JSON).read_text())
    mesh_run = folder / "mesh"
    if not (mesh_run / RESULT_NPZ).exists():
        shutil.rmtree(mesh_run, ignore_errors=True)
        mesh_run.mkdir()
        for part in (VIEWS_NPZ, MESH_NPZ):
            _link(mesh_job / part, mesh_run / part)
        (mesh_run / JOB_JSON).write_text(json.dumps({**mesh_meta, "schema": image_meta["schema"],
                                                     "settings": image_meta["settings"]}), encoding="utf-8")
        seconds["mesh"] = run([python, "-m", "backend", "run", mesh_run], logfile, env)
    timing_path.write_text(json.dumps(seconds), encoding="utf-8")
    row = {"name": name, "seconds": seconds, "hull_radius": image_meta["source"]["radius"],
           "mesh_radius": mesh_meta["source"]["radius"]}
    for kind, result, meta in (("images", image_job / RESULT_NPZ, image_meta["source"]),
                               ("mesh", mesh_run / RESULT_NPZ, mesh_meta["source"])):
        target = folder / f"eval_{kind}"
        if not (target / METRICS_JSON).exists():
            eval_folder(target, mesh_job, *to_frame(result, meta, mesh_meta["source"]))
            run([python, "-m", "backend", "evaluate", target], logfile, env)
        metrics = json.loads((target / METRICS_JSON).read_text())
        row[kind] = {k: metrics[k] for k in ("f_mean", "f_min", "chamfer_px_mean", "precision_mean", "recall_mean",
                                              "looping_strokes") if k in metrics}
    own = image_job / "evaluation" / METRICS_JSON
    if own.exists():
        row["images_on_pictures"] = {k: json.loads(own.read_text())[k] for k in ("f_mean", "f_min")}
    row["ratio"] = row["images"]["f_mean"] / row["mesh"]["f_mean"]
    log(f"{name}: F from mesh {row['mesh']['f_mean']:.3f}, from pictures {row['images']['f_mean']:.3f} "
        f"(ratio {row['ratio']:.2f})")
    return row


def table(rows: list[dict]) -> str:
    lines = ["| mesh | F from mesh | F from pictures | ratio | worst view (mesh / pictures) | chamfer px (mesh / "
             "pictures) | F on held-out pictures | s (mesh / pictures) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m, i = r["mesh"], r["images"]
        own = r.get("images_on_pictures", {}).get("f_mean")
        lines.append(f"| {r['name']} | {m['f_mean']:.3f} | {i['f_mean']:.3f} | {r['ratio']:.2f} | {m['f_min']:.3f} / "
                     f"{i['f_min']:.3f} | {m['chamfer_px_mean']:.1f} / {i['chamfer_px_mean']:.1f} | "
                     f"{own:.3f} | {r['seconds'].get('mesh', 0):.0f} / {r['seconds'].get('images', 0):.0f} |"
                     if own is not None else
                     f"| {r['mesh']} | {m['f_mean']:.3f} | {i['f_mean']:.3f} | {r['ratio']:.2f} | - | - | - | - |")
    mean = lambda key: np.mean([r[key]["f_mean"] for r in rows])  # noqa: E731
    lines.append(f"| **mean** | {mean('mesh'):.3f} | {mean('images'):.3f} | "
                 f"{np.mean([r['ratio'] for r in rows]):.2f} (min {min(r['ratio'] for r in rows):.2f}) | | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default=",".join(MESHES))
    parser.add_argument("--out", default=str(REPO / "out" / "images"))
    parser.add_argument("--jobs", type=int, default=2, help="meshes at a time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per process (default 1)")
    parser.add_argument("--views", type=int, default=48)
    parser.add_argument("--test", type=int, default=24)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"))
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    names = [n for n in args.meshes.split(",") if n]
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda n: one_mesh(n, out, args.python, extra, args), names))
    text = table(rows)
    (out / "TABLE.md").write_text(text, encoding="utf-8")
    (out / "results.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(text)
    log(f"{len(rows)} meshes in {time.perf_counter() - start:.0f} s; {out / 'TABLE.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
