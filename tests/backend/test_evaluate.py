"""Quality metrics on cases with known answers."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from synthetic import known_curves, uv_sphere, write_job

from backend.evaluation import EvalViews, evaluate, image_metrics, render_sketch, surface_metrics
from backend.imageops import distance_transform
from contract.cameras import train_and_heldout_cameras

ROOT = Path(__file__).resolve().parents[2]


def views_of(curves, size=128, count=6):
    viewmats, Ks, _ = train_and_heldout_cameras(count, 0, size)
    probe = EvalViews(viewmats, Ks, np.zeros((count, size, size)), np.zeros((count, size, size), bool), None)
    lines = (render_sketch(curves, None, probe) > 0.5).numpy()  # drawn as the evaluation draws sketches
    alpha = np.stack([np.asarray(torch.nn.functional.max_pool2d(torch.as_tensor(v, dtype=torch.float32)[None],
                                                                  9, 1, 4)[0]) for v in lines])
    return EvalViews(viewmats, Ks, alpha, lines, np.zeros_like(lines))


def test_a_sketch_identical_to_the_line_drawing_scores_one():
    curves = known_curves(4, seed=3)
    m = evaluate(curves, 0.012, views_of(curves))
    assert m["f_mean"] == 1.0 and m["f_min"] == 1.0 and m["chamfer_px_mean"] == 0.0
    assert m["ink_outside_mean"] == 0.0


def test_an_empty_sketch_has_zero_recall():
    views = views_of(known_curves(4, seed=3))
    m = image_metrics(torch.zeros(views.lines.shape), views)
    assert m["recall_mean"] == 0.0 and m["f_mean"] == 0.0


def test_ink_far_away_raises_chamfer_and_lowers_precision():
    curves = known_curves(4, seed=3)
    views = views_of(curves)
    near = evaluate(curves, 0.012, views)
    shifted = curves.clone()
    shifted[0] += torch.tensor([0.0, 0.0, 0.4])
    far = evaluate(shifted, 0.012, views)
    assert far["chamfer_px_mean"] > near["chamfer_px_mean"] + 1.0
    assert far["precision_mean"] < near["precision_mean"]
    assert far["ink_outside_mean"] > 0


def test_interior_ink_is_counted_as_a_share_and_in_pixels():
    """Ink inside the silhouette away from every line (the volume-filling signal), exactly as painted."""
    views = views_of(known_curves(4, seed=3))
    every = torch.as_tensor(views.lines)
    alpha = torch.ones_like(every)  # the whole image is "inside the object"
    far = distance_transform(every)
    interior_ink = (far > 6.0).float()  # ink well away from any line, all inside the silhouette
    on_lines = every.float()
    both = torch.maximum(interior_ink, on_lines)
    filled = EvalViews(views.viewmats, views.Ks, alpha.numpy(), views.lines, views.lines_hidden)
    m_lines, m_both = image_metrics(on_lines, filled), image_metrics(both, filled)
    assert m_lines["ink_interior_px_mean"] == 0 and m_lines["ink_interior_mean"] == 0.0
    expected = interior_ink.sum(dim=(1, 2)).mean().item()
    assert m_both["ink_interior_px_mean"] == expected > 0
    share = (interior_ink.sum(dim=(1, 2)) / both.sum(dim=(1, 2))).mean().item()
    assert abs(m_both["ink_interior_mean"] - share) < 1e-6


def test_outline_recall_is_the_share_of_the_silhouettes_boundary_drawn():
    """A disc: its rim drawn gives outline recall 1; a cross inside it, on lines but off the rim, 0;
    half the rim, about a half (whatever F says of either)."""
    size = 64
    ys, xs = np.mgrid[:size, :size]
    r = np.hypot(xs - 31.5, ys - 31.5)
    disc = (r < 20).astype(np.float32)[None]
    rim = torch.as_tensor((r < 20) & (r >= 19))[None]
    cross = torch.as_tensor(((np.abs(xs - 31.5) < 1) | (np.abs(ys - 31.5) < 1)) & (r < 12))[None]
    lines = (rim | cross).numpy()
    views = EvalViews(np.eye(4)[None], np.eye(3)[None], disc, lines, None)
    assert image_metrics(rim.float(), views)["outline_recall_mean"] == 1.0
    assert image_metrics(cross.float(), views)["outline_recall_mean"] == 0.0
    half = image_metrics((rim & torch.as_tensor(xs < 31.5)[None]).float(), views)["outline_recall_mean"]
    assert 0.4 < half < 0.6


def test_the_first_strokes_are_scored_alone_as_abstraction_levels():
    curves = known_curves(9, seed=3)
    views = views_of(curves)
    m = evaluate(curves, 0.012, views)
    assert [level["strokes"] for level in m["levels"]] == [4, 8]
    alone = image_metrics(render_sketch(curves[:4], None, views), views)
    assert m["levels"][0]["f_mean"] == alone["f_mean"] and m["levels"][0]["f_mean"] < m["f_mean"]
    assert m["levels"][1]["outline_recall_mean"] <= m["outline_recall_mean"] + 1e-9
    assert evaluate(curves[:4], 0.012, views)["levels"] == []  # no level below its own count


def test_hidden_lines_count_for_precision_not_recall():
    curves = known_curves(4, seed=3)
    views = views_of(curves)
    hidden_only = EvalViews(views.viewmats, views.Ks, views.alpha, np.zeros_like(views.lines), views.lines)
    ink = render_sketch(curves, None, views)
    m = image_metrics(ink, hidden_only)
    assert m["precision_mean"] == 1.0 and m["recall_mean"] == 0.0


def test_surface_distance_and_coverage():
    verts, faces = uv_sphere(24, 48, radius=0.8)
    t = torch.linspace(0, 0.2, 4)  # a short arc: its Bézier stays within ~0.004 of the sphere
    on = torch.stack([torch.stack([0.8 * torch.cos(t), 0.8 * torch.sin(t), 0 * t], 1)])
    off = on * 1.25
    m_on, m_off = surface_metrics(on, verts, faces), surface_metrics(off, verts, faces)
    assert m_on["surface_distance_mean"] < 0.02
    assert abs(m_off["surface_distance_mean"] - 0.2) < 0.05
    assert 0 < m_on["surface_coverage"] < 0.1


def test_evaluate_command_writes_metrics(tmp_path):
    job = write_job(tmp_path / "job", settings={"iterations": 2}, size=64)
    assert subprocess.run([sys.executable, "-m", "backend", "run", str(job)], cwd=ROOT,
                          capture_output=True).returncode == 0
    proc = subprocess.run([sys.executable, "-m", "backend", "evaluate", str(job)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    assert done["type"] == "done" and 0 <= done["metrics"]["f_mean"] <= 1
    metrics = json.loads((job / "metrics.json").read_text())
    assert len(metrics["views"]) == 4 and "surface_distance_mean" in metrics


def test_stroke_width_is_not_scored():
    """A sketch on the lines scores F = 1 whatever its stroke width (the width is a style: the bevel)."""
    curves = known_curves(4, seed=3)
    views = views_of(curves)
    assert evaluate(curves, 0.012, views)["f_mean"] == evaluate(curves, 0.03, views)["f_mean"] == 1.0


def _evaluation_folder(folder: Path, curves, with_mesh: bool = True, turntable: bool = True) -> Path:
    """What the add-on writes for 'Evaluate': result.npz, eval.npz (+ mesh.npz, turntable.npz); no views.npz."""
    folder.mkdir(parents=True)
    views = views_of(curves, size=96, count=5)
    rgba = np.zeros(views.lines.shape + (4,), np.uint8)
    rgba[..., 3] = (views.alpha * 255).astype(np.uint8)
    arrays = dict(viewmats=views.viewmats, Ks=views.Ks, rgba=rgba, lines=views.lines.astype(np.uint8) * 255,
                  lines_hidden=np.zeros_like(views.lines, dtype=np.uint8))
    np.savez(folder / "eval.npz", **arrays)
    if turntable:
        np.savez(folder / "turntable.npz", **arrays)
    np.savez(folder / "result.npz", control_points=np.asarray(curves, np.float32),
             widths=np.full(len(curves), 0.012, np.float32))
    if with_mesh:
        verts, faces = uv_sphere()
        np.savez(folder / "mesh.npz", vertices=verts, faces=faces)
    return folder


def _evaluate(*args):
    proc = subprocess.run([sys.executable, "-m", "backend", "evaluate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)
    return proc, [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_report_pictures_show_the_evaluation(tmp_path):
    """``evaluate --report``: a contact sheet PNG and a turntable GIF, from a folder without views.npz."""
    from PIL import Image

    folder = _evaluation_folder(tmp_path / "ev", known_curves(4, seed=3))
    proc, events = _evaluate(folder, "--report", "--title", "four curves")
    assert proc.returncode == 0, proc.stderr
    done = events[-1]
    assert done["type"] == "done" and done["metrics"]["f_mean"] == 1.0
    assert done["report"] == str(folder / "report.png") and done["turntable"] == str(folder / "turntable.gif")
    sheet = Image.open(folder / "report.png")
    assert sheet.width >= 5 * 100 and sheet.height >= 4 * 100  # 5 views x 4 rows of tiles
    pixels = np.asarray(sheet.convert("L"))
    assert (pixels < 50).mean() > 0.005  # ink and lines are drawn, not an empty canvas
    gif = Image.open(folder / "turntable.gif")
    assert gif.n_frames == 5
    assert not list(folder.glob(".*tmp"))  # written through temporary files, none left behind


def test_evaluate_without_mesh_skips_surface_figures(tmp_path):
    folder = _evaluation_folder(tmp_path / "ev", known_curves(3, seed=2), with_mesh=False, turntable=False)
    proc, events = _evaluate(folder, "--report")
    assert proc.returncode == 0, proc.stderr
    assert "surface_distance_mean" not in events[-1]["metrics"] and events[-1]["turntable"] is None


def test_evaluate_rejects_a_bad_result_in_one_line(tmp_path):
    folder = _evaluation_folder(tmp_path / "ev", known_curves(3, seed=2))
    np.savez(folder / "result.npz", control_points=np.zeros((3, 2, 3), np.float32), widths=np.zeros(3, np.float32))
    proc, events = _evaluate(folder, "--report")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert events[-1]["type"] == "error" and "control_points" in events[-1]["message"]
    assert not (folder / "metrics.json").exists() and not (folder / "report.png").exists()


def test_evaluate_rejects_a_bad_mesh_in_one_line(tmp_path):
    folder = _evaluation_folder(tmp_path / "ev", known_curves(3, seed=2), turntable=False)
    verts, faces = uv_sphere()
    np.savez(folder / "mesh.npz", vertices=verts, faces=faces + len(verts))  # faces past the last vertex
    proc, events = _evaluate(folder)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert events[-1]["type"] == "error" and "mesh.npz" in events[-1]["message"]
    assert "vertices that do not exist" in events[-1]["message"] and not (folder / "metrics.json").exists()


def test_clip_similarity_of_identical_images_is_one(tiny_clip_vit_config):
    from backend.losses.clip_model import load_clip
    from contract.settings import ClipConfig

    bundle = load_clip(ClipConfig(model="tiny-vit", model_config=str(tiny_clip_vit_config), pretrained=""),
                       torch.device("cpu"))
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    from backend.evaluation import clip_image_similarity

    same = clip_image_similarity(bundle, images, images)
    assert torch.allclose(same, torch.ones(3), atol=1e-5)
    other = clip_image_similarity(bundle, images, images.flip(0))
    assert other.shape == (3,) and (other[[0, 2]] < 1 - 1e-4).all()


def test_evaluate_command_adds_clip_similarity_with_another_model(tmp_path, tiny_clip_vit_config):
    """--clip-model: the figures gain a CLIP similarity (a tiny random-weight model here: the test checks
    the plumbing only; random weights are never reported as quality)."""
    folder = _evaluation_folder(tmp_path / "ev", known_curves(3, seed=2), turntable=False)
    proc, events = _evaluate(folder, "--clip-model", "tiny-vit", "--clip-config", tiny_clip_vit_config)
    assert proc.returncode == 0, proc.stderr
    m = events[-1]["metrics"]
    assert m["clip_model"] == "tiny-vit" and -1.0 <= m["clip_similarity_min"] <= m["clip_similarity_mean"] <= 1.0
    missing = tmp_path / "nope.pt"
    proc, events = _evaluate(folder, "--clip-model", "ViT-B-32", "--clip-checkpoint", missing)
    assert proc.returncode == 3 and str(missing) in events[-1]["message"] and "Traceback" not in proc.stderr


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _assert_rejected(proc, events, folder, before, *fragments):
    """Exit 2, one ``error`` event line naming the problem, no traceback, the folder untouched."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stdout.splitlines()) == 1 and events[0]["type"] == "error" and events[0]["code"] == 2
    for fragment in fragments:
        assert fragment in events[0]["message"], events[0]["message"]
    assert "Traceback" not in proc.stderr
    assert _listing(folder) == before, "a rejected evaluation must not write anything"


