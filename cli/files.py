"""The command's files: every path it reads or writes resolved, checked and kept apart before anything
runs (no output may be an input or another output, by any name or link), and the .blend saved so no
run destroys one."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import bpy

from ..jobs.runner import safe_name

OPEN_BLEND = "the open .blend file"


class UsageError(Exception):
    """A mistake on the command line or in the environment: nothing was run."""


def say(line: str) -> None:
    print(line, flush=True)


def absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def same_file(a: str, b: str) -> bool:
    """Whether writing ``a`` would overwrite ``b``: the same path after links, or one file under two
    names (a hard link, a case-insensitive disk)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def per_asset(path: str, label: str, several: bool) -> str:
    """The file an output option gives one asset: ``stem_<asset>.ext`` when several are sketched."""
    stem, ext = os.path.splitext(path)
    return f"{stem}_{safe_name(label)}{ext}" if several else path


def output_files(output, preview, json_path, report_path, labels=("",)) -> list[tuple[str, str]]:
    """``(what, path)`` of every file the run may write, each asset's pictures included."""
    several = len(labels) > 1
    found = [("--output", output), ("--json", json_path)]
    for label in labels:
        of = f" of '{label}'" if several else ""
        found.append((f"--preview{of}", preview and per_asset(preview, label, several)))
        if report_path:
            stem = os.path.splitext(per_asset(report_path, label, several))[0]
            found += [(f"--report{of}", stem + ".png"), (f"--report{of} (its turntable)", stem + ".gif")]
    return [(what, path) for what, path in found if path]


def input_files(args, sources=()) -> list[tuple[str, str]]:
    """``(what, path)`` of every file the run reads: meshes, the open .blend, a capture's json files,
    pictures and masks, the backend Python."""
    from ..pictures.capture import CaptureError, resolve

    found = [("--input", absolute(path)) for path in args.input]
    if bpy.data.filepath:
        found.append((OPEN_BLEND, bpy.data.filepath))
    if args.python:
        found.append(("--python", absolute(args.python)))
    for path in args.images:
        try:
            found += [("--images", json_path) for json_path in resolve(path) if json_path]
        except CaptureError:
            pass  # reported with the asset
    for source in sources:
        found += source.input_files()
    return found


def refuse_clashes(outputs: list[tuple[str, str]], inputs: list[tuple[str, str]]) -> None:
    """UsageError when an output would overwrite an input or another output. ``--output`` may name
    the open .blend: saving the sketches into it is what that asks for."""
    for index, (what, path) in enumerate(outputs):
        for other, other_path in inputs + outputs[:index]:
            if same_file(path, other_path) and not (what == "--output" and other == OPEN_BLEND):
                raise UsageError(f"{what} '{path}' is the same file as {other}"
                                 + ("" if other == OPEN_BLEND else f" '{other_path}'")
                                 + ": it would be overwritten; name another file")


def can_write_in(folder: str, what: str, path: str) -> None:
    """Make ``folder`` if needed and write a probe file there, so a bad output fails before the work."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".splatsketch-check-"):
            pass
    except OSError as error:
        raise UsageError(f"cannot write {what} '{path}': {error.strerror or error}") from None


def writable_file(path: str, what: str) -> str:
    """Absolute path of an output file that can be written; checked before any long work."""
    path = absolute(path)
    if os.path.isdir(path):
        raise UsageError(f"{what} '{path}' is a folder, expected a file name")
    can_write_in(os.path.dirname(path), what, path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"cannot write {what} '{path}': permission denied")
    return path


def writable_folder(path: str, what: str) -> str:
    """Absolute path of an output folder that exists or can be made, and can be written; checked early."""
    path = absolute(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{what} '{path}' is a file, expected a folder")
    can_write_in(path, what, path)
    return path


def output_blend(path: str) -> str:
    """The .blend ``--output`` names (a folder: ``<open file>_sketch.blend`` in it), resolved."""
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        stem = os.path.splitext(os.path.basename(bpy.data.filepath))[0] or "splatsketch"
        path = os.path.join(path, f"{stem}_sketch.blend")
    if not path.lower().endswith(".blend"):
        raise UsageError(f"--output '{path}' must end in .blend")
    return absolute(path)


def save_blend(path: str) -> None:
    """Save the scene to ``path``; a file already there is kept as ``path + "1"`` (Blender's own
    backup, whatever the user's Save Versions preference says), so no run destroys a .blend."""
    existed = os.path.exists(path)
    files = bpy.context.preferences.filepaths
    versions = files.save_version
    files.save_version = max(versions, 1)
    try:
        bpy.ops.wm.save_as_mainfile(filepath=path, copy=True)
    finally:
        files.save_version = versions
    say(f"saved {path}" + (f" (the file it replaced is kept as {path}1)" if existed else ""))


@dataclass
class Outputs:
    """The files the command writes (None: not asked for), resolved and checked before anything runs."""

    blend: str | None
    preview: str | None
    json: str | None
    report: str | None

    def files(self, labels=("",)) -> list[tuple[str, str]]:
        return output_files(self.blend, self.preview, self.json, self.report, labels)


def check_outputs(args) -> Outputs:
    out = Outputs(output_blend(args.output) if args.output else None,
                  *(absolute(p) if p else None for p in (args.preview, args.json, args.report)))
    if out.report and not out.report.lower().endswith(".png"):
        raise UsageError(f"--report '{out.report}' must end in .png (the turntable goes beside it as .gif)")
    refuse_clashes(out.files(), input_files(args))
    for what, path in (("--output", out.blend), ("--preview", out.preview), ("--json", out.json),
                       ("--report", out.report)):
        if path:
            writable_file(path, what)
    if args.job_dir:
        writable_folder(args.job_dir, "--job-dir")
    return out
