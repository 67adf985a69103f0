"""What the command sketches: one typed source per requested asset (a mesh object, a capture, a
sketch whose strokes are kept), each knowing how to announce, run and preview itself."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import bpy

from ..jobs.runner import RunError
from ..jobs.sketch_run import CaptureSketchRun, KeepStrokesRun, SketchRun, keep_strokes_problem, kept_source
from ..scene.assets import clear_startup_scene, import_asset
from .files import OPEN_BLEND, UsageError


def is_startup_scene() -> bool:
    """Blender started without a file: nothing but the factory Cube, Camera and Light (``is_dirty`` is
    already True at start-up, so it cannot tell)."""
    return not bpy.data.filepath and {o.name for o in bpy.data.objects} <= {"Cube", "Camera", "Light"}


@dataclass
class Source:
    """One asset the command was asked for; ``problem`` (one line) when it cannot be sketched."""

    label: str
    problem: str = ""

    def input_files(self) -> list[tuple[str, str]]:
        return []

    def bad_input(self) -> bool:
        """A problem with the input itself (not a failed run): if nothing else ran, a usage error."""
        return False


@dataclass
class MeshSource(Source):
    """A mesh object in the scene (named, from a collection, imported, the demo's or the active one)."""

    obj: object = None

    def announce(self, settings: dict, params: dict) -> str:
        return (f"rendering {params['train_views']} + {params['heldout_views']} views, "
                f"{settings['curves']} curves, {settings['iterations']} iterations")

    def make_run(self, settings: dict, params: dict, python: str, **options):
        return SketchRun(self.obj, settings, params, python, **options)

    def preview(self, run, path: str, title: str) -> None:
        from ..scene.preview import render_contact_sheet

        render_contact_sheet(self.obj, bpy.data.objects[run.result_name], path, title=f"{title} - SplatSketch")


@dataclass
class CaptureSource(Source):
    """``--images``: a multi-view capture (None with a problem: its json could not be used)."""

    capture: object = None

    def input_files(self) -> list[tuple[str, str]]:
        found = []
        for frame in (self.capture.train + self.capture.test) if self.capture is not None else ():
            found += [(f"a picture of --images '{self.capture.name}'", frame.image)]
            found += [(f"a mask of --images '{self.capture.name}'", frame.mask)] if frame.mask else []
        return found

    def bad_input(self) -> bool:
        return self.capture is None

    def announce(self, settings: dict, params: dict) -> str:
        cap = self.capture
        return (f"{len(cap.train)} + {len(cap.test)} pictures ({min(len(cap.train), params['train_views'])}"
                f" used to train), {settings['curves']} curves, {settings['iterations']} iterations")

    def make_run(self, settings: dict, params: dict, python: str, **options):
        return CaptureSketchRun(self.capture, settings, params, python, **options)

    def preview(self, run, path: str, title: str) -> None:
        from ..scene.preview import render_capture_sheet

        render_capture_sheet(self.capture, bpy.data.objects[run.result_name], run.center, run.radius, path,
                             title=f"{title} - SplatSketch from pictures")


@dataclass
class KeepSource(Source):
    """``--keep-strokes``: which sketch, which of its strokes stay, how many new ones, on which mesh."""

    sketch: object = None
    keep: list = field(default_factory=list)
    new: int = 0
    source: object = None  # the mesh the sketch is of

    def announce(self, settings: dict, params: dict) -> str:
        return (f"keeping {len(self.keep)} strokes, making {self.new} on {self.source.name}: rendering "
                f"{params['train_views']} + {params['heldout_views']} views, {settings['iterations']} iterations")

    def make_run(self, settings: dict, params: dict, python: str, **options):
        return KeepStrokesRun(self.sketch, self.keep, self.source, dict(settings, curves=self.new), params, python,
                              **options)

    def preview(self, run, path: str, title: str) -> None:  # the sketch against its source
        MeshSource(self.label, obj=self.source).preview(run, path, title)


def mesh(obj, label: str = "") -> MeshSource:
    from ..scene.mesh import source_problem

    return MeshSource(label or obj.name, source_problem(obj) or "", obj)


def gather_sources(args, context) -> tuple[list[Source], list]:
    """Every requested asset, in the order given, and the factory objects still to clear once a
    capture is sketched (an empty list when not to)."""
    if args.keep_strokes:
        if len(args.object) > 1 or args.objects or args.collection or args.input or args.images or args.demo:
            raise UsageError("--keep-strokes works on one sketch: no --objects, --collection, --input, --images "
                             "or --demo with it (one --object names the mesh a curve drawn by hand sketches)")
        return [keep_source(args)], []
    elif args.keep or args.add:
        raise UsageError("--keep and --add need --keep-strokes SKETCH")
    found: list[Source] = []
    names = list(args.object) + [n.strip() for n in args.objects.split(",") if n.strip()]
    # No file was opened: the saved .blend should hold the assets and their sketches, not the factory
    # Cube, Camera and Light. They go once something was brought in, so a failed import changes nothing.
    startup = list(bpy.data.objects) if (args.demo or args.input or args.images) and not names \
        and not args.collection and is_startup_scene() else []
    if args.demo:
        # Suzanne as she is always shown: subdivided and smooth, not her 500 raw facets, whose every
        # crease Freestyle would draw as a line to match
        bpy.ops.mesh.primitive_monkey_add()
        context.active_object.name = "Suzanne"
        context.active_object.modifiers.new("Subdivision", 'SUBSURF').levels = 2
        bpy.ops.object.shade_smooth()
        names.insert(0, context.active_object.name)
    for name in names:
        obj = bpy.data.objects.get(name)
        found.append(MeshSource(name, f"object '{name}' does not exist") if obj is None else mesh(obj, name))
    for coll_name in args.collection:
        coll = bpy.data.collections.get(coll_name)
        meshes = [o for o in coll.all_objects if o.type == "MESH"] if coll else []
        if not meshes:
            problem = "does not exist" if coll is None else "has no mesh objects"
            found.append(MeshSource(coll_name, f"collection '{coll_name}' {problem}"))
        found += [mesh(o) for o in meshes]
    for path in args.input:
        try:
            found.append(mesh(import_asset(context, path)))
        except ValueError as error:
            found.append(MeshSource(os.path.basename(path), str(error)))
    if startup and any(isinstance(source, MeshSource) and source.obj is not None for source in found):
        clear_startup_scene(startup)
        startup = []
    found += captures(args)  # pictures bring nothing into the scene until their sketch is made
    if not found:
        obj = context.active_object
        if obj is None:
            raise UsageError("no object to sketch: use --object NAME, --objects A,B, --collection NAME or --input FILE")
        found.append(mesh(obj))
    return found, startup


def keep_source(args) -> KeepSource:
    """The checked ``--keep-strokes`` request; UsageError (nothing runs, nothing changes) otherwise."""
    from ..jobs.sketch_run import parse_strokes

    sketch = bpy.data.objects.get(args.keep_strokes)
    if sketch is None:
        raise UsageError(f"--keep-strokes: no object '{args.keep_strokes}' in {OPEN_BLEND}")
    if bool(args.keep) == bool(args.add):
        raise UsageError("--keep-strokes needs one of --keep 0-3,7 (make the others again) or --add N")
    total = len(sketch.data.splines) if sketch.type == "CURVE" else 0
    if args.add:
        keep, new = list(range(total)), args.add
    else:
        try:
            keep = parse_strokes(args.keep)
        except RunError as error:
            raise UsageError(f"--keep {error}") from None
        new = total - len(set(keep) & set(range(total)))
    fallback = bpy.data.objects.get(args.object[0]) if args.object else None  # for a curve drawn by hand
    problem = keep_strokes_problem(sketch, keep, new, fallback)
    if problem:
        raise UsageError(f"--keep-strokes {args.keep_strokes}: {problem.replace('the Sketch panel', '--object')}")
    return KeepSource(args.keep_strokes, "", sketch, keep, new, kept_source(sketch, fallback))


def captures(args) -> list[CaptureSource]:
    """Every ``--images``; json and file problems are found here, before anything runs (the pictures
    themselves are checked as they load)."""
    from ..pictures.capture import CaptureError, read_capture

    if args.masks and not args.images:
        raise UsageError("--masks needs --images")
    found = []
    for path in args.images:
        try:
            capture = read_capture(path, os.path.abspath(os.path.expanduser(args.masks)) if args.masks else "")
            found.append(CaptureSource(capture.name, "", capture))
        except CaptureError as error:
            found.append(CaptureSource(os.path.basename(os.path.normpath(path)) or path, str(error)))
    return found
