"""Target views of the source object, rendered by Blender itself, as numpy arrays.

Two renders per view in a temporary scene that holds a copy of the evaluated mesh:

* Workbench (studio light, the object's viewport colours, transparent film) to a multilayer EXR:
  ``rgba`` (straight alpha, sRGB) and ``depth`` (the Z pass) from one render.
* Cycles with 1 sample and Freestyle, a Holdout material override and transparent film, so the PNG's
  alpha is the lines alone; two line sets in different colours (visible red, hidden blue) give
  ``lines`` and ``lines_hidden`` from one render.

Everything created on the way (scenes, objects, cameras, materials, line styles, images, files) is
removed afterwards, also on error: the user's data, scene and selection are left as they were.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
import time

import bpy
import mathutils
import numpy as np

from ..backend import cameras

VISIBLE_COLOR = (1.0, 0.0, 0.0)
HIDDEN_COLOR = (0.0, 0.0, 1.0)
LINE_THICKNESS_PX = 1.0


def _all_ids() -> list:
    """Every ID in every removable ``bpy.data`` collection (scenes, objects, images, line styles...)."""
    found = []
    for prop in bpy.data.bl_rna.properties:
        items = getattr(bpy.data, prop.identifier, None) if prop.type == 'COLLECTION' else None
        if items is not None and hasattr(items, "remove"):
            found.extend(item for item in items if isinstance(item, bpy.types.ID))
    return found


@contextlib.contextmanager
def _watch(created: set):
    """Add to ``created`` the IDs that appear during the block (ours, and Blender's for our renders).

    Used where the work is spread over modal ticks: only what appears *inside* our own steps is
    ours, so whatever the user makes between two steps is never touched.
    """
    before = {item.as_pointer() for item in _all_ids()}
    try:
        yield
    finally:
        created.update(item.as_pointer() for item in _all_ids() if item.as_pointer() not in before)


def _remove_created(created: set) -> None:
    ids = [item for item in _all_ids() if item.as_pointer() in created]
    if ids:
        bpy.data.batch_remove(ids)


@contextlib.contextmanager
def temporary_data():
    """Yield a temp folder; on exit remove it and every ID created meanwhile (even on error).

    A snapshot diff rather than a list of what we made: Blender itself adds IDs while rendering
    (the "Render Result" image, a default line style per scene), and those must go too.
    """
    before = {item.as_pointer() for item in _all_ids()}
    folder = tempfile.mkdtemp(prefix="splatsketch_")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        created = [item for item in _all_ids() if item.as_pointer() not in before]
        if created:
            bpy.data.batch_remove(created)


def new_scene(name: str, engine: str, size: int):
    """A bare scene for off-screen renders: square ``size`` px, transparent film, Standard view."""
    scene = bpy.data.scenes.new(name)
    scene.render.engine = engine
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    scene.render.film_transparent = True
    scene.render.use_compositing = False
    scene.render.use_sequencer = False
    scene.view_settings.view_transform = 'Standard'
    scene.view_settings.look = 'None'
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.world = bpy.data.worlds.new(name)
    return scene


def new_camera(scene, name: str = "SplatSketch Camera"):
    """A perspective camera object linked into ``scene`` and made its active camera."""
    cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    scene.collection.objects.link(cam)
    scene.camera = cam
    return cam


def place_camera(cam, viewmat, K, size: int, center, radius: float) -> None:
    """Point a Blender camera like an OpenCV ``viewmat``/``K`` given in normalised space.

    Only the location is mapped to world space (``center + radius * t``): scaling the whole matrix
    would scale the camera object, which Blender treats as a different projection. Clip planes
    hug the bounding sphere, so meshes hundreds of units across are not cut at the default 100.
    """
    K = np.asarray(K, dtype=np.float64)
    if abs(K[0, 2] - size / 2) > 0.5 or abs(K[1, 2] - size / 2) > 0.5 or abs(K[0, 0] - K[1, 1]) > 1e-3 * K[0, 0]:
        raise ValueError("Only square pixels and a centred principal point are supported for target renders")
    matrix = cameras.blender_matrix_world(viewmat)
    distance = float(np.linalg.norm(matrix[:3, 3]))  # from the sphere's centre, normalised units
    matrix[:3, 3] = np.asarray(center, dtype=np.float64) + radius * matrix[:3, 3]
    cam.matrix_world = mathutils.Matrix(matrix.tolist())  # rows; a plain nested list would be read as columns
    data = cam.data
    data.type = 'PERSP'
    data.sensor_fit = 'HORIZONTAL'
    data.sensor_width = 36.0
    data.lens = K[0, 0] * data.sensor_width / size
    data.shift_x = data.shift_y = 0.0
    data.clip_start = radius * max(distance - 1.1, 0.01 * distance, 1e-4)
    data.clip_end = radius * (distance + 1.1)


def render_still(scene, path: str) -> str:
    """Render ``scene`` with its active camera to ``path`` (format from the scene's settings)."""
    scene.render.filepath = path
    scene.render.use_file_extension = False
    bpy.ops.render.render(write_still=True, scene=scene.name)
    if not os.path.exists(path):
        raise RuntimeError(f"Blender did not write the render {path}")
    return path


def read_image_rgba(path: str) -> np.ndarray:
    """An 8-bit PNG as uint8 ``[H,W,4]``, top row first, via Blender's image loader.

    Byte images keep their stored values in ``Image.pixels`` (no colour conversion), so this is
    the file's content exactly; the image datablock is removed right away.
    """
    image = bpy.data.images.load(path, check_existing=False)
    try:
        width, height = image.size
        pixels = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return np.round(pixels.reshape(height, width, 4)[::-1] * 255.0).astype(np.uint8)


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


def _linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1.0 / 2.4) - 0.055)


