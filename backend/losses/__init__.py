"""Loss registry: names (the keys of ``OptimizeConfig.losses``) -> factories ``f(ctx) -> loss``, and
their weighted sum (:func:`total_loss`). The terms are in ``geometry.py`` and ``clip.py``.

Factories import lazily so that a geometry-only run never imports open_clip.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from contract.settings import LOSS_NAMES

from .base import LossContext, LossInputs, Targets  # noqa: F401  (re-exported)


def _clip_geometric(ctx):
    from .clip import clip_geometric

    return clip_geometric(ctx)


def _clip_semantic(ctx):
    from .clip import clip_semantic

    return clip_semantic(ctx)


def _geometry(name):
    def factory(ctx):
        from . import geometry

        return getattr(geometry, name)(ctx)

    return factory


REGISTRY: dict[str, Callable] = {
    "clip_geometric": _clip_geometric,
    "clip_semantic": _clip_semantic,
    "lines": _geometry("lines"),
    "surface": _geometry("surface"),
    "repulsion": _geometry("repulsion"),
    "turning": _geometry("turning"),
    "coiling": _geometry("coiling"),
}
assert tuple(REGISTRY) == LOSS_NAMES, "config.LOSS_NAMES and the registry must agree"


def build_losses(ctx: LossContext, weights: dict[str, float]) -> dict[str, tuple[float, Callable]]:
    """``{name: (weight, loss)}`` for every loss with a positive weight."""
    return {name: (w, REGISTRY[name](ctx)) for name, w in weights.items() if w > 0}


def total_loss(losses, inputs: LossInputs, per_view: bool = False, hard_views: float = 0.0):
    """Weighted sum of the losses: per view (``[B]``) or one number for the step. With ``hard_views``
    the step's views are weighted by ``(loss / mean loss) ** hard_views`` (weights detached, mean 1)."""
    values, total = {}, 0.0
    for name, (weight, loss) in losses.items():
        value = loss(inputs)
        values[name] = value
        total = total + weight * value
    if per_view:
        return total, values
    if hard_views > 0 and torch.is_tensor(total) and total.ndim == 1 and total.numel() > 1:
        level = total.detach().clamp_min(1e-8)
        weights = (level / level.mean()) ** hard_views
        return (total * (weights / weights.mean())).mean(), values
    return total.mean() if torch.is_tensor(total) else total, values
