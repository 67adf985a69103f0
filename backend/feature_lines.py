"""Initial strokes ``[K,3S+1,3]`` from the mesh's own feature lines: creases, borders, contours.

Line drawings of an object are mostly its sharp creases, its open borders and its contours, and all
three exist on the mesh as chains of edges. Starting strokes on them starts them on lines in every
view that sees them; the few that cover the training views' line images best are picked by greedy
set cover, so the budget goes to distinct lines rather than to the same silhouette seen 24 times.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from contract.cameras import project

from .losses.base import Targets

WELD = 1e-6  # of the bounding size: glTF/OBJ split vertices at UV seams, which are no borders
CORNER_DEGREES = 60.0  # a G1 chain cannot draw a sharper turn, so chains are cut there
CORNER_WINDOW = 3.0  # mean edge lengths either side over which a corner must also turn
# 6 % of the unit sphere's diameter: shorter pieces (the creases of a duck's beak and eyes) win the cover
# for their dense lines and draw a knot of short strokes there
MIN_LENGTH = 0.12
FIT_SAMPLES = 16  # resampled points per fitted segment
COVER_SAMPLES = 96  # points per stroke when projected for the cover
TOLERANCE_PX = 2  # a stroke covers the line pixels this close to it
# An off-line stroke pixel costs this many covered line pixels. On spot, duck and teapot (24 views,
# 16 and 40 strokes) 0.25 gave the best F of the initial strokes' pixels among 0.5, 0.25, 0.1 and 0:
# a contour generator is a line only near its own eye, so at 0.5 the long ones lost to scraps.
OFF_LINE_WEIGHT = 0.25
OCCLUSION_MARGIN = 0.05  # normalised units behind the depth map before a sample counts as hidden
CHUNK = 128  # candidates projected at a time (bounds memory)
SHORTLIST = 512  # candidates beyond this are ranked first on a coarse cover (COARSE_SAMPLES points)
COARSE_SAMPLES = 16


def _weld(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    """Vertices merged by quantised position; faces deduplicated, degenerate ones dropped."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    lo = v.min(axis=0)
    size = max(float((v.max(axis=0) - lo).max()), 1e-12)
    q = np.rint((v - lo) / (size * WELD)).astype(np.int64)  # 0 .. 1e6 < 2**20 per axis
    _, first, inverse = np.unique((q[:, 0] << 40) | (q[:, 1] << 20) | q[:, 2], return_index=True,
                                  return_inverse=True)
    v, f = v[first], inverse.reshape(-1)[f]
    tri = v[f]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    f = f[area2 > 1e-12 * size * size]
    # Double-sided copies (the same triangle twice) would make every edge non-manifold.
    s = np.sort(f, axis=1)
    if len(v) < 2**21:  # one int64 key per triangle: much faster than unique rows
        _, keep = np.unique((s[:, 0] * len(v) + s[:, 1]) * len(v) + s[:, 2], return_index=True)
    else:
        _, keep = np.unique(s, axis=0, return_index=True)
    return v, f[np.sort(keep)]


