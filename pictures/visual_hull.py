"""Where a capture's object is, and its visual hull, numpy only.

The normalised space (centre, radius) is the bounding sphere of the silhouettes' visual hull;
``mesh.npz`` is that hull, carved from the training silhouettes (a wire thinner than the carving's
cells kept as a thin tube) and meshed by surface nets, so the ``surface`` term, the ``features``
start and re-seeding work as they do on a mesh (it bounds the object from outside: concavities no
silhouette sees are filled). Its depth maps and contour generators stand in for a mesh's. Carving
looks at the headless command's stop request between parts of each view.
"""

from __future__ import annotations

import numpy as np

from ..contract import cameras
from ..stop_request import check_stop
from .capture import CaptureError
from .pixels import ALPHA_THRESHOLD

HULL_COARSE, HULL_FINE = 48, 128  # voxels per side: where the object is, then its hull
CARVE_PART = 1 << 19  # grid points a view carves between two stop checks (a fraction of a second)
THIN_GAP = 2  # grid points between the plain hull and a part only the reach test keeps (a wire)
NEAR_HALVES = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # px: the silhouette max-filters a cell's reach picks from
HULL_SAMPLES_PER_EDGE = 3  # surface samples per triangle edge for the hull's depth maps


def _sample(alpha: np.ndarray, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Bilinear alpha at pixel coordinates ``uv`` [N,2] (centres at +0.5); 0 off the image or behind."""
    h, w = alpha.shape
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    inside = (z > 1e-6) & (x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1)
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.minimum(x.astype(int), w - 2), np.minimum(y.astype(int), h - 2)
    fx, fy = x - x0, y - y0
    value = (alpha[y0, x0] * (1 - fx) * (1 - fy) + alpha[y0, x0 + 1] * fx * (1 - fy)
             + alpha[y0 + 1, x0] * (1 - fx) * fy + alpha[y0 + 1, x0 + 1] * fx * fy)
    return np.where(inside, value, 0.0)


def _dilations(alpha: np.ndarray, halves) -> list[np.ndarray]:
    """``alpha``'s max-filters over squares of half-size ``halves`` px (increasing, from 0), each from
    the one before: the max of three windows of half-size a, s apart, covers a + s while s <= 2a + 1."""
    out, grown, have = [], alpha, 0
    for half in halves:
        shift = half - have
        for axis in (0, 1) if shift else ():
            rows = np.moveaxis(grown, axis, 0)
            padded, n = np.pad(rows, ((shift, shift), (0, 0))), rows.shape[0]
            rows = np.maximum(np.maximum(padded[:n], padded[shift:shift + n]), padded[2 * shift:2 * shift + n])
            grown = np.moveaxis(rows, 0, axis)
        out.append(grown)
        have = half
    return out


def carve(viewmats, Ks, alphas, lo, hi, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``[n,n,n]`` occupancy in 0..1 at each grid point (the smallest alpha any view sees there;
    off-image counts as empty, as every picture is assumed to show the whole object) and ``[n,n,n]``
    bool: could the object be within half a cell's diagonal of the point (every view has silhouette
    within that sphere's projected radius). The second keeps parts thinner than a cell, a wire between
    grid points, that the first carves away."""
    axis = [np.linspace(lo[i], hi[i], n, dtype=np.float32) for i in range(3)]
    points = np.stack(np.meshgrid(*axis, indexing="ij"), axis=-1).reshape(-1, 3)
    reach = 0.5 * float(np.linalg.norm((np.asarray(hi, float) - np.asarray(lo, float)) / (n - 1)))
    field = np.ones(len(points), np.float32)
    near = np.ones(len(points), bool)
    alive = np.arange(len(points))  # points some view may still keep: later views only look at these
    for viewmat, K, alpha in zip(viewmats, Ks, alphas):
        viewmat, K, alpha = (np.asarray(a, np.float32) for a in (viewmat, K, alpha))
        cam = points[alive] @ viewmat[:3, :3].T + viewmat[:3, 3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = cam[:, :2] / z[:, None] * K[[0, 1], [0, 1]] + K[:2, 2]
            radius = np.where(z > 1e-6, reach * float(K[0, 0]) / np.maximum(z, 1e-6), 0.0)  # the sphere's, in px
        level = np.minimum(np.searchsorted(NEAR_HALVES, radius), len(NEAR_HALVES) - 1)
        grown = _dilations(alpha, NEAR_HALVES[:int(level.max()) + 1])
        seen = np.zeros(len(alive), bool)
        # In parts, with a stop check before each: the first view looks at every grid point (a second or more).
        for part in (slice(i, i + CARVE_PART) for i in range(0, len(alive), CARVE_PART)):
            check_stop()
            field[alive[part]] = np.minimum(field[alive[part]], _sample(alpha, uv[part], z[part]))
            for lv in np.unique(level[part]):
                pick = np.flatnonzero(level[part] == lv) + part.start
                seen[pick] = _sample(grown[lv], uv[pick], z[pick]) > ALPHA_THRESHOLD
        near[alive] &= seen
        alive = alive[near[alive] | (field[alive] > 0)]
    return field.reshape(n, n, n), near.reshape(n, n, n)


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one grid point in each of the 26 directions."""
    padded, n = np.pad(mask, 1), mask.shape
    grown = np.zeros_like(mask)
    for d in np.ndindex(3, 3, 3):
        grown |= padded[d[0]:d[0] + n[0], d[1]:d[1] + n[1], d[2]:d[2] + n[2]]
    return grown


def with_thin_parts(field: np.ndarray, near: np.ndarray, gap: int = THIN_GAP) -> np.ndarray:
    """``field`` with the parts only ``near`` keeps made solid: what lies more than ``gap`` grid points
    from the plain hull (a wire between grid points), grown back ``gap`` steps within ``near`` so it
    joins the hull as a tube one cell thick. The shell ``near`` adds round a solid hull (its reach,
    up to ``gap`` cells) is left out, so the hull keeps its surface where it has one."""
    inside = field > ALPHA_THRESHOLD
    around = inside
    for _ in range(gap):
        around = _neighbours(around)
    add = near & ~around
    for _ in range(gap):
        add |= near & _neighbours(add)
    return np.where(add & ~inside, 1.0, field).astype(np.float32)


def locate(viewmats, Ks, alphas) -> tuple[np.ndarray, float]:
    """A first guess of where the object is: the point nearest every ray through a silhouette's
    centroid, and a half-size that holds each silhouette's extent at that distance."""
    normal_sum, rhs, spans = np.zeros((3, 3)), np.zeros(3), []
    for viewmat, K, alpha in zip(viewmats, Ks, alphas):
        ys, xs = np.nonzero(alpha >= ALPHA_THRESHOLD)
        inv = np.linalg.inv(viewmat)
        origin = inv[:3, 3]
        pixel = np.array([(xs.mean() + 0.5 - K[0, 2]) / K[0, 0], (ys.mean() + 0.5 - K[1, 2]) / K[1, 1], 1.0])
        direction = inv[:3, :3] @ pixel
        direction /= np.linalg.norm(direction)
        projector = np.eye(3) - np.outer(direction, direction)
        normal_sum += projector
        rhs += projector @ origin
        spans.append(max(xs.max() - xs.min(), ys.max() - ys.min()) / 2.0 / min(K[0, 0], K[1, 1]))
    center = np.linalg.lstsq(normal_sum, rhs, rcond=None)[0]
    depths = np.array([(viewmat[:3, :3] @ center + viewmat[:3, 3])[2] for viewmat in viewmats])
    if (depths <= 0).any():
        raise CaptureError(f"the cameras do not look at one object: {int((depths <= 0).sum())} of {len(depths)} "
                           "have the point their silhouettes point at behind them (check the poses' convention: "
                           "camera-to-world, Blender/OpenGL axes)")
    half = 1.5 * max(s * d for s, d in zip(spans, depths))
    return center, float(half)


def surface_nets(field: np.ndarray, lo, hi, level: float = ALPHA_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh ``(vertices [N,3], faces [F,3])`` of ``field``'s ``level`` set on the grid
    spanning ``lo``..``hi``: one vertex per cell the surface crosses (the mean of its edge crossings),
    two triangles per crossed grid edge, wound so normals point out of the region above ``level``."""
    n = np.array(field.shape)
    inside = field > level
    cells = n - 1
    corner = lambda c: inside[c[0]:c[0] + cells[0], c[1]:c[1] + cells[1], c[2]:c[2] + cells[2]]  # noqa: E731
    any_in, all_in = np.zeros(tuple(cells), bool), np.ones(tuple(cells), bool)
    for c in np.ndindex(2, 2, 2):
        any_in |= corner(c)
        all_in &= corner(c)
    active = any_in & ~all_in
    where = np.stack(np.nonzero(active), axis=1)  # [M,3] cells the surface crosses
    total, count = np.zeros((len(where), 3)), np.zeros(len(where))
    for a in np.ndindex(2, 2, 2):
        for axis in range(3):
            if a[axis]:
                continue
            b = tuple(a[i] + (i == axis) for i in range(3))
            va = field[where[:, 0] + a[0], where[:, 1] + a[1], where[:, 2] + a[2]]
            vb = field[where[:, 0] + b[0], where[:, 1] + b[1], where[:, 2] + b[2]]
            crossed = (va > level) != (vb > level)
            t = np.where(crossed, (level - va) / np.where(crossed, vb - va, 1.0), 0.0)
            offset = np.array(a, float) + np.eye(3)[axis] * t[:, None]
            total += np.where(crossed[:, None], offset, 0.0)
            count += crossed
    index = np.full(tuple(cells), -1, np.int64)
    index[active] = np.arange(len(where))
    grid = where + total / count[:, None]
    step = (np.asarray(hi, float) - np.asarray(lo, float)) / (n - 1)
    vertices = np.asarray(lo, float) + grid * step
    faces = []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        a = inside[tuple(slice(0, n[i] - 1) if i == axis else slice(1, n[i] - 1) for i in range(3))]
        b = inside[tuple(slice(1, n[i]) if i == axis else slice(1, n[i] - 1) for i in range(3))]
        sign = a & ~b  # inside at the low end: the outward normal points along +axis
        for edges, flip in ((np.nonzero(sign), False), (np.nonzero(b & ~a), True)):
            e = np.stack(edges, axis=1)
            e[:, u] += 1
            e[:, v] += 1  # back to grid-point coordinates of the edge's start
            quad = []
            for du, dv in ((-1, -1), (0, -1), (0, 0), (-1, 0)):
                c = e.copy()
                c[:, u] += du
                c[:, v] += dv
                quad.append(index[c[:, 0], c[:, 1], c[:, 2]])
            q = np.stack(quad, axis=1)
            if flip:
                q = q[:, ::-1]
            faces += [q[:, [0, 1, 2]], q[:, [0, 2, 3]]]
    faces = np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)
    return vertices, faces[(faces >= 0).all(axis=1)].astype(np.int32)


def visual_hull(viewmats, Ks, alphas) -> tuple[np.ndarray, np.ndarray]:
    """The silhouettes' visual hull as a mesh in the capture's world frame."""
    center, half = locate(viewmats, Ks, alphas)
    for _ in range(4):  # grow the box until the hull is inside it
        lo, hi = center - half, center + half
        field, near = carve(viewmats, Ks, alphas, lo, hi, HULL_COARSE)
        occupied = (field > ALPHA_THRESHOLD) | near
        if not occupied.any():
            raise CaptureError("the silhouettes have no common volume: the cameras do not look at one object "
                               "(check the poses: camera-to-world, Blender/OpenGL axes)")
        touches = occupied[[0, -1]].any() or occupied[:, [0, -1]].any() or occupied[:, :, [0, -1]].any()
        if not touches:
            break
        half *= 2.0
    idx = np.stack(np.nonzero(occupied), axis=1)
    step = 2 * half / (HULL_COARSE - 1)
    box_lo, box_hi = lo + (idx.min(0) - 1.5) * step, lo + (idx.max(0) + 1.5) * step
    middle, extent = (box_lo + box_hi) / 2, (box_hi - box_lo).max() / 2
    lo, hi = middle - extent, middle + extent
    vertices, faces = surface_nets(with_thin_parts(*carve(viewmats, Ks, alphas, lo, hi, HULL_FINE)), lo, hi)
    if len(faces) == 0:
        raise CaptureError("the silhouettes' common volume is too thin to mesh")
    return vertices, faces


def normalised_viewmat(viewmat, center, radius: float) -> np.ndarray:
    """The same camera in normalised space (``p = (world - center) / radius``): camera coordinates
    scaled by 1 / radius, which projects every point to the same pixel."""
    out = np.array(viewmat, dtype=np.float64)
    out[:3, 3] = (out[:3, :3] @ np.asarray(center, np.float64) + out[:3, 3]) / radius
    return out


def surface_samples(vertices, faces, per_edge: int = HULL_SAMPLES_PER_EDGE) -> np.ndarray:
    """Points on every triangle on a barycentric grid (``per_edge`` steps per edge), dense enough
    that a z-buffer of them has no holes where the triangles are about a pixel across."""
    steps = [(i, j) for i in range(per_edge + 1) for j in range(per_edge + 1 - i)]
    weights = np.array([(i, j, per_edge - i - j) for i, j in steps], np.float64) / per_edge  # [B,3]
    tri = np.asarray(vertices, np.float64)[np.asarray(faces)]  # [F,3,3]
    return np.einsum("bk,fkc->fbc", weights, tri).reshape(-1, 3)


def depth_map(points, viewmat, K, width: int, height: int) -> np.ndarray:
    """Camera z of the nearest of ``points`` in each pixel (0 where none): a point z-buffer."""
    uv, z = cameras.project_points(points, viewmat, K)
    x, y = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    ok = (z > 1e-6) & (x >= 0) & (y >= 0) & (x < width) & (y < height)
    flat = np.full(width * height, np.inf)
    np.minimum.at(flat, y[ok] * width + x[ok], z[ok])
    return np.where(np.isfinite(flat), flat, 0.0).reshape(height, width).astype(np.float32)


class HullContours:
    """The hull's contour generators, seen from any camera: where the (smoothed) vertex normals turn
    from facing the camera to facing away, on the mesh's edges. Behind the hull's own depth map they
    are the lines a picture cannot show but a wire sketch may draw (Freestyle's hidden lines)."""

    def __init__(self, vertices, faces, smoothing: int = 2):
        self.vertices = np.asarray(vertices, np.float64)
        faces = np.asarray(faces, np.int64)
        tri = self.vertices[faces]
        face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # area-weighted
        normals = np.zeros_like(self.vertices)
        for k in range(3):
            np.add.at(normals, faces[:, k], face_normals)
        edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
        self.edges = np.unique(edges, axis=0)
        for _ in range(smoothing):  # the voxel staircase would make the contour zig-zag
            summed = normals.copy()
            np.add.at(summed, self.edges[:, 0], normals[self.edges[:, 1]])
            np.add.at(summed, self.edges[:, 1], normals[self.edges[:, 0]])
            normals = summed
        self.normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)

    def hidden(self, viewmat, K, depth: np.ndarray, margin: float = 0.05) -> np.ndarray:
        """bool ``[H,W]``: contour-generator pixels more than ``margin`` behind ``depth``."""
        eye = np.linalg.inv(np.asarray(viewmat, np.float64))[:3, 3]
        facing = np.einsum("nc,nc->n", self.normals, eye - self.vertices)
        a, b = self.edges[:, 0], self.edges[:, 1]
        crossing = np.sign(facing[a]) != np.sign(facing[b])
        a, b = a[crossing], b[crossing]
        t = (facing[a] / (facing[a] - facing[b]))[:, None]
        points = self.vertices[a] + t * (self.vertices[b] - self.vertices[a])
        uv, z = cameras.project_points(points, viewmat, K)
        h, w = depth.shape
        x, y = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        ok = (z > 1e-6) & (x >= 0) & (y >= 0) & (x < w) & (y < h)
        x, y, z = x[ok], y[ok], z[ok]
        front = depth[y, x]
        behind = (front > 0) & (z > front + margin)
        out = np.zeros((h, w), bool)
        out[y[behind], x[behind]] = True
        return out
