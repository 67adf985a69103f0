"""Curls: does a stroke's drawing cross itself, and how much does it turn (numpy only).

A stroke that loops reads as a scribble, whatever its line F-score. Two measures, for evaluation:

- **looping**: the stroke's projection crosses itself (two non-adjacent pieces of its sampled
  polyline intersect) in at least half of the given views. One view can show a crossing by
  foreshortening; a real curl crosses from most sides.
- **turning**: the total turning of a stroke in 3D, the sum of the angles between consecutive pieces
  of its polyline, in radians (a straight segment 0, a C about pi, a full loop about 2 pi or more).

Strokes are control points ``[K, 3*S+1, 3]`` (S cubic segments sharing end points; S = 1 is
``[K,4,3]``) in normalised space; views are ``viewmats [V,4,4]`` and ``Ks [V,3,3]``.
"""

from __future__ import annotations

import numpy as np

from contract.cameras import project

SAMPLES_PER_SEGMENT = 48


def sample_strokes(control_points, samples_per_segment: int = SAMPLES_PER_SEGMENT) -> np.ndarray:
    """``[K, S*n+1, 3]`` points along each stroke (cubic Bézier segments, end points shared)."""
    cp = np.asarray(control_points, dtype=np.float64)
    if cp.ndim != 3 or cp.shape[2] != 3 or (cp.shape[1] - 1) % 3:
        raise ValueError(f"control points must be [K, 3*S+1, 3], got {list(cp.shape)}")
    segments = (cp.shape[1] - 1) // 3
    t = np.linspace(0.0, 1.0, samples_per_segment + 1)[:, None]
    basis = np.hstack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])  # [n+1,4]
    parts = [np.einsum("ti,kid->ktd", basis, cp[:, 3 * s:3 * s + 4]) for s in range(segments)]
    return np.concatenate([parts[0]] + [p[:, 1:] for p in parts[1:]], axis=1)


def crosses_itself(polyline: np.ndarray) -> bool:
    """Whether a 2D polyline ``[N,2]`` has two non-adjacent pieces that intersect properly."""
    a, b = polyline[:-1], polyline[1:]  # pieces [M,2]
    m = len(a)
    if m < 3:
        return False

    def orient(p, q, r):  # sign of the cross product (q-p) x (r-p), broadcast [M,M]
        return np.sign((q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1])
                       - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0]))

    ai, bi, aj, bj = a[:, None], b[:, None], a[None], b[None]
    o1, o2 = orient(ai, bi, aj), orient(ai, bi, bj)
    o3, o4 = orient(aj, bj, ai), orient(aj, bj, bi)
    hit = (o1 * o2 < 0) & (o3 * o4 < 0)
    idx = np.arange(m)
    hit &= np.abs(idx[:, None] - idx[None]) > 1  # neighbours share an end point
    return bool(hit.any())


def total_turning(points: np.ndarray) -> np.ndarray:
    """Total turning ``[K]`` in radians of polylines ``[K,N,3]`` (zero-length pieces ignored)."""
    d = np.diff(points, axis=1)
    n = np.linalg.norm(d, axis=2)
    ok = n > 1e-9
    u = np.where(ok[..., None], d / np.maximum(n, 1e-12)[..., None], 0.0)
    cos = np.clip((u[:, 1:] * u[:, :-1]).sum(axis=2), -1.0, 1.0)
    both = ok[:, 1:] & ok[:, :-1]
    return np.where(both, np.arccos(cos), 0.0).sum(axis=1)


def loop_metrics(control_points, viewmats, Ks) -> dict:
    """``looping_strokes`` (count), ``looping_share``, ``turning_mean`` / ``turning_max`` (radians per
    segment) and the per-stroke lists, for strokes seen from the given views."""
    cp = np.asarray(control_points, dtype=np.float64)
    if not len(cp):
        return {"looping_strokes": 0, "looping_share": 0.0, "turning_mean": 0.0, "turning_max": 0.0,
                "crossing_views": [], "turning": []}
    points = sample_strokes(cp)  # [K,P,3]
    k, p = points.shape[:2]
    pixels, depth = project(points.reshape(-1, 3), viewmats, Ks)  # [V,K*P,2]
    pixels, depth = pixels.reshape(len(viewmats), k, p, 2), depth.reshape(len(viewmats), k, p)
    crossing = np.array([[depth[v, i].min() > 0 and crosses_itself(pixels[v, i]) for v in range(len(viewmats))]
                         for i in range(k)])  # [K,V]
    share = crossing.mean(axis=1)
    looping = share >= 0.5
    segments = (cp.shape[1] - 1) // 3
    turning = total_turning(points) / segments
    return {"looping_strokes": int(looping.sum()), "looping_share": float(looping.mean()),
            "turning_mean": float(turning.mean()), "turning_max": float(turning.max()),
            "crossing_views": [round(float(s), 3) for s in share], "turning": [round(float(t), 3) for t in turning]}
