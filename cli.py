"""Headless sketches: ``blender -b [file.blend] -c splatsketch ARGS`` (and ``bin/splatsketch ARGS``).

Built for batches: every user mistake is one line on stderr (no traceback); outputs are checked
before the long run; one bad asset is reported and skipped, the rest still run, and the exit code
says whether anything failed (0 all sketched, 1 some asset failed, 2 nothing could start,
130 interrupted). The open .blend is never saved over unless ``--output`` names it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import bpy

from .backend.config import CLIP_LOSSES, SettingsError, settings_from_dict

EXIT_OK, EXIT_ASSET_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
IMPORTERS = {  # extension -> (operator path, keyword arguments)
    ".obj": ("wm.obj_import", {}),
    ".ply": ("wm.ply_import", {}),
    ".stl": ("wm.stl_import", {}),
    ".gltf": ("import_scene.gltf", {}),
    ".glb": ("import_scene.gltf", {}),
}
_DATA_KINDS = ("objects", "meshes", "materials", "images", "textures", "collections", "cameras", "lights",
               "actions", "node_groups", "curves", "armatures")


class UsageError(Exception):
    """A mistake on the command line or in the environment: nothing was run."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="blender -b [file.blend] -c splatsketch", allow_abbrev=False,
        description="Sketch mesh objects as a few 3D Bézier curves. Defaults for the settings come from "
                    "the open file's Sketch panel.",
        epilog="Exit codes: 0 every asset sketched, 1 some asset failed (reported, others still run), "
               "2 bad arguments or backend (nothing ran), 130 interrupted.")
    src = p.add_argument_group("what to sketch (default: the active object)")
    src.add_argument("--object", action="append", default=[], metavar="NAME", help="a mesh object (repeatable)")
    src.add_argument("--objects", default="", metavar="A,B", help="comma-separated object names")
    src.add_argument("--collection", action="append", default=[], metavar="NAME",
                     help="every mesh object in this collection (repeatable)")
    src.add_argument("--input", action="append", default=[], metavar="FILE",
                     help="import .obj/.ply/.stl/.gltf/.glb and sketch it (repeatable)")
    src.add_argument("--demo", action="store_true", help="add Blender's Suzanne and sketch it")
    st = p.add_argument_group("settings")
    st.add_argument("--preset", choices=["preview", "final"],
                    help="preview: fast on a laptop CPU, geometry-only; final: CLIPasso-level, for a GPU "
                         "(--demo uses preview); options below override it")
    st.add_argument("--curves", type=int)
    st.add_argument("--iterations", type=int)
    st.add_argument("--views", type=int, help="training views around the object")
    st.add_argument("--width", type=float, help="stroke width, fraction of the object's bounding radius")
    st.add_argument("--init", choices=["surface", "contour", "random"])
    st.add_argument("--seed", type=int)
    st.add_argument("--prompt")
    st.add_argument("--views-per-step", type=int)
    st.add_argument("--best-of", type=int)
    st.add_argument("--ink-budget", type=int, metavar="N",
                    help="beyond N curves, prune curves that mostly fill the interior (0: off; default 16)")
    st.add_argument("--worst-view-focus", type=float, metavar="POWER",
                    help="weigh each step's views by their error to this power (0: all alike; default 6)")
    st.add_argument("--image-size", type=int)
    st.add_argument("--no-clip", action="store_true", help="geometry-only objective (needs no CLIP weights)")
    st.add_argument("--allow-geometry-fallback", action="store_true",
                    help="use the geometry-only objective if CLIP weights are missing")
    st.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    st.add_argument("--python", metavar="PATH", help="backend Python with torch (default: the preferences')")
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
    return p


