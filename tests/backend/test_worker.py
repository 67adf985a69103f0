"""The worker as a real subprocess: events on stdout only, results, cancellation, CLIP weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from synthetic import write_job

ROOT = Path(__file__).resolve().parents[2]


def start(job_dir, *extra, stdin=subprocess.DEVNULL):
    return subprocess.Popen([sys.executable, "-m", "backend", "run", str(job_dir), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin, text=True)


def events_of(stdout: str):
    return [json.loads(line) for line in stdout.splitlines()]  # every line must be JSON


def wait_for_progress(proc):
    for line in proc.stdout:
        if json.loads(line)["type"] == "progress":
            return


def test_run_streams_typed_events_and_writes_results(tmp_path):
    job = write_job(tmp_path / "job", settings={"iterations": 4})
    proc = start(job)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    events = events_of(out)
    types = [e["type"] for e in events]
    assert types[0] == "info" and "renderer" in events[0]["message"]
    assert types[-1] == "done" and "progress" in types and "snapshot" in types
    assert set(types) <= {"info", "progress", "snapshot", "warning", "done"}
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["iteration"] == 4 and progress[-1]["eta_s"] == 0
    assert set(progress[0]["losses"]) == {"lines", "surface"}
    with np.load(job / "result.npz", allow_pickle=False) as result:
        cp = result["control_points"]
        assert cp.dtype == np.float32 and cp.shape[1:] == (4, 3) and 1 <= cp.shape[0] <= 4
        assert result["widths"].shape == (cp.shape[0],)
        assert result["view_losses"].shape == (12,) and np.isfinite(result["view_losses"]).all()
        assert result["loss_history"].shape == (4,)
    summary = json.loads((job / "result.json").read_text())
    assert summary["iterations"] == 4 and summary["cancelled"] is False and summary["renderer"] == "torch"
    assert not [p for p in os.listdir(job) if p.endswith(".tmp")]


def test_same_seed_same_curves_on_cpu(tmp_path):
    results = []
    for name in ("a", "b"):
        job = write_job(tmp_path / name, settings={"iterations": 3, "seed": 7})
        assert start(job).wait(timeout=300) == 0
        with np.load(job / "result.npz") as r:
            results.append(r["control_points"])
    np.testing.assert_array_equal(results[0], results[1])


def test_sigint_finishes_the_step_writes_partial_result_and_exits_130(tmp_path):
    job = write_job(tmp_path / "job", settings={"iterations": 100000, "progress_every": 1})
    proc = start(job)
    wait_for_progress(proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    done = events_of(out)[-1]
    assert done["type"] == "done" and done["cancelled"] is True
    assert "Traceback" not in err
    with np.load(job / "result.npz") as r:
        assert r["control_points"].shape[1:] == (4, 3)
    assert "signal SIGINT" in json.loads((job / "result.json").read_text())["cancel_reason"]


def test_closing_stdin_cancels(tmp_path):
    job = write_job(tmp_path / "job", settings={"iterations": 100000})
    proc = start(job, stdin=subprocess.PIPE)
    wait_for_progress(proc)
    proc.stdin.close()
    proc.stdin = None
    proc.communicate(timeout=120)
    assert proc.returncode == 130


def test_worker_exits_when_its_parent_dies(tmp_path):
    job = write_job(tmp_path / "job", settings={"iterations": 100000})
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    proc = start(job, "--parent-pid", str(parent.pid))
    wait_for_progress(proc)
    parent.kill()
    parent.wait()
    t0 = time.monotonic()
    proc.communicate(timeout=120)
    assert proc.returncode == 130 and time.monotonic() - t0 < 60
    assert "parent process" in json.loads((job / "result.json").read_text())["cancel_reason"]


def test_stray_prints_never_reach_the_event_stream(tmp_path):
    """A library printing to stdout (fd 1) mid-run must end up on stderr."""
    code = (
        "import sys, os, runpy\n"
        "import backend.optimize as o\n"
        "orig = o._total\n"
        "def noisy(*a, **k):\n"
        "    print('stray print'); os.write(1, b'raw write\\n'); return orig(*a, **k)\n"
        "o._total = noisy\n"
        f"sys.argv = ['backend', 'run', {str(tmp_path / 'job')!r}]\n"
        "runpy.run_module('backend', run_name='__main__')\n"
    )
    job = write_job(tmp_path / "job", settings={"iterations": 2})
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events_of(proc.stdout)  # all JSON
    assert "stray print" in proc.stderr and "raw write" in proc.stderr
    assert job.is_dir()


def test_missing_clip_weights_is_a_clear_error_with_its_own_code(tmp_path):
    job = write_job(tmp_path / "job", settings={
        "iterations": 2, "losses": {"clip_geometric": 1.0, "lines": 1.0},
        "clip": {"model": "RN101-quickgelu", "pretrained": "openai", "cache_dir": str(tmp_path / "empty")}})
    proc = start(job)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, out + err
    event = events_of(out)[-1]
    assert event["type"] == "error" and event["code"] == 3
    assert "RN101" in event["message"] and "Traceback" not in err
    assert not (job / "result.npz").exists()


def test_missing_clip_weights_fall_back_to_geometry_when_allowed(tmp_path):
    job = write_job(tmp_path / "job", settings={
        "iterations": 2, "losses": {"clip_geometric": 1.0, "clip_semantic": 0.1, "lines": 1.0, "surface": 0.1},
        "clip": {"model": "RN101-quickgelu", "pretrained": "openai", "cache_dir": str(tmp_path / "empty"),
                 "allow_geometry_fallback": True}})
    proc = start(job)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    warnings = [e for e in events_of(out) if e["type"] == "warning"]
    assert warnings and "CLIP WEIGHTS MISSING" in warnings[0]["message"]
    assert json.loads((job / "result.json").read_text())["objective"] == {"lines": 1.0, "surface": 0.1}


def test_a_reader_that_goes_away_cancels_cleanly(tmp_path):
    """Blender dying closes the event pipe: the worker stops as if cancelled, without a traceback."""
    job = write_job(tmp_path / "job", settings={"iterations": 100000, "progress_every": 1})
    proc = start(job)
    wait_for_progress(proc)
    proc.stdout.close()
    proc.stdout = None
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
