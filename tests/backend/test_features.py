"""Feature-line initialisation: creases, borders and contours of a mesh, chain fitting, set cover."""

import itertools

import numpy as np
import pytest
import torch
from synthetic import uv_sphere

from backend.feature_lines import (
    feature_init,
    feature_polylines,
    fit_chain,
    greedy_cover,
    labelled_feature_polylines,
    sample_chains,
    split_long,
)
from backend.init import initial_curves
from backend.losses.base import Targets
from backend.surface_samples import sample_surface
from contract.cameras import project_points, train_and_heldout_cameras

QUADS = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]  # outward


def cube(half=1.0, split=False):
    """8 corners and 12 outward triangles; ``split``: 4 vertices per face, as a glTF export has."""
    corners = np.array(list(itertools.product((-half, half), repeat=3)), dtype=np.float64)
    if not split:
        faces = [[q[0], q[1], q[2]] for q in QUADS] + [[q[0], q[2], q[3]] for q in QUADS]
        return corners, np.array(faces)
    verts = np.concatenate([corners[q] for q in QUADS])
    faces = [[4 * i, 4 * i + 1, 4 * i + 2] for i in range(6)] + [[4 * i, 4 * i + 2, 4 * i + 3] for i in range(6)]
    return verts, np.array(faces)


def cube_edges(half=1.0):
    """The 12 edges as (a, b) corner pairs: corners that differ in one coordinate."""
    corners = np.array(list(itertools.product((-half, half), repeat=3)))
    return [(corners[i], corners[j]) for i, j in itertools.combinations(range(8), 2)
            if np.count_nonzero(corners[i] != corners[j]) == 1]


def distance_to_segments(points, segments):
    """Distance ``[N]`` of each point to the nearest of the segments (a, b)."""
    best = np.full(len(points), np.inf)
    for a, b in segments:
        t = np.clip((points - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * (b - a)), axis=1))
    return best


def matches_an_edge(polyline, edges, tol=1e-9):
    return any(np.allclose(sorted(map(tuple, polyline)), sorted([tuple(a), tuple(b)]), atol=tol) for a, b in edges)


@pytest.mark.parametrize("split", [False, True])
def test_cube_has_exactly_its_twelve_edges_as_creases(split):
    verts, faces = cube(split=split)
    if split:  # a zero-area sliver on a seam must not count either
        faces = np.concatenate([faces, [[0, 1, 1]]])
    polylines, kinds = labelled_feature_polylines(verts, faces)
    assert kinds == ["crease"] * 12  # no false borders from the split vertices
    edges = cube_edges()
    assert all(len(p) == 2 and matches_an_edge(p, edges) for p in polylines)
    assert len({tuple(sorted(map(tuple, p))) for p in polylines}) == 12


def test_open_grid_has_one_border_cut_at_its_four_corners():
    xy = np.stack(np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), indexing="ij"), -1).reshape(-1, 2)
    verts = np.c_[xy, np.zeros(len(xy))]
    faces = [[a, a + 5, a + 6] for a in (i * 5 + j for i in range(4) for j in range(4))]
    faces += [[a, a + 6, a + 1] for a in (i * 5 + j for i in range(4) for j in range(4))]
    polylines, kinds = labelled_feature_polylines(verts, np.array(faces))
    assert kinds == ["boundary"] * 4
    for p in polylines:  # one straight side each, corner to corner
        assert len(p) == 5
        assert np.abs(p[[0, -1], :2]).min() == 1.0 and np.abs(p[0, :2] - p[-1, :2]).max() == 2.0
        assert np.linalg.matrix_rank(p[1:] - p[0], tol=1e-9) == 1


def test_non_manifold_edge_is_a_crease():
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0.5, 0.5, 1.0]], dtype=np.float64)
    polylines, kinds = labelled_feature_polylines(verts, np.array([[0, 1, 3], [0, 3, 2], [0, 3, 4]]))
    creases = [p for p, k in zip(polylines, kinds) if k == "crease"]
    assert len(creases) == 1 and matches_an_edge(creases[0], [(verts[0], verts[3])])


