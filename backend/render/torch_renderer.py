"""Pure PyTorch splat renderer (CPU, MPS, CUDA) that follows gsplat 1.5.3's rules.

Why not the dense form (every pixel x every splat): its memory grows with views x pixels x splats,
which is what limited the seed project. Here every projected splat gets a small rectangle of pixels
around its mean (its gsplat bounding box, rounded up to a size class), ``log(1 - alpha)`` is computed
on that patch only and scatter-added into a ``[V*H*W]`` log-transmittance buffer; the image is
``exp(buffer)``. All splats are black, so compositing is order-independent (``prod(1 - alpha)``) and
no depth sort is needed. Memory: views x pixels + splats x footprint, with the per-splat patches
processed in bounded chunks.

Rules copied from gsplat (``cuda/csrc/ProjectionEWA3DGSFused.cu``, ``RasterizeToPixels3DGSFwd.cu``):
EWA projection of the isotropic 3D Gaussian (``cov3d = s^2 I``), ``J`` with x/z, y/z clamped to the
frustum + 30 %, ``eps2d = 0.3`` px added to the 2D covariance (classic mode, no compensation), splats
with camera z outside ``[near, far]`` or opacity < 1/255 culled, bounding box radius
``ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(cov2d_ii))``, pixel centres at +0.5,
``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy``, ``alpha = min(0.999, o exp(-sigma))`` skipped when
``sigma < 0`` or ``alpha < 1/255``. Not copied: gsplat stops a pixel once its transmittance would
fall to 1e-4 (an order-dependent cut); here the product simply continues (differences <= 1e-4).

The rasterisation has a hand-written backward (:class:`_PatchComposite`): it recomputes each patch
instead of saving it, so autograd keeps only the ``[V,H,W]`` image and per-splat vectors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

EPS2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
EXTEND = 3.33  # gsplat's bounding-box radius in standard deviations
# Patch half-sizes: every radius is rounded up to one of these (plus "whole image" above the last),
# so splats of similar size share one vectorised pass and padding wastes at most ~25 % per axis.
_SIZE_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112,
                 128, 160, 192, 224, 256, 320, 384, 448, 512)
# Patch pixels evaluated per vectorised chunk: bounds the transient memory (~20 bytes each).
CHUNK_PIXELS = 1 << 22


class Projection(NamedTuple):
    """Per view and splat: pixel mean, conic (inverse 2D covariance: a, b, c), camera z, radius."""

    means2d: torch.Tensor  # [V,N,2]
    conics: torch.Tensor  # [V,N,3]
    depths: torch.Tensor  # [V,N]
    radii: torch.Tensor  # [V,N,2] int32, 0 where culled (as gsplat)
    valid: torch.Tensor  # [V,N] bool
    opacities: torch.Tensor  # [V,N]


def _as_view_scales(scales: torch.Tensor, views: int, count: int) -> torch.Tensor:
    if scales.dim() == 0:
        return scales.expand(views, count)
    if scales.dim() == 1:
        return scales[None].expand(views, count)
    if scales.shape != (views, count):
        raise ValueError(f"scales must be [N] or [V,N] = [{views},{count}], got {list(scales.shape)}")
    return scales


def project(means: torch.Tensor, scales: torch.Tensor, opacity, viewmats: torch.Tensor,
            Ks: torch.Tensor, width: int, height: int, *, use_opacity_bound: bool = True,
            near_plane: float = NEAR_PLANE, far_plane: float = FAR_PLANE) -> Projection:
    """EWA projection of isotropic Gaussians into every view, as gsplat's fused projection kernel.

    ``use_opacity_bound=False`` gives the 3.33-sigma radius of gsplat's pure-torch reference
    (``_fully_fused_projection``); True gives the opacity-aware radius its CUDA kernel uses.
    Differentiable w.r.t. means, scales and opacity (radii and validity are not).
    """
    V, N = viewmats.shape[0], means.shape[0]
    dtype, device = means.dtype, means.device
    viewmats = viewmats.to(dtype)
    Ks = Ks.to(dtype)
    s2 = _as_view_scales(torch.as_tensor(scales, dtype=dtype, device=device), V, N) ** 2
    opac = torch.as_tensor(opacity, dtype=dtype, device=device)
    opac = opac.expand(N) if opac.dim() == 0 else opac
    opac = opac[None].expand(V, N)

    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    cam = torch.einsum("vij,nj->vni", R, means) + t[:, None, :]  # [V,N,3]
    x, y, z = cam.unbind(-1)
    with torch.no_grad():
        in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled entries finite (no NaN grads)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [V,1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))

    zero = torch.zeros_like(z)
    J = torch.stack([fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], -1)
    J = J.reshape(V, N, 2, 3)
    # cov_cam = R (s^2 I) R^T; R R^T is I for a rigid viewmat but kept for exactness with gsplat.
    rrt = R @ R.transpose(-1, -2)
    cov2d = (J @ rrt[:, None]) @ J.transpose(-1, -2) * s2[..., None, None]
    a = cov2d[..., 0, 0] + EPS2D
    c = cov2d[..., 1, 1] + EPS2D
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)

    with torch.no_grad():
        if use_opacity_bound:
            extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
            extend = extend.clamp_max(EXTEND)
        else:
            extend = torch.full_like(opac, EXTEND)
        rx = torch.ceil(extend * torch.sqrt(a.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.clamp_min(0)))
        mx, my = means2d[..., 0], means2d[..., 1]
        valid = in_depth & (det > 0) & ((rx > 0) | (ry > 0))
        if use_opacity_bound:
            valid &= opac >= ALPHA_THRESHOLD
        valid &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], -1).to(torch.int32) * valid[..., None]
    return Projection(means2d, conics, cam[..., 2], radii, valid, opac)


def _patch_terms(means2d, conics, opac, start, size, height_width):
    """sigma, alpha and the flat pixel index over each splat's patch (shape [m,Py,Px])."""
    (py, px), (height, width) = size, height_width
    del height
    iy = start[:, 1, None] + torch.arange(py, device=start.device)  # [m,Py] pixel rows
    ix = start[:, 0, None] + torch.arange(px, device=start.device)  # [m,Px] pixel columns
    dx = means2d[:, 0, None] - (ix.to(means2d.dtype) + 0.5)  # mean - pixel centre, as gsplat
    dy = means2d[:, 1, None] - (iy.to(means2d.dtype) + 0.5)
    a, b, c = conics.unbind(-1)
    qx = (0.5 * a)[:, None] * dx * dx
    qy = (0.5 * c)[:, None] * dy * dy
    sigma = (qy[:, :, None] + qx[:, None, :]).addcmul_(dy[:, :, None], b[:, None, None] * dx[:, None, :])
    raw = torch.exp(-sigma)
    if opac is not None:
        raw = raw * opac[:, None, None]
    return sigma, raw, dx, dy, ix, iy


