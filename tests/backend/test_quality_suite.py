"""The quality suite's non-Blender half (bench/quality.py) on a tiny synthetic job: configuration job
folders, the seed setup's single-view rewrite, real backend subprocesses, results.json, TABLE.md and
the pictures."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
from synthetic import write_job

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("quality_suite", ROOT / "bench" / "quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)

TINY = {"curves": 3, "iterations": 4, "views_per_step": 2, "samples_per_curve": 16}


def _elevation(viewmat) -> float:
    eye = -viewmat[:3, :3].T.astype(np.float64) @ viewmat[:3, 3]
    return math.degrees(math.asin(eye[2] / np.linalg.norm(eye)))


def _cached_mesh(out: Path, mesh: str = "tiny") -> Path:
    """What the prepare stage caches for one mesh: job/, with eval.npz and turntable.npz."""
    base = write_job(out / mesh / "job", train=6, heldout=2, size=40)
    with np.load(base / "views.npz") as views:
        arrays = {k: views[k] for k in views.files}
    held = ~arrays["is_train"]
    hidden = np.zeros_like(arrays["lines"])
    evals = {k: arrays[k][held] for k in ("viewmats", "Ks", "rgba", "lines")}
    np.savez(base / "eval.npz", **evals, lines_hidden=hidden[held])
    np.savez(base / "turntable.npz", **evals, lines_hidden=hidden[held])
    return base


def test_single_view_rewrite_keeps_one_training_view_and_every_heldout_view(tmp_path):
    base = _cached_mesh(tmp_path)
    folder = tmp_path / "tiny" / "seed_setup"
    quality.make_config_job(base, folder, "seed_setup", {**TINY, "init": "random"})
    with np.load(base / "views.npz") as full, np.load(folder / "views.npz") as one:
        assert set(one.files) == set(full.files)
        assert one["is_train"].sum() == 1 and (~one["is_train"]).sum() == (~full["is_train"]).sum()
        assert all(one[k].shape[0] == 1 + (~full["is_train"]).sum() for k in one.files)
        kept = quality.single_view_index(full["viewmats"], full["is_train"])
        assert full["is_train"][kept]
        np.testing.assert_array_equal(one["viewmats"][one["is_train"]][0], full["viewmats"][kept])
        np.testing.assert_array_equal(one["lines"][~one["is_train"]], full["lines"][~full["is_train"]])
        errors = [abs(_elevation(full["viewmats"][v]) - quality.SINGLE_VIEW_ELEVATION)
                  for v in np.nonzero(full["is_train"])[0]]
        assert abs(_elevation(full["viewmats"][kept]) - quality.SINGLE_VIEW_ELEVATION) == min(errors)
    # the multi-view configurations share the cached arrays (hard links), not copies
    quality.make_config_job(base, tmp_path / "tiny" / "defaults", "defaults", TINY)
    assert (tmp_path / "tiny" / "defaults" / "views.npz").samefile(base / "views.npz")
    assert (folder / "eval.npz").samefile(base / "eval.npz")


def test_oracle_trains_on_exactly_the_evaluation_views(tmp_path):
    base = _cached_mesh(tmp_path)
    folder = tmp_path / "tiny" / "oracle"
    quality.make_config_job(base, folder, "oracle", TINY)
    with np.load(base / "eval.npz") as ev, np.load(folder / "views.npz") as views:
        assert views["is_train"].all() and len(views["is_train"]) == len(ev["Ks"])
        for key in quality.EVAL_KEYS:
            np.testing.assert_array_equal(views[key], ev[key])
    assert not (folder / "views.npz").samefile(base / "views.npz")
    assert quality.effective_settings("oracle", TINY) != quality.effective_settings("defaults", TINY)


def test_config_settings_follow_the_issue():
    seed = quality.config_settings("seed_setup", 50, None)
    assert seed["init"] == "random" and seed["prune"] is False and "repulsion" not in seed["losses"]
    assert seed["iterations"] == 50 and quality.CONFIGS["seed_setup"][1] == "single"
    defaults = quality.config_settings("defaults", None, None)
    assert "iterations" not in defaults and "init" not in defaults  # the project's defaults
    from contract.settings import GEOMETRY_ONLY_WEIGHTS

    assert defaults["losses"] == GEOMETRY_ONLY_WEIGHTS  # the suite's defaults are the project's
    assert quality.config_settings("repulsion", None, None)["losses"]["repulsion"] > 0
    assert quality.config_settings("k40_repulsion", None, None)["curves"] == 40
    k40 = quality.config_settings("k40_no_repulsion_no_prune", None, None)
    assert k40["curves"] == 40 and k40["prune"] is False and "repulsion" not in k40["losses"]


def test_runs_evaluates_and_writes_table_json_and_pictures(tmp_path):
    out = tmp_path / "quality"
    base = _cached_mesh(out)
    configs = ["defaults", "seed_setup", "clip_defaults"]
    for config in configs[:2]:
        settings = {**quality.config_settings(config, None, None), **TINY}
        record = quality.run_config(quality.sys.executable, base, out, "tiny", config, settings)
        assert record["run_exit"] == 0 and record["eval_exit"] == 0, record
        again = quality.run_config(quality.sys.executable, base, out, "tiny", config, settings)
        assert again == record  # cached: same settings, nothing rerun
    results = quality.report(out, ["tiny"], configs, clip_weights=None)

    saved = json.loads((out / "results.json").read_text())
    assert saved["eval"]["tolerance_px"] == 2.0
    rows = {r["config"]: r for r in saved["rows"]}
    assert rows["clip_defaults"]["status"].startswith("not measured")  # never random-weight CLIP
    for config in configs[:2]:
        m = rows[config]["metrics"]
        assert rows[config]["status"] == "measured"
        assert 0.0 <= m["f_min"] <= m["f_mean"] <= 1.0 and m["curves"] <= 3
        assert len(rows[config]["per_view_f"]) == 2 and rows[config]["runtime_s"] > 0
    table = (out / "TABLE.md").read_text()
    assert "| tiny | defaults | " in table and "| tiny | seed_setup | " in table
    assert "| tiny | clip_defaults | not measured" in table
    assert f"{rows['defaults']['metrics']['f_mean']:.3f}" in table

    from PIL import Image

    sheet = Image.open(results["pictures"]["tiny"]["sheet"])
    assert sheet.size[0] > 100 and sheet.size[1] > 4 * 40
    gif = Image.open(results["pictures"]["tiny"]["turntable"])
    assert gif.n_frames == 2 and gif.size[0] > 2 * 40