def test_sphere_contour_is_one_closed_loop_on_the_great_circle():
    verts, faces = uv_sphere(rings=24, segments=48, radius=0.8)
    view = np.array([3.0, 0.8, 1.0]) / np.linalg.norm([3.0, 0.8, 1.0])
    polylines, kinds = labelled_feature_polylines(verts, faces, (1000.0 * view)[None])
    assert kinds == ["contour"] and not feature_polylines(verts, faces)  # view-dependent: no eye, no contour
    assert all(np.array_equal(a, b) for a, b in zip(feature_polylines(verts, faces, (1000.0 * view)[None]), polylines))
    loop = polylines[0]
    assert np.array_equal(loop[0], loop[-1]) and len(loop) > 40
    height = loop @ view
    ring = np.linalg.norm(loop - height[:, None] * view, axis=1)
    edge = 0.8 * np.pi / 24
    assert np.abs(height).max() < edge and np.abs(ring - 0.8).max() < 0.05 * edge + 0.02
    # it goes all the way round
    u = np.cross(view, [0, 0, 1.0])
    u /= np.linalg.norm(u)
    angles = np.arctan2(loop @ np.cross(view, u), loop @ u)
    assert np.histogram(angles, bins=8, range=(-np.pi, np.pi))[0].min() > 0


def test_fit_chain_reproduces_a_line_and_a_quarter_circle():
    line = np.linspace([0.1, -0.2, 0.3], [0.7, 0.4, -0.5], 5)
    direction = (line[-1] - line[0]) / np.linalg.norm(line[-1] - line[0])
    for segments in (1, 3):
        chain = fit_chain(line, segments)
        assert chain.shape == (3 * segments + 1, 3)
        assert np.array_equal(chain[0], line[0]) and np.array_equal(chain[-1], line[-1])
        offset = chain - line[0]
        assert np.abs(offset - (offset @ direction)[:, None] * direction).max() < 1e-12
    theta = np.linspace(0, np.pi / 2, 50)
    arc = np.c_[np.cos(theta), np.sin(theta), np.zeros_like(theta)]
    errors = {s: np.abs(np.linalg.norm(sample_chains(fit_chain(arc, s)[None], 400)[0], axis=1) - 1).max()
              for s in (1, 3)}
    assert errors[1] < 0.01 and errors[3] < 1e-3


def test_fit_chain_is_g1_at_interior_anchors():
    t = np.linspace(0, 3 * np.pi, 200)
    helix = np.c_[0.5 * np.cos(t), 0.5 * np.sin(t), 0.1 * t]
    chain = fit_chain(helix, 4)
    for j in range(1, 4):
        back, ahead = chain[3 * j] - chain[3 * j - 1], chain[3 * j + 1] - chain[3 * j]
        assert np.linalg.norm(np.cross(back, ahead)) < 1e-9 * np.linalg.norm(back) * np.linalg.norm(ahead) + 1e-15
        assert back @ ahead > 0  # on opposite sides of the anchor
    dist = distance_to_segments(sample_chains(chain[None], 50)[0], list(zip(helix[:-1], helix[1:])))
    assert dist.max() < 0.01


def test_split_long_cuts_evenly_and_opens_loops():
    line = np.linspace([0.0, 0, 0], [2.0, 0, 0], 7)
    pieces = split_long([line], 0.9)
    lengths = [np.linalg.norm(np.diff(p, axis=0), axis=1).sum() for p in pieces]
    assert len(pieces) == 3 and np.allclose(lengths, 2 / 3)
    assert all(np.array_equal(a[-1], b[0]) for a, b in zip(pieces[:-1], pieces[1:]))
    theta = np.linspace(0, 2 * np.pi, 13)
    loop = np.c_[0.1 * np.cos(theta), 0.1 * np.sin(theta), np.zeros(13)]
    loop[-1] = loop[0]
    assert len(split_long([loop], 0.9)) == 2


HALF = 0.4  # edges of 0.8: under feature_init's max_length, one stroke each


