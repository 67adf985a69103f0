"""Orbit cameras in OpenCV convention (x right, y down, z forward), numpy only.

The Blender add-on imports this module too (it needs no torch), so camera placement and the one
Blender <-> OpenCV conversion exist exactly once. ``viewmat`` is world-to-camera 4x4, ``K`` is 3x3,
pixel centres sit at +0.5 (as in gsplat).
"""

from __future__ import annotations

import math

import numpy as np

# Blender cameras look down -Z with +Y up; OpenCV looks down +Z with +Y down.
BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
DEFAULT_FOV_DEG = 40.0
DEFAULT_ELEVATION_DEG = (-30.0, 75.0)


def viewmat_from_blender(matrix_world) -> np.ndarray:
    """OpenCV world-to-camera matrix of a Blender camera: diag(1,-1,-1,1) @ inverse(matrix_world)."""
    return BLENDER_TO_OPENCV @ np.linalg.inv(np.asarray(matrix_world, dtype=np.float64))


def blender_matrix_world(viewmat) -> np.ndarray:
    """Inverse of :func:`viewmat_from_blender`: the Blender camera's matrix_world for an OpenCV viewmat."""
    return np.linalg.inv(np.asarray(viewmat, dtype=np.float64)) @ BLENDER_TO_OPENCV


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera matrix of a camera at ``eye`` looking at ``target`` (world +Z is up)."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-8:  # looking straight up or down: any right vector will do
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    viewmat = np.eye(4)
    viewmat[:3, :3] = rotation
    viewmat[:3, 3] = -rotation @ eye
    return viewmat


def intrinsics(size: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """Pinhole K for a square ``size`` x ``size`` image with the given full field of view."""
    focal = 0.5 * size / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[focal, 0.0, size / 2.0], [0.0, focal, size / 2.0], [0.0, 0.0, 1.0]])


def orbit_distance(fov_deg: float = DEFAULT_FOV_DEG, fill: float = 0.9) -> float:
    """Distance at which the unit sphere spans ``fill`` of the frame's half-width."""
    return 1.0 / (fill * math.sin(math.radians(fov_deg) / 2.0))


def orbit_directions(count: int, elevation_deg=DEFAULT_ELEVATION_DEG, phase: float = 0.0) -> np.ndarray:
    """``count`` unit vectors spread evenly (Fibonacci lattice) over a band of elevations.

    Heights are uniform in sin(elevation), so the band's area is covered evenly; ``phase`` in [0, 1)
    shifts both lattice coordinates, which gives a disjoint, equally even set for held-out views.
    """
    low, high = (math.sin(math.radians(e)) for e in elevation_deg)
    i = np.arange(count, dtype=np.float64)
    z = low + (high - low) * ((i + 0.5 + phase) % count) / count
    azimuth = GOLDEN_ANGLE * (i + phase * 7.0) + math.pi / 4.0
    ring = np.sqrt(np.clip(1.0 - z * z, 0.0, 1.0))
    return np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=1)


def orbit_cameras(count: int, size: int, fov_deg: float = DEFAULT_FOV_DEG,
                  elevation_deg=DEFAULT_ELEVATION_DEG, phase: float = 0.0, fill: float = 0.9):
    """``(viewmats [V,4,4], Ks [V,3,3])`` float32 for cameras orbiting the unit sphere."""
    distance = orbit_distance(fov_deg, fill)
    dirs = orbit_directions(count, elevation_deg, phase)
    viewmats = np.stack([look_at(d * distance) for d in dirs]) if count else np.zeros((0, 4, 4))
    Ks = np.repeat(intrinsics(size, fov_deg)[None], count, axis=0)
    return viewmats.astype(np.float32), Ks.astype(np.float32)


def train_and_heldout_cameras(train: int, heldout: int, size: int, fov_deg: float = DEFAULT_FOV_DEG,
                              elevation_deg=DEFAULT_ELEVATION_DEG):
    """Training cameras plus a disjoint held-out set; returns ``(viewmats, Ks, is_train [V] bool)``."""
    vt, kt = orbit_cameras(train, size, fov_deg, elevation_deg, phase=0.0)
    vh, kh = orbit_cameras(heldout, size, fov_deg, elevation_deg, phase=0.5)
    is_train = np.concatenate([np.ones(train, bool), np.zeros(heldout, bool)])
    return np.concatenate([vt, vh]), np.concatenate([kt, kh]), is_train


def project(points, viewmats, Ks) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``[V,N,2]`` and camera depths ``[V,N]`` of world points ``[N,3]`` in views
    ``viewmats [V,4,4]``, ``Ks [V,3,3]`` (float64). The numpy twin of ``backend.render.pinhole.project``
    (the renderer's projection), written the same way: ``fx * x * (1/z) + cx``."""
    points = np.asarray(points, dtype=np.float64)
    viewmats, Ks = np.asarray(viewmats, dtype=np.float64), np.asarray(Ks, dtype=np.float64)
    cam = np.einsum("vij,nj->vni", viewmats[:, :3, :3], points) + viewmats[:, None, :3, 3]  # [V,N,3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):  # a point on the camera plane: inf, as before
        inv_z = 1.0 / z
    f, c = Ks[:, None, [0, 1], [0, 1]], Ks[:, None, :2, 2]  # [V,1,2]
    return f * cam[..., :2] * inv_z[..., None] + c, z


def project_points(points, viewmat, K) -> tuple[np.ndarray, np.ndarray]:
    """:func:`project` for one view: pixel coordinates ``[N,2]`` and depths ``[N]`` (tests, lifting)."""
    uv, z = project(points, np.asarray(viewmat)[None], np.asarray(K)[None])
    return uv[0], z[0]


def unproject_pixels(uv, depth, viewmat, K) -> np.ndarray:
    """World points for pixel coordinates ``[N,2]`` at camera depths ``[N]`` (z, not ray length)."""
    uv = np.asarray(uv, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    x = (uv[:, 0] - K[0, 2]) / K[0, 0] * depth
    y = (uv[:, 1] - K[1, 2]) / K[1, 1] * depth
    cam = np.stack([x, y, np.asarray(depth, dtype=np.float64)], axis=1)
    inv = np.linalg.inv(np.asarray(viewmat, dtype=np.float64))
    return cam @ inv[:3, :3].T + inv[:3, 3]
