"""Initial strokes ``[K,3S+1,3]``: random (the seed's baseline), surface, contour, features.

``random``, ``surface`` and ``contour`` make single cubics, subdivided into S segments along the same
curve; ``features`` (backend/feature_lines.py) fits chains to the mesh's own feature lines.

``surface`` and ``contour`` start curves where lines can be: on the mesh, and on the object's
contours lifted to 3D; both spread their seeds by farthest-point sampling so no part is left bare.
"""

from __future__ import annotations

import torch

from .curves import subdivide
from .feature_lines import feature_init
from .losses.base import Targets
from .render import pinhole
from .surface_samples import farthest_points

INIT_LENGTH = 0.35  # normalised units: short strokes that can grow, as CLIPasso starts small


def random_init(k: int, generator: torch.Generator, device) -> torch.Tensor:
    """CLIPasso-like: a random start point in the unit ball, the next points a small random walk."""
    start = torch.randn(k, 1, 3, generator=generator)
    start = start / start.norm(dim=-1, keepdim=True) * torch.rand(k, 1, 1, generator=generator) ** (1 / 3) * 0.8
    steps = torch.randn(k, 3, 3, generator=generator) * 0.08
    points = torch.cat([start, start + steps.cumsum(dim=1)], dim=1)
    return points.to(device)


def _curves_through(centres: torch.Tensor, directions: torch.Tensor, length: float) -> torch.Tensor:
    offsets = torch.tensor([-0.5, -1 / 6, 1 / 6, 0.5], device=centres.device, dtype=centres.dtype)
    return centres[:, None, :] + offsets[None, :, None] * directions[:, None, :] * length


def _snap(points: torch.Tensor, cloud: torch.Tensor) -> torch.Tensor:
    idx = torch.cdist(points.reshape(-1, 3), cloud).argmin(dim=1)
    return cloud[idx].reshape(points.shape)


def surface_init(k: int, targets: Targets, generator: torch.Generator) -> torch.Tensor:
    """Farthest-point seeds on the surface, each a short curve along a random tangent, snapped on."""
    pts, normals = targets.surface_samples, targets.surface_normals
    seeds = farthest_points(pts, k, generator)
    n = normals[seeds]
    rnd = torch.randn(len(seeds), 3, generator=generator).to(pts.device)
    tangent = rnd - (rnd * n).sum(dim=1, keepdim=True) * n
    tangent = tangent / tangent.norm(dim=1, keepdim=True).clamp_min(1e-8)
    curves = _curves_through(pts[seeds], tangent, INIT_LENGTH)
    curves = _snap(curves, pts)
    return _pad(curves, k, generator, pts.device)


def lifted_contour_points(targets: Targets, max_points_per_view: int = 400,
                          generator: torch.Generator | None = None, masks: torch.Tensor | None = None,
                          view_ids: list[int] | None = None) -> torch.Tensor:
    """3D points on the visible lines of the training views (or on ``masks [V,H,W]``, pixels of the
    views ``view_ids`` to lift, e.g. the lines no stroke covers yet).

    A line pixel takes the surface sample that lands nearest to it among those in front (a point
    z-buffer over the mesh samples), or the job's depth map when it has one.
    """
    from contract.cameras import unproject_pixels  # numpy; fine for a one-off

    pts = targets.surface_samples
    lifted = []
    if view_ids is None:
        view_ids = torch.nonzero(targets.is_train).flatten().tolist()
    for i, v in enumerate(view_ids):
        mask = targets.lines[v] > 0.5 if masks is None else masks[i]
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(xs) == 0:
            continue
        pick = torch.randperm(len(xs), generator=generator)[:max_points_per_view].to(xs.device)
        ys, xs = ys[pick], xs[pick]
        if targets.depth is not None and (targets.depth[v, ys, xs] > 0).any():
            keep = targets.depth[v, ys, xs] > 0
            uv = torch.stack([xs[keep], ys[keep]], dim=1).double() + 0.5
            world = unproject_pixels(uv.cpu().numpy(), targets.depth[v, ys[keep], xs[keep]].double().cpu().numpy(),
                                     targets.viewmats[v].double().cpu().numpy(), targets.Ks[v].double().cpu().numpy())
            lifted.append(torch.as_tensor(world, dtype=pts.dtype, device=pts.device))
            continue
        # Point z-buffer of the surface samples in this view.
        uv, z = pinhole.project(pts, targets.viewmats[v:v + 1], targets.Ks[v:v + 1])
        uv, z = uv[0], z[0]  # [N,2], [N]
        H, W = targets.height, targets.width
        px = uv.floor().long()
        inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H) & (z > 0)
        flat = px[:, 1].clamp(0, H - 1) * W + px[:, 0].clamp(0, W - 1)
        zbuf = torch.full((H * W,), float("inf"), device=pts.device)
        zbuf.scatter_reduce_(0, flat[inside], z[inside], reduce="amin")
        # A sample is visible if it is within a small depth band of the nearest surface in its pixel.
        visible = inside & (z <= zbuf[flat] + 0.03)
        cand_uv, cand = uv[visible], pts[visible]
        line_uv = torch.stack([xs, ys], dim=1).to(uv.dtype) + 0.5
        nearest = torch.cdist(line_uv, cand_uv).argmin(dim=1)
        lifted.append(cand[nearest])
    if not lifted:
        return pts[:0]
    return torch.cat(lifted)


