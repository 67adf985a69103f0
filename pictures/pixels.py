"""The Blender side's pixel and image-file code, in numpy alone (no bpy, no torch).

Everything the target renders and the contact sheet do to pixels once Blender has written them:
reading the multilayer EXR and PNG files, straight-alpha sRGB from Blender's linear premultiplied
colour, depth in normalised units, the visible / hidden Freestyle line split, compositing over
white, and writing PNGs. The bpy modules (``targets``, ``preview``) call these; tests call them on
small arrays without starting Blender.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

# --- colour and alpha ----------------------------------------------------------------------------


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """The sRGB transfer function (IEC 61966-2-1) on linear values, clipped to [0, 1]."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1.0 / 2.4) - 0.055)


def to_u8(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 (rounded, clipped)."""
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def over_white(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha uint8 ``[..., 4]`` composited over white: uint8 ``[..., 3]``."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def image_floats_to_rgba(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Blender's ``Image.pixels`` of a byte image (floats, bottom row first) as uint8 ``[H,W,4]``,
    top row first."""
    return np.round(np.asarray(pixels, np.float32).reshape(height, width, 4)[::-1] * 255.0).astype(np.uint8)


# --- render passes -------------------------------------------------------------------------------


def channel(layers: dict, suffix: str) -> np.ndarray:
    """The one channel of an EXR (``read_exr_channels``) whose name ends in ``suffix``."""
    for name, values in layers.items():
        if name.endswith(suffix):
            return values
    raise KeyError(f"render has no {suffix} channel (has {sorted(layers)})")


def surface_rgba(layers: dict) -> np.ndarray:
    """Linear premultiplied EXR colour -> straight-alpha sRGB uint8, as a PNG of the view would be."""
    alpha = channel(layers, "Combined.A")
    rgb = np.stack([channel(layers, f"Combined.{c}") for c in "RGB"], axis=-1)
    straight = np.where(alpha[..., None] > 1e-6, rgb / np.maximum(alpha[..., None], 1e-6), 0.0)
    return to_u8(np.concatenate([linear_to_srgb(straight), np.clip(alpha, 0.0, 1.0)[..., None]], axis=-1))


def surface_depth(layers: dict, clip_end: float, radius: float) -> np.ndarray:
    """The Z pass (camera z, scene units) in normalised units, 0 where nothing was hit.

    Workbench and Cycles both write a huge value (about 1e10, or inf) on the background; anything
    at or past the far clip plane is background.
    """
    z = channel(layers, "Depth.Z")
    background = ~(z < clip_end)  # also catches NaN
    return np.where(background, 0.0, z / radius).astype(np.float32)


def split_lines(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Visible (red) and hidden (blue) line strengths from a Freestyle PNG with straight alpha."""
    rgba = pixels.astype(np.float32) / 255.0
    total = rgba[..., 0] + rgba[..., 2] + 1e-6
    visible = rgba[..., 3] * rgba[..., 0] / total
    hidden = rgba[..., 3] * rgba[..., 2] / total
    return to_u8(visible), to_u8(hidden)


def contact_sheet(rows: list[list[np.ndarray]], margin: int, background: int = 200) -> np.ndarray:
    """Equal-sized RGB uint8 tiles in a grid (rows of columns) with ``margin`` px of grey around each."""
    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    sheet = np.full((len(rows) * height + (len(rows) + 1) * margin, columns * width + (columns + 1) * margin, 3),
                    background, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = margin + r * (height + margin), margin + c * (width + margin)
            sheet[y:y + height, x:x + width] = image
    return sheet


# --- OpenEXR (uncompressed scanline, what Blender writes with codec NONE) -------------------------


def _exr_header(data: bytes, pos: int) -> tuple[dict, int]:
    """One EXR header (attribute name -> raw bytes) starting at ``pos``; returns it and the end."""
    header = {}
    while data[pos] != 0:
        name_end = data.index(b"\0", pos)
        type_end = data.index(b"\0", name_end + 1)
        (length,) = struct.unpack_from("<i", data, type_end + 1)
        header[data[pos:name_end].decode()] = data[type_end + 5:type_end + 5 + length]
        pos = type_end + 5 + length
    return header, pos + 1


def read_exr_channels(path: str) -> dict[str, np.ndarray]:
    """Channels of an uncompressed scanline OpenEXR file as float32 ``[H,W]``, top row first.

    Blender's Python API cannot read the passes of a multilayer EXR, so this small reader does.
    It accepts what Blender writes with codec NONE: single- or multi-part (Blender 5 writes one
    part per pass), scanline images. Keys are full channel names, e.g. ``ViewLayer.Depth.Z``.
    """
    with open(path, "rb") as f:
        data = f.read()
    magic, version = struct.unpack_from("<ii", data, 0)
    if magic != 20000630 or version & 0xA00:  # tiled or deep
        raise ValueError(f"{path}: not a scanline EXR")
    multipart = bool(version & 0x1000)
    headers, pos = [], 8
    while True:
        header, pos = _exr_header(data, pos)
        headers.append(header)
        if not multipart or data[pos] == 0:
            pos += 1 if multipart else 0
            break
    result = {}
    for header in headers:
        if header["compression"][0] != 0:
            raise ValueError(f"{path}: compressed EXR (write it with exr_codec 'NONE')")
        xmin, ymin, xmax, ymax = struct.unpack("<iiii", header["dataWindow"])
        width, height = xmax - xmin + 1, ymax - ymin + 1
        channels, p, chlist = [], 0, header["channels"]
        while chlist[p] != 0:
            end = chlist.index(b"\0", p)
            (pixel_type,) = struct.unpack_from("<i", chlist, end + 1)
            channels.append((chlist[p:end].decode(), {0: "<u4", 1: "<f2", 2: "<f4"}[pixel_type]))
            p = end + 17
        fields = [("part", "<i4")] if multipart else []
        fields += [("y", "<i4"), ("size", "<i4")] + [(f"c{i}", t, (width,)) for i, (_, t) in enumerate(channels)]
        offsets = np.frombuffer(data, dtype="<u8", count=height, offset=pos)
        pos += 8 * height
        rows = np.concatenate([np.frombuffer(data, dtype=np.dtype(fields), count=1, offset=int(o)) for o in offsets])
        rows = rows[np.argsort(rows["y"])]
        prefix = header["name"].rstrip(b"\0").decode() + "." if "name" in header else ""
        for i, (name, _) in enumerate(channels):
            full = name if name.startswith(prefix) else prefix + name
            result[full] = rows[f"c{i}"].astype(np.float32)
    return result


# --- PNG (zlib + struct): 8-bit grey, grey+alpha, RGB or RGBA -------------------------------------
# For contact sheets and debugging images without going through ``bpy.data.images`` (which would add
# datablocks to the user's file) and without Pillow (not in Blender's Python).

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png(path: str, image: np.ndarray, text: dict | None = None) -> str:
    """Write a uint8 ``[H,W]`` or ``[H,W,C]`` (C = 1..4) image, top row first; ``text``: tEXt chunks."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"write_png expects uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    height, width, channels = image.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * channels)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    data = _SIGNATURE + _chunk(b"IHDR", header)
    for key, value in (text or {}).items():
        data += _chunk(b"tEXt", key.encode("latin-1")[:79] + b"\0" + str(value).encode("latin-1", "replace"))
    data += _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
    with open(path, "wb") as f:
        f.write(data + _chunk(b"IEND", b""))
    return path


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def read_png(path: str) -> np.ndarray:
    """Read an 8-bit non-interlaced PNG (any filter) as uint8 ``[H,W,C]``, top row first."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"{path} is not a PNG")
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        pos += 12 + length
    channels = {v: k for k, v in _COLOR_TYPES.items()}.get(color)
    if depth != 8 or interlace or channels is None:
        raise ValueError(f"{path}: only 8-bit, non-interlaced, non-palette PNGs are supported")
    stride = width * channels
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        up = out[y - 1] if y else np.zeros(stride, np.int32)
        if kind == 0:
            out[y] = line
        elif kind == 2:
            out[y] = (line + up) & 255
        elif kind in (1, 3, 4):  # these depend on the reconstructed pixel to the left: go bytewise
            row = out[y]
            for x in range(stride):
                left = row[x - channels] if x >= channels else 0
                upper_left = up[x - channels] if x >= channels else 0
                pred = left if kind == 1 else (left + up[x]) // 2 if kind == 3 else _paeth(left, up[x], upper_left)
                row[x] = (line[x] + pred) & 255
        else:
            raise ValueError(f"{path}: bad PNG filter {kind}")
    return out.astype(np.uint8).reshape(height, width, channels)


# -- sizes and silhouettes ------------------------------------------------------------------------

ALPHA_THRESHOLD = 0.5


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` box-filter weights: each output pixel averages the input it covers."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    left, right = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in)[None]
    overlap = np.clip(np.minimum(right, j + 1) - np.maximum(left, j), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-averaged resize of straight-alpha uint8 ``[H,W,4]`` (colour averaged premultiplied)."""
    if rgba.shape[:2] == (height, width):
        return rgba
    wy, wx = area_weights(rgba.shape[0], height), area_weights(rgba.shape[1], width)
    f = rgba.astype(np.float64) / 255.0
    f[..., :3] *= f[..., 3:]
    h, w, c = f.shape
    rows = (wy @ f.reshape(h, w * c)).reshape(height, w, c)  # two separable passes, both matrix products
    out = np.matmul(wx, rows)  # [width, w] @ [height, w, c] -> [height, width, c]
    alpha = out[..., 3:]
    out[..., :3] = np.where(alpha > 1e-6, out[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def target_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The job's image size: the longer side ``size`` (never enlarged)."""
    scale = min(1.0, size / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


def silhouette(rgba: np.ndarray) -> np.ndarray:
    return rgba[..., 3] >= 255 * ALPHA_THRESHOLD