def _chains(edges: np.ndarray, nverts: int) -> list[list[int]]:
    """Vertex paths through the degree-2 vertices of an edge set; a closed loop repeats its start."""
    e0, e1 = edges[:, 0].tolist(), edges[:, 1].tolist()
    ends = edges.reshape(-1)
    deg = np.bincount(ends, minlength=nverts)
    incident = (np.argsort(ends, kind="stable") // 2).tolist()
    start = np.concatenate([[0], np.cumsum(deg)]).tolist()
    used = [False] * len(e0)
    degree = deg.tolist()

    def walk(v: int, e: int) -> list[int]:
        path = [v]
        while True:
            used[e] = True
            v = e0[e] + e1[e] - v
            path.append(v)
            if degree[v] != 2:
                return path
            a, b = incident[start[v]], incident[start[v] + 1]
            e = b if a == e else a
            if used[e]:
                return path

    paths = []
    for v in np.flatnonzero((deg != 0) & (deg != 2)).tolist():  # junctions and ends first
        paths += [walk(v, e) for e in incident[start[v]:start[v + 1]] if not used[e]]
    paths += [walk(e0[e], e) for e in range(len(e0)) if not used[e]]  # what is left are loops
    return paths


def _pieces(v: np.ndarray, paths: list[list[int]], min_length: float) -> list[np.ndarray]:
    """Vertex paths as polylines cut at their corners, the short ones dropped (all paths at once).

    A corner turns by more than CORNER_DEGREES both at its vertex and over CORNER_WINDOW edges either
    side: a contour zigzagging across the triangles turns sharply at single vertices only. A closed
    loop without corners stays closed (its last point is its first)."""
    sizes = np.array([len(p) for p in paths])
    ends = np.cumsum(sizes)
    starts = ends - sizes
    idx = np.concatenate(paths)
    p = v[idx]
    d = p[1:] - p[:-1]
    seg = np.linalg.norm(d, axis=1)
    seg[ends[:-1] - 1] = 1.0  # between two paths: a gap keeps the arc length increasing
    u = d / np.maximum(seg, 1e-300)[:, None]
    s = np.concatenate([[0.0], np.cumsum(seg)])
    length = s[ends - 1] - s[starts]
    closed = (sizes > 2) & (idx[starts] == idx[ends - 1])
    chain = np.repeat(np.arange(len(paths)), sizes)
    # The turn at every vertex: interior ones, and the start of a closed loop (its last edge in).
    cos = np.ones(len(p))
    cos[1:-1] = (u[:-1] * u[1:]).sum(axis=1)
    cos[starts] = np.where(closed, (u[ends - 2] * u[starts]).sum(axis=1), 1.0)
    cos[ends - 1] = 1.0
    limit = math.cos(math.radians(CORNER_DEGREES))
    at = np.flatnonzero((cos < limit) & (length[chain] >= min_length))
    if len(at):
        c = chain[at]
        h = CORNER_WINDOW * length[c] / (sizes[c] - 1)
        s0 = s[starts[c]]

        def at_length(x):
            x = np.where(closed[c], s0 + np.mod(x - s0, length[c]), np.clip(x, s0, s0 + length[c]))
            return np.stack([np.interp(x, s, p[:, i]) for i in range(3)], axis=1)

        back, ahead = p[at] - at_length(s[at] - h), at_length(s[at] + h) - p[at]
        norms = np.linalg.norm(back, axis=1) * np.linalg.norm(ahead, axis=1)
        at = at[(back * ahead).sum(axis=1) < limit * np.maximum(norms, 1e-300)]
    corners = {}
    for i, j in zip(chain[at].tolist(), (at - starts[chain[at]]).tolist()):
        corners.setdefault(i, []).append(j)
    out = []
    for i in np.flatnonzero(length >= min_length).tolist():
        q, sq, cut = p[starts[i]:ends[i]], s[starts[i]:ends[i]], corners.get(i)
        if cut is None:
            out.append(q)
            continue
        if closed[i]:  # the piece across the loop's start, then the pieces between corners
            if length[i] - (sq[cut[-1]] - sq[cut[0]]) >= min_length:
                out.append(np.concatenate([q[cut[-1]:-1], q[:cut[0] + 1]]))
        else:
            cut = np.concatenate([[0], cut, [len(q) - 1]])
        out += [q[a:b + 1] for a, b in zip(cut[:-1], cut[1:]) if sq[b] - sq[a] >= min_length]
    return out


def _length(p: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


def labelled_feature_polylines(vertices, faces, eyes=None, crease_degrees: float = 40.0,
                               min_length: float = MIN_LENGTH) -> tuple[list[np.ndarray], list[str]]:
    """:func:`feature_polylines` and a parallel list of kinds: "crease", "boundary" or "contour"."""
    if len(faces) == 0:
        return [], []
    v, f = _weld(vertices, faces)
    if len(f) == 0:
        return [], []
    tri = v[f]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    # Every face's three edges, grouped by their (sorted) vertex pair.
    directed = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    lo, hi = directed.min(axis=1), directed.max(axis=1)
    order = np.argsort(lo * len(v) + hi, kind="stable")
    key = (lo * len(v) + hi)[order]
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    count = np.diff(np.concatenate([first, [len(key)]]))
    edges = np.stack([lo[order[first]], hi[order[first]]], axis=1)
    two = np.flatnonzero(count == 2)
    fa, fb = order[first[two]] // 3, order[first[two] + 1] // 3
    # A consistently oriented pair runs its shared edge in opposite directions; otherwise one face is
    # flipped, and so are its normal's sign and its facing.
    fwd = directed[:, 0] < directed[:, 1]
    flipped = fwd[order[first[two]]] == fwd[order[first[two] + 1]]
    cos = (normals[fa] * normals[fb]).sum(axis=1) * np.where(flipped, -1.0, 1.0)
    crease = np.concatenate([two[cos < math.cos(math.radians(crease_degrees))], np.flatnonzero(count > 2)])
    sets = [("crease", edges[np.sort(crease)]), ("boundary", edges[count == 1])]
    eyes = np.zeros((0, 3)) if eyes is None else np.asarray(eyes, dtype=np.float64).reshape(-1, 3)
    if len(eyes):
        centres = tri.mean(axis=1)
        front = (eyes @ normals.T) > (normals * centres).sum(axis=1)  # [E,F]: n . (c - eye) < 0
        generator = (front[:, fa] != front[:, fb]) != flipped  # [E,two]: one front, one back
        sets += [("contour", edges[two[g]]) for g in generator]
    polylines, kinds = [], []
    for kind, chosen in sets:
        if len(chosen):
            pieces = _pieces(v, _chains(chosen, len(v)), min_length)
            polylines += pieces
            kinds += [kind] * len(pieces)
    return polylines, kinds


def feature_polylines(vertices, faces, eyes=None, crease_degrees: float = 40.0,
                      min_length: float = MIN_LENGTH) -> list[np.ndarray]:
    """Ordered 3D polylines ``[N,3]`` (float64, N >= 2) along a triangle mesh's feature lines.

    Creases (face normals more than ``crease_degrees`` apart, and non-manifold edges), open
    boundaries, and for each eye ``[E,3]`` (camera centres) the contour generator between front- and
    back-facing faces. Chains stop at junctions and corners; a closed loop without corners comes back
    closed (its last point equals its first). Pieces shorter than ``min_length`` are dropped.
    """
    return labelled_feature_polylines(vertices, faces, eyes, crease_degrees, min_length)[0]


def split_long(polylines, max_length: float) -> list[np.ndarray]:
    """Pieces of equal arc length no longer than ``max_length``; closed loops give at least two,
    so no stroke wraps around the whole object or closes on itself."""
    out = []
    for p in polylines:
        p = np.asarray(p, dtype=np.float64)
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
        closed = len(p) > 2 and np.array_equal(p[0], p[-1])
        n = max(math.ceil(s[-1] / max_length - 1e-9), 2 if closed else 1)
        if n == 1:
            out.append(p)
            continue
        cuts = s[-1] * np.arange(n + 1) / n
        ends = np.stack([np.interp(cuts, s, p[:, i]) for i in range(3)], axis=1)
        for j in range(n):
            inner = p[(s > cuts[j]) & (s < cuts[j + 1])]
            out.append(np.concatenate([ends[j:j + 1], inner, ends[j + 1:j + 2]]))
    return out


def _resample(p: np.ndarray, count: int) -> np.ndarray:
    """``count`` points evenly spaced in arc length along a polyline (its ends included)."""
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    if s[-1] <= 0:
        return np.repeat(p[:1], count, axis=0)
    x = np.linspace(0.0, s[-1], count)
    return np.stack([np.interp(x, s, p[:, i]) for i in range(3)], axis=1)


def _design(segments: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear map from a C1 chain's unknowns to ``count`` points at even parameters.

    Unknowns: the interior anchors a_1..a_{S-1} and one tangent d_j per anchor (the handles are
    a_j -/+ d_j, equal and opposite, hence G1); the end anchors are fixed, their columns apart."""
    u = np.linspace(0.0, 1.0, count)
    seg = np.minimum((u * segments).astype(int), segments - 1)
    t = u * segments - seg
    b = np.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t * t, t**3], axis=1)
    cols = np.zeros((count, segments + 1 + segments + 1))  # anchors a_0..a_S, then tangents d_0..d_S
    rows = np.arange(count)
    np.add.at(cols, (rows, seg), b[:, 0] + b[:, 1])
    np.add.at(cols, (rows, seg + 1), b[:, 2] + b[:, 3])
    np.add.at(cols, (rows, segments + 1 + seg), b[:, 1])
    np.add.at(cols, (rows, segments + 2 + seg), -b[:, 2])
    free = [j for j in range(cols.shape[1]) if j not in (0, segments)]
    return cols[:, free], cols[:, [0, segments]]


def _fit_many(polylines, segments: int) -> np.ndarray:
    """:func:`fit_chain` for many polylines at once: after an even resampling they share one design."""
    count = FIT_SAMPLES * segments + 1
    free, fixed = _design(segments, count)
    solve = np.linalg.pinv(free)
    pts = np.stack([_resample(np.asarray(p, dtype=np.float64), count) for p in polylines])  # [C,M,3]
    ends = pts[:, [0, -1]]
    x = np.einsum("um,cmd->cud", solve, pts - np.einsum("mf,cfd->cmd", fixed, ends))
    anchors = np.concatenate([ends[:, :1], x[:, :segments - 1], ends[:, 1:]], axis=1)
    tangents = x[:, segments - 1:]
    out = np.empty((len(pts), 3 * segments + 1, 3))
    out[:, 0::3] = anchors
    out[:, 1::3] = anchors[:, :-1] + tangents[:, :-1]
    out[:, 2::3] = anchors[:, 1:] - tangents[:, 1:]
    return out


def fit_chain(polyline, segments: int) -> np.ndarray:
    """Least-squares C1 chain ``[3S+1,3]`` of ``segments`` cubics through an ordered polyline.

    Arc-length parameters (the chord length of an even resampling), segment s spanning arc-length
    fractions [s/S, (s+1)/S], its anchors fitted and its ends exactly the polyline's."""
    return _fit_many([polyline], segments)[0]


def sample_chains(chains: np.ndarray, per_segment: int) -> np.ndarray:
    """Points ``[C,S*per_segment+1,3]`` along chains ``[C,3S+1,3]``, evenly in each segment's t."""
    segments = (chains.shape[1] - 1) // 3
    t = np.linspace(0.0, 1.0, per_segment + 1)[:-1, None]
    b = np.concatenate([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t * t, t**3], axis=1)
    parts = [np.einsum("pj,cjd->cpd", b, chains[:, 3 * s:3 * s + 4]) for s in range(segments)]
    return np.concatenate(parts + [chains[:, -1:]], axis=1)


def _grow(a: np.ndarray, offsets) -> np.ndarray:
    """``[V,H,W]`` max over the given pixel offsets (for booleans: dilation), edges ignored."""
    H, W = a.shape[1:]
    out = a.copy()
    for dy, dx in offsets:
        dst = out[:, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)]
        np.maximum(dst, a[:, max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)], out=dst)
    return out


def _cover_sets(samples: np.ndarray, targets: Targets, train: np.ndarray):
    """Per candidate (points ``[C,P,3]``): the flat indices ``v*H*W + pixel`` of the visible line
    pixels its visible points come within TOLERANCE_PX of, and how many of its own pixels lie
    farther than that from every line, visible or hidden (its off-line ink); and per view, how many
    visible line pixels there are (what the balanced cover weighs by)."""
    V, H, W = len(train), targets.height, targets.width
    size = V * H * W
    lines = targets.lines[train].cpu().numpy() > 0.5
    any_line = lines.copy()
    if targets.lines_hidden is not None:
        any_line |= targets.lines_hidden[train].cpu().numpy() > 0.5
    r = TOLERANCE_PX
    disk = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= r * r]
    near_line, near_any = _grow(lines, disk).reshape(-1), _grow(any_line, disk).reshape(-1)
    lines = lines.reshape(-1)
    deep = None
    if targets.depth is not None:  # the farthest surface around each pixel: contours graze it
        d = targets.depth[train].cpu().numpy().astype(np.float64)
        d[d <= 0] = np.inf
        deep = _grow(d, [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).reshape(-1)
    viewmats, Ks = targets.viewmats[train].cpu().numpy(), targets.Ks[train].cpu().numpy()
    per = samples.shape[1]
    covered, off = [], []
    for c0 in range(0, len(samples), CHUNK):  # keys cand * size + flat pixel, unique per candidate
        n = len(samples[c0:c0 + CHUNK])
        # numpy's twin of the renderer's projection: torch's thread pool costs more than it saves here
        uv, z = project(samples[c0:c0 + CHUNK].reshape(-1, 3), viewmats, Ks)  # [V,n*P,2], [V,n*P]
        inside = z > 1e-6
        uv[~inside] = -1.0
        x, y = np.floor(uv[..., 0]), np.floor(uv[..., 1])
        inside &= (x >= 0) & (x < W) & (y >= 0) & (y < H)
        flat = (np.arange(V)[:, None] * (H * W) + y.clip(0, H - 1) * W + x.clip(0, W - 1)).astype(np.int64)
        key = np.repeat(np.arange(n), per)[None] * size + flat
        own = np.unique(key[inside])
        off.append(np.bincount(own[~near_any[own % size]] // size, minlength=n))
        visible = inside if deep is None else inside & (z <= deep[flat] + OCCLUSION_MARGIN)
        seen = np.unique(key[visible])
        seen = seen[near_line[seen % size]]
        cand, pixel = seen // size, seen % size
        py, px = (pixel % (H * W)) // W, pixel % W
        hits = []
        for dy, dx in disk:
            ok = (py + dy >= 0) & (py + dy < H) & (px + dx >= 0) & (px + dx < W)
            nb = pixel[ok] + dy * W + dx
            hits.append(cand[ok][lines[nb]] * size + nb[lines[nb]])
        hits = np.unique(np.concatenate(hits))
        bounds = np.searchsorted(hits // size, np.arange(n + 1))
        covered += [hits[bounds[i]:bounds[i + 1]] % size for i in range(n)]
    return covered, np.concatenate(off).astype(np.float64), lines.reshape(V, -1).sum(1)


def greedy_cover(covered: list[np.ndarray], off: np.ndarray, k: int, size: int,
                 off_line_weight: float = OFF_LINE_WEIGHT, view_lines: np.ndarray | None = None,
                 balance: float = 0.0, already: np.ndarray | None = None) -> list[int]:
    """Indices of up to ``k`` candidates, each adding the most newly covered line pixels minus
    ``off_line_weight`` times its off-line pixels. When no candidate gains any more, the weight halves
    (cheaper ink, rather than picking copies of lines already drawn); it stops when nothing is left
    to cover.

    ``balance`` 0 counts covered pixels, so the views where the object is large and its lines long
    decide. With ``balance`` b > 0 and ``view_lines`` (line pixels per view; ``size`` splits evenly
    into them) the cover maximises the sum over views of log(covered + b * lines): a view's pixel is
    worth more the less of that view is covered (a head-on fish, a mug from above), and a view covered
    as much as the others is worth the same as each of them whatever its size. The factor keeps one
    pixel of an average view worth one pixel when it is fully covered, so ``off_line_weight`` keeps its
    meaning. ``already``: pixels covered before any pick (the artist's kept strokes)."""
    sizes = np.array([len(c) for c in covered], dtype=np.int64)
    flat = np.concatenate(covered) if covered else np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(covered)), sizes)
    done = np.zeros(size, dtype=bool)
    if already is not None:
        done[already] = True
    free = np.ones(len(covered), dtype=bool)
    balanced = balance > 0 and view_lines is not None and len(view_lines) > 0
    if balanced:
        per_view = size // len(view_lines)
        lines = np.maximum(np.asarray(view_lines, dtype=np.float64), 1.0)
        view_of = flat // per_view
        got = np.zeros(len(lines))
        if already is not None:
            got += np.bincount(np.unique(already) // per_view, minlength=len(lines))
    weight, picked = off_line_weight, []
    while len(picked) < k and free.any():
        # balanced: d/d(got) of mean(lines) * (1 + b) * log(got + b * lines), per view
        worth = (lines.mean() * (1 + balance) / (got + balance * lines))[view_of] if balanced else 1.0
        new = np.bincount(owner, weights=(~done[flat]) * worth, minlength=len(covered))
        gain = np.where(free, new - weight * off, -np.inf)
        i = int(np.argmax(gain))
        if gain[i] <= 0:
            if new[free].max() == 0:
                break
            weight /= 2
            continue
        picked.append(i)
        free[i] = False
        if balanced:
            got += np.bincount(covered[i][~done[covered[i]]] // per_view, minlength=len(lines))
        done[covered[i]] = True
    return picked


def _kept_cover(targets: Targets, train: np.ndarray) -> np.ndarray | None:
    """The line pixels the artist's kept strokes cover already (flat ``v*H*W + pixel``), or None."""
    if targets.kept is None:
        return None
    kept = targets.kept.double().cpu().numpy()
    per_segment = max(COVER_SAMPLES // ((kept.shape[1] - 1) // 3), 2)
    covered, _, _ = _cover_sets(sample_chains(kept, per_segment), targets, train)
    return np.concatenate(covered) if covered else None


def feature_init(k: int, segments: int, targets: Targets,
                 max_length: float = 0.9, off_line_weight: float = OFF_LINE_WEIGHT,
                 balance: float = 0.0) -> torch.Tensor:
    """At most ``k`` chains ``[n,3S+1,3]`` on the mesh's feature lines that best cover the training lines.

    Contours are taken from the training cameras, the views whose lines the strokes must match; the
    lines the artist's kept strokes cover count as covered.
    Fewer useful candidates than ``k`` (a tiny mesh, no lines left to cover): fewer strokes, which
    :func:`backend.init.initial_curves` fills up. ``balance``: how evenly the cover serves the views
    (:func:`greedy_cover`)."""
    if targets.vertices is None or targets.faces is None:
        raise ValueError("the feature-line initialisation needs the job's mesh")
    device = targets.viewmats.device
    train = torch.nonzero(targets.is_train).flatten().cpu().numpy()
    vm = targets.viewmats[train].double().cpu().numpy()
    eyes = -np.einsum("vji,vj->vi", vm[:, :3, :3], vm[:, :3, 3])  # -R^T t
    pieces = split_long(feature_polylines(targets.vertices.cpu().numpy(), targets.faces.cpu().numpy(), eyes),
                        max_length)
    picked = np.zeros((0, 3 * segments + 1, 3))
    if pieces:
        chains = _fit_many(pieces, segments)
        if targets.lines is None:  # nothing to cover: the longest first
            order = np.argsort([-_length(p) for p in pieces], kind="stable")[:k]
        else:
            if len(chains) > SHORTLIST:  # bounded work: the full cover only for the best on a coarse one
                covered, off, _ = _cover_sets(sample_chains(chains, max(COARSE_SAMPLES // segments, 1)), targets, train)
                score = np.array([len(c) for c in covered]) - off_line_weight * off
                chains = chains[np.sort(np.argsort(-score, kind="stable")[:SHORTLIST])]
            covered, off, view_lines = _cover_sets(sample_chains(chains, max(COVER_SAMPLES // segments, 2)), targets,
                                                   train)
            order = greedy_cover(covered, off, k, len(train) * targets.height * targets.width, off_line_weight,
                                 view_lines, balance, _kept_cover(targets, train))
        picked = chains[np.asarray(order, dtype=np.int64)]
    return torch.as_tensor(picked, dtype=torch.float32, device=device)
