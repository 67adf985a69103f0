"""Loss registry: names (the keys of ``OptimizeConfig.losses``) -> factories ``f(ctx) -> loss``.

Factories import lazily so that a geometry-only run never imports open_clip.
"""

from __future__ import annotations

from collections.abc import Callable

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
