"""Line images found in pictures, numpy only: what an artist reads in a picture.

The silhouette's boundary, the image's own edges (Canny on luminance), thin lines (ridges and
valleys of the luminance: a rib, a seam, a wire in front of the body) and, where a depth map is
given (the visual hull's), occluding contours whose step the picture confirms. A capture's line
targets are these, at the job's size.
"""

from __future__ import annotations

import math

import numpy as np

from ..stop_request import check_stop
from .pixels import area_weights, silhouette

EDGE_HIGH, EDGE_LOW = 0.06, 0.03  # Canny hysteresis on luminance gradient (per pixel, after a 1 px blur)
# Thin lines: hysteresis on ``|second derivative across the line| - |gradient|`` (per pixel, 1 px blur),
# which a step (a facet, a shading terminator) keeps near zero; not looked for within RIDGE_MARGIN px
# of the silhouette, where the shading's dark band along the outline would read as a line.
RIDGE_HIGH, RIDGE_LOW, RIDGE_MARGIN = 0.02, 0.01, 4
DEPTH_JUMP = 0.1  # normalised units (radius 1) between neighbour pixels: an occluding contour
# The picture's step a hull's depth jump needs (depth_edges): about one 8-bit grey level beyond the
# shading's slope, i.e. any step at all; chosen on four meshes' captures (docs/QUALITY.md).
DEPTH_CONTRAST, DEPTH_CONTRAST_REACH = 0.004, 3

def _blur(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, radius, mode="edge")
    rows = sum(k * padded[:, i:i + image.shape[1]] for i, k in enumerate(kernel))
    return sum(k * rows[i:i + image.shape[0]] for i, k in enumerate(kernel))


