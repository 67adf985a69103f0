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

from .curves import enforce_g1, segment_count, split_segments
from .init import initial_curves
from .losses import LossContext, LossInputs, Targets, build_losses, total_loss
from .pruning import PRUNE_AT, PruningPolicy
from .ranking import rank_strokes
from .render import Renderer
from .sketch import Sketch, evaluate_views

Emit = Callable[[dict], None]
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


def _view_schedule(train_ids: torch.Tensor, per_step: int, generator: torch.Generator):
    """Endless batches of training views: shuffled passes, so every view is seen equally often."""
    queue: list[int] = []
    while True:
        while len(queue) < per_step:
            queue += train_ids[torch.randperm(len(train_ids), generator=generator)].tolist()
        batch, queue = queue[:per_step], queue[per_step:]
        yield batch


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


def _prune_mid_run(cfg: OptimizeConfig, sketch: Sketch, losses, state: _RunState, train_ids: torch.Tensor,
                   emit: Emit, generator: torch.Generator) -> None:
    """Prune (and re-seed) by the job's policy; the strokes left continue with a fresh optimiser."""
    policy = PruningPolicy.of(cfg)
    next_index = max(state.alive + state.pruned) + 1  # new strokes get new indices
    pruned = policy.mid_run(sketch, losses, state.points.detach(), state.alive, next_index, train_ids, generator)
    if not pruned.dropped:
        return
    state.alive, state.pruned = pruned.alive, state.pruned + pruned.dropped
    state.points = pruned.points.clone().requires_grad_(True)
    state.optimizer = _adam(state.points, cfg.lr)
    emit({"type": INFO, "message": policy.describe(pruned)})


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
        after = PruningPolicy.of(cfg).at_end(sketch, losses, final, alive, train_ids)
        final, alive, pruned = after.points, after.alive, pruned + after.dropped
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
