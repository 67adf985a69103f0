"""Sketch quality on views never used in optimisation: line precision / recall / F, outline recall
(how much of the silhouette's boundary is drawn), chamfer, ink outside the silhouette and inside it
away from lines (the volume-filling signal), and 3D distance of the curves to the mesh surface; the
line figures also for the sketch's first strokes alone (its abstraction levels).

Lines of the object come from the job (Blender Freestyle: visible and hidden lines). Recall is
measured against the *visible* lines, precision against visible + hidden lines: a wire sketch may
show structure behind the front surface, which is not an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .curves import sample_curves
from .errors import check_stop
from .imageops import distance_transform
from .loops import loop_metrics
from .render import pixel_scales
from .render.torch_renderer import TorchRenderer
from .surface_samples import sample_surface

TOLERANCE_PX = 2.0
LEVELS = (4, 8)  # the sketch's first strokes scored alone too (stored most important first), below its count
INK_THRESHOLD = 0.5  # a sketch pixel is ink when the strokes cover at least half of it
# The sketch is scored as a line drawing like the object's (Freestyle lines are 1 px): its curves are
# drawn with a constant 0.5 px sigma (about 1-2 px of ink), whatever the stroke width (a style choice:
# the bevel in Blender). At the default width a perfect sketch's 5 px strokes would spill out of the
# 2 px band and score F 0.83; drawn as centre lines it scores 1.
LINE_SIGMA_PX = 0.5
COVERAGE_RADIUS = 0.05  # normalised units: a surface point is "covered" if a curve passes this close


@dataclass
class EvalViews:
    """Views held out for evaluation, as numpy arrays (the same keys as views.npz)."""

    viewmats: np.ndarray
    Ks: np.ndarray
    alpha: np.ndarray  # [V,H,W] float in [0,1]
    lines: np.ndarray  # [V,H,W] bool, visible lines
    lines_hidden: np.ndarray | None  # [V,H,W] bool
    rgb: np.ndarray | None = None  # [V,H,W,3] float in [0,1], the object's render over white

    @classmethod
    def from_arrays(cls, arrays: dict, select=None) -> EvalViews:
        sel = slice(None) if select is None else select
        hidden = arrays.get("lines_hidden")
        rgba = arrays["rgba"][sel].astype(np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
        return cls(arrays["viewmats"][sel], arrays["Ks"][sel], rgba[..., 3],
                   arrays["lines"][sel] > 127, None if hidden is None else hidden[sel] > 127, rgb)


def render_sketch(control_points, width: float | None, views: EvalViews, samples: int = 512) -> torch.Tensor:
    """Ink ``[V,H,W]`` (1 = ink) of the sketch in the evaluation views, with the optimisation's renderer:
    centre lines (``LINE_SIGMA_PX``) when ``width`` is None, else strokes of that world width."""
    cp = torch.as_tensor(np.asarray(control_points), dtype=torch.float32)
    means = sample_curves(cp, samples).reshape(-1, 3)
    H, W = views.lines.shape[1:]
    viewmats = torch.as_tensor(views.viewmats, dtype=torch.float32)
    Ks = torch.as_tensor(views.Ks, dtype=torch.float32)
    if width is None:
        scales = pixel_scales(means, viewmats, Ks, LINE_SIGMA_PX)
    else:
        scales = torch.full((means.shape[0],), float(width))
    return 1.0 - TorchRenderer()(means, scales, 1.0, viewmats, Ks, W, H)


class ObjectLines(NamedTuple):
    """The object's side of the line metrics, the same for every sketch scored on the same views
    (three distance transforms: computed once when several sketches are scored, as the levels are)."""

    visible: torch.Tensor  # [V,H,W] bool
    silhouette: torch.Tensor  # [V,H,W] bool
    d_to_every: torch.Tensor  # [V,H,W] px to the nearest visible or hidden line
    outside: torch.Tensor  # [V,H,W] bool: farther than the tolerance outside the silhouette
    outline: torch.Tensor  # [V,H,W] bool: inside pixels next to the background


def object_lines(views: EvalViews, tolerance: float = TOLERANCE_PX) -> ObjectLines:
    visible = torch.as_tensor(views.lines)
    every = visible | torch.as_tensor(views.lines_hidden) if views.lines_hidden is not None else visible
    silhouette = torch.as_tensor(views.alpha) > 0.5
    return ObjectLines(visible, silhouette, distance_transform(every),
                       distance_transform(silhouette) > tolerance,
                       silhouette & (distance_transform(~silhouette) <= 1.0))


def image_metrics(ink: torch.Tensor, views: EvalViews, tolerance: float = TOLERANCE_PX, should_stop=None,
                  lines: ObjectLines | None = None) -> dict:
    """Per-view line metrics of sketch ink against the object's line drawings (``lines``: the views'
    :func:`object_lines` when already made; ``should_stop``, a callable, is asked between views: True
    raises :class:`~backend.errors.Stopped`)."""
    sketch = ink > INK_THRESHOLD
    visible, silhouette, d_to_every, outside, outline = lines or object_lines(views, tolerance)
    d_to_sketch = distance_transform(sketch)
    per_view = []
    for v in range(ink.shape[0]):
        check_stop(should_stop)
        s, vis = sketch[v], visible[v]
        n_ink, n_vis = int(s.sum()), int(vis.sum())
        precision = float((d_to_every[v][s] <= tolerance).float().mean()) if n_ink else 0.0
        recall = float((d_to_sketch[v][vis] <= tolerance).float().mean()) if n_vis and n_ink else 0.0
        f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        diag = math.hypot(*s.shape)
        to_target = float(d_to_every[v][s].mean()) if n_ink else diag
        to_sketch = float(d_to_sketch[v][vis].mean()) if n_vis and n_ink else diag
        interior = silhouette[v] & (d_to_every[v] > tolerance)
        n_outline = int(outline[v].sum())
        outline_recall = float((d_to_sketch[v][outline[v]] <= tolerance).float().mean()) if n_outline and n_ink else 0.0
        per_view.append({
            "precision": precision, "recall": recall, "f": f, "outline_recall": outline_recall,
            "chamfer_px": 0.5 * (to_target + to_sketch),
            "ink_outside": float((s & outside[v]).sum() / max(n_ink, 1)),
            "ink_interior": float((s & interior).sum() / max(n_ink, 1)),
            "ink_interior_px": int((s & interior).sum()),
            "ink_px": n_ink,
        })
    return {"views": per_view, **summarise(per_view)}


def summarise(per_view: list[dict]) -> dict:
    """Mean, minimum and spread over views of each per-view figure."""
    out = {}
    for key in ("f", "precision", "recall", "outline_recall", "chamfer_px", "ink_outside", "ink_interior",
                "ink_interior_px", "ink_px"):
        values = np.array([v[key] for v in per_view], dtype=np.float64)
        out[f"{key}_mean"] = float(values.mean()) if len(values) else float("nan")
        out[f"{key}_min"] = float(values.min()) if len(values) else float("nan")
        out[f"{key}_max"] = float(values.max()) if len(values) else float("nan")
        out[f"{key}_std"] = float(values.std()) if len(values) else float("nan")
    return out


def abstraction_levels(control_points, views: EvalViews, tolerance: float = TOLERANCE_PX,
                       should_stop=None, lines: ObjectLines | None = None) -> list[dict]:
    """F and outline recall of the first n strokes alone, for each n of ``LEVELS`` below the sketch's
    count: how the sketch reads with fewer strokes shown (the Strokes panel's Shown)."""
    points = np.asarray(control_points)
    lines = lines or object_lines(views, tolerance)
    out = []
    for n in (n for n in LEVELS if n < len(points)):
        figures = image_metrics(render_sketch(points[:n], None, views), views, tolerance, should_stop, lines)
        out.append({"strokes": n, **{k: figures[k] for k in ("f_mean", "f_min", "outline_recall_mean",
                                                             "outline_recall_min")}})
    return out


def surface_metrics(control_points, vertices, faces, samples: int = 64, surface_points: int = 100_000,
                    seed: int = 0) -> dict:
    """Distance of curve samples to the surface (mean, max; normalised units) and surface coverage."""
    cp = torch.as_tensor(np.asarray(control_points), dtype=torch.float32)
    if cp.shape[0] == 0:
        return {"surface_distance_mean": float("nan"), "surface_distance_max": float("nan"), "surface_coverage": 0.0}
    g = torch.Generator().manual_seed(seed)
    pts, _ = sample_surface(torch.as_tensor(vertices, dtype=torch.float32),
                            torch.as_tensor(faces, dtype=torch.long), surface_points, g)
    curve_pts = sample_curves(cp, samples).reshape(-1, 3)
    to_surface = torch.cat([torch.cdist(chunk, pts).amin(dim=1) for chunk in curve_pts.split(1024)])
    covered = torch.cat([torch.cdist(chunk, curve_pts).amin(dim=1) for chunk in pts[::10].split(4096)])
    return {"surface_distance_mean": float(to_surface.mean()), "surface_distance_max": float(to_surface.max()),
            "surface_coverage": float((covered < COVERAGE_RADIUS).float().mean())}


@torch.no_grad()
def clip_image_similarity(bundle, images_a: torch.Tensor, images_b: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Cosine similarity ``[N]`` of CLIP image embeddings of two ``[N,3,H,W]`` batches in [0,1]."""
    out = []
    for start in range(0, images_a.shape[0], batch):
        pair = torch.cat([images_a[start:start + batch], images_b[start:start + batch]]).to(bundle.device)
        a, b = bundle.model.encode_image(bundle.normalize(pair)).float().chunk(2)
        out.append(torch.nn.functional.cosine_similarity(a, b, dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def clip_metrics(bundle, control_points, width: float, views: EvalViews) -> dict:
    """How much the sketch (black strokes at its width, on white) reads like the object's render for a
    CLIP model; meant for a *different* backbone from the one the sketch was optimised with."""
    ink = render_sketch(control_points, width, views).clamp(0, 1)
    sketch = (1.0 - ink)[:, None].expand(-1, 3, -1, -1).contiguous()
    obj = torch.as_tensor(views.rgb, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
    sims = clip_image_similarity(bundle, sketch, obj)
    return {"clip_model": bundle.name, "clip_similarity_mean": float(sims.mean()),
            "clip_similarity_min": float(sims.min()), "clip_similarity_views": [float(v) for v in sims]}


def evaluate(control_points, width: float, views: EvalViews, vertices=None, faces=None,
             tolerance: float = TOLERANCE_PX, clip_bundle=None, should_stop=None) -> dict:
    """All figures for one sketch; ``views`` must not include the views it was optimised on.
    ``should_stop`` (a callable) is asked between views and stages: True raises
    :class:`~backend.errors.Stopped`."""
    ink = render_sketch(control_points, None, views)
    lines = object_lines(views, tolerance)
    metrics = image_metrics(ink, views, tolerance, should_stop, lines)
    metrics["sketch_drawn_as"] = f"centre lines, {LINE_SIGMA_PX} px sigma (stroke width {width:.4f} not scored)"
    metrics["tolerance_px"] = tolerance
    metrics["image_size"] = list(views.lines.shape[1:])
    metrics["curves"] = int(np.asarray(control_points).shape[0])
    metrics.update(loop_metrics(control_points, views.viewmats, views.Ks))
    metrics["levels"] = abstraction_levels(control_points, views, tolerance, should_stop, lines)
    if vertices is not None:
        check_stop(should_stop)
        metrics.update(surface_metrics(control_points, vertices, faces))
    if clip_bundle is not None and views.rgb is not None and len(control_points):
        check_stop(should_stop)
        metrics.update(clip_metrics(clip_bundle, control_points, width, views))
    check_stop(should_stop)
    return metrics
