"""What every loss sees: fixed targets (built once per job) and the current sketch (every step).

A loss is built by a factory ``factory(ctx: LossContext) -> Loss`` registered by name in
``backend/losses/__init__.py``; calling it returns a per-view tensor ``[B]`` or a scalar. The loop
multiplies each by its weight from ``OptimizeConfig.losses`` and sums the means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from contract.settings import OptimizeConfig


@dataclass
class Targets:
    """The job's fixed data on the run's device (all views: train and held-out)."""

    viewmats: torch.Tensor  # [V,4,4] float32, OpenCV world-to-camera
    Ks: torch.Tensor  # [V,3,3] float32
    is_train: torch.Tensor  # [V] bool
    rgb: torch.Tensor  # [V,3,H,W] float32 in [0,1], the object composited over white
    alpha: torch.Tensor  # [V,H,W] float32 in [0,1]
    lines: torch.Tensor | None = None  # [V,H,W] float32 in [0,1], visible lines (1 = line)
    lines_hidden: torch.Tensor | None = None  # [V,H,W] float32 in [0,1], hidden lines
    depth: torch.Tensor | None = None  # [V,H,W] float32, camera z, 0 = background
    vertices: torch.Tensor | None = None  # [N,3] float32 normalised mesh
    faces: torch.Tensor | None = None  # [F,3] int64
    surface_samples: torch.Tensor | None = None  # [M,3] area-uniform points on the mesh
    surface_normals: torch.Tensor | None = None  # [M,3] unit normals at those points
    kept: torch.Tensor | None = None  # [F,3S+1,3] the artist's kept strokes: drawn, never moved

    @property
    def height(self) -> int:
        return int(self.rgb.shape[-2])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[-1])

    @property
    def views(self) -> int:
        return int(self.rgb.shape[0])


@dataclass
class LossInputs:
    """The sketch at the current step, for the views picked this step."""

    images: torch.Tensor  # [B,H,W] sketch render: 1 = paper, 0 = ink
    view_ids: torch.Tensor  # [B] long, indices into Targets (train views during optimisation)
    control_points: torch.Tensor  # [K,3S+1,3] strokes (backend/curves.py)
    samples: torch.Tensor  # [K,S,3] points along the curves
    progress: float = 0.0  # 0 at the first iteration, 1 at the last (for coarse-to-fine schedules)
    generator: torch.Generator | None = None  # the run's RNG (augmentations), for determinism
    augment: bool = True  # False when evaluating (no random augmentations)


class Loss(Protocol):
    name: str

    def __call__(self, inputs: LossInputs) -> torch.Tensor: ...


@dataclass
class LossContext:
    """Everything a loss factory may need; ``clip()`` loads the shared CLIP model once, lazily."""

    targets: Targets
    config: OptimizeConfig
    device: torch.device
    load_clip: Callable[[], object] | None = None
    _clip: object = field(default=None, repr=False)

    def clip(self):
        if self._clip is None:
            if self.load_clip is None:
                raise RuntimeError("this run has no CLIP loader")
            self._clip = self.load_clip()
        return self._clip

    def losses_built(self) -> None:
        """Every loss is built: CLIP's text tower (used only to encode a prompt) can go."""
        if self._clip is not None and hasattr(self._clip, "release_text_tower"):
            self._clip.release_text_tower()
