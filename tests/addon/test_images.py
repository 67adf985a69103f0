"""Sketches from multi-view pictures (``--images``): every bad capture is one line and exit 2
with nothing written; the hull, line images and frames are right; a capture rendered from a mesh
gives curves on that mesh, in its world frame.

Most captures here are drawn analytically (a shaded sphere, ray-cast in numpy), so a case costs no
render; the round trip renders a real mesh with bench/make_capture.py.
"""

import importlib
import json
import math
import os
import subprocess
import sys

import bpy
import numpy as np
import pytest
from conftest import BACKEND_PYTHON, REPO, scene_state

pytestmark = pytest.mark.usefixtures("addon")
CENTER, RADIUS = np.array([3.0, -2.0, 1.0]), 1.5
TINY = ["--no-clip", "--curves", "4", "--iterations", "6", "--views", "6", "--heldout-views", "2",
        "--image-size", "64", "--views-per-step", "2"]


def mod(addon, name: str):
    """A module of the extension as Blender imported it (``pictures.capture``, ``contract.cameras``...)."""
    return importlib.import_module(f"{addon.__name__}.{name}")


def _sphere_picture(viewmat, K, size, center=CENTER, radius=RADIUS, alpha=True) -> np.ndarray:
    """RGBA of a Lambert-shaded sphere (2x2 supersampled edges), straight alpha."""
    sub = (np.arange(size * 2) + 0.5) / 2.0
    xs, ys = np.meshgrid(sub, sub)
    d = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    c = viewmat[:3, :3] @ center + viewmat[:3, 3]
    tc = d @ c
    disc = tc ** 2 - (c @ c - radius ** 2)
    hit = disc > 0
    t = tc - np.sqrt(np.where(hit, disc, 0.0))
    normal = (d * t[..., None] - c) / radius
    shade = np.clip(-normal @ np.array([0.3, -0.5, -0.8]) / np.linalg.norm([0.3, -0.5, -0.8]), 0, 1) * 0.7 + 0.2
    rgba = np.zeros((size * 2, size * 2, 4))
    rgba[..., :3] = np.where(hit[..., None], shade[..., None] * np.array([0.9, 0.6, 0.4]), 0.0)
    rgba[..., 3] = hit
    rgba = rgba.reshape(size, 2, size, 2, 4).mean(axis=(1, 3))
    rgba[..., :3] = np.where(rgba[..., 3:] > 0, rgba[..., :3] / np.maximum(rgba[..., 3:], 1e-6), 0)
    if not alpha:
        rgba[..., :3] = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
        rgba[..., 3] = 1.0
    return np.rint(rgba * 255).astype(np.uint8)


def write_sphere_capture(addon, folder, train=10, test=4, size=64, alpha=True) -> str:
    """A NeRF-synthetic capture of the sphere at CENTER (world), Blender camera matrices."""
    cameras, pixels = mod(addon, "contract.cameras"), mod(addon, "pictures.pixels")
    fov = math.radians(40.0)
    for split, count, phase in (("train", train, 0.0), ("test", test, 0.5)):
        viewmats, Ks = cameras.orbit_cameras(count, size, 40.0, phase=phase)
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        frames = []
        for i, (viewmat, K) in enumerate(zip(viewmats.astype(float), Ks.astype(float))):
            world = viewmat.copy()
            world[:3, 3] = RADIUS * viewmat[:3, 3] - viewmat[:3, :3] @ CENTER  # same camera around CENTER
            pixels.write_png(os.path.join(folder, split, f"r_{i}.png"), _sphere_picture(world, K, size, alpha=alpha))
            frames.append({"file_path": f"./{split}/r_{i}",
                           "transform_matrix": cameras.blender_matrix_world(world).tolist()})
        with open(os.path.join(folder, f"transforms_{split}.json"), "w", encoding="utf-8") as f:
            json.dump({"camera_angle_x": fov, "frames": frames}, f)
    return str(folder)


