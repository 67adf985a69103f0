"""Target views drawn from the mesh itself: line images, depth and silhouette without Freestyle.

A z-buffer rasteriser in plain torch (every candidate pixel of every triangle at once, nearest depth
by ``scatter_reduce``) gives each view's depth and silhouette; the lines are the mesh edges Freestyle
draws with the settings the add-on gives it (silhouettes where a front- and a back-facing face meet,
creases where the faces' normals turn by more than :data:`CREASE_NORMAL_DEGREES`, open borders),
sampled a pixel apart along the 3D edge and split into visible and hidden by a test against the
z-buffer. Freestyle renders these through Cycles at about a second a view on a CPU; here a view takes
tens of milliseconds, and on a GPU less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Freestyle's default crease angle is 134 degrees *between the faces*: the normals turn by 46.
CREASE_NORMAL_DEGREES = 180.0 - 134.0
SAMPLE_STEP_PX = 1.0  # edge samples at most this far apart along the screen's major axis: 8-connected lines
WELD = 1e-6  # vertices closer than this (relative to the mesh's size) are one, as Freestyle merges them
CANDIDATES_PER_CHUNK = 4_000_000  # triangle-pixel pairs held at once (about 200 MB of temporaries)
DEPTH_TOLERANCE = 0.01  # relative: a line sample this much behind the nearest surface still counts as on it
LIGHT = (-0.4, -0.5, -1.0)  # camera frame (x right, y down, z forward): lit from the upper left, as Workbench


@dataclass
class Edges:
    """The mesh's unique edges and what a view needs to pick its feature lines among them."""

    ends: torch.Tensor  # [E,2] vertex ids
    face_a: torch.Tensor  # [E] one adjacent face (every edge has one)
    face_b: torch.Tensor  # [E] the other one on a two-face edge, else face_a
    two_faced: torch.Tensor  # [E] bool: exactly two faces meet here
    flipped: torch.Tensor  # [E] bool: the two faces are wound against each other
    always: torch.Tensor  # [E] bool: drawn from every view (crease, open border, non-manifold)


def welded(vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, first)``: each vertex's id among the distinct positions, and one vertex of each id.

    Files cut a mesh open along its UV and normal seams (a glTF's duplicated vertices); Freestyle
    merges coincident vertices before it looks for borders, so the seams draw no line.
    """
    low = vertices.min(dim=0).values
    size = float((vertices.max(dim=0).values - low).max().clamp_min(1e-12))
    quantised = torch.round((vertices - low) / (size * WELD)).long()
    _, ids = torch.unique(quantised, dim=0, return_inverse=True)
    first = torch.zeros(int(ids.max()) + 1, dtype=torch.long, device=ids.device)
    first.scatter_(0, ids, torch.arange(len(ids), device=ids.device))
    return ids, first


def mesh_edges(vertices: torch.Tensor, faces: torch.Tensor, crease_degrees: float = CREASE_NORMAL_DEGREES) -> Edges:
    """Edge adjacency, creases and borders of a triangle mesh, its coincident vertices merged
    (view-independent, found once). Edge ends are vertex ids of ``vertices``."""
    normals = face_normals(vertices, faces)
    ids, vertex_of = welded(vertices)
    faces = ids[faces]
    # A face listed twice (a double-sided shell: the same corners, either winding) is one surface, as
    # for Freestyle: its edges stay two-faced, not four-faced edges drawn from every side.
    _, inverse = torch.unique(faces.sort(dim=1).values, dim=0, return_inverse=True)
    kept = torch.full((int(inverse.max()) + 1,), len(faces), dtype=torch.long, device=faces.device)
    kept = kept.scatter_reduce(0, inverse, torch.arange(len(faces), device=faces.device), reduce="amin")
    nverts = len(vertex_of)
    directed = faces[kept][:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    lo, hi = directed.min(dim=1).values, directed.max(dim=1).values
    key = lo * nverts + hi
    key_sorted, order = torch.sort(key, stable=True)
    first = torch.ones_like(key_sorted, dtype=torch.bool)
    first[1:] = key_sorted[1:] != key_sorted[:-1]
    starts = torch.nonzero(first).squeeze(1)
    count = torch.diff(torch.cat([starts, starts.new_tensor([len(key)])]))
    ends = vertex_of[torch.stack([lo[order[starts]], hi[order[starts]]], dim=1)]
    two = count == 2
    face_a = kept[order[starts] // 3]
    second = torch.where(two, starts + 1, starts)
    face_b = kept[order[second] // 3]
    forward = directed[:, 0] < directed[:, 1]
    flipped = two & (forward[order[starts]] == forward[order[second]])
    cos = (normals[face_a] * normals[face_b]).sum(dim=1) * torch.where(flipped, -1.0, 1.0)
    crease = two & (cos < math.cos(math.radians(crease_degrees)))
    solid = ends[:, 0] != ends[:, 1]  # not an edge a sliver collapsed into a point
    return Edges(ends, face_a, face_b, two, flipped, (crease | (count != 2)) & solid)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    tri = vertices[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / n.norm(dim=1, keepdim=True).clamp_min(1e-20)


def to_camera(vertices: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-space points ``[N,3]`` and their pixel positions ``[N,2]`` (pixel centres at +0.5)."""
    cam = vertices @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2].clamp_min(1e-9)
    uv = torch.stack([K[0, 0] * cam[:, 0] / z + K[0, 2], K[1, 1] * cam[:, 1] / z + K[1, 2]], dim=1)
    return cam, uv


