"""Image operations shared by the geometric losses and the evaluation: blur and distance transforms."""

from __future__ import annotations

import functools
import math

import torch


def gaussian_kernel1d(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1D Gaussian taps covering +-3 sigma."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


@functools.lru_cache(maxsize=16)
def _blur_matrix(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[size,size]`` banded matrix M with ``M @ x`` = 1D Gaussian blur of x (zero padding)."""
    k = gaussian_kernel1d(sigma, device, dtype)
    r = k.numel() // 2
    idx = torch.arange(size, device=device)
    offset = idx[None, :] - idx[:, None]  # column - row
    band = offset.abs() <= r
    return torch.where(band, k[(offset + r).clamp(0, 2 * r)], torch.zeros((), device=device, dtype=dtype))


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B,H,W]`` images (zero padding: ink off-image is lost).

    Two matrix products with banded Gaussian matrices: on CPU this is ~20x faster than a
    single-channel conv2d (which runs a slow direct convolution), forward and backward alike.
    """
    if sigma <= 0:
        return images
    H, W = images.shape[-2:]
    gy = _blur_matrix(H, float(sigma), images.device, images.dtype)
    gx = gy if W == H else _blur_matrix(W, float(sigma), images.device, images.dtype)
    return gy @ images @ gx.T


@torch.no_grad()
def distance_transform_3d(mask: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (voxels) from every voxel of a ``[D,H,W]`` grid to the nearest True voxel.

    The same exact separable min-plus passes as :func:`distance_transform`, one per axis.
    """
    big = float(sum(n * n for n in mask.shape))
    cost = torch.where(mask, 0.0, big).to(torch.float32)
    for axis in range(3):
        moved = cost.movedim(axis, 0)
        shape = moved.shape
        cost = _min_plus_1d(moved.reshape(shape[0], -1)).reshape(shape).movedim(0, axis)
    return cost.clamp_max(big).sqrt()


def _min_plus_1d(cost: torch.Tensor) -> torch.Tensor:
    """Exact 1D squared distance along the last-but-one axis: out[y] = min_y' cost[y'] + (y - y')^2."""
    n = cost.shape[-2]
    pos = torch.arange(n, device=cost.device, dtype=cost.dtype)
    sq = (pos[:, None] - pos[None, :]) ** 2  # [y, y']
    return (cost[..., None, :, :] + sq[:, :, None]).amin(dim=-2)


@torch.no_grad()
def distance_transform(mask: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (pixels) from every pixel to the nearest True pixel, for ``[B,H,W]`` masks.

    Exact, via two separable min-plus passes, one image at a time so memory stays at H*H*W.
    Images with no True pixel get the image diagonal everywhere.
    """
    B, H, W = mask.shape
    big = float(H * H + W * W)
    out = torch.empty(mask.shape, device=mask.device, dtype=torch.float32)
    for b in range(B):
        cost = torch.where(mask[b], 0.0, big).to(torch.float32)
        cols = _min_plus_1d(cost)  # along y
        rows = _min_plus_1d(cols.T.contiguous()).T  # along x
        out[b] = rows.clamp_max(big).sqrt()
    return out
