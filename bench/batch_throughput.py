"""Assets per hour: one sequential `--input` run against bin/splatsketch-batch with 1 and N at a time.

    .venv/bin/python bench/batch_throughput.py [--meshes ../shared/data/meshes] [--jobs 1,2] [--out out/batch_bench]
        [--screenshot docs/images/batch_gallery.png] [-- SPLATSKETCH OPTIONS]   (default options: --no-clip --evaluate)

All runs use the same sources and settings, one after the other on this machine (nothing else should
run meanwhile). Prints one table (wall seconds, assets per hour, speed-up over sequential) and writes
it as JSON beside the outputs. ``--screenshot`` opens the last batch's index.html in headless
Chromium and saves what it shows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
sys.path.insert(0, REPO)

from batch.sources import expand  # noqa: E402


def timed(argv: list[str], log: str) -> tuple[float, int]:
    started = time.monotonic()
    with open(log, "w") as f:
        code = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode
    return time.monotonic() - started, code


def screenshot(page: str, png: str) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        print("no Chromium on PATH: no screenshot")
        return
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={os.path.abspath(png)}", "--window-size=1400,1500", f"file://{page}"],
                   capture_output=True, timeout=120)
    print(f"screenshot {png}")


def main() -> int:
    argv = sys.argv[1:]
    options = argv[argv.index("--") + 1:] if "--" in argv else ["--no-clip", "--evaluate"]
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--meshes", default=os.path.join(os.path.dirname(REPO), "shared", "data", "meshes"))
    p.add_argument("--jobs", default="1,2", help="comma-separated concurrent-task counts for the batch runs")
    p.add_argument("--out", default=os.path.join(REPO, "out", "batch_bench"))
    p.add_argument("--skip-sequential", action="store_true")
    p.add_argument("--screenshot", metavar="PNG")
    args = p.parse_args(argv)
    meshes = expand([args.meshes])
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    rows = []
    if not args.skip_sequential:
        seq = os.path.join(out, "sequential")
        os.makedirs(seq)
        cmd = [PYTHON, os.path.join(REPO, "bin", "splatsketch"), *[a for m in meshes for a in ("--input", m)],
               *options, "--output", os.path.join(seq, "sketches.blend"), "--preview", os.path.join(seq, "sheet.png"),
               "--json", os.path.join(seq, "metrics.json")]
        print(f"sequential: one process, {len(meshes)} x --input", flush=True)
        seconds, code = timed(cmd, os.path.join(seq, "log.txt"))
        rows.append({"mode": "sequential --input (one Blender)", "concurrent": 1, "seconds": seconds, "exit": code})
    for jobs in [int(j) for j in args.jobs.split(",")]:
        folder = os.path.join(out, f"batch_jobs{jobs}")
        cmd = [PYTHON, os.path.join(REPO, "bin", "splatsketch-batch"), *meshes, "--out", folder,
               "--jobs", str(jobs), *options]
        print(f"batch: {jobs} at a time", flush=True)
        os.makedirs(folder)
        seconds, code = timed(cmd, os.path.join(out, f"batch_jobs{jobs}.log"))
        rows.append({"mode": f"splatsketch-batch --jobs {jobs}", "concurrent": jobs, "seconds": seconds, "exit": code})
    base = rows[0]["seconds"] if rows and not args.skip_sequential else None
    print(f"\n{len(meshes)} assets ({', '.join(os.path.basename(m) for m in meshes)}); options: {' '.join(options)}; "
          f"{os.cpu_count()} CPUs\n")
    print(f"{'run':36s} {'wall s':>8s} {'assets/h':>9s} {'speed-up':>9s} {'exit':>5s}")
    for row in rows:
        row["assets_per_hour"] = round(len(meshes) * 3600 / row["seconds"], 1)
        row["speedup"] = round(base / row["seconds"], 2) if base else None
        speed = f"{row['speedup']:.2f}x" if row["speedup"] else "-"
        print(f"{row['mode']:36s} {row['seconds']:8.0f} {row['assets_per_hour']:9.1f} {speed:>9s} {row['exit']:5d}")
    with open(os.path.join(out, "throughput.json"), "w") as f:
        json.dump({"assets": meshes, "options": options, "cpus": os.cpu_count(), "runs": rows}, f, indent=2)
    if args.screenshot and rows and rows[-1]["mode"].startswith("splatsketch-batch"):
        screenshot(os.path.join(out, f"batch_jobs{rows[-1]['concurrent']}", "index.html"), args.screenshot)
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
