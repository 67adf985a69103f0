"""Named settings presets: ``preview`` (fast on a laptop CPU) and ``final`` (CLIPasso-level quality).

A preset is a partial settings dict (the keys of ``job.json``'s ``settings``); :func:`apply_preset`
lays the user's own settings over it, so anything set explicitly wins. Figures behind the choices
are in ``docs/PERFORMANCE.md`` (section "Presets").

- ``preview``: the weight-free objective (Freestyle lines + surface, no CLIP: nothing to
  download, and on a 2-core CPU one step costs ~30 ms against several seconds for an RN101 step),
  300 iterations of 4 views, one torch thread. Suzanne: ~17 CPU-seconds of backend time, held-out
  F 0.80; the Blender target renders (24 + 8 views) cost more wall time than the optimisation.
- ``final``: CLIPasso's objective (RN101 layer2+layer3 geometric, 0.1 x semantic, 4 augmentation
  pairs) plus the geometric terms that keep the views consistent, 2000 iterations of 8 views.
  Built for a CUDA GPU (goal: <= 30 s on one H100); on a CPU it takes hours.
"""

from __future__ import annotations

import copy

from .settings import DEFAULT_LOSS_WEIGHTS, GEOMETRY_ONLY_WEIGHTS

PRESETS: dict[str, dict] = {
    "preview": {
        "losses": dict(GEOMETRY_ONLY_WEIGHTS),
        "iterations": 300,
        "views_per_step": 4,
        "augmentations": 0,
        "curves": 16,
        "progress_every": 10,
        "snapshot_every": 25,
        "best_of": 1,
        # Worst-view focus needs views to choose from: with 4 per step it chases noise (Suzanne, held-out
        # F mean / worst view: 0.77 / 0.73 without, 0.74 / 0.68 with the default 6).
        "hard_views": 0.0,
        # One torch thread: the tensors are too small for intra-op threads to pay, and on a busy
        # 2-core machine two spinning OpenMP threads cost 14x the CPU time (docs/PERFORMANCE.md).
        "threads": 1,
    },
    "final": {
        "losses": dict(DEFAULT_LOSS_WEIGHTS),
        "iterations": 2000,
        "views_per_step": 8,
        "augmentations": 4,
        "curves": 16,
        "progress_every": 20,  # a progress event reads the loss (a host-device sync on CUDA)
        "snapshot_every": 100,
        "clip": {"model": "RN101-quickgelu", "pretrained": "openai"},
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def apply_preset(name: str, settings: dict | None = None) -> dict:
    """The preset ``name``'s settings with ``settings`` laid over them (a new dict; nested ``clip`` merged).

    Raises ``ValueError`` naming the known presets when ``name`` is unknown. The result is a plain
    settings dict: validate it with :func:`contract.settings.settings_from_dict`.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(preset_names())})")
    out = copy.deepcopy(PRESETS[name])
    for key, value in (settings or {}).items():
        if key == "clip" and isinstance(value, dict) and isinstance(out.get("clip"), dict):
            out["clip"] = {**out["clip"], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out
