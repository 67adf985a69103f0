"""Line images, depth and silhouette drawn from the mesh (the "mesh" targets) on shapes whose lines are known."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic import uv_sphere, write_job

from backend.errors import BadJob
from backend.job import load_job
from backend.mesh_targets import mesh_views
from contract.cameras import intrinsics, look_at, project_points

SIZE = 128
QUADS = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]  # outward


def cube(half=0.5):
    corners = np.array(list(itertools.product((-half, half), repeat=3)), dtype=np.float64)
    faces = [[q[0], q[1], q[2]] for q in QUADS] + [[q[0], q[2], q[3]] for q in QUADS]
    return corners, np.array(faces)


def torus(major=0.6, minor=0.25, rings=96, sides=32):
    """A closed torus around the z axis, outward triangles."""
    u, v = np.meshgrid(np.arange(rings) * 2 * np.pi / rings, np.arange(sides) * 2 * np.pi / sides, indexing="ij")
    verts = np.stack([(major + minor * np.cos(v)) * np.cos(u), (major + minor * np.cos(v)) * np.sin(u),
                      minor * np.sin(v)], axis=-1).reshape(-1, 3)
    faces = []
    for i, j in itertools.product(range(rings), range(sides)):
        a, b = i * sides + j, ((i + 1) % rings) * sides + j
        c, d = ((i + 1) % rings) * sides + (j + 1) % sides, i * sides + (j + 1) % sides
        faces += [[a, b, c], [a, c, d]]
    return verts, np.array(faces)


def view(eye, up=(0.0, 0.0, 1.0)):
    return look_at(eye, up=up)[None], intrinsics(SIZE)[None]


def draw(verts, faces, viewmat, K):
    out = mesh_views(verts, faces, viewmat, K, SIZE, SIZE)
    return {key: value[0] for key, value in out.items()}


def pixel(point, viewmat, K):
    uv, _ = project_points(np.asarray(point, dtype=np.float64)[None], viewmat[0], K[0])
    return np.floor(uv[0]).astype(int)


def near(mask, xy, radius=1):
    x, y = xy
    return bool(mask[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1].any())


def only_beside(hidden, visible):
    """Whether every hidden pixel touches a visible one: a polygonal contour folds over itself by a
    hair where it zigzags (its far edges are truly hidden), but nothing lies behind the surface."""
    grown = visible.copy()
    for dy, dx in itertools.product((-1, 0, 1), repeat=2):
        grown |= np.roll(np.roll(visible, dy, 0), dx, 1)
    return not (hidden & ~grown).any()


def test_cube_from_a_corner_draws_the_nine_near_edges_and_hides_the_three_far_ones():
    verts, faces = cube()
    viewmat, K = view((2.0, 1.7, 1.4))
    out = draw(verts, faces, viewmat, K)
    lines, hidden = out["lines"] > 127, out["lines_hidden"] > 127
    far = verts[np.argmin(verts @ np.array([2.0, 1.7, 1.4]))]  # the corner facing away from the eye
    for a, b in itertools.combinations(verts, 2):
        if np.count_nonzero(a != b) != 1:
            continue
        for t in (0.3, 0.5, 0.7):
            xy = pixel(a + t * (b - a), viewmat, K)
            if (a == far).all() or (b == far).all():
                assert near(hidden, xy) and not lines[xy[1], xy[0]], f"far edge {a}-{b} should be hidden"
            else:
                assert near(lines, xy), f"near edge {a}-{b} should be visible"
    # The triangulation's diagonals are flat (no crease): nothing is drawn across a face's middle.
    for q in QUADS:
        centre = verts[q].mean(axis=0)
        if centre @ np.array([2.0, 1.7, 1.4]) > 0:
            assert not near(lines, pixel(centre, viewmat, K), radius=3)
    assert (out["depth"] > 0).sum() == (out["rgba"][..., 3] > 0).sum() > 0


def test_sphere_outline_is_the_silhouette_circle_and_nothing_inside_it():
    verts, faces = uv_sphere(rings=48, segments=96, radius=0.8)
    distance = 2.8
    viewmat, K = view((distance, 0.0, 0.3))
    out = draw(verts.astype(np.float64), faces, viewmat, K)
    lines = out["lines"] > 127
    ys, xs = np.nonzero(lines)
    centre = pixel((0.0, 0.0, 0.0), viewmat, K) + 0.5
    radius_px = np.hypot(xs + 0.5 - centre[0], ys + 0.5 - centre[1])
    eye_distance = np.hypot(distance, 0.3)
    expected = K[0, 0, 0] * np.tan(np.arcsin(0.8 / eye_distance))
    assert np.abs(radius_px - expected).max() < 1.5
    angles = np.arctan2(ys + 0.5 - centre[1], xs + 0.5 - centre[0])
    covered = np.unique(np.floor((angles + np.pi) / (2 * np.pi) * 180).astype(int))
    assert len(covered) >= 175  # the circle is closed (2-degree bins)
    assert only_beside(out["lines_hidden"] > 127, lines)  # the outline's own zigzag at most: nothing behind
    assert abs((out["depth"] > 0).sum() - np.pi * expected**2) < 0.03 * np.pi * expected**2


def seamed_sphere(rings=24, segments=48, radius=0.8):
    """A UV sphere cut open along the meridian at +x, as a file with UV seams stores one: the seam's
    vertices are there twice, at the same places."""
    theta, phi = np.meshgrid(np.linspace(0, np.pi, rings + 1), np.linspace(0, 2 * np.pi, segments + 1), indexing="ij")
    verts = radius * np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1)
    index = np.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    faces = []
    for i, j in itertools.product(range(rings), range(segments)):
        a, b, c, d = index[i, j], index[i + 1, j], index[i + 1, j + 1], index[i, j + 1]
        faces += [[a, b, c], [a, c, d]]
    faces = np.array(faces)
    tri = verts.reshape(-1, 3)[faces]
    keep = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) > 1e-12  # no pole slivers
    return verts.reshape(-1, 3), faces[keep]


def test_a_seam_of_duplicated_vertices_draws_no_border():
    verts, faces = seamed_sphere()
    viewmat, K = view((2.8, 0.3, 0.4))  # the seam runs down the middle of the visible half
    out = draw(verts, faces, viewmat, K)
    ys, xs = np.nonzero(out["lines"] > 127)
    centre = pixel((0.0, 0.0, 0.0), viewmat, K) + 0.5
    expected = K[0, 0, 0] * np.tan(np.arcsin(0.8 / np.linalg.norm([2.8, 0.3, 0.4])))
    assert np.hypot(xs + 0.5 - centre[0], ys + 0.5 - centre[1]).min() > expected - 3  # the outline only


@pytest.mark.parametrize("winding", ["same", "reversed"])
def test_a_double_sided_shell_draws_the_lines_of_one_side(winding):
    """Every face listed twice (a double-sided model's shell) is one surface: the sphere still draws
    its outline only, not every edge as a non-manifold one."""
    verts, faces = seamed_sphere()
    twice = np.concatenate([faces, faces if winding == "same" else faces[:, ::-1]])
    viewmat, K = view((2.8, 0.3, 0.4))
    once, doubled = draw(verts, faces, viewmat, K), draw(verts, twice, viewmat, K)
    assert (once["lines"] > 127).sum() > 100
    assert np.array_equal(doubled["lines"], once["lines"])


def test_torus_far_contour_is_hidden_from_the_side_and_its_inner_contour_shown_from_above():
    verts, faces = torus()
    major, minor = 0.6, 0.25
    side, K = view((0.0, -2.9, 0.0))
    out = draw(verts, faces, side, K)
    near_top, far_top = pixel((0.0, -major, minor), side, K), pixel((0.0, major, minor), side, K)
    assert near(out["lines"] > 127, near_top) and not near(out["lines_hidden"] > 127, near_top)
    assert near(out["lines_hidden"] > 127, far_top) and not near(out["lines"] > 127, far_top)

    top, K = view((0.0, 0.0, 2.9), up=(0.0, 1.0, 0.0))
    out = draw(verts, faces, top, K)
    for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        rim = pixel(((major - minor) * np.cos(angle), (major - minor) * np.sin(angle), 0.0), top, K)
        assert near(out["lines"] > 127, rim, radius=2), f"inner contour at {angle:.2f} rad should be visible"
    assert only_beside(out["lines_hidden"] > 127, out["lines"] > 127)


def without(folder, *keys, **settings):
    """Drop ``keys`` from the job's views.npz and lay ``settings`` over its job.json's."""
    with np.load(folder / "views.npz") as views:
        arrays = {key: views[key] for key in views.files if key not in keys}
    np.savez(folder / "views.npz", **arrays)
    meta = json.loads((folder / "job.json").read_text())
    meta["settings"].update(settings)
    (folder / "job.json").write_text(json.dumps(meta))
    return arrays


def test_a_job_without_images_gets_them_drawn_and_a_job_with_lines_keeps_its_own(tmp_path):
    folder = write_job(tmp_path / "drawn")
    without(folder, "rgba", "lines", targets="mesh")
    job = load_job(folder)
    assert job.arrays["lines"].shape == job.arrays["depth"].shape == (12, 64, 64)
    assert job.arrays["rgba"].shape == (12, 64, 64, 4) and (job.arrays["lines"] == 255).any()
    assert job.drawn_seconds > 0

    kept = write_job(tmp_path / "kept")
    own = without(kept, targets="mesh")["lines"]
    job = load_job(kept)
    assert np.array_equal(job.arrays["lines"], own) and "depth" in job.arrays  # only what is missing is drawn


def test_freestyle_targets_draw_nothing_and_a_job_without_images_is_refused_as_before(tmp_path):
    folder = write_job(tmp_path / "job")
    without(folder, "rgba", "lines", targets="freestyle")
    with pytest.raises(BadJob, match="missing array 'rgba'"):
        load_job(folder)


def test_images_left_out_need_centred_cameras(tmp_path):
    folder = write_job(tmp_path / "job")
    arrays = without(folder, "rgba", "lines", targets="mesh")
    arrays["Ks"][0, 0, 2] += 3.0
    np.savez(folder / "views.npz", **arrays)
    with pytest.raises(BadJob, match="principal point at the centre"):
        load_job(folder)


def test_the_run_says_how_long_its_phases_took(tmp_path):
    folder = write_job(tmp_path / "job", settings={"iterations": 4})
    without(folder, "rgba", "lines", targets="mesh")
    done = subprocess.run([sys.executable, "-m", "backend", "run", str(folder)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert done.returncode == 0, done.stderr
    phases = json.loads((folder / "result.json").read_text())["phases"]
    assert set(phases) == {"targets", "features", "optimisation"}
    assert phases["targets"] > 0 and phases["features"] >= 0 and phases["optimisation"] > 0
