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
