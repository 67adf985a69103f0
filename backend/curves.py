"""Strokes: chains of cubic Bézier segments, control points [K,3S+1,3] -> samples [K,M,3] -> splats.

A stroke is S cubic segments sharing their end points (anchors at rows 0, 3, ..., 3S; segment s uses
rows 3s..3s+3) with G1 joints: at each interior anchor the in-handle, the anchor and the out-handle
are collinear, the anchor between them. That is exactly a Blender Bézier spline of S+1 points with
ALIGNED handles, so the result needs no fitting step. S = 1 is the seed's single cubic ``[K,4,3]``.

Samples are a fixed linear map of the control points (one matrix per sample count and S), so
gradients reach the control points exactly and cheaply.
"""

from __future__ import annotations

import torch


def segment_count(control_points) -> int:
    """S of ``[K,3S+1,3]`` control points (raises on any other shape)."""
    n = control_points.shape[-2]
    if n < 4 or (n - 1) % 3:
        raise ValueError(f"stroke control points must be [K, 3*S+1, 3], got {list(control_points.shape)}")
    return (n - 1) // 3


def bernstein_matrix(samples: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[S,4]`` weights so that ``samples = B @ control_points`` for t evenly spaced in [0, 1]."""
    t = torch.linspace(0.0, 1.0, samples, device=device, dtype=dtype)[:, None]
    s = 1.0 - t
    return torch.cat([s**3, 3 * s * s * t, 3 * s * t * t, t**3], dim=1)


def chain_matrix(samples: int, segments: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[M, 3S+1]`` weights: ``samples`` points evenly spaced in the chain's parameter u in [0, S]
    (u = s + t on segment s), each on one segment, no point doubled at a joint. For S = 1 this is
    :func:`bernstein_matrix`."""
    if segments == 1:
        return bernstein_matrix(samples, device=device, dtype=dtype)
    u = torch.linspace(0.0, float(segments), samples, device=device, dtype=torch.float64)
    seg = u.floor().clamp(max=segments - 1)
    t = (u - seg)[:, None]
    s = 1.0 - t
    basis = torch.cat([s**3, 3 * s * s * t, 3 * s * t * t, t**3], dim=1)  # [M,4]
    weights = torch.zeros(samples, 3 * segments + 1, device=device, dtype=torch.float64)
    columns = (3 * seg.long())[:, None] + torch.arange(4, device=device)
    weights.scatter_(1, columns, basis)
    return weights.to(dtype)


def sample_curves(control_points: torch.Tensor, samples: int) -> torch.Tensor:
    """``[K,3S+1,3]`` control points -> ``[K,samples,3]`` points along each stroke."""
    weights = chain_matrix(samples, segment_count(control_points), device=control_points.device,
                           dtype=control_points.dtype)
    return torch.einsum("sj,kjd->ksd", weights, control_points)


def curve_lengths(control_points: torch.Tensor, samples: int = 64) -> torch.Tensor:
    """Approximate arc length ``[K]`` of each stroke (polyline through ``samples`` points per segment)."""
    pts = sample_curves(control_points, samples * segment_count(control_points))
    return (pts[:, 1:] - pts[:, :-1]).norm(dim=-1).sum(dim=1)


def splat_means(control_points: torch.Tensor, samples: int) -> torch.Tensor:
    """Flattened splat centres ``[K*M,3]``; splat ``k*M + m`` belongs to stroke ``k``."""
    return sample_curves(control_points, samples).reshape(-1, 3)


def subdivide(cubics: torch.Tensor, segments: int) -> torch.Tensor:
    """``[K,4,3]`` single cubics -> ``[K,3S+1,3]`` chains tracing exactly the same curves (de Casteljau
    at t = 1/S, 2/S, ...): any single-cubic start becomes a G1 (indeed C-infinity) chain."""
    if segments == 1:
        return cubics
    pieces, rest = [], cubics
    for j in range(segments - 1):
        t = 1.0 / (segments - j)  # split the remaining piece so the parts are equal in the original t
        p0, p1, p2, p3 = rest.unbind(dim=1)
        a, b, c = p0 + t * (p1 - p0), p1 + t * (p2 - p1), p2 + t * (p3 - p2)
        d, e = a + t * (b - a), b + t * (c - b)
        f = d + t * (e - d)
        pieces.append(torch.stack([p0, a, d], dim=1))
        rest = torch.stack([f, e, c, p3], dim=1)
    return torch.cat(pieces + [rest], dim=1)


def split_segments(control_points: torch.Tensor) -> torch.Tensor:
    """``[K,3S+1,3]`` -> ``[K,6S+1,3]``: every segment halved at its middle (de Casteljau), the same
    curves exactly; the new joints are C1, the old ones keep their G1."""
    K, S = control_points.shape[0], segment_count(control_points)
    rows = torch.arange(4, device=control_points.device) + 3 * torch.arange(S, device=control_points.device)[:, None]
    halves = subdivide(control_points[:, rows].reshape(K * S, 4, 3), 2)  # [K*S,7,3]
    body = halves[:, :6].reshape(K, 6 * S, 3)
    return torch.cat([body, control_points[:, -1:]], dim=1)


@torch.no_grad()
def enforce_g1(control_points: torch.Tensor) -> None:
    """Make every interior joint G1 again, in place: both handles take the direction from the in-handle
    to the out-handle and keep their lengths. A projection after each optimiser step; it moves handles
    only as far as the step bent the joint."""
    segments = segment_count(control_points)
    if segments == 1:
        return
    anchors = control_points[:, 3:-1:3]  # [K,S-1,3]
    h_in, h_out = control_points[:, 2:-2:3], control_points[:, 4::3]
    direction = h_out - h_in
    norm = direction.norm(dim=-1, keepdim=True)
    ok = norm > 1e-9
    direction = torch.where(ok, direction / norm.clamp_min(1e-12), torch.zeros_like(direction))
    l_in = (h_in - anchors).norm(dim=-1, keepdim=True)
    l_out = (h_out - anchors).norm(dim=-1, keepdim=True)
    control_points[:, 2:-2:3] = torch.where(ok, anchors - l_in * direction, h_in)
    control_points[:, 4::3] = torch.where(ok, anchors + l_out * direction, h_out)


def g1_error(control_points: torch.Tensor) -> torch.Tensor:
    """Largest sine of the angle between in- and out-handle directions over all joints (0 = G1)."""
    if segment_count(control_points) == 1:
        return control_points.new_zeros(())
    anchors = control_points[:, 3:-1:3]
    a = anchors - control_points[:, 2:-2:3]
    b = control_points[:, 4::3] - anchors
    cross = torch.linalg.cross(a, b).norm(dim=-1)
    scale = (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)
    backwards = (a * b).sum(-1) < 0
    sine = torch.where(backwards, torch.ones_like(cross), cross / scale)
    return sine.max()
