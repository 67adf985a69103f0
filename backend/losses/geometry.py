"""Weight-free losses: the sketch against line drawings of the object, and 3D terms on the curves.

``lines`` is built to avoid the failure of a plain blurred L2 (which shrinks every curve to a dot:
less ink, less error). It has two explicit halves:

- precision: the mean distance (pixels, soft-capped) from each unit of ink to the nearest target
  line, visible or hidden (a wire sketch may show structure behind the front surface);
- recall: how much of each *visible* target line is covered by the blurred ink, normalised by the
  blurred target so that a stroke lying on a line scores 1 at every blur scale.

The blur shrinks from coarse to fine over the run, so far-away lines still pull early on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from contract.protocol import MESH_NPZ, VIEWS_NPZ

from ..curves import segment_count
from ..imageops import distance_transform, distance_transform_3d, gaussian_blur
from .base import LossContext, LossInputs

PRECISION_CAP_PX = 12.0  # distances beyond this no longer grow the penalty (gradient fades smoothly)
PRECISION_WEIGHT = 2.0  # chosen on Suzanne held-out F (1: 0.803, 2: 0.815, 4: 0.791)
BLUR_END_PX = 1.5
BLUR_START_PX = 6.0

# A line counts as covered once the blurred ink reaches this fraction of the blurred line: one stroke
# on a line saturates it, so a second stroke on the same line earns nothing (no reward for piling up).
COVERED_AT = 0.7


def blur_sigma(progress: float) -> float:
    """Coarse-to-fine blur schedule (geometric interpolation between start and end)."""
    p = min(max(progress, 0.0), 1.0)
    return BLUR_START_PX * (BLUR_END_PX / BLUR_START_PX) ** p


class LinesLoss:
    name = "lines"

    def __init__(self, ctx: LossContext, recall_weight: float = 1.0, precision_weight: float = PRECISION_WEIGHT):
        t = ctx.targets
        if t.lines is None:
            raise ValueError(f"the 'lines' loss needs line images ('lines' in {VIEWS_NPZ})")
        self.visible = t.lines
        all_lines = t.lines if t.lines_hidden is None else torch.maximum(t.lines, t.lines_hidden)
        dist = distance_transform(all_lines > 0.5).to(t.lines.device)
        # Soft cap: ~linear near the lines, saturating at PRECISION_CAP_PX.
        self.distance_cost = PRECISION_CAP_PX * torch.tanh(dist / PRECISION_CAP_PX)
        self.recall_weight = recall_weight
        self.precision_weight = precision_weight
        self._blurred_targets: dict[float, torch.Tensor] = {}

    def _blurred_target(self, sigma: float) -> torch.Tensor:
        key = round(sigma, 2)
        if key not in self._blurred_targets:
            self._blurred_targets = {key: gaussian_blur(self.visible, key)}  # keep only the current scale
        return self._blurred_targets[key]

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        ink = 1.0 - inputs.images
        ids = inputs.view_ids
        cost = self.distance_cost[ids]
        precision = (ink * cost).sum(dim=(1, 2)) / (ink.sum(dim=(1, 2)) + 1.0)

        sigma = round(blur_sigma(inputs.progress), 2)
        target = self.visible[ids]
        blurred_target = self._blurred_target(sigma)[ids]
        blurred_ink = gaussian_blur(ink, sigma)
        coverage = torch.clamp(blurred_ink / (COVERED_AT * blurred_target + 1e-3), max=1.0)
        recall = (target * coverage).sum(dim=(1, 2)) / (target.sum(dim=(1, 2)) + 1e-6)
        return self.precision_weight * precision / PRECISION_CAP_PX + self.recall_weight * (1.0 - recall)


class SurfaceLoss:
    """Curve samples stay near the mesh surface.

    Distance to the surface is looked up (trilinearly) in a grid precomputed once from area-uniform
    surface samples, so each step costs a ``grid_sample`` whatever the mesh or curve count.
    """

    name = "surface"
    GRID = 64
    EXTENT = 1.25  # the grid spans [-EXTENT, EXTENT]^3; the object lies in the unit sphere

    def __init__(self, ctx: LossContext):
        if ctx.targets.surface_samples is None:
            raise ValueError(f"the 'surface' loss needs the mesh ({MESH_NPZ})")
        self.grid = distance_grid(ctx.targets.surface_samples, self.GRID, self.EXTENT)
        self.scale = ctx.config.stroke_width if ctx.config.width_mode == "world" else 0.01

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        d = sample_grid(self.grid, inputs.samples.reshape(-1, 3), self.EXTENT)
        # In stroke widths, so the weight means the same at any width.
        return ((d / self.scale) ** 2).mean() * 1e-2


@torch.no_grad()
def distance_grid(points: torch.Tensor, resolution: int, extent: float) -> torch.Tensor:
    """``[1,1,R,R,R]`` unsigned distance from grid nodes to the surface sampled by ``points``.

    Nodes nearest to a sample are the seeds; an exact 3D distance transform spreads from them
    (within half a cell of the true distance, ample for a penalty), in well under a second.
    """
    cell = 2 * extent / (resolution - 1)
    idx = ((points + extent) / cell).round().long().clamp(0, resolution - 1)
    seeds = torch.zeros((resolution,) * 3, dtype=torch.bool, device=points.device)
    seeds[idx[:, 2], idx[:, 1], idx[:, 0]] = True  # [z, y, x] as grid_sample reads it
    return (distance_transform_3d(seeds) * cell)[None, None]


def sample_grid(grid: torch.Tensor, points: torch.Tensor, extent: float) -> torch.Tensor:
    """Trilinear lookup of ``grid`` at ``points [N,3]``; outside the grid, distance grows linearly."""
    coords = points / extent
    inside = coords.clamp(-1.0, 1.0)
    d = F.grid_sample(grid, inside.view(1, -1, 1, 1, 3), mode="bilinear", align_corners=True).view(-1)
    return d + (coords - inside).norm(dim=1) * extent


class RepulsionLoss:
    """Samples of different curves push apart within a few stroke widths (no piling up, no filling)."""

    name = "repulsion"

    def __init__(self, ctx: LossContext, reach_widths: float = 4.0, per_curve: int = 16):
        width = ctx.config.stroke_width if ctx.config.width_mode == "world" else 0.01
        self.reach = reach_widths * width
        self.per_curve = per_curve

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        K, S, _ = inputs.samples.shape
        if K < 2:
            return inputs.samples.sum() * 0.0
        step = max(1, S // self.per_curve)
        pts = inputs.samples[:, ::step]
        n = pts.shape[1]
        flat = pts.reshape(-1, 3)
        curve_id = torch.arange(K, device=flat.device).repeat_interleave(n)
        d2 = torch.cdist(flat, flat) ** 2
        other = curve_id[:, None] != curve_id[None, :]
        energy = torch.exp(-d2 / (2 * self.reach**2)) * other
        return energy.sum() / (K * n)


class TurningLoss:
    """Strokes that turn too much pay for the excess: no wiggles, hooks or hatching.

    Turning is the sum of the angles between consecutive pieces of the sampled polyline (the measure
    ``evaluate`` reports): about pi for a C, 2 pi for a loop. Each segment may turn ``free_segment``
    (a quarter turn: an outline cubic rarely needs more); a chain of several segments may turn
    ``free_stroke`` in all: three quarters of a turn, so one stroke can follow an outline round a body
    (a duck's back and tail). That much turning could close a loop, which ``CoilingLoss`` forbids; a
    limit of pi forbids loops by itself but cost about 0.004 of held-out F. Squared
    excess, mean over strokes."""

    name = "turning"

    def __init__(self, segments: int = 1, free_segment: float = math.pi / 2, free_stroke: float = 1.5 * math.pi):
        self.free_segment, self.free_stroke = free_segment, free_stroke
        self.segments = segments  # the finished strokes' count: a coarse segment (split later) turns more
        self._onehot: dict[tuple[int, int], torch.Tensor] = {}

    def _segment_of_angles(self, samples: int, segments: int, device) -> torch.Tensor:
        """``[M-2, S]`` one-hot: which segment the angle at each interior sample belongs to."""
        if (samples, segments) not in self._onehot:
            u = torch.linspace(0.0, float(segments), samples, device=device)[1:-1]
            seg = u.floor().clamp(max=segments - 1).long()
            self._onehot[samples, segments] = F.one_hot(seg, segments).float()
        return self._onehot[samples, segments]

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        d = inputs.samples[:, 1:] - inputs.samples[:, :-1]  # [K,M-1,3]
        u = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        cos = (u[:, 1:] * u[:, :-1]).sum(-1).clamp(-1 + 1e-6, 1 - 1e-6)
        angles = torch.acos(cos)  # [K,M-2]
        segments = segment_count(inputs.control_points)
        if segments == 1 and self.segments == 1:
            return torch.relu(angles.sum(-1) - self.free_segment).square().mean()
        # Before a coarse-to-fine split a segment stands for self.segments / segments finished ones.
        free = self.free_segment * max(self.segments / segments, 1.0)
        per_segment = angles @ self._segment_of_angles(inputs.samples.shape[1], segments, angles.device)  # [K,S]
        excess = torch.relu(per_segment - free).square().sum(-1)
        return (excess + torch.relu(angles.sum(-1) - self.free_stroke).square()).mean()


class CoilingLoss:
    """A stroke must not come back to itself: no loops, curls or hairpins, while open bends stay free.

    For every pair of samples on a stroke, the chord between them over the arc length between them:
    1 on a straight piece, 2 sin(a/2)/a on a circular arc turning a (a half turn 0.64, three quarters
    0.30), 0 where the stroke crosses or doubles back on itself. Pairs below ``ratio`` pay their
    shortfall (as a share of ``ratio``) squared, mean over pairs and strokes. Unlike a limit on total
    turning it does not stop wiggles (``TurningLoss`` does); it lets a stroke bend round an outline
    without closing it."""

    name = "coiling"

    def __init__(self, ratio: float = 0.3, stride: int = 2):
        self.ratio, self.stride = ratio, stride
        self._pairs: dict[int, torch.Tensor] = {}

    def _far_pairs(self, samples: int, device) -> torch.Tensor:
        """``[P,P]`` mask of the pairs at least two pieces apart (neighbours are always straight)."""
        if samples not in self._pairs:
            i = torch.arange(samples, device=device)
            self._pairs[samples] = ((i[:, None] - i[None]).abs() >= 2).float()
        return self._pairs[samples]

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        pts = inputs.samples[:, :: self.stride]  # [K,P,3]: every other sample is enough for a loop
        pieces = (pts[:, 1:] - pts[:, :-1]).norm(dim=-1)
        arc = F.pad(torch.cumsum(pieces, dim=1), (1, 0))  # [K,P] arc length from the start
        between = (arc[:, :, None] - arc[:, None, :]).abs().clamp_min(1e-6)
        chord = (pts[:, :, None] - pts[:, None, :]).square().sum(-1).clamp_min(1e-12).sqrt()
        mask = self._far_pairs(pts.shape[1], pts.device)
        shortfall = torch.relu(1.0 - chord / (between * self.ratio)).square() * mask
        return shortfall.sum(dim=(1, 2)).mean() / mask.sum()


def lines(ctx: LossContext) -> LinesLoss:
    return LinesLoss(ctx)


def surface(ctx: LossContext) -> SurfaceLoss:
    return SurfaceLoss(ctx)


def repulsion(ctx: LossContext) -> RepulsionLoss:
    return RepulsionLoss(ctx)


def turning(ctx: LossContext) -> TurningLoss:
    return TurningLoss(ctx.config.segments)


def coiling(ctx: LossContext) -> CoilingLoss:
    return CoilingLoss()