def surface_scene(obj_copy, size: int):
    """Workbench scene: studio light, the object's viewport colours, Z pass, multilayer EXR out."""
    scene = new_scene("SplatSketch Surface", 'BLENDER_WORKBENCH', size)
    scene.collection.objects.link(obj_copy)
    shading = scene.display.shading
    shading.light = 'STUDIO'
    shading.color_type = 'MATERIAL'
    shading.show_cavity = False
    scene.view_layers[0].use_pass_z = True
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):  # Blender 5.0 lists multilayer EXR under its own media type
        settings.media_type = 'MULTI_LAYER_IMAGE'
    settings.file_format = 'OPEN_EXR_MULTILAYER'
    settings.color_depth = '32'
    settings.exr_codec = 'NONE'
    return scene


def _lines_scene(obj_copy, size: int):
    """Cycles + Freestyle scene whose PNG alpha holds the lines only (Holdout override)."""
    scene = new_scene("SplatSketch Lines", 'CYCLES', size)
    scene.collection.objects.link(obj_copy)
    scene.cycles.samples = 1
    scene.cycles.device = 'CPU'
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.render.use_persistent_data = True
    scene.render.use_freestyle = True
    scene.render.line_thickness_mode = 'ABSOLUTE'
    scene.render.line_thickness = 1.0
    settings = scene.render.image_settings
    settings.file_format = 'PNG'
    settings.color_mode = 'RGBA'
    settings.color_depth = '8'

    holdout = bpy.data.materials.new("SplatSketch Holdout")
    if holdout.node_tree is None:  # Blender < 5.0; 5.0 gives every material a node tree
        holdout.use_nodes = True
    nodes = holdout.node_tree.nodes
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    holdout.node_tree.links.new(nodes.new("ShaderNodeHoldout").outputs[0], output.inputs["Surface"])
    layer = scene.view_layers[0]
    layer.material_override = holdout
    layer.use_freestyle = True
    freestyle = layer.freestyle_settings
    freestyle.mode = 'EDITOR'
    freestyle.as_render_pass = False
    freestyle.use_culling = False
    for lineset in list(freestyle.linesets):
        freestyle.linesets.remove(lineset)
    for visibility, color in (('HIDDEN', HIDDEN_COLOR), ('VISIBLE', VISIBLE_COLOR)):  # visible drawn on top
        lineset = freestyle.linesets.new(f"SplatSketch {visibility.title()}")
        lineset.select_by_visibility = True
        lineset.visibility = visibility
        lineset.select_by_edge_types = True
        lineset.edge_type_combination = 'OR'
        lineset.edge_type_negation = 'INCLUSIVE'
        for edge in ("silhouette", "crease", "border", "contour"):
            setattr(lineset, f"select_{edge}", True)
        for edge in ("ridge_valley", "suggestive_contour", "material_boundary", "external_contour", "edge_mark"):
            setattr(lineset, f"select_{edge}", False)
        style = lineset.linestyle = bpy.data.linestyles.new(lineset.name)
        style.color = color
        style.alpha = 1.0
        style.thickness = LINE_THICKNESS_PX
        style.thickness_position = 'CENTER'
        style.caps = 'ROUND'
    return scene