def cube_targets(size=64, train=8):
    """Targets of a cube whose line images are its 12 edges (visible ones in lines, the others hidden)."""
    viewmats, Ks, is_train = train_and_heldout_cameras(train, 2, size)
    verts, faces = cube(HALF)
    lines = np.zeros((len(viewmats), size, size), np.float32)
    hidden = np.zeros_like(lines)
    t = np.linspace(0, 1, 400)[:, None]
    for v, (vm, K) in enumerate(zip(viewmats.astype(np.float64), Ks.astype(np.float64))):
        eye = -vm[:3, :3].T @ vm[:3, 3]
        for a, b in cube_edges(HALF):
            fixed = np.flatnonzero(a == b)  # the two faces along the edge have these outward normals
            seen = any(HALF - np.sign(a[i]) * eye[i] < 0 for i in fixed)  # n . (centre - eye) < 0
            uv, _ = project_points(a + t * (b - a), vm, K)
            px = np.floor(uv).astype(int)
            ok = (px >= 0).all(1) & (px < size).all(1)
            (lines if seen else hidden)[v, px[ok, 1], px[ok, 0]] = 1.0
    vt, ft = torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces)
    samples, normals = sample_surface(vt, ft, 2000, torch.Generator().manual_seed(0))
    V = len(viewmats)
    return Targets(viewmats=torch.as_tensor(viewmats), Ks=torch.as_tensor(Ks), is_train=torch.as_tensor(is_train),
                   rgb=torch.ones(V, 3, size, size), alpha=torch.zeros(V, size, size), lines=torch.as_tensor(lines),
                   lines_hidden=torch.as_tensor(hidden), vertices=vt, faces=ft, surface_samples=samples,
                   surface_normals=normals)


@pytest.fixture(scope="module")
def targets():
    return cube_targets()


@pytest.mark.parametrize("segments", [1, 3])
def test_feature_init_picks_the_cube_edges(targets, segments):
    strokes = feature_init(12, segments, targets)
    assert strokes.shape == (12, 3 * segments + 1, 3) and strokes.dtype == torch.float32
    points = sample_chains(strokes.double().numpy(), 32)  # [12,P,3]
    edges = cube_edges(HALF)
    assert distance_to_segments(points.reshape(-1, 3), edges).max() < 0.01  # every stroke on an edge
    covered = 0
    for a, b in edges:  # together they draw (nearly) every edge
        along = a + np.linspace(0, 1, 50)[:, None] * (b - a)
        near = np.linalg.norm(along[:, None] - points.reshape(1, -1, 3), axis=2).min(axis=1) < 0.02
        covered += near.mean() > 0.9
    assert covered >= 11
    again = feature_init(12, segments, targets)
    assert torch.equal(strokes, again)


def test_feature_start_pads_with_surface_strokes(targets):
    """Past the 12 edges nothing is left to cover: feature_init gives 12, and the rest start on the
    surface, as chains."""
    assert len(feature_init(16, 2, targets)) == 12
    strokes = initial_curves("features", 16, targets, torch.Generator().manual_seed(1), "cpu", segments=2)
    assert strokes.shape == (16, 7, 3) and torch.isfinite(strokes).all()
    points = sample_chains(strokes.double().numpy(), 16)
    assert distance_to_segments(points[:12].reshape(-1, 3), cube_edges(HALF)).max() < 0.01
    assert np.abs(strokes[12:].numpy()).max() < 0.7  # near the cube, not the unit ball's random walk


def test_balanced_cover_serves_the_view_that_is_least_covered():
    """Two views of 1000 pixels each: view 0 shows the object large (900 line pixels), view 1 small
    (60). Counting pixels, a second stroke on view 0's lines (300 new) beats the one that draws all of
    view 1; balanced, all of view 1 (log 66/6) beats half of view 0 (log 590/90), which comes next."""
    per_view = 1000
    view0, view1 = np.arange(0, 900), per_view + np.arange(0, 60)
    covered = [view0[:500], view0[500:800], view1]
    off = np.zeros(3)
    assert greedy_cover(covered, off, 2, 2 * per_view) == [0, 1]
    balanced = greedy_cover(covered, off, 2, 2 * per_view, view_lines=np.array([900, 60]), balance=0.1)
    assert balanced == [2, 0]
    # balance 0, or no per-view counts, is the plain pixel count
    assert greedy_cover(covered, off, 2, 2 * per_view, view_lines=np.array([900, 60]), balance=0.0) == [0, 1]
    # views of equal size: the balanced cover keeps the plain order
    same = [view0[:500], view0[500:800], per_view + np.arange(0, 400)]
    assert greedy_cover(same, off, 3, 2 * per_view, view_lines=np.array([900, 900]), balance=0.1) == \
        greedy_cover(same, off, 3, 2 * per_view) == [0, 2, 1]
