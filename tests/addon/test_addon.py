"""Registration, settings, panels, operators and the worker runner, under the bpy wheel.

Panels cannot get a real ``UILayout`` outside a redraw, so ``draw`` runs against a recording layout
that checks every property and operator it is asked for really exists (typos fail here, not in the
artist's sidebar); the real drawing is looked at in real Blender (docs/images/panel_during_run.png).
"""

import ast
import importlib
import os
import subprocess
import sys
import types

import bpy
import pytest
from conftest import ADDON, BACKEND_PYTHON, enable_addon, scene_state


def _registered_names():
    names = {n for n in dir(bpy.types) if n.startswith("SPLATSKETCH_") or n.startswith("SplatSketch")}
    props = {cls.__name__ + "." + p for cls in (bpy.types.Scene, bpy.types.WindowManager)
             for p in ("splatsketch",) if hasattr(cls, p)}
    return names | props


def test_register_unregister_leaves_nothing(addon):
    assert "SPLATSKETCH_PT_main" in _registered_names()
    assert addon._cli_handles, "the splatsketch CLI command must be registered"
    assert addon.__name__ == ADDON
    bpy.ops.preferences.addon_disable(module=ADDON)
    try:
        assert _registered_names() == set()
        assert addon._cli_handles == []
    finally:
        enable_addon()
    assert "SPLATSKETCH_OT_generate" in _registered_names() and len(addon._cli_handles) == 1


def test_relative_imports_only():
    """Extensions load as bl_ext.<repo>.splatsketch: an absolute import of our own modules would break,
    and the add-on side must never import torch (only the worker process does)."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    ours = {"backend", "contract", "pictures", "scene", "jobs", "operators", "panels", "cli", "properties",
            "preferences", "settings_map", "stop_request", "widgets", "splatsketch"}
    for folder in ("", "contract", "pictures", "jobs", "operators", "panels", "scene"):
        for name in os.listdir(os.path.join(repo, folder)):
            if name.endswith(".py"):
                tree = ast.parse(open(os.path.join(repo, folder, name), encoding="utf-8").read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        roots = {alias.name.split(".")[0] for alias in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        roots = {node.module.split(".")[0]}
                    else:
                        continue
                    assert not roots & (ours | {"torch"}), f"{folder}/{name}:{node.lineno} imports {roots}"


def test_settings_defaults_and_settings_dict(addon):
    props = bpy.context.scene.splatsketch
    assert props.curves == 16 and props.source is None
    prefs = addon.preferences.get_preferences()
    assert prefs is not None and prefs.clip_model == "RN101-quickgelu" and prefs.clip_pretrained == "openai"
    settings = addon.properties.settings_dict(props, prefs)
    config = sys.modules[ADDON + ".contract.settings"].settings_from_dict(settings)
    assert config.curves == 16 and config.uses_clip() and config.clip.model == "RN101-quickgelu"
    assert config.clip.allow_download is False  # bpy.app.online_access is off here

    props.use_clip, props.curves, props.w_lines, props.prompt = False, 5, 2.0, "  a monkey "
    prefs.device, prefs.allow_geometry_fallback = "cpu", True
    try:
        settings = addon.properties.settings_dict(props, prefs)
    finally:
        prefs.device, prefs.allow_geometry_fallback = "auto", False
    # repulsion (weight 0 by default) is no term at all, so it is left out, as --preset leaves it out
    assert set(settings["losses"]) == {"lines", "surface", "turning", "coiling"} and settings["losses"]["lines"] == 2.0
    assert settings["curves"] == 5 and settings["prompt"] == "a monkey" and settings["device"] == "cpu"
    assert settings["clip"]["allow_geometry_fallback"] is True
    assert addon.properties.job_params(props) == {"train_views": 24, "heldout_views": 8, "size": 224}


def test_settings_dict_rejects_all_zero_weights(addon):
    props = bpy.context.scene.splatsketch
    props.use_clip = False
    props.w_lines = props.w_surface = props.w_repulsion = props.w_turning = props.w_coiling = 0.0
    with pytest.raises(sys.modules[ADDON + ".contract.settings"].SettingsError, match="weight"):
        addon.properties.settings_dict(props)


def test_runtime_state_is_not_saved(addon, tmp_path):
    state = bpy.context.window_manager.splatsketch
    state.running, state.status = True, "Iteration 5/10"
    path = str(tmp_path / "saved.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path, copy=True)
    bpy.ops.wm.open_mainfile(filepath=path)
    state = bpy.context.window_manager.splatsketch
    assert state.running is False and state.status == ""


class RecordingLayout:
    """Stands in for ``UILayout`` in tests: records calls, and checks names against real RNA."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        if name in ("row", "column", "box", "split", "column_flow", "grid_flow"):
            return lambda *a, **k: RecordingLayout(self.log)
        return lambda *a, **k: self.log.append((name, a, k))

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)

    def prop(self, data, name, **kwargs):
        if name.startswith('["'):  # an ID property, such as a Geometry Nodes modifier's input
            assert name[2:-2] in data.keys(), f"no ID property {name!r} on {data}"
        else:
            assert name in data.bl_rna.properties, f"no property {name!r} on {data}"
        self.log.append(("prop", name))

    def operator(self, idname, **kwargs):
        module, op = idname.split(".")
        assert hasattr(getattr(bpy.ops, module), op), f"no operator {idname}"
        self.log.append(("operator", idname))
        return types.SimpleNamespace()  # operator properties set by the panel land here


