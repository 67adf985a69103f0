"""The visual report of an evaluated sketch: a contact sheet PNG with the figures printed on it and a
turntable GIF of the sketch beside the object's line drawing. People would rather look than read.

Pictures are drawn from the job folder alone (``eval.npz``, ``turntable.npz``, ``result.npz``,
``metrics.json``) with the evaluation's own renderer, so what you see is exactly what was scored.
Needs Pillow (a dependency of torchvision, which open_clip needs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.protocol import EVAL_NPZ, METRICS_JSON, REPORT_PNG, RESULT_NPZ, TURNTABLE_GIF, TURNTABLE_NPZ, write_atomic

from .errors import check_stop

SHEET_COLUMNS = 6
TILE_PX = 192
GOOD_F = 0.8  # per-view F at or above this is printed green, below it red


def sketch_ink(control_points, width: float | None, viewmats, Ks, size: int) -> np.ndarray:
    """Ink ``[V,H,W]`` in [0,1]: centre lines when ``width`` is None (as scored), else strokes of that width."""
    from .evaluation import EvalViews, render_sketch

    blank = np.zeros((len(viewmats), size, size), np.float32)
    if len(control_points) == 0:
        return blank
    views = EvalViews(np.asarray(viewmats), np.asarray(Ks), blank, blank > 0, None)
    return render_sketch(control_points, width, views).clamp(0, 1).numpy()


def over_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def line_drawing(lines: np.ndarray, hidden: np.ndarray | None) -> np.ndarray:
    """Visible lines black, hidden lines light blue, on white (uint8 line images in, RGB out)."""
    img = np.full(lines.shape + (3,), 255, np.float32)
    if hidden is not None:
        h = hidden.astype(np.float32)[..., None] / 255.0
        img = img * (1 - h) + np.array([150, 180, 255], np.float32) * h
    v = lines.astype(np.float32)[..., None] / 255.0
    return np.round(img * (1 - v)).astype(np.uint8)


def ink_image(ink: np.ndarray) -> np.ndarray:
    return np.repeat(np.round(255 * (1 - ink))[..., None], 3, axis=-1).astype(np.uint8)


def pick_views(per_view_f: list[float], count: int = SHEET_COLUMNS) -> list[int]:
    """The worst view, the best view and evenly spaced others (sorted): the sheet shows the spread."""
    n = len(per_view_f)
    if n <= count:
        return list(range(n))
    order = np.argsort(per_view_f)
    chosen = {int(order[0]), int(order[-1])}
    for v in np.linspace(0, n - 1, count).round().astype(int):
        if len(chosen) >= count:
            break
        chosen.add(int(v))
    return sorted(chosen)


def _figure(value, spec: str) -> str:
    """One figure for the header; a missing one (null in metrics.json: nothing to measure) reads n/a."""
    return "n/a" if value is None else format(value, spec)


def summary_line(m: dict) -> str:
    line = (f"F {_figure(m['f_mean'], '.2f')} (min {_figure(m['f_min'], '.2f')})  "
            f"precision {_figure(m['precision_mean'], '.2f')}  recall {_figure(m['recall_mean'], '.2f')}  "
            f"chamfer {_figure(m['chamfer_px_mean'], '.1f')} px  "
            f"interior ink {_figure(m['ink_interior_mean'], '.2f')}  "
            f"outside {_figure(m['ink_outside_mean'], '.2f')}  curves {m['curves']}")
    if "surface_distance_mean" in m:
        line += (f"  surface dist {_figure(m['surface_distance_mean'], '.3f')}  "
                 f"coverage {_figure(m['surface_coverage'], '.2f')}")
    if "clip_similarity_mean" in m:
        line += f"  CLIP {m['clip_model']} similarity {_figure(m['clip_similarity_mean'], '.3f')}"
    return line


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _result(folder: Path) -> tuple[np.ndarray, float]:
    r = _load(folder / RESULT_NPZ)
    widths = r["widths"]
    return r["control_points"], float(widths[0]) if len(widths) else 0.01


def draw_sheet(header: list[tuple[str, tuple]], rows: list, tile: int):
    """A PIL image: ``header`` lines (text, colour) on top, then per row its label and its tiles.

    ``rows`` holds ``(label, images, captions)``; ``captions`` is None or one ``(text, F)`` per tile,
    printed on the tile in green when F >= ``GOOD_F``, else red.
    """
    from PIL import Image, ImageDraw

    label_h, m, line_h = 14, 3, 15
    head_h = 4 + line_h * len(header)
    columns = max(len(images) for _, images, _ in rows)
    sheet = Image.new("RGB", (columns * (tile + m) + m, head_h + len(rows) * (tile + label_h + m)), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    for i, (text, colour) in enumerate(header):
        draw.text((m, 3 + i * line_h), text, fill=colour)
    y = head_h
    for label, images, captions in rows:
        draw.text((m, y + 1), label, fill=(0, 0, 120))
        y += label_h
        for i, image in enumerate(images):
            x = m + i * (tile + m)
            sheet.paste(Image.fromarray(image).resize((tile, tile), Image.LANCZOS), (x, y))
            if captions is not None:
                text, f = captions[i]
                draw.rectangle((x, y + tile - 12, x + 6 * len(text) + 4, y + tile), fill=(255, 255, 255))
                draw.text((x + 2, y + tile - 12), text, fill=(0, 130, 0) if f >= GOOD_F else (200, 0, 0))
        y += tile + m
    return sheet


def sheet_image(folder: Path, metrics: dict, title: str = "", tile: int = TILE_PX, should_stop=None):
    """The contact sheet as a PIL image. Rows: the object, its line drawing, the sketch as scored
    (centre lines) and as drawn (stroke width), over the held-out evaluation views of ``eval.npz``;
    per-view F (from ``metrics``) on each tile, the summary figures on top."""
    ev = _load(folder / EVAL_NPZ)
    per_view = [v["f"] for v in metrics["views"]]
    views = pick_views(per_view)
    size = ev["lines"].shape[1]
    control_points, width = _result(folder)
    scored = sketch_ink(control_points, None, ev["viewmats"][views], ev["Ks"][views], size)
    check_stop(should_stop)
    drawn = sketch_ink(control_points, width, ev["viewmats"][views], ev["Ks"][views], size)
    check_stop(should_stop)
    hidden = ev.get("lines_hidden")
    captions = [(f"view {v}: F {per_view[v]:.2f}", per_view[v]) for v in views]
    rows = [("object", [over_white(ev["rgba"][v]) for v in views], None),
            ("its lines: visible black, hidden blue (Blender Freestyle)",
             [line_drawing(ev["lines"][v], None if hidden is None else hidden[v]) for v in views], None),
            ("sketch as scored (centre lines), per-view F", [ink_image(i) for i in scored], captions),
            (f"sketch at its stroke width ({width:.3f})", [ink_image(i) for i in drawn], None)]
    header = [(title or folder.name, (0, 0, 0)),
              (f"{summary_line(metrics)}   [{len(per_view)} held-out views, {size} px, "
               f"tolerance {metrics['tolerance_px']:g} px; views shown {views}]", (0, 0, 120))]
    return draw_sheet(header, rows, tile)


def _save_png(image, path: Path) -> Path:
    write_atomic(path, lambda tmp: image.save(tmp, format="PNG", optimize=True))
    return path


def _save_gif(frames: list, path: Path, frame_ms: int) -> Path:
    write_atomic(path, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                                                 duration=frame_ms, loop=0, optimize=True))
    return path


def contact_sheet(folder: Path, path: Path, title: str = "", tile: int = TILE_PX) -> Path:
    """:func:`sheet_image` with the figures of the folder's ``metrics.json``, written to ``path``."""
    metrics = json.loads((folder / METRICS_JSON).read_text(encoding="utf-8"))
    return _save_png(sheet_image(folder, metrics, title, tile), path)


