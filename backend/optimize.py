"""The optimisation loop: a config and fixed targets in, control points and events out.

No I/O here: the worker (``job.py``) turns events into JSON lines and results into files, and tests
and benchmarks call :func:`optimize` directly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from contract.protocol import INFO, PROGRESS, SNAPSHOT
from contract.settings import OptimizeConfig

from .curves import curve_lengths, enforce_g1, sample_curves, segment_count, split_segments, subdivide
from .imageops import gaussian_blur
from .init import initial_curves, lifted_contour_points, strokes_on_points
from .losses import LossContext, LossInputs, Targets, build_losses
from .ranking import LineF, kept_log_image, rank_strokes, stroke_log_image
from .render import Renderer, pinhole, pixel_scales

Emit = Callable[[dict], None]
PRUNE_AT = 0.7  # fraction of the run after which curves that add nothing are removed
PRUNE_TOLERANCE = 1e-3  # a curve whose removal raises the judged loss by less than this adds nothing
LR_FLOOR = 0.1  # cosine decay of the step size down to this fraction


@dataclass
class RunResult:
    control_points: torch.Tensor  # [K,3S+1,3] on CPU, normalised space
    widths: torch.Tensor  # [K]
    view_losses: torch.Tensor  # [V] (NaN where not measured)
    loss_history: list[float]
    losses: dict[str, float]
    iterations: int
    seconds: float
    seed: int
    cancelled: bool = False
    pruned: list[int] = field(default_factory=list)  # indices into the initial curves
    kept: list[int] = field(default_factory=list)
    heldout_loss: float = float("nan")
    runs: list[dict] = field(default_factory=list)  # best-of-N: one summary per seed
    init_seconds: float = 0.0  # of ``seconds``: finding the initial strokes (the feature lines' cover)
    first_f: list[float] = field(default_factory=list)  # held-out line F of the first n strokes, n = 1..K


class Sketch:
    """Renders control points the same way in the loop, in pruning and in evaluation."""

    def __init__(self, cfg: OptimizeConfig, targets: Targets, renderer: Renderer):
        self.cfg, self.targets, self.renderer = cfg, targets, renderer
        # the artist's kept strokes: in every picture of the sketch, so they count as covering their lines
        self.kept = None if targets.kept is None else self.samples(targets.kept).reshape(-1, 3).detach()

    def samples(self, control_points: torch.Tensor) -> torch.Tensor:
        return sample_curves(control_points, self.cfg.samples_per_curve)

    def render(self, samples: torch.Tensor, view_ids: torch.Tensor, with_kept: bool = True) -> torch.Tensor:
        """Transmittance images ``[V,H,W]`` of the strokes ``samples`` (and the kept strokes)."""
        t = self.targets
        means = samples.reshape(-1, 3)
        if with_kept and self.kept is not None:
            means = torch.cat([self.kept, means])
        viewmats, Ks = t.viewmats[view_ids], t.Ks[view_ids]
        if self.cfg.width_mode == "pixels":
            scales = pixel_scales(means, viewmats, Ks, self.cfg.stroke_width)
        else:
            scales = torch.full((means.shape[0],), self.cfg.stroke_width, device=means.device)
        return self.renderer(means, scales, self.cfg.opacity, viewmats, Ks, t.width, t.height)

    def world_width(self) -> float:
        """Stroke sigma in normalised units (pixel widths converted at the mean camera distance)."""
        if self.cfg.width_mode == "world":
            return self.cfg.stroke_width
        t = self.targets
        distance = t.viewmats[:, :3, 3].norm(dim=1).mean()
        return float(self.cfg.stroke_width * distance / t.Ks[:, 0, 0].mean())


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


def _view_schedule(train_ids: torch.Tensor, per_step: int, generator: torch.Generator):
    """Endless batches of training views: shuffled passes, so every view is seen equally often."""
    queue: list[int] = []
    while True:
        while len(queue) < per_step:
            queue += train_ids[torch.randperm(len(train_ids), generator=generator)].tolist()
        batch, queue = queue[:per_step], queue[per_step:]
        yield batch


@torch.no_grad()
def evaluate_views(sketch: Sketch, losses, control_points: torch.Tensor, view_ids: torch.Tensor,
                   batch: int) -> torch.Tensor:
    """Total loss per view, without augmentations, for ``view_ids``."""
    samples = sketch.samples(control_points)
    out = []
    for start in range(0, len(view_ids), batch):
        ids = view_ids[start:start + batch]
        images = sketch.render(samples, ids)
        inputs = LossInputs(images, ids, control_points, samples, progress=1.0, augment=False)
        total, _ = total_loss(losses, inputs, per_view=True)
        out.append(torch.as_tensor(total, device=images.device).expand(len(ids)))
    return torch.cat(out) if out else torch.zeros(0)


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
    if len(collapsed) >= K:  # always keep the most useful curve
        collapsed.discard(0)
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


@dataclass
class _RunState:
    """What one seed's run carries from step to step."""

    points: torch.Tensor  # [K,4,3] the leaf being optimised
    optimizer: torch.optim.Optimizer
    alive: list[int]  # original index of each curve in ``points``
    pruned: list[int] = field(default_factory=list)  # original indices dropped so far
    history: list[torch.Tensor] = field(default_factory=list)  # total loss per step (on the device)
    last_total: torch.Tensor | None = None
    last_values: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0  # optimisation steps completed
    cancelled: bool = False
    init_seconds: float = 0.0