class _Holder:
    """``self`` for a draw method: our recording layout, everything else from the real object."""

    def __init__(self, layout, delegate=None):
        self.layout, self._delegate = layout, delegate

    def __getattr__(self, name):
        return getattr(self._delegate, name)


def _draw(cls, context, delegate=None):
    log = []
    cls.draw(_Holder(RecordingLayout(log), delegate), context)
    return log


def test_panels_poll_and_draw(addon):
    context, state = bpy.context, bpy.context.window_manager.splatsketch
    main, result, advanced = (addon.panels.SPLATSKETCH_PT_main, addon.panels.SPLATSKETCH_PT_result,
                              addon.panels.SPLATSKETCH_PT_advanced)
    assert main.bl_category == "Sketch" and main.bl_space_type == "VIEW_3D" and main.bl_region_type == "UI"
    assert not result.poll(context)  # no run yet
    log = _draw(main, context)
    assert ("operator", "splatsketch.generate") in log and ("prop", "curves") in log
    state.running, state.progress, state.status = True, 0.4, "Iteration 40/100 · loss 0.2 · 10s left"
    log = _draw(main, context)
    assert ("operator", "splatsketch.cancel") in log
    assert any(c[0] in ("progress", "label") and "Iteration 40/100" in str(c) for c in log)
    state.running, state.summary = False, "Suzanne Sketch: 16 curves"
    assert result.poll(context)
    log = _draw(result, context)
    assert ("operator", "splatsketch.select_result") in log and ("operator", "splatsketch.convert_grease_pencil") in log
    log = _draw(advanced, context)
    assert ("prop", "w_clip_geometric") in log and ("prop", "best_of") in log and ("prop", "image_size") in log
    assert ("prop", "hard_views") in log and ("prop", "clip_compile") in log
    prefs = addon.preferences.get_preferences()
    prefs_log = _draw(type(prefs), context, prefs)
    assert ("operator", "splatsketch.check_backend") in prefs_log


