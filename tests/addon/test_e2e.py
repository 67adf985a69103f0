"""End to end through a real worker subprocess (``python -m backend run``) on Suzanne, tiny settings.

The worker always runs with the checkout's .venv Python (torch), also when these tests run under
the bpy 4.2 wheel. Covers: the CLI writing a .blend whose curves are exactly the worker's control
points in world space; a batch that skips a bad asset; a worker killed mid-run; Cancel mid-run; the
Generate operator's blocking path. The modal path is the same ``Run.step`` driven by a timer.
"""

import importlib
import json
import os
import signal
import time
import types

import bpy
import numpy as np
import pytest
from conftest import ADDON, scene_state

TINY = ["--no-clip", "--curves", "4", "--iterations", "6", "--views", "4", "--image-size", "64",
        "--views-per-step", "2"]


@pytest.fixture
def tiny(addon, backend_python, suzanne):
    """Suzanne plus panel settings small enough for a 2-core CPU (the CLI's defaults come from them)."""
    props = bpy.context.scene.splatsketch
    props.heldout_views, props.use_clip = 2, False
    props.train_views, props.image_size, props.views_per_step, props.curves = 4, 64, 2, 4
    prefs = addon.preferences.get_preferences()
    prefs.backend_python = backend_python
    yield suzanne
    prefs.backend_python = ""