def test_report_without_eval_npz_is_rejected_before_anything_is_written(tmp_path):
    """A job folder with held-out views in views.npz but no eval.npz: the report has nothing to draw from."""
    job = write_job(tmp_path / "job", size=32)
    np.savez(job / "result.npz", control_points=np.asarray(known_curves(), np.float32),
             widths=np.full(4, 0.012, np.float32))
    before = _listing(job)
    proc, events = _evaluate(job, "--report")
    _assert_rejected(proc, events, job, before, "eval.npz", "report")


def test_missing_views_file_is_rejected_not_replaced(tmp_path):
    job = write_job(tmp_path / "job", size=32)
    np.savez(job / "result.npz", control_points=np.asarray(known_curves(), np.float32),
             widths=np.full(4, 0.012, np.float32))
    before = _listing(job)
    missing = tmp_path / "missing.npz"
    proc, events = _evaluate(job, "--views", missing)
    _assert_rejected(proc, events, job, before, str(missing))


def test_report_from_other_views_is_rejected_before_anything_is_written(tmp_path):
    folder = _evaluation_folder(tmp_path / "ev", known_curves(3, seed=2), turntable=False)
    other = tmp_path / "other.npz"
    (other).write_bytes((folder / "eval.npz").read_bytes())
    before = _listing(folder)
    proc, events = _evaluate(folder, "--views", other, "--report")
    _assert_rejected(proc, events, folder, before, "eval.npz")


