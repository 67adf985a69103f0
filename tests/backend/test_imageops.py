"""Blur and distance transforms against straightforward references."""

import torch
import torch.nn.functional as F

from backend.imageops import distance_transform, distance_transform_3d, gaussian_blur, gaussian_kernel1d
from backend.losses.geometry import distance_grid, sample_grid


def test_blur_matches_a_zero_padded_convolution():
    x = torch.rand(2, 30, 41)
    k = gaussian_kernel1d(2.5)
    r = k.numel() // 2
    ref = F.conv2d(F.conv2d(x[:, None], k.view(1, 1, 1, -1), padding=(0, r)), k.view(1, 1, -1, 1), padding=(r, 0))
    torch.testing.assert_close(gaussian_blur(x, 2.5), ref[:, 0], atol=1e-6, rtol=0)


def test_distance_transform_is_exact():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 23, 31, generator=g) > 0.97
    ys, xs = torch.meshgrid(torch.arange(23.0), torch.arange(31.0), indexing="ij")
    grid = torch.stack([ys, xs], -1).reshape(-1, 2)
    for b in range(2):
        ref = torch.cdist(grid, grid[mask[b].reshape(-1)]).amin(dim=1).reshape(23, 31)
        torch.testing.assert_close(distance_transform(mask)[b], ref, atol=1e-4, rtol=0)


def test_distance_transform_3d_is_exact():
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(9, 11, 13, generator=g) > 0.98
    mask[4, 5, 6] = True
    zz, yy, xx = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), torch.arange(13.0), indexing="ij")
    pts = torch.stack([zz, yy, xx], -1).reshape(-1, 3)
    ref = torch.cdist(pts, pts[mask.reshape(-1)]).amin(dim=1).reshape(9, 11, 13)
    torch.testing.assert_close(distance_transform_3d(mask), ref, atol=1e-4, rtol=0)


def test_distance_grid_approximates_a_sphere():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(8000, 3, generator=g)
    p = p / p.norm(dim=1, keepdim=True) * 0.8
    grid = distance_grid(p, 64, 1.25)
    q = torch.randn(500, 3, generator=g)
    q = q / q.norm(dim=1, keepdim=True) * (torch.rand(500, 1, generator=g) * 1.2 + 0.05)
    err = (sample_grid(grid, q, 1.25) - (q.norm(dim=1) - 0.8).abs()).abs()
    assert err.mean() < 0.03 and err.max() < 0.06
