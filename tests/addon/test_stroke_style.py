"""The artist's controls on a finished sketch: Strokes Shown, stroke styles, drawn-on animation,
and what each does to the evaluated tubes, the evaluation's input and the Grease Pencil copy."""

import importlib
import json

import bpy
import numpy as np
import pytest
from conftest import ADDON, scene_state
from test_addon import _draw


def _module(name):
    return importlib.import_module(f"{ADDON}.{name}")


def _sketch(count=4):
    """``count`` straight strokes along x, stroke k at y = k (stroke 0 the most important)."""
    sketch_object = _module("scene.sketch_object")
    points = np.zeros((count, 4, 3), np.float32)
    points[:, :, 0] = np.linspace(-1.0, 1.0, 4)
    points[:, :, 1] = np.arange(count)[:, None]
    obj = sketch_object.create_sketch(bpy.data.objects["Cube"], points, [0, 0, 0], 1.0, 0.05)
    bpy.context.window_manager.splatsketch.last_result = obj.name
    bpy.context.view_layer.objects.active = obj
    return obj


def _tubes(obj) -> np.ndarray:
    """The evaluated sketch's vertices (what is drawn)."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    depsgraph.update()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()  # None when nothing is drawn
    try:
        return np.array([v.co[:] for v in mesh.vertices] if mesh else []).reshape(-1, 3)
    finally:
        evaluated.to_mesh_clear()


def _drawn_strokes(obj) -> list[int]:
    co = _tubes(obj)
    return sorted({int(round(y)) for y in co[:, 1]}) if len(co) else []


def _thickness(obj, stroke: int, x: float) -> float:
    co = _tubes(obj)
    near = (np.abs(co[:, 1] - stroke) < 0.3) & (np.abs(co[:, 0] - x) < 0.03)
    return float(np.abs(co[near, 2]).max())


def test_strokes_shown_draws_the_first_n_and_the_evaluation_reads_them(addon):
    obj = _sketch(4)
    style = _module("scene.stroke_style")
    assert obj.data.bevel_depth == 0.0 and style.stroke_width(obj) == pytest.approx(0.05)
    assert _drawn_strokes(obj) == [0, 1, 2, 3] and obj.splatsketch_strokes_shown == 4
    assert _thickness(obj, 0, 0.0) == pytest.approx(0.05, rel=0.02)
    obj.splatsketch_strokes_shown = 2
    assert _drawn_strokes(obj) == [0, 1] and obj.splatsketch_strokes_shown == 2
    world = _module("scene.sketch_object").world_control_points
    assert world(obj, shown_only=True).shape == (2, 4, 3) and world(obj).shape == (4, 4, 3)
    obj.splatsketch_strokes_shown = 4  # all of them: a spline drawn in later shows too
    spline = obj.data.splines.new("BEZIER")
    spline.bezier_points.add(1)
    spline.bezier_points[0].co, spline.bezier_points[1].co = (-1, 4, 0), (1, 4, 0)
    obj.data.update_tag()
    assert _drawn_strokes(obj) == [0, 1, 2, 3, 4] and obj.splatsketch_strokes_shown == 5


def test_styles_taper_the_ends_and_weigh_strokes_by_importance(addon):
    obj = _sketch(4)
    assert bpy.ops.splatsketch.stroke_style(style="PEN") == {"FINISHED"}
    middle, tip = _thickness(obj, 0, 0.0), _thickness(obj, 0, -0.99)
    assert middle == pytest.approx(0.05, rel=0.02) and tip < 0.3 * middle
    assert _thickness(obj, 3, 0.0) < 0.75 * middle  # the least important stroke is lighter
    assert bpy.ops.splatsketch.stroke_style(style="MARKER") == {"FINISHED"}
    assert _thickness(obj, 3, 0.0) == pytest.approx(1.6 * 0.05, rel=0.02)
    assert bpy.ops.splatsketch.stroke_style(style="UNIFORM") == {"FINISHED"}
    assert _thickness(obj, 3, -0.99) == pytest.approx(0.05, rel=0.02)
    for point in obj.data.splines[1].bezier_points:  # the points' own radius (Alt+S) scales the tube
        point.radius = 2.0
    obj.data.update_tag()
    assert _thickness(obj, 1, 0.0) == pytest.approx(0.1, rel=0.02) and _thickness(obj, 2, 0.0) == pytest.approx(
        0.05, rel=0.02)
    # the Grease Pencil copy's radii follow the same formula
    style = _module("scene.stroke_style")
    radii = style.radius_factors(np.array([0.0, 0.5]), 3, 4, 0.3, 0.5)
    assert radii[0] == pytest.approx(style.TIP * radii[1]) and radii[1] == pytest.approx(1 - 0.5 * 0.6)


def test_animate_drawing_draws_stroke_after_stroke_and_survives_save(addon, tmp_path):
    obj = _sketch(4)
    scene = bpy.context.scene
    assert bpy.ops.splatsketch.animate_drawing(frame_start=1, frame_end=41, overlap=0.0, easing="LINEAR") == {
        "FINISHED"}
    drawn = {}
    for frame in (1, 11, 21, 41):
        scene.frame_set(frame)
        drawn[frame] = _drawn_strokes(obj)
    assert drawn == {1: [], 11: [0], 21: [0, 1], 41: [0, 1, 2, 3]}, drawn
    path, name = str(tmp_path / "drawn.blend"), obj.name
    bpy.ops.wm.save_as_mainfile(filepath=path, copy=True)
    bpy.ops.wm.open_mainfile(filepath=path)
    obj = bpy.data.objects[name]
    style = _module("scene.stroke_style")
    assert style.drawing_range(obj) == (1.0, 41.0)
    bpy.context.scene.frame_set(21)
    assert _drawn_strokes(obj) == [0, 1]
    # the evaluation and the pictures score the whole sketch, whatever frame it is
    copy = _module("scene.sketch_object").normalised_copy(obj, np.zeros(3), 1.0)
    bpy.context.scene.collection.objects.link(copy)
    assert _drawn_strokes(copy) == [0, 1, 2, 3]
    bpy.data.objects.remove(copy)


def test_grease_pencil_copy_keeps_shown_strokes_weight_and_drawing(addon):
    obj = _sketch(4)
    obj.splatsketch_strokes_shown = 3
    assert bpy.ops.splatsketch.stroke_style(style="PEN") == {"FINISHED"}
    assert bpy.ops.splatsketch.animate_drawing(frame_start=5, frame_end=29) == {"FINISHED"}
    before = set(bpy.data.objects)
    assert bpy.ops.splatsketch.convert_grease_pencil() == {"FINISHED"}
    gp = [o for o in bpy.data.objects if o not in before][0]
    tools = _module("operators.tools")
    if tools.grease_pencil_data() is None:  # 4.2: Blender's own conversion, plus the Build modifier
        build = gp.grease_pencil_modifiers[0]
    else:
        build = gp.modifiers[0]
        frame = gp.data.layers[0].frames[0]
        strokes = frame.drawing.strokes
        assert frame.frame_number == 5 and len(strokes) == 3
        radii = [p.radius for p in strokes[0].points]
        assert radii[0] < 0.3 * max(radii) and max(radii) == pytest.approx(0.05, rel=0.02)
    assert build.mode == "SEQUENTIAL" and build.length == 24


def test_bad_requests_say_why_and_change_nothing(addon):
    obj = _sketch(3)
    context = bpy.context
    context.view_layer.objects.active = bpy.data.objects["Cube"]
    with pytest.raises(RuntimeError, match="Select a SplatSketch result"):
        bpy.ops.splatsketch.animate_drawing()
    context.view_layer.objects.active = obj
    before = scene_state()
    with pytest.raises(RuntimeError, match="at least one frame"):
        bpy.ops.splatsketch.animate_drawing(frame_start=10, frame_end=10)
    assert _module("scene.stroke_style").drawing_range(obj) is None and scene_state() == before
    state = context.window_manager.splatsketch
    state.running = True
    try:
        with pytest.raises(RuntimeError, match="run is going"):
            bpy.ops.splatsketch.stroke_style(style="PEN")
    finally:
        state.running = False
    assert _module("scene.stroke_style").get_input(obj, "Taper") == 0.0
    obj.splatsketch_strokes_shown = 0  # at least one stroke is shown
    assert obj.splatsketch_strokes_shown == 1 and _drawn_strokes(obj) == [0]


def test_strokes_panel_shows_the_slider_and_the_first_strokes_f(addon):
    obj = _sketch(4)
    obj["splatsketch_metrics"] = json.dumps({"first_strokes_f": [0.4, 0.6, 0.7, 0.72]})
    panel = addon.panels.SPLATSKETCH_PT_strokes
    assert panel.poll(bpy.context)
    obj.splatsketch_strokes_shown = 2
    log = _draw(panel, bpy.context)
    assert ("prop", "splatsketch_strokes_shown") in log and ("operator", "splatsketch.animate_drawing") in log
    assert any("these 2: 0.60" in str(c) for c in log)
    assert not any("Abstraction Levels" in str(c) for c in log)  # half the strokes: no hint
    obj.splatsketch_strokes_shown = 1
    assert any("Abstraction Levels" in str(c) for c in _draw(panel, bpy.context))  # a quarter of a plain run
    obj["splatsketch_settings"] = json.dumps({"abstraction": 1.0})
    assert not any("Abstraction Levels" in str(c) for c in _draw(panel, bpy.context))
    bpy.context.view_layer.objects.active = bpy.data.objects["Cube"]
    assert not panel.poll(bpy.context)
    drawn = bpy.data.objects.new("Drawn", bpy.data.curves.new("Drawn", "CURVE"))  # strokes drawn by hand
    bpy.context.scene.collection.objects.link(drawn)
    bpy.context.view_layer.objects.active = drawn
    log = _draw(panel, bpy.context)
    assert panel.poll(bpy.context) and ("operator", "splatsketch.add_strokes") in log
    assert ("prop", "splatsketch_strokes_shown") not in log


def test_a_strokes_group_missing_an_input_is_made_whole_again(addon):
    """A file whose strokes group lost an input the add-on sets (edited by hand, another layout):
    setting it rebuilds the group instead of failing."""
    obj = _sketch(3)
    style = _module("scene.stroke_style")
    tree = style.style_modifier(obj).node_group
    tree.interface.remove(next(i for i in tree.interface.items_tree if getattr(i, "name", "") == "Stroke Limit"))
    assert style.get_input(obj, "Stroke Limit") is None and style.shown_count(obj) == 3
    obj.splatsketch_strokes_shown = 2
    assert style.get_input(obj, "Stroke Limit") == 2 and _drawn_strokes(obj) == [0, 1]


def test_a_sweep_draws_bottom_to_top_and_keeps_the_weights_of_importance(addon):
    """Strokes at heights 2, 0, 1 (importance order 0, 1, 2): Bottom to Top draws the one at 0 first,
    the Grease Pencil copy lists them in the same order, and the least important stays the thinnest."""
    obj = _sketch(3)
    for spline, z in zip(obj.data.splines, (2.0, 0.0, 1.0)):
        for p in spline.bezier_points:
            p.co.z, p.handle_left.z, p.handle_right.z = z, z, z
    obj.data.update_tag()
    assert bpy.ops.splatsketch.stroke_style(style="PEN") == {"FINISHED"}
    assert bpy.ops.splatsketch.animate_drawing(frame_start=1, frame_end=31, overlap=0.0, easing="LINEAR",
                                               order="BOTTOM_TO_TOP") == {"FINISHED"}
    bpy.context.scene.frame_set(11)  # a third of the way: the lowest stroke only
    assert sorted({round(z) for z in _tubes(obj)[:, 2]}) == [0]
    bpy.context.scene.frame_set(31)
    co = _tubes(obj)
    thickness = {z: float(np.abs(co[np.abs(co[:, 2] - z) < 0.3][:, 1] - round(float(np.median(
        co[np.abs(co[:, 2] - z) < 0.3][:, 1])))).max()) for z in (0, 1, 2)}
    assert thickness[1] < thickness[0] < thickness[2], thickness  # ranks 2 < 1 < 0, whatever the drawing order
    assert _module("scene.stroke_style").drawing_order(obj, list(obj.data.splines)) == [1, 2, 0]
