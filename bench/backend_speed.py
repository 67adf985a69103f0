"""``python bench/backend_speed.py``: seconds per iteration and peak memory for fixed settings.

Cases (each in its own subprocess, so peak memory is the case's own):

- ``render``: the renderer alone, forward + backward, 8 views x 224 px, 64 curves x 64 samples;
- ``step_final``: one full optimisation step with the Final objective: 16 curves, 4 views per step,
  224 px, CLIP RN101 geometric + semantic, 4 augmentation pairs (random CLIP weights: speed does not
  depend on weight values);
- ``step_geometry``: one full step of the weight-free objective (lines + surface + repulsion);
- ``final_run`` (not in the default set): a whole run of the Final preset (``contract.presets``) through
  ``optimize()``: ``--iterations`` (default 2000) x ``--views-per-step`` (default 8), random CLIP
  weights; total seconds (setup = CLIP load + target features, loop, pruning and evaluation included),
  final loss terms, peak memory; ``--amp`` runs CLIP under bf16 autocast, ``--sync-audit N`` counts
  the host-device synchronisations of N extra iterations on CUDA;
- ``amp_check`` (not in the default set): the CLIP losses and their gradient w.r.t. the sketch pixels
  in fp32 and under bf16 autocast on the same model, images and augmentations (3 sketches);
- ``bank_check`` (not in the default set): the CLIP losses of the same 3 sketches with augmented targets
  from the bank and drawn fresh each time, mean and sd over ``--repeat`` draws (the same expectation);
- ``profile`` (not in the default set): where one ``step_final`` step's CPU time goes (renderer,
  augmentations, CLIP forwards, backward of CLIP and of the renderer, geometric losses, optimiser).
- ``projection`` (not in the default set, needs gsplat): our projection against gsplat's own pure-torch
  ``_fully_fused_projection`` (and, on CUDA, its fused CUDA kernel) on the same input as ``render``
  (8 views x 224 px, 4096 splats): largest differences of centres, conics, depths and radii, and
  milliseconds of each, side by side.

``--amp`` / ``--channels-last`` / ``--cudnn-benchmark`` change how CLIP runs (step_final, final_run,
profile) so their effect can be measured before any default changes. CPU figures are also given as
process CPU seconds (``cpu_sec_per_iter``), which a shared, loaded machine disturbs less than wall time.

Targets are synthetic (random curves rendered by the renderer itself): no Blender, no downloads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # ``backend`` and ``contract`` (the script runs from bench/)

CASES = ("render", "step_final", "step_geometry")
EXTRA_CASES = ("final_run", "profile", "amp_check", "projection", "bank_check")


def _peak_reset():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM (Linux)
    except OSError:
        pass


def _rss_mib(field: str) -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _synthetic_targets(device, views: int, size: int, curves: int = 12, seed: int = 0):
    import numpy as np
    import torch

    from backend.curves import sample_curves
    from backend.losses.base import Targets
    from backend.render.torch_renderer import TorchRenderer
    from backend.surface_samples import sample_surface
    from contract.cameras import train_and_heldout_cameras
    from contract.settings import OptimizeConfig

    g = torch.Generator().manual_seed(seed)
    viewmats, Ks, is_train = train_and_heldout_cameras(views, max(1, views // 4), size)
    viewmats, Ks = torch.as_tensor(viewmats), torch.as_tensor(Ks)
    truth = (torch.rand(curves, 1, 3, generator=g) - 0.5) + torch.randn(curves, 4, 3, generator=g) * 0.25
    means = sample_curves(truth, 128).reshape(-1, 3)
    ink = 1 - TorchRenderer()(means, torch.full((means.shape[0],), 0.012), 1.0, viewmats, Ks, size, size)
    rgb = (1 - ink)[:, None].repeat(1, 3, 1, 1)
    # A closed mesh for the surface term: a coarse octahedron scaled into the unit sphere.
    verts = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                         dtype=torch.float32) * 0.8
    faces = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    samples, normals = sample_surface(verts, faces, 8000, g)
    t = Targets(viewmats=viewmats.to(device), Ks=Ks.to(device),
                is_train=torch.as_tensor(np.asarray(is_train)).to(device),
                rgb=rgb.to(device), alpha=ink.to(device), lines=(ink > 0.5).float().to(device),
                vertices=verts.to(device), faces=faces.to(device), surface_samples=samples.to(device),
                surface_normals=normals.to(device))
    return t, OptimizeConfig


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _clip_loader(cfg, device, opts):
    """A ``load_clip`` for the losses: random weights plus the ``--amp`` / ``--channels-last`` options."""
    import torch

    from backend.losses.clip_model import load_clip

    def load():
        kwargs = {"amp": True} if opts.get("amp") else {}  # older load_clip has no ``amp``
        clip = dataclasses.replace(cfg.clip, pretrained="")  # random weights: no tag to resolve
        if opts.get("clip_config"):  # smoke tests: a tiny JSON model config instead of RN101
            clip = dataclasses.replace(clip, model="bench-tiny", model_config=opts["clip_config"], pretrained="")
        bundle = load_clip(clip, device, random_weights=True, **kwargs)
        if opts.get("channels_last"):
            bundle.model.to(memory_format=torch.channels_last)
        return bundle

    return load


def _clip_settings(opts: dict) -> dict:
    """``--bank`` / ``--views-per-pass`` / ``--compile`` as settings (absent: the defaults)."""
    out = {}
    if opts.get("bank", -1) >= 0:
        out["augmentation_bank"] = int(opts["bank"])
    if opts.get("views_per_pass", -1) >= 0:
        out["clip_views_per_pass"] = int(opts["views_per_pass"])
    if opts.get("compile"):
        out["clip_compile"] = opts["compile"]
    return out


def _apply_opts(device, opts: dict) -> None:
    import torch

    if opts.get("threads"):
        torch.set_num_threads(int(opts["threads"]))
    if opts.get("cudnn_benchmark") and device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _cpu_seconds() -> float:
    return time.process_time()


def run_case(case: str, device_name: str, repeat: int, renderer_name: str, opts: dict | None = None) -> dict:
    import torch

    from backend.render import choose_renderer
    from backend.worker import resolve_device

    opts = dict(opts or {})
    device = resolve_device(device_name)
    _apply_opts(device, opts)
    renderer, why = choose_renderer(renderer_name, device)
    if case == "final_run":
        return run_final(device, renderer, why, opts)
    if case == "profile":
        return run_profile(device, renderer, why, repeat, opts)
    if case == "amp_check":
        return run_amp_check(device, renderer, why, opts)
    if case == "bank_check":
        return run_bank_check(device, renderer, why, dict(opts, repeat=repeat))
    if case == "projection":
        return run_projection(device, repeat)
    if case == "render":
        from backend.curves import sample_curves

        t, _ = _synthetic_targets(device, 8, 224)
        ids = torch.arange(8, device=device)
        cp = (torch.randn(64, 4, 3, generator=torch.Generator().manual_seed(1)) * 0.4).to(device).requires_grad_(True)

        def step():
            means = sample_curves(cp, 64).reshape(-1, 3)
            scales = torch.full((means.shape[0],), 0.012, device=device)
            image = renderer(means, scales, 1.0, t.viewmats[ids], t.Ks[ids], 224, 224)
            (1 - image).sum().backward()

        settings = {"views": 8, "size": 224, "curves": 64, "samples_per_curve": 64}
    else:
        step, settings = _step_closure(case, device, renderer, opts)
    step()  # warm-up: lazy init, caches, kernels
    _sync(device)
    ops = _count_ops(step) if opts.get("count_ops") else None
    syncs = _count_syncs(step) if opts.get("count_syncs") else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _peak_reset()
    rss_before = _rss_mib("VmRSS")
    c0 = _cpu_seconds()
    t0 = time.perf_counter()
    for _ in range(repeat):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / repeat
    cpu = (_cpu_seconds() - c0) / repeat
    out = {"case": case, "device": str(device), "renderer": renderer.name, "renderer_reason": why,
           "sec_per_iter": seconds, "iters_per_sec": 1.0 / seconds, "cpu_sec_per_iter": cpu, "repeat": repeat,
           "settings": settings, "options": opts,
           "peak_rss_mib": _rss_mib("VmHWM"), "peak_rss_over_setup_mib": _rss_mib("VmHWM") - rss_before,
           "threads": torch.get_num_threads()}
    if ops is not None:
        out["ops_per_step"] = ops
    if syncs is not None:
        out["syncs_per_step"] = syncs
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def _count_syncs(step) -> dict:
    """What in one ``step()`` would make the host wait for the device (backend.syncs), and on CUDA what did."""
    import torch

    from backend.syncs import SyncGuard

    with SyncGuard() as guard:
        step()
    out = {"total": guard.total, "what": dict(guard.counts)}
    if torch.cuda.is_available():
        import warnings

        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        out["cuda_sync_warnings"] = sum("synchroniz" in str(w.message) for w in caught)
    return out


def _count_ops(step) -> dict:
    """ATen operators dispatched by one ``step()``, forward and backward: total, and the most frequent."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.counts[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    with Count() as mode:
        step()
    return {"total": sum(mode.counts.values()), "top": dict(mode.counts.most_common(8))}


