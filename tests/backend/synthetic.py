"""Synthetic job folders for backend tests: known 3D curves or a sphere, rendered by our own renderer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from backend.curves import sample_curves
from backend.render.torch_renderer import TorchRenderer
from contract.cameras import train_and_heldout_cameras


def uv_sphere(rings: int = 12, segments: int = 24, radius: float = 0.8):
    """A closed triangle mesh (vertices float32 [N,3], faces int32 [F,3])."""
    verts = [[0.0, 0.0, radius]]
    for i in range(1, rings):
        theta = np.pi * i / rings
        for j in range(segments):
            phi = 2 * np.pi * j / segments
            verts.append([radius * np.sin(theta) * np.cos(phi), radius * np.sin(theta) * np.sin(phi),
                          radius * np.cos(theta)])
    verts.append([0.0, 0.0, -radius])
    faces = []
    for j in range(segments):
        faces.append([0, 1 + j, 1 + (j + 1) % segments])
    for i in range(rings - 2):
        a, b = 1 + i * segments, 1 + (i + 1) * segments
        for j in range(segments):
            k = (j + 1) % segments
            faces += [[a + j, b + j, b + k], [a + j, b + k, a + k]]
    last = len(verts) - 1
    base = 1 + (rings - 2) * segments
    for j in range(segments):
        faces.append([base + j, last, base + (j + 1) % segments])
    return np.asarray(verts, np.float32), np.asarray(faces, np.int32)


def known_curves(k: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    start = (torch.rand(k, 1, 3, generator=g) - 0.5) * 1.0
    direction = torch.randn(k, 1, 3, generator=g)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    t = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]).view(1, 4, 1)
    bend = torch.randn(k, 4, 3, generator=g) * 0.08
    return start + direction * t * 0.9 + bend * torch.tensor([0, 1, 1, 0]).view(1, 4, 1)


def render_lines(curves: torch.Tensor, viewmats, Ks, size: int, width: float = 0.012) -> np.ndarray:
    """uint8 line images [V,H,W] (255 = line) of known curves."""
    means = sample_curves(curves, 128).reshape(-1, 3)
    images = TorchRenderer()(means, torch.full((means.shape[0],), width), 1.0,
                             torch.as_tensor(viewmats), torch.as_tensor(Ks), size, size)
    return ((1.0 - images).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def curve_depth(curves: torch.Tensor, viewmats, Ks, size: int) -> np.ndarray:
    """float32 [V,H,W] camera z of the nearest curve sample per pixel (0 elsewhere), like a depth pass."""
    pts = sample_curves(curves, 512).reshape(-1, 3).double().numpy()
    out = np.zeros((len(viewmats), size, size), np.float32)
    for v, (vm, K) in enumerate(zip(viewmats, Ks)):
        cam = pts @ vm[:3, :3].T + vm[:3, 3]
        uv = (cam[:, :2] / cam[:, 2:3] * np.diag(K)[:2] + K[:2, 2]).astype(int)
        for (x, y), z in sorted(zip(map(tuple, uv), cam[:, 2]), key=lambda p: -p[1]):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if 0 <= x + dx < size and 0 <= y + dy < size:
                        out[v, y + dy, x + dx] = z
    return out


def write_job(folder, settings: dict | None = None, train: int = 8, heldout: int = 4, size: int = 64,
              curves: torch.Tensor | None = None, mesh: bool = True, depth: bool = False, **override) -> Path:
    """A complete, valid job folder; ``override`` replaces arrays in views.npz (None removes one)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    viewmats, Ks, is_train = train_and_heldout_cameras(train, heldout, size)
    curves = known_curves() if curves is None else curves
    lines = render_lines(curves, viewmats, Ks, size)
    rgba = np.zeros((len(viewmats), size, size, 4), np.uint8)
    rgba[..., 3] = lines
    arrays = {"viewmats": viewmats, "Ks": Ks, "is_train": is_train, "rgba": rgba, "lines": lines}
    if depth:
        arrays["depth"] = curve_depth(curves, viewmats, Ks, size)
    for key, value in override.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    np.savez(folder / "views.npz", **arrays)
    if mesh:
        verts, faces = uv_sphere()
        np.savez(folder / "mesh.npz", vertices=verts, faces=faces)
    base = {"curves": 4, "iterations": 3, "views_per_step": 2, "losses": {"lines": 1.0, "surface": 0.1},
            "init": "surface" if mesh else "random", "snapshot_every": 1}
    base.update(settings or {})
    (folder / "job.json").write_text(json.dumps({"schema": 1, "settings": base}))
    return folder
