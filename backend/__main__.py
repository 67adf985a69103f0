"""Command line of the backend: ``python -m backend run JOB_DIR`` and ``python -m backend check``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="SplatSketch backend worker")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="optimise the curves of a job folder (docs/JOB_FORMAT.md)")
    run.add_argument("job_dir")
    run.add_argument("--parent-pid", type=int, default=None, help="exit (cancelled) when this process is gone")
    sub.add_parser("check", help="print this Python's torch / CUDA / gsplat / open_clip versions as JSON")
    ev = sub.add_parser("evaluate", help="score a finished job on views it was not optimised on")
    ev.add_argument("job_dir")
    ev.add_argument("--views", help="an .npz of evaluation views (default: JOB_DIR/eval.npz, else the held-out views)")
    ev.add_argument("--report", action="store_true",
                    help="also draw report.png (contact sheet with the figures) and turntable.gif")
    ev.add_argument("--title", default="", help="the report's title line")
    args = parser.parse_args(argv)
    from . import worker

    if args.command == "check":
        return worker.check_backend()
    if args.command == "evaluate":
        return worker.evaluate_job(args.job_dir, args.views, args.report, args.title)
    return worker.run_job(args.job_dir, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
