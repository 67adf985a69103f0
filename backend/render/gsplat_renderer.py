"""The CUDA renderer: gsplat 1.5.3's ``rasterization`` drawing black isotropic splats on white.

Imported only on a CUDA device (``choose_renderer`` sees to it); gsplat itself is imported lazily
in here. The image is ``1 - render_alphas``: with every splat black, the colour channel carries
nothing, so one zero channel is rasterised and the accumulated alpha is the ink. Per-view scales
``[V,N]`` use gsplat's batch dimension (one batch per view, one camera each) rather than a loop.
"""

from __future__ import annotations

import torch

from .gsplat_rules import EPS2D, FAR_PLANE, NEAR_PLANE, check_inputs


def load_extension() -> None:
    """Import gsplat's CUDA extension (JIT-compiles on first use); raise if it cannot exist here."""
    from gsplat.cuda._backend import _C

    if _C is None:
        raise RuntimeError("gsplat found no CUDA toolkit to build its extension (set CUDA_HOME)")


class GsplatRenderer:
    """``Renderer`` backed by ``gsplat.rasterization`` (classic mode, eps2d 0.3, near 0.01)."""

    name = "gsplat"

    def __init__(self, packed: bool = False):
        self.packed = packed  # packed=False skips the packing work; either gives the same image

    def __call__(self, means, scales, opacity, viewmats, Ks, width: int, height: int) -> torch.Tensor:
        from gsplat import rasterization

        check_inputs(means, scales, opacity, viewmats, Ks, width, height)
        V, N = viewmats.shape[0], means.shape[0]
        means = means.float()
        scales = torch.as_tensor(scales, device=means.device).float()
        # a number is filled on the device (as_tensor of a Python float would copy it there and wait)
        opac = opacity.float() if torch.is_tensor(opacity) else means.new_full((), float(opacity))
        opac = opac.expand(N) if opac.dim() == 0 else opac
        quats = means.new_zeros(N, 4)
        quats[:, 0] = 1.0  # gsplat quaternions are (w, x, y, z)
        viewmats, Ks = viewmats.float().contiguous(), Ks.float().contiguous()
        if scales.dim() <= 1:
            scales3 = scales.expand(N)[:, None].expand(N, 3).contiguous()
            colors = means.new_zeros(N, 1)
            _, alphas, _ = rasterization(means, quats, scales3, opac.contiguous(), colors, viewmats, Ks,
                                         int(width), int(height), packed=self.packed, **_OPTIONS)
            return 1.0 - alphas[..., 0]  # [V,H,W]
        _, alphas, _ = rasterization(
            means[None].expand(V, N, 3).contiguous(), quats[None].expand(V, N, 4).contiguous(),
            scales[..., None].expand(V, N, 3).contiguous(), opac[None].expand(V, N).contiguous(),
            means.new_zeros(V, N, 1), viewmats[:, None], Ks[:, None], int(width), int(height), packed=self.packed,
            **_OPTIONS)
        return 1.0 - alphas[:, 0, ..., 0]  # [V,1,H,W,1] -> [V,H,W]


# The rules the torch renderer mirrors (gsplat_rules.py).
_OPTIONS = dict(near_plane=NEAR_PLANE, far_plane=FAR_PLANE, eps2d=EPS2D, rasterize_mode="classic", render_mode="RGB")