def run_projection(device, repeat: int) -> dict:
    """Our projection vs gsplat's pure-torch one (and its CUDA kernel on a GPU): same input, both timed."""
    import torch

    try:
        from gsplat.cuda._torch_impl import _fully_fused_projection
    except ImportError as exc:
        raise SystemExit(f"the projection case needs gsplat ({exc})") from exc

    from backend.curves import sample_curves
    from backend.render.torch_renderer import project

    t, _ = _synthetic_targets(device, 8, 224)
    viewmats, Ks = t.viewmats[:8].float(), t.Ks[:8].float()
    cp = (torch.randn(64, 4, 3, generator=torch.Generator().manual_seed(1)) * 0.4).to(device)
    means = sample_curves(cp, 64).reshape(-1, 3)
    scales = torch.full((means.shape[0],), 0.012, device=device)
    covars = scales[:, None, None] ** 2 * torch.eye(3, device=device)

    def timed(fn):
        fn()
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeat):
            out = fn()
        _sync(device)
        return out, (time.perf_counter() - start) / repeat * 1000

    ours, ours_ms = timed(lambda: project(means, scales, 1.0, viewmats, Ks, 224, 224, use_opacity_bound=False))
    (radii, means2d, depths, conics, _), ref_ms = timed(
        lambda: _fully_fused_projection(means, covars, viewmats, Ks, 224, 224))
    valid = (radii > 0).all(-1)

    def diffs(radii, means2d, depths, conics, valid) -> dict:
        return {"same_valid": bool(torch.equal(ours.valid, valid)),
                "radii_equal": bool(torch.equal(ours.radii[valid], radii[valid].to(torch.int32))),
                "means2d_max_abs_px": float((ours.means2d[valid] - means2d[valid]).abs().max()),
                "conics_max_rel": float(((ours.conics[valid] - conics[valid]).abs().amax(-1)
                                         / conics[valid].abs().amax(-1)).max()),  # per splat, vs its largest entry
                "depths_max_abs": float((ours.depths[valid] - depths[valid]).abs().max())}

    out = {"case": "projection", "device": str(device), "renderer": "torch", "renderer_reason": "projection only",
           "splats": int(means.shape[0]), "views": 8, "size": 224, "repeat": repeat, "valid": int(valid.sum()),
           "ms": {"ours": ours_ms, "gsplat_torch": ref_ms},
           "vs_gsplat_torch": diffs(radii, means2d, depths, conics, valid), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        from gsplat import fully_fused_projection

        (radii, means2d, depths, conics, _), cuda_ms = timed(
            lambda: fully_fused_projection(means, covars, None, None, viewmats, Ks, 224, 224)[:5])
        out["ms"]["gsplat_cuda"] = cuda_ms
        out["vs_gsplat_cuda"] = diffs(radii, means2d, depths, conics, (radii > 0).all(-1))
    return out


def _step_closure(case, device, renderer, opts, views_per_step: int | None = None):
    """One optimisation step of ``step_final`` / ``step_geometry`` as a closure (plus its settings)."""
    import torch

    from backend.losses import LossContext, build_losses, total_loss
    from backend.losses.base import LossInputs
    from backend.sketch import Sketch
    from contract.settings import OptimizeConfig

    vps = views_per_step or opts.get("views_per_step") or 4
    curves, size = int(opts.get("curves") or 16), int(opts.get("size") or 224)
    t, _ = _synthetic_targets(device, 24, size)
    if case in ("step_final", "profile"):
        weights = {"clip_geometric": 1.0, "clip_semantic": 0.1}
    else:
        weights = {"lines": 1.0, "surface": 0.5, "repulsion": 0.05}
    cfg = OptimizeConfig(curves=curves, views_per_step=vps, augmentations=4, losses=weights, **_clip_settings(opts))
    load = _clip_loader(cfg, device, opts) if "clip_geometric" in weights else None
    ctx = LossContext(t, cfg, device, load_clip=load)
    losses = build_losses(ctx, weights)
    ctx.losses_built()
    sketch = Sketch(cfg, t, renderer)
    cp = (torch.randn(curves, 4, 3, generator=torch.Generator().manual_seed(1)) * 0.4).to(device).requires_grad_(True)
    opt = torch.optim.Adam([cp], lr=cfg.lr, fused=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(0)  # on the device, as the loop's: no copies to wait for
    train = torch.nonzero(t.is_train).flatten()

    def step():
        ids = train[torch.randperm(len(train), generator=gen, device=device)[:vps]]
        samples = sketch.samples(cp)
        images = sketch.render(samples, ids)
        total, _ = total_loss(losses, LossInputs(images, ids, cp, samples, 0.5, gen))
        opt.zero_grad()
        total.backward()
        opt.step()

    settings = {"curves": curves, "views_per_step": vps, "size": size, "losses": weights, "augmentations": 4,
                "clip": cfg.clip.model if load else None}
    step.parts = (t, cfg, losses, sketch, cp, opt, gen, train)
    return step, settings


def run_profile(device, renderer, why, repeat: int, opts: dict) -> dict:
    """CPU (or CUDA-synchronised) seconds of each part of one ``step_final`` step, timed by hand.

    The parts run in the loop's order with the loop's tensors; backward is split at the rendered
    images: ``autograd.grad`` of the loss to the images (CLIP + augmentation backward), then the
    images' backward to the control points (renderer backward).
    """
    import torch

    from backend.losses import total_loss
    from backend.losses.base import LossInputs
    from backend.losses.clip import _resize, augmentation_grids, warp

    step, settings = _step_closure("profile", device, renderer, opts)
    t, cfg, losses, sketch, cp, opt, gen, train = step.parts
    shared = next(iter(losses.values()))[1].shared
    b = shared.bundle
    vps = settings["views_per_step"]
    parts: dict[str, float] = {}
    wall: dict[str, float] = {}

    def timed(name, fn):
        _sync(device)
        c0, w0 = _cpu_seconds(), time.perf_counter()
        value = fn()
        _sync(device)
        parts[name] = parts.get(name, 0.0) + _cpu_seconds() - c0
        wall[name] = wall.get(name, 0.0) + time.perf_counter() - w0
        return value

    def one(record: bool):
        ids = train[torch.randperm(len(train), generator=gen)[:vps].to(train.device)]
        samples = timed("renderer forward", lambda: sketch.samples(cp))
        images = timed("renderer forward", lambda: sketch.render(samples, ids))
        leaf = images.detach().requires_grad_(True)
        size = b.input_size
        sketch_in = _resize(leaf[:, None], size)  # as the loss does (a --clip-config model may take another size)
        grids = timed("augmentations (grids + warp)",
                      lambda: augmentation_grids(cfg.augmentations * vps, size, gen, b.device))
        both = timed("augmentations (grids + warp)",
                     lambda: torch.cat([sketch_in, warp(sketch_in.repeat(cfg.augmentations, 1, 1, 1), grids)]))

        def targets():
            with torch.no_grad():
                aug = warp(shared.targets[ids].repeat(cfg.augmentations, 1, 1, 1), grids)
                return b.features(b.normalize(aug), shared.layers, embed=True)

        timed("target features (augmented, no grad)", targets)
        emb, acts = timed("CLIP forward (sketch, with grad)",
                          lambda: b.features(b.normalize(both.expand(-1, 3, -1, -1)), shared.layers, True))
        # The real losses on the leaf (their own CLIP pass is what the loop does; timed as a whole too).
        total, _ = timed("loop: CLIP losses as the loop calls them (fwd; view by view on a CPU: + backward)",
                         lambda: total_loss(losses, LossInputs(leaf, ids, cp, samples, 0.5, gen)))
        g = timed("CLIP backward (input gradients)", lambda: torch.autograd.grad(total, leaf)[0])
        timed("renderer backward", lambda: images.backward(g))
        timed("optimiser (Adam)", lambda: (opt.step(), opt.zero_grad()))
        del emb, acts

    one(False)  # warm-up
    parts.clear()
    wall.clear()
    c0, w0 = _cpu_seconds(), time.perf_counter()
    for _ in range(repeat):
        one(True)
    _sync(device)
    total_cpu = (_cpu_seconds() - c0) / repeat
    total_wall = (time.perf_counter() - w0) / repeat
    per = {k: v / repeat for k, v in parts.items()}
    # The standalone "CLIP forward (sketch)" + "target features" duplicate what the loop's loss call does;
    # the step proper = renderer fwd + loop losses + CLIP backward + renderer backward + Adam.
    proper = ["renderer forward", "loop: CLIP losses as the loop calls them (fwd; view by view on a CPU: + backward)",
              "CLIP backward (input gradients)",
              "renderer backward", "optimiser (Adam)"]
    step_cpu = sum(per[k] for k in proper)
    return {"case": "profile", "device": str(device), "renderer": renderer.name, "renderer_reason": why,
            "repeat": repeat, "settings": settings, "options": opts, "threads": torch.get_num_threads(),
            "cpu_seconds": per, "wall_seconds": {k: v / repeat for k, v in wall.items()},
            "step_cpu_seconds": step_cpu, "loop_cpu_seconds_incl_duplicates": total_cpu,
            "loop_wall_seconds_incl_duplicates": total_wall, "peak_rss_mib": _rss_mib("VmHWM")}


def run_amp_check(device, renderer, why, opts: dict) -> dict:
    """fp32 vs bf16 autocast on the same CLIP model, images and augmentations: losses and pixel gradients."""
    import torch

    from backend.losses import total_loss
    from backend.losses.base import LossInputs
    from backend.losses.clip_model import low_precision_dtype

    step, settings = _step_closure("step_final", device, renderer, dict(opts, amp=False))
    t, cfg, losses, sketch, cp, opt, gen, train = step.parts
    shared = next(iter(losses.values()))[1].shared
    b = shared.bundle
    low = low_precision_dtype(device)
    rows = []
    for trial in range(3):
        g = torch.Generator().manual_seed(100 + trial)
        points = (torch.randn(16, 4, 3, generator=g) * 0.4).to(device)
        ids = train[torch.randperm(len(train), generator=g)[: settings["views_per_step"]].to(train.device)]
        with torch.no_grad():
            samples = sketch.samples(points)
            images = sketch.render(samples, ids)
        out = {}
        for name, dtype in (("fp32", None), ("bf16", low)):
            b.autocast_dtype = dtype
            shared.forget_step()
            leaf = images.clone().requires_grad_(True)
            inputs = LossInputs(leaf, ids, points, samples, 0.5, torch.Generator().manual_seed(7 + trial))
            total, values = total_loss(losses, inputs)
            grad = torch.autograd.grad(total, leaf)[0]
            out[name] = ({k: float(v.mean()) for k, v in values.items()}, float(total), grad.flatten().double())
        (v32, t32, g32), (v16, t16, g16) = out["fp32"], out["bf16"]
        rows.append({"fp32": v32, "bf16": v16,
                     "total_rel_diff": abs(t16 - t32) / max(abs(t32), 1e-12),
                     "grad_cosine": float(torch.nn.functional.cosine_similarity(g32, g16, dim=0)),
                     "grad_norm_ratio": float(g16.norm() / g32.norm().clamp_min(1e-30))})
    b.autocast_dtype = None
    return {"case": "amp_check", "device": str(device), "renderer": renderer.name, "renderer_reason": why,
            "low_precision": str(low), "settings": settings, "options": opts, "trials": rows,
            "worst_total_rel_diff": max(r["total_rel_diff"] for r in rows),
            "worst_grad_cosine": min(r["grad_cosine"] for r in rows),
            "note": "random CLIP weights; target features of un-augmented views stay fp32 (computed at load)"}


def run_bank_check(device, renderer, why, opts: dict) -> dict:
    """The CLIP losses of the same sketches with augmented targets from the bank and drawn fresh (the
    old way): both estimate the same expectation over augmentations; mean and sd over ``--repeat`` draws."""
    import torch

    from backend.losses import LossContext, build_losses
    from backend.losses.base import LossInputs
    from backend.sketch import Sketch
    from contract.settings import OptimizeConfig

    repeat = int(opts.get("repeat") or 8)
    t, _ = _synthetic_targets(device, 24, 224)
    weights = {"clip_geometric": 1.0, "clip_semantic": 0.1}
    bundle = _clip_loader(OptimizeConfig(), device, opts)()  # one model for both (random weights differ per load)
    losses_of = {}
    for name, bank in (("bank", 8), ("fresh", 0)):
        cfg = OptimizeConfig(curves=16, views_per_step=4, augmentations=4, losses=weights, augmentation_bank=bank)
        losses_of[name] = build_losses(LossContext(t, cfg, device, load_clip=lambda: bundle), weights)

    sketch = Sketch(OptimizeConfig(), t, renderer)
    train = torch.nonzero(t.is_train).flatten()
    rows = []
    for trial in range(3):
        g = torch.Generator().manual_seed(200 + trial)
        points = (torch.randn(16, 4, 3, generator=g) * 0.4).to(device)
        ids = train[torch.randperm(len(train), generator=g)[:4].to(train.device)]
        with torch.no_grad():
            samples = sketch.samples(points)
            images = sketch.render(samples, ids)
            row = {}
            for name, losses in losses_of.items():
                gen = torch.Generator().manual_seed(300 + trial)
                draws = {k: [] for k in weights}
                for _ in range(repeat):
                    inputs = LossInputs(images, ids, points, samples, 0.5, gen)
                    for k, (_, loss) in losses.items():
                        draws[k].append(float(loss(inputs).mean()))
                row[name] = {k: {"mean": sum(v) / len(v), "sd": float(torch.tensor(v).std())} for k, v in draws.items()}
        row["rel_diff"] = {k: abs(row["bank"][k]["mean"] - row["fresh"][k]["mean"]) / max(abs(row["fresh"][k]["mean"]),
                                                                                        1e-12) for k in weights}
        rows.append(row)
    return {"case": "bank_check", "device": str(device), "renderer": renderer.name, "renderer_reason": why,
            "draws": repeat, "trials": rows, "note": "random CLIP weights (RN101 unless --clip-config)"}


def _sync_audit(run, iterations: int) -> dict:
    """Count host-device synchronisations (CUDA sync debug mode) of a short run, by source line."""
    import traceback
    import warnings

    import torch

    seen: dict[str, int] = {}
    original = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1]
                  if "/backend/" in f.filename and not f.filename.endswith("bench.py")]
        where = " <- ".join(f"{f.filename.split('/backend/')[-1]}:{f.lineno}" for f in frames[::-1][:3]) or "?"
        seen[where] = seen.get(where, 0) + 1

    warnings.showwarning = record
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run(iterations)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    finally:
        warnings.showwarning = original
    total = sum(seen.values())
    return {"iterations": iterations, "syncs": total, "syncs_per_iter": total / max(iterations, 1),
            "by_source": dict(sorted(seen.items(), key=lambda kv: -kv[1])[:15])}


