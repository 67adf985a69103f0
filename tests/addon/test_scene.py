"""The bpy-side helpers in scene/: mesh extraction, target renders, job folders, result curves.

Real renders (Workbench, Cycles + Freestyle) at small sizes; every test also checks that nothing
the helpers create is left behind in bpy.data.
"""

import importlib
import json
import os
import sys
import types

import bpy
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = ("objects", "meshes", "curves", "materials", "cameras", "scenes", "images", "worlds", "linestyles",
        "collections", "node_groups")


def _package() -> str:
    """The extension's package: as Blender loaded it if a fixture enabled it, else a bare alias.

    The alias is a namespace-like package pointing at the repository, so ``scene`` and ``backend``
    import as siblings (relative imports) without running the extension's ``register()``.
    """
    for name in list(sys.modules):
        if name.startswith("bl_ext.") and name.endswith(".splatsketch"):
            return name
    alias = "splatsketch_under_test"
    if alias not in sys.modules:
        package = types.ModuleType(alias)
        package.__path__ = [REPO]
        sys.modules[alias] = package
    return alias


PKG = _package()
mesh = importlib.import_module(PKG + ".scene.mesh")
targets = importlib.import_module(PKG + ".scene.targets")
job_folder = importlib.import_module(PKG + ".scene.job_folder")
sketch_object = importlib.import_module(PKG + ".scene.sketch_object")
stroke_style = importlib.import_module(PKG + ".scene.stroke_style")
preview = importlib.import_module(PKG + ".scene.preview")
png = importlib.import_module(PKG + ".pictures.pixels")
cameras = importlib.import_module(PKG + ".contract.cameras")
protocol = importlib.import_module(PKG + ".contract.protocol")


def counts() -> dict:
    return {name: len(getattr(bpy.data, name)) for name in DATA}


def user_state() -> tuple:
    ctx = bpy.context
    return (ctx.scene.name, ctx.view_layer.name, ctx.view_layer.objects.active,
            sorted(o.name for o in ctx.selected_objects), ctx.scene.camera, ctx.scene.render.engine)


@pytest.fixture
def suzanne():
    bpy.ops.mesh.primitive_monkey_add(location=(1.0, -2.0, 0.5))
    return bpy.context.active_object


def sphere_of(obj):
    vertices, _ = mesh.evaluated_mesh_world(obj, bpy.context.evaluated_depsgraph_get())
    return mesh.bounding_sphere(vertices)


# --- mesh ----------------------------------------------------------------------------------------

def test_source_problem_cases(suzanne):
    assert "No object" in mesh.source_problem(None)
    empty = bpy.data.objects.new("Empty", None)
    assert "not a mesh" in mesh.source_problem(empty)
    assert "not a mesh" in mesh.source_problem(bpy.data.objects["Camera"])
    loose = bpy.data.meshes.new("Loose")
    loose.from_pydata([(0, 0, 0), (1, 0, 0)], [(0, 1)], [])
    wire = bpy.data.objects.new("Wire", loose)
    bpy.context.scene.collection.objects.link(wire)
    assert "no faces" in mesh.source_problem(wire)
    assert mesh.source_problem(suzanne) is None
    before = counts()
    mesh.source_problem(suzanne)
    assert counts() == before


def test_evaluated_mesh_applies_modifiers_in_world_space(suzanne):
    depsgraph = bpy.context.evaluated_depsgraph_get()
    before = counts()
    vertices, faces = mesh.evaluated_mesh_world(suzanne, depsgraph)
    assert vertices.dtype == np.float64 and vertices.shape[1] == 3
    assert faces.dtype == np.int32 and faces.shape[1] == 3 and faces.max() < len(vertices)
    assert len(faces) == sum(len(p.vertices) - 2 for p in suzanne.data.polygons)
    local = np.array([v.co for v in suzanne.data.vertices])
    np.testing.assert_allclose(vertices, local + [1.0, -2.0, 0.5], atol=1e-6)
    suzanne.modifiers.new("Subdivision", 'SUBSURF').levels = 1
    vertices2, faces2 = mesh.evaluated_mesh_world(suzanne, bpy.context.evaluated_depsgraph_get())
    assert len(faces2) > 3 * len(faces) and len(vertices2) > len(vertices)
    assert counts() == before
    assert len(suzanne.data.polygons) == 500  # the source mesh itself is untouched


