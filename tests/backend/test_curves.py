"""Bézier maths: endpoints, the Bernstein basis, lengths, gradients to control points."""

import torch

from backend.curves import bernstein_matrix, curve_lengths, sample_curves, splat_means


def test_samples_hit_the_endpoints_and_basis_sums_to_one():
    cp = torch.randn(5, 4, 3)
    s = sample_curves(cp, 11)
    torch.testing.assert_close(s[:, 0], cp[:, 0])
    torch.testing.assert_close(s[:, -1], cp[:, 3])
    torch.testing.assert_close(bernstein_matrix(11).sum(dim=1), torch.ones(11))


def test_midpoint_matches_de_casteljau():
    cp = torch.randn(1, 4, 3, dtype=torch.float64)
    a = [cp[0, i] for i in range(4)]
    for _ in range(3):
        a = [(a[i] + a[i + 1]) / 2 for i in range(len(a) - 1)]
    torch.testing.assert_close(sample_curves(cp, 3)[0, 1], a[0])


def test_straight_curve_length_and_splat_layout():
    cp = torch.tensor([[[0.0, 0, 0], [1 / 3, 0, 0], [2 / 3, 0, 0], [1.0, 0, 0]]])
    assert abs(float(curve_lengths(cp)) - 1.0) < 1e-5
    assert splat_means(torch.randn(3, 4, 3), 8).shape == (24, 3)


def test_gradients_reach_every_control_point():
    cp = torch.randn(2, 4, 3, requires_grad=True)
    sample_curves(cp, 16).pow(2).sum().backward()
    assert (cp.grad.abs().sum(dim=-1) > 0).all()


# --- chains of segments (strokes of S cubics joined G1) ------------------------------------------

from backend.curves import chain_matrix, enforce_g1, g1_error, segment_count, split_segments, subdivide  # noqa: E402


def test_one_segment_chain_is_the_single_cubic():
    torch.testing.assert_close(chain_matrix(17, 1), bernstein_matrix(17))
    weights = chain_matrix(31, 3)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(31))
    assert weights.shape == (31, 10)


def test_chain_samples_pass_through_every_anchor_and_only_one_segment_at_a_time():
    cp = torch.randn(2, 10, 3, dtype=torch.float64)
    s = sample_curves(cp, 31)  # u = 0, 0.1, ..., 3: anchors at samples 0, 10, 20, 30
    for j in range(4):
        torch.testing.assert_close(s[:, 10 * j], cp[:, 3 * j])
    # a sample inside segment 1 depends on rows 3..6 only
    cp2 = cp.clone()
    cp2[:, 0:3] += 1.0
    cp2[:, 7:] += 1.0
    torch.testing.assert_close(sample_curves(cp2, 31)[:, 11:20], s[:, 11:20])


def test_subdivision_traces_the_same_curve_and_is_g1():
    cubics = torch.randn(4, 4, 3, dtype=torch.float64)
    for segments in (2, 3, 5):
        chain = subdivide(cubics, segments)
        assert chain.shape == (4, 3 * segments + 1, 3) and segment_count(chain) == segments
        torch.testing.assert_close(sample_curves(chain, 20 * segments + 1), sample_curves(cubics, 20 * segments + 1))
        assert float(g1_error(chain)) < 1e-9


def test_splitting_every_segment_keeps_the_curves_and_their_joints():
    """Coarse to fine: a G1 chain of S segments becomes one of 2S tracing exactly the same curves, G1."""
    chain = subdivide(torch.randn(3, 4, 3, dtype=torch.float64), 2)
    chain[:, 4] += 0.3 * (chain[:, 4] - chain[:, 3])  # an uneven joint: G1, not C1
    fine = split_segments(chain)
    assert fine.shape == (3, 13, 3) and segment_count(fine) == 4
    torch.testing.assert_close(sample_curves(fine, 161), sample_curves(chain, 161))
    assert float(g1_error(fine)) < 1e-9


def test_g1_projection_realigns_bent_joints_and_keeps_handle_lengths():
    chain = subdivide(torch.randn(3, 4, 3, dtype=torch.float64), 3)
    bent = chain + 0.05 * torch.randn_like(chain)
    assert float(g1_error(bent)) > 1e-3
    lengths = (bent[:, 2::3][:, :2] - bent[:, 3:-1:3]).norm(dim=-1), (bent[:, 4::3] - bent[:, 3:-1:3]).norm(dim=-1)
    anchors = bent[:, ::3].clone()
    enforce_g1(bent)
    assert float(g1_error(bent)) < 1e-9
    torch.testing.assert_close(bent[:, ::3], anchors)  # anchors never move
    torch.testing.assert_close((bent[:, 2::3][:, :2] - bent[:, 3:-1:3]).norm(dim=-1), lengths[0])
    torch.testing.assert_close((bent[:, 4::3] - bent[:, 3:-1:3]).norm(dim=-1), lengths[1])


def test_segment_count_refuses_other_shapes():
    import pytest

    for rows in (3, 5, 6):
        with pytest.raises(ValueError, match=r"3\*S\+1"):
            segment_count(torch.zeros(1, rows, 3))
