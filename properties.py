"""Per-scene sketch settings and per-session runtime state.

Settings live on the Scene (saved with the .blend, so a sketch can be re-run the same way); the
running state lives on the WindowManager, which Blender does not save, so a .blend saved mid-run
never reopens "running". Which property is which setting (and which CLI flag) is one table,
``settings_map.py``; ``settings_dict`` adds the per-machine preferences and validates.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .contract.settings import DEFAULT_LOSS_WEIGHTS, OptimizeConfig, settings_from_dict
from .scene import id_keys
from .settings_map import props_to_settings

_D = OptimizeConfig()
_LOSS_DESCRIPTIONS = {
    "clip_geometric": "CLIP layer activations of sketch vs. render (shape, CLIPasso's geometric term)",
    "clip_semantic": "CLIP embedding similarity (meaning; also against the prompt)",
    "lines": "Match the object's silhouette, contour and crease lines",
    "surface": "Keep curves on the object's surface",
    "repulsion": "Keep curves from piling onto each other",
    "turning": "Penalise strokes that turn more than a quarter turn per segment or three quarters in all "
               "(wiggles, hooks, hatching)",
    "coiling": "Penalise strokes that come back on themselves (loops, hairpins), however long they bend",
}


def _weight(name: str) -> dict:
    return {"name": name.replace("_", " ").title(), "default": DEFAULT_LOSS_WEIGHTS[name], "min": 0.0,
            "soft_max": 10.0, "description": _LOSS_DESCRIPTIONS[name]}


def _mesh_only(_self, obj):
    return obj.type == "MESH"


class SplatSketchSettings(bpy.types.PropertyGroup):
    source: PointerProperty(name="Object", type=bpy.types.Object, poll=_mesh_only,
                            description="Mesh to sketch. Empty: the active object")
    curves: IntProperty(name="Curves", default=_D.curves, min=1, max=1024, soft_min=2, soft_max=64,
                        description="Number of strokes in the sketch (each one Bézier spline)")
    segments: IntProperty(name="Segments", default=_D.segments, min=1, max=16, soft_max=6,
                          description="Cubic segments per stroke, joined smoothly (aligned handles): more "
                                      "can follow a longer, bending outline; 1 is a single cubic")
    iterations: IntProperty(name="Iterations", default=_D.iterations, min=1, max=100000, soft_max=2000,
                            description="Optimisation steps (more: finer, slower)")
    train_views: IntProperty(name="Views", default=24, min=1, max=256, soft_max=64,
                             description="Camera views around the object used for optimisation")
    heldout_views: IntProperty(name="Held-out Views", default=8, min=0, max=64,
                               description="Extra views only used to measure the result")
    stroke_width: FloatProperty(name="Stroke Width", default=_D.stroke_width, min=0.0005, max=1.0,
                                soft_max=0.1, precision=4, step=0.1,
                                description="Stroke width (Gaussian sigma) as a fraction of the object's "
                                            "bounding radius; also the bevel of the result")
    init: EnumProperty(name="Start", default=_D.init, description="How curves are initialised",
                       items=[("features", "Feature Lines", "Strokes fitted to the mesh's creases, open edges "
                                                            "and contours, picked to cover the views' lines"),
                              ("surface", "Surface", "Short curves spread over the mesh surface"),
                              ("contour", "Contour", "Curves lifted from the views' contour lines"),
                              ("random", "Random", "Random curves in the bounding sphere (baseline)")])
    targets: EnumProperty(name="Targets", default=_D.targets,
                          description="Where the training views' line drawings come from",
                          items=[("mesh", "Mesh", "Drawn from the mesh by the backend: seconds"),
                                 ("freestyle", "Freestyle", "Rendered by Freestyle through Cycles: about a "
                                                            "second a view")])
    clip_compile: EnumProperty(name="Compile CLIP", default=_D.clip_compile,
                               description="torch.compile CLIP's image tower: CLIP steps about 10-15% faster on a "
                                           "CPU, after a one-off compile of about 100 s (needs a C++ compiler)",
                               items=[("auto", "Auto", "For CPU runs of 1000 steps or more"),
                                      ("on", "On", "Always (on a GPU also CUDA graphs; not measured there yet)"),
                                      ("off", "Off", "Never")])
    seed: IntProperty(name="Seed", default=_D.seed, min=0, description="Same seed, same settings: same curves")
    prompt: StringProperty(name="Prompt", default="", description="Optional text the sketch should read as")
    use_clip: BoolProperty(name="CLIP Objective", default=True,
                           description="Use CLIP losses (needs weights); off: geometry-only objective")
    # Advanced
    views_per_step: IntProperty(name="Views per Step", default=_D.views_per_step, min=1, max=256)
    best_of: IntProperty(name="Best of N", default=_D.best_of, min=1, max=64,
                         description="Run N seeds and keep the one with the lowest held-out loss")
    image_size: IntProperty(name="Image Size", default=224, min=32, max=1024, soft_max=512,
                            description="Pixel size of the target renders (CLIP sees 224)")
    augmentations: IntProperty(name="Augmentations", default=_D.augmentations, min=0, max=64,
                               description="Augmented pairs per view for the CLIP losses (CLIPasso: 4)")
    lr: FloatProperty(name="Learning Rate", default=_D.lr, min=1e-5, max=10.0, precision=4)
    ink_budget: IntProperty(name="Ink Budget", default=_D.ink_budget, min=0, max=1024,
                            description="With more curves than this, curves that mostly fill the object's "
                                        "interior are pruned (never below this many); 0: off")
    reseed: BoolProperty(name="Re-seed Pruned Strokes", default=_D.reseed,
                         description="When pruning removes strokes mid-run, start new ones where the views "
                                     "still have lines no stroke covers, so the sketch keeps its stroke count")
    hard_views: FloatProperty(name="Worst-View Focus", default=_D.hard_views, min=0.0, max=16.0, soft_max=12.0,
                              description="Weigh each step's views by their error to this power: 0 treats every "
                                          "view alike; higher spends the effort on the views the sketch reads "
                                          "worst from")
    abstraction: FloatProperty(name="Abstraction Levels", default=_D.abstraction, min=0.0, max=10.0, soft_max=2.0,
                               description="Also fit the first quarter of the strokes on their own, so the "
                                           "sketch still reads with Strokes Shown at a quarter (about 20% "
                                           "slower); 0: off")
    w_clip_geometric: FloatProperty(**_weight("clip_geometric"))
    w_clip_semantic: FloatProperty(**_weight("clip_semantic"))
    w_lines: FloatProperty(**_weight("lines"))
    w_surface: FloatProperty(**_weight("surface"))
    w_repulsion: FloatProperty(**_weight("repulsion"))
    w_turning: FloatProperty(**_weight("turning"))
    w_coiling: FloatProperty(**_weight("coiling"))
    preset: StringProperty(name="Preset", default="", options={"HIDDEN"},
                           description="The last preset applied: it also sets what has no property here "
                                       "(threads, progress cadence)")


class SplatSketchState(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)
    cancel_requested: BoolProperty(default=False)
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status: StringProperty(default="")
    summary: StringProperty(default="")
    last_result: StringProperty(default="", description="Name of the last sketch object")
    last_error: StringProperty(default="")
    run_kind: StringProperty(default="", description="What runs: 'job', 'evaluation' or 'setup'")
    setup_log: StringProperty(default="", description="The last backend set-up's log file")
    clip_status: StringProperty(default="", description="'present', 'missing', or '' before a check")
    clip_report: StringProperty(default="")
    backend_report: StringProperty(default="")
    backend_error: BoolProperty(default=False)


def settings_dict(props, prefs=None) -> dict:
    """The job's ``settings`` (``OptimizeConfig`` field names), validated by the backend's own checker."""
    from .preferences import clip_settings

    settings, _ = props_to_settings(props)
    settings["device"] = getattr(prefs, "device", "auto")
    settings["clip"] = {
        **clip_settings(prefs),
        "allow_download": bool(getattr(prefs, "allow_download", False))
        and bool(getattr(bpy.app, "online_access", True)),
        "allow_geometry_fallback": bool(getattr(prefs, "allow_geometry_fallback", False)),
    }
    settings_from_dict(settings)  # raises SettingsError with one clear line
    return settings


def job_params(props) -> dict:
    """Arguments of ``scene.job_folder.write_job`` that are not optimiser settings."""
    return props_to_settings(props)[1]


def _get_shown(obj) -> int:
    from .scene.stroke_style import shown_count

    return shown_count(obj) if obj.type == "CURVE" else 0


def _set_shown(obj, value: int) -> None:
    """Shown as asked; at or above the sketch's count, every stroke (also splines drawn in later)."""
    from .scene import stroke_style

    if obj.type == "CURVE" and stroke_style.style_modifier(obj) is not None:
        total = len(obj.data.splines)
        value = max(int(value), 1)  # at least one stroke (a limit of 0 would mean all of them)
        stroke_style.set_input(obj, "Stroke Limit", value if value < total else stroke_style.ALL_STROKES)


def register_properties():
    bpy.types.Scene.splatsketch = PointerProperty(type=SplatSketchSettings)
    bpy.types.WindowManager.splatsketch = PointerProperty(type=SplatSketchState)
    # On the sketch: the first N strokes (most important first) are drawn; live, no new run
    setattr(bpy.types.Object, id_keys.STROKES_SHOWN, IntProperty(
        name="Strokes Shown", min=1, get=_get_shown, set=_set_shown, options=set(),
        description="Draw the sketch's N most important strokes: fewer is more abstract"))


def unregister_properties():
    delattr(bpy.types.Object, id_keys.STROKES_SHOWN)
    del bpy.types.WindowManager.splatsketch
    del bpy.types.Scene.splatsketch


CLASSES = (SplatSketchSettings, SplatSketchState)