def _grow(mask: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Pixels of ``within`` 8-connected to ``mask`` (hysteresis)."""
    grown = mask.copy()
    while True:  # one pixel a pass: a long line in a large picture takes thousands
        check_stop()
        p = np.pad(grown, 1)
        near = np.zeros_like(grown)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                near |= p[dy:dy + grown.shape[0], dx:dx + grown.shape[1]]
        nxt = near & within | grown
        if (nxt == grown).all():
            return grown
        grown = nxt


def _erode(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask



def _box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum of ``a`` over the (2r+1)^2 square round each pixel (zeros beyond the border)."""
    c = np.pad(np.pad(a, r).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    n, (h, w) = 2 * r + 1, a.shape
    return c[n:n + h, n:n + w] - c[:h, n:n + w] - c[n:n + h, :w] + c[:h, :w]


def depth_edges(depth: np.ndarray, inside: np.ndarray, luminance: np.ndarray | None = None,
                jump: float = DEPTH_JUMP, contrast: float = DEPTH_CONTRAST) -> np.ndarray:
    """Occluding contours inside the silhouette: pixels whose 4-neighbour lies ``jump`` or more
    behind them (the line is drawn on the near surface, as Freestyle draws it).

    Given the picture's ``luminance``, a jump is kept only where the picture steps across it, on
    average along the line (within DEPTH_CONTRAST_REACH px), by ``contrast`` more than the shading
    changes over the same 3 px on either side: a real occluding contour puts two surfaces side by side,
    which shade differently if faintly (a teapot's knob on its lid); the membrane a visual hull
    stretches over a concavity (a bowl's opening) has holes whose jumps the picture, seeing the smooth
    inside, does not show. A jump where the picture changes less than its slope counts as no step (0)
    in the average. Measured on the shared meshes' captures (docs/QUALITY.md).
    """
    known = inside & (depth > 0)
    edges = np.zeros_like(known)
    change = np.zeros(depth.shape)
    pad = 5
    padded_depth, padded_known = np.pad(depth, pad), np.pad(known, pad)
    padded_lum = np.pad(luminance, pad, mode="edge") if luminance is not None else None
    h, w = depth.shape
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        def at(a, k, dy=dy, dx=dx):  # ``a`` at the pixel k steps along (dy, dx)
            return a[pad + k * dy:pad + k * dy + h, pad + k * dx:pad + k * dx + w]

        here = known & at(padded_known, 1) & (at(padded_depth, 1) - depth > jump)
        edges |= here
        if padded_lum is not None:  # the step across the jump, less the shading's slope beside it
            step = np.abs(at(padded_lum, 2) - at(padded_lum, -1))
            ramp = 0.5 * (np.abs(at(padded_lum, -1) - at(padded_lum, -4))
                          + np.abs(at(padded_lum, 5) - at(padded_lum, 2)))
            change = np.where(here, np.maximum(change, step - ramp), change)
    edges &= _erode(inside, 2)
    if luminance is not None:
        mean = _box_sum(change * edges, DEPTH_CONTRAST_REACH) / np.maximum(
            _box_sum(edges.astype(np.float64), DEPTH_CONTRAST_REACH), 1.0)
        edges &= mean >= contrast
    return edges


def _thin(strength: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Non-maximum suppression: pixels whose ``strength`` is a peak across ``angle`` (degrees, the
    direction across the line), compared with the two neighbours in that direction."""
    p = np.pad(strength, 1)
    neighbours = {0: (p[1:-1, :-2], p[1:-1, 2:]), 45: (p[:-2, 2:], p[2:, :-2]),
                  90: (p[:-2, 1:-1], p[2:, 1:-1]), 135: (p[:-2, :-2], p[2:, 2:])}
    direction = (np.rint(((angle + 180.0) % 180.0) / 45.0).astype(int) % 4) * 45
    peak = np.zeros(strength.shape, bool)
    for d, (a, b) in neighbours.items():
        peak |= (direction == d) & (strength >= a) & (strength >= b)
    return peak


def _hysteresis(strength: np.ndarray, candidates: np.ndarray, high: float, low: float) -> np.ndarray:
    return _grow(candidates & (strength >= high), candidates & (strength >= low))


def _smooth_luminance(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(luminance blurred by 1 px, silhouette). Lines are looked for on the object only: its own mean
    fills the background, so the silhouette (drawn from alpha) does not show up again, offset by the blur."""
    inside = silhouette(rgba)
    luminance = (rgba[..., :3].astype(np.float64) / 255.0) @ np.array([0.2126, 0.7152, 0.0722])
    fill = luminance[inside].mean() if inside.any() else 0.0
    return _blur(np.where(inside, luminance, fill)), inside


def canny_edges(rgba: np.ndarray, high: float = EDGE_HIGH, low: float = EDGE_LOW) -> np.ndarray:
    """bool ``[H,W]``: steps of the luminance inside the silhouette. Smooth shading varies slowly and
    stays under the thresholds; creases and strong colour boundaries cross them."""
    smooth, inside = _smooth_luminance(rgba)
    gy, gx = np.gradient(smooth)
    magnitude = np.hypot(gx, gy)
    candidates = _thin(magnitude, np.rad2deg(np.arctan2(gy, gx))) & _erode(inside, 2)
    return _hysteresis(magnitude, candidates, high, low)


def ridge_lines(rgba: np.ndarray, high: float = RIDGE_HIGH, low: float = RIDGE_LOW,
                margin: int = RIDGE_MARGIN) -> np.ndarray:
    """bool ``[H,W]``: thin bright or dark lines of the luminance (a rib, a seam, a wire in front of
    the body), where the Hessian's larger eigenvalue beats the gradient (both per pixel, after a 1 px
    blur). A line a few pixels wide has no gradient at its centre and a strong second derivative; a
    step's second derivative never exceeds its gradient by much (Canny finds steps), so the facets of
    a flat-shaded mesh stay out. Nothing within ``margin`` px of the silhouette, where the shading's
    dark band along the outline would read as a line."""
    smooth, inside = _smooth_luminance(rgba)
    gy, gx = np.gradient(smooth)
    gyy, gyx = np.gradient(gy)
    gxy, gxx = np.gradient(gx)
    cross = 0.5 * (gxy + gyx)
    half, root = 0.5 * (gxx + gyy), np.hypot(0.5 * (gxx - gyy), cross)
    larger = np.where(half >= 0, half + root, half - root)  # the eigenvalue of larger magnitude
    vx, vy = cross, larger - gxx  # its eigenvector, across the line
    flat = np.hypot(vx, vy) < 1e-12
    vx, vy = np.where(flat, larger - gyy, vx), np.where(flat, cross, vy)
    strength = np.abs(larger) - np.hypot(gx, gy)
    candidates = _thin(strength, np.rad2deg(np.arctan2(vy, vx))) & _erode(inside, margin)
    return _hysteresis(strength, candidates, high, low)


def pool_lines(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A line mask at ``width`` x ``height``: a pixel is on a line if any pixel it covers is."""
    if mask.shape == (height, width):
        return mask
    wy, wx = area_weights(mask.shape[0], height), area_weights(mask.shape[1], width)
    return (wy @ mask.astype(np.float64) @ wx.T) > 0


def line_image(rgba: np.ndarray, high: float = EDGE_HIGH, low: float = EDGE_LOW, depth=None,
               ridges: bool = True, detail: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[H,W]`` (255 = line): the silhouette's boundary, ``canny_edges``, ``ridge_lines`` and
    (given a ``depth`` map, e.g. of the visual hull) its occluding contours, as a part in front of a
    body of the same shade shows only in depth. With ``detail`` (the same picture, larger) the thin
    lines are found there and pooled: a rib three pixels wide in the picture is a smudge at the job's
    size. Steps are found at the job's size, where the thresholds were measured (at the picture's
    size a bevel's highlight doubles every edge)."""
    inside = silhouette(rgba)
    boundary = inside & ~_erode(inside)
    edges = canny_edges(rgba, high, low)
    if ridges:
        sharp = rgba if detail is None else detail
        margin = int(math.ceil(RIDGE_MARGIN * sharp.shape[0] / rgba.shape[0]))  # the same width on the object
        edges |= pool_lines(ridge_lines(sharp, margin=margin), *rgba.shape[1::-1]) & _erode(inside, 2)
    if depth is not None:
        edges |= depth_edges(depth, inside, _smooth_luminance(rgba)[0])
    return np.where(boundary | edges, 255, 0).astype(np.uint8)