def _start_run(cfg: OptimizeConfig, targets: Targets, generator: torch.Generator, device) -> _RunState:
    """The initial curves (the initialisation consumes ``generator`` first) and their optimiser."""
    started = time.perf_counter()
    points = initial_curves(cfg.init, cfg.curves, targets, generator, device, _start_segments(cfg),
                            cfg.cover_balance).detach().clone()
    points.requires_grad_(True)
    return _RunState(points, _adam(points, cfg.lr), list(range(cfg.curves)), init_seconds=time.perf_counter() - started)


def _start_segments(cfg: OptimizeConfig) -> int:
    """Segments per stroke at the start: half of ``segments`` while a coarse-to-fine split is due."""
    return cfg.segments // 2 if _split_step(cfg) >= 0 else cfg.segments


def _split_step(cfg: OptimizeConfig) -> int:
    """The step after which every segment is halved, or -1 (no split: an odd count, or ``split_at`` 0)."""
    if cfg.segments % 2 or not 0.0 < cfg.split_at < 1.0:
        return -1
    return int(cfg.iterations * cfg.split_at)


def _split_mid_run(cfg: OptimizeConfig, state: _RunState, emit: Emit) -> None:
    """Coarse to fine: every stroke's segments halved (the same curves), a fresh optimiser."""
    state.points = split_segments(state.points.detach()).requires_grad_(True)
    state.optimizer = _adam(state.points, cfg.lr)
    emit({"type": INFO, "message": f"strokes refined to {segment_count(state.points)} segments each"})


def _adam(points: torch.Tensor, lr: float) -> torch.optim.Adam:
    """Adam; fused on a GPU: one launch per step, and its step count stays on the device (the for-loop
    version reads it on the host each step: free on a CPU, whose results stay those measured so far)."""
    return torch.optim.Adam([points], lr=lr, fused=points.device.type == "cuda")


def _learning_rate(cfg: OptimizeConfig, progress: float) -> float:
    """Cosine decay from ``lr`` to ``LR_FLOOR * lr`` over the run (``progress`` in [0, 1])."""
    return cfg.lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def _step(cfg: OptimizeConfig, sketch: Sketch, losses, state: _RunState, ids: torch.Tensor, progress: float,
          generator: torch.Generator) -> None:
    """One Adam step on the views ``ids``; records its total loss and the loss terms."""
    for group in state.optimizer.param_groups:
        group["lr"] = _learning_rate(cfg, progress)
    samples = sketch.samples(state.points)
    images = sketch.render(samples, ids)
    inputs = LossInputs(images, ids, state.points, samples, progress=progress, generator=generator)
    total, state.last_values = total_loss(losses, inputs, hard_views=cfg.hard_views)
    if cfg.abstraction > 0 and "lines" in losses and state.points.shape[0] >= 4:
        total = total + cfg.abstraction * _first_quarter_lines(sketch, losses["lines"], state, samples, ids, progress)
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    state.optimizer.step()
    enforce_g1(state.points)
    state.last_total = total.detach()
    state.history.append(state.last_total)
    state.steps += 1


def _first_quarter_lines(sketch: Sketch, lines, state: _RunState, samples: torch.Tensor, ids: torch.Tensor,
                         progress: float) -> torch.Tensor:
    """The weighted lines loss of the first quarter of the strokes drawn alone (their order is the
    start's: the feature cover's most-covering first), so they keep the whole shape between them."""
    weight, loss = lines
    n = state.points.shape[0] // 4
    alone = LossInputs(sketch.render(samples[:n], ids), ids, state.points[:n], samples[:n], progress=progress)
    return weight * loss(alone).mean()


