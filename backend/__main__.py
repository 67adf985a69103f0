"""Command line of the backend: ``python -m backend run|evaluate JOB_DIR``, ``python -m backend check``
and ``python -m backend setup ROOT`` (argv builders for callers: ``contract.protocol.run_argv`` /
``evaluate_argv`` / ``check_argv`` / ``setup_argv``). ``setup`` runs on a bare base Python, so
nothing here imports more than the standard library before the sub-command is known."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="SplatSketch backend worker")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="optimise the curves of a job folder (docs/JOB_FORMAT.md)")
    run.add_argument("job_dir")
    _add_watch_options(run)
    check = sub.add_parser("check", help="print this Python's torch / CUDA / gsplat / open_clip versions as JSON")
    check.add_argument("--quick", action="store_true", help="only look for the packages (milliseconds), do not "
                       "import them (torch takes seconds)")
    st = sub.add_parser("setup", help="make the managed backend environment ROOT/envs/<name> and switch "
                        "ROOT/current.json to it once it works (run by a base Python; backend/setup_env.py)")
    st.add_argument("root")
    st.add_argument("--torch", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                    help="torch build (auto: CUDA with an NVIDIA driver, MPS on Apple silicon, else CPU)")
    st.add_argument("--find-links", default="", help="install offline from this wheel folder (no index)")
    st.add_argument("--index-url", default="", help="use this package index instead of the default one(s)")
    st.add_argument("--build-kernels", action="store_true", help="on CUDA, compile gsplat's kernels once")
    st.add_argument("--package", action="append", default=[],
                    help="install this requirement instead of the runtime set (repeatable; pinned studio sets)")
    _add_watch_options(st)
    cw = sub.add_parser("clip-weights", help="are the CLIP weights on this machine (one done event); with --fetch "
                        "download them into the cache (the add-on's Get CLIP Weights)")
    cw.add_argument("--model", default="RN101-quickgelu")
    cw.add_argument("--pretrained", default="openai")
    cw.add_argument("--checkpoint", default="", help="a local weights file instead of the tag")
    cw.add_argument("--cache-dir", default="", help="where the weights are cached (default: open_clip's)")
    cw.add_argument("--fetch", action="store_true", help="download them (the network is used only then)")
    _add_watch_options(cw)
    ev = sub.add_parser("evaluate", help="score a finished job on views it was not optimised on")
    ev.add_argument("job_dir")
    ev.add_argument("--views", help="an .npz of evaluation views (default: JOB_DIR/eval.npz, else the held-out views)")
    ev.add_argument("--report", action="store_true",
                    help="also draw report.png (contact sheet with the figures) and turntable.gif")
    ev.add_argument("--title", default="", help="the report's title line")
    ev.add_argument("--clip-model", default="", help="add a CLIP similarity with this open_clip model (use "
                    "another backbone than the sketch was made with, e.g. ViT-B-32)")
    ev.add_argument("--clip-pretrained", default="openai", help="its open_clip weights tag")
    ev.add_argument("--clip-checkpoint", default="", help="its weights file (instead of the tag)")
    ev.add_argument("--clip-cache", default="", help="open_clip / Hugging Face cache folder holding the weights")
    ev.add_argument("--clip-config", default="", help="a JSON model config for --clip-model (tests)")
    _add_watch_options(ev)
    args = parser.parse_args(argv)
    if args.command == "setup":
        from . import setup_env

        return setup_env.main(args)
    if args.command == "clip-weights":
        from . import clip_weights

        return clip_weights.main(args)
    from . import worker

    if args.command == "check":
        return worker.check_backend(quick=args.quick)
    if args.command == "evaluate":
        clip = None
        if args.clip_model:
            from contract.settings import ClipConfig

            clip = ClipConfig(model=args.clip_model, pretrained="" if args.clip_config else args.clip_pretrained,
                              checkpoint=args.clip_checkpoint, cache_dir=args.clip_cache,
                              model_config=args.clip_config)
        return worker.evaluate_job(args.job_dir, args.views, args.report, args.title, clip,
                                   parent_pid=args.parent_pid, watch_stdin=args.watch_stdin)
    return worker.run_job(args.job_dir, args.parent_pid, watch_stdin=args.watch_stdin)


def _add_watch_options(parser) -> None:
    """How a caller tells the worker to stop, besides SIGINT (exit 130) and SIGTERM (exit 143)."""
    parser.add_argument("--parent-pid", type=int, default=None, help="stop (exit 130) when this process is gone")
    parser.add_argument("--watch-stdin", action="store_true",
                        help="stop (exit 130) when stdin reaches its end (the caller closed the pipe); without "
                             "it stdin is never read, so a shell loop feeding job names keeps its input")


if __name__ == "__main__":
    sys.exit(main())
