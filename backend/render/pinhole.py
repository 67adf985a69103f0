"""The pinhole projection of the backend, in torch (its numpy twin is ``contract.cameras.project``).

OpenCV convention: ``viewmats [V,4,4]`` world-to-camera, ``Ks [V,3,3]``, pixel centres at +0.5. The
renderer, the pruning's interior test and the contour initialisation all project through these two
functions, written as gsplat's kernel writes them (``fx * x * (1/z) + cx``), so a point lands on the
same pixel everywhere.
"""

from __future__ import annotations

import torch


def to_camera(points: torch.Tensor, viewmats: torch.Tensor) -> torch.Tensor:
    """Camera-space points ``[V,N,3]`` of world points ``[N,3]`` in every view of ``viewmats [V,4,4]``."""
    return torch.einsum("vij,nj->vni", viewmats[:, :3, :3], points) + viewmats[:, None, :3, 3]


def to_pixels(x: torch.Tensor, y: torch.Tensor, inv_z: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates ``[V,N,2]`` of camera-space ``x, y [V,N]`` with ``inv_z = 1/z [V,N]``, ``Ks [V,3,3]``."""
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [V,1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    return torch.stack([fx * x * inv_z + cx, fy * y * inv_z + cy], -1)


def project(points: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,
            min_depth: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates ``[V,N,2]`` and camera depths ``[V,N]`` of world points ``[N,3]``.

    ``min_depth`` clamps the depth used for the division (points behind the camera then land
    somewhere finite; the returned depth is the true one, to test visibility with)."""
    cam = to_camera(points, viewmats)
    z = cam[..., 2]
    inv_z = 1.0 / (z if min_depth is None else z.clamp_min(min_depth))
    return to_pixels(cam[..., 0], cam[..., 1], inv_z, Ks), z
