"""A step with no host reads: the guard that counts them, and the Final and geometric steps under it.

On CUDA nothing in a step may wait for the GPU (it would stall a host-bound loop and forbid capture);
on a CPU nothing waits, so :class:`backend.syncs.SyncGuard` counts what would. The CUDA check with
``torch.cuda.set_sync_debug_mode`` runs where a GPU is present.
"""

from __future__ import annotations

import pytest
import torch

from backend.losses import LossContext, build_losses
from backend.losses.clip_model import load_clip
from backend.optimize import _start_run, _step
from backend.render import TorchRenderer
from backend.sketch import Sketch
from backend.syncs import SyncGuard
from bench.backend_speed import _synthetic_targets
from contract.settings import ClipConfig, OptimizeConfig

FINAL = {"clip_geometric": 1.0, "clip_semantic": 0.1, "lines": 1.0, "surface": 0.5, "turning": 0.02, "coiling": 1.5}
GEOMETRY = {"lines": 1.0, "surface": 0.5, "turning": 0.02, "coiling": 1.5}


def test_the_guard_counts_what_would_wait_and_nothing_else():
    x = torch.rand(16)
    with SyncGuard() as quiet:
        y = (x * 2).sin().cumsum(0)[3:9] @ torch.ones(6)
        torch.where(x > 0.5, x, -x).sort()
    assert quiet.total == 0, quiet.counts
    with SyncGuard() as loud:
        float(y), bool(x.sum() > 1), x.tolist(), x.numpy()
        x[x > 0.5], torch.nonzero(x), torch.unique(x), torch.linalg.solve(torch.eye(2), torch.ones(2))
        torch.allclose(x, x), torch.repeat_interleave(torch.tensor([1, 2]))
    assert loud.counts["aten._local_scalar_dense"] == 2
    for name in ("Tensor.tolist", "Tensor.numpy", "aten.index (boolean mask)", "aten.nonzero", "aten._unique2",
                 "aten._linalg_check_errors", "aten.allclose", "aten.repeat_interleave (sized by the data)"):
        assert loud.counts[name] == 1, (name, loud.counts)


class CudaSyncErrors:
    """While inside, any CUDA synchronisation raises (``torch.cuda.set_sync_debug_mode``)."""

    counts: dict = {}

    def __enter__(self):
        torch.cuda.set_sync_debug_mode("error")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")


def run_steps(weights, tiny_clip_config, device, steps=3, watch=SyncGuard, fixed_shapes=True, **settings):
    """What ``watch`` saw in each of a run's steps after the first (which measures the patch, builds
    the CLIP bank and warms the kernels)."""
    t, _ = _synthetic_targets(device, 12, 64)
    cfg = OptimizeConfig(curves=4, segments=3, views_per_step=3, augmentations=2, losses=weights, init="random",
                         **settings)
    clip = ClipConfig(model="tiny-rn", model_config=str(tiny_clip_config), pretrained="")
    ctx = LossContext(t, cfg, device, load_clip=lambda: load_clip(clip, device))
    losses = build_losses(ctx, weights)
    sketch = Sketch(cfg, t, TorchRenderer(fixed_shapes=fixed_shapes))
    state = _start_run(cfg, t, torch.Generator().manual_seed(0), device)
    gen = torch.Generator(device=device).manual_seed(0)  # the loop's augmentation generator lives on the device
    state.optimizer = torch.optim.Adam([state.points], lr=cfg.lr, fused=True)  # as on a GPU (optimize._adam)
    ids = torch.tensor([0, 3, 5], device=device)
    _step(cfg, sketch, losses, state, ids, 0.0, gen)
    counts = []
    for i in range(steps):
        with watch() as seen:
            _step(cfg, sketch, losses, state, ids.roll(i), 0.1 * (i + 1), gen)
        counts.append(dict(seen.counts))
    return counts, state


@pytest.mark.parametrize("weights", [FINAL, GEOMETRY], ids=["final", "geometry"])
def test_a_step_reads_nothing_from_the_device(weights, tiny_clip_config):
    # As on a GPU: every CLIP view in one pass (a CPU runs them one by one and checks, on the host, that
    # the gradients it stored are the ones asked for) and the fixed-shape renderer.
    counts, state = run_steps(weights, tiny_clip_config, torch.device("cpu"), clip_views_per_pass=8)
    assert counts == [{}, {}, {}]
    assert state.points.isfinite().all() and state.steps == 4
    # the renderer that sizes patches to their splats (the CPU default) does read: the guard sees it
    dynamic, _ = run_steps(weights, tiny_clip_config, torch.device("cpu"), steps=1, fixed_shapes=False,
                           clip_views_per_pass=8)
    assert dynamic[0]["aten.nonzero"] == 1 and sum(dynamic[0].values()) >= 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_step_never_synchronises(tiny_clip_config):
    counts, state = run_steps(FINAL, tiny_clip_config, torch.device("cuda"), steps=2, watch=CudaSyncErrors)
    assert state.steps == 3 and bool(state.points.isfinite().all())