def run_final(device, renderer, why, opts: dict) -> dict:
    """A whole Final-preset run through ``optimize()`` on synthetic targets (random CLIP weights)."""
    import torch

    from backend.optimize import optimize
    from contract.presets import apply_preset
    from contract.settings import settings_from_dict

    iterations = int(opts.get("iterations") or 2000)
    vps = int(opts.get("views_per_step") or 8)
    every = max(1, iterations // 10)
    settings = apply_preset("final", {"iterations": iterations, "views_per_step": vps, "snapshot_every": 0,
                                      "progress_every": every, "seed": int(opts.get("seed") or 0),
                                      **_clip_settings(opts)})
    cfg = settings_from_dict(settings)
    t, _ = _synthetic_targets(device, 24, 224)
    load = _clip_loader(cfg, device, opts)
    c_start = time.perf_counter()

    def emit(event):
        if event.get("type") == "progress":
            print(f"[final_run] {event['iteration']}/{event['iterations']} loss {event['loss']:.4f} "
                  f"{event['sec_per_iter'] * 1000:.1f} ms/iter  t={time.perf_counter() - c_start:.1f}s",
                  file=sys.stderr, flush=True)
        elif event.get("type") in ("info", "warning"):
            print(f"[final_run] {event.get('message')}", file=sys.stderr, flush=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    c0, w0 = _cpu_seconds(), time.perf_counter()
    result = optimize(cfg, t, renderer, emit=emit, load_clip=load)
    _sync(device)
    total = time.perf_counter() - w0
    out = {"case": "final_run", "device": str(device), "renderer": renderer.name, "renderer_reason": why,
           "options": opts, "settings": {k: getattr(cfg, k) for k in ("curves", "iterations", "views_per_step",
                                                                   "augmentations", "losses", "samples_per_curve")}
           | {"clip": cfg.clip.model, "size": 224, "random_clip_weights": True},
           "total_seconds": total, "loop_seconds": result.seconds, "setup_seconds": total - result.seconds,
           "sec_per_iter": result.seconds / max(result.iterations, 1), "cpu_seconds": _cpu_seconds() - c0,
           "iterations": result.iterations, "final_losses": result.losses,
           "final_loss_mean_last_10pct": (sum(result.loss_history[-max(1, iterations // 10):])
                                          / max(1, len(result.loss_history[-max(1, iterations // 10):])))
           if result.loss_history else float("nan"),
           "heldout_loss": result.heldout_loss, "curves_kept": len(result.kept),
           "goal_seconds": 30.0, "peak_rss_mib": _rss_mib("VmHWM"), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name(0)
        audit = int(opts.get("sync_audit") or 0)
        if audit:
            short = settings_from_dict(dict(settings, iterations=audit, progress_every=0, prune=False))
            try:  # never lose the run's figures to the audit
                out["sync_audit"] = _sync_audit(lambda n: optimize(short, t, renderer, load_clip=load), audit)
            except Exception as exc:  # noqa: BLE001
                out["sync_audit"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _run_child(cmd: list[str], cwd: str) -> tuple[int, str, str]:
    """Run a case subprocess, streaming its stderr (progress lines) while keeping it for errors."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, cwd=cwd)
        err = []
        for line in proc.stderr:
            err.append(line)
            if line.startswith("[final_run]"):
                print(line, end="", file=sys.stderr, flush=True)
        proc.wait()
        out.seek(0)
        return proc.returncode, out.read(), "".join(err)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/backend_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    parser.add_argument("--renderer", default="auto", choices=["auto", "torch", "gsplat"])
    parser.add_argument("--case", action="append", choices=CASES + EXTRA_CASES,
                        help=f"repeatable; default: {', '.join(CASES)}")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2000, help="final_run: iterations (default 2000)")
    parser.add_argument("--views-per-step", type=int, default=0,
                        help="views per step (default: 4 for step_final/profile, 8 for final_run)")
    parser.add_argument("--seed", type=int, default=0, help="final_run: seed")
    parser.add_argument("--amp", action="store_true", help="CLIP under bf16 autocast (fp16 on cards without bf16)")
    parser.add_argument("--channels-last", action="store_true", help="CLIP weights in channels_last")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    parser.add_argument("--bank", type=int, default=-1,
                        help="setting augmentation_bank (0: fresh augmented targets every step; default: the setting)")
    parser.add_argument("--views-per-pass", type=int, default=-1,
                        help="setting clip_views_per_pass (0: auto; default: the setting)")
    parser.add_argument("--sync-audit", type=int, default=0,
                        help="final_run on CUDA: count host-device syncs over this many extra iterations")
    parser.add_argument("--clip-config", default="", help="smoke tests: a tiny open_clip JSON config instead of RN101")
    parser.add_argument("--count-ops", action="store_true",
                        help="also count the ATen operators of one step (on a GPU most launch a kernel: a host-bound "
                             "loop costs about the same per operator)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="",
                        help="setting clip_compile (default: the setting; step cases run few steps, so auto is off)")
    parser.add_argument("--count-syncs", action="store_true",
                        help="also count what in one step would make the host wait for the device (and, on CUDA, "
                             "the synchronisations torch.cuda.set_sync_debug_mode reports)")
    parser.add_argument("--curves", type=int, default=0, help="step_final/step_geometry: strokes (default 16)")
    parser.add_argument("--size", type=int, default=0, help="step_final/step_geometry: image side in px (default 224)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    opts = {k: v for k, v in {"amp": args.amp, "channels_last": args.channels_last,
                              "cudnn_benchmark": args.cudnn_benchmark, "threads": args.threads,
                              "views_per_step": args.views_per_step, "iterations": args.iterations,
                              "seed": args.seed, "sync_audit": args.sync_audit, "count_ops": args.count_ops,
                              "count_syncs": args.count_syncs, "curves": args.curves, "size": args.size,
                              "compile": args.compile,

                              "clip_config": os.path.abspath(args.clip_config) if args.clip_config else ""}.items()
            if v}
    opts.update({k: v for k, v in {"bank": args.bank, "views_per_pass": args.views_per_pass}.items() if v >= 0})
    if args._child:  # the options arrive whole, as the parent parsed them: no flag is rebuilt by hand
        spec = json.loads(args._child)
        print(json.dumps(run_case(spec["case"], spec["device"], spec["repeat"], spec["renderer"], spec["opts"])))
        return 0
    results = []
    for case in args.case or CASES:
        spec = {"case": case, "device": args.device, "repeat": args.repeat, "renderer": args.renderer, "opts": opts}
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(spec)]
        rc, stdout, stderr = _run_child(cmd, str(REPO))
        if rc != 0 or not stdout.strip():
            lines = stderr.strip().splitlines()
            results.append({"case": case, "error": lines[-1] if lines else f"failed (exit {rc})"})
        else:
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        if not args.json:
            _print_row(results[-1])
    if args.json:
        print(json.dumps({"machine": platform.platform(), "cpu_count": os.cpu_count(), "results": results}, indent=2))
    return 1 if any("error" in r for r in results) else 0


def _print_row(r: dict) -> None:
    case = r["case"]
    if "error" in r:
        print(f"{case:14s} FAILED: {r['error']}", flush=True)
    elif case == "final_run":
        print(f"{case:14s} {r['device']:5s} {r['renderer']:6s} {r['total_seconds']:8.1f} s total "
              f"({r['iterations']} it, {r['sec_per_iter'] * 1000:.1f} ms/iter, setup {r['setup_seconds']:.1f} s) "
              f"losses {json.dumps({k: round(v, 4) for k, v in r['final_losses'].items()})}", flush=True)
    elif case == "projection":
        ms = ", ".join(f"{k} {v:.2f} ms" for k, v in r["ms"].items())
        print(f"{case:14s} {r['device']:5s} {r['splats']} splats x {r['views']} views: {ms}", flush=True)
        for key in ("vs_gsplat_torch", "vs_gsplat_cuda"):
            if key in r:
                print(f"  {key}: {json.dumps(r[key])}", flush=True)
    elif case == "bank_check":
        print(f"bank_check ({r['device']}, {r['draws']} draws): CLIP loss mean (sd), bank vs fresh augmentations")
        for i, row in enumerate(r["trials"]):
            parts = [f"{k} {row['bank'][k]['mean']:.5f} ({row['bank'][k]['sd']:.5f}) vs {row['fresh'][k]['mean']:.5f} "
                     f"({row['fresh'][k]['sd']:.5f})" for k in row["bank"]]
            print(f"  sketch {i}: " + "; ".join(parts), flush=True)
    elif case == "profile":
        print(f"profile ({r['device']}, {r['renderer']}, {r['threads']} threads), CPU seconds per step:")
        for name, sec in sorted(r["cpu_seconds"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:48s} {sec * 1000:9.1f} ms")
        print(f"  {'step (renderer+losses+backward+Adam)':48s} {r['step_cpu_seconds'] * 1000:9.1f} ms", flush=True)
    else:
        extra = f"  peak CUDA {r['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in r else ""
        extra += f"  {r['ops_per_step']['total']} ATen ops/step" if "ops_per_step" in r else ""
        extra += f"  {r['syncs_per_step']['total']} host reads/step" if "syncs_per_step" in r else ""
        print(f"{case:14s} {r['device']:5s} {r['renderer']:6s} {r['sec_per_iter']*1000:9.1f} ms/iter "
              f"({r['cpu_sec_per_iter']*1000:.0f} ms CPU) {r['iters_per_sec']:7.2f} it/s  peak RSS "
              f"{r['peak_rss_mib']:.0f} MiB (+{r['peak_rss_over_setup_mib']:.0f} over setup){extra}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
