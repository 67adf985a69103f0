"""Image operations shared by the geometric losses and the evaluation: blur and distance transforms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1D Gaussian taps covering +-3 sigma."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B,H,W]`` images (zero padding: ink off-image is lost)."""
    if sigma <= 0:
        return images
    k = gaussian_kernel1d(sigma, images.device, images.dtype)
    r = k.numel() // 2
    x = images[:, None]
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    x = F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))
    return x[:, 0]


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
