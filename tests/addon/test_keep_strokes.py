"""Keep my strokes: Regenerate Others and Add Strokes (operators and ``--keep-strokes``), with the
real backend on tiny settings. Kept strokes stay bit for bit; nothing changes when a request is wrong
or a run fails."""

import importlib
import json

import bpy
import numpy as np
import pytest
from conftest import ADDON, scene_state
from test_e2e import TINY, spline_points, tiny  # noqa: F401 - the fixture


def _bits(obj, indices) -> list:
    """Every number of the splines ``indices`` as stored (co, handles, their types, radius, tilt)."""
    out = []
    for i in indices:
        for p in obj.data.splines[i].bezier_points:
            out.append((tuple(p.co), tuple(p.handle_left), tuple(p.handle_right), p.handle_left_type,
                        p.handle_right_type, p.radius, p.tilt))
    return out


def _sketch(props, curves=4):
    props.curves, props.iterations = curves, 4
    assert bpy.ops.splatsketch.generate() == {"FINISHED"}
    return bpy.data.objects[bpy.context.window_manager.splatsketch.last_result]


def test_regenerate_others_keeps_the_selected_bit_for_bit(addon, tiny):  # noqa: F811
    props = bpy.context.scene.splatsketch
    sketch = _sketch(props)
    kept_before, others_before = _bits(sketch, [0, 2]), spline_points(sketch)[[1, 3]]
    for i, spline in enumerate(sketch.data.splines):
        for p in spline.bezier_points:
            p.select_control_point = i in (0, 2)
    bpy.context.view_layer.objects.active = sketch
    assert bpy.ops.splatsketch.regenerate_strokes() == {"FINISHED"}
    assert len(sketch.data.splines) == 4 and _bits(sketch, [0, 1]) == kept_before  # kept first, untouched
    assert not np.allclose(spline_points(sketch)[2:], others_before)  # the others were made again
    metrics = json.loads(sketch["splatsketch_metrics"])
    assert metrics["kept_strokes"] == 2 and metrics["curves"] == 2 and len(metrics["first_strokes_f"]) == 2
    assert sketch.splatsketch_strokes_shown == 4
    # Add Strokes: every stroke stays, N more
    before = _bits(sketch, range(4))
    assert bpy.ops.splatsketch.add_strokes(count=2) == {"FINISHED"}
    assert len(sketch.data.splines) == 6 and _bits(sketch, range(4)) == before


def test_hand_drawn_strokes_are_kept_and_the_rest_found(addon, tiny):  # noqa: F811
    """An artist's own spline (drawn, not optimised) counts as a kept stroke."""
    props = bpy.context.scene.splatsketch
    sketch = _sketch(props, curves=2)
    spline = sketch.data.splines.new("BEZIER")
    spline.bezier_points.add(2)
    for p, x in zip(spline.bezier_points, (-0.8, 0.0, 0.8)):
        p.co = (x, -0.9, 0.2)
        p.handle_left_type = p.handle_right_type = "AUTO"
    drawn = _bits(sketch, [2])
    bpy.context.view_layer.objects.active = sketch
    assert bpy.ops.splatsketch.regenerate_strokes(keep="2") == {"FINISHED"}
    assert len(sketch.data.splines) == 3 and _bits(sketch, [0]) == drawn


