"""Job arrays (numpy, uint8 images) -> :class:`Targets` on the run's device, built once per job."""

from __future__ import annotations

import numpy as np
import torch

from contract.settings import OptimizeConfig

from .losses.base import Targets
from .surface_samples import sample_surface

SURFACE_SAMPLES = 8000


def build_targets(arrays: dict[str, np.ndarray], cfg: OptimizeConfig, device: torch.device) -> Targets:
    def tensor(a, dtype=torch.float32):
        return torch.as_tensor(np.ascontiguousarray(a)).to(device=device, dtype=dtype)

    rgba = tensor(arrays["rgba"]) / 255.0
    alpha = rgba[..., 3]
    rgb = rgba[..., :3] * alpha[..., None] + (1.0 - alpha[..., None])  # straight alpha over white
    targets = Targets(
        viewmats=tensor(arrays["viewmats"]),
        Ks=tensor(arrays["Ks"]),
        is_train=tensor(arrays["is_train"], torch.bool),
        rgb=rgb.permute(0, 3, 1, 2).contiguous(),
        alpha=alpha.contiguous(),
        lines=tensor(arrays["lines"]) / 255.0 if "lines" in arrays else None,
        lines_hidden=tensor(arrays["lines_hidden"]) / 255.0 if "lines_hidden" in arrays else None,
        depth=tensor(arrays["depth"]) if "depth" in arrays else None,
    )
    if "kept_strokes" in arrays and len(arrays["kept_strokes"]):
        targets.kept = tensor(arrays["kept_strokes"])
    if "vertices" in arrays:
        targets.vertices = tensor(arrays["vertices"])
        targets.faces = tensor(arrays["faces"], torch.long)
        generator = torch.Generator().manual_seed(cfg.seed)
        targets.surface_samples, targets.surface_normals = sample_surface(
            targets.vertices, targets.faces, SURFACE_SAMPLES, generator)
    return targets