def _to_device(ids: list[int], device: torch.device) -> torch.Tensor:
    """A step's view ids on the device; on a GPU through pinned memory, so the copy need not be waited for."""
    if device.type != "cuda":
        return torch.tensor(ids, device=device)
    return torch.tensor(ids).pin_memory().to(device, non_blocking=True)


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


def _prune_mid_run(cfg: OptimizeConfig, sketch: Sketch, losses, state: _RunState, train_ids: torch.Tensor,
                   emit: Emit, generator: torch.Generator) -> None:
    """Drop the strokes that add nothing and, with ``reseed``, start as many where lines are still
    missing; the strokes continue with a fresh optimiser."""
    kept, state.alive, dropped = _drop_useless_curves(sketch, losses, state.points.detach(), train_ids, state.alive)
    worse = strokes_lowering_f(sketch, kept, train_ids, cfg.prune_f_gain, max(1, kept.shape[0] // 4))
    if worse:
        keep = [k for k in range(kept.shape[0]) if k not in worse]
        dropped = dropped + [state.alive[k] for k in worse]
        kept, state.alive = kept[keep], [state.alive[k] for k in keep]
    if not dropped:
        return
    state.pruned += dropped
    budget = (f" or, beyond the ink budget of {cfg.ink_budget}, mostly filled the interior"
              if cfg.ink_budget and cfg.curves > cfg.ink_budget else "")
    reasons = [f"{len(dropped) - len(worse)} that added nothing{budget}"] if len(dropped) > len(worse) else []
    reasons += [f"{len(worse)} that lowered the training views' line F"] if worse else []
    message = "pruned stroke(s): " + ", ".join(reasons)
    # Up to the strokes asked for, and never past the ink budget: beyond it pruning removes the
    # volume-filling strokes on purpose (at 32 strokes re-seeding past the budget lowered held-out F
    # on spot 0.606 -> 0.545).
    wanted = len(dropped) if not cfg.ink_budget else min(len(dropped), max(0, cfg.ink_budget - kept.shape[0]))
    if cfg.reseed and wanted:
        fresh = reseed_strokes(sketch, kept, train_ids, wanted, generator)
        if fresh.shape[0]:
            kept = torch.cat([kept, fresh])
            first = max(state.alive + state.pruned) + 1  # new strokes get new indices
            state.alive = state.alive + list(range(first, first + fresh.shape[0]))
            message += f"; {fresh.shape[0]} new where lines were still missing"
    state.points = kept.clone().requires_grad_(True)
    state.optimizer = _adam(state.points, cfg.lr)
    emit({"type": INFO, "message": f"{message}; {len(state.alive)} left"})


class _ProgressClock:
    """Smoothed seconds per step, measured only when a progress event is due (reading the clock and the
    loss syncs the device)."""

    def __init__(self, every: int):
        self.every, self.tick, self.rate = every, time.perf_counter(), None

    def due(self, done: int, iterations: int) -> bool:
        return bool(self.every) and (done % self.every == 0 or done == iterations)

    def seconds_per_step(self, done: int) -> float:
        now = time.perf_counter()
        spi = (now - self.tick) / (self.every if done % self.every == 0 else 1)
        self.rate = spi if self.rate is None else 0.7 * self.rate + 0.3 * spi
        self.tick = now
        return self.rate


def _report(cfg: OptimizeConfig, state: _RunState, clock: _ProgressClock, emit: Emit, run_index: int,
            runs: int) -> None:
    """The ``progress`` and ``snapshot`` events due after step ``state.steps``."""
    done = state.steps
    if clock.due(done, cfg.iterations):
        rate = clock.seconds_per_step(done)
        remaining = (cfg.iterations - done) + (runs - run_index - 1) * cfg.iterations
        emit({"type": PROGRESS, "iteration": done, "iterations": cfg.iterations, "run": run_index + 1,
              "runs": runs, "loss": float(state.last_total),
              "losses": {k: float(v.detach().mean()) for k, v in state.last_values.items()},
              "sec_per_iter": rate, "eta_s": rate * remaining})
    if cfg.snapshot_every and (done % cfg.snapshot_every == 0 or done == cfg.iterations):
        emit({"type": SNAPSHOT, "iteration": done, "run": run_index + 1,
              "control_points": state.points.detach().cpu().round(decimals=5).tolist()})


def _finish_run(cfg: OptimizeConfig, sketch: Sketch, losses, state: _RunState, train_ids: torch.Tensor,
                seed: int, started: float) -> RunResult:
    """Final pruning (a finished run that took steps), per-view losses (not for a cancelled run), the result."""
    targets = sketch.targets
    final, alive, pruned = state.points.detach(), state.alive, list(state.pruned)
    if not state.cancelled and cfg.prune and state.steps > 0:
        final, alive, dropped = _drop_useless_curves(sketch, losses, final, train_ids, alive)
        pruned += dropped
    heldout = ~targets.is_train
    first_f = []
    if not state.cancelled:  # most important stroke first (``ranking``), on the views not trained on
        order, first_f = rank_strokes(sketch, final, torch.nonzero(heldout if heldout.any() else targets.is_train
                                                                   ).flatten())
        if order:
            final, alive = final[order], [alive[k] for k in order]
    if state.cancelled:
        view_losses = torch.full((targets.views,), float("nan"))
    else:
        all_ids = torch.arange(targets.views, device=targets.rgb.device)
        view_losses = evaluate_views(sketch, losses, final, all_ids, max(cfg.views_per_step, 1)).cpu()
    pick = heldout.cpu() if heldout.any() else targets.is_train.cpu()
    return RunResult(
        control_points=final.cpu().contiguous(),
        widths=torch.full((final.shape[0],), sketch.world_width()),
        view_losses=view_losses,
        loss_history=[float(h) for h in state.history],
        losses={k: float(v.detach().mean()) for k, v in state.last_values.items()},
        iterations=state.steps,
        seconds=time.perf_counter() - started,
        seed=seed,
        cancelled=state.cancelled,
        pruned=sorted(pruned),
        kept=alive,
        heldout_loss=float(view_losses[pick].mean()) if len(view_losses) else float("nan"),
        init_seconds=state.init_seconds,
        first_f=first_f,
    )


def _run_once(cfg: OptimizeConfig, targets: Targets, renderer: Renderer, losses, seed: int, emit: Emit,
              should_stop: Callable[[], bool], run_index: int, runs: int) -> RunResult:
    """One seed: ``cfg.iterations`` steps (0 returns the initial curves), pruning at ``PRUNE_AT``."""
    device = targets.rgb.device
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    # Augmentations draw on the device's own generator on a GPU (a host draw would be a copy to wait for).
    draws = generator if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)
    sketch = Sketch(cfg, targets, renderer)
    state = _start_run(cfg, targets, generator, device)
    train_ids = torch.nonzero(targets.is_train).flatten().to(device)
    schedule = _view_schedule(train_ids.cpu(), min(cfg.views_per_step, len(train_ids)), generator)
    clock = _ProgressClock(cfg.progress_every)
    prune_step = int(cfg.iterations * PRUNE_AT) if cfg.prune else -1
    split_step = _split_step(cfg)
    for it in range(cfg.iterations):
        if should_stop():
            state.cancelled = True
            break
        progress = it / max(cfg.iterations - 1, 1)
        _step(cfg, sketch, losses, state, _to_device(next(schedule), device), progress, draws)
        if it == split_step:
            _split_mid_run(cfg, state, emit)
        if it == prune_step:
            _prune_mid_run(cfg, sketch, losses, state, train_ids, emit, generator)
        _report(cfg, state, clock, emit, run_index, runs)
        if hasattr(renderer, "settle") and state.steps % (cfg.progress_every or 50) == 0:
            renderer.settle()  # a fixed-shape renderer grows its patches (one device read, like progress)
    return _finish_run(cfg, sketch, losses, state, train_ids, seed, started)


def optimize(cfg: OptimizeConfig, targets: Targets, renderer: Renderer, *, emit: Emit = lambda e: None,
             should_stop: Callable[[], bool] = lambda: False, load_clip=None) -> RunResult:
    """Run ``cfg.best_of`` seeds (``seed``, ``seed+1``, ...) and keep the lowest held-out loss."""
    device = targets.rgb.device
    ctx = LossContext(targets, cfg, device, load_clip=load_clip)
    losses = build_losses(ctx, cfg.losses)
    ctx.losses_built()
    best: RunResult | None = None
    summaries = []
    for run in range(cfg.best_of):
        result = _run_once(cfg, targets, renderer, losses, cfg.seed + run, emit, should_stop, run, cfg.best_of)
        summaries.append({"seed": result.seed, "heldout_loss": result.heldout_loss,
                          "iterations": result.iterations, "cancelled": result.cancelled})
        if best is None or (not result.cancelled and result.heldout_loss < best.heldout_loss):
            best = result
        if result.cancelled:
            best.cancelled = True
            break
    best.runs = summaries
    if cfg.best_of > 1:
        emit({"type": INFO, "message": f"best of {len(summaries)} seeds: seed {best.seed} "
                                         f"(held-out loss {best.heldout_loss:.4f})"})
    return best
