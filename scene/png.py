"""A minimal PNG writer and reader (zlib + struct): 8-bit grey, grey+alpha, RGB or RGBA.

Used for contact sheets and debugging images without going through ``bpy.data.images`` (which
would add datablocks to the user's file) and without Pillow (not in Blender's Python).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

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