def test_a_bug_in_evaluate_is_an_internal_error_with_its_traceback(tmp_path):
    folder = _evaluation_folder(tmp_path / "ev", known_curves(3, seed=2), turntable=False)
    code = ("import sys, runpy\n"
            "import backend.evaluation as e\n"
            "def broken(*a, **k):\n"
            "    raise RuntimeError('planted bug')\n"
            "e.evaluate = broken\n"
            f"sys.argv = ['backend', 'evaluate', {str(folder)!r}]\n"
            "runpy.run_module('backend', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    event = json.loads(proc.stdout.splitlines()[-1])
    assert event["type"] == "error" and event["code"] == 1 and "planted bug" in event["message"]
    assert "Traceback" in proc.stderr and not (folder / "metrics.json").exists()


def test_evaluate_stops_when_its_watched_stdin_closes_and_writes_nothing(tmp_path):
    folder = _evaluation_folder(tmp_path / "ev", known_curves(3, seed=2))
    before = _listing(folder)
    proc = subprocess.run([sys.executable, "-m", "backend", "evaluate", str(folder), "--report", "--watch-stdin"],
                          cwd=ROOT, capture_output=True, text=True, input="", timeout=300)
    assert proc.returncode == 130, proc.stdout + proc.stderr
    done = json.loads(proc.stdout.splitlines()[-1])
    assert done["type"] == "done" and done["cancelled"] is True and done["result"] is None
    assert "Traceback" not in proc.stderr and _listing(folder) == before


def test_evaluate_stops_when_its_parent_is_gone(tmp_path):
    folder = _evaluation_folder(tmp_path / "ev", known_curves(3, seed=2), turntable=False)
    before = _listing(folder)
    parent = subprocess.Popen([sys.executable, "-c", "pass"])
    parent.wait()
    proc, events = _evaluate(folder, "--parent-pid", parent.pid)
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert events[-1]["cancelled"] is True and "parent process" in events[-1]["cancel_reason"]
    assert _listing(folder) == before


def test_sigterm_stops_an_evaluation_between_views(tmp_path):
    """Enough views that the evaluation is still scoring (about a second here) when SIGTERM arrives
    right after its first event: exit 143, ``done`` says cancelled, nothing written."""
    folder = tmp_path / "ev"
    folder.mkdir()
    viewmats, Ks, _ = train_and_heldout_cameras(32, 0, 128)
    lines = np.zeros((32, 128, 128), np.uint8)
    lines[:, 64, :] = 255
    rgba = np.zeros(lines.shape + (4,), np.uint8)
    rgba[..., 3] = lines
    np.savez(folder / "eval.npz", viewmats=viewmats, Ks=Ks, rgba=rgba, lines=lines)
    np.savez(folder / "result.npz", control_points=np.asarray(known_curves(4, seed=3), np.float32),
             widths=np.full(4, 0.012, np.float32))
    before = _listing(folder)
    proc = subprocess.Popen([sys.executable, "-m", "backend", "evaluate", str(folder)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    first = json.loads(proc.stdout.readline())  # the evaluation announces itself, then scores
    assert first["type"] == "info" and "32 views" in first["message"]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, out + err
    done = json.loads(out.splitlines()[-1])
    assert done["type"] == "done" and done["cancelled"] is True and done["cancel_reason"] == "signal SIGTERM"
    assert "Traceback" not in err and "nothing written" in err and _listing(folder) == before


def test_report_of_a_sketch_without_curves(tmp_path):
    """Every curve pruned: the surface figures are null in metrics.json and the sheet prints n/a (the
    header must format them: a crash there would exit 1 after metrics.json was written)."""
    folder = _evaluation_folder(tmp_path / "ev", known_curves(3, seed=2), turntable=False)
    np.savez(folder / "result.npz", control_points=np.zeros((0, 4, 3), np.float32), widths=np.zeros(0, np.float32))
    proc, events = _evaluate(folder, "--report")
    assert proc.returncode == 0, proc.stderr
    assert events[-1]["metrics"]["surface_distance_mean"] is None and (folder / "report.png").is_file()