def main(argv) -> int:
    """The registered handler: ``register_cli_command`` passes the arguments after ``-c splatsketch``."""
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as stop:  # --help or an argparse error (already printed)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        return _run(args)
    except UsageError as error:
        print(f"splatsketch: error: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE


def _say(line: str) -> None:
    print(line, flush=True)


def _writable_file(path: str, what: str) -> str:
    """Absolute path of an output file that can be written; checked before any long work."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise UsageError(f"{what} '{path}' is a folder, expected a file name")
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".splatsketch-check-"):
            pass
    except OSError as error:
        raise UsageError(f"cannot write {what} '{path}': {error.strerror or error}") from None
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"cannot write {what} '{path}': permission denied")
    return path


def _output_blend(path: str) -> str:
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        stem = os.path.splitext(os.path.basename(bpy.data.filepath))[0] or "splatsketch"
        path = os.path.join(path, f"{stem}_sketch.blend")
    if not path.lower().endswith(".blend"):
        raise UsageError(f"--output '{path}' must end in .blend")
    return _writable_file(path, "--output")


def _settings(args, context) -> tuple[dict, dict]:
    from .backend.presets import apply_preset
    from .preferences import get_preferences
    from .properties import job_params, settings_dict

    props = context.scene.splatsketch
    settings, params = settings_dict(props, get_preferences(context)), job_params(props)
    preset = args.preset or ("preview" if args.demo else None)
    if preset:
        settings = {**settings, **apply_preset(preset, {"clip": settings.get("clip", {})})}
    for key, value in (("curves", args.curves), ("iterations", args.iterations), ("stroke_width", args.width),
                       ("init", args.init), ("seed", args.seed), ("prompt", args.prompt),
                       ("views_per_step", args.views_per_step), ("best_of", args.best_of),
                       ("hard_views", args.worst_view_focus), ("ink_budget", args.ink_budget),
                       ("device", args.device)):
        if value is not None:
            settings[key] = value
    if args.no_clip:
        settings["losses"] = {k: v for k, v in settings["losses"].items() if k not in CLIP_LOSSES}
    if args.allow_geometry_fallback or args.demo:
        settings["clip"]["allow_geometry_fallback"] = True
    if args.views is not None:
        params["train_views"] = args.views
    if args.image_size is not None:
        params["size"] = args.image_size
    if params["train_views"] < 1 or not 32 <= params["size"] <= 2048:
        raise UsageError("--views must be >= 1 and --image-size between 32 and 2048")
    try:
        settings_from_dict(settings)
    except SettingsError as error:
        raise UsageError(str(error)) from None
    return settings, params


def _python(args, context) -> str:
    from .jobs import probe_backend
    from .preferences import backend_python

    python = os.path.abspath(os.path.expanduser(args.python)) if args.python else backend_python(context)
    info = probe_backend(python)
    if isinstance(info, str):
        raise UsageError(info)
    return python


def _data_ids() -> set:
    return {(kind, id(item), item.name) for kind in _DATA_KINDS for item in getattr(bpy.data, kind)}


def _remove_new(before: set) -> None:
    """Remove every ID that appeared since ``before`` (a failed import leaves nothing behind)."""
    for kind in _DATA_KINDS:
        collection = getattr(bpy.data, kind)
        for item in list(collection):
            if (kind, id(item), item.name) not in before:
                collection.remove(item)


def import_asset(context, path: str):
    """Import one file with Blender's own importer; return one mesh object (parts joined)."""
    path = os.path.abspath(os.path.expanduser(path))
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMPORTERS:
        raise ValueError(f"unsupported file type '{ext or os.path.basename(path)}' "
                         f"(supported: {', '.join(sorted(IMPORTERS))})")
    if not os.path.isfile(path):
        raise ValueError(f"file '{path}' does not exist")
    op_path, kwargs = IMPORTERS[ext]
    module, name = op_path.split(".")
    before, objects_before = _data_ids(), set(context.scene.objects)
    try:
        getattr(getattr(bpy.ops, module), name)(filepath=path, **kwargs)
        meshes = [o for o in context.scene.objects if o not in objects_before and o.type == "MESH"]
        if not meshes:
            raise ValueError(f"'{os.path.basename(path)}' contains no mesh")
        for obj in meshes:  # unparent (keeping world transforms) so the join keeps every part in place
            matrix = obj.matrix_world.copy()
            obj.parent = None
            obj.matrix_world = matrix
        if len(meshes) > 1:
            with context.temp_override(active_object=meshes[0], selected_objects=meshes,
                                       selected_editable_objects=meshes):
                bpy.ops.object.join()
        meshes[0].name = os.path.splitext(os.path.basename(path))[0]
        return meshes[0]
    except Exception as error:
        _remove_new(before)
        message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ValueError(message if isinstance(error, ValueError) else f"could not import '{path}': {message}") \
            from None


def _sources(args, context) -> list[tuple[str, object, str]]:
    """``(label, object or None, problem)`` for every requested asset, in the order given."""
    from .scene.mesh import source_problem

    found: list[tuple[str, object, str]] = []
    names = list(args.object) + [n.strip() for n in args.objects.split(",") if n.strip()]
    if args.demo:
        bpy.ops.mesh.primitive_monkey_add()
        context.active_object.name = "Suzanne"
        names.insert(0, context.active_object.name)
    for name in names:
        obj = bpy.data.objects.get(name)
        found.append((name, obj, f"object '{name}' does not exist" if obj is None else source_problem(obj) or ""))
    for coll_name in args.collection:
        coll = bpy.data.collections.get(coll_name)
        meshes = [o for o in coll.all_objects if o.type == "MESH"] if coll else []
        if not meshes:
            problem = "does not exist" if coll is None else "has no mesh objects"
            found.append((coll_name, None, f"collection '{coll_name}' {problem}"))
        found += [(o.name, o, source_problem(o) or "") for o in meshes]
    for path in args.input:
        try:
            obj = import_asset(context, path)
            found.append((obj.name, obj, source_problem(obj) or ""))
        except ValueError as error:
            found.append((os.path.basename(path), None, str(error)))
    if not found:
        obj = context.active_object
        if obj is None:
            raise UsageError("no object to sketch: use --object NAME, --objects A,B, --collection NAME or --input FILE")
        found.append((obj.name, obj, source_problem(obj) or ""))
    return found


def _run(args) -> int:
    from .operators.run import CANCELLED, FAILED, SUCCEEDED, RunError, SketchRun

    context = bpy.context
    output = _output_blend(args.output) if args.output else None
    preview = _writable_file(args.preview, "--preview") if args.preview else None
    json_path = _writable_file(args.json, "--json") if args.json else None
    report_path = _writable_file(args.report, "--report") if args.report else None
    if report_path and not report_path.lower().endswith(".png"):
        raise UsageError(f"--report '{report_path}' must end in .png (the turntable goes beside it as .gif)")
    python = _python(args, context)
    settings, params = _settings(args, context)
    reports, status = [], EXIT_OK
    sources = _sources(args, context)
    good = sum(1 for _, obj, problem in sources if not problem)
    for label, obj, problem in sources:
        report = {"name": label, "status": "failed", "message": problem}
        reports.append(report)
        if problem:
            print(f"splatsketch: error: {label}: {problem}", file=sys.stderr, flush=True)
            status = EXIT_ASSET_FAILED
            continue
        _say(f"[{label}] rendering {params['train_views']} + {params['heldout_views']} views, "
             f"{settings['curves']} curves, {settings['iterations']} iterations")
        job_dir = os.path.join(os.path.abspath(args.job_dir), label) if args.job_dir else None
        run = SketchRun(obj, settings, params, python, live_preview=False, job_dir=job_dir,
                        keep_job=bool(args.job_dir), log=_say)
        started = time.monotonic()
        try:
            run.start(context)
            run.run_blocking()
        except RunError as error:
            run.state, run.message = FAILED, str(error)
        report.update(seconds=round(time.monotonic() - started, 2), message=run.message)
        if run.state == SUCCEEDED:
            report.update(status="ok", result=run.result_name, summary=run.summary, metrics=run.metrics)
            _say(f"[{label}] done: {run.summary}")
            if preview:
                try:
                    report["preview"] = _preview(obj, run.result_name, preview, label, good > 1)
                except Exception as error:  # the sketch is made; a failed picture must not hide that
                    print(f"splatsketch: error: {label}: preview failed: {error}", file=sys.stderr, flush=True)
                    report["preview_error"], status = str(error), EXIT_ASSET_FAILED
            if args.evaluate or report_path:
                if not _evaluate(context, run.result_name, python, report, report_path, label, good > 1,
                                 job_dir):
                    status = EXIT_ASSET_FAILED
        else:
            print(f"splatsketch: error: {label}: {run.message}", file=sys.stderr, flush=True)
            status = EXIT_ASSET_FAILED
            if run.state == CANCELLED:
                status = EXIT_INTERRUPTED
                break
    if output and any(r["status"] == "ok" for r in reports):
        bpy.ops.wm.save_as_mainfile(filepath=output, copy=True)
        _say(f"saved {output}")
    elif not output:
        _say("no --output given: nothing saved")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump({"settings": settings, "job": params, "output": output, "assets": reports}, f, indent=2)
        _say(f"wrote {json_path}")
    return status


def _evaluate(context, result_name: str, python: str, report: dict, report_path: str | None, label: str,
              several: bool, job_dir: str | None) -> bool:
    """Score the new sketch on held-out views (and copy its report pictures); False if that failed."""
    import shutil

    from .operators.evaluate import EvaluationRun, format_evaluation
    from .operators.run import SUCCEEDED, RunError

    folder = os.path.join(job_dir, "evaluation") if job_dir else tempfile.mkdtemp(prefix="splatsketch-eval-")
    sketch = bpy.data.objects[result_name]
    run = EvaluationRun(sketch, python, folder=folder, keep_folder=bool(job_dir), pictures=bool(report_path),
                        log=_say)
    _say(f"[{label}] evaluating on held-out views")
    try:
        run.start(context)
        run.run_blocking()
    except RunError as error:
        run.state, run.message = "FAILED", str(error)
    try:
        if run.state != SUCCEEDED:
            print(f"splatsketch: error: {label}: evaluation failed: {run.message}", file=sys.stderr, flush=True)
            report["evaluation_error"] = run.message
            return False
        report["evaluation"] = run.evaluation
        _say(f"[{label}] {format_evaluation(run.evaluation)}")
        for key in ("splatsketch_report", "splatsketch_turntable"):
            sketch.pop(key, None)  # the folder's copies go away with it; the user's copies are below
        if report_path:
            stem = os.path.splitext(report_path)[0] + (f"_{label}" if several else "")
            for key, ext in (("report", ".png"), ("turntable", ".gif")):
                if run.pictures.get(key):
                    shutil.copyfile(run.pictures[key], stem + ext)
                    report[key] = sketch[f"splatsketch_{key}"] = stem + ext
                    _say(f"[{label}] {key} {stem + ext}")
        return True
    finally:
        if not job_dir:
            shutil.rmtree(folder, ignore_errors=True)


def _preview(source, result_name: str, path: str, label: str, several: bool) -> str:
    from .scene.preview import render_contact_sheet

    if several:
        stem, ext = os.path.splitext(path)
        path = f"{stem}_{label}{ext}"
    render_contact_sheet(source, bpy.data.objects[result_name], path, title=f"{label} - SplatSketch")
    _say(f"[{label}] preview {path}")
    return path
