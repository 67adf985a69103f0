"""One renderer interface for the optimisation loop: black isotropic splats on white paper.

Two implementations follow the same rules (gsplat 1.5.3's, see ``torch_renderer``) and give the same
image to a few 1e-3: ``torch`` (any device, pure PyTorch) and ``gsplat`` (CUDA kernels). The loop
only ever sees :class:`Renderer`; :func:`choose_renderer` picks one and says why in one line, which
the worker reports as an ``info`` event.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from typing import Literal, Protocol

import torch

from ..errors import DeviceUnavailable
from .gsplat_rules import NEAR_PLANE
from .torch_renderer import TorchRenderer

RendererRequest = Literal["auto", "torch", "gsplat"]


class Renderer(Protocol):
    """Renders splats to transmittance images: 1 = white paper, 0 = black ink.

    ``means [N,3]`` world positions, ``scales [N]`` or per view ``[V,N]`` world sigma, ``opacity``
    a float or ``[N]``, ``viewmats [V,4,4]`` OpenCV world-to-camera, ``Ks [V,3,3]``. Returns
    ``[V,H,W]`` = prod over splats of (1 - alpha), differentiable w.r.t. means and scales.
    """

    name: str

    def __call__(self, means: torch.Tensor, scales: torch.Tensor, opacity: float | torch.Tensor,
                 viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int) -> torch.Tensor: ...


def pixel_scales(means: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, width_px: float) -> torch.Tensor:
    """World sigma ``[V,N]`` that makes each splat ``width_px`` pixels (sigma) wide in every view.

    Exact for a splat on the optical axis (off axis the perspective stretch adds a little, as for
    any pinhole). Left differentiable on purpose: the rendered width then truly does not depend on
    depth, so no gradient pushes splats towards or away from a camera to change their apparent size.
    """
    R, t = viewmats[:, :3, :3].to(means.dtype), viewmats[:, :3, 3].to(means.dtype)
    depth = torch.einsum("vj,nj->vn", R[:, 2], means) + t[:, 2:3]  # camera z  [V,N]
    focal = torch.sqrt(Ks[:, 0, 0] * Ks[:, 1, 1]).to(means.dtype)[:, None]
    return width_px * depth.clamp_min(NEAR_PLANE) / focal


def _gsplat_extension_ready() -> tuple[bool, str]:
    """Whether gsplat's CUDA extension exists already, without triggering its JIT build.

    gsplat 1.5.3 on PyPI ships sources only and compiles them on first import of
    ``gsplat.cuda._backend`` (many minutes). ``auto`` must not start that silently, so it only
    takes gsplat when a prebuilt module (``gsplat.csrc``) or a finished JIT build is present.
    """
    if importlib.util.find_spec("gsplat") is None:
        return False, "gsplat is not installed"
    if importlib.util.find_spec("gsplat.csrc") is not None:
        return True, ""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        build = _get_build_directory("gsplat_cuda", verbose=False)
    except Exception as exc:  # private torch API; treat any change as "not built"
        return False, f"cannot locate gsplat's build folder ({exc})"
    if os.path.exists(os.path.join(build, "gsplat_cuda.so")):
        return True, ""
    return False, ("gsplat's CUDA extension is not built yet (its first use compiles for many minutes; "
                   "request renderer 'gsplat' once to build it)")


def _load_gsplat():
    """Import gsplat and its CUDA extension (may compile); gsplat prints to stdout, keep it off ours."""
    with contextlib.redirect_stdout(sys.stderr):
        from .gsplat_renderer import GsplatRenderer, load_extension

        load_extension()
    return GsplatRenderer()


def choose_renderer(requested: RendererRequest, device: torch.device | str) -> tuple[Renderer, str]:
    """The renderer for ``requested`` on ``device`` and a one-line reason for the user.

    ``gsplat`` is only imported when the device is CUDA and CUDA is available. Requesting it
    otherwise, or when it cannot be loaded, raises :class:`DeviceUnavailable` (exit code 4).
    """
    device = torch.device(device)
    if requested not in ("auto", "torch", "gsplat"):
        raise ValueError(f"renderer must be 'auto', 'torch' or 'gsplat', got {requested!r}")
    if requested == "torch":
        fixed = device.type == "cuda"
        what = "torch renderer (fixed shapes)" if fixed else "torch renderer"
        return TorchRenderer(fixed_shapes=fixed), f"{what} on {device.type}: requested"
    on_cuda = device.type == "cuda" and torch.cuda.is_available()
    if requested == "gsplat":
        if not on_cuda:
            why = "CUDA is not available" if not torch.cuda.is_available() else f"the device is {device.type}"
            raise DeviceUnavailable(f"renderer 'gsplat' needs a CUDA device, but {why}; "
                                    "use renderer 'torch' or 'auto'")
        if importlib.util.find_spec("gsplat") is None:
            raise DeviceUnavailable("renderer 'gsplat' requested but the gsplat package is not installed "
                                    "(pip install gsplat==1.5.3), or use renderer 'torch' or 'auto'")
        try:
            return _load_gsplat(), "gsplat on CUDA: requested"
        except Exception as exc:
            raise DeviceUnavailable(f"renderer 'gsplat' requested but its CUDA extension failed to load: "
                                    f"{type(exc).__name__}: {exc}") from exc
    if not on_cuda:
        why = "no CUDA device" if device.type in ("cpu", "cuda") else f"device is {device.type}"
        return TorchRenderer(), f"torch renderer on {device.type}: {why}"
    ready, why = _gsplat_extension_ready()
    # On a GPU the torch renderer runs with fixed shapes: no host reads in a step.
    if not ready:
        return TorchRenderer(fixed_shapes=True), f"torch renderer (fixed shapes) on cuda: {why}"
    try:
        return _load_gsplat(), "gsplat on CUDA"
    except Exception as exc:
        return (TorchRenderer(fixed_shapes=True),
                f"torch renderer (fixed shapes) on cuda: gsplat failed to load ({type(exc).__name__}: {exc})")


__all__ = ["Renderer", "RendererRequest", "TorchRenderer", "choose_renderer", "pixel_scales"]