def test_evaluation_panel_shows_the_active_sketchs_figures(addon):
    import json

    evaluation = addon.panels.SPLATSKETCH_PT_evaluation
    context = bpy.context
    context.view_layer.objects.active = bpy.data.objects["Cube"]
    assert not evaluation.poll(context)  # a plain mesh: nothing to evaluate
    sketch = _sketch_of_cube(addon)
    context.view_layer.objects.active = sketch
    assert evaluation.poll(context)
    log = _draw(evaluation, context)
    assert ("operator", "splatsketch.evaluate") in log and any("not evaluated yet" in str(c) for c in log)
    sketch["splatsketch_evaluation"] = json.dumps({"f_mean": 0.812, "f_min": 0.7, "precision_mean": 0.9,
                                                   "recall_mean": 0.75, "chamfer_px_mean": 1.25,
                                                   "ink_interior_mean": 0.1})
    sketch["splatsketch_report"] = "/nonexistent/report.png"
    log = _draw(evaluation, context)
    assert any("F 0.81" in str(c) and "worst view 0.70" in str(c) for c in log)
    assert ("operator", "splatsketch.open_report") in log
    gone = pytest.raises(RuntimeError, match="evaluate again")
    with context.temp_override(active_object=sketch, object=sketch), gone:
        bpy.ops.splatsketch.open_report(which="report")  # the file is gone: one clear error, nothing opened


def _sketch_of_cube(addon):
    import numpy as np

    sketch_object = importlib.import_module(ADDON + ".scene.sketch_object")
    cube = bpy.data.objects["Cube"]
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (3, 4, 3)).astype(np.float32)
    obj = sketch_object.create_sketch(cube, points, [0, 0, 0], 1.0, 0.01)
    bpy.context.window_manager.splatsketch.last_result = obj.name
    return obj


def test_select_result_and_convert_to_grease_pencil(addon):
    obj = _sketch_of_cube(addon)
    assert bpy.ops.splatsketch.select_result() == {"FINISHED"}
    assert bpy.context.view_layer.objects.active == obj and obj.select_get()
    before = set(bpy.data.objects)
    assert bpy.ops.splatsketch.convert_grease_pencil() == {"FINISHED"}
    new = [o for o in bpy.data.objects if o not in before]
    assert len(new) == 1 and new[0].type in ("GPENCIL", "GREASEPENCIL") and new[0].name == f"{obj.name} GP"
    assert obj.name in bpy.data.objects and obj.type == "CURVE"  # the curves stay editable


def test_generate_without_object_reports_and_changes_nothing(addon):
    bpy.context.view_layer.objects.active = None
    before = scene_state()
    with pytest.raises(RuntimeError, match="no object"):
        bpy.ops.splatsketch.generate()
    assert scene_state() == before
    assert "no object" in bpy.context.window_manager.splatsketch.last_error


def test_generate_refuses_non_mesh(addon):
    bpy.context.view_layer.objects.active = bpy.data.objects["Camera"]
    before = scene_state()
    with pytest.raises(RuntimeError, match="not a mesh"):
        bpy.ops.splatsketch.generate()
    assert scene_state() == before and not bpy.context.window_manager.splatsketch.running


def test_check_backend_operator(addon, backend_python):
    prefs = addon.preferences.get_preferences()
    prefs.backend_python = backend_python
    try:
        assert bpy.ops.splatsketch.check_backend() == {"FINISHED"}
    finally:
        prefs.backend_python = ""
    report = bpy.context.window_manager.splatsketch.backend_report
    assert "torch" in report and ("CUDA" in report or "CPU" in report)


def test_default_backend_python_is_the_checkout_venv(addon):
    prefs = addon.preferences.get_preferences()
    resolved = prefs.resolved_python()
    assert os.path.samefile(resolved, BACKEND_PYTHON) if os.path.exists(BACKEND_PYTHON) else resolved


# -- the worker runner (jobs/, no bpy) --------------------------------------------------------

def test_probe_backend_messages(addon, tmp_path):
    jobs = addon.jobs
    missing = jobs.probe_backend(str(tmp_path / "nope" / "python"))
    assert isinstance(missing, str) and "does not exist" in missing and "Preferences" in missing
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    no_torch = jobs.probe_backend(str(venv / "bin" / "python"))
    assert isinstance(no_torch, str) and "has no torch" in no_torch and "Set Up Backend" in no_torch


