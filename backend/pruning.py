"""Pruning and re-seeding, one policy: which strokes go, and where new ones start.

Part way through a run (``PRUNE_AT`` of it) the strokes that add nothing (leave-one-out of the
``lines`` loss over up to 8 training views), the dots, and beyond the ink budget the strokes mostly
inside the silhouette go, then up to a quarter whose removal raises the training views' line F;
with ``reseed`` as many new strokes start on the lines still uncovered, never past the ink budget.
When the run ends the first test alone runs again. A sketch is never left empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from contract.settings import OptimizeConfig

from .curves import curve_lengths, segment_count, subdivide
from .imageops import gaussian_blur
from .init import lifted_contour_points, strokes_on_points
from .ranking import LineF, kept_log_image, stroke_log_image
from .render import pinhole
from .sketch import Sketch, evaluate_views

PRUNE_AT = 0.7  # fraction of the run after which strokes that add nothing are removed
PRUNE_TOLERANCE = 1e-3  # a stroke whose removal raises the judged loss by less than this adds nothing

INTERIOR_PX = 2.0  # ink farther than this from every line, inside the silhouette, is "interior"
INTERIOR_SHARE = 0.2  # beyond the ink budget, a curve with more interior samples than this is dropped


@torch.no_grad()
def interior_shares(sketch: Sketch, lines_loss, control_points: torch.Tensor, view_ids: torch.Tensor) -> torch.Tensor:
    """``[K]``: the share of each curve's samples, over ``view_ids``, that lands inside the object's
    silhouette and more than ``INTERIOR_PX`` from any of its lines (visible or hidden): the
    volume-filling ink the evaluation counts as interior. Projection and lookup only, no render."""
    t = sketch.targets
    samples = sketch.samples(control_points)
    K, S = samples.shape[:2]
    uv, _ = pinhole.project(samples.reshape(-1, 3), t.viewmats[view_ids], t.Ks[view_ids], min_depth=1e-6)  # [V,KS,2]
    x = uv[..., 0].long().clamp(0, t.width - 1)
    y = uv[..., 1].long().clamp(0, t.height - 1)
    v = torch.arange(len(view_ids), device=x.device)[:, None].expand_as(x)
    far = lines_loss.distance_cost[view_ids][v, y, x] > INTERIOR_PX
    inside = t.alpha[view_ids][v, y, x] > 0.5
    return (far & inside).float().reshape(len(view_ids), K, S).mean(dim=(0, 2))


@torch.no_grad()
def useless_curves(sketch: Sketch, losses, control_points: torch.Tensor, train_ids: torch.Tensor) -> list[int]:
    """Curves whose removal raises the loss of none of up to 8 training views (leave-one-out),
    curves collapsed to a dot, and, beyond ``ink_budget`` curves, curves mostly interior (volume
    filling). The ``lines`` loss alone judges when present (cheap, no CLIP)."""
    K = control_points.shape[0]
    width = sketch.world_width()
    collapsed = set(torch.nonzero(curve_lengths(control_points) < 2 * width).flatten().tolist())
    judge = {n: v for n, v in losses.items() if n == "lines"}
    if judge and K > 1:
        ids = train_ids[torch.linspace(0, len(train_ids) - 1, min(8, len(train_ids))).round().long()]
        budget = sketch.cfg.ink_budget
        if budget and K > budget:
            shares = interior_shares(sketch, judge["lines"][1], control_points, ids)
            for k in torch.argsort(shares, descending=True).tolist()[:K - budget]:
                if shares[k] > INTERIOR_SHARE:
                    collapsed.add(k)
        kept = [k for k in range(K) if k not in collapsed]
        full = evaluate_views(sketch, judge, control_points[kept], ids, len(ids)) if kept else None
        for k in list(kept):  # one at a time, so two copies of a stroke never both go
            if len(kept) == 1:
                break
            rest = [j for j in kept if j != k]
            without = evaluate_views(sketch, judge, control_points[rest], ids, len(ids))
            # judged on the view that would miss it most: a curve that only one view needs is kept
            if (without - full).max() < PRUNE_TOLERANCE:
                collapsed.add(k)
                kept, full = rest, without
    if len(collapsed) >= K:  # never an empty sketch: the longest stroke stays
        collapsed.discard(int(torch.argmax(curve_lengths(control_points))))
    return sorted(collapsed)


@torch.no_grad()
def line_f_without(sketch: Sketch, points: torch.Tensor, view_ids: torch.Tensor) -> torch.Tensor:
    """``[K+1]``: the mean line F over ``view_ids`` of the sketch without stroke k, and last of the
    whole sketch (F as the evaluation measures it, at the job's stroke width: ``ranking.LineF``). The
    whole sketch's log image is a sum over strokes, and leaving a stroke out subtracts its own (two
    renders per stroke, memory of one image stack)."""
    score, samples = LineF(sketch.targets, view_ids), sketch.samples(points)
    total = kept_log_image(sketch, view_ids)
    for k in range(points.shape[0]):
        total += stroke_log_image(sketch, samples[k:k + 1], view_ids)
    return torch.stack([score(total - stroke_log_image(sketch, samples[k:k + 1], view_ids))
                        for k in range(points.shape[0])] + [score(total)])


@torch.no_grad()
def strokes_lowering_f(sketch: Sketch, points: torch.Tensor, train_ids: torch.Tensor, gain: float,
                       most: int) -> list[int]:
    """Up to ``most`` strokes whose removal raises the training views' mean line F by more than
    ``gain`` (the worst first, judged again after each removal); none when ``gain`` is 0 or the job
    has no line images. Such a stroke lies on lines in a few views and across the body in the rest:
    the leave-one-out of the loss keeps it (some view's recall needs it), the measure the sketch is
    judged by says the sketch reads better without it."""
    if gain <= 0 or sketch.targets.lines is None:
        return []
    keep = list(range(points.shape[0]))
    dropped = []
    while len(dropped) < most and len(keep) > 1:
        scores = line_f_without(sketch, points[keep], train_ids)
        gains = scores[:-1] - scores[-1]
        best = int(torch.argmax(gains))
        if float(gains[best]) <= gain:
            break
        dropped.append(keep.pop(best))
    return dropped


def _drop_useless_curves(sketch: Sketch, losses, points: torch.Tensor, train_ids: torch.Tensor, alive: list[int]):
    """Remove :func:`useless_curves`; returns (kept points, their original indices, dropped original indices)."""
    drop = set(useless_curves(sketch, losses, points, train_ids))
    if not drop:
        return points, alive, []
    keep = [k for k in range(points.shape[0]) if k not in drop]
    return points[keep], [alive[k] for k in keep], [alive[k] for k in sorted(drop)]


UNCOVERED_AT = 0.3  # a visible line pixel is uncovered while the blurred ink there is below this
RESEED_CLOUD = 3000  # lifted uncovered points kept (the densest-cluster search is quadratic in them)


@torch.no_grad()
def uncovered_lines(sketch: Sketch, points: torch.Tensor, view_ids: torch.Tensor) -> torch.Tensor:
    """``[V,H,W]`` bool: the visible target lines of ``view_ids`` that no stroke draws over (within
    about 2 px), where new strokes are needed."""
    images = torch.cat([sketch.render(sketch.samples(points), view_ids[i:i + 8]) for i in range(0, len(view_ids), 8)])
    reach = gaussian_blur(1.0 - images, 2.0) / gaussian_blur(torch.ones_like(images[:1]), 2.0).amax()
    return (sketch.targets.lines[view_ids] > 0.5) & (reach < UNCOVERED_AT)


def reseed_strokes(sketch: Sketch, points: torch.Tensor, train_ids: torch.Tensor, count: int,
                   generator: torch.Generator) -> torch.Tensor:
    """Up to ``count`` new strokes ``[n,3S+1,3]`` on the 3D points of the lines the sketch still misses
    (the uncovered line pixels lifted onto the surface), densest first."""
    t = sketch.targets
    if t.lines is None or t.surface_samples is None or count <= 0:
        return points.new_zeros((0,) + tuple(points.shape[1:]))
    masks = uncovered_lines(sketch, points, train_ids)
    cloud = lifted_contour_points(t, generator=generator, masks=masks, view_ids=train_ids.tolist())
    if cloud.shape[0] > RESEED_CLOUD:
        cloud = cloud[torch.randperm(cloud.shape[0], generator=generator)[:RESEED_CLOUD].to(cloud.device)]
    return subdivide(strokes_on_points(cloud, count), segment_count(points)).to(points)


@dataclass
class Pruned:
    """What one pruning did: the strokes left, with their original indices, and why the others went."""

    points: torch.Tensor  # [K',3S+1,3] the strokes left (and any new ones, last)
    alive: list[int]  # original index of each
    added_nothing: list[int] = field(default_factory=list)  # original indices of strokes dropped ...
    lowered_f: list[int] = field(default_factory=list)  # ... and of those that lowered the line F
    reseeded: int = 0  # new strokes started where lines were still missing

    @property
    def dropped(self) -> list[int]:
        return self.added_nothing + self.lowered_f


@dataclass(frozen=True)
class PruningPolicy:
    """The job's pruning settings, applied part way through a run (:meth:`mid_run`) and at its end
    (:meth:`at_end`)."""

    f_gain: float  # setting prune_f_gain
    ink_budget: int
    curves: int
    reseed: bool

    @classmethod
    def of(cls, cfg: OptimizeConfig) -> PruningPolicy:
        return cls(cfg.prune_f_gain, cfg.ink_budget, cfg.curves, cfg.reseed)

    def mid_run(self, sketch: Sketch, losses, points: torch.Tensor, alive: list[int], next_index: int,
                train_ids: torch.Tensor, generator: torch.Generator) -> Pruned:
        """Drop the strokes that add nothing, then up to a quarter that lower the line F; with
        ``reseed`` start as many new ones (numbered from ``next_index``) where lines are missing."""
        kept, alive, added_nothing = _drop_useless_curves(sketch, losses, points, train_ids, alive)
        worse = strokes_lowering_f(sketch, kept, train_ids, self.f_gain, max(1, kept.shape[0] // 4))
        lowered = [alive[k] for k in worse]
        if worse:
            keep = [k for k in range(kept.shape[0]) if k not in worse]
            kept, alive = kept[keep], [alive[k] for k in keep]
        out = Pruned(kept, alive, added_nothing, lowered)
        # Up to the strokes dropped, and never past the ink budget: beyond it pruning removes the
        # volume-filling strokes on purpose (at 32 strokes re-seeding past the budget lowered held-out F
        # on spot 0.606 -> 0.545).
        dropped = len(out.dropped)
        wanted = dropped if not self.ink_budget else min(dropped, max(0, self.ink_budget - kept.shape[0]))
        if self.reseed and wanted:
            fresh = reseed_strokes(sketch, kept, train_ids, wanted, generator)
            if fresh.shape[0]:
                out.points = torch.cat([kept, fresh])
                out.alive = alive + list(range(next_index, next_index + fresh.shape[0]))
                out.reseeded = fresh.shape[0]
        return out

    def at_end(self, sketch: Sketch, losses, points: torch.Tensor, alive: list[int],
               train_ids: torch.Tensor) -> Pruned:
        """The strokes that add nothing, once more, on the finished sketch."""
        return Pruned(*_drop_useless_curves(sketch, losses, points, train_ids, alive))

    def describe(self, pruned: Pruned) -> str:
        """One line for the user: what went, why, and what started anew."""
        budget = (f" or, beyond the ink budget of {self.ink_budget}, mostly filled the interior"
                  if self.ink_budget and self.curves > self.ink_budget else "")
        reasons = [f"{len(pruned.added_nothing)} that added nothing{budget}"] if pruned.added_nothing else []
        reasons += [f"{len(pruned.lowered_f)} that lowered the training views' line F"] if pruned.lowered_f else []
        message = "pruned stroke(s): " + ", ".join(reasons)
        if pruned.reseeded:
            message += f"; {pruned.reseeded} new where lines were still missing"
        return f"{message}; {len(pruned.alive)} left"
