"""Keep my strokes: keep a sketch's most important strokes, make the others again, and compare.

For each mesh, a 16-stroke sketch at the defaults (made here, or the one ``bench/abstraction.py``
left in the same ``--out``) has its first ``--keep`` strokes kept and the others made again by the
headless command (``--keep-strokes SKETCH --keep 0-3``). It checks that the kept splines are the
same to the last bit (every coordinate and handle type, read from both .blend files) and scores the
whole new sketch and the original on the same 24 evaluation views (Freestyle's lines).

    .venv/bin/python bench/keep_strokes.py [--meshes duck,spot,teapot,fish] [--keep 4] [--out out/abstraction]
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

import abstraction  # noqa: E402 - the 16-stroke runs and their folders
import quality  # noqa: E402 - the suite's meshes
import target_speed  # noqa: E402 - the evaluation views and the held-out F of a job


def log(message: str) -> None:
    print(f"[keep {time.strftime('%H:%M:%S')}] {message}", flush=True)


def spline_bits(blend: Path) -> tuple[str, list]:
    """The sketch's name and every number of its splines, as stored, read with Blender itself."""
    import bpy

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    sketch = next(o for o in bpy.data.objects if o.type == "CURVE" and "splatsketch_source" in o)
    return sketch.name, [[(tuple(p.co), tuple(p.handle_left), tuple(p.handle_right), p.handle_left_type,
                           p.handle_right_type, p.radius, p.tilt) for p in s.bezier_points]
                         for s in sketch.data.splines]


def run_mesh(name: str, keep: int, out: Path) -> dict:
    full = out / name / f"run_{abstraction.FULL}"
    if not (full / "sketch.blend").exists():
        abstraction.sketch(name, abstraction.FULL, out)
    views = target_speed.eval_views(name, out)
    full_job = next((full / "jobs").glob("*/result.npz")).parent
    sketch_name, before = spline_bits(full / "sketch.blend")
    folder = out / name / f"keep_{keep}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [str(REPO / ".venv" / "bin" / "python"), str(REPO / "bin" / "splatsketch"), str(full / "sketch.blend"),
               "--keep-strokes", sketch_name, "--keep", f"0-{keep - 1}", "--output", str(folder / "sketch.blend"),
               "--job-dir", str(folder / "jobs")]
    log(f"{name}: keeping {keep} of {len(before)} strokes")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: --keep-strokes failed with {done.returncode}:\n{done.stderr[-2000:]}")
    _, after = spline_bits(folder / "sketch.blend")
    identical = after[:keep] == before[:keep]
    # the whole new sketch, scored: the kept strokes (the first rows of the original result) and the new ones
    job = next((folder / "jobs").glob("*/result.npz")).parent
    whole = folder / "whole"
    whole.mkdir()
    with np.load(full_job / "result.npz") as original, np.load(job / "result.npz") as new:
        points = np.concatenate([original["control_points"][:keep], new["control_points"]])
        widths = np.concatenate([original["widths"][:keep], new["widths"]])
    np.savez(whole / "result.npz", control_points=points, widths=widths)
    for file in ("job.json", "mesh.npz"):
        shutil.copy(job / file, whole / file)
    result = {"identical": identical, "strokes": len(after), "f_full": target_speed.held_out_f(str(full_job), views),
              "f_kept": target_speed.held_out_f(str(whole), views)}
    log(f"{name}: kept identical {identical}, F full run {result['f_full']:.4f}, kept + new {result['f_kept']:.4f}")
    (folder / "results.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default="duck,spot,teapot,fish", help="comma-separated")
    parser.add_argument("--keep", type=int, default=4)
    parser.add_argument("--out", default=str(REPO / "out" / "abstraction"))
    args = parser.parse_args(argv)
    out, results = Path(args.out), {}
    for name in [m for m in args.meshes.split(",") if m]:
        quality.mesh_path(name)
        results[name] = run_mesh(name, args.keep, out)
    print("| mesh | kept strokes identical | strokes | F full run | F kept + new | diff |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['identical']} | {r['strokes']} | {r['f_full']:.4f} | {r['f_kept']:.4f} | "
              f"{r['f_kept'] - r['f_full']:+.4f} |")
    diffs = [r["f_kept"] - r["f_full"] for r in results.values()]
    print(f"mean diff {statistics.mean(diffs):+.4f}, worst {min(diffs):+.4f}; "
          f"all identical: {all(r['identical'] for r in results.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
