"""Strokes in order of importance: what each adds to the held-out views' line drawing.

A sketch's strokes are written first-most-important, so "the first N strokes" is the sketch an
artist gets at N (the Strokes Shown slider, drawn-on animation order, Keep Strokes' defaults). The
order is greedy: the stroke that raises the mean line F of the held-out views most, then the one
that raises it most beside the first, and so on (F as the evaluation measures it, at the job's
stroke width). Greedy forward selection on a covering score is what a person does drawing the big
shape first; a stroke's own F alone would rank two strokes on the same outline both high.
"""

from __future__ import annotations

import torch

from .evaluation import INK_THRESHOLD, TOLERANCE_PX

GREEDY_MAX = 128  # above this many strokes (K^2 F evaluations), rank by each stroke's own F instead


def _disk(radius: int, device) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return ((r[:, None] ** 2 + r[None] ** 2) <= radius * radius).float()[None, None]


def grow(mask: torch.Tensor, disk: torch.Tensor) -> torch.Tensor:
    """``[N,H,W]`` bool dilated by ``disk``."""
    pad = disk.shape[-1] // 2
    return torch.nn.functional.conv2d(mask.float()[:, None], disk, padding=pad)[:, 0] > 0.5


class LineF:
    """Mean line F over some views of a sketch given as a log-transmittance image ``[V,H,W]``: ink
    within TOLERANCE_PX of any line (visible or hidden) is precise, visible lines within TOLERANCE_PX
    of ink are recalled. All splats are black, so a sketch's transmittance is the product of its
    strokes': log images add."""

    def __init__(self, targets, view_ids: torch.Tensor):
        self.disk = _disk(int(TOLERANCE_PX), view_ids.device)
        every = targets.lines[view_ids] > 0.5
        if targets.lines_hidden is not None:
            every |= targets.lines_hidden[view_ids] > 0.5
        self.near_line, self.visible = grow(every, self.disk), targets.lines[view_ids] > 0.5

    def __call__(self, log_t: torch.Tensor) -> torch.Tensor:
        ink = 1.0 - log_t.exp() > INK_THRESHOLD
        precision = (ink & self.near_line).sum(dim=(1, 2)) / ink.sum(dim=(1, 2)).clamp_min(1)
        recall = (self.visible & grow(ink, self.disk)).sum(dim=(1, 2)) / self.visible.sum(dim=(1, 2)).clamp_min(1)
        return (2 * precision * recall / (precision + recall).clamp_min(1e-12)).mean()


def stroke_log_image(sketch, samples: torch.Tensor, view_ids: torch.Tensor) -> torch.Tensor:
    """The log-transmittance images ``[V,H,W]`` of one stroke's splat centres ``samples [1,N,3]``
    alone (views 8 at a time)."""
    return torch.cat([sketch.render(samples, view_ids[i:i + 8], with_kept=False)
                      for i in range(0, len(view_ids), 8)]).clamp_min(1e-30).log()


def kept_log_image(sketch, view_ids: torch.Tensor) -> torch.Tensor:
    """The log-transmittance images ``[V,H,W]`` of the artist's kept strokes (zeros without any):
    what every ranked sketch starts from."""
    t = sketch.targets
    if sketch.kept is None:
        return torch.zeros((len(view_ids), t.height, t.width), device=view_ids.device)
    nothing = sketch.kept.new_zeros((0, 3))
    return torch.cat([sketch.render(nothing, view_ids[i:i + 8]) for i in range(0, len(view_ids), 8)]
                     ).clamp_min(1e-30).log()


@torch.no_grad()
def rank_strokes(sketch, points: torch.Tensor, view_ids: torch.Tensor) -> tuple[list[int], list[float]]:
    """(order, F of the first n strokes for n = 1..K): ``order[0]`` is the most important stroke.
    Kept strokes come before all of them (their F is in every figure).

    Empty lists when the job has no line images (nothing to rank by: the order stays as it is)."""
    count = points.shape[0]
    if sketch.targets.lines is None or count == 0 or len(view_ids) == 0:
        return [], []
    score = LineF(sketch.targets, view_ids)
    samples = sketch.samples(points)
    logs = [stroke_log_image(sketch, samples[k:k + 1], view_ids) for k in range(count)]
    if count > GREEDY_MAX:
        alone = torch.stack([score(log) for log in logs])
        order = [int(k) for k in torch.argsort(alone, descending=True, stable=True)]
        total, curve = kept_log_image(sketch, view_ids), []
        for k in order:
            total += logs[k]
            curve.append(float(score(total)))
        return order, curve
    total = kept_log_image(sketch, view_ids)
    left, order, curve = list(range(count)), [], []
    while left:
        scores = torch.stack([score(total + logs[k]) for k in left])
        best = int(torch.argmax(scores))  # ties: the lower index, so the order is deterministic
        k = left.pop(best)
        order.append(k)
        curve.append(float(scores[best]))
        total += logs[k]
    return order, curve