def _sphere_with_every_other_face_reversed(location=(0.0, 0.0, 0.0)):
    """A smooth UV sphere whose faces disagree about which side is out, as a double-sided export
    reads once Blender has dropped the duplicate of each face."""
    import bmesh

    bpy.ops.mesh.primitive_uv_sphere_add(segments=32, ring_count=16, location=location)
    obj = bpy.context.active_object
    bpy.ops.object.shade_smooth()
    bm = bmesh.new()
    bm.from_mesh(obj.data)
    bmesh.ops.reverse_faces(bm, faces=bm.faces[:][::2])
    bm.to_mesh(obj.data)
    bm.free()
    obj.data.update()
    return obj


def _directed_edge_repeats(faces: np.ndarray) -> int:
    walked = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return len(walked) - len(np.unique(walked, axis=0))


def test_mixed_winding_is_rewound_for_the_backend_and_the_renders_but_not_in_the_scene():
    bpy.ops.mesh.primitive_uv_sphere_add(segments=32, ring_count=16, location=(3.0, 0.0, 0.0))
    clean = bpy.context.active_object
    bpy.ops.object.shade_smooth()
    mixed = _sphere_with_every_other_face_reversed()
    assert mesh.mixed_winding(mixed.data) and not mesh.mixed_winding(clean.data)
    assert _directed_edge_repeats(mesh.evaluated_mesh_world(clean, bpy.context.evaluated_depsgraph_get())[1]) == 0

    before, state = counts(), user_state()
    vertices, faces = mesh.evaluated_mesh_world(mixed, bpy.context.evaluated_depsgraph_get())
    assert _directed_edge_repeats(faces) == 0  # every edge walked once each way
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    assert volume > 0.9 * 4.0 / 3.0 * np.pi  # outward (the 32 x 16 UV sphere holds 97 % of the ball)
    # Freestyle draws the sphere's outline, not a crease at every edge between disagreeing faces.
    size = 96
    viewmats, Ks, _ = cameras.train_and_heldout_cameras(1, 0, size)
    drawn = {}
    for name, obj in (("clean", clean), ("mixed", mixed)):
        out = targets.render_targets(obj, viewmats, Ks, size, *sphere_of(obj))
        inside = ~_dilate(~(out["rgba"][0, ..., 3] > 127), 4)
        drawn[name] = ((out["lines"][0] > 127).sum(), (out["lines"][0][inside] > 127).sum())
    assert drawn["mixed"][1] <= drawn["clean"][1] + 10, drawn
    assert drawn["mixed"][0] == pytest.approx(drawn["clean"][0], rel=0.15), drawn
    assert counts() == before and user_state() == state
    assert mesh.mixed_winding(mixed.data)  # the user's object is left as it was


def test_a_rewound_render_copy_keeps_custom_normals_turned_outward():
    """Imported meshes carry custom normals; rewinding the faces must turn them with their faces, or
    the renders keep the blotched shading the rewinding is for."""
    mixed = _sphere_with_every_other_face_reversed()
    co = np.array([v.co for v in mixed.data.vertices])
    mixed.data.normals_split_custom_set_from_vertices([tuple(p / np.linalg.norm(p)) for p in co])
    before = counts()
    copy = targets.copy_evaluated(mixed)
    data = copy.data
    try:
        assert not mesh.mixed_winding(data) and data.has_custom_normals
        normals = np.empty((len(data.loops), 3), np.float32)
        data.corner_normals.foreach_get("vector", normals.ravel())
        corner = np.empty(len(data.loops), np.int64)
        data.loops.foreach_get("vertex_index", corner)
        at = np.array([data.vertices[i].co for i in corner])
        assert (np.einsum("ij,ij->i", normals, at) > 0.9 * np.linalg.norm(at, axis=1)).all()
    finally:
        bpy.data.objects.remove(copy)
        bpy.data.meshes.remove(data)
    assert counts() == before and mesh.mixed_winding(mixed.data)