def test_bad_keep_requests_change_nothing(addon, tiny, capsys):  # noqa: F811
    props = bpy.context.scene.splatsketch
    sketch = _sketch(props, curves=2)
    bpy.context.view_layer.objects.active = sketch
    before, bits = scene_state(), _bits(sketch, range(2))
    for kwargs, message in (({}, "no stroke selected"), ({"keep": "0-1"}, "every stroke is kept"),
                            ({"keep": "5"}, "no stroke 5"), ({"keep": "x"}, "like '0-3,7'")):
        with pytest.raises(RuntimeError, match=message):
            bpy.ops.splatsketch.regenerate_strokes(**kwargs)
    # strokes selected in another curve in Edit Mode with it: said, not silently ignored
    other = bpy.data.objects.new("Other", sketch.data.copy())
    bpy.context.scene.collection.objects.link(other)
    for obj in (sketch, other):
        obj.select_set(True)
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.curve.select_all(action="SELECT")
    try:
        with pytest.raises(RuntimeError, match="strokes of 'Other' are selected too"):
            bpy.ops.splatsketch.regenerate_strokes()
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    bpy.data.objects.remove(other)
    before = scene_state()
    bpy.context.view_layer.objects.active = bpy.data.objects["Suzanne"]
    with pytest.raises(RuntimeError, match="select a SplatSketch result, or a curve"):
        bpy.ops.splatsketch.add_strokes()
    state = bpy.context.window_manager.splatsketch
    state.running = True
    try:
        with pytest.raises(RuntimeError, match="run is going"):
            bpy.ops.splatsketch.add_strokes()
    finally:
        state.running = False
    assert scene_state() == before and _bits(sketch, range(2)) == bits
    # the CLI says why, exits 2, and changes nothing
    for argv, message in ((["--keep-strokes", "Nope", "--keep", "0"], "no object 'Nope'"),
                          (["--keep-strokes", sketch.name], "needs one of --keep"),
                          (["--keep", "0"], "need --keep-strokes"),
                          (["--keep-strokes", "Suzanne", "--add", "2"], "select a SplatSketch result")):
        assert addon.cli.main(argv + TINY) == 2
        assert message in capsys.readouterr().err
    # the source gone: the sketch cannot be regenerated, and stays as it is
    bpy.data.objects.remove(bpy.data.objects["Suzanne"])
    assert addon.cli.main(["--keep-strokes", sketch.name, "--add", "1"] + TINY) == 2
    assert "no source object" in capsys.readouterr().err and _bits(sketch, range(2)) == bits


def test_cli_keep_strokes(addon, tiny, tmp_path, capsys):  # noqa: F811
    props = bpy.context.scene.splatsketch
    sketch = _sketch(props)
    kept = _bits(sketch, [0, 1])
    report = tmp_path / "keep.json"
    code = addon.cli.main(["--keep-strokes", sketch.name, "--keep", "0-1", "--json", str(report)] + TINY)
    assert code == 0, capsys.readouterr().err
    assert len(sketch.data.splines) == 4 and _bits(sketch, [0, 1]) == kept
    asset = json.loads(report.read_text())["assets"][0]
    assert asset["status"] == "ok" and asset["metrics"]["kept_strokes"] == 2


def test_a_curve_drawn_by_hand_gets_the_rest_of_its_strokes(addon, tiny, capsys):  # noqa: F811
    """A plain curve object, rotated and scaled, with two strokes drawn on it: Add Strokes on the
    panel's Object keeps them, adds the new ones where they belong in the world, and draws the curve
    as a sketch from then on."""
    import math

    curve = bpy.data.curves.new("Drawn", "CURVE")
    curve.dimensions = "3D"
    for y in (-0.5, 0.5):
        spline = curve.splines.new("BEZIER")
        spline.bezier_points.add(1)
        spline.bezier_points[0].co, spline.bezier_points[1].co = (-0.5, y, 0.0), (0.5, y, 0.0)
    drawn = bpy.data.objects.new("Drawn", curve)
    bpy.context.scene.collection.objects.link(drawn)
    drawn.rotation_euler = (0.0, 0.0, math.radians(30))
    drawn.scale = (1.5, 1.5, 1.5)
    bpy.context.view_layer.update()
    bpy.context.view_layer.objects.active = drawn
    before = _bits(drawn, [0, 1])
    props = bpy.context.scene.splatsketch
    props.source, props.iterations = None, 4
    with pytest.raises(RuntimeError, match="drawn by hand: pick the mesh"):
        bpy.ops.splatsketch.add_strokes(count=2)
    props.source = bpy.data.objects["Suzanne"]
    assert bpy.ops.splatsketch.add_strokes(count=2) == {"FINISHED"}
    assert len(drawn.data.splines) == 4 and _bits(drawn, [0, 1]) == before
    assert drawn["splatsketch_source"] == "Suzanne" and drawn.splatsketch_strokes_shown == 4
    # the new strokes lie on Suzanne in the world, whatever the curve's own transform
    suzanne = bpy.data.objects["Suzanne"]
    corners = np.array([suzanne.matrix_world @ v.co for v in suzanne.data.vertices])
    world = importlib.import_module(ADDON + ".scene.sketch_object").world_control_points
    new = world(drawn, indices=[2, 3]).reshape(-1, 3)
    assert (new.min(0) > corners.min(0) - 0.3).all() and (new.max(0) < corners.max(0) + 0.3).all()
