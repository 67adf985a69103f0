"""The visual report of an evaluated sketch: a contact sheet PNG with the figures printed on it and a
turntable GIF of the sketch beside the object's line drawing. People would rather look than read.

Pictures are drawn from the job folder alone (``eval.npz``, ``turntable.npz``, ``result.npz``,
``metrics.json``) with the evaluation's own renderer, so what you see is exactly what was scored.
Needs Pillow (a dependency of torchvision, which open_clip needs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .job import write_atomic

SHEET_COLUMNS = 6
TILE_PX = 192
GOOD_F = 0.8  # per-view F at or above this is printed green, below it red


def sketch_ink(control_points, width: float | None, viewmats, Ks, size: int) -> np.ndarray:
    """Ink ``[V,H,W]`` in [0,1]: centre lines when ``width`` is None (as scored), else strokes of that width."""
    from .evaluate import EvalViews, render_sketch

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


def summary_line(m: dict) -> str:
    line = (f"F {m['f_mean']:.2f} (min {m['f_min']:.2f})  precision {m['precision_mean']:.2f}  "
            f"recall {m['recall_mean']:.2f}  chamfer {m['chamfer_px_mean']:.1f} px  "
            f"interior ink {m['ink_interior_mean']:.2f}  outside {m['ink_outside_mean']:.2f}  curves {m['curves']}")
    if "surface_distance_mean" in m:
        line += f"  surface dist {m['surface_distance_mean']:.3f}  coverage {m['surface_coverage']:.2f}"
    if "clip_similarity_mean" in m:
        line += f"  CLIP {m['clip_model']} similarity {m['clip_similarity_mean']:.3f}"
    return line


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _result(folder: Path) -> tuple[np.ndarray, float]:
    r = _load(folder / "result.npz")
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


def contact_sheet(folder: Path, path: Path, title: str = "", tile: int = TILE_PX) -> Path:
    """Rows: the object, its line drawing, the sketch as scored (centre lines) and as drawn (stroke
    width), over the held-out evaluation views; per-view F on each tile, the summary figures on top."""
    ev = _load(folder / "eval.npz")
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    per_view = [v["f"] for v in metrics["views"]]
    views = pick_views(per_view)
    size = ev["lines"].shape[1]
    control_points, width = _result(folder)
    scored = sketch_ink(control_points, None, ev["viewmats"][views], ev["Ks"][views], size)
    drawn = sketch_ink(control_points, width, ev["viewmats"][views], ev["Ks"][views], size)
    captions = [(f"view {v}: F {per_view[v]:.2f}", per_view[v]) for v in views]
    rows = [("object", [over_white(ev["rgba"][v]) for v in views], None),
            ("its lines: visible black, hidden blue (Blender Freestyle)",
             [line_drawing(ev["lines"][v], ev["lines_hidden"][v]) for v in views], None),
            ("sketch as scored (centre lines), per-view F", [ink_image(i) for i in scored], captions),
            (f"sketch at its stroke width ({width:.3f})", [ink_image(i) for i in drawn], None)]
    header = [(title or folder.name, (0, 0, 0)),
              (f"{summary_line(metrics)}   [{len(per_view)} held-out views, {size} px, "
               f"tolerance {metrics['tolerance_px']:g} px; views shown {views}]", (0, 0, 120))]
    sheet = draw_sheet(header, rows, tile)
    write_atomic(path, lambda tmp: sheet.save(tmp, format="PNG", optimize=True))
    return path


def turntable_gif(folder: Path, path: Path, title: str = "", frame_ms: int = 120) -> Path | None:
    """The object's line drawing (left) beside the sketch at its stroke width (right), one turn."""
    from PIL import Image, ImageDraw

    if not (folder / "turntable.npz").exists():
        return None
    tt = _load(folder / "turntable.npz")
    size = tt["lines"].shape[1]
    control_points, width = _result(folder)
    ink = sketch_ink(control_points, width, tt["viewmats"], tt["Ks"], size)
    frames = []
    for i in range(len(ink)):
        pair = np.concatenate([line_drawing(tt["lines"][i], None), np.full((size, 4, 3), 180, np.uint8),
                               ink_image(ink[i])], axis=1)
        image = Image.fromarray(pair)
        draw = ImageDraw.Draw(image)
        draw.text((3, 2), title or "object", fill=(0, 0, 120))
        draw.text((size + 7, 2), f"sketch, {len(control_points)} curves", fill=(0, 0, 120))
        frames.append(image.convert("P", palette=Image.ADAPTIVE, colors=16))
    write_atomic(path, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                                                 duration=frame_ms, loop=0, optimize=True))
    return path


def write_report(folder: Path, title: str = "") -> dict:
    """``report.png`` and (when ``turntable.npz`` exists) ``turntable.gif`` in the job folder."""
    sheet = contact_sheet(folder, folder / "report.png", title)
    gif = turntable_gif(folder, folder / "turntable.gif", title)
    return {"report": str(sheet), "turntable": str(gif) if gif else None}
