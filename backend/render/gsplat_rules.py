"""The rules both renderers follow, in one place: gsplat 1.5.3's constants and the input contract.

``torch_renderer`` reimplements them in PyTorch and ``gsplat_renderer`` passes them to gsplat's own
kernels, so the two give the same image; both check their inputs here at their entry.
"""

from __future__ import annotations

import torch

EPS2D = 0.3  # added to the projected 2D covariance's diagonal (px^2): a splat is never thinner than a pixel
NEAR_PLANE = 0.01  # camera z below which a splat is culled
FAR_PLANE = 1e10
ALPHA_THRESHOLD = 1.0 / 255.0  # a splat's alpha below this at a pixel adds nothing there
MAX_ALPHA = 0.999  # one splat never inks a pixel completely
EXTEND = 3.33  # a splat's bounding-box radius in standard deviations


def check_inputs(means, scales, opacity, viewmats, Ks, width, height) -> None:
    """The renderers' entry contract (gsplat-style shapes); a mismatch is the caller's bug."""
    assert means.dim() == 2 and means.shape[1] == 3, f"means must be [N,3], got {list(means.shape)}"
    assert viewmats.dim() == 3 and viewmats.shape[1:] == (4, 4), f"viewmats must be [V,4,4], got {list(viewmats.shape)}"
    V, N = viewmats.shape[0], means.shape[0]
    assert Ks.shape == (V, 3, 3), f"Ks must be [V,3,3] = [{V},3,3] (one per viewmat), got {list(Ks.shape)}"
    if torch.is_tensor(scales) and scales.dim() == 2 and scales.shape != (V, N):
        raise ValueError(f"scales must be [N] or [V,N] = [{V},{N}], got {list(scales.shape)}")
    if torch.is_tensor(opacity):
        assert opacity.dim() == 0 or opacity.shape == (N,), \
            f"opacity must be a number or [N] = [{N}], got {list(opacity.shape)}"
    assert int(width) > 0 and int(height) > 0, f"image size must be positive, got {width}x{height}"
