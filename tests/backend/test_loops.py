"""The curl measure on known shapes: a figure-eight loops, a C-shape and a straight stroke do not."""

import math

import numpy as np

from backend.loops import crosses_itself, loop_metrics, sample_strokes, total_turning
from contract.cameras import orbit_cameras


def _eight():
    """A curl in the z=0 plane as one cubic: the handles cross, so the curve loops through itself."""
    return np.array([[[-0.5, -0.3, 0.0], [1.2, 0.6, 0.0], [-1.2, 0.6, 0.0], [0.5, -0.3, 0.0]]])


def _c_shape():
    return np.array([[[0.3, -0.4, 0.0], [-0.4, -0.4, 0.0], [-0.4, 0.4, 0.0], [0.3, 0.4, 0.0]]])


def test_crossing_of_plane_polylines():
    t = np.linspace(-math.pi, math.pi, 200)
    curl = np.stack([t - 2 * np.sin(t), 1 - 2 * np.cos(t)], axis=1)  # a prolate cycloid's loop
    assert crosses_itself(curl)
    arc = np.stack([np.cos(t / 2), np.sin(t / 2)], axis=1)  # half a circle
    assert not crosses_itself(arc)
    assert not crosses_itself(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]))


def test_a_figure_eight_counts_a_c_shape_does_not():
    viewmats, Ks = orbit_cameras(24, 128)
    eight = loop_metrics(_eight(), viewmats, Ks)
    c = loop_metrics(_c_shape(), viewmats, Ks)
    # A plane figure crosses itself in every view that does not see it edge-on.
    assert eight["looping_strokes"] == 1 and eight["crossing_views"][0] >= 0.5
    assert c["looping_strokes"] == 0 and c["crossing_views"][0] == 0.0
    both = loop_metrics(np.concatenate([_eight(), _c_shape()]), viewmats, Ks)
    assert both["looping_strokes"] == 1 and both["looping_share"] == 0.5


def test_total_turning():
    line = sample_strokes(np.array([[[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0.0]]]))
    assert total_turning(line)[0] < 1e-6
    c = total_turning(sample_strokes(_c_shape()))[0]
    assert 0.8 * math.pi < c < 1.3 * math.pi, c
    assert total_turning(sample_strokes(_eight()))[0] > 1.5 * math.pi


def test_chains_of_segments_are_sampled_with_shared_ends():
    chain = np.array([[[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0], [5, 0, 0], [6, 0, 0.0]]])  # S=2
    points = sample_strokes(chain, samples_per_segment=8)
    assert points.shape == (1, 17, 3) and np.allclose(points[0, 8], [3, 0, 0])


def test_the_turning_loss_pays_for_curls_only():
    """The optimiser's turning term: a C (about pi) and a straight stroke cost little, a curl much;
    and its gradient unwinds the curl."""
    import torch

    from backend.losses.geometry import TurningLoss

    loss = TurningLoss()
    as_inputs = lambda cp: type("I", (), {"samples": torch.as_tensor(sample_strokes(cp, 63), dtype=torch.float32),  # noqa: E731
                                          "control_points": torch.as_tensor(cp)})
    straight = loss(as_inputs(np.array([[[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0.0]]])))
    c_shape, curl = loss(as_inputs(_c_shape())), loss(as_inputs(_eight()))
    assert straight.item() == 0.0 and c_shape.item() < 0.3 * curl.item()
    cp = torch.tensor(_eight(), dtype=torch.float32, requires_grad=True)
    from backend.curves import sample_curves

    before = loss(type("I", (), {"samples": sample_curves(cp, 64), "control_points": cp})).item()
    opt = torch.optim.Adam([cp], lr=0.02)
    for _ in range(100):
        opt.zero_grad()
        loss(type("I", (), {"samples": sample_curves(cp, 64), "control_points": cp})).backward()
        opt.step()
    assert loss(type("I", (), {"samples": sample_curves(cp, 64), "control_points": cp})).item() < 0.2 * before


def _three_quarter_circle():
    """An outline that bends through three quarters of a turn: one G1 chain of 3 segments, no loop."""
    k = 4 / 3 * math.tan(math.pi / 8)  # a quarter circle's cubic handles
    points = []
    for s in range(3):
        a, b = s * math.pi / 2, (s + 1) * math.pi / 2
        p0, p3 = np.array([math.cos(a), math.sin(a), 0.0]), np.array([math.cos(b), math.sin(b), 0.0])
        t0, t3 = np.array([-math.sin(a), math.cos(a), 0.0]), np.array([-math.sin(b), math.cos(b), 0.0])
        points += ([p0] if s == 0 else []) + [p0 + k * t0, p3 - k * t3, p3]
    return np.array([points])


def test_the_coiling_loss_pays_for_loops_not_for_long_bends():
    """The chord / arc term: a figure-eight and a hairpin pay, a C and a three-quarter outline do not
    (nor does the turning term now; a limit of pi charged it); its gradient opens the eight until no view
    sees it cross."""
    import torch

    from backend.curves import sample_curves
    from backend.losses.geometry import CoilingLoss, TurningLoss

    coiling = CoilingLoss()
    as_inputs = lambda cp: type("I", (), {"samples": sample_curves(torch.as_tensor(cp, dtype=torch.float32), 64),  # noqa: E731
                                          "control_points": torch.as_tensor(cp)})
    outline = _three_quarter_circle()
    assert coiling(as_inputs(outline)).item() == 0.0 and TurningLoss(3)(as_inputs(outline)).item() == 0.0
    assert TurningLoss(3, free_stroke=math.pi)(as_inputs(outline)).item() > 1.0  # the limit of before
    assert coiling(as_inputs(_c_shape())).item() == 0.0
    hairpin = np.array([[[0, 0, 0], [1.5, 0, 0], [1.5, 0.05, 0], [0, 0.05, 0.0]]])
    assert coiling(as_inputs(hairpin)).item() > 1e-3 and coiling(as_inputs(_eight())).item() > 1e-3

    viewmats, Ks = orbit_cameras(24, 128)
    cp = torch.tensor(_eight(), dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([cp], lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        coiling(type("I", (), {"samples": sample_curves(cp, 64), "control_points": cp})).backward()
        opt.step()
    assert loop_metrics(cp.detach().numpy(), viewmats, Ks)["looping_strokes"] == 0
