"""Bad jobs: each case exits with code 2, one line naming what and where, no traceback, nothing written."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_job

from backend.job import BadJob, load_job, load_result

ROOT = Path(__file__).resolve().parents[2]


def run_worker(job_dir, *extra, timeout=300):
    return subprocess.run([sys.executable, "-m", "backend", "run", str(job_dir), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_bad_job(job_dir, *fragments):
    before = sorted(os.listdir(job_dir)) if Path(job_dir).is_dir() else None
    proc = run_worker(job_dir)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    event = json.loads(lines[0])
    assert event["type"] == "error" and event["code"] == 2
    for fragment in fragments:
        assert fragment in event["message"], event["message"]
    assert "Traceback" not in proc.stderr
    after = sorted(os.listdir(job_dir)) if Path(job_dir).is_dir() else None
    assert before == after, "a bad job must not write anything"
    return event["message"]


def views(folder):
    with np.load(Path(folder) / "views.npz") as data:
        return {k: data[k] for k in data.files}


def rewrite(folder, **arrays):
    data = views(folder)
    for key, value in arrays.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    np.savez(Path(folder) / "views.npz", **data)


def set_settings(folder, **settings):
    meta = json.loads((Path(folder) / "job.json").read_text())
    meta["settings"].update(settings)
    (Path(folder) / "job.json").write_text(json.dumps(meta))


@pytest.fixture
def job(tmp_path):
    return write_job(tmp_path / "job", size=16, train=2, heldout=1)


def test_missing_folder(tmp_path):
    assert_bad_job(tmp_path / "nope", "no such job folder")


def test_missing_job_json(job):
    (job / "job.json").unlink()
    assert_bad_job(job, "job.json", "missing")


def test_malformed_job_json(job):
    (job / "job.json").write_text('{"schema": 1, "settings": {')
    assert_bad_job(job, "job.json", "malformed JSON")


def test_wrong_schema(job):
    (job / "job.json").write_text(json.dumps({"schema": 99, "settings": {}}))
    assert_bad_job(job, "schema 99 is not one this backend reads (1, 2, 3)")


def test_kept_strokes_that_are_not_strokes_are_refused(job):
    import numpy as np

    np.savez(job / "kept.npz", control_points=np.full((2, 4, 3), np.nan, np.float32))
    assert_bad_job(job, "kept.npz", "NaN or infinite")
    np.savez(job / "kept.npz", other=np.zeros(3))
    assert_bad_job(job, "kept.npz", "control_points")


def test_a_schema_1_job_and_its_single_cubic_result_still_load(job):
    """Job folders made before strokes had segments (schema 1, results [K,4,3]) still load: a single
    cubic is a chain of one segment."""

    (job / "job.json").write_text(json.dumps({"schema": 1, "settings": {"curves": 2, "segments": 1}}))
    assert load_job(job).config.segments == 1
    np.savez(job / "result.npz", control_points=np.zeros((2, 4, 3), np.float32), widths=np.zeros(2, np.float32))
    assert load_result(job / "result.npz")["control_points"].shape == (2, 4, 3)
    np.savez(job / "result.npz", control_points=np.zeros((2, 10, 3), np.float32), widths=np.zeros(2, np.float32))
    assert load_result(job / "result.npz")["control_points"].shape == (2, 10, 3)


@pytest.mark.parametrize("rows", [2, 5, 6])
def test_a_result_whose_strokes_are_not_chains_of_cubics_is_refused(job, rows):

    np.savez(job / "result.npz", control_points=np.zeros((2, rows, 3), np.float32), widths=np.zeros(2, np.float32))
    with pytest.raises(BadJob, match=r"\[K, 3\*S\+1, 3\]"):
        load_result(job / "result.npz")


def test_missing_views_file(job):
    (job / "views.npz").unlink()
    assert_bad_job(job, "views.npz", "missing")


def test_corrupt_views_file(job):
    (job / "views.npz").write_bytes(b"not a zip")
    assert_bad_job(job, "views.npz", "not a readable .npz")


def test_pickled_object_array_is_refused(job):
    data = views(job)
    data["rgba"] = np.array([object()], dtype=object)
    np.savez(job / "views.npz", **data)
    assert_bad_job(job, "views.npz")


@pytest.mark.parametrize("key", ["viewmats", "Ks", "is_train", "rgba"])
def test_missing_array(job, key):
    rewrite(job, **{key: None})
    set_settings(job, targets="freestyle")  # "mesh" would draw a missing 'rgba' from mesh.npz
    assert_bad_job(job, f"missing array '{key}'")


def test_wrong_shape(job):
    rewrite(job, Ks=np.zeros((3, 4, 4), np.float32))
    assert_bad_job(job, "'Ks' has shape [3, 4, 4]")


def test_wrong_dtype(job):
    rewrite(job, rgba=views(job)["rgba"].astype(np.float32))
    assert_bad_job(job, "'rgba' has dtype float32")


def test_nan_values(job):
    vm = views(job)["viewmats"].copy()
    vm[0, 0, 3] = np.nan
    rewrite(job, viewmats=vm)
    assert_bad_job(job, "'viewmats' contains NaN or infinite")


def test_infinite_mesh(job):
    np.savez(job / "mesh.npz", vertices=np.array([[np.inf, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32),
             faces=np.array([[0, 1, 2]], np.int32))
    assert_bad_job(job, "mesh.npz", "NaN or infinite")


def test_zero_views(job):
    rewrite(job, viewmats=np.zeros((0, 4, 4), np.float32))
    assert_bad_job(job, "zero views")


def test_no_training_view(job):
    rewrite(job, is_train=np.zeros(3, bool))
    assert_bad_job(job, "no training view")


@pytest.mark.parametrize("curves", [0, -3, 100000])
def test_curve_count_out_of_range(job, curves):
    set_settings(job, curves=curves)
    assert_bad_job(job, "'curves' must be between 1 and")


def test_absurd_iterations(job):
    set_settings(job, iterations=10**12)
    assert_bad_job(job, "'iterations' must be between")


@pytest.mark.parametrize("seed, best_of", [(2**64, 1), (-1, 1), (2**64 - 1, 2)])
def test_seed_outside_the_generators_range(job, seed, best_of):
    """torch.Generator.manual_seed takes 0..2**64-1 (negatives only alias large seeds); a best-of-N run
    also uses seed+1 .. seed+N-1."""
    set_settings(job, seed=seed, best_of=best_of)
    message = assert_bad_job(job, "'seed' must be between 0 and 18446744073709551615")
    assert str(seed) in message


def test_seed_at_the_top_of_the_range_is_accepted():
    from contract.settings import settings_from_dict

    assert settings_from_dict({"seed": 2**64 - 1}).seed == 2**64 - 1
    assert settings_from_dict({"seed": 2**64 - 3, "best_of": 3}).best_of == 3


def test_wrong_setting_type_and_unknown_setting(job):
    set_settings(job, curves="many")
    assert_bad_job(job, "'curves' must be an integer")
    set_settings(job, curves=4, colour="red")
    assert_bad_job(job, "unknown setting 'colour'")


def test_bad_choice(job):
    set_settings(job, init="spiral")
    assert_bad_job(job, "'init' must be one of")


def test_mismatched_image_sizes(job):
    rewrite(job, lines=np.zeros((3, 8, 8), np.uint8))
    assert_bad_job(job, "'lines' has shape [3, 8, 8]")


def test_lines_loss_without_line_images(job):
    rewrite(job, lines=None)
    set_settings(job, init="random", targets="freestyle")  # "mesh" would draw them from mesh.npz
    assert_bad_job(job, "loss 'lines' needs line images")


def test_faces_out_of_range(job):
    np.savez(job / "mesh.npz", vertices=np.zeros((3, 3), np.float32), faces=np.array([[0, 1, 5]], np.int32))
    assert_bad_job(job, "'faces' indexes vertices that do not exist")


def test_unavailable_device_has_its_own_code(job):
    set_settings(job, device="cuda")
    proc = run_worker(job)
    if "device cpu" in proc.stdout or proc.returncode == 0:
        pytest.skip("this machine has CUDA")
    assert proc.returncode == 4
    assert "'cuda' was requested" in json.loads(proc.stdout.strip().splitlines()[-1])["message"]


def _declare_huge_rgba(folder):
    """views.npz whose 'rgba' header declares a 12 TiB array over a few bytes of data."""
    path = Path(folder) / "views.npz"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (3, 1 << 20, 1 << 20, 4)})
    members["rgba.npy"] = header.getvalue() + bytes(64)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_an_array_declaring_more_than_the_file_holds_is_refused_before_loading(job):
    _declare_huge_rgba(job)
    assert_bad_job(job, "views.npz", "'rgba' declares [3, 1048576, 1048576, 4]", "holds 64 bytes")


def test_arrays_beyond_the_size_limit_are_refused(job, monkeypatch):
    import backend.job

    monkeypatch.setattr(backend.job, "MAX_NPZ_BYTES", 1000)
    with pytest.raises(BadJob, match="views.npz: its arrays hold .* more than the limit of 1000 bytes"):
        load_job(job)


def test_job_json_nested_past_the_parsers_stack_is_malformed_not_a_crash(job):
    (job / "job.json").write_text("[" * 200_000 + "]" * 200_000)
    assert_bad_job(job, "job.json", "malformed JSON (nested too deep)")