def test_message_for_exit(addon):
    message = addon.jobs.message_for_exit
    assert message(0) == "" and message(130) == "cancelled"
    assert "bad view" in message(2, {"message": "bad view"}) and "rejected" in message(2, {"message": "bad view"})
    assert "weights" in message(3, {"message": "CLIP weights missing: put RN101.pt in /cache"})
    assert "geometry-only" in message(3, None)
    assert "device" in message(4, None) and "Preferences" in message(4, None)
    assert "internal error" in message(1, {"message": "boom"}, "/tmp/w.log")
    assert "/tmp/w.log" in message(1, None, "/tmp/w.log")
    assert "SIGKILL" in message(-9) and "SIGSEGV" in message(-11) and "code 77" in message(77)


def test_worker_stream_and_crash(addon, tmp_path):
    """A stand-in worker (plain python) exercises the pipe, the queue and exit codes without torch."""
    pkg = tmp_path / "backend"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import json, sys\n"
        "print(json.dumps({'type': 'progress', 'iteration': 1, 'iterations': 4, 'loss': 0.5, 'eta_s': 3}))\n"
        "print('stray text')\n"
        "print(json.dumps({'type': 'error', 'message': 'job.json: bad', 'code': 2}))\n"
        "sys.stderr.write('traceback here\\n')\n"
        "sys.exit(2)\n")
    worker = addon.jobs.Worker()
    worker.start(sys.executable, ["run", str(tmp_path)], str(tmp_path / "logs" / "w.log"), cwd=str(tmp_path))
    assert worker.wait(30) == 2
    events = worker.poll()
    assert [e["type"] for e in events] == ["progress", "warning", "error"]
    assert "stray text" in events[1]["message"] and worker.finished and worker.exit_code == 2
    assert "job.json: bad" in addon.jobs.message_for_exit(2, worker.last_error)
    assert "traceback here" in (tmp_path / "logs" / "w.log").read_text()
    factor, text = addon.jobs.progress_of(events[0])
    assert factor == 0.25 and "Iteration 1/4" in text and "0.5" in text and "3s left" in text


def test_cancel_operator_only_while_running(addon):
    state = bpy.context.window_manager.splatsketch
    assert not bpy.ops.splatsketch.cancel.poll() and bpy.ops.splatsketch.generate.poll()
    state.running = True
    try:
        assert bpy.ops.splatsketch.cancel() == {"FINISHED"} and state.cancel_requested
        assert not bpy.ops.splatsketch.generate.poll(), "one run at a time"
    finally:
        state.running = state.cancel_requested = False


def test_generate_with_missing_backend_python_changes_nothing(addon, tmp_path):
    prefs = addon.preferences.get_preferences()
    prefs.backend_python = str(tmp_path / "no-python")
    before = scene_state()
    try:
        with pytest.raises(RuntimeError, match="does not exist"):
            bpy.ops.splatsketch.generate()
    finally:
        prefs.backend_python = ""
    state = bpy.context.window_manager.splatsketch
    assert scene_state() == before and not state.running and "does not exist" in state.last_error


def test_grease_pencil_builder_where_convert_cannot(addon):
    """Blender 4.3 'converts' curves to no Grease Pencil at all; the add-on builds GPv3 itself there."""
    tools = importlib.import_module(ADDON + ".operators.tools")
    if tools.grease_pencil_data() is None:
        pytest.skip("Blender 4.2: Grease Pencil v2, converted by Blender's own operator")
    obj = _sketch_of_cube(addon)
    gp = tools.grease_pencil_from_curves(obj)
    drawing = gp.data.layers[0].frames[0].drawing
    assert gp.type == "GREASEPENCIL" and len(drawing.strokes) == 3
    first = obj.data.splines[0].bezier_points[0].co
    assert tuple(drawing.strokes[0].points[0].position) == pytest.approx(tuple(first), abs=1e-6)
    assert gp.users_collection[0] == obj.users_collection[0]


def test_presets_set_the_panel_settings(addon):
    props = bpy.context.scene.splatsketch
    assert bpy.ops.splatsketch.apply_preset(preset="final") == {"FINISHED"}
    assert props.iterations == 2000 and props.views_per_step == 8 and props.use_clip
    assert bpy.ops.splatsketch.apply_preset(preset="preview") == {"FINISHED"}
    assert props.iterations == 300 and not props.use_clip and props.w_lines > 0
