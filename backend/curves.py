"""Cubic Bézier curves: control points [K,4,3] -> samples [K,S,3] -> splat parameters.

One segment per curve, as CLIPasso. Samples are a fixed linear map of the control points (the
Bernstein matrix), so gradients reach the control points exactly and cheaply.
"""

from __future__ import annotations

import torch


def bernstein_matrix(samples: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[S,4]`` weights so that ``samples = B @ control_points`` for t evenly spaced in [0, 1]."""
    t = torch.linspace(0.0, 1.0, samples, device=device, dtype=dtype)[:, None]
    s = 1.0 - t
    return torch.cat([s**3, 3 * s * s * t, 3 * s * t * t, t**3], dim=1)


def sample_curves(control_points: torch.Tensor, samples: int) -> torch.Tensor:
    """``[K,4,3]`` control points -> ``[K,S,3]`` points along each curve (t evenly spaced)."""
    basis = bernstein_matrix(samples, device=control_points.device, dtype=control_points.dtype)
    return torch.einsum("sj,kjd->ksd", basis, control_points)


def curve_lengths(control_points: torch.Tensor, samples: int = 64) -> torch.Tensor:
    """Approximate arc length ``[K]`` of each curve (polyline through ``samples`` points)."""
    pts = sample_curves(control_points, samples)
    return (pts[:, 1:] - pts[:, :-1]).norm(dim=-1).sum(dim=1)


def splat_means(control_points: torch.Tensor, samples: int) -> torch.Tensor:
    """Flattened splat centres ``[K*S,3]``; splat ``k*S + s`` belongs to curve ``k``."""
    return sample_curves(control_points, samples).reshape(-1, 3)
