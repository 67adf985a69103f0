"""Add-on preferences: where the backend Python lives and how it loads CLIP.

These are per-machine choices (a studio's GPU box differs from a laptop), so they live in the
preferences rather than in the .blend; per-sketch choices live in ``properties.py``.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from .jobs import resolve_backend_python

EXTENSION_DIR = os.path.dirname(os.path.abspath(__file__))


class SplatSketchPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Python with torch that runs the optimisation. Empty: the extension folder's "
                    ".venv (development checkout), else python3 on PATH")
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
        name="Geometry-Only Fallback", default=False,
        description="When CLIP weights are missing, run the geometry-only objective with a warning "
                    "instead of stopping")

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        col = layout.column()
        col.prop(self, "backend_python")
        if not self.backend_python:
            col.label(text=f"Auto: {self.resolved_python()}", icon="INFO")
        row = col.row()
        row.operator("splatsketch.check_backend", icon="CHECKMARK")
        state = context.window_manager.splatsketch
        if state.backend_report:
            for line in state.backend_report.split("\n"):
                col.label(text=line, icon="ERROR" if state.backend_error else "CHECKMARK")
        col.prop(self, "device")
        col = layout.column(heading="CLIP")
        col.prop(self, "clip_model")
        col.prop(self, "clip_pretrained")
        col.prop(self, "clip_checkpoint")
        col.prop(self, "cache_dir")
        col.prop(self, "allow_download")
        col.prop(self, "allow_geometry_fallback")

    def resolved_python(self) -> str:
        return resolve_backend_python(self.backend_python, EXTENSION_DIR)


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


def get_preferences(context=None):
    """This add-on's preferences, or ``None`` when it is not enabled as an add-on (e.g. a plain import)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def backend_python(context=None) -> str:
    """The Python that runs the backend: the preferences' choice, or the default resolution (the
    checkout's .venv, else python3) when the extension is not enabled as an add-on."""
    prefs = get_preferences(context)
    return prefs.resolved_python() if prefs else resolve_backend_python("", EXTENSION_DIR)


CLASSES = (SplatSketchPreferences,)
