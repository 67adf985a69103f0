"""How precise can ANY fixed set of 3D curves be on a mesh's evaluation views? A ceiling estimate.

    .venv/bin/python bench/ceiling.py out/quality/<mesh>/job [more job folders ...]

A sketch is static 3D ink seen from every evaluation view, and every point of it is drawn in every
view (a wire sketch has no occlusion). A point counts as precise in a view when it projects within the
tolerance (2 px) of that view's visible or hidden lines. If every point of a sketch is precise in at
most a share ``B`` of the views, its precision averaged over views is at most about ``B`` (exact when
each point leaves the same amount of ink in every view), and since F = 2PR/(P+R) <= 2P/(P+1) and that is
concave, mean F is at most about ``2B/(B+1)``. ``B`` is the best share over a dense 3D grid filling the
object's bounding sphere (so curves off the surface are included).

For a smooth object every view's silhouette is a different curve on the surface, so no point lies on
many of them. On the suite's control sphere (``bench/quality.py --meshes sphere --stage prepare``) the
best point is precise in 37.5 % of the views: no static sketch reaches a mean F of 0.8 there, ours or
any other. On real meshes the bound is weak (often 1.0): small line-dense parts such as a beak or an
eye sit near lines from every view, so it proves nothing there; it is a tool for smooth controls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.imageops import distance_transform  # noqa: E402

TOLERANCE_PX = 2.0


def point_shares(eval_npz: Path, spacing: float = 0.01, chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Grid points in the unit ball and, for each, the share of views in which it is precise."""
    with np.load(eval_npz) as data:
        viewmats = torch.as_tensor(data["viewmats"], dtype=torch.float64)
        Ks = torch.as_tensor(data["Ks"], dtype=torch.float64)
        lines = torch.as_tensor((data["lines"] > 127) | (data["lines_hidden"] > 127))
    near = distance_transform(lines) <= TOLERANCE_PX  # [V,H,W]
    V, H, W = near.shape
    axis = torch.arange(-1.0, 1.0 + 1e-9, spacing, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis, axis)
    grid = grid[grid.norm(dim=1) <= 1.0]
    shares = torch.zeros(len(grid), dtype=torch.float64)
    for start in range(0, len(grid), chunk):
        pts = grid[start:start + chunk]
        hits = torch.zeros(len(pts), dtype=torch.float64)
        for v in range(V):
            cam = pts @ viewmats[v, :3, :3].T + viewmats[v, :3, 3]
            u = (cam[:, 0] / cam[:, 2] * Ks[v, 0, 0] + Ks[v, 0, 2]).floor().long()
            w = (cam[:, 1] / cam[:, 2] * Ks[v, 1, 1] + Ks[v, 1, 2]).floor().long()
            inside = (u >= 0) & (u < W) & (w >= 0) & (w < H)
            hit = torch.zeros(len(pts), dtype=torch.bool)
            hit[inside] = near[v, w[inside], u[inside]]
            hits += hit
        shares[start:start + chunk] = hits / V
    return grid.numpy(), shares.numpy()


def ceiling(job: Path) -> dict:
    _, shares = point_shares(job / "eval.npz")
    best = float(shares.max())
    return {"job": str(job), "best_point_share": best, "share_p99_9": float(np.quantile(shares, 0.999)),
            "precision_ceiling": best, "f_ceiling": 2 * best / (best + 1)}


def main(argv=None) -> int:
    jobs = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    if not jobs:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for job in jobs:
        if not (job / "eval.npz").is_file():
            print(f"ceiling: error: {job / 'eval.npz'} does not exist (run bench/quality.py --stage prepare)",
                  file=sys.stderr)
            return 2
    rows = [ceiling(job) for job in jobs]
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
