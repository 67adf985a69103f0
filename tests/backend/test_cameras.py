"""Camera conventions: OpenCV look-at, the Blender conversion, intrinsics, orbit coverage."""

import numpy as np

from contract import cameras


def test_look_at_puts_target_on_the_optical_axis_in_front():
    vm = cameras.look_at([3.0, -2.0, 1.0])
    uv, z = cameras.project_points([[0, 0, 0]], vm, cameras.intrinsics(100))
    np.testing.assert_allclose(uv[0], [50, 50], atol=1e-9)
    assert z[0] > 0
    np.testing.assert_allclose(vm[:3, :3] @ vm[:3, :3].T, np.eye(3), atol=1e-12)


def test_world_up_projects_upwards_and_right_is_right():
    vm = cameras.look_at([0.0, -3.0, 0.0])  # looking along +Y, +Z is up, +X is right
    K = cameras.intrinsics(100)
    uv, _ = cameras.project_points([[0, 0, 0.5], [0.5, 0, 0]], vm, K)
    assert uv[0, 1] < 50  # above centre: smaller y (OpenCV y points down)
    assert uv[1, 0] > 50


def test_blender_conversion_round_trip_and_axes():
    vm = cameras.look_at([1.0, 2.0, 3.0])
    mw = cameras.blender_matrix_world(vm)
    np.testing.assert_allclose(cameras.viewmat_from_blender(mw), vm, atol=1e-12)
    # A Blender camera looks down its local -Z with +Y up.
    forward_blender = -mw[:3, 2]
    np.testing.assert_allclose(forward_blender, vm[2, :3], atol=1e-12)
    np.testing.assert_allclose(mw[:3, 1], -vm[1, :3], atol=1e-12)
    np.testing.assert_allclose(mw[:3, 3], [1.0, 2.0, 3.0], atol=1e-12)


def test_unproject_inverts_project():
    vm, K = cameras.look_at([2.0, 1.0, 2.5]), cameras.intrinsics(64)
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (10, 3))
    uv, z = cameras.project_points(pts, vm, K)
    np.testing.assert_allclose(cameras.unproject_pixels(uv, z, vm, K), pts, atol=1e-9)


def test_orbit_frames_the_unit_sphere_and_splits_disjointly():
    viewmats, Ks, is_train = cameras.train_and_heldout_cameras(12, 4, 128)
    assert viewmats.shape == (16, 4, 4) and Ks.shape == (16, 3, 3) and is_train.sum() == 12
    dirs = -np.einsum("vij,vi->vj", viewmats[:, :3, :3], viewmats[:, :3, 3])  # camera centres
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    assert min(np.linalg.norm(dirs[:12, None] - dirs[None, 12:], axis=2).ravel()) > 1e-3
    # The unit sphere fits in the frame from every camera: its silhouette radius < half the image.
    for vm, K in zip(viewmats, Ks):
        dist = np.linalg.norm(vm[:3, 3])
        silhouette = K[0, 0] * np.tan(np.arcsin(1.0 / dist))
        assert 0.6 * 64 < silhouette < 64


def test_orbit_directions_cover_the_band_evenly():
    dirs = cameras.orbit_directions(200, (-30, 75))
    elev = np.degrees(np.arcsin(dirs[:, 2]))
    assert elev.min() >= -30 - 1e-6 and elev.max() <= 75 + 1e-6
    az = np.arctan2(dirs[:, 1], dirs[:, 0])
    hist, _ = np.histogram(az, bins=8, range=(-np.pi, np.pi))
    assert hist.min() > 0.7 * hist.mean()