def copy_evaluated(obj, name: str = "SplatSketch Source"):
    """A new object holding a copy of ``obj``'s evaluated mesh at its world matrix.

    Rendering a copy (not the object itself) means the source is never linked elsewhere, and its
    hide_render flag, parents or collection exclusions cannot hide it from the target renders.
    """
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = bpy.data.meshes.new_from_object(evaluated, preserve_all_data_layers=False, depsgraph=depsgraph)
    copy = bpy.data.objects.new(name, mesh)
    copy.matrix_world = evaluated.matrix_world.copy()
    return copy


def render_targets(obj, viewmats, Ks, size: int, center, radius: float) -> dict:
    """Render the target views of ``obj`` for cameras given in normalised space (all at once).

    See :func:`iter_render_targets` for the returned arrays.
    """
    return drain(iter_render_targets(obj, viewmats, Ks, size, center, radius))


def drain(steps):
    """Run a step generator to its end and return its value (the blocking form of a modal job)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def iter_render_targets(obj, viewmats, Ks, size: int, center, radius: float):
    """Render the target views one at a time: yields ``(views_done, views)`` after each view and
    returns the arrays, so a modal operator can keep Blender responsive between views. Closing the
    generator early removes everything it created, as an error does.

    Returns ``rgba`` uint8 [V,H,W,4] (straight alpha), ``lines`` and ``lines_hidden`` uint8 [V,H,W]
    (255 = line), ``depth`` float32 [V,H,W] (camera z, planar, in normalised units; 0 on the
    background; it comes free with the Workbench render) and ``seconds_per_view`` (wall time).
    """
    viewmats = np.asarray(viewmats, dtype=np.float64).reshape(-1, 4, 4)
    Ks = np.asarray(Ks, dtype=np.float64).reshape(-1, 3, 3)
    views = len(viewmats)
    radius = float(radius)
    out = {
        "rgba": np.zeros((views, size, size, 4), np.uint8),
        "lines": np.zeros((views, size, size), np.uint8),
        "lines_hidden": np.zeros((views, size, size), np.uint8),
        "depth": np.zeros((views, size, size), np.float32),
    }
    start = time.perf_counter()
    created: set = set()
    folder = tempfile.mkdtemp(prefix="splatsketch_")
    try:
        with _watch(created):
            copy = copy_evaluated(obj)
            surface = surface_scene(copy, size)
            lines = _lines_scene(copy, size)
            cam = new_camera(surface)
            lines.collection.objects.link(cam)
            lines.camera = cam
        for v in range(views):
            with _watch(created):
                place_camera(cam, viewmats[v], Ks[v], size, center, radius)
                layers = read_exr_channels(render_still(surface, os.path.join(folder, f"surface_{v}.exr")))
                out["rgba"][v] = surface_rgba(layers)
                z = _channel(layers, "Depth.Z")
                background = ~(z < cam.data.clip_end)  # Workbench writes ~1e10 (or inf) where there is nothing
                out["depth"][v] = np.where(background, 0.0, z / radius)
                pixels = read_image_rgba(render_still(lines, os.path.join(folder, f"lines_{v}.png")))
                out["lines"][v], out["lines_hidden"][v] = split_lines(pixels)
            yield v + 1, views
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _remove_created(created)
    out["seconds_per_view"] = (time.perf_counter() - start) / max(views, 1)
    return out


def _channel(layers: dict, suffix: str) -> np.ndarray:
    for name, values in layers.items():
        if name.endswith(suffix):
            return values
    raise KeyError(f"render has no {suffix} channel (has {sorted(layers)})")


def surface_rgba(layers: dict) -> np.ndarray:
    """Linear premultiplied EXR colour -> straight-alpha sRGB uint8, as a PNG of the view would be."""
    alpha = _channel(layers, "Combined.A")
    rgb = np.stack([_channel(layers, f"Combined.{c}") for c in "RGB"], axis=-1)
    straight = np.where(alpha[..., None] > 1e-6, rgb / np.maximum(alpha[..., None], 1e-6), 0.0)
    rgba = np.concatenate([_linear_to_srgb(straight), np.clip(alpha, 0.0, 1.0)[..., None]], axis=-1)
    return np.round(rgba * 255.0).astype(np.uint8)


def split_lines(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Visible (red) and hidden (blue) line strengths from a Freestyle PNG with straight alpha."""
    rgba = pixels.astype(np.float32) / 255.0
    total = rgba[..., 0] + rgba[..., 2] + 1e-6
    visible = rgba[..., 3] * rgba[..., 0] / total
    hidden = rgba[..., 3] * rgba[..., 2] / total
    to_u8 = lambda x: np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)  # noqa: E731
    return to_u8(visible), to_u8(hidden)
