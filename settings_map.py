"""One table: panel property <-> job setting <-> command-line flag.

The panel (``properties.settings_dict``), its preset buttons (``preset_to_props``) and the headless
command (``cli.py``: its flags, ``--preset``) all read this table, so a setting cannot mean one thing
in the panel and another on the command line. No bpy here: the functions take any object with the
panel's attribute names.

``setting`` is a key of the job's ``settings`` (``contract.settings.OptimizeConfig``), or ``job.KEY``
for the scene-side job parameters (``train_views``, ``heldout_views``, ``size``: how many views
Blender renders, at what size).
"""

from __future__ import annotations

from dataclasses import dataclass

from .contract.presets import PRESETS
from .contract.settings import CLIP_LOSSES, DEFAULT_LOSS_WEIGHTS


@dataclass(frozen=True)
class Field:
    prop: str  # SplatSketchSettings property
    setting: str  # settings key, or "job.<param>"
    flag: str | None  # command-line option, None when only the panel has it
    kind: type
    help: str = ""
    choices: tuple = ()

    @property
    def job_param(self) -> str | None:
        return self.setting[4:] if self.setting.startswith("job.") else None


FIELDS = (
    Field("curves", "curves", "--curves", int, "number of strokes"),
    Field("segments", "segments", "--segments", int, "cubic segments per stroke, joined smoothly (1: one cubic)"),
    Field("iterations", "iterations", "--iterations", int, "optimisation steps (0: the initial strokes)"),
    Field("train_views", "job.train_views", "--views", int, "training views around the object"),
    Field("heldout_views", "job.heldout_views", "--heldout-views", int, "extra views only used to measure"),
    Field("image_size", "job.size", "--image-size", int, "pixel size of the target renders"),
    Field("stroke_width", "stroke_width", "--width", float, "stroke width, fraction of the object's bounding radius"),
    Field("init", "init", "--init", str, "how strokes start", ("features", "surface", "contour", "random")),
    Field("targets", "targets", "--targets", str,
          "training line drawings: drawn from the mesh (fast) or rendered by Freestyle", ("mesh", "freestyle")),
    Field("seed", "seed", "--seed", int, "same seed, same settings: same strokes"),
    Field("prompt", "prompt", "--prompt", str, "text the sketch should read as (CLIP)"),
    Field("views_per_step", "views_per_step", "--views-per-step", int, "views rendered per step"),
    Field("best_of", "best_of", "--best-of", int, "run N seeds, keep the lowest held-out loss"),
    Field("augmentations", "augmentations", "--augmentations", int, "augmented pairs per view for CLIP"),
    Field("clip_compile", "clip_compile", "--clip-compile", str,
          "torch.compile CLIP's image tower (auto: CPU runs of 1000+ steps)", ("auto", "on", "off")),
    Field("lr", "lr", "--lr", float, "learning rate"),
    Field("ink_budget", "ink_budget", "--ink-budget", int,
          "beyond N strokes, prune strokes that mostly fill the interior (0: off; default 16)"),
    Field("reseed", "reseed", "--reseed", bool, "start new strokes where lines are missing when pruning removes some"),
    Field("hard_views", "hard_views", "--worst-view-focus", float,
          "weigh each step's views by their error to this power (0: all alike; default 6)"),
    Field("abstraction", "abstraction", "--abstraction", float,
          "also fit the first quarter of the strokes alone, so fewer strokes shown still read (0: off)"),
)
LOSS_PROPS = {name: f"w_{name}" for name in DEFAULT_LOSS_WEIGHTS}  # loss name -> panel weight property
BY_FLAG = {f.flag: f for f in FIELDS if f.flag}
_PROP_SETTINGS = {f.setting for f in FIELDS if not f.job_param}  # settings a panel property gives


def props_to_settings(props) -> tuple[dict, dict]:
    """``(settings, job_params)`` from the panel's properties: the preset chosen there (if any) gives
    the keys the panel has no property for (threads, progress cadence), the properties the rest."""
    preset = getattr(props, "preset", "") or ""
    settings = {k: v for k, v in PRESETS.get(preset, {}).items() if k not in _PROP_SETTINGS and k != "losses"}
    params = {}
    for f in FIELDS:
        value = getattr(props, f.prop)
        value = value.strip() if isinstance(value, str) and f.prop == "prompt" else value
        if f.job_param:
            params[f.job_param] = value
        else:
            settings[f.setting] = value
    losses = {name: float(getattr(props, prop)) for name, prop in LOSS_PROPS.items()}
    settings["losses"] = active_losses(losses, clip=props.use_clip)
    return settings, params


def active_losses(losses: dict, clip: bool = True) -> dict:
    """The weights that count (a weight of 0 is the same as no term), without CLIP when ``clip`` is off."""
    return {k: float(v) for k, v in losses.items() if v > 0 and (clip or k not in CLIP_LOSSES)}



def preset_to_props(name: str, props) -> None:
    """Set the panel's properties as the preset ``name`` gives them: every weight the preset leaves
    out is 0 (as ``--preset`` runs it), CLIP stays off unless the preset weighs a CLIP loss."""
    preset = PRESETS[name]
    for f in FIELDS:
        if not f.job_param and f.setting in preset:
            setattr(props, f.prop, preset[f.setting])
    weights = preset.get("losses", {})
    props.use_clip = any(weights.get(n, 0) > 0 for n in CLIP_LOSSES)
    for loss, prop in LOSS_PROPS.items():
        if loss in CLIP_LOSSES and not props.use_clip:
            continue  # dropped with use_clip off; keep the user's CLIP weights for when it is on again
        setattr(props, prop, float(weights.get(loss, 0.0)))
    props.preset = name


def apply_flags(args, settings: dict, params: dict) -> None:
    """Lay the command line's flags from this table over ``settings`` / ``params`` (in place)."""
    for flag, f in BY_FLAG.items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        if f.job_param:
            params[f.job_param] = value
        else:
            settings[f.setting] = value


def add_flags(group) -> None:
    """The table's flags on an argparse group."""
    import argparse

    for f in FIELDS:
        if f.flag and f.kind is bool:  # --reseed / --no-reseed; absent: the preset's or default value
            group.add_argument(f.flag, action=argparse.BooleanOptionalAction, default=None, help=f.help)
        elif f.flag:
            kwargs = {"type": f.kind, "help": f.help}
            if f.choices:
                kwargs["choices"] = list(f.choices)
            group.add_argument(f.flag, **kwargs)
