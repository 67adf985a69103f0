"""pictures/pixels.py: the Blender side's pixel and file code, numpy alone.

Loaded here straight from its file, outside the extension's package, so these tests show it needs
neither bpy nor any sibling module; the source is also checked to import nothing but the standard
library and numpy.
"""

import ast
import importlib.util
import os
import struct
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATH = os.path.join(REPO, "pictures", "pixels.py")


def _load():
    spec = importlib.util.spec_from_file_location("splatsketch_pixels_alone", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pixels = _load()


def test_imports_only_the_standard_library_and_numpy():
    tree = ast.parse(open(PATH, encoding="utf-8").read(), PATH)
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import from {node.module!r} (line {node.lineno})"
            roots.add(node.module.split(".")[0])
    assert "numpy" in roots
    assert not roots & {"bpy", "mathutils", "gpu", "bmesh", "torch"}
    assert roots - {"numpy"} <= set(sys.stdlib_module_names), roots


def test_split_lines_red_visible_blue_hidden():
    drawn = np.zeros((2, 3, 4), np.uint8)
    drawn[0, 0] = (255, 0, 0, 255)  # visible line, opaque
    drawn[0, 1] = (0, 0, 255, 128)  # hidden line, half covered
    drawn[0, 2] = (255, 0, 255, 255)  # both at once: split evenly (a hair under half each)
    drawn[1, 0] = (255, 0, 0, 0)  # no alpha: no line, whatever the colour
    visible, hidden = pixels.split_lines(drawn)
    assert visible.dtype == hidden.dtype == np.uint8 and visible.shape == (2, 3)
    assert visible.tolist() == [[255, 0, 127], [0, 0, 0]]
    assert hidden.tolist() == [[0, 128, 127], [0, 0, 0]]


def test_over_white():
    rgba = np.array([[[0, 0, 0, 255], [0, 0, 0, 0], [0, 0, 0, 128], [200, 100, 50, 255]]], np.uint8)
    assert pixels.over_white(rgba).tolist() == [[[0, 0, 0], [255, 255, 255], [127, 127, 127], [200, 100, 50]]]


def test_surface_rgba_unpremultiplies_and_encodes_srgb():
    alpha = np.array([[1.0, 0.5, 0.0]], np.float32)
    linear = np.array([[0.21586, 0.5 * 0.21586, 0.0]], np.float32)  # premultiplied; sRGB 128 is 0.21586 linear
    layers = {f"ViewLayer.Combined.{c}": linear for c in "RGB"} | {"ViewLayer.Combined.A": alpha}
    rgba = pixels.surface_rgba(layers)
    assert rgba.dtype == np.uint8 and rgba.shape == (1, 3, 4)
    assert rgba[0, :, 3].tolist() == [255, 128, 0]
    assert rgba[0, 0, 0] == rgba[0, 1, 0] == 128 and rgba[0, 2, :3].tolist() == [0, 0, 0]
    assert pixels.linear_to_srgb(np.array([0.0, 0.0031308, 1.0, 2.0])) == pytest.approx([0, 0.0404482, 1, 1], abs=1e-5)


def test_surface_depth_normalised_with_background_zero():
    z = np.array([[2.0, 1e10, np.inf, np.nan, 7.9]], np.float32)
    depth = pixels.surface_depth({"ViewLayer.Depth.Z": z}, clip_end=8.0, radius=2.0)
    assert depth.dtype == np.float32 and depth.tolist() == [[1.0, 0.0, 0.0, 0.0, pytest.approx(3.95)]]
    with pytest.raises(KeyError, match="Depth.Z"):
        pixels.surface_depth({"ViewLayer.Combined.A": z}, 8.0, 2.0)


def _write_exr(path, channels: dict, name: bytes | None = None):
    """A minimal uncompressed single-part scanline EXR of float32 channels (as Blender writes them)."""
    names = sorted(channels)
    height, width = channels[names[0]].shape

    def attribute(key, kind, value):
        return key.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value

    chlist = b"".join(n.encode() + b"\0" + struct.pack("<i", 2) + b"\0\0\0\0" + struct.pack("<ii", 1, 1)
                      for n in names) + b"\0"
    header = (attribute("channels", "chlist", chlist) + attribute("compression", "compression", b"\0")
              + attribute("dataWindow", "box2i", struct.pack("<iiii", 0, 0, width - 1, height - 1))
              + (attribute("name", "string", name) if name else b"") + b"\0")
    start = 8 + len(header) + 8 * height
    row_bytes = 8 + 4 * width * len(names)
    offsets = b"".join(struct.pack("<Q", start + y * row_bytes) for y in range(height))
    rows = b"".join(struct.pack("<ii", y, row_bytes - 8)
                    + b"".join(channels[n][y].astype("<f4").tobytes() for n in names) for y in range(height))
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", 20000630, 2) + header + offsets + rows)


def test_read_exr_channels_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    channels = {f"ViewLayer.{n}": rng.random((3, 5), dtype=np.float32)
                for n in ("Combined.A", "Combined.B", "Combined.G", "Combined.R", "Depth.Z")}
    _write_exr(tmp_path / "a.exr", channels)
    got = pixels.read_exr_channels(str(tmp_path / "a.exr"))
    assert sorted(got) == sorted(channels)
    for key, values in channels.items():
        assert got[key].dtype == np.float32 and np.array_equal(got[key], values)
    (tmp_path / "b.exr").write_bytes(b"not an exr at all")
    with pytest.raises(ValueError, match="not a scanline EXR"):
        pixels.read_exr_channels(str(tmp_path / "b.exr"))


def test_contact_sheet_and_png(tmp_path):
    tiles = [[np.full((2, 3, 3), 10 * (r * 2 + c), np.uint8) for c in range(2)] for r in range(2)]
    sheet = pixels.contact_sheet(tiles, margin=1)
    assert sheet.shape == (2 * 2 + 3, 2 * 3 + 3, 3)
    assert sheet[0].tolist() == [[200] * 3] * 9 and (sheet[1:3, 1:4] == 0).all() and (sheet[4:6, 5:8] == 30).all()
    assert np.array_equal(pixels.read_png(pixels.write_png(str(tmp_path / "s.png"), sheet, {"Title": "t"})), sheet)
