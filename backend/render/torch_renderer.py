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

    # cov2d = s^2 J (R R^T) J^T with J = [[fx/z, 0, ux], [0, fy/z, uy]], written out per element
    # (R R^T is I for a rigid viewmat; kept so a non-rigid one projects as in gsplat).
    rrt = R @ R.transpose(-1, -2)
    m00, m01, m02 = rrt[:, 0, 0, None], rrt[:, 0, 1, None], rrt[:, 0, 2, None]
    m11, m12, m22 = rrt[:, 1, 1, None], rrt[:, 1, 2, None], rrt[:, 2, 2, None]
    jx, jy = fx * rz, fy * rz
    ux, uy = -fx * tx * rz * rz, -fy * ty * rz * rz
    a = s2 * (jx * jx * m00 + 2 * jx * ux * m02 + ux * ux * m22) + EPS2D
    c = s2 * (jy * jy * m11 + 2 * jy * uy * m12 + uy * uy * m22) + EPS2D
    b = s2 * (jx * jy * m01 + jx * uy * m02 + ux * jy * m12 + ux * uy * m22)
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


def _patch_grid(means2d, start, size, width, view_base):
    """Offsets from each patch pixel's centre to the mean (dx [m,Px], dy [m,Py]) and flat indices."""
    py, px = size
    iy = start[:, 1, None] + torch.arange(py, device=start.device)  # [m,Py] pixel rows
    ix = start[:, 0, None] + torch.arange(px, device=start.device)  # [m,Px] pixel columns
    dx = means2d[:, 0, None] - (ix.to(means2d.dtype) + 0.5)  # mean - pixel centre, as gsplat
    dy = means2d[:, 1, None] - (iy.to(means2d.dtype) + 0.5)
    index = (view_base[:, None] + iy * width)[:, :, None] + ix[:, None, :]  # [m,Py,Px]
    return dx, dy, index


class _Plan(NamedTuple):
    """Splats sorted by patch size: ``chunks`` are contiguous ranges sharing one patch shape."""

    chunks: list  # [(first, last, (Py, Px))], each at most CHUNK_PIXELS patch pixels
    start: torch.Tensor  # [M,2] long, patch's first pixel (x, y), clipped into the image
    view_base: torch.Tensor  # [M] long, view * H * W
    width: int


