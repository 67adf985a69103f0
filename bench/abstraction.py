"""Strokes Shown against runs made at that count: does the first N of a sketch read as well?

Each mesh is sketched by the headless command at its defaults (16 strokes), and again with
``--curves N`` for each N of ``--counts``. The 16-stroke sketch's first N strokes (its stored order,
most important first: what the Strokes Shown slider draws) and the N-stroke run are scored on the
same 24 evaluation views (Freestyle's lines), as Evaluate scores a sketch showing N strokes.

    .venv/bin/python bench/abstraction.py [--meshes spot,duck] [--counts 4,8,12] [--out out/abstraction]
          [-- --abstraction 1]     (flags after -- go to every run)

Prints a table of held-out F per mesh (first N | run at N | difference) and the mean difference per
N, and writes ``results.json`` in ``--out``; a mesh with results there is not run again.
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

import quality  # noqa: E402 - the suite's meshes and importer
import target_speed  # noqa: E402 - the evaluation views of a mesh and the held-out F of a job

FULL = 16


def log(message: str) -> None:
    print(f"[abstraction {time.strftime('%H:%M:%S')}] {message}", flush=True)


EXTRA: list[str] = []  # flags after -- on the command line, for every run


def sketch(name: str, curves: int, out: Path) -> Path:
    """One headless run at the defaults with ``curves`` strokes; its job folder."""
    folder = out / name / f"run_{curves}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [str(REPO / ".venv" / "bin" / "python"), str(REPO / "bin" / "splatsketch"),
               "--input", str(quality.mesh_path(name)), "--curves", str(curves),
               "--output", str(folder / "sketch.blend"), "--job-dir", str(folder / "jobs"), *EXTRA]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} ({curves} strokes): the command failed with {done.returncode}:\n"
                         f"{done.stderr[-2000:]}")
    return next((folder / "jobs").glob("*/result.npz")).parent


def first_strokes(job: Path, count: int, dest: Path) -> Path:
    """A job folder holding the first ``count`` strokes of ``job``'s result (and its mesh)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with np.load(job / "result.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["control_points"], arrays["widths"] = arrays["control_points"][:count], arrays["widths"][:count]
    np.savez(dest / "result.npz", **arrays)
    for name in ("job.json", "mesh.npz"):
        if (job / name).exists():
            shutil.copy(job / name, dest / name)
    return dest


def run_mesh(name: str, counts: list[int], out: Path) -> dict:
    path = out / name / "results.json"
    if path.exists():
        return json.loads(path.read_text())
    views = target_speed.eval_views(name, out)
    log(f"{name}: {FULL} strokes")
    full = sketch(name, FULL, out)
    result = {"full": target_speed.held_out_f(str(full), views), "counts": {}}
    for count in counts:
        log(f"{name}: {count} strokes")
        shown = target_speed.held_out_f(str(first_strokes(full, count, out / name / f"first_{count}")), views)
        run = target_speed.held_out_f(str(sketch(name, count, out)), views)
        result["counts"][str(count)] = {"first": shown, "run": run}
        log(f"{name} {count}: first {shown:.4f}, run {run:.4f}")
    path.write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default=",".join(quality.MESHES), help="comma-separated (default: all ten)")
    parser.add_argument("--counts", default="4,8,12")
    parser.add_argument("--out", default=str(REPO / "out" / "abstraction"))
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        EXTRA[:] = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    args = parser.parse_args(argv)
    out, counts = Path(args.out), [int(c) for c in args.counts.split(",")]
    results = {}
    for name in [m for m in args.meshes.split(",") if m]:
        quality.mesh_path(name)
        results[name] = run_mesh(name, counts, out)
    head = "| mesh | F at 16 | " + " | ".join(f"first {c} | run at {c} | diff" for c in counts) + " |"
    rows = [head, "|" + "---|" * (2 + 3 * len(counts))]
    for name, r in results.items():
        cells = []
        for c in counts:
            first, run = r["counts"][str(c)]["first"], r["counts"][str(c)]["run"]
            cells.append(f"{first:.4f} | {run:.4f} | {first - run:+.4f}")
        rows.append(f"| {name} | {r['full']:.4f} | " + " | ".join(cells) + " |")
    print("\n".join(rows))
    for c in counts:
        diffs = [r["counts"][str(c)]["first"] - r["counts"][str(c)]["run"] for r in results.values()]
        print(f"{c} strokes: first-N minus run-at-N, mean {statistics.mean(diffs):+.4f}, "
              f"mean |diff| {statistics.mean(abs(d) for d in diffs):.4f}, worst {min(diffs):+.4f}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