def turntable_frames(folder: Path, title: str = "", should_stop=None) -> list | None:
    """GIF frames (PIL images): the object's line drawing (left) beside the sketch at its stroke width
    (right), one turn from ``turntable.npz``; None when the folder has none."""
    from PIL import Image, ImageDraw

    if not (folder / TURNTABLE_NPZ).exists():
        return None
    tt = _load(folder / TURNTABLE_NPZ)
    size = tt["lines"].shape[1]
    control_points, width = _result(folder)
    ink = sketch_ink(control_points, width, tt["viewmats"], tt["Ks"], size)
    check_stop(should_stop)
    frames = []
    for i in range(len(ink)):
        pair = np.concatenate([line_drawing(tt["lines"][i], None), np.full((size, 4, 3), 180, np.uint8),
                               ink_image(ink[i])], axis=1)
        image = Image.fromarray(pair)
        draw = ImageDraw.Draw(image)
        draw.text((3, 2), title or "object", fill=(0, 0, 120))
        draw.text((size + 7, 2), f"sketch, {len(control_points)} curves", fill=(0, 0, 120))
        frames.append(image.convert("P", palette=Image.ADAPTIVE, colors=16))
    return frames


def turntable_gif(folder: Path, path: Path, title: str = "", frame_ms: int = 120) -> Path | None:
    """:func:`turntable_frames` written to ``path`` as a looping GIF (None without ``turntable.npz``)."""
    frames = turntable_frames(folder, title)
    return None if frames is None else _save_gif(frames, path, frame_ms)


@dataclass
class ReportPictures:
    """The report drawn in memory: nothing is written until :func:`save_report`."""

    sheet: object  # PIL image
    frames: list | None  # turntable GIF frames, None without turntable.npz
    frame_ms: int = 120


def draw_report(folder: Path, metrics: dict, title: str = "", should_stop=None) -> ReportPictures:
    """The contact sheet and turntable frames for ``metrics`` (not read from disk: the evaluation
    draws before it writes anything); ``should_stop`` is asked between pictures."""
    sheet = sheet_image(folder, metrics, title, should_stop=should_stop)
    return ReportPictures(sheet, turntable_frames(folder, title, should_stop))


def save_report(folder: Path, pictures: ReportPictures) -> dict:
    """``report.png`` and (with frames) ``turntable.gif`` in the job folder, each written atomically."""
    sheet = _save_png(pictures.sheet, folder / REPORT_PNG)
    gif = _save_gif(pictures.frames, folder / TURNTABLE_GIF, pictures.frame_ms) if pictures.frames else None
    return {"report": str(sheet), "turntable": str(gif) if gif else None}


def write_report(folder: Path, title: str = "") -> dict:
    """``report.png`` and (when ``turntable.npz`` exists) ``turntable.gif`` from the folder's ``metrics.json``."""
    metrics = json.loads((folder / METRICS_JSON).read_text(encoding="utf-8"))
    return save_report(folder, draw_report(folder, metrics, title))
