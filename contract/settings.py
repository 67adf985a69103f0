"""Typed settings shared by the job folder, the worker and the Blender add-on (numpy-free, torch-free).

Every field has a default and the ``Literal`` choices are checked by :func:`settings_from_dict`, so a
job.json written by hand fails with one clear line instead of a traceback deep in the loop.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Literal

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
RendererName = Literal["auto", "torch", "gsplat"]
InitName = Literal["random", "surface", "contour", "features"]
WidthMode = Literal["world", "pixels"]
CompileChoice = Literal["auto", "on", "off"]
TargetsName = Literal["mesh", "freestyle"]

# Loss weights used when a job does not name its own. CLIP terms follow CLIPasso (geometric 1,
# semantic 0.1); the geometric terms keep the sketch consistent between views.
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "clip_geometric": 1.0,
    "clip_semantic": 0.1,
    "lines": 1.0,
    "surface": 0.5,
    # Off by default: on the quality suite it lowered F at 16 curves on 8 of 10 meshes and pushed ink
    # off the lines at 40; pruning and the ink budget handle piling and filling.
    "repulsion": 0.0,
    # Loops kept away by two terms (docs/QUALITY.md "Loops"): turning, a quarter turn per segment and
    # three quarters per stroke (no wiggles or hatching), and coiling, no stroke coming back on itself
    # (no loops, however far a stroke bends round an outline).
    "turning": 0.02,
    "coiling": 1.5,
}
GEOMETRY_ONLY_WEIGHTS: dict[str, float] = {"lines": 1.0, "surface": 0.5, "turning": 0.02, "coiling": 1.5}
CLIP_LOSSES = ("clip_geometric", "clip_semantic")
# Keys of the loss registry (backend/losses/__init__.py checks it registers exactly these).
LOSS_NAMES = ("clip_geometric", "clip_semantic", "lines", "surface", "repulsion", "turning", "coiling")

# Upper bounds that keep a typo from allocating the machine away; they are far above useful values.
LIMITS = {
    "curves": (1, 1024),
    "segments": (1, 16),
    "iterations": (0, 1_000_000),
    "views_per_step": (1, 256),
    "samples_per_curve": (2, 4096),
    "augmentations": (0, 64),
    "augmentation_bank": (0, 256),
    "bank_refresh": (0, 256),
    "clip_views_per_pass": (0, 256),
    "best_of": (1, 64),
    "snapshot_every": (0, 1_000_000),
    "hard_views": (0.0, 16.0),
    "abstraction": (0.0, 10.0),
    "cover_balance": (0.0, 100.0),
    "prune_f_gain": (0.0, 1.0),
    "split_at": (0.0, 1.0),
    "ink_budget": (0, 1024),
}
# torch.Generator.manual_seed takes 0 .. 2**64-1 (it also takes negatives, but only as aliases of large
# seeds: -1 is 2**64-1); a best-of-N run seeds with seed, seed+1, ..., seed+N-1.
SEED_RANGE = (0, 2**64 - 1)


@dataclass
class ClipConfig:
    """Which open_clip model to load and from where. Nothing downloads unless the job allows it."""

    model: str = "RN101-quickgelu"
    pretrained: str = "openai"  # open_clip weights tag; ignored when ``checkpoint`` is set
    checkpoint: str = ""  # local weights file (state dict / open_clip checkpoint)
    cache_dir: str = ""  # open_clip / HF cache folder
    model_config: str = ""  # JSON model config file (tests ship a tiny one); registered under ``model``
    allow_download: bool = False  # the worker never reaches the network unless asked
    allow_geometry_fallback: bool = False  # run geometry-only (with a loud warning) if weights are missing


@dataclass
class OptimizeConfig:
    """Settings of one optimisation run. Distances are in normalised object space (unit sphere)."""

    curves: int = 16  # strokes
    # Cubic segments per stroke, joined G1 (a Blender spline of segments+1 points, ALIGNED handles);
    # 1 is the seed's single cubic.
    segments: int = 4
    iterations: int = 500
    views_per_step: int = 8
    samples_per_curve: int = 64
    stroke_width: float = 0.012  # Gaussian scale (sigma) of each splat, normalised units (or px)
    width_mode: WidthMode = "world"
    # gsplat skips a splat that would take a pixel's transmittance below 1e-4 (order-dependent); at
    # opacity <= 0.97 that changes a pixel by < 1e-4/(1-0.97) = 3.3e-3, so both renderers agree.
    opacity: float = 0.95
    init: InitName = "features"
    # Where the training views' line images come from: "freestyle" renders them with Blender's Freestyle
    # (and Workbench for the picture and depth), a third of a second to two seconds a view on a CPU;
    # "mesh" draws them (and the depth, the silhouette and a grey picture) from the mesh in the backend,
    # about a second for 32 views. "mesh" is not the default: on the wicker chair its lines cost 0.17 of
    # held-out F (docs/PERFORMANCE.md "Training targets"). The evaluation's own views are always
    # Freestyle's; jobs whose views.npz already holds lines (pictures) keep them either way.
    targets: TargetsName = "freestyle"
    # How evenly the feature-line initialisation's cover serves the training views (feature_lines.greedy_cover):
    # 0 counts line pixels, so the views where the object is large decide; 0.1 weighs each view's pixels
    # by how little of that view is covered yet. 0.1 lifted the worst held-out view on 7 of 10 suite
    # meshes at the same mean F.
    cover_balance: float = 0.1
    seed: int = 0
    best_of: int = 1
    # Adam's step size, decayed to a tenth over the run (cosine). 0.03 over 0.02: held-out F +0.005 on
    # the quality suite (16 strokes, 3 seeds; 0.014 lower, 0.04 level).
    lr: float = 0.03
    losses: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))
    augmentations: int = 4
    # CLIP's augmented targets come from a bank of this many augmentations per training view, encoded
    # once; a step warps its sketch with the bank's own warps and encodes only the sketch (the target
    # pass is ~3 s of an ~18 s CPU step, docs/PERFORMANCE.md). 0 draws and encodes fresh ones every step
    # (CLIPasso). ``bank_refresh`` entries (oldest first) are re-drawn and re-encoded each step.
    augmentation_bank: int = 8
    bank_refresh: int = 1
    # Views per CLIP forward + backward inside a step: fewer hold fewer activations (peak memory);
    # 0 = one on a CPU (RN101, 4 views: ~1.5 GiB less peak memory for ~15% more time), all at once on
    # a GPU (fewer, larger launches). The result does not depend on it.
    clip_views_per_pass: int = 0
    # torch.compile CLIP's image tower where gradients flow (the step's sketch passes): 10-15% less CPU
    # time per step after a one-off compile (~100 s on a 2-core CPU, needs a C++ compiler). "auto" does it
    # for CPU runs of at least 1000 steps; not yet on GPUs (unmeasured there).
    clip_compile: CompileChoice = "auto"
    prompt: str = ""
    prune: bool = True
    # When the mid-run pruning removes strokes, start as many new ones where the training views still
    # have lines no stroke covers, so the sketch ends with the strokes asked for (not fewer).
    reseed: bool = True
    # The mid-run pruning also drops (and, with ``reseed``, re-seeds) the strokes whose removal raises
    # the training views' mean line F by more than this: strokes on a line in a few views and across
    # the body in the rest. 0 turns it off. On the quality suite it acted on fish and mug only (held-out
    # worst view of fish +0.014, mean F of mug +0.008 over 3 seeds; docs/QUALITY.md).
    prune_f_gain: float = 0.002
    # Coarse to fine: with an even ``segments`` and 0 < split_at < 1, the run starts with half the
    # segments per stroke and halves every segment (exactly, de Casteljau at its middle) at this
    # fraction of the run. 0 optimises the full chains from the start.
    split_at: float = 0.0
    # Ink budget: with more curves than this, pruning also drops the curves that mostly fill the
    # silhouette's interior (most interior first, never below this many): the seed's volume filling at
    # 40 curves. 0 turns it off; at or below the budget it changes nothing.
    ink_budget: int = 16
    # Each step weighs its views by (view loss / batch mean) ** hard_views: 0 is the plain mean; higher
    # values spend the effort on the views the sketch reads worst from (the per-view minimum). 6 was
    # chosen on the quality suite: it lifted the worst view on lamp, plane, teapot.
    hard_views: float = 6.0
    # Abstraction levels: each step also adds the lines loss of the first quarter of the strokes alone,
    # times this, so the sketch shown at a quarter of its strokes (Strokes Shown) still draws the whole
    # shape; 0 is off. At 1, on the ten shared meshes (docs/QUALITY.md): the first 4 of 16 strokes as
    # good as a 4-stroke run on average (0.066 below it when off), the whole sketch's F unchanged on
    # average, runs 15-35% longer. Off by default until the quality suite's three seeds agree.
    abstraction: float = 0.0
    snapshot_every: int = 10
    progress_every: int = 10  # progress events read values from the device: not every step (no syncs)
    device: DeviceName = "auto"
    renderer: RendererName = "auto"
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    clip: ClipConfig = field(default_factory=ClipConfig)

    def uses_clip(self) -> bool:
        return any(self.losses.get(name, 0.0) > 0 for name in CLIP_LOSSES)


class SettingsError(ValueError):
    """A setting is missing, of the wrong type or out of range; the message says which."""


def _check_literal(name: str, value, hint) -> None:
    choices = typing.get_args(hint)
    if value not in choices:
        raise SettingsError(f"setting '{name}' must be one of {list(choices)}, got {value!r}")


def _coerce(name: str, value, hint):
    origin = typing.get_origin(hint)
    if origin is Literal:
        _check_literal(name, value, hint)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"setting '{name}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"setting '{name}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SettingsError(f"setting '{name}' must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingsError(f"setting '{name}' must be a string, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"setting '{name}' must be an object of name: weight, got {value!r}")
        out = {}
        for key, weight in value.items():
            out[str(key)] = _coerce(f"{name}.{key}", weight, float)
            if out[str(key)] < 0:
                raise SettingsError(f"setting '{name}.{key}' must be >= 0, got {weight!r}")
        return out
    raise SettingsError(f"setting '{name}' has an unsupported type")


def _from_dict(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise SettingsError(f"'{prefix or 'settings'}' must be a JSON object")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"unknown setting '{prefix}{unknown[0]}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(prefix + key, value, hint)
    return cls(**kwargs)


def settings_from_dict(data: dict) -> OptimizeConfig:
    """Build and range-check an :class:`OptimizeConfig` from JSON data; raise SettingsError."""
    cfg = _from_dict(OptimizeConfig, data)
    for name, (low, high) in LIMITS.items():
        value = getattr(cfg, name)
        if not low <= value <= high:
            raise SettingsError(f"setting '{name}' must be between {low} and {high}, got {value}")
    low, high = SEED_RANGE
    if not low <= cfg.seed <= high:
        raise SettingsError(f"setting 'seed' must be between {low} and {high} (the range of torch's random "
                            f"generator), got {cfg.seed}")
    if cfg.seed + cfg.best_of - 1 > high:
        raise SettingsError(f"setting 'seed' must be between {low} and {high} - {cfg.best_of - 1} with best_of "
                            f"{cfg.best_of} (the run also uses seed+1 .. seed+{cfg.best_of - 1}), got {cfg.seed}")
    if not 0 < cfg.stroke_width <= 1.0 and cfg.width_mode == "world":
        raise SettingsError(f"setting 'stroke_width' must be in (0, 1] normalised units, got {cfg.stroke_width}")
    if cfg.width_mode == "pixels" and not 0 < cfg.stroke_width <= 64:
        raise SettingsError(f"setting 'stroke_width' must be in (0, 64] pixels, got {cfg.stroke_width}")
    if not 0 < cfg.opacity <= 1:
        raise SettingsError(f"setting 'opacity' must be in (0, 1], got {cfg.opacity}")
    if cfg.augmentation_bank and cfg.augmentation_bank < cfg.augmentations:
        raise SettingsError(f"setting 'augmentation_bank' must be 0 or at least 'augmentations' "
                            f"({cfg.augmentations}), got {cfg.augmentation_bank}")
    if not 0 < cfg.lr <= 10:
        raise SettingsError(f"setting 'lr' must be in (0, 10], got {cfg.lr}")
    for name in cfg.losses:
        if name not in LOSS_NAMES:
            raise SettingsError(f"unknown loss '{name}' (known: {', '.join(LOSS_NAMES)})")
    if not any(w > 0 for w in cfg.losses.values()):
        raise SettingsError("setting 'losses' gives every loss weight 0: nothing to optimise")
    return cfg


def settings_to_dict(cfg: OptimizeConfig) -> dict:
    return dataclasses.asdict(cfg)