def _plan(means2d, radii, view, width, height):
    """Sort order and patch layout; splats of one size class share one vectorised pass."""
    classes = torch.tensor(_SIZE_CLASSES + (max(width, height),), device=radii.device)
    cls = torch.bucketize(radii.max(dim=-1).values.to(torch.long), classes[:-1])  # smallest class >= r
    cls, order = torch.sort(cls, stable=True)
    half = classes[cls]
    sizes = torch.stack([(2 * half + 1).clamp_max(width), (2 * half + 1).clamp_max(height)], -1)  # (Px, Py)
    # Clipping a patch into the image loses no pixel of the splat's box: the box is at most 2*half+1
    # wide, so a window of that width slid inside the image still covers all of the box that is visible.
    centre = torch.floor(means2d.detach()[order]).to(torch.long)  # pixel holding the mean
    start = torch.minimum((centre - half[:, None]).clamp_min(0), torch.tensor([width, height]).to(sizes) - sizes)
    chunks = []
    first = 0
    for k, count in zip(*[t.tolist() for t in torch.unique_consecutive(cls, return_counts=True)], strict=True):
        half_k = int(classes[k])
        size = (min(2 * half_k + 1, height), min(2 * half_k + 1, width))
        step = max(1, CHUNK_PIXELS // (size[0] * size[1]))
        for lo in range(first, first + count, step):
            chunks.append((lo, min(lo + step, first + count), size))
        first += count
    return order, _Plan(chunks, start, view[order] * (width * height), width)


class _PatchComposite(torch.autograd.Function):
    """log T = sum over splats of log(1 - alpha) on their patches; returns T = exp(log T).

    Forward keeps, per patch pixel, its flat index and d log(1-alpha) / d sigma = alpha / (1-alpha)
    (0 where the pixel was skipped or alpha clamped, as gsplat's backward): splats x footprint.
    """

    @staticmethod
    def forward(ctx, means2d, conics, opac, plan, views, height):
        width = plan.width
        logt = torch.zeros(views * height * width, dtype=means2d.dtype, device=means2d.device)
        keep_for_backward = any(ctx.needs_input_grad[:3])
        saved = []
        for lo, hi, size in plan.chunks:
            dx, dy, index = _patch_grid(means2d[lo:hi], plan.start[lo:hi], size, width, plan.view_base[lo:hi])
            a, b, c = conics[lo:hi].unbind(-1)
            # -sigma = -(0.5 a dx^2 + 0.5 c dy^2 + b dx dy), built from [m,P] pieces
            nqx, nqy = (-0.5 * a)[:, None] * dx * dx, (-0.5 * c)[:, None] * dy * dy
            neg_bdx = (-b)[:, None, None] * dx[:, None, :]
            alpha = (nqy[:, :, None] + nqx[:, None, :]).addcmul_(dy[:, :, None], neg_bdx).exp_()
            if opac is not None:
                alpha.mul_(opac[lo:hi, None, None])
            # sigma < 0 is not tested: the conic is positive definite, so only rounding at the mean
            # could produce it, where gsplat would skip and this gives the clamped alpha instead.
            alpha.clamp_max_(MAX_ALPHA).masked_fill_(alpha < ALPHA_THRESHOLD, 0.0)
            if keep_for_backward:
                ratio = (alpha / (1.0 - alpha)).masked_fill_(alpha == MAX_ALPHA, 0.0)
                saved.append((index, ratio))
            logt.index_add_(0, index.reshape(-1), torch.log1p(alpha.neg_()).reshape(-1))
        image = torch.exp(logt).reshape(views, height, width)
        ctx.save_for_backward(means2d, conics, opac, image)
        ctx.plan, ctx.saved = plan, saved
        return image

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_image):
        means2d, conics, opac, image = ctx.saved_tensors
        plan = ctx.plan
        g_logt = (grad_image * image).reshape(-1)  # d loss / d log T
        g_means2d = torch.zeros_like(means2d)
        g_conics = torch.zeros_like(conics)
        want_opac = opac is not None and ctx.needs_input_grad[2]
        g_opac = torch.zeros_like(opac) if want_opac else None
        for (lo, hi, size), (index, ratio) in zip(plan.chunks, ctx.saved, strict=True):
            dx, dy, _ = _patch_grid(means2d[lo:hi], plan.start[lo:hi], size, plan.width, plan.view_base[lo:hi])
            w = g_logt[index].mul_(ratio)  # d loss / d sigma  [m,Py,Px]
            col, row = w.sum(1), w.sum(2)  # [m,Px] summed over rows, [m,Py] over columns
            s_dx, s_dy = (col * dx).sum(1), (row * dy).sum(1)
            s_dxx, s_dyy = (col * dx * dx).sum(1), (row * dy * dy).sum(1)
            s_dxy = (torch.bmm(w, dx[:, :, None]).squeeze(2) * dy).sum(1)
            a, b, c = conics[lo:hi].unbind(-1)
            g_means2d[lo:hi] = torch.stack([a * s_dx + b * s_dy, b * s_dx + c * s_dy], -1)
            g_conics[lo:hi] = torch.stack([0.5 * s_dxx, s_dxy, 0.5 * s_dyy], -1)
            if want_opac:
                g_opac[lo:hi] = -w.sum((1, 2)) / opac[lo:hi]
        return g_means2d, g_conics, g_opac, None, None, None


def composite(proj: Projection, width: int, height: int) -> torch.Tensor:
    """Transmittance image ``[V,H,W]`` of the projected splats (1 = paper, 0 = ink)."""
    views = proj.valid.shape[0]
    vi, ni = torch.nonzero(proj.valid, as_tuple=True)
    if vi.numel() == 0:
        return proj.means2d.new_ones(views, height, width) + 0.0 * proj.means2d.sum()
    order, plan = _plan(proj.means2d[vi, ni].detach(), proj.radii[vi, ni], vi, width, height)
    vi, ni = vi[order], ni[order]
    opac = proj.opacities[vi, ni]
    if not opac.requires_grad and bool((opac == 1).all()):
        opac = None  # the common case: skip one multiply per patch pixel
    return _PatchComposite.apply(proj.means2d[vi, ni], proj.conics[vi, ni], opac, plan, views, height)


class TorchRenderer:
    """Renderer on any torch device; see the module docstring for the rules it follows."""

    name = "torch"

    def __call__(self, means, scales, opacity, viewmats, Ks, width: int, height: int) -> torch.Tensor:
        width, height = int(width), int(height)
        proj = project(means, scales, opacity, viewmats, Ks, width, height)
        return composite(proj, width, height)
