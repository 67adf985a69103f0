"""Vertex coordinates read straight from a mesh file, before Blender imports it (no bpy).

Blender's importers turn a coordinate that is not a finite number (``nan``, ``inf``, a value past
float32's range, a word where a number should be) into 0 without a word, so the sketch would be made
of a different shape than the file's. Only the file itself still says so: :func:`non_finite_problem`
reads its vertex positions and names the first bad one. A layout this reader does not follow (a PLY
whose vertices come after list elements, sparse glTF accessors) is left to the importer.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import urllib.parse

import numpy as np

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_GLTF_FLOAT = 5126
_GLB_MAGIC, _GLB_BIN = b"glTF", 0x004E4942


def non_finite_problem(path: str) -> str | None:
    """A one-line message if a vertex of the mesh file ``path`` has a coordinate that is not a finite
    number, else None."""
    reader = {".obj": _obj_positions, ".ply": _ply_positions, ".stl": _stl_positions,
              ".gltf": _gltf_positions, ".glb": _gltf_positions}.get(os.path.splitext(path)[1].lower())
    if reader is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
        found = reader(data, path)
    except (OSError, ValueError, KeyError, IndexError, TypeError, struct.error, json.JSONDecodeError):
        return None  # not a layout read here: the importer says what is wrong with it
    if found is None:
        return None
    positions, what = found
    bad = ~_finite32(positions).all(axis=-1)
    if not bad.any():
        return None
    count = int(bad.sum())
    return (f"{count} vertex position{'s are' if count > 1 else ' is'} not a finite number (first: "
            f"{what(int(np.argmax(bad)))}); Blender's importer would silently make {'them' if count > 1 else 'it'} 0")


def _finite32(values) -> np.ndarray:
    """Finite as Blender stores coordinates (float32: 1e39 is infinite there); a text that is not a
    number at all (``b"abc"``) counts as not finite."""
    values = np.asarray(values)
    if values.dtype.kind in "SU":
        try:
            values = values.astype(np.float64)
        except ValueError:  # some text is not a number: read them one by one
            values = np.array([[_number(v) for v in row] for row in values], np.float64).reshape(values.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.isfinite(np.asarray(values, np.float64).astype(np.float32))


def _number(text) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _obj_positions(data: bytes, _path: str):
    lines = re.findall(rb"^[ \t]*v[ \t]+([^\r\n]*)", data, re.M)
    # a missing coordinate is not a wrong one: the importer's own checks (no faces, ...) speak for it
    rows = [(line.split() + [b"0"] * 3)[:3] for line in lines]
    return np.array(rows, dtype=bytes).reshape(-1, 3), lambda i: f"'v {lines[i][:40].decode('latin-1')}'"


def _ply_header(data: bytes):
    end = data.index(b"end_header")
    body = data.index(b"\n", end) + 1
    fmt, elements = "", []
    for line in data[:end].decode("ascii").splitlines():
        words = line.split()
        if words[:1] == ["format"]:
            fmt = words[1]
        elif words[:1] == ["element"]:
            elements.append((words[1], int(words[2]), []))
        elif words[:1] == ["property"] and elements:
            elements[-1][2].append(("list", words[-1]) if words[1] == "list" else (_PLY_TYPES[words[1]], words[2]))
    return fmt, elements, body


def _ply_positions(data: bytes, _path: str):
    fmt, elements, body = _ply_header(data)
    names = [e[0] for e in elements]
    vertex = names.index("vertex")
    _, count, props = elements[vertex]
    columns = [name for _, name in props]
    xyz = [columns.index(axis) for axis in "xyz"]
    if fmt == "ascii":
        lines = data[body:].splitlines()
        skip = sum(e[1] for e in elements[:vertex])
        rows = [line.split() for line in lines[skip:skip + count]]
        values = np.array([[row[i] if i < len(row) else b"nan" for i in xyz] for row in rows], dtype=bytes)
    else:
        if any(kind == "list" for e in elements[:vertex + 1] for kind, _ in e[2]):
            return None  # records of varying size before or in the vertices: not followed here
        order = "<" if fmt == "binary_little_endian" else ">"
        offset = body + sum(e[1] * np.dtype([(n, order + k) for k, n in e[2]]).itemsize for e in elements[:vertex])
        dtype = np.dtype([(n, order + k) for k, n in props])
        records = np.frombuffer(data, dtype, count, offset)
        values = np.stack([records[axis].astype(np.float64) for axis in "xyz"], axis=1)
    return values, lambda i: f"vertex {i}"


def _stl_positions(data: bytes, _path: str):
    if len(data) >= 84 and len(data) == 84 + 50 * struct.unpack_from("<I", data, 80)[0]:
        records = np.frombuffer(data, np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("pad", "<u2")]),
                                offset=84)
        return records["corners"].reshape(-1, 3), lambda i: f"triangle {i // 3}"
    rows = re.findall(rb"vertex[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)", data)
    return np.array(rows, dtype=bytes).reshape(-1, 3), lambda i: f"'vertex {b' '.join(rows[i]).decode('latin-1')}'"


def _gltf_positions(data: bytes, path: str):
    binary = b""
    if data[:4] == _GLB_MAGIC:
        length = struct.unpack_from("<I", data, 12)[0]
        document = json.loads(data[20:20 + length])
        offset = 20 + length
        if offset + 8 <= len(data) and struct.unpack_from("<I", data, offset + 4)[0] == _GLB_BIN:
            binary = data[offset + 8:offset + 8 + struct.unpack_from("<I", data, offset)[0]]
    else:
        document = json.loads(data)
    accessors = {p["attributes"]["POSITION"] for m in document.get("meshes", []) for p in m.get("primitives", [])
                 if "POSITION" in p.get("attributes", {})}
    chunks, where = [], []
    for index in sorted(accessors):
        values = _gltf_accessor(document, index, binary, os.path.dirname(path))
        if values is not None:
            chunks.append(values)
            where += [f"accessor {index}, vertex {i}" for i in range(len(values))]
    if not chunks:
        return None
    return np.concatenate(chunks), lambda i: where[i]


def _gltf_accessor(document: dict, index: int, binary: bytes, folder: str):
    """The float VEC3 values of one accessor (None for a layout not read here: sparse, integer)."""
    accessor = document["accessors"][index]
    if accessor.get("componentType") != _GLTF_FLOAT or accessor.get("type") != "VEC3" or "sparse" in accessor \
            or "bufferView" not in accessor:
        return None
    view = document["bufferViews"][accessor["bufferView"]]
    buffer = _gltf_buffer(document["buffers"][view["buffer"]], binary, folder)
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    stride, count = view.get("byteStride", 12), int(accessor["count"])
    rows = np.ndarray((count, 3), "<f4", buffer, start, (stride, 4))
    return np.array(rows, np.float64)


def _gltf_buffer(buffer: dict, binary: bytes, folder: str) -> bytes:
    uri = buffer.get("uri")
    if uri is None:
        return binary
    if uri.startswith("data:"):
        return base64.b64decode(uri.split(",", 1)[1])
    with open(os.path.join(folder, urllib.parse.unquote(uri)), "rb") as f:
        return f.read()
