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

from contract.settings import OptimizeConfig

ROOT = Path(__file__).resolve().parents[2]
ROWS = 3 * OptimizeConfig().segments + 1  # control points per stroke at the default segment count


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
        assert cp.dtype == np.float32 and cp.shape[1:] == (ROWS, 3) and 1 <= cp.shape[0] <= 4
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
        assert r["control_points"].shape[1:] == (ROWS, 3)
    assert "signal SIGINT" in json.loads((job / "result.json").read_text())["cancel_reason"]


def test_closing_a_watched_stdin_cancels(tmp_path):
    """--watch-stdin (what the add-on passes): closing the pipe is how Blender says "stop"."""
    job = write_job(tmp_path / "job", settings={"iterations": 100000})
    proc = start(job, "--watch-stdin", stdin=subprocess.PIPE)
    wait_for_progress(proc)
    proc.stdin.close()
    proc.stdin = None
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert json.loads((job / "result.json").read_text())["cancel_reason"] == "stdin closed"


def test_run_leaves_its_callers_stdin_alone(tmp_path):
    """Without --watch-stdin the worker never reads stdin: in ``while read job; do python -m backend run
    "$job"; done < list`` a worker reading stdin would swallow the rest of the list and cancel at iteration 0."""
    job = write_job(tmp_path / "job", settings={"iterations": 3})
    read_end, write_end = os.pipe()
    os.write(write_end, b"job-2\njob-3\n")
    os.close(write_end)  # a pipe holding data, then EOF
    try:
        proc = start(job, stdin=read_end)
        out, err = proc.communicate(timeout=300)
        left = os.read(read_end, 1024)
    finally:
        os.close(read_end)
    assert proc.returncode == 0, err
    assert left == b"job-2\njob-3\n", "the worker read its caller's stdin"
    assert json.loads((job / "result.json").read_text())["iterations"] == 3
    assert events_of(out)[-1]["cancelled"] is False


def test_a_shell_loop_over_jobs_runs_every_job(tmp_path):
    jobs = [write_job(tmp_path / name, settings={"iterations": 2}) for name in ("a", "b")]
    script = 'while read -r job; do "$0" -m backend run "$job" > /dev/null 2>&1; echo "$job $?"; done'
    proc = subprocess.run(["bash", "-c", script, sys.executable], input="".join(f"{j}\n" for j in jobs),
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.stdout.splitlines() == [f"{j} 0" for j in jobs], proc.stdout + proc.stderr


def test_sigterm_stops_like_a_cancel_and_exits_143(tmp_path):
    """``timeout`` or a scheduler: the partial result is written, ``done`` says cancelled, exit 143."""
    job = write_job(tmp_path / "job", settings={"iterations": 100000, "progress_every": 1})
    proc = start(job)
    wait_for_progress(proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    done = events_of(out)[-1]
    assert done["type"] == "done" and done["cancelled"] is True
    assert "Traceback" not in err and "SIGTERM" in err  # one line in the log says why it stopped
    with np.load(job / "result.npz") as r:
        assert r["control_points"].shape[1:] == (ROWS, 3)
    summary = json.loads((job / "result.json").read_text())
    assert summary["cancelled"] is True and summary["cancel_reason"] == "signal SIGTERM"


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
        "orig = o.total_loss\n"
        "def noisy(*a, **k):\n"
        "    print('stray print'); os.write(1, b'raw write\\n'); return orig(*a, **k)\n"
        "o.total_loss = noisy\n"
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
    assert warnings and warnings[0]["clip_missing"] is True and "CLIP WEIGHTS MISSING" in warnings[0]["message"]
    assert json.loads((job / "result.json").read_text())["objective"] == {"lines": 1.0, "surface": 0.1}


def test_a_clip_job_says_how_its_clip_passes_run(tmp_path, tiny_clip_config):
    job = write_job(tmp_path / "job", settings={
        "iterations": 3, "views_per_step": 2, "losses": {"clip_geometric": 1.0, "clip_semantic": 0.1, "lines": 1.0},
        "clip": {"model": "tiny-rn", "model_config": str(tiny_clip_config), "pretrained": ""}})
    proc = start(job)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    infos = [e["message"] for e in events_of(out) if e["type"] == "info"]
    assert "CLIP: 4 augmentations per view from a bank of 8 encoded once (1 re-drawn per step); " \
           "1 view(s) per pass with its backward; not compiled (run shorter than 1000 steps)" in infos, infos
    assert json.loads((job / "result.json").read_text())["iterations"] == 3


def test_a_reader_that_goes_away_cancels_cleanly(tmp_path):
    """Blender dying closes the event pipe: the worker stops as if cancelled, without a traceback."""
    job = write_job(tmp_path / "job", settings={"iterations": 100000, "progress_every": 1})
    proc = start(job)
    wait_for_progress(proc)
    proc.stdout.close()
    proc.stdout = None
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err


def test_zero_iterations_run_the_initialisation_only_and_report_zero(tmp_path):
    job = write_job(tmp_path / "job", settings={"iterations": 0})
    proc = start(job)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    events = events_of(out)
    assert events[-1]["type"] == "done" and events[-1]["iterations"] == 0 and events[-1]["loss"] is None
    assert not [e for e in events if e["type"] == "progress"]
    assert json.loads((job / "result.json").read_text())["iterations"] == 0
    with np.load(job / "result.npz") as r:
        assert r["loss_history"].shape == (0,) and r["control_points"].shape == (4, ROWS, 3)


def stream_of(code: str):
    """Run ``code`` with ``events = EventStream()`` in a fresh interpreter; its stdout, stderr, exit code."""
    prelude = "from backend.worker import EventStream\nevents = EventStream()\n"
    proc = subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    return proc.stdout, proc.stderr, proc.returncode


def test_event_stream_refuses_unknown_types_and_anything_after_a_final_event():
    code = (
        "def refused(event):\n"
        "    try:\n"
        "        events.emit(event)\n"
        "    except ValueError as exc:\n"
        "        print('refused:', exc, flush=True)\n"
        "    else:\n"
        "        raise SystemExit('accepted ' + repr(event))\n"
        "refused({'type': 'progres'})\n"
        "refused({'message': 'no type'})\n"
        "events.emit({'type': 'info', 'message': 'a'})\n"
        "events.emit({'type': 'done', 'result': 'result.npz'})\n"
        "refused({'type': 'info', 'message': 'late'})\n"
        "refused({'type': 'error', 'message': 'late', 'code': 1})\n"
    )
    out, err, code = stream_of(code)
    assert code == 0, err
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["info", "done"]
    assert err.count("refused:") == 4 and "progres" in err and "after" in err