def contour_init(k: int, targets: Targets, generator: torch.Generator, neighbourhood: float = 0.12) -> torch.Tensor:
    """Curves along 3D contour points: farthest-point seeds, each fitted to its neighbours by PCA."""
    cloud = lifted_contour_points(targets, generator=generator)
    if cloud.shape[0] < 4:
        return surface_init(k, targets, generator)
    seeds = farthest_points(cloud, k, generator)
    centres, directions, lengths = [], [], []
    for s in seeds.tolist():
        near = cloud[(cloud - cloud[s]).norm(dim=1) < neighbourhood]
        centre = near.mean(dim=0)
        if near.shape[0] >= 3:
            _, _, vh = torch.linalg.svd(near - centre, full_matrices=False)
            direction = vh[0]
            extent = float(((near - centre) @ direction).abs().max())
        else:
            direction = torch.randn(3, generator=generator).to(cloud.device)
            direction = direction / direction.norm()
            extent = INIT_LENGTH / 2
        centres.append(centre)
        directions.append(direction)
        lengths.append(min(max(2 * extent, 0.1), 2 * neighbourhood))
    centres = torch.stack(centres)
    directions = torch.stack(directions)
    curves = torch.stack([_curves_through(centres[i:i + 1], directions[i:i + 1], lengths[i])[0]
                          for i in range(len(lengths))])
    return _pad(curves, k, generator, cloud.device)


RESEED_REACH = 0.12  # normalised units: the neighbourhood a new stroke is fitted to


def strokes_on_points(cloud: torch.Tensor, count: int) -> torch.Tensor:
    """Up to ``count`` short cubics ``[n,4,3]`` through the densest parts of a 3D point cloud: each takes
    the point with the most unclaimed neighbours within ``RESEED_REACH``, is fitted to them by PCA, and
    claims them, so the next one goes elsewhere."""
    near = torch.cdist(cloud, cloud) < RESEED_REACH  # once: claiming only masks columns and rows
    free = torch.ones(cloud.shape[0], dtype=torch.bool, device=cloud.device)
    curves = []
    for _ in range(count):
        counts = (near & free[None]).sum(dim=1).masked_fill(~free, 0)
        centre_idx = int(counts.argmax())
        if counts[centre_idx] < 4:
            break
        claimed = near[centre_idx] & free
        members = cloud[claimed]
        centre = members.mean(dim=0)
        _, _, vh = torch.linalg.svd(members - centre, full_matrices=False)
        extent = float(((members - centre) @ vh[0]).abs().max())
        curves.append(_curves_through(centre[None], vh[0][None], min(max(2 * extent, 0.1), 2 * RESEED_REACH))[0])
        free &= ~claimed
    if not curves:
        return cloud.new_zeros((0, 4, 3))
    return torch.stack(curves)


def _pad(curves: torch.Tensor, k: int, generator, device) -> torch.Tensor:
    """Fewer seeds than curves (tiny meshes): fill up with random curves."""
    if curves.shape[0] >= k:
        return curves[:k]
    return torch.cat([curves, random_init(k - curves.shape[0], generator, device)])


def initial_curves(kind: str, k: int, targets: Targets, generator: torch.Generator, device,
                   segments: int = 1, cover_balance: float = 0.0) -> torch.Tensor:
    if kind == "features":
        strokes = feature_init(k, segments, targets, balance=cover_balance)
        if len(strokes) < k:  # a tiny mesh, or no lines left to cover: the rest start on the surface
            extra = (surface_init(k - len(strokes), targets, generator) if targets.surface_samples is not None
                     else random_init(k - len(strokes), generator, strokes.device))
            strokes = torch.cat([strokes, subdivide(extra.to(device=strokes.device, dtype=torch.float32), segments)])
        return strokes.to(device)
    if kind == "random":
        cubics = random_init(k, generator, device)
    elif kind == "surface":
        cubics = surface_init(k, targets, generator)
    elif kind == "contour":
        cubics = contour_init(k, targets, generator)
    else:
        raise ValueError(f"unknown initialisation {kind!r}")
    return subdivide(cubics, segments)
