"""A sketch as the optimiser sees it: control points sampled, rendered and judged the same way in
the loop, in pruning and in ranking."""

from __future__ import annotations

import torch

from contract.settings import OptimizeConfig

from .curves import sample_curves
from .losses import LossInputs, Targets, total_loss
from .render import Renderer, pixel_scales


class Sketch:
    """The job's settings, targets and renderer, with the artist's kept strokes drawn into every picture."""

    def __init__(self, cfg: OptimizeConfig, targets: Targets, renderer: Renderer):
        self.cfg, self.targets, self.renderer = cfg, targets, renderer
        # the artist's kept strokes: in every picture of the sketch, so they count as covering their lines
        self.kept = None if targets.kept is None else self.samples(targets.kept).reshape(-1, 3).detach()

    def samples(self, control_points: torch.Tensor) -> torch.Tensor:
        return sample_curves(control_points, self.cfg.samples_per_curve)

    def render(self, samples: torch.Tensor, view_ids: torch.Tensor, with_kept: bool = True) -> torch.Tensor:
        """Transmittance images ``[V,H,W]`` of the strokes ``samples`` (and the kept strokes)."""
        t = self.targets
        means = samples.reshape(-1, 3)
        if with_kept and self.kept is not None:
            means = torch.cat([self.kept, means])
        viewmats, Ks = t.viewmats[view_ids], t.Ks[view_ids]
        if self.cfg.width_mode == "pixels":
            scales = pixel_scales(means, viewmats, Ks, self.cfg.stroke_width)
        else:
            scales = torch.full((means.shape[0],), self.cfg.stroke_width, device=means.device)
        return self.renderer(means, scales, self.cfg.opacity, viewmats, Ks, t.width, t.height)

    def world_width(self) -> float:
        """Stroke sigma in normalised units (pixel widths converted at the mean camera distance)."""
        if self.cfg.width_mode == "world":
            return self.cfg.stroke_width
        t = self.targets
        distance = t.viewmats[:, :3, 3].norm(dim=1).mean()
        return float(self.cfg.stroke_width * distance / t.Ks[:, 0, 0].mean())


@torch.no_grad()
def evaluate_views(sketch: Sketch, losses, control_points: torch.Tensor, view_ids: torch.Tensor,
                   batch: int) -> torch.Tensor:
    """Total loss per view, without augmentations, for ``view_ids``."""
    samples = sketch.samples(control_points)
    out = []
    for start in range(0, len(view_ids), batch):
        ids = view_ids[start:start + batch]
        images = sketch.render(samples, ids)
        inputs = LossInputs(images, ids, control_points, samples, progress=1.0, augment=False)
        total, _ = total_loss(losses, inputs, per_view=True)
        out.append(torch.as_tensor(total, device=images.device).expand(len(ids)))
    return torch.cat(out) if out else torch.zeros(0)