def _flat_index(view_base, ix, iy, width):
    return (view_base[:, None, None] + (iy * width)[:, :, None]) + ix[:, None, :]


class _Plan(NamedTuple):
    """Splats grouped by patch size; each group is drawn in chunks of bounded pixel count."""

    groups: list  # [(ids [m] long, (Py, Px))]
    start: torch.Tensor  # [M,2] long, patch's first pixel (x, y), clipped into the image
    view_base: torch.Tensor  # [M] long, view * H * W


def _plan(means2d, radii, view, width, height) -> _Plan:
    radius = radii.max(dim=-1).values.to(torch.long)  # [M]
    classes = torch.tensor(_SIZE_CLASSES, device=radius.device)
    cls = torch.bucketize(radius, classes)  # index of the smallest class >= radius
    centre = torch.floor(means2d.detach()).to(torch.long)  # pixel holding the mean
    groups = []
    start = torch.empty_like(centre)
    present = torch.unique(cls).tolist()
    for k in present:
        ids = torch.nonzero(cls == k).squeeze(1)
        half = _SIZE_CLASSES[k] if k < len(_SIZE_CLASSES) else max(width, height)
        px, py = min(2 * half + 1, width), min(2 * half + 1, height)
        # Clipping the patch into the image loses no pixel of the splat's box (see module notes).
        start[ids, 0] = (centre[ids, 0] - half).clamp(0, width - px)
        start[ids, 1] = (centre[ids, 1] - half).clamp(0, height - py)
        step = max(1, CHUNK_PIXELS // (px * py))
        for first in range(0, ids.numel(), step):
            groups.append((ids[first:first + step], (py, px)))
    return _Plan(groups, start, view * (width * height))


class _PatchComposite(torch.autograd.Function):
    """log T = sum over splats of log(1 - alpha) on their patches; returns T = exp(log T)."""

    @staticmethod
    def forward(ctx, means2d, conics, opac, view, radii, views, width, height):
        plan = _plan(means2d, radii, view, width, height)
        logt = torch.zeros(views * height * width, dtype=means2d.dtype, device=means2d.device)
        for ids, size in plan.groups:
            o = None if opac is None else opac[ids]
            sigma, raw, _, _, ix, iy = _patch_terms(means2d[ids], conics[ids], o, plan.start[ids], size,
                                                    (height, width))
            alpha = raw.clamp_max_(MAX_ALPHA)
            keep = (alpha >= ALPHA_THRESHOLD) & (sigma >= 0)
            term = torch.log1p(-alpha).mul_(keep)
            logt.index_add_(0, _flat_index(plan.view_base[ids], ix, iy, width).reshape(-1), term.reshape(-1))
        image = torch.exp(logt).reshape(views, height, width)
        ctx.save_for_backward(means2d, conics, opac, image)
        ctx.plan, ctx.size = plan, (height, width)
        return image

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_image):
        means2d, conics, opac, image = ctx.saved_tensors
        plan, (height, width) = ctx.plan, ctx.size
        # d loss / d log T per pixel; d log(1-alpha) / d sigma = alpha / (1 - alpha) when unclamped.
        g_logt = (grad_image * image).reshape(-1)
        g_means2d = torch.zeros_like(means2d)
        g_conics = torch.zeros_like(conics)
        want_opac = opac is not None and ctx.needs_input_grad[2]
        g_opac = torch.zeros_like(opac) if want_opac else None
        for ids, size in plan.groups:
            o = None if opac is None else opac[ids]
            sigma, raw, dx, dy, ix, iy = _patch_terms(means2d[ids], conics[ids], o, plan.start[ids], size,
                                                      (height, width))
            live = (raw >= ALPHA_THRESHOLD) & (raw < MAX_ALPHA) & (sigma >= 0)
            g = g_logt[_flat_index(plan.view_base[ids], ix, iy, width)]
            w = g.mul_(raw).div_(1.0 - raw).mul_(live)  # d loss / d sigma  [m,Py,Px]
            col = w.sum(1)  # [m,Px]: summed over rows
            row = w.sum(2)  # [m,Py]
            s_dx, s_dy = (col * dx).sum(1), (row * dy).sum(1)
            s_dxx, s_dyy = (col * dx * dx).sum(1), (row * dy * dy).sum(1)
            s_dxy = (torch.bmm(w, dx[:, :, None]).squeeze(2) * dy).sum(1)
            a, b, c = conics[ids].unbind(-1)
            g_means2d[ids] = torch.stack([a * s_dx + b * s_dy, b * s_dx + c * s_dy], -1)
            g_conics[ids] = torch.stack([0.5 * s_dxx, s_dxy, 0.5 * s_dyy], -1)
            if want_opac:
                g_opac[ids] = -w.sum((1, 2)) / o
        return g_means2d, g_conics, g_opac, None, None, None, None, None


def composite(proj: Projection, width: int, height: int) -> torch.Tensor:
    """Transmittance image ``[V,H,W]`` of the projected splats (1 = paper, 0 = ink)."""
    views = proj.valid.shape[0]
    vi, ni = torch.nonzero(proj.valid, as_tuple=True)
    means2d, conics = proj.means2d[vi, ni], proj.conics[vi, ni]
    opac = proj.opacities[vi, ni]
    if not opac.requires_grad and bool((opac == 1).all()):
        opac = None  # the common case: skip one multiply per patch pixel
    if vi.numel() == 0:
        return means2d.new_ones(views, height, width) + 0.0 * means2d.sum()
    return _PatchComposite.apply(means2d, conics, opac, vi, proj.radii[vi, ni], views, width, height)


class TorchRenderer:
    """Renderer on any torch device; see the module docstring for the rules it follows."""

    name = "torch"

    def __call__(self, means, scales, opacity, viewmats, Ks, width: int, height: int) -> torch.Tensor:
        width, height = int(width), int(height)
        proj = project(means, scales, opacity, viewmats, Ks, width, height)
        return composite(proj, width, height)
