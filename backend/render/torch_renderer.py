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
``alpha < 1/255``. Not copied: gsplat's ``sigma < 0`` skip (the conic is positive definite, so only
rounding at the very mean could trigger it) and its early stop once a pixel's transmittance would
fall to 1e-4 (an order-dependent cut; here the product simply continues, differences <= 1e-4).

The rasterisation has a hand-written backward (:class:`_PatchComposite`: the analytic gradient of
``sum log(1 - alpha)``, zero where alpha is clamped or skipped, as gsplat's): the forward keeps only each patch
pixel's flat index (int32) and ``d log(1-alpha) / d sigma``, so autograd holds 8 bytes per patch
pixel plus the ``[V,H,W]`` image, never a views x pixels x splats tensor. CPU notes: masks are
fused thresholds and intermediates are updated in place (``masked_fill``/``where`` and fresh large
allocations were the slowest steps when profiled).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .gsplat_rules import ALPHA_THRESHOLD, EPS2D, EXTEND, FAR_PLANE, MAX_ALPHA, NEAR_PLANE, check_inputs
from .pinhole import to_camera, to_pixels

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
    check_inputs(means, scales, opacity, viewmats, Ks, width, height)
    V, N = viewmats.shape[0], means.shape[0]
    dtype, device = means.dtype, means.device
    viewmats = viewmats.to(dtype)  # [V,4,4]
    Ks = Ks.to(dtype)  # [V,3,3]
    s2 = _as_view_scales(torch.as_tensor(scales, dtype=dtype, device=device), V, N) ** 2  # [V,N]
    # a number is filled on the device (as_tensor of a Python float would copy it there and wait)
    opac = opacity.to(device, dtype) if torch.is_tensor(opacity) else torch.full((), float(opacity), dtype=dtype,
                                                                                device=device)
    opac = opac.expand(N) if opac.dim() == 0 else opac
    opac = opac[None].expand(V, N)  # [V,N]

    R = viewmats[:, :3, :3]  # [V,3,3]
    cam = to_camera(means, viewmats)  # [V,N,3]
    x, y, z = cam.unbind(-1)  # [V,N] each
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
    means2d = to_pixels(x, y, rz, Ks)  # [V,N,2]

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


def _patch_offsets(means2d, start, size):
    """Mean minus pixel centre along each patch axis: dx [m,Px], dy [m,Py] (gsplat's delta)."""
    py, px = size
    dx = means2d[:, 0, None] - (start[:, 0, None] + torch.arange(px, device=start.device) + 0.5)
    dy = means2d[:, 1, None] - (start[:, 1, None] + torch.arange(py, device=start.device) + 0.5)
    return dx, dy


def _patch_index(start, size, width, view_base):
    """Flat pixel index [m,Py,Px] of every patch pixel, int32 (V*H*W stays far below 2**31)."""
    py, px = size
    rows = (view_base[:, None] + (start[:, 1, None] + torch.arange(py, device=start.device)) * width)
    cols = start[:, 0, None] + torch.arange(px, device=start.device)
    return rows.to(torch.int32)[:, :, None].expand(len(start), py, px) + cols.to(torch.int32)[:, None, :]


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


@functools.cache
def _just_below(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number below ``value``'s rounding in ``dtype`` (worked out once per dtype)."""
    v = torch.tensor(value, dtype=dtype)
    return float(torch.nextafter(v, torch.zeros_like(v)))


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
        below_threshold = _just_below(ALPHA_THRESHOLD, means2d.dtype)
        saved = []
        for lo, hi, size in plan.chunks:
            dx, dy = _patch_offsets(means2d[lo:hi], plan.start[lo:hi], size)
            index = _patch_index(plan.start[lo:hi], size, width, plan.view_base[lo:hi])
            a, b, c = conics[lo:hi].unbind(-1)
            # -sigma = -(0.5 a dx^2 + 0.5 c dy^2 + b dx dy), built from [m,P] pieces
            nqx, nqy = (-0.5 * a)[:, None] * dx * dx, (-0.5 * c)[:, None] * dy * dy
            neg_bdx = (-b)[:, None, None] * dx[:, None, :]
            # (expanding one side first avoids a slow double-broadcast path of CPU add)
            alpha = (nqy[:, :, None].expand(len(a), *size) + nqx[:, None, :]).addcmul_(dy[:, :, None], neg_bdx).exp_()
            if opac is not None:
                alpha.mul_(opac[lo:hi, None, None])
            # sigma < 0 is not tested: the conic is positive definite, so only rounding at the mean
            # could produce it, where gsplat would skip and this gives the clamped alpha instead.
            # Masks as fused thresholds (masked_fill / where are ~10x slower on CPU): F.threshold keeps
            # x > t, and t just below 1/255 in this dtype keeps exactly alpha >= 1/255 as gsplat.
            if keep_for_backward:
                # d log(1-alpha)/d sigma = alpha/(1-alpha), 0 where alpha is clamped or skipped
                live = F.threshold_(alpha.neg(), -MAX_ALPHA, 0.0).neg_()  # in place: fresh pages are slow
                F.threshold_(live, below_threshold, 0.0)
                saved.append((index, live.neg_().add_(1.0).reciprocal_().sub_(1.0)))
            F.threshold_(alpha.clamp_max_(MAX_ALPHA), below_threshold, 0.0)
            logt.index_add_(0, index.view(-1), alpha.neg_().log1p_().view(-1))
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
            dx, dy = _patch_offsets(means2d[lo:hi], plan.start[lo:hi], size)
            w = g_logt.index_select(0, index.view(-1)).view_as(ratio).mul_(ratio)  # d loss / d sigma
            col, row = w.sum(1), w.sum(2)  # [m,Px] summed over rows, [m,Py] over columns
            s_dx, s_dy = (col * dx).sum(1), (row * dy).sum(1)
            s_dxx, s_dyy = (col * dx * dx).sum(1), (row * dy * dy).sum(1)
            s_dxy = ((w * dx[:, None, :]).sum(2) * dy).sum(1)
            a, b, c = conics[lo:hi].unbind(-1)
            g_means2d[lo:hi] = torch.stack([a * s_dx + b * s_dy, b * s_dx + c * s_dy], -1)
            g_conics[lo:hi] = torch.stack([0.5 * s_dxx, s_dxy, 0.5 * s_dyy], -1)
            if want_opac:  # (a culled splat of the fixed-shape plan has opacity 0 and no gradient)
                g_opac[lo:hi] = -w.sum((1, 2)) / opac[lo:hi].clamp_min(1e-30)
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


def composite_fixed(proj: Projection, width: int, height: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`composite` with shapes that do not depend on the data: every splat of every view gets a
    ``(2 half + 1)^2`` patch (culled ones with opacity 0), no sort, no host reads. Returns the image
    and the largest radius seen (a device tensor): the same image as :func:`composite` while it is
    at most ``half`` (outside its box a splat's alpha is below 1/255 and skipped anyway); a larger
    splat loses its pixels beyond the patch until the caller grows ``half``."""
    V, N = proj.valid.shape
    size = (min(2 * half + 1, height), min(2 * half + 1, width))
    means2d, conics = proj.means2d.reshape(V * N, 2), proj.conics.reshape(V * N, 3)
    opac = (proj.opacities * proj.valid).reshape(V * N)
    centre = torch.floor(means2d.detach().clamp(-1e6, 1e6)).long() - half
    start = torch.stack([centre[:, 0].clamp(0, width - size[1]), centre[:, 1].clamp(0, height - size[0])], -1)
    view_base = (torch.arange(V, device=means2d.device) * (width * height))[:, None].expand(V, N).reshape(-1)
    step = max(1, CHUNK_PIXELS // (size[0] * size[1]))
    plan = _Plan([(lo, min(lo + step, V * N), size) for lo in range(0, V * N, step)], start, view_base, width)
    largest = proj.radii.amax()  # 0 where culled
    return _PatchComposite.apply(means2d, conics, opac, plan, V, height), largest


class TorchRenderer:
    """Renderer on any torch device; see the module docstring for the rules it follows.

    ``fixed_shapes=True`` renders with :func:`composite_fixed`: no host reads and no data-dependent
    shapes in a step (what a CUDA step needs to run ahead of the GPU or be captured). Its patch size
    is measured on the first call (one read) and grown by :meth:`settle`, which the loop calls when it
    reads the device anyway (progress events). Otherwise it sizes every patch to its splat (fewer
    pixels when splats differ in size: the default on CPUs, where host reads cost nothing).
    """

    name = "torch"

    def __init__(self, fixed_shapes: bool = False):
        self.fixed_shapes = fixed_shapes
        self.half: int | None = None  # fixed patch half-size
        self._largest: torch.Tensor | None = None  # largest radius rendered since the last settle

    def __call__(self, means, scales, opacity, viewmats, Ks, width: int, height: int) -> torch.Tensor:
        width, height = int(width), int(height)
        proj = project(means, scales, opacity, viewmats, Ks, width, height)
        if not self.fixed_shapes:
            return composite(proj, width, height)
        if self.half is None:
            self.half = _patch_half(int(proj.radii.amax()))
        image, largest = composite_fixed(proj, width, height, self.half)
        self._largest = largest if self._largest is None else torch.maximum(self._largest, largest)
        return image

    def settle(self) -> bool:
        """Grow the fixed patch if a splat outgrew it since the last call (one device read); True if it grew."""
        if self._largest is None:
            return False
        largest, self._largest = int(self._largest), None
        if self.half is None or largest <= self.half:
            return False
        grown = _patch_half(largest)  # the same as now once the largest class is reached
        grew = grown > self.half
        self.half = grown
        return grew


def _patch_half(radius: int) -> int:
    """The size class at or above ``radius`` with a quarter to spare (strokes move; fewer regrowths)."""
    wanted = max(1, math.ceil(radius * 1.25))
    return next((c for c in _SIZE_CLASSES if c >= wanted), _SIZE_CLASSES[-1])
