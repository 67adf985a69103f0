"""How quickly a headless run stops on a large capture.

    .venv/bin/python bench/stop_latency.py [--mesh duck] [--frames 20000] [--size 800] [--kills 2,6,12]

Renders a capture of ``--mesh`` (48 training and 8 test pictures at ``--size`` px, with
bench/make_capture.py) and lists its training frames over and over up to ``--frames`` entries, as a
long video capture would. Then two measurements:

1. In this process, the capture is read and its job folder prepared exactly as a run does (the
   preparing steps with a stop check between each, as ``jobs.runner`` runs them), and every stop check
   is time-stamped: the longest stretch between two checks is how long a stop can wait. It prints the
   five longest, with where each began and ended.
2. ``bin/splatsketch --images CAPTURE`` is started, SIGTERM is sent after each of ``--kills`` seconds (one
   run each), and the time until the process has exited is printed.

Goal: no stretch over 1 s, every exit within a few seconds of SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_capture import render_capture  # noqa: E402
from quality import REPO, _scene_module, import_joined, mesh_path  # noqa: E402


def make_capture(mesh: str, folder: Path, frames: int, size: int) -> None:
    render_capture(import_joined(mesh_path(mesh)), folder, 48, 8, size)
    path = folder / "transforms_train.json"
    data = json.loads(path.read_text())
    data["frames"] = [data["frames"][i % len(data["frames"])] for i in range(frames)]
    path.write_text(json.dumps(data))


def _where() -> str:
    """The caller of the stop check (file:line function), for the report."""
    frame = traceback.extract_stack(limit=3)[0]
    return f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"


def check_gaps(folder: Path) -> list[tuple[float, str, str]]:
    """Read the capture and prepare its job with every stop check time-stamped; the gaps, longest first."""
    capture, capture_job = _scene_module("pictures.capture"), _scene_module("scene.capture_job")
    presets = _scene_module("contract.presets")
    stamps: list[tuple[float, str]] = []

    def stamped(where: str = "") -> None:
        stamps.append((time.perf_counter(), where or _where()))

    for name in ("pictures.capture", "pictures.visual_hull", "pictures.line_detector"):
        _scene_module(name).check_stop = stamped  # the picture code's own loops (frames, hull views, line growing)
    capture_job.check_stop = stamped  # and within each picture's decoding and resizing
    stamped()
    cap = capture.read_capture(str(folder))
    with tempfile.TemporaryDirectory() as job_dir:
        steps = capture_job.iter_write_capture_job(job_dir, cap, presets.apply_preset("preview"))
        step = "start"
        while True:  # as jobs.runner's start(): a stop check before each preparing step
            stamped(f"preparing step after {step}")
            try:
                done, total = next(steps)
            except StopIteration:
                break
            step = f"{done}/{total}"
    stamped()
    gaps = [(b[0] - a[0], a[1], b[1]) for a, b in zip(stamps, stamps[1:])]
    print(f"{len(stamps)} stop checks over {stamps[-1][0] - stamps[0][0]:.1f} s")
    return sorted(gaps, reverse=True)


def exit_after_sigterm(folder: Path, after_s: float, out: Path) -> tuple[float, int, str]:
    """Seconds from SIGTERM (sent ``after_s`` into a run) to the process's exit, its exit status and
    the last line it printed."""
    command = [sys.executable, str(REPO / "bin" / "splatsketch"), "--images", str(folder), "--preset", "preview",
               "--no-clip", "--output", str(out / "sketch.blend")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(after_s)
    sent = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    lines = [line for line in output.splitlines() if line.strip()]
    return time.perf_counter() - sent, process.returncode, lines[-1] if lines else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh", default="duck", help="a quality-suite mesh name (default duck)")
    parser.add_argument("--frames", type=int, default=20000, help="training frames listed (default 20000)")
    parser.add_argument("--size", type=int, default=800, help="picture size in px (default 800)")
    parser.add_argument("--kills", default="2,6,12", help="seconds into a run to send SIGTERM, one run each")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stop-latency-") as tmp:
        folder = Path(tmp) / "capture"
        started = time.perf_counter()
        make_capture(args.mesh, folder, args.frames, args.size)
        print(f"capture: {args.frames} training frames of {args.mesh} at {args.size} px "
              f"(rendered in {time.perf_counter() - started:.0f} s)")
        gaps = check_gaps(folder)
        print("longest stretches between stop checks:")
        for seconds, began, ended in gaps[:5]:
            print(f"  {seconds:6.3f} s  from {began}  to {ended}")
        worst_exit = 0.0
        for after in (float(s) for s in args.kills.split(",") if s):
            seconds, status, last = exit_after_sigterm(folder, after, Path(tmp))
            worst_exit = max(worst_exit, seconds)
            print(f"SIGTERM at {after:4.1f} s: exited in {seconds:.2f} s, status {status}: {last}")
        print(f"longest stretch {gaps[0][0]:.3f} s; slowest exit after SIGTERM {worst_exit:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