def test_bounding_sphere():
    points = np.array([[0, 0, 0], [2, 0, 0], [0, 4, 0], [2, 4, 6]], float)
    center, radius = mesh.bounding_sphere(points)
    np.testing.assert_allclose(center, [1, 2, 3])
    assert radius == pytest.approx(np.sqrt(1 + 4 + 9))
    assert np.all(np.linalg.norm(points - center, axis=1) <= radius + 1e-12)
    with pytest.raises(ValueError, match="zero size"):
        mesh.bounding_sphere(np.ones((5, 3)))
    with pytest.raises(ValueError, match="no vertices"):
        mesh.bounding_sphere(np.zeros((0, 3)))


# --- target renders ------------------------------------------------------------------------------

def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


def test_render_targets_suzanne(suzanne):
    suzanne.select_set(True)
    center, radius = sphere_of(suzanne)
    size = 128
    viewmats, Ks, _ = cameras.train_and_heldout_cameras(3, 0, size)
    before, state = counts(), user_state()
    out = targets.render_targets(suzanne, viewmats, Ks, size, center, radius)
    assert counts() == before and user_state() == state

    assert out["rgba"].shape == (3, size, size, 4) and out["rgba"].dtype == np.uint8
    for key in ("lines", "lines_hidden"):
        assert out[key].shape == (3, size, size) and out[key].dtype == np.uint8
    assert out["depth"].shape == (3, size, size) and out["depth"].dtype == np.float32
    vertices, _ = mesh.evaluated_mesh_world(suzanne, bpy.context.evaluated_depsgraph_get())
    normalised = (vertices - center) / radius
    for v in range(3):
        alpha = out["rgba"][v, ..., 3] > 127
        assert 0.05 < alpha.mean() < 0.6
        ys, xs = np.nonzero(alpha)
        assert abs(xs.mean() - size / 2) < 0.15 * size and abs(ys.mean() - size / 2) < 0.15 * size
        # The silhouette matches the projected mesh: every vertex lands on (or next to) the alpha.
        uv, z = cameras.project_points(normalised, viewmats[v], Ks[v])
        px = np.clip(uv.astype(int), 0, size - 1)
        assert _dilate(alpha, 2)[px[:, 1], px[:, 0]].mean() > 0.98
        lines = out["lines"][v] > 127
        assert lines.sum() > 0.3 * np.sqrt(alpha.sum()) * 4  # at least a good part of the outline
        assert (lines & _dilate(alpha, 2)).sum() >= 0.97 * lines.sum()
        assert (out["lines_hidden"][v] > 127).sum() > 20
        # Depth is camera z (planar, not ray length) in normalised units: the front surface, so near
        # every vertex's pixel it is never farther than the vertex; the nearest pixel is the nearest vertex.
        depth = out["depth"][v]
        assert np.all((depth > 0) <= _dilate(alpha, 1))
        front = np.pad(np.where(depth > 0, depth, np.inf), 1, constant_values=np.inf)
        front = np.min([front[1 + dy:size + 1 + dy, 1 + dx:size + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 0)
        near = front[px[:, 1], px[:, 0]]
        assert np.isfinite(near).mean() > 0.98 and np.all(near[np.isfinite(near)] <= z[np.isfinite(near)] + 0.02)
        assert depth[depth > 0].min() == pytest.approx(z.min(), abs=0.02)


def test_render_targets_huge_object(suzanne):
    suzanne.scale = (500.0, 500.0, 500.0)
    suzanne.location = (3000.0, 0.0, 0.0)
    bpy.context.view_layer.update()
    center, radius = sphere_of(suzanne)
    assert radius > 500
    viewmats, Ks, _ = cameras.train_and_heldout_cameras(1, 0, 64)
    out = targets.render_targets(suzanne, viewmats, Ks, 64, center, radius)
    assert (out["rgba"][0, ..., 3] > 127).mean() > 0.05
    assert (out["lines"][0] > 127).sum() > 30
    depth = out["depth"][0]
    assert 1.0 < depth[depth > 0].min() < depth.max() < 5.0  # normalised, not scene units


def test_render_targets_cleans_up_on_error(suzanne):
    before, state = counts(), user_state()
    viewmats, Ks, _ = cameras.train_and_heldout_cameras(1, 0, 64)
    Ks[0, 0, 2] += 10.0  # off-centre principal point: refused, after the scenes were made
    with pytest.raises(ValueError, match="principal point"):
        targets.render_targets(suzanne, viewmats, Ks, 64, *sphere_of(suzanne))
    assert counts() == before and user_state() == state


# --- job folder ----------------------------------------------------------------------------------

@pytest.mark.parametrize("targets", ["freestyle", "mesh"])
def test_write_job_matches_contract(suzanne, tmp_path, targets):
    if targets == "mesh":  # the backend draws that job's images: a Python with torch checks them
        pytest.importorskip("torch")
    job = tmp_path / "job"
    settings = {"curves": 8, "targets": targets}
    info = job_folder.write_job(str(job), suzanne, bpy.context.evaluated_depsgraph_get(), settings,
                                train_views=2, heldout_views=1, size=64)
    assert info["views"] == 3 and info["radius"] > 0 and len(info["center"]) == 3
    meta = json.loads((job / "job.json").read_text())
    assert meta["schema"] == protocol.SCHEMA_VERSION and meta["settings"] == settings
    assert meta["source"]["name"] == suzanne.name and meta["source"]["radius"] == pytest.approx(info["radius"])
    with np.load(job / "views.npz", allow_pickle=False) as views:
        assert views["viewmats"].dtype == np.float32 and views["viewmats"].shape == (3, 4, 4)
        assert views["Ks"].dtype == np.float32 and views["Ks"].shape == (3, 3, 3)
        assert views["is_train"].dtype == bool and views["is_train"].tolist() == [True, True, False]
        if targets == "mesh":  # the backend draws the images from mesh.npz: Blender rendered none
            assert not set(protocol.DRAWN_KEYS) & set(views.files)
        else:
            assert views["rgba"].dtype == np.uint8 and views["rgba"].shape == (3, 64, 64, 4)
            for key in ("lines", "lines_hidden"):
                assert views[key].dtype == np.uint8 and views[key].shape == (3, 64, 64)
            assert views["depth"].dtype == np.float32 and views["depth"].shape == (3, 64, 64)
        assert all(np.isfinite(views[k]).all() for k in views.files)
    with np.load(job / "mesh.npz", allow_pickle=False) as m:
        assert m["vertices"].dtype == np.float32 and m["faces"].dtype == np.int32 and m["faces"].shape[1] == 3
        assert np.linalg.norm(m["vertices"], axis=1).max() == pytest.approx(1.0, abs=1e-5)
    loaded = importlib.import_module(PKG + ".backend.job").load_job(str(job))  # the worker's own validation
    assert loaded.arrays["rgba"].shape == (3, 64, 64, 4)


def test_write_job_refuses_bad_source_and_leaves_nothing(tmp_path):
    job = tmp_path / "job"
    with pytest.raises(ValueError, match="not a mesh"):
        job_folder.write_job(str(job), bpy.data.objects["Camera"], bpy.context.evaluated_depsgraph_get(), {})
    assert not job.exists()


# --- result curves -------------------------------------------------------------------------------

def _curves(k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (k, 4, 3)).astype(np.float32)


def test_create_sketch_round_trip(suzanne):
    center, radius = np.array([1.0, -2.0, 0.5]), 1.5
    control_points = _curves(6)
    source_matrix = [list(r) for r in suzanne.matrix_world]
    sketch = sketch_object.create_sketch(suzanne, control_points, center, radius, stroke_width=0.01,
                                         properties={"curves": 6, "seed": 3, "loss": np.float32(0.25),
                                                     "settings": {"lr": 0.01}, "note": None})
    assert sketch.name == "Suzanne Sketch" and sketch.type == 'CURVE'
    assert [c.name for c in sketch.users_collection] == ["SplatSketch"]
    assert "SplatSketch" in bpy.context.scene.collection.children
    curve = sketch.data
    assert curve.dimensions == '3D' and len(curve.splines) == 6
    # the tubes are the strokes modifier's (radius = width x bounding radius), not the curve's bevel
    assert curve.bevel_depth == 0.0 and stroke_style.stroke_width(sketch) == pytest.approx(0.015)
    assert stroke_style.shown_count(sketch) == 6
    assert all(len(s.bezier_points) == 2 and s.type == 'BEZIER' for s in curve.splines)
    assert {t for s in curve.splines for p in s.bezier_points for t in (p.handle_left_type, p.handle_right_type)} \
        == {'FREE'}
    expected = center + radius * control_points.astype(np.float64)
    got = sketch_object.world_control_points(sketch)
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    material = curve.materials[0]
    assert material.name == "SplatSketch Ink" and tuple(material.diffuse_color)[:3] == (0.0, 0.0, 0.0)
    assert sketch["curves"] == 6 and sketch["seed"] == 3 and sketch["loss"] == pytest.approx(0.25)
    assert json.loads(sketch["settings"]) == {"lr": 0.01} and "note" not in sketch
    assert [list(r) for r in suzanne.matrix_world] == source_matrix and len(suzanne.data.polygons) == 500
    again = sketch_object.create_sketch(suzanne, control_points, center, radius, 0.01)
    assert again.name == "Suzanne Sketch.001" and again.data.materials[0] == material


def test_update_sketch_moves_and_prunes(suzanne):
    center, radius = np.zeros(3), 2.0
    sketch = sketch_object.create_sketch(suzanne, _curves(5), center, radius, 0.01)
    moved = _curves(5, seed=1)
    sketch_object.update_sketch(sketch, moved, center, radius)
    np.testing.assert_allclose(sketch_object.world_control_points(sketch), radius * moved, atol=1e-5)
    pruned = moved[:3]
    sketch_object.update_sketch(sketch, pruned, center, radius)
    assert len(sketch.data.splines) == 3
    np.testing.assert_allclose(sketch_object.world_control_points(sketch), radius * pruned, atol=1e-5)
    assert {p.handle_left_type for s in sketch.data.splines for p in s.bezier_points} == {'FREE'}


def _chains(k: int, segments: int, seed: int = 0) -> np.ndarray:
    """Random G1 chains: random anchors and handles, each joint's out-handle put on the line through
    the in-handle and the anchor, beyond the anchor (collinear, lengths differ)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (k, 3 * segments + 1, 3))
    for j in range(1, segments):
        anchor, h_in = points[:, 3 * j], points[:, 3 * j - 1]
        direction = (anchor - h_in) / np.linalg.norm(anchor - h_in, axis=1, keepdims=True)
        points[:, 3 * j + 1] = anchor + rng.uniform(0.1, 0.6, (k, 1)) * direction
    return points.astype(np.float32)


def test_a_g1_chain_is_one_spline_with_aligned_handles_and_reads_back_exactly(suzanne):
    """S segments per stroke: one spline of S+1 points, interior handles ALIGNED (Blender keeps them
    where they are, as they are collinear), the end points FREE; reading back gives the chain again."""
    center, radius = np.array([0.5, 0.0, -1.0]), 2.0
    chains = _chains(4, 3)
    sketch = sketch_object.create_sketch(suzanne, chains, center, radius, 0.01)
    splines = sketch.data.splines
    assert len(splines) == 4 and all(len(s.bezier_points) == 4 for s in splines)
    for spline in splines:
        bps = spline.bezier_points
        assert [(p.handle_left_type, p.handle_right_type) for p in bps] == \
            [('FREE', 'FREE'), ('ALIGNED', 'ALIGNED'), ('ALIGNED', 'ALIGNED'), ('FREE', 'FREE')]
    bpy.context.view_layer.update()  # let Blender recompute whatever handles it would
    expected = center + radius * chains.astype(np.float64)
    np.testing.assert_allclose(sketch_object.world_control_points(sketch), expected, atol=1e-5)
    # and back into the same spline layout when the preview moves it to chains of another length
    sketch_object.update_sketch(sketch, _chains(4, 2, seed=1), center, radius)
    assert all(len(s.bezier_points) == 3 for s in sketch.data.splines)
    np.testing.assert_allclose(sketch_object.world_control_points(sketch),
                               center + radius * _chains(4, 2, seed=1).astype(np.float64), atol=1e-5)


def test_splines_of_different_lengths_read_back_padded_with_empty_segments(suzanne):
    """An artist may delete spline points: a shorter spline reads back padded with zero-length segments
    at its end, so the evaluation still sees every stroke."""
    sketch = sketch_object.create_sketch(suzanne, _chains(2, 3), np.zeros(3), 1.0, 0.01)
    short = sketch.data.splines[1]
    short.bezier_points[-1].select_control_point = True
    sketch.data.splines.remove(short)
    spline = sketch.data.splines.new('BEZIER')
    spline.bezier_points[0].co = (0.1, 0.2, 0.3)
    spline.bezier_points.add(1)
    spline.bezier_points[1].co = (0.4, 0.2, 0.3)
    points = sketch_object.world_control_points(sketch)
    assert points.shape == (2, 10, 3)
    np.testing.assert_allclose(points[1, 3:], np.repeat([[0.4, 0.2, 0.3]], 7, axis=0), atol=1e-6)


def test_remove_sketch_leaves_scene_as_before(suzanne):
    before = counts()
    sketch = sketch_object.create_sketch(suzanne, _curves(4), np.zeros(3), 1.0, 0.01)
    assert counts() != before
    sketch_object.remove_sketch(sketch)
    assert counts() == before
    # A collection the user made (or one still holding a result) survives.
    keep = sketch_object.create_sketch(suzanne, _curves(2), np.zeros(3), 1.0, 0.01)
    sketch_object.remove_sketch(sketch_object.create_sketch(suzanne, _curves(2), np.zeros(3), 1.0, 0.01))
    assert "SplatSketch" in bpy.data.collections and keep.data.materials[0].name == "SplatSketch Ink"


# --- preview -------------------------------------------------------------------------------------

def test_contact_sheet(suzanne, tmp_path):
    center, radius = sphere_of(suzanne)
    vertices, _ = mesh.evaluated_mesh_world(suzanne, bpy.context.evaluated_depsgraph_get())
    normalised = (vertices - center) / radius
    edges = np.array([e.vertices[:] for e in suzanne.data.edges])[::6]
    p0, p3 = normalised[edges[:, 0]], normalised[edges[:, 1]]
    sketch = sketch_object.create_sketch(suzanne, np.stack([p0, (2 * p0 + p3) / 3, (p0 + 2 * p3) / 3, p3], 1),
                                         center, radius, 0.002)
    bevel = sketch.data.bevel_depth
    before, state = counts(), user_state()
    path = preview.render_contact_sheet(suzanne, sketch, str(tmp_path / "sheet.png"), views=3, size=96, title="t")
    assert counts() == before and user_state() == state and sketch.data.bevel_depth == bevel
    sheet = png.read_png(path)
    m = preview.SHEET_MARGIN
    assert sheet.shape == (2 * 96 + 3 * m, 3 * 96 + 4 * m, 3)
    top, bottom = sheet[m:m + 96, m:m + 96], sheet[2 * m + 96:2 * m + 192, m:m + 96]
    assert (top.min(axis=-1) < 200).mean() > 0.05  # the grey object
    assert (bottom.max(axis=-1) < 100).mean() > 0.01  # black strokes


def test_png_round_trip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (7, 5, 4), dtype=np.uint8)
    assert np.array_equal(png.read_png(png.write_png(str(tmp_path / "a.png"), image)), image)
    grey = image[..., 0]
    assert np.array_equal(png.read_png(png.write_png(str(tmp_path / "g.png"), grey))[..., 0], grey)


# --- far from the origin, or tiny ----------------------------------------------------------------

def test_a_sketch_far_from_the_origin_keeps_its_shape(suzanne):
    """Blender holds curve points in float32, a 1/16-unit grid a million units out: the sketch sits at
    its source's centre and holds only the offsets, so it comes back as the optimiser made it."""
    center, radius = np.array([1e6 + 0.3, -2e6 - 0.7, 5e5 + 0.1]), 0.5
    chains = _chains(4, 3)
    sketch = sketch_object.create_sketch(suzanne, chains, center, radius, 0.01)
    bpy.context.view_layer.update()
    expected = center + radius * chains.astype(np.float64)
    np.testing.assert_allclose(sketch_object.world_control_points(sketch), expected, rtol=0, atol=1e-5)
    moved = _chains(4, 3, seed=1)
    sketch_object.update_sketch(sketch, moved, center, radius)
    np.testing.assert_allclose(sketch_object.world_control_points(sketch), center + radius * moved.astype(np.float64),
                               rtol=0, atol=1e-5)


def _cube_and_its_edges(half: float, offset: float):
    """A cube of half-size ``half`` whose mesh data sits ``offset`` from the origin (as an imported
    file has it), and a sketch of its 12 edges."""
    corners = np.array([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    data = bpy.data.meshes.new("Box")
    data.from_pydata((offset + half * corners).tolist(), [], faces)
    box = bpy.data.objects.new("Box", data)
    bpy.context.scene.collection.objects.link(box)
    center, radius = sphere_of(box)
    edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if np.abs(corners[a] - corners[b]).sum() == 2]
    p0, p3 = (corners[[e[0] for e in edges]] / np.sqrt(3), corners[[e[1] for e in edges]] / np.sqrt(3))
    strokes = np.stack([p0, (2 * p0 + p3) / 3, (p0 + 2 * p3) / 3, p3], 1)
    return box, sketch_object.create_sketch(box, strokes, center, radius, 0.01)


def _ink(sheet: np.ndarray, size: int, views: int) -> float:
    m = preview.SHEET_MARGIN
    row = sheet[2 * m + size:2 * m + 2 * size, m:views * (size + m)]
    return float((row.max(axis=-1) < 100).mean())


@pytest.mark.parametrize("half, offset", [(5e-7, 0.0), (0.5, 1e6)], ids=["tiny", "far"])
def test_contact_sheet_of_a_tiny_or_far_object_draws_the_sketch_like_any_other(tmp_path, half, offset):
    """Blender builds a curve's tube in object space, in float32: a sketch a millionth of a unit across
    drew specks and one a million units out drew nothing, unless the pictures are made in the
    normalised frame."""
    inks = []
    for h, o in ((1.0, 0.0), (half, offset)):
        box, sketch = _cube_and_its_edges(h, o)
        before, state = counts(), user_state()
        path = preview.render_contact_sheet(box, sketch, str(tmp_path / f"sheet_{h}.png"), views=2, size=64)
        assert counts() == before and user_state() == state
        inks.append(_ink(png.read_png(path), 64, 2))
    assert inks[0] > 0.02 and 0.8 < inks[1] / inks[0] < 1.25, inks
