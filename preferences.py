"""Add-on preferences: the backend (set up, check, repair, remove), the device, and CLIP.

These are per-machine choices (a studio's GPU box differs from a laptop), so they live in the
preferences rather than in the .blend; per-sketch choices live in ``properties.py``.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from .jobs.environment import describe_env, describe_size, managed_env, resolve_backend_python
from .widgets import labels, progress, prop_rows, shorten, wrap

EXTENSION_DIR = os.path.dirname(os.path.abspath(__file__))


class SplatSketchPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="A Python with torch of your own that runs the optimisation. Empty: the environment "
                    "Set Up Backend makes (else a development checkout's .venv)")
    base_python: StringProperty(
        name="Base Python", subtype="FILE_PATH", default="",
        description="The Python that Set Up Backend makes the environment with. Empty: Blender's own where "
                    "it can, else Python 3.10+ on PATH")
    torch_build: EnumProperty(
        name="Torch Build", default="auto",
        items=[("auto", "Auto", "CUDA where an NVIDIA GPU is present, MPS on Apple silicon, else CPU"),
               ("cpu", "CPU", "The small CPU build (no GPU)"),
               ("cuda", "CUDA", "NVIDIA GPU build (gigabytes)"),
               ("mps", "MPS", "Apple silicon")])
    wheel_folder: StringProperty(
        name="Wheel Folder", subtype="DIR_PATH", default="",
        description="Install offline from this folder of wheels (no package index)")
    build_kernels: BoolProperty(
        name="Build GPU Kernels", default=False,
        description="On CUDA, compile gsplat's renderer once during set-up (minutes); without it the "
                    "torch renderer runs")
    device: EnumProperty(
        name="Device", default="auto",
        items=[("auto", "Auto", "CUDA if available, else Apple MPS, else CPU"),
               ("cpu", "CPU", "Always run on the CPU"),
               ("cuda", "CUDA", "NVIDIA GPU (fails clearly if none)"),
               ("mps", "MPS", "Apple GPU")])
    clip_model: StringProperty(name="CLIP Model", default="RN101-quickgelu",
                               description="open_clip model name")
    clip_pretrained: StringProperty(name="Weights Tag", default="openai",
                                    description="open_clip pretrained tag (ignored with a local checkpoint)")
    clip_checkpoint: StringProperty(name="Local Weights", subtype="FILE_PATH", default="",
                                    description="A local CLIP checkpoint file; overrides the weights tag")
    cache_dir: StringProperty(name="Cache Folder", subtype="DIR_PATH", default="",
                              description="Where CLIP weights are cached. Empty: open_clip's default")
    allow_download: BoolProperty(
        name="Allow Downloading Weights", default=False,
        description="Let the backend fetch missing CLIP weights (also needs Blender's Allow Online Access)")
    allow_geometry_fallback: BoolProperty(
        name="Geometry-Only Fallback", default=True,
        description="When CLIP weights are missing, run the geometry-only objective (lines + surface) with "
                    "a warning instead of stopping")

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        self._draw_backend(context, layout.box())
        col = layout.column()
        col.prop(self, "device")
        box = layout.box()  # a box like the Backend's: a column heading would land on the first checkbox
        box.label(text="CLIP", icon="IMAGE_DATA")
        col = box.column()
        self._draw_clip(context, col)
        prop_rows(col, self, "clip_model", "clip_pretrained", "clip_checkpoint", "cache_dir", "allow_download",
                  "allow_geometry_fallback")

    def _draw_backend(self, context, box) -> None:
        """The Backend box: its state in words, and Set Up / Check / Repair / Remove."""
        state = context.window_manager.splatsketch
        setting_up = state.running and state.run_kind == "setup"
        managed = managed_env(user_dir())
        box.label(text="Backend", icon="CONSOLE")
        ready = describe_env(managed) if managed else ""
        if setting_up:
            # the stage and package are in the bar; the line above says what is going on
            box.label(text="Setting up the backend (minutes; Cancel keeps the current one)", icon="IMPORT")
            status = shorten(state.status or "Starting", 60)
            progress(box, state.progress, status)
            row = box.row()
            row.operator("splatsketch.cancel", text="Cancel", icon="CANCEL")
        elif self.backend_python:
            box.label(text=f"Your own Python: {self.backend_python}", icon="INFO")
        elif managed:
            what, _, made = ready.partition(" (made ")  # not capitalize(): it lowercases "CPU"
            size = describe_size(managed)
            made = f"Set up {made.rstrip(')')}" + (f", {size} on disk" if size else "") if made else ""
            labels(box, wrap(what[:1].upper() + what[1:], 72) + ([made] if made else []), "CHECKMARK")
            if managed.get("torch_note"):  # torch from another index than its build's: say why and the cost
                labels(box, wrap(managed["torch_note"], 72), "INFO")
        else:
            box.label(text="Not set up: press Set Up Backend", icon="ERROR")
        row = box.row(align=True)
        row.enabled = not state.running
        row.operator("splatsketch.setup_backend", text="Set Up Backend" if not managed else "Repair",
                     icon="IMPORT" if not managed else "FILE_REFRESH").repair = bool(managed)
        row.operator("splatsketch.check_backend", text="Check", icon="CHECKMARK")
        remove = row.row(align=True)
        remove.enabled = bool(managed)  # nothing to remove before a set-up
        remove.operator("splatsketch.remove_backend", text="Remove", icon="TRASH")
        if state.setup_log:
            box.operator("splatsketch.open_setup_log", text="Open Set-Up Log", icon="TEXT")
        if state.backend_report and state.backend_report != f"Backend {ready}":  # not the line above again
            lines = [line for paragraph in state.backend_report.split("\n") for line in wrap(paragraph, 72)]
            labels(box, lines, "ERROR" if state.backend_error else "INFO")  # labels do not wrap
        col = box.column()
        col.enabled = not setting_up  # a change now would not reach the running set-up
        prop_rows(col, self, "torch_build", "wheel_folder", "build_kernels", "base_python", "backend_python")

    def _draw_clip(self, context, col) -> None:
        from .contract.clip_weights import approx_size_mb

        state = context.window_manager.splatsketch
        if state.clip_report:
            col.label(text=state.clip_report, icon="CHECKMARK" if state.clip_status == "present" else "INFO")
        size = approx_size_mb(self.clip_model)
        row = col.row(align=True)
        # the model is in the CLIP Model field below: with it here the label was cut off
        row.operator("splatsketch.get_clip_weights",
                     text="Get CLIP Weights" + (f" (~{size} MB)" if size else ""), icon="URL")
        row.operator("splatsketch.use_clip_file", text="Use Local File", icon="FILE_FOLDER")
        if not getattr(bpy.app, "online_access", True):
            col.label(text="Online access is off (Preferences > System): no download", icon="INFO")

    def resolved_python(self) -> str:
        return resolve_backend_python(self.backend_python, EXTENSION_DIR, user_dir())


def user_dir() -> str:
    """The extension's own user folder (jobs, logs; survives updates of the extension); a temporary
    folder when it runs as a plain add-on or module rather than an installed extension."""
    try:
        return bpy.utils.extension_path_user(__package__, create=True)
    except (ValueError, AttributeError):
        import tempfile

        path = os.path.join(tempfile.gettempdir(), "splatsketch")
        os.makedirs(path, exist_ok=True)
        return path


def clip_settings(prefs) -> dict:
    """The CLIP part of a job's settings as the preferences ``prefs`` give it (None: the defaults)."""
    from .contract.settings import ClipConfig

    default = ClipConfig()
    return {"model": getattr(prefs, "clip_model", "") or default.model,
            "pretrained": getattr(prefs, "clip_pretrained", "") or default.pretrained,
            "checkpoint": bpy.path.abspath(getattr(prefs, "clip_checkpoint", "")),
            "cache_dir": bpy.path.abspath(getattr(prefs, "cache_dir", ""))}


def get_preferences(context=None):
    """This add-on's preferences, or ``None`` when it is not enabled as an add-on (e.g. a plain import)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def backend_python(context=None) -> str:
    """The Python that runs the backend: the preferences' choice, or the default resolution (the
    checkout's .venv, else python3) when the extension is not enabled as an add-on."""
    prefs = get_preferences(context)
    return prefs.resolved_python() if prefs else resolve_backend_python("", EXTENSION_DIR, user_dir())


CLASSES = (SplatSketchPreferences,)