def rasterise(cam: torch.Tensor, uv: torch.Tensor, faces: torch.Tensor, height: int, width: int,
              near: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth ``[H,W]`` (camera z at pixel centres, inf on the background) and the face seen there
    (``[H,W]`` long, -1 on the background).

    Scanlines, all triangles at once: each triangle's rows, each row's span between the edges it
    crosses, each span's pixels; so the work follows the pixels covered, not the triangles' bounding
    boxes (a long thin sliver would cost its whole box).
    """
    depth = torch.full((height * width,), math.inf, dtype=cam.dtype, device=cam.device)
    seen = torch.full((height * width,), -1, dtype=torch.long, device=cam.device)
    tri_uv, tri_z = uv[faces], cam[:, 2][faces]  # [F,3,2], [F,3]
    y0 = torch.ceil(tri_uv[..., 1].min(1).values - 0.5).clamp(0, height).long()
    y1 = torch.floor(tri_uv[..., 1].max(1).values - 0.5).clamp(-1, height - 1).long()
    x_in = (tri_uv[..., 0].max(1).values > 0) & (tri_uv[..., 0].min(1).values < width)
    m = torch.cat([tri_uv.transpose(1, 2), torch.ones_like(tri_z)[:, None]], dim=1)  # [F,3,3]: [[u],[v],[1]]
    det = torch.linalg.det(m)
    keep = (y1 >= y0) & x_in & (det.abs() > 1e-12) & (tri_z.min(1).values > near)
    ids = torch.nonzero(keep).squeeze(1)
    if len(ids) == 0:
        return depth.view(height, width), seen.view(height, width)
    # 1/z is affine on screen: its plane (a, b, c) with 1/z = a u + b v + c, per triangle.
    plane = ((1.0 / tri_z[ids])[:, None, :] @ torch.linalg.inv(m[ids]))[:, 0]  # [F',3]
    rows = (y1 - y0 + 1)[ids]
    total = torch.cumsum(rows, 0)
    start = 0
    while start < len(ids):  # chunks of triangles, so a screen-filling mesh cannot exhaust memory
        limit = (total[start - 1] if start else 0) + CANDIDATES_PER_CHUNK // 16
        stop = max(int(torch.searchsorted(total, limit, right=True)), start + 1)
        part = slice(start, stop)
        _fill(depth, seen, ids[part], tri_uv[ids[part]], plane[part], y0[ids[part]], rows[part], width)
        start = stop
    return depth.view(height, width), seen.view(height, width)


def _spread(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(owner, index)`` of every item when owner i has ``counts[i]`` items, numbered from 0."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    index = torch.arange(len(owner), device=counts.device) - (torch.cumsum(counts, 0) - counts)[owner]
    return owner, index


def _fill(depth, seen, ids, tri_uv, plane, y0, rows, width) -> None:
    """z-buffer one chunk of triangles into ``depth`` / ``seen`` (flat, in place), row span by row span."""
    row_tri, row = _spread(rows)
    yc = (y0[row_tri] + row).to(tri_uv.dtype) + 0.5
    a = tri_uv[row_tri]  # [R,3,2]
    b = a.roll(-1, dims=1)  # the three edges a[i] -> b[i]
    ya, yb = a[..., 1], b[..., 1]
    crosses = (yc[:, None] >= torch.minimum(ya, yb)) & (yc[:, None] <= torch.maximum(ya, yb)) & (ya != yb)
    x = a[..., 0] + (yc[:, None] - ya) / torch.where(ya != yb, yb - ya, 1.0) * (b[..., 0] - a[..., 0])
    left = torch.where(crosses, x, math.inf).min(dim=1).values
    right = torch.where(crosses, x, -math.inf).max(dim=1).values
    x0 = torch.ceil(left - 0.5).clamp_min(0)
    x1 = torch.floor(right - 0.5).clamp_max(width - 1)
    span = torch.where(torch.isfinite(left) & (x1 >= x0), x1 - x0 + 1, 0).long()
    pixel_row, offset = _spread(span)
    px = x0.long()[pixel_row] + offset
    py = y0[row_tri[pixel_row]] + row[pixel_row]
    tri = row_tri[pixel_row]
    p = plane[tri]
    inv_z = p[:, 0] * (px.to(p.dtype) + 0.5) + p[:, 1] * (py.to(p.dtype) + 0.5) + p[:, 2]
    ok = inv_z > 0
    pix = (py * width + px)[ok]
    z = 1.0 / inv_z[ok]
    depth.scatter_reduce_(0, pix, z, reduce="amin")
    nearest = z <= depth[pix]
    seen[pix[nearest]] = ids[tri[ok][nearest]]


def _local_range(depth: torch.Tensor) -> torch.Tensor:
    """Per pixel, how far the surface's depth spreads over its 3x3 neighbourhood (0 on the background):
    how far a point of a line drawn through that pixel may sit from the depth at the pixel's centre."""
    finite = torch.isfinite(depth)
    hi = torch.where(finite, depth, -math.inf)[None, None]
    lo = torch.where(finite, -depth, -math.inf)[None, None]
    spread = F.max_pool2d(hi, 3, 1, 1)[0, 0] + F.max_pool2d(lo, 3, 1, 1)[0, 0]
    return torch.where(finite, spread, torch.zeros_like(depth))


def feature_edges(edges: Edges, normals: torch.Tensor, centres: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
    """Ids of the edges drawn from ``eye``: the view's silhouettes plus the creases and borders."""
    front = ((eye - centres) * normals).sum(dim=1) > 0
    silhouette = edges.two_faced & ((front[edges.face_a] != front[edges.face_b]) != edges.flipped)
    return torch.nonzero(silhouette | edges.always).squeeze(1)


def draw_lines(cam: torch.Tensor, uv: torch.Tensor, K: torch.Tensor, ends: torch.Tensor, depth: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Visible and hidden line masks ``[H,W]`` bool of the edges ``ends [E,2]``, by a depth test.

    Each edge is sampled in 3D (so a sample's depth is exact, not interpolated on screen), a pixel
    apart along the screen's major axis (a thin 8-connected line, as thick as Freestyle's); a sample
    is visible where it is no farther than the nearest surface at its pixel, give or take the depth's
    spread around that pixel: the pixel's centre may lie on a face that slopes away from the edge.
    """
    height, width = depth.shape
    visible = torch.zeros(height * width, dtype=torch.bool, device=depth.device)
    hidden = torch.zeros_like(visible)
    if len(ends) == 0:
        return visible.view(height, width), hidden.view(height, width)
    a, b = cam[ends[:, 0]], cam[ends[:, 1]]
    extent = (uv[ends[:, 1]] - uv[ends[:, 0]]).abs().max(dim=1).values
    steps = torch.ceil(extent / SAMPLE_STEP_PX).clamp(1, 8 * max(height, width)).long() + 1
    edge = torch.repeat_interleave(torch.arange(len(ends), device=cam.device), steps)
    offsets = torch.cumsum(steps, 0) - steps
    t = (torch.arange(len(edge), device=cam.device) - offsets[edge]) / (steps[edge] - 1)
    points = torch.lerp(a[edge], b[edge], t.to(a.dtype)[:, None])
    z = points[:, 2]
    zs = z.clamp_min(1e-9)
    u = torch.floor(points[:, 0] / zs * K[0, 0] + K[0, 2])
    v = torch.floor(points[:, 1] / zs * K[1, 1] + K[1, 2])
    ok = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    pix = (v[ok] * width + u[ok]).long()
    z = z[ok]
    seen = z <= depth.view(-1)[pix] * (1.0 + DEPTH_TOLERANCE) + _local_range(depth).view(-1)[pix]
    visible[pix[seen]] = True
    hidden[pix[~seen]] = True
    return visible.view(height, width), (hidden & ~visible).view(height, width)


def shade(cam_normals: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """A grey studio-lit picture ``[H,W,4]`` uint8 (straight alpha) from the face seen at each pixel."""
    light = torch.tensor(LIGHT, dtype=cam_normals.dtype, device=cam_normals.device)
    light = light / light.norm()
    facing = (cam_normals @ -light).abs()  # two-sided, like Workbench's default
    grey = 0.8 * (0.35 + 0.65 * facing)
    value = torch.where(seen >= 0, grey[seen.clamp_min(0)], torch.zeros((), dtype=grey.dtype))
    alpha = (seen >= 0).to(grey.dtype)
    rgba = torch.stack([value, value, value, alpha], dim=-1)
    srgb = torch.where(rgba[..., :3] <= 0.0031308, 12.92 * rgba[..., :3], 1.055 * rgba[..., :3] ** (1 / 2.4) - 0.055)
    rgba = torch.cat([srgb, alpha[..., None]], dim=-1)
    return (rgba * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def mesh_views(vertices, faces, viewmats, Ks, height: int, width: int, device="cpu",
               crease_degrees: float = CREASE_NORMAL_DEGREES) -> dict[str, np.ndarray]:
    """The job's per-view arrays for a mesh in normalised space, as views.npz holds them.

    ``rgba`` uint8 [V,H,W,4] (grey, straight alpha), ``lines`` and ``lines_hidden`` uint8 [V,H,W]
    (255 = line), ``depth`` float32 [V,H,W] (camera z, 0 on the background).
    """
    device = torch.device(device)
    verts = torch.as_tensor(np.asarray(vertices, dtype=np.float32), device=device)
    tris = torch.as_tensor(np.asarray(faces, dtype=np.int64), device=device)
    mats = torch.as_tensor(np.asarray(viewmats, dtype=np.float32), device=device).reshape(-1, 4, 4)
    intr = torch.as_tensor(np.asarray(Ks, dtype=np.float32), device=device).reshape(-1, 3, 3)
    edges = mesh_edges(verts, tris, crease_degrees)
    normals = face_normals(verts, tris)
    centres = verts[tris].mean(dim=1)
    count = len(mats)
    out = {"rgba": torch.zeros((count, height, width, 4), dtype=torch.uint8, device=device),
           "lines": torch.zeros((count, height, width), dtype=torch.uint8, device=device),
           "lines_hidden": torch.zeros((count, height, width), dtype=torch.uint8, device=device),
           "depth": torch.zeros((count, height, width), dtype=torch.float32, device=device)}
    for i in range(count):
        cam, uv = to_camera(verts, mats[i], intr[i])
        depth, seen = rasterise(cam, uv, tris, height, width)
        eye = -mats[i][:3, :3].T @ mats[i][:3, 3]
        chosen = edges.ends[feature_edges(edges, normals, centres, eye)]
        visible, hidden = draw_lines(cam, uv, intr[i], chosen, depth)
        out["lines"][i] = visible.to(torch.uint8) * 255
        out["lines_hidden"][i] = hidden.to(torch.uint8) * 255
        out["depth"][i] = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth)).float()
        out["rgba"][i] = shade(normals @ mats[i][:3, :3].T, seen)
    return {key: value.cpu().numpy() for key, value in out.items()}


def draw_missing(arrays: dict, size: tuple[int, int], config_device: str = "auto") -> dict[str, np.ndarray]:
    """The views' images that ``arrays`` (views.npz + mesh.npz keys) leaves out, drawn from the mesh.

    Only what is missing is drawn: a Blender surface render (for CLIP) or a capture's own lines stay
    as they are. Runs on the GPU where the job's device allows one.
    """
    missing = [key for key in ("rgba", "lines", "lines_hidden", "depth") if key not in arrays]
    if not missing:
        return {}
    height, width = size
    device = "cuda" if config_device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    drawn = mesh_views(arrays["vertices"], arrays["faces"], arrays["viewmats"], arrays["Ks"], height, width, device)
    return {key: drawn[key] for key in missing}