def spline_points(obj) -> np.ndarray:
    """``[K,3S+1,3]`` world-space control points read straight from the Bézier splines (independently
    of scene/sketch_object.py): point j's co, its handle_right, point j+1's handle_left, ...; interior
    points ALIGNED, the ends FREE."""
    out = []
    for spline in obj.data.splines:
        bps = spline.bezier_points
        assert spline.type == "BEZIER" and len(bps) >= 2
        assert bps[0].handle_right_type == "FREE" and bps[-1].handle_left_type == "FREE"
        assert all(p.handle_left_type == p.handle_right_type == "ALIGNED" for p in list(bps)[1:-1])
        rows = [bps[0].co]
        for a, b in zip(list(bps)[:-1], list(bps)[1:]):
            rows += [a.handle_right, b.handle_left, b.co]
        out.append(rows)
    points = np.array(out, dtype=np.float64)
    matrix = np.array(obj.matrix_world)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def test_cli_on_suzanne_end_to_end(addon, tiny, backend_python, tmp_path, capsys):
    user_blend = tmp_path / "user.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(user_blend))
    user_bytes = user_blend.read_bytes()
    source_vertices = np.array([v.co[:] for v in tiny.data.vertices])
    source_matrix = np.array(tiny.matrix_world)
    out, jobs = tmp_path / "out" / "result.blend", tmp_path / "jobs"
    code = addon.cli.main(["--object", "Suzanne", *TINY, "--python", backend_python, "--output", str(out),
                           "--preview", str(tmp_path / "sheet.png"), "--json", str(tmp_path / "m.json"),
                           "--job-dir", str(jobs)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "Iteration" in printed.out and "done: Suzanne Sketch" in printed.out
    assert user_blend.read_bytes() == user_bytes and bpy.data.filepath == str(user_blend)
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["assets"][0]["status"] == "ok" and report["settings"]["curves"] == 4
    phases = report["assets"][0]["phases"]  # where the wall time went, all of it
    assert list(phases) == ["start", "targets", "features", "optimisation", "write_back"]
    assert phases["targets"] > 0 and phases["optimisation"] > 0 and phases["start"] > 0
    assert sum(phases.values()) >= report["assets"][0]["seconds"] - 0.1

    with np.load(jobs / "Suzanne" / "result.npz", allow_pickle=False) as data:
        control_points = data["control_points"].astype(np.float64)
    source = json.loads((jobs / "Suzanne" / "job.json").read_text())["source"]
    expected = np.asarray(source["center"]) + source["radius"] * control_points

    bpy.ops.wm.open_mainfile(filepath=str(out))
    result = bpy.data.objects["Suzanne Sketch"]
    assert result.type == "CURVE" and len(result.data.splines) == len(control_points) > 0
    got = spline_points(result)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5
    assert json.loads(result["splatsketch_settings"])["curves"] == 4
    assert result.users_collection[0].name == "SplatSketch"
    source_after = bpy.data.objects["Suzanne"]
    np.testing.assert_array_equal(np.array([v.co[:] for v in source_after.data.vertices]), source_vertices)
    np.testing.assert_array_equal(np.array(source_after.matrix_world), source_matrix)
    assert not source_after.modifiers and source_after.data.name == "Suzanne"


def test_cli_batch_reports_and_skips_a_bad_asset(addon, tiny, backend_python, tmp_path, capsys):
    out_dir = tmp_path / "batch"
    code = addon.cli.main(["--objects", "Nope,Suzanne", *TINY, "--python", backend_python,
                           "--output", f"{out_dir}/"])
    printed = capsys.readouterr()
    assert code == 1 and "object 'Nope' does not exist" in printed.err and "Traceback" not in printed.err
    assert "Suzanne Sketch" in bpy.data.objects and (out_dir / "splatsketch_sketch.blend").is_file()


def _start(addon, obj, **settings_overrides):
    run_module = importlib.import_module(ADDON + ".jobs.runner")
    generate = importlib.import_module(ADDON + ".operators.generate")
    driver = importlib.import_module(ADDON + ".operators.driver")
    bpy.context.scene.splatsketch.iterations = 5000  # long enough to be interrupted
    run = generate.prepare_run(bpy.context, obj, live_preview=True)
    run.settings.update(snapshot_every=1, **settings_overrides)
    run.params.update(train_views=4, heldout_views=2, size=64)
    run.start()
    deadline = time.monotonic() + 180
    while not run.preview_name and run.step() == run_module.RUNNING:  # the modal timer's step, in a loop
        assert time.monotonic() < deadline, "no snapshot within 180 s"
        time.sleep(0.1)
    assert run.preview_name in bpy.data.objects, "the live preview must exist while the worker runs"
    state = bpy.context.window_manager.splatsketch
    driver.sync_state(state, run)
    return run, run_module


def _finish(run, run_module):
    deadline = time.monotonic() + 60
    while run.step() == run_module.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return run.state


def test_worker_killed_mid_run_leaves_the_scene_as_it_was(addon, tiny):
    before = scene_state()
    run, run_module = _start(addon, tiny)
    assert scene_state() != before  # the preview is there
    os.kill(run.worker.process.pid, signal.SIGKILL)
    assert _finish(run, run_module) == run_module.FAILED
    assert "killed by SIGKILL" in run.message and run.worker.log_path in run.message
    assert scene_state() == before
    assert not os.path.exists(run.job_dir), "the job folder of a failed run is not kept by default"


def test_cancel_mid_run_stops_the_worker_gracefully(addon, tiny):
    before = scene_state()
    run, run_module = _start(addon, tiny)
    run.cancel()
    assert _finish(run, run_module) == run_module.CANCELLED
    assert run.worker.exit_code == 130, "SIGINT lets the worker finish its step and exit 130, not be killed"
    assert scene_state() == before


def test_generate_operator_blocking_path(addon, tiny):
    props = bpy.context.scene.splatsketch
    props.curves, props.iterations = 3, 4
    assert bpy.ops.splatsketch.generate() == {"FINISHED"}  # not invoked: blocking, as under blender -b
    state = bpy.context.window_manager.splatsketch
    result = bpy.data.objects[state.last_result]
    assert result.name == "Suzanne Sketch" and len(result.data.splines) == 3 and not state.running
    assert "3 curves" in state.summary and state.progress == 1.0 and state.last_error == ""
    assert json.loads(result["splatsketch_metrics"])["iterations"] == 4


def test_missing_clip_weights_fall_back_and_mark_the_panel(addon, tiny, tmp_path):
    """The worker's warning carries ``clip_missing``: the panel's CLIP state follows the field."""
    props, prefs = bpy.context.scene.splatsketch, addon.preferences.get_preferences()
    state = bpy.context.window_manager.splatsketch
    props.curves, props.iterations, props.use_clip = 3, 2, True
    prefs.cache_dir, prefs.allow_geometry_fallback, state.clip_status = str(tmp_path / "empty"), True, ""
    try:
        assert bpy.ops.splatsketch.generate() == {"FINISHED"}
    finally:
        prefs.cache_dir, prefs.allow_geometry_fallback, props.use_clip = "", False, False
    assert state.clip_status == "missing" and state.last_error == ""


class ModalHarness:
    """Drives the operator's own invoke-side setup and ``modal`` with timer/key events.

    Under ``blender -b`` (and the wheel) Blender calls ``execute`` even for INVOKE_DEFAULT and no
    timer fires, so the operator's methods run on this stand-in ``self``; events are stand-ins too
    (Python cannot create ``bpy.types.Event``). Everything else (worker, scene, undo) is real.
    """

    def __init__(self, generate):
        cls = generate.SPLATSKETCH_OT_generate
        for name in ("modal", "_modal", "_begin", "_end", "_conclude", "_remove_timer"):
            setattr(self, name, getattr(cls, name).__get__(self))
        self.new_seed, self._timer, self._started, self.reports = False, None, False, []

    def report(self, kind, message):
        self.reports.append((set(kind), message))

    def tick(self, context, event_type="TIMER", **keys):
        event = types.SimpleNamespace(**{"type": event_type, "value": "PRESS", "ctrl": False, "oskey": False, **keys})
        return self.modal(context, event)


def _modal_start(addon):
    generate = importlib.import_module(ADDON + ".operators.generate")
    op = ModalHarness(generate)
    op._run = op._begin(bpy.context, live_preview=True)  # what invoke() does before adding the timer
    assert op._run is not None and bpy.context.window_manager.splatsketch.running
    return op


def test_modal_steps_to_a_result(addon, tiny):
    props = bpy.context.scene.splatsketch
    props.curves, props.iterations = 3, 12
    op, state, seen = _modal_start(addon), bpy.context.window_manager.splatsketch, set()
    assert op.tick(bpy.context, "MOUSEMOVE") == {"PASS_THROUGH"}  # the UI keeps working meanwhile
    assert op.tick(bpy.context, "Z") == {"PASS_THROUGH"}  # plain Z (no Ctrl) is not undo
    deadline, result = time.monotonic() + 180, {"RUNNING_MODAL"}
    while result == {"RUNNING_MODAL"}:
        assert time.monotonic() < deadline
        result = op.tick(bpy.context)
        seen.add(state.status.split(" · ")[0])
        if op._run.preview_name:
            seen.add("preview")
        time.sleep(0.05)
    assert result == {"FINISHED"} and not state.running and state.progress == 1.0
    assert "preview" in seen and any(s.startswith("Iteration") for s in seen)
    assert bpy.data.objects[state.last_result].name == "Suzanne Sketch"
    assert [o.name for o in bpy.data.objects if o.name.startswith("Suzanne Sketch")] == ["Suzanne Sketch"]


def test_modal_escape_cancels_and_restores_the_scene(addon, tiny):
    before = scene_state()
    bpy.context.scene.splatsketch.iterations = 5000
    op, state = _modal_start(addon), bpy.context.window_manager.splatsketch
    deadline = time.monotonic() + 180
    while not op._run.preview_name:
        assert op.tick(bpy.context) == {"RUNNING_MODAL"} and time.monotonic() < deadline
        time.sleep(0.05)
    undo = op.tick(bpy.context, "Z", ctrl=True)
    assert undo == {"RUNNING_MODAL"} and "Undo is unavailable" in op.reports[-1][1]
    assert op.tick(bpy.context, "ESC") == {"RUNNING_MODAL"}
    result = {"RUNNING_MODAL"}
    while result == {"RUNNING_MODAL"}:
        assert time.monotonic() < deadline + 60
        result = op.tick(bpy.context)
        time.sleep(0.05)
    assert result == {"CANCELLED"} and not state.running and state.last_error == ""
    assert op._run.worker.exit_code == 130 and scene_state() == before


def test_target_views_render_one_per_step_and_cancel_cleanly(addon, tiny):
    """The modal path renders one view per timer tick (Blender stays responsive); what the user makes
    between two ticks is theirs and stays; cancelling mid-way leaves no job folder and no render data."""
    generate = importlib.import_module(ADDON + ".operators.generate")
    obj = bpy.data.objects["Suzanne"]
    before = scene_state()
    run = generate.prepare_run(bpy.context, obj, live_preview=True)
    run.params.update(train_views=4, heldout_views=2, size=32)
    run.begin()
    statuses = []
    for _ in range(3):
        run.advance()
        statuses.append(run.status)
        assert run.preparing
    assert statuses == ["Rendering view 1/6", "Rendering view 2/6", "Rendering view 3/6"]
    bpy.ops.mesh.primitive_cube_add()  # the user keeps working between two ticks
    users_cube = bpy.context.active_object.name
    job_dir = run.job_dir
    run.cancel()
    assert not run.preparing and run.state == "CANCELLED" and not os.path.exists(job_dir)
    after = scene_state()
    assert users_cube in after["objects"]
    after["objects"].remove(users_cube)
    after["meshes"].remove(bpy.data.objects[users_cube].data.name)
    assert after == before


def test_cli_evaluate_and_report(addon, tiny, backend_python, tmp_path, capsys):
    """--report: the sketch is scored on the 24 held-out views, the figures go on the object and into
    --json, and the contact sheet + turntable land where asked."""
    report = tmp_path / "pictures" / "suzanne.png"
    code = addon.cli.main(["--object", "Suzanne", *TINY, "--python", backend_python, "--report", str(report),
                           "--json", str(tmp_path / "m.json")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    asset = json.loads((tmp_path / "m.json").read_text())["assets"][0]
    figures = asset["evaluation"]
    assert 0.0 <= figures["f_mean"] <= 1.0 and figures["f_min"] <= figures["f_mean"]
    assert len(figures["per_view_f"]) == 24 and figures["image_size"] == [256, 256]
    assert 0 <= figures["looping_strokes"] <= figures["curves"] and figures["turning_mean"] >= 0
    assert "held-out F" in printed.out
    sketch = bpy.data.objects["Suzanne Sketch"]
    assert json.loads(sketch["splatsketch_evaluation"])["f_mean"] == figures["f_mean"]
    assert sketch["splatsketch_report"] == str(report) and report.stat().st_size > 10_000
    assert report.with_suffix(".gif").is_file()


def test_evaluate_operator_and_cancel(addon, tiny):
    """The panel's Evaluate (blocking path) stores the figures and the report's paths on the sketch;
    an evaluation cancelled while its views render leaves no folder and changes nothing."""
    evaluation = importlib.import_module(ADDON + ".jobs.evaluation_run")
    bpy.context.scene.splatsketch.iterations = 4
    assert bpy.ops.splatsketch.generate() == {"FINISHED"}
    sketch = bpy.data.objects["Suzanne Sketch"]
    bpy.context.view_layer.objects.active = sketch
    before = scene_state()
    run = evaluation.EvaluationRun(sketch, addon.preferences.get_preferences().resolved_python(),
                                   user_dir=addon.preferences.user_dir())
    run.begin()
    run.advance()
    run.advance()
    assert run.status == "Rendering view 2/48" and os.path.isdir(run.folder)
    run.cancel()
    assert run.state == "CANCELLED" and not os.path.exists(run.folder)
    assert "splatsketch_evaluation" not in sketch and scene_state() == before

    assert bpy.ops.splatsketch.evaluate() == {"FINISHED"}
    figures = json.loads(sketch["splatsketch_evaluation"])
    assert 0.0 <= figures["f_mean"] <= 1.0 and len(figures["per_view_f"]) == 24
    assert os.path.isfile(sketch["splatsketch_report"]) and os.path.isfile(sketch["splatsketch_turntable"])
    assert not bpy.context.window_manager.splatsketch.running and scene_state() == before
