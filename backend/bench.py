"""``python -m backend.bench``: seconds per iteration and peak memory for fixed settings.

Cases (each in its own subprocess, so peak memory is the case's own):

- ``render``: the renderer alone, forward + backward, 8 views x 224 px, 64 curves x 64 samples;
- ``step_final``: one full optimisation step with the Final objective: 16 curves, 4 views per step,
  224 px, CLIP RN101 geometric + semantic, 4 augmentation pairs (random CLIP weights: speed does not
  depend on weight values);
- ``step_geometry``: one full step of the weight-free objective (lines + surface + repulsion).

Targets are synthetic (random curves rendered by the renderer itself): no Blender, no downloads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

CASES = ("render", "step_final", "step_geometry")


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

    from .cameras import train_and_heldout_cameras
    from .config import OptimizeConfig
    from .curves import sample_curves
    from .losses.base import Targets
    from .mesh import sample_surface
    from .render.torch_renderer import TorchRenderer

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


def run_case(case: str, device_name: str, repeat: int, renderer_name: str) -> dict:
    import torch

    from .render import choose_renderer
    from .worker import resolve_device

    device = resolve_device(device_name)
    renderer, why = choose_renderer(renderer_name, device)
    if case == "render":
        from .curves import sample_curves

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
        from .config import OptimizeConfig
        from .losses import LossContext, build_losses
        from .losses.base import LossInputs
        from .optimize import Sketch, _total

        t, _ = _synthetic_targets(device, 24, 224)
        if case == "step_final":
            weights = {"clip_geometric": 1.0, "clip_semantic": 0.1}
        else:
            weights = {"lines": 1.0, "surface": 0.5, "repulsion": 0.05}
        cfg = OptimizeConfig(curves=16, views_per_step=4, augmentations=4, losses=weights)
        load = None
        if case == "step_final":
            from .losses.clip_model import load_clip

            def load():
                return load_clip(cfg.clip, device, random_weights=True)

        losses = build_losses(LossContext(t, cfg, device, load_clip=load), weights)
        sketch = Sketch(cfg, t, renderer)
        cp = (torch.randn(16, 4, 3, generator=torch.Generator().manual_seed(1)) * 0.4).to(device).requires_grad_(True)
        opt = torch.optim.Adam([cp], lr=cfg.lr)
        gen = torch.Generator().manual_seed(0)
        train = torch.nonzero(t.is_train).flatten()

        def step():
            ids = train[torch.randperm(len(train), generator=gen)[:4].to(train.device)]
            samples = sketch.samples(cp)
            images = sketch.render(samples, ids)
            total, _ = _total(losses, LossInputs(images, ids, cp, samples, 0.5, gen))
            opt.zero_grad()
            total.backward()
            opt.step()

        settings = {"curves": 16, "views_per_step": 4, "size": 224, "losses": weights, "augmentations": 4,
                    "clip": cfg.clip.model if case == "step_final" else None}
    step()  # warm-up: lazy init, caches, kernels
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _peak_reset()
    rss_before = _rss_mib("VmRSS")
    t0 = time.perf_counter()
    for _ in range(repeat):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / repeat
    out = {"case": case, "device": str(device), "renderer": renderer.name, "renderer_reason": why,
           "sec_per_iter": seconds, "iters_per_sec": 1.0 / seconds, "repeat": repeat, "settings": settings,
           "peak_rss_mib": _rss_mib("VmHWM"), "peak_rss_over_setup_mib": _rss_mib("VmHWM") - rss_before,
           "threads": torch.get_num_threads()}
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    parser.add_argument("--renderer", default="auto", choices=["auto", "torch", "gsplat"])
    parser.add_argument("--case", action="append", choices=CASES, help="repeatable; default: all")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(run_case(args._child, args.device, args.repeat, args.renderer)))
        return 0
    results = []
    for case in args.case or CASES:
        cmd = [sys.executable, "-m", "backend.bench", "--_child", case, "--device", args.device,
               "--repeat", str(args.repeat), "--renderer", args.renderer]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
        if proc.returncode != 0:
            results.append({"case": case, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if not args.json:
            r = results[-1]
            if "error" in r:
                print(f"{case:14s} FAILED: {r['error']}")
            else:
                extra = f"  peak CUDA {r['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in r else ""
                print(f"{case:14s} {r['device']:5s} {r['renderer']:6s} {r['sec_per_iter']*1000:9.1f} ms/iter "
                      f"{r['iters_per_sec']:7.2f} it/s  peak RSS {r['peak_rss_mib']:.0f} MiB "
                      f"(+{r['peak_rss_over_setup_mib']:.0f} over setup){extra}", flush=True)
    if args.json:
        print(json.dumps({"machine": platform.platform(), "cpu_count": os.cpu_count(), "results": results}, indent=2))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
