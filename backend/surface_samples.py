"""Mesh helpers for the geometric terms: area-uniform surface samples and farthest-point picks."""

from __future__ import annotations

import torch


def sample_surface(vertices: torch.Tensor, faces: torch.Tensor, count: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` points spread uniformly by area over the triangles, and their unit face normals."""
    tri = vertices[faces]  # [F,3,3]
    cross = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
    area = cross.norm(dim=1)
    if not torch.isfinite(area).all() or area.sum() <= 0:
        raise ValueError("the mesh has no surface area")
    dev = vertices.device
    face = torch.multinomial(area.cpu(), count, replacement=True, generator=generator).to(dev)
    u = torch.rand(count, 2, generator=generator).to(dev)
    flip = u.sum(dim=1) > 1
    u[flip] = 1 - u[flip]
    t = tri[face]
    points = t[:, 0] + u[:, :1] * (t[:, 1] - t[:, 0]) + u[:, 1:] * (t[:, 2] - t[:, 0])
    normals = cross[face] / area[face].clamp_min(1e-12)[:, None]
    return points, normals


def farthest_points(points: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of ``count`` points picked greedily farthest from those already picked."""
    n = points.shape[0]
    count = min(count, n)
    first = int(torch.randint(n, (1,), generator=generator))
    picked = [first]
    dist = (points - points[first]).norm(dim=1)
    for _ in range(count - 1):
        nxt = int(dist.argmax())
        picked.append(nxt)
        dist = torch.minimum(dist, (points - points[nxt]).norm(dim=1))
    return torch.tensor(picked, device=points.device)
