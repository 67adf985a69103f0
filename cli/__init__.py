"""Headless sketches: ``blender -b [file.blend] -c splatsketch ARGS`` (and ``bin/splatsketch ARGS``).

Built for batches: every user mistake is one line on stderr (no traceback); outputs are checked
before the long run; one bad asset is reported and skipped, the rest still run, and the exit code
says whether anything failed (0 all sketched, 1 some asset failed, 2 nothing could start,
130 interrupted, 143 terminated). No output may be an input or another output (checked, by any name
or link, before anything runs); the open .blend is never saved over unless ``--output`` names it, and
a .blend that ``--output`` replaces is kept as ``.blend1``.
Users see progress lines and real errors; Blender's own chatter (render "Saved:" lines, GPU
messages) goes to a log file named when something fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time

import bpy

from ..contract.protocol import CLI_ASSET_FAILED, CLI_INTERRUPTED, CLI_OK, CLI_TERMINATED, CLI_USAGE, SETTINGS_LINE
from ..contract.settings import SettingsError, settings_from_dict
from ..jobs.runner import CANCELLED, SUCCEEDED, RunError, safe_name
from ..scene import id_keys
from ..scene.assets import clear_startup_scene, import_asset  # noqa: F401 - import_asset: the CLI API
from ..settings_map import active_losses, add_flags, apply_flags
from ..stop_request import Terminated, check_stop, clear_stop, request_stop
from . import files
from .files import Outputs, UsageError, say
from .sources import CaptureSource, Source, gather_sources


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="blender -b [file.blend] -c splatsketch", allow_abbrev=False,
        description="Sketch mesh objects as a few 3D Bézier curves. Defaults for the settings come from "
                    "the open file's Sketch panel.",
        epilog="Exit codes: 0 every asset sketched, 1 some asset failed (reported, others still run), "
               "2 bad arguments or backend (nothing ran), 130 interrupted, 143 terminated.")
    src = p.add_argument_group("what to sketch (default: the active object)")
    src.add_argument("--object", action="append", default=[], metavar="NAME", help="a mesh object (repeatable)")
    src.add_argument("--objects", default="", metavar="A,B", help="comma-separated object names")
    src.add_argument("--collection", action="append", default=[], metavar="NAME",
                     help="every mesh object in this collection (repeatable)")
    src.add_argument("--input", action="append", default=[], metavar="FILE",
                     help="import .obj/.ply/.stl/.gltf/.glb and sketch it (repeatable)")
    src.add_argument("--images", action="append", default=[], metavar="DIR_OR_JSON",
                     help="sketch a multi-view capture instead of a mesh: a folder with transforms_train.json "
                          "(NeRF synthetic layout: camera_angle_x, camera-to-world poses, RGBA pictures; held-out "
                          "pictures from transforms_test.json) or the json itself (repeatable). The sketch lands "
                          "in the capture's world frame")
    src.add_argument("--masks", metavar="DIR", default="",
                     help="with --images: silhouettes from these masks instead of the pictures' alpha (white = "
                          "object; DIR mirrors the pictures' paths: DIR/train/r_0.png for ./train/r_0)")
    src.add_argument("--demo", action="store_true", help="add Blender's Suzanne and sketch it")
    src.add_argument("--keep-strokes", metavar="SKETCH", default="",
                     help="instead of a new sketch: keep some strokes of this sketch (a curve object in the open "
                          ".blend) exactly as they are and make the others again on its source object (for a curve "
                          "drawn by hand: the --object mesh)")
    src.add_argument("--keep", metavar="0-3,7", default="",
                     help="with --keep-strokes: the strokes to keep, by number (0 is the most important)")
    src.add_argument("--add", type=int, default=0, metavar="N",
                     help="with --keep-strokes: keep every stroke and add N where lines are still missing")
    st = p.add_argument_group("settings")
    st.add_argument("--preset", choices=["preview", "final"],
                    help="preview: fast on a laptop CPU, geometry-only; final: CLIPasso-level, for a GPU "
                         "(--demo uses preview); options below override it")
    add_flags(st)
    st.add_argument("--no-clip", action="store_true", help="geometry-only objective (needs no CLIP weights)")
    st.add_argument("--allow-geometry-fallback", action="store_true",
                    help="use the geometry-only objective if CLIP weights are missing")
    st.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    st.add_argument("--python", metavar="PATH", help="backend Python with torch (default: the preferences')")
    be = p.add_argument_group("backend (instead of sketching)")
    be.add_argument("--setup-backend", action="store_true",
                    help="make the managed backend environment (torch, open_clip, gsplat) in the extension's user "
                         "folder; afterwards runs need no --python. --python names the base Python here")
    be.add_argument("--check-backend", action="store_true",
                    help="exit 0 when the backend is ready, else print why (one line) and exit 1")
    be.add_argument("--torch", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                    help="with --setup-backend: the torch build (auto: CUDA with an NVIDIA GPU, MPS on Apple "
                         "silicon, else CPU)")
    be.add_argument("--find-links", metavar="DIR", help="with --setup-backend: install offline from this wheel folder")
    be.add_argument("--build-kernels", action="store_true",
                    help="with --setup-backend on CUDA: compile gsplat's kernels once (minutes)")
    out = p.add_argument_group("outputs")
    out.add_argument("--output", metavar="OUT.blend", help="save the result here (a folder: <file>_sketch.blend)")
    out.add_argument("--preview", metavar="OUT.png", help="contact sheet of the sketch beside the object")
    out.add_argument("--evaluate", action="store_true",
                     help="score each sketch on 24 views never used to make it (line F-score, chamfer, "
                          "interior ink, surface distance); stored on the sketch object and in --json")
    out.add_argument("--report", metavar="OUT.png",
                     help="evaluation report: contact sheet with the figures (OUT.png) and turntable GIF "
                          "(OUT.gif); implies --evaluate")
    out.add_argument("--json", metavar="OUT.json", help="settings and metrics of every asset")
    out.add_argument("--job-dir", metavar="DIR", help="keep each job folder here (re-runnable by hand)")
    out.add_argument("--print-settings", action="store_true",
                     help="check the options and the backend as a run would, print the resolved settings (one "
                          "line: SPLATSKETCH_SETTINGS {json}) and exit (0 fine, 2 with the reason); sketches nothing")
    return p


def main(argv) -> int:
    """The registered handler: ``register_cli_command`` passes the arguments after ``-c splatsketch``."""
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as stop:  # --help or an argparse error (already printed)
        return stop.code if isinstance(stop.code, int) else CLI_USAGE
    with _signals_unwind(), _blender_chatter_to_log() as log_path:
        try:
            if args.setup_backend:
                return _setup_backend(args)
            if args.check_backend:
                return _check_backend(args)
            return _run(args, log_path)
        except UsageError as error:
            _error(str(error))
            return CLI_USAGE
        except KeyboardInterrupt:
            _error("interrupted: the run was cancelled and its temporary files removed; nothing saved")
            return CLI_INTERRUPTED
        except Terminated:
            _error("terminated (SIGTERM): the run was cancelled and its temporary files removed; nothing saved")
            return CLI_TERMINATED


@contextlib.contextmanager
def _signals_unwind():
    """Ctrl-C and SIGTERM stop the run at its next safe point (between two views or two polls): the
    backend is cancelled and every temporary folder removed, instead of Blender dying mid-render."""
    def stop(signum, _frame):
        request_stop(signal.Signals(signum).name)

    clear_stop()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, stop)
        except (ValueError, OSError):  # not the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        clear_stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _log_file() -> str:
    from ..preferences import user_dir

    folder = os.path.join(user_dir(), "logs")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"cli-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


@contextlib.contextmanager
def _blender_chatter_to_log():
    """Point file descriptors 1 and 2 (where Blender's C code prints) at a log file, while Python's
    ``sys.stdout`` / ``sys.stderr`` keep reaching the user. Yields the log's path."""
    path = _log_file()
    saved, swapped = [], []
    log = open(path, "ab")
    try:
        for name, fd in (("stdout", 1), ("stderr", 2)):
            stream = getattr(sys, name)
            try:
                uses_fd = stream.fileno() == fd
            except (AttributeError, OSError, ValueError):  # already redirected (tests, pipes in Python)
                uses_fd = False
            stream.flush()
            copy = os.dup(fd)
            saved.append((fd, copy))
            if uses_fd:
                swapped.append((name, stream))
                setattr(sys, name, os.fdopen(os.dup(copy), "w", buffering=1, encoding="utf-8", errors="replace"))
            os.dup2(log.fileno(), fd)
        yield path
    finally:
        _flush_c_stdio()
        for name, original in swapped:
            getattr(sys, name).close()
            setattr(sys, name, original)
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        log.close()
        if os.path.getsize(path) == 0:
            os.remove(path)


def _flush_c_stdio() -> None:
    """Flush C's stdout buffer so Blender's last lines land in the log, not on the restored terminal."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        pass


def _setup_backend(args) -> int:
    from ..jobs.environment import find_base_python, managed_root
    from ..jobs.setup_run import SetupRun
    from ..preferences import user_dir

    base, problem = find_base_python(args.python or "")
    if problem:
        raise UsageError(problem)
    find_links = os.path.abspath(os.path.expanduser(args.find_links)) if args.find_links else ""
    if find_links and not os.path.isdir(find_links):
        raise UsageError(f"--find-links '{find_links}' is not a folder")
    run = SetupRun(base, user_dir=user_dir(), torch=args.torch, find_links=find_links,
                   build_kernels=args.build_kernels, log=say)
    say(f"setting up the backend in {managed_root(user_dir())} with {base} (torch build: {args.torch})")
    try:
        run.run_blocking()
    except RunError as error:
        raise UsageError(str(error)) from None
    if run.state == SUCCEEDED:
        say(run.summary)
        return CLI_OK
    _error(f"backend set-up: {run.message}; the previous backend is unchanged")
    return CLI_INTERRUPTED if run.state == CANCELLED else CLI_ASSET_FAILED


def _check_backend(args) -> int:
    from ..jobs import describe_backend, probe_backend
    from ..jobs.environment import check_managed, managed_env
    from ..preferences import backend_python, user_dir

    python = os.path.abspath(os.path.expanduser(args.python)) if args.python else backend_python(bpy.context)
    managed = managed_env(user_dir())
    problem = check_managed(user_dir()) if managed and managed["python"] == python else ""
    if problem:
        _error(problem)
        return CLI_ASSET_FAILED
    info = probe_backend(python, full=True)
    if isinstance(info, str):
        _error(info)
        return CLI_ASSET_FAILED
    say(f"backend ready: {describe_backend(info)} ({python})")
    return CLI_OK


def _seconds_since_launch() -> float:
    """How long this process has run (Blender's own start included), from /proc; 0 where there is none."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat, open("/proc/uptime", encoding="ascii") as up:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            return max(float(up.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


def _error(line: str) -> None:
    print(f"splatsketch: error: {line}", file=sys.stderr, flush=True)


def _settings(args, context) -> tuple[dict, dict]:
    from ..contract.presets import apply_preset
    from ..preferences import get_preferences
    from ..properties import job_params, settings_dict

    props = context.scene.splatsketch
    settings, params = settings_dict(props, get_preferences(context)), job_params(props)
    preset = args.preset or ("preview" if args.demo else None)
    if preset:
        settings = {**settings, **apply_preset(preset, {"clip": settings.get("clip", {})})}
    apply_flags(args, settings, params)
    if args.device is not None:
        settings["device"] = args.device
    settings["losses"] = active_losses(settings["losses"], clip=not args.no_clip)
    if args.allow_geometry_fallback or args.demo:
        settings["clip"]["allow_geometry_fallback"] = True
    if params["train_views"] < 1 or not 32 <= params["size"] <= 2048:
        raise UsageError("--views must be >= 1 and --image-size between 32 and 2048")
    try:
        settings_from_dict(settings)
    except SettingsError as error:
        raise UsageError(str(error)) from None
    return settings, params


def _python(args, context) -> str:
    from ..jobs import probe_backend
    from ..preferences import backend_python

    python = os.path.abspath(os.path.expanduser(args.python)) if args.python else backend_python(context)
    info = probe_backend(python)
    if isinstance(info, str):
        raise UsageError(info)
    return python


# -- the run: outputs checked, each source sketched, the file saved ----------------------------------------


def _run(args, log_path: str) -> int:
    context = bpy.context
    outputs = files.check_outputs(args)
    python = _python(args, context)
    settings, params = _settings(args, context)
    if args.print_settings:  # one prefixed line: whatever else reaches stdout cannot be mistaken for it
        resolved = {"settings": settings, "job": params, "evaluate": bool(args.evaluate or args.report),
                    "python": python}
        say(f"{SETTINGS_LINE} {json.dumps(resolved, sort_keys=True)}")
        return CLI_OK
    sources, startup = gather_sources(args, context)
    good = [source for source in sources if not source.problem]
    # again with what only the sources tell (each asset's own file names, a capture's pictures), before any run
    labels = [source.label for source in good] if len(good) > 1 else [""]
    files.refuse_clashes(outputs.files(labels), files.input_files(args, sources))
    reports, status, bad_input = [], CLI_OK, 0  # bad input: if nothing else ran, that is a usage error
    for source in sources:
        check_stop()
        report = {"name": source.label, "status": "failed", "message": source.problem}
        reports.append(report)
        if source.problem:
            _error(f"{source.label}: {source.problem}")
            status = CLI_ASSET_FAILED
            bad_input += source.bad_input()
            continue
        run, ok = _sketch(source, args, outputs, settings, params, python, report, first=len(reports) == 1,
                          several=len(good) > 1)
        if run.state == SUCCEEDED:
            if startup and isinstance(source, CaptureSource):  # the saved file should hold the sketch, not the Cube
                clear_startup_scene(startup)
                startup = []
            status = status if ok else CLI_ASSET_FAILED
        else:
            _error(f"{source.label}: {run.message}")
            status = CLI_ASSET_FAILED
            bad_input += bool(getattr(run, "bad_input", False))
            if run.state == CANCELLED:
                status = CLI_INTERRUPTED
                break
    if bad_input and bad_input == len(reports):  # nothing could run: bad input, as a bad argument is
        return CLI_USAGE
    _save(outputs, reports, settings, params)
    if status != CLI_OK:
        say(f"Blender's own messages: {log_path}")
    return status


def _sketch(source: Source, args, outputs: Outputs, settings: dict, params: dict, python: str, report: dict,
            first: bool, several: bool) -> tuple[object, bool]:
    """One source's sketch, then its preview and evaluation as asked; the run, and False if a picture or
    the evaluation failed after the sketch was made."""
    from ..preferences import user_dir

    label = source.label
    job_dir = os.path.join(os.path.abspath(args.job_dir), safe_name(label)) if args.job_dir else None
    say(f"[{label}] {source.announce(settings, params)}")
    run = source.make_run(settings, params, python, user_dir=user_dir(), live_preview=False, job_dir=job_dir,
                          keep_job=bool(args.job_dir), log=say)
    started = time.monotonic()
    launched = _seconds_since_launch() if first else 0.0  # the first asset waited for Blender
    try:
        run.run_blocking()
    except RunError as error:
        run.state, run.message = "FAILED", str(error)
    report.update(seconds=round(time.monotonic() - started, 2), message=run.message)
    if run.state != SUCCEEDED:
        return run, True
    ok = True
    report.update(status="ok", result=run.result_name, summary=run.summary, metrics=run.metrics,
                  phases=run.phases(launched + time.monotonic() - started))
    say(f"[{label}] done: {run.summary}")
    if outputs.preview:
        path = files.per_asset(outputs.preview, label, several)
        try:
            source.preview(run, path, label)
            say(f"[{label}] preview {path}")
            report["preview"] = path
        except Exception as error:  # the sketch is made; a failed picture must not hide that
            _error(f"{label}: preview failed: {error}")
            report["preview_error"], ok = str(error), False
    if args.evaluate or outputs.report:
        ok &= _evaluate(run.result_name, python, report, outputs.report, label, several, job_dir)
    return run, ok


def _save(outputs: Outputs, reports: list[dict], settings: dict, params: dict) -> None:
    """The .blend (when anything was sketched) and the JSON report."""
    sketched = sum(1 for r in reports if r["status"] == "ok")
    if outputs.blend and sketched:
        files.save_blend(outputs.blend)
    elif outputs.blend:
        _error(f"no asset was sketched ({len(reports)} failed): nothing saved, {outputs.blend} not written")
    else:
        say("no --output given: nothing saved")
    if outputs.json:
        with open(outputs.json, "w", encoding="utf-8") as f:
            json.dump({"settings": settings, "job": params, "output": outputs.blend if sketched else None,
                       "assets": reports}, f, indent=2)
        say(f"wrote {outputs.json}")


def _evaluate(result_name: str, python: str, report: dict, report_path: str | None, label: str,
              several: bool, job_dir: str | None) -> bool:
    """Score the new sketch on held-out views (and copy its report pictures); False if that failed."""
    import shutil

    from ..jobs.evaluation_run import EvaluationRun, format_evaluation
    from ..preferences import user_dir

    sketch = bpy.data.objects[result_name]
    run = EvaluationRun(sketch, python, user_dir=user_dir(), folder=os.path.join(job_dir, "evaluation") if job_dir
                        else None, keep_folder=bool(job_dir), pictures=bool(report_path), log=say)
    say(f"[{label}] evaluating on held-out views")
    try:
        run.run_blocking()
    except RunError as error:
        run.state, run.message = "FAILED", str(error)
    try:
        if run.state != SUCCEEDED:
            _error(f"{label}: evaluation failed: {run.message}")
            report["evaluation_error"] = run.message
            return False
        report["evaluation"] = run.evaluation
        say(f"[{label}] {format_evaluation(run.evaluation)}")
        for key in id_keys.PICTURES.values():
            sketch.pop(key, None)  # the folder's copies go away with it; the user's copies are below
        if report_path:
            stem = os.path.splitext(files.per_asset(report_path, label, several))[0]
            for key, ext in (("report", ".png"), ("turntable", ".gif")):
                if run.pictures.get(key):
                    shutil.copyfile(run.pictures[key], stem + ext)
                    report[key] = sketch[id_keys.PICTURES[key]] = stem + ext
                    say(f"[{label}] {key} {stem + ext}")
        return True
    finally:
        if not job_dir and run.folder:
            shutil.rmtree(run.folder, ignore_errors=True)