def _edit_json(folder, change, split="train"):
    path = os.path.join(folder, f"transforms_{split}.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    change(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _look_away(data):
    for frame in data["frames"]:
        m = np.array(frame["transform_matrix"])
        m[:3, :3] = m[:3, :3] @ np.diag([-1.0, 1.0, -1.0])  # turned half round its own up axis
        frame["transform_matrix"] = m.tolist()


def _scale(data):
    m = np.array(data["frames"][1]["transform_matrix"])
    m[:3, :3] *= 2.0
    data["frames"][1]["transform_matrix"] = m.tolist()


def _non_finite(data):
    data["frames"][2]["transform_matrix"][0][3] = float("nan")


def _deep_json(folder):
    with open(os.path.join(folder, "transforms_train.json"), "w", encoding="utf-8") as f:
        f.write('{"frames": ' + "[" * 200_000 + "]" * 200_000 + "}")


def _file_path(frame, path):
    return lambda data: data["frames"][frame].update(file_path=path)


def _link_out(folder, name):
    os.remove(os.path.join(folder, "train", name))
    os.symlink("/etc/passwd", os.path.join(folder, "train", name))


def _picture(addon, folder, name, image):
    mod(addon, "pictures.pixels").write_png(os.path.join(folder, "train", name), image)


BAD = {
    "missing folder": (lambda a, f: os.rename(f, f + "-gone"), "no such file or folder"),
    "no transforms json": (lambda a, f: os.remove(os.path.join(f, "transforms_train.json")),
                           "no transforms_train.json"),
    "malformed json": (lambda a, f: open(os.path.join(f, "transforms_train.json"), "w").write('{"frames": ['),
                       "malformed JSON"),
    "missing image": (lambda a, f: os.remove(os.path.join(f, "train", "r_3.png")), "image './train/r_3' not found"),
    "images of different sizes": (lambda a, f: _picture(a, f, "r_2.png", np.zeros((48, 48, 4), np.uint8) + 128),
                                  "every picture must have the same size"),
    "missing camera_angle_x": (lambda a, f: _edit_json(f, lambda d: d.pop("camera_angle_x")), "camera_angle_x"),
    "non-finite matrix": (lambda a, f: _edit_json(f, _non_finite), "non-finite"),
    "non-rigid matrix": (lambda a, f: _edit_json(f, _scale), "not a rigid camera-to-world matrix"),
    "fewer than 2 frames": (lambda a, f: _edit_json(f, lambda d: d.update(frames=d["frames"][:1])),
                            "at least 2 views"),
    "cameras looking away": (lambda a, f: _edit_json(f, _look_away), "do not look at one object"),
    "json nested 200,000 deep": (lambda a, f: _deep_json(f), "nested more than 32 levels deep"),
    "file_path out of the folder": (lambda a, f: _edit_json(f, _file_path(3, "../" * 12 + "etc/passwd")),
                                    "frame 3: 'file_path' '../../"),
    "absolute file_path": (lambda a, f: _edit_json(f, _file_path(2, "/etc/passwd")), "outside the capture folder"),
    "picture linked out of the folder": (lambda a, f: _link_out(f, "r_3.png"), "is a link to /etc/passwd"),
    "not a picture": (lambda a, f: open(os.path.join(f, "train", "r_1.png"), "w").write("hello"),
                      "r_1.png: Blender cannot read this image"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_capture_is_one_line_exit_2_and_writes_nothing(addon, capsys, tmp_path, case):
    folder = write_sphere_capture(addon, str(tmp_path / "capture"))
    spoil, message = BAD[case]
    spoil(addon, folder)
    out, report = tmp_path / "out.blend", tmp_path / "out.json"
    before = scene_state()
    code = addon.cli.main(["--images", folder, "--output", str(out), "--json", str(report), "--python",
                           BACKEND_PYTHON, *TINY])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err and message in lines[0], err
    assert not out.exists() and not report.exists()
    assert scene_state() == before


def test_pictures_without_alpha_need_masks(addon, capsys, tmp_path):
    folder = write_sphere_capture(addon, str(tmp_path / "capture"), alpha=False)
    code = addon.cli.main(["--images", folder, "--python", BACKEND_PYTHON, *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "no transparent background" in err and "--masks" in err, err


def test_masks_give_the_silhouettes(addon, capsys, tmp_path):
    """Opaque pictures plus a mask folder sketch like pictures with alpha."""
    folder = write_sphere_capture(addon, str(tmp_path / "capture"), alpha=False)
    with_alpha = write_sphere_capture(addon, str(tmp_path / "alpha"))
    masks = tmp_path / "masks"
    for split in ("train", "test"):  # the mask folder mirrors the pictures' paths
        (masks / split).mkdir(parents=True)
        for name in os.listdir(os.path.join(with_alpha, split)):
            alpha = mod(addon, "pictures.pixels").read_png(os.path.join(with_alpha, split, name))[..., 3]
            mod(addon, "pictures.pixels").write_png(str(masks / split / name), alpha)
    cap = mod(addon, "pictures.capture").read_capture(folder, str(masks))
    assert cap.masks == str(masks) and all(f.mask for f in cap.train + cap.test)
    assert cap.test[0].mask.endswith(os.path.join("test", "r_0.png"))
    rgba = mod(addon, "scene.targets").drain(mod(addon, "scene.capture_job").iter_load(cap.train[:2], 64)).rgba
    expected = mod(addon, "pictures.pixels").read_png(os.path.join(with_alpha, "train", "r_0.png"))[..., 3]
    assert np.array_equal(rgba[0, ..., 3], expected)


def test_surface_nets_make_a_closed_outward_sphere(addon):
    mod(addon, "pictures.capture")
    visual_hull = mod(addon, "pictures.visual_hull")
    axis = np.linspace(-1, 1, 40)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    field = np.clip(0.5 + (0.7 - np.sqrt(x * x + y * y + z * z)) * 5, 0, 1)
    vertices, faces = visual_hull.surface_nets(field, [-1] * 3, [1] * 3)
    r = np.linalg.norm(vertices, axis=1)
    assert abs(r.min() - 0.7) < 0.01 and abs(r.max() - 0.7) < 0.01
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()  # closed: every edge between exactly two triangles
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert ((normals * tri.mean(axis=1)).sum(axis=1) > 0).all()  # every triangle faces outwards


def test_visual_hull_and_normalisation_find_the_sphere(addon, tmp_path):
    capture = mod(addon, "pictures.capture")
    visual_hull = mod(addon, "pictures.visual_hull")
    cap = capture.read_capture(write_sphere_capture(addon, str(tmp_path / "c"), train=16, size=96))
    loaded = mod(addon, "scene.targets").drain(mod(addon, "scene.capture_job").iter_load(cap.train, 96, hull=True))
    viewmats, Ks = loaded.viewmats, loaded.Ks
    vertices, faces = visual_hull.visual_hull(viewmats, loaded.hull_Ks, loaded.hull_alpha)
    center, radius = mod(addon, "scene.mesh").bounding_sphere(vertices)
    assert np.linalg.norm(center - CENTER) < 0.05 * RADIUS
    assert RADIUS * 0.99 < radius < RADIUS * 1.12  # a hull bounds the object from outside
    distance = np.linalg.norm(vertices - CENTER, axis=1)
    assert distance.min() > RADIUS * 0.97 and np.median(distance) < RADIUS * 1.06
    # the normalised camera sees each point where the world camera did
    p = CENTER + RADIUS * np.array([0.3, -0.2, 0.4])
    normalised = visual_hull.normalised_viewmat(viewmats[0], center, radius)
    uv_world, _ = mod(addon, "contract.cameras").project_points(p[None], viewmats[0], Ks[0])
    uv_norm, _ = mod(addon, "contract.cameras").project_points(((p - center) / radius)[None], normalised, Ks[0])
    assert np.allclose(uv_world, uv_norm, atol=1e-6)


def test_line_image_is_the_outline_and_strong_edges_only(addon):
    mod(addon, "pictures.capture")
    line_detector = mod(addon, "pictures.line_detector")
    size = 96
    rgba = np.zeros((size, size, 4), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (xx - 48) ** 2 + (yy - 48) ** 2 < 36 ** 2
    rgba[disc, 3] = 255
    rgba[..., :3] = (120 + 60 * xx / size)[..., None].astype(np.uint8)  # smooth shading: no edge
    lines = line_detector.line_image(rgba)
    ring = disc & ~line_detector._erode(disc)
    assert (lines[ring] == 255).all() and (lines[~ring] == 0).all()
    rgba[disc & (xx > 60), :3] = 30  # a crease-like step inside the silhouette
    lines = line_detector.line_image(rgba)
    inner = lines.astype(bool) & ~ring
    assert inner[20:76, 58:63].sum() >= 40 and inner[:, :55].sum() == 0


def _ribbed_disc(size: int, rib: int):
    """(rgba, disc mask, each pixel's column): a grey disc filling most of the picture, with a rib 3 px
    wide and 20/255 darker from column ``rib``: too faint for Canny, a line to an artist."""
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (xx - size // 2) ** 2 + (yy - size // 2) ** 2 < (size * 5 // 12) ** 2
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[disc, 3] = 255
    rgba[..., :3] = 140
    rgba[disc & (xx >= rib) & (xx < rib + 3), :3] = 120
    return rgba, disc, xx


def test_line_image_finds_thin_lines_but_not_faint_steps(addon):
    """A rib three pixels wide, too faint for Canny, is a line; a step of the same faintness (a facet of
    a flat-shaded mesh) is not; nor is anything within RIDGE_MARGIN of the outline."""
    mod(addon, "pictures.capture")
    line_detector = mod(addon, "pictures.line_detector")
    rgba, disc, xx = _ribbed_disc(96, 30)
    rgba[disc & (xx >= 66), :3] = 120  # the step: 20/255 darker from here on
    ring = disc & ~line_detector._erode(disc, line_detector.RIDGE_MARGIN)
    plain = line_detector.line_image(rgba, ridges=False).astype(bool) & ~ring
    assert not plain.any()  # Canny sees neither
    found = line_detector.line_image(rgba).astype(bool) & ~ring
    assert found[:, 29:34].sum() >= 40  # the rib, along most of its length
    assert not found[:, 34:].any() and not found[:, :29].any()  # nothing at the step or elsewhere


def test_line_image_finds_thin_lines_in_the_sharper_picture(addon):
    """A rib three pixels wide in a 192 px picture is a smudge at the job's 96 px that nothing finds;
    found in the picture itself and pooled, it is one line, where it is."""
    mod(addon, "pictures.capture")
    line_detector = mod(addon, "pictures.line_detector")
    pixels = mod(addon, "pictures.pixels")
    rgba, _, _ = _ribbed_disc(192, 60)
    small = pixels.resize_rgba(rgba, 96, 96)
    inside = pixels.silhouette(small)
    ring = inside & ~line_detector._erode(inside, line_detector.RIDGE_MARGIN)
    assert not (line_detector.line_image(small).astype(bool) & ~ring).any()
    found = line_detector.line_image(small, detail=rgba).astype(bool) & ~ring
    assert found[:, 30].sum() >= 50 and not found[:, :30].any() and not found[:, 31:].any()


def test_hull_depth_jumps_are_lines_only_where_the_picture_changes(addon):
    """A near part in front of a farther one (a spout before the body) is a line even when the shades
    differ only faintly; a hole in a membrane the hull stretches over a bowl's opening, where the picture
    sees the inside's smooth shading through, is not."""
    mod(addon, "pictures.capture")
    line_detector = mod(addon, "pictures.line_detector")
    pixels = mod(addon, "pictures.pixels")
    size = 96
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (xx - 48) ** 2 + (yy - 48) ** 2 < 40 ** 2
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[disc, 3] = 255
    rgba[..., :3] = (110 + 40 * yy / size)[..., None].astype(np.uint8)  # smooth shading
    depth = np.where(disc, 3.0, 0.0).astype(np.float32)
    near = disc & (xx >= 20) & (xx < 40) & (yy >= 25) & (yy < 70)  # a part in front: 0.5 nearer
    depth[near] = 2.5
    hole = disc & ((xx - 64) ** 2 + (yy - 48) ** 2 < 8 ** 2)  # the membrane at 2.5 with a hole
    depth[disc & (xx >= 52) & (xx < 78) & (yy >= 34) & (yy < 62) & ~hole] = 2.5
    rgba[near, :3] = np.clip(rgba[near, :3].astype(int) + 8, 0, 255)  # 8/255 brighter: faint, under Canny
    inside = pixels.silhouette(rgba)
    luminance = line_detector._smooth_luminance(rgba)[0]
    plain = line_detector.depth_edges(depth, inside)
    assert plain[:, 20:40].sum() >= 40 and plain[:, 52:78].sum() >= 30  # both are depth jumps
    lines = line_detector.depth_edges(depth, inside, luminance)
    assert lines[30:65, 39].sum() >= 30  # the near part's edge, where the picture changes
    assert not lines[:, 50:].any()  # the membrane's hole is not drawn
    drawn = line_detector.line_image(rgba, depth=depth).astype(bool)
    assert drawn[30:65, 39].sum() >= 30 and not drawn[30:66, 50:80].any()


def test_spread_frames_and_test_split(addon, tmp_path):
    capture = mod(addon, "pictures.capture")
    folder = write_sphere_capture(addon, str(tmp_path / "c"), train=20, test=0)
    os.remove(os.path.join(folder, "transforms_test.json"))
    cap = capture.read_capture(os.path.join(folder, "transforms_train.json"))
    assert len(cap.test) == 3 and len(cap.train) == 17 and "every 8th" in cap.test_source
    picked = capture.pick_spread(cap.train, 5)
    assert len(set(picked)) == 5 and picked == sorted(picked) and 0 in picked


def test_round_trip_mesh_to_capture_to_curves_on_the_mesh(addon, capsys, tmp_path):
    """bench/make_capture.py renders a UV sphere that sits off the origin; the sketch made from its
    pictures alone is in the sphere's world frame: the normalisation found from the pictures is the
    mesh's within one stroke width, the strokes lie on the sphere (as close as a sketch of the mesh
    itself lies: the optimiser, not the frame, sets that) and --evaluate scores the held-out pictures."""
    bpy.ops.wm.read_homefile(use_factory_startup=True, use_empty=True)
    bpy.ops.mesh.primitive_uv_sphere_add(segments=48, ring_count=24, radius=RADIUS, location=tuple(CENTER))
    bpy.ops.object.shade_smooth()
    mesh_file = tmp_path / "ball.obj"
    bpy.ops.wm.obj_export(filepath=str(mesh_file), export_selected_objects=True)
    capture = tmp_path / "ball"
    env = {**os.environ, "HOME": str(tmp_path), "BLENDER_USER_RESOURCES": str(tmp_path / "blender")}
    done = subprocess.run([sys.executable, os.path.join(REPO, "bench", "make_capture.py"), str(mesh_file),
                           str(capture), "--views", "16", "--test", "4", "--size", "96"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(capture / "transforms_train.json", encoding="utf-8") as f:
        assert len(json.load(f)["frames"]) == 16
    bpy.ops.wm.read_homefile(use_factory_startup=True)
    report, jobs = tmp_path / "ball.json", tmp_path / "jobs"
    code = addon.cli.main(["--images", str(capture), "--python", BACKEND_PYTHON, "--evaluate", "--json",
                           str(report), "--job-dir", str(jobs), "--no-clip", "--curves", "6", "--iterations", "40",
                           "--views", "12", "--heldout-views", "2", "--image-size", "96"])
    assert code == 0, capsys.readouterr().err
    sketch = bpy.data.objects["ball Sketch"]
    assert "Cube" not in bpy.data.objects  # the factory scene made way for the sketch, as with --input
    width = mod(addon, "scene.stroke_style").stroke_width(sketch)  # one stroke width, scene units
    with open(jobs / "ball" / "job.json", encoding="utf-8") as f:
        source = json.load(f)["source"]
    assert np.linalg.norm(np.array(source["center"]) - CENTER) < width
    assert abs(source["radius"] - RADIUS) < 0.06 * RADIUS  # the hull's bounding sphere (bounds from outside)
    points = mod(addon, "scene.sketch_object").world_control_points(sketch)
    distance = np.abs(np.linalg.norm(points.reshape(-1, 3) - CENTER, axis=1) - RADIUS)
    assert np.median(distance) < 0.06 * RADIUS, np.median(distance)  # a sketch of the mesh itself: ~0.035 R
    assets = json.loads(report.read_text())["assets"]
    assert assets[0]["status"] == "ok" and assets[0]["evaluation"]["f_mean"] > 0.2
    assert sketch["splatsketch_capture"].endswith("transforms_train.json")


@pytest.fixture
def tiny_panel(addon, backend_python):
    """The Sketch panel set to a tiny geometry-only run, with the backend Python in the preferences."""
    props = bpy.context.scene.splatsketch
    props.use_clip, props.curves, props.iterations = False, 3, 4
    props.train_views, props.heldout_views, props.image_size = 4, 1, 64
    prefs = addon.preferences.get_preferences()
    prefs.backend_python = backend_python
    yield props
    prefs.backend_python = ""


def test_add_menu_operator_sketches_a_capture(addon, tiny_panel, tmp_path):
    """Add > Sketch from Images... is in the Add menu; run as a script it runs (blocking) like Generate,
    and the panel's Evaluate scores its sketch on the capture's held-out pictures."""
    draws = bpy.types.VIEW3D_MT_add._dyn_ui_initialize()
    assert mod(addon, "operators.images").menu_add in draws
    folder = write_sphere_capture(addon, str(tmp_path / "ball"))
    before = scene_state()
    assert bpy.ops.splatsketch.sketch_from_images(filepath=os.path.join(folder, "transforms_train.json")) \
        == {"FINISHED"}
    sketch = bpy.data.objects["ball Sketch"]
    assert len(sketch.data.splines) == 3 and sketch["splatsketch_capture"].endswith("transforms_train.json")
    bpy.context.view_layer.objects.active = sketch
    assert bpy.ops.splatsketch.evaluate() == {"FINISHED"} and "splatsketch_evaluation" in sketch
    os.remove(os.path.join(folder, "train", "r_1.png"))
    state = scene_state()
    with pytest.raises(RuntimeError, match="r_1"):
        bpy.ops.splatsketch.sketch_from_images(filepath=os.path.join(folder, "transforms_train.json"))
    assert scene_state() == state and state != before


def test_preview_pads_a_wide_picture_around_its_principal_point(addon):
    centred = mod(addon, "scene.preview")._centred
    picture = np.full((64, 96, 4), 200, np.uint8)
    K = np.array([[80.0, 0, 48.0], [0, 80.0, 32.0], [0, 0, 1]])
    square, K2 = centred(picture, K)
    assert square.shape == (96, 96, 4) and K2[0, 2] == K2[1, 2] == 48.0
    assert (square[16:80, :, 3] == 200).all() and (square[:16, :, 3] == 0).all()


def test_run_again_after_a_picture_sketch_reruns_the_capture(addon, tiny_panel, tmp_path):
    """The Result box's Run Again on a sketch made from pictures runs that capture again with the next
    seed (not Generate, which would ask for a mesh)."""
    folder = write_sphere_capture(addon, str(tmp_path / "ball"))
    props, path = tiny_panel, os.path.join(folder, "transforms_train.json")
    assert bpy.ops.splatsketch.sketch_from_images(filepath=path) == {"FINISHED"}
    seed = props.seed
    assert bpy.ops.splatsketch.sketch_from_images(filepath=path, new_seed=True) == {"FINISHED"}
    assert props.seed == seed + 1 and "ball Sketch.001" in bpy.data.objects
    assert bpy.data.objects["ball Sketch.001"]["splatsketch_seed"] == seed + 1
    from test_addon import _draw

    state = bpy.context.window_manager.splatsketch
    assert state.last_result == "ball Sketch.001"
    log = _draw(addon.panels.CLASSES[1], bpy.context)  # the Result box offers the capture again
    assert ("operator", "splatsketch.sketch_from_images") in log and ("operator", "splatsketch.generate") not in log


def _ball_and_wire(viewmat, K, size, tip, wire_px=1.2):
    """Alpha of a unit ball at the origin with a straight wire from its surface out to ``tip``, the
    wire ``wire_px`` wide in every picture (far thinner than a hull cell)."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    def project(p):
        c = viewmat[:3, :3] @ p + viewmat[:3, 3]
        return np.array([c[0] / c[2] * K[0, 0] + K[0, 2], c[1] / c[2] * K[1, 1] + K[1, 2]]), c[2]
    (cx, cy), z = project(np.zeros(3))
    ball = (xs - cx) ** 2 + (ys - cy) ** 2 < (K[0, 0] / np.sqrt(z ** 2 - 1.0)) ** 2
    (ax, ay), _ = project(tip / np.linalg.norm(tip))
    (bx, by), _ = project(tip)
    d = np.array([bx - ax, by - ay])
    t = np.clip(((xs - ax) * d[0] + (ys - ay) * d[1]) / max(d @ d, 1e-9), 0, 1)
    wire = np.hypot(xs - ax - t * d[0], ys - ay - t * d[1]) < wire_px / 2
    return (ball | wire).astype(np.float32)


def test_visual_hull_keeps_a_wire_thinner_than_its_cells(addon):
    """A wire a pixel wide falls between the hull's grid points in most views; the hull still reaches
    its tip (so the normalisation holds the whole object), and the ball keeps its own surface."""
    visual_hull, pixels, cameras = (mod(addon, name) for name in ("pictures.visual_hull", "pictures.pixels",
                                                                  "contract.cameras"))
    size, tip = 256, np.array([0.0, 0.0, 2.2])
    viewmats, Ks = cameras.orbit_cameras(24, size, 40.0)
    viewmats = viewmats.astype(float).copy()
    viewmats[:, :3, 3] *= 2.5  # far enough that the ball and the wire are in every picture
    Ks = Ks.astype(float)
    alphas = [_ball_and_wire(v, K, size, tip) for v, K in zip(viewmats, Ks)]
    vertices, _ = visual_hull.visual_hull(viewmats, Ks, alphas)
    along = vertices @ (tip / np.linalg.norm(tip))
    assert along.max() > 0.95 * np.linalg.norm(tip)
    wire = vertices[along > 1.2]
    assert len(wire) > 0 and np.hypot(*(wire[:, :2] - tip[:2]).T).max() < 0.08  # a tube round the wire
    ball = vertices[along < 0.9]
    assert np.median(np.linalg.norm(ball, axis=1)) < 1.06
    field, near = visual_hull.carve(viewmats, Ks, alphas, -np.full(3, 2.4), np.full(3, 2.4), 64)
    assert not (field[32, 32, 56:] > pixels.ALPHA_THRESHOLD).any()  # the plain carving loses the wire


def test_a_bad_capture_leaves_the_other_assets_of_the_command_running(addon, capsys, tmp_path):
    deep = write_sphere_capture(addon, str(tmp_path / "deep"))
    _deep_json(deep)
    good = write_sphere_capture(addon, str(tmp_path / "good"))
    code = addon.cli.main(["--images", deep, "--images", good, "--python", BACKEND_PYTHON, *TINY])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("splatsketch: error")]
    assert code == 1 and len(lines) == 1 and "nested more than" in lines[0] and "Traceback" not in err, err
    assert "good Sketch" in bpy.data.objects


def test_a_long_capture_decodes_only_the_pictures_it_uses(addon, tmp_path, monkeypatch):
    """The hull is carved from at most HULL_FRAMES pictures spread round the object, and only those and
    the job's views are decoded: thousands of frames cost what a hundred do."""
    capture, capture_job = mod(addon, "pictures.capture"), mod(addon, "scene.capture_job")
    monkeypatch.setattr(capture_job, "HULL_FRAMES", 8)
    cap = capture.read_capture(write_sphere_capture(addon, str(tmp_path / "c"), train=40, size=48))
    steps = capture_job.iter_write_capture_job(str(tmp_path / "job"), cap, {}, train_views=4, heldout_views=2,
                                               size=48)
    assert next(steps)[1] == 8 + 2 + 1 + 4 + 2  # pictures, held-out pictures, the hull, each view's lines
    placed = mod(addon, "scene.targets").drain(steps)
    assert placed["train"] == 4 and np.linalg.norm(np.array(placed["center"]) - CENTER) < 0.1 * RADIUS


def test_a_stop_request_ends_every_long_loop_of_a_capture(addon, tmp_path):
    """Reading frames, carving the hull and growing lines each look at the stop flag SIGTERM sets."""
    capture, runner = mod(addon, "pictures.capture"), mod(addon, "stop_request")
    visual_hull, line_detector = mod(addon, "pictures.visual_hull"), mod(addon, "pictures.line_detector")
    folder = write_sphere_capture(addon, str(tmp_path / "c"), train=12, size=48)
    cap = capture.read_capture(folder)
    loaded = mod(addon, "scene.targets").drain(mod(addon, "scene.capture_job").iter_load(cap.train, 48, hull=True))
    runner.request_stop("SIGTERM")
    try:
        for work in (lambda: capture.read_capture(folder),
                     lambda: visual_hull.visual_hull(loaded.viewmats, loaded.hull_Ks, loaded.hull_alpha),
                     lambda: line_detector.line_image(loaded.rgba[0])):
            with pytest.raises(runner.Terminated):
                work()
    finally:
        runner.clear_stop()
