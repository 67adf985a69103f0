"""The defaults against a pinned single-cubic baseline: configurations x stroke counts x seeds on the suite's meshes.

Runs through ``bench/quality.py`` (its cached job folders, its backend runs and its held-out scoring:
24 orbit views at 256 px never used for optimisation) and writes ``<out>/STROKES.md``: per stroke count,
per mesh, the mean over seeds of the held-out mean F, the per-view minimum F, the looping strokes (the
worst sketch) and the wall time of ``python -m backend run``, for a baseline and a candidate side by
side; then one row per ablation (the candidate with one part undone); then contact sheets of both.

    .venv/bin/python bench/quality.py --stage prepare            # once: the job folders
    .venv/bin/python bench/strokes.py --jobs 2                    # legacy vs defaults, 16 strokes, 3 seeds
    .venv/bin/python bench/strokes.py --curves 8,32 --seeds 0     # the abstraction levels
    .venv/bin/python bench/strokes.py --ablations --seeds 0       # one row per part
    .venv/bin/python bench/strokes.py --stage report --curves 8,16,32 --ablations

A variant of configuration C with K strokes and seed S runs in ``<out>/<mesh>/C@kKsS`` (C itself for
16 strokes, seed 0, so the quality suite's own rows are shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402 - after the path set-up

from contract.settings import GEOMETRY_ONLY_WEIGHTS  # noqa: E402

BASELINE, CANDIDATE = "legacy", "defaults"
# One part of the defaults undone at a time: 1 segments, 2 loop terms, 3 feature-line starts, 4 re-seeding.
ABLATIONS = {
    "abl_one_segment": ({"segments": 1}, "part 1 undone: one cubic per stroke"),
    "abl_three_segments": ({"segments": 3}, "part 1 at 3 segments per stroke"),
    "abl_no_loop_terms": ({"losses": {k: v for k, v in GEOMETRY_ONLY_WEIGHTS.items()
                                      if k not in ("turning", "coiling")}},
                          "part 2 undone: neither the turning nor the coiling term"),
    "abl_no_coiling": ({"losses": {k: v for k, v in GEOMETRY_ONLY_WEIGHTS.items() if k != "coiling"}},
                       "part 2 without the coiling term (turning alone, three quarters of a turn per stroke)"),
    "abl_surface_init": ({"init": "surface"}, "part 3 undone: surface initialisation"),
    "abl_plain_cover": ({"cover_balance": 0.0}, "part 3's cover counting line pixels, not balancing the views"),
    "abl_no_reseed": ({"reseed": False}, "part 4 undone: no re-seeding after pruning"),
    "abl_no_f_prune": ({"prune_f_gain": 0.0}, "pruning without the line-F judge (the loss's leave-one-out alone)"),
}
for _name, (_override, _what) in ABLATIONS.items():
    quality.CONFIGS[_name] = (_override, "train", False, _what)


def variant(config: str, curves: int, seed: int) -> str:
    return config if (curves, seed) == (16, 0) else f"{config}@k{curves}s{seed}"


def register(config: str, curves: int, seed: int) -> str:
    """Add the variant to the suite's configurations (so its folder, settings and scoring are the suite's)."""
    name = variant(config, curves, seed)
    override, views, clip, what = quality.CONFIGS[config]
    quality.CONFIGS[name] = ({**override, "curves": curves, "seed": seed}, views, clip,
                             f"{what} ({curves} strokes, seed {seed})")
    return name


def _metrics(out: Path, mesh: str, name: str) -> dict | None:
    folder = out / mesh / name
    try:
        stamp = json.loads((folder / "suite.json").read_text())
        metrics = json.loads((folder / quality.METRICS_JSON).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("error"):
        return None
    return {**metrics, "runtime_s": stamp.get("runtime_s")}


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


def summary(out: Path, mesh: str, config: str, curves: int, seeds: list[int]) -> dict | None:
    runs = [m for s in seeds if (m := _metrics(out, mesh, variant(config, curves, s)))]
    if not runs:
        return None
    f = [r["f_mean"] for r in runs]
    return {"f": _mean(f), "f_sd": statistics.pstdev(f) if len(f) > 1 else 0.0,
            "f_min": _mean(r["f_min"] for r in runs),
            "loops": max(r.get("looping_strokes", 0) for r in runs), "strokes": _mean(r["curves"] for r in runs),
            "turning": _mean(r.get("turning_mean") for r in runs), "s": _mean(r["runtime_s"] for r in runs),
            "seeds": len(runs)}


def comparison_table(out: Path, meshes: list[str], curves: int, seeds: list[int]) -> tuple[str, dict]:
    head = (f"| mesh | {BASELINE}: F mean (sd) / min / loops / strokes / s | {CANDIDATE}: F mean (sd) / min / loops / "
            "strokes / s | dF | min >= 0.85 mean | loops <= 1 |")
    lines, totals = [head, "|" + "---|" * 7], {"df": [], "base_s": [], "cand_s": []}

    def cell(x):
        return (f"{x['f']:.3f} ({x['f_sd']:.3f}) / {x['f_min']:.3f} / {x['loops']} / {x['strokes']:.1f} / {x['s']:.0f}"
                if x else "not run")

    for mesh in meshes:
        b, c = summary(out, mesh, BASELINE, curves, seeds), summary(out, mesh, CANDIDATE, curves, seeds)
        df = f"{c['f'] - b['f']:+.3f}" if b and c else "-"
        if b and c:
            totals["df"].append(c["f"] - b["f"])
            totals["base_s"].append(b["s"])
            totals["cand_s"].append(c["s"])
        spread = ("yes" if c["f_min"] >= 0.85 * c["f"] else "NO") if c else "-"
        loops = ("yes" if c["loops"] <= 1 else "NO") if c else "-"
        lines.append(f"| {mesh} | {cell(b)} | {cell(c)} | {df} | {spread} | {loops} |")
    if totals["df"]:
        lines.append(f"| **mean** | | | **{_mean(totals['df']):+.3f}** | | |")
        lines.append("")
        lines.append(f"Wall time, sum over meshes (mean of seeds): {BASELINE} {sum(totals['base_s']):.0f} s, "
                     f"{CANDIDATE} {sum(totals['cand_s']):.0f} s "
                     f"({sum(totals['cand_s']) / max(sum(totals['base_s']), 1e-9):.2f}x).")
    return "\n".join(lines) + "\n", totals


def ablation_table(out: Path, meshes: list[str], seeds: list[int]) -> str:
    names = [CANDIDATE, *ABLATIONS]
    lines = ["| mesh | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    means = {n: [] for n in names}
    for mesh in meshes:
        cells = []
        for name in names:
            x = summary(out, mesh, name, 16, seeds)
            cells.append(f"{x['f']:.3f} / {x['f_min']:.3f} / {x['loops']}" if x else "not run")
            if x:
                means[name].append(x["f"])
        lines.append(f"| {mesh} | " + " | ".join(cells) + " |")
    lines.append("| **mean F** | " + " | ".join(f"**{_mean(means[n]):.3f}**" for n in names) + " |")
    return ("F mean / F min / looping strokes, 16 strokes; each ablation undoes one part of the defaults:\n"
            + "; ".join(f"`{k}`: {v[1]}" for k, v in ABLATIONS.items()) + ".\n\n" + "\n".join(lines) + "\n")


def sheets(out: Path, meshes: list[str]) -> list[Path]:
    """Per mesh: object, lines, the baseline's and the candidate's sketch (16 strokes, seed 0)."""
    results = quality.collect(out, meshes, [BASELINE, CANDIDATE], None)
    return [p for mesh in meshes
            if (p := quality.contact_sheet(out, mesh, results, configs=(BASELINE, CANDIDATE), name="strokes"))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default=",".join(quality.MESHES))
    parser.add_argument("--curves", default="16", help="comma-separated stroke counts (default 16)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--ablations", nargs="?", const="all", default=None,
                        help="also the one-part-undone rows (16 strokes): all, or a comma-separated list of them")
    parser.add_argument("--no-compare", action="store_true", help="only the ablations")
    parser.add_argument("--stage", choices=("all", "run", "report"), default="all")
    parser.add_argument("--out", default=str(REPO / "out" / "quality"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"))
    parser.add_argument("--docs", default=None, help="small copies of the sheets of these meshes' (comma-separated) "
                                                     "for docs/images/quality/")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    meshes = [m for m in args.meshes.split(",") if m]
    curves = [int(k) for k in args.curves.split(",") if k]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    ablations = [] if not args.ablations else list(ABLATIONS) if args.ablations == "all" else args.ablations.split(",")
    if unknown := [a for a in ablations if a not in ABLATIONS]:
        raise SystemExit(f"unknown ablation(s) {', '.join(unknown)}; choose from {', '.join(ABLATIONS)}")
    for mesh in meshes:
        if not (out / mesh / "job" / quality.EVAL_NPZ).exists():
            raise SystemExit(f"{out / mesh / 'job'}: no cached job folder; run bench/quality.py --stage prepare first")
    # Seed-major, then mesh, then configuration: an interrupted run still has every mesh at the first
    # seed, and with --jobs 2 a mesh's baseline and candidate run side by side, under the same load.
    tasks = []
    for seed in seeds:
        for k in curves:
            names = [register(c, k, seed) for c in ([] if args.no_compare else [BASELINE, CANDIDATE])
                     + (ablations if k == 16 else [])]
            tasks += [(mesh, name) for mesh in meshes for name in names]
    if args.stage in ("all", "run"):
        def run(task):
            mesh, name = task
            return quality.run_config(args.python, out / mesh / "job", out, mesh, name,
                                      quality.config_settings(name, None, None))

        with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
            list(pool.map(run, tasks))
    if args.stage in ("all", "report"):
        text = ["# Strokes: baseline vs candidate (bench/strokes.py)", "",
                f"Held-out: {quality.EVAL_VIEWS} orbit views at {quality.EVAL_SIZE} px, tolerance 2 px. "
                f"Seeds {seeds}; F mean is the mean over seeds (sd across seeds), F min the mean over seeds of "
                "the per-view minimum, loops the most looping strokes in any one sketch, s the mean wall time "
                "of `python -m backend run`.", ""]
        for k in curves:
            table, _ = comparison_table(out, meshes, k, seeds)
            text += [f"## {k} strokes", "", table]
        if args.ablations:
            text += ["## Ablations", "", ablation_table(out, meshes, seeds)]
        (out / "STROKES.md").write_text("\n".join(text))
        for path in sheets(out, meshes):
            quality.log(f"sheet {path}")
        quality.log(f"wrote {out / 'STROKES.md'}")
        if args.docs:
            for path in quality.doc_pictures(out, args.docs.split(","), REPO / "docs" / "images" / "quality",
                                             width=720, sheet_name="strokes"):
                if path.suffix == ".png":
                    quality.log(f"docs picture {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
