"""Target views of the source object, rendered by Blender itself, as numpy arrays.

Two renders per view in a temporary scene that holds a copy of the evaluated mesh:

* Workbench (studio light, the object's viewport colours, transparent film) to a multilayer EXR:
  ``rgba`` (straight alpha, sRGB) and ``depth`` (the Z pass) from one render.
* Cycles with 1 sample and Freestyle, a Holdout material override and transparent film, so the PNG's
  alpha is the lines alone; two line sets in different colours (visible red, hidden blue) give
  ``lines`` and ``lines_hidden`` from one render.

Workbench needs a GPU context. A background Blender without one (a render-farm node with no display
and no usable libEGL) does not raise: it aborts the whole process at the first Workbench render. So
before the first one, :func:`gpu_context_problem` finds out safely (see there) and, where there is no
context, the surface render is done by Cycles on the CPU instead (few samples, the viewport colours as
diffuse materials, a key light that follows the camera): the same EXR passes, so the same outputs.

Everything created on the way (scenes, objects, cameras, materials, line styles, images, files) is
removed afterwards, also on error: the user's data, scene and selection are left as they were. The
pixel and file work after each render is numpy alone, in :mod:`.pixels`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time

import bpy
import mathutils
import numpy as np

from ..contract import cameras
from ..pictures import pixels
from . import mesh as source_mesh

VISIBLE_COLOR = (1.0, 0.0, 0.0)
HIDDEN_COLOR = (0.0, 0.0, 1.0)
LINE_THICKNESS_PX = 1.0
CYCLES_SURFACE_SAMPLES = 16  # the surface render's samples where there is no GPU context (antialiasing)


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
        values = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(values)
    finally:
        bpy.data.images.remove(image)
    return pixels.image_floats_to_rgba(values, width, height)


# --- is there a GPU context for Workbench? -------------------------------------------------------

_PROBE_OK = "SPLATSKETCH-GPU-CONTEXT-OK"
_PROBE_SCRIPT = f"""\
import bpy
scene = bpy.data.scenes.new("probe")
camera = bpy.data.objects.new("probe", bpy.data.cameras.new("probe"))
scene.collection.objects.link(camera)
scene.camera = camera
scene.render.engine = 'BLENDER_WORKBENCH'
scene.render.resolution_x = scene.render.resolution_y = 4
bpy.ops.render.render(scene=scene.name)
print("{_PROBE_OK}", flush=True)
"""
_UNPROBED = object()
_gpu_problem = _UNPROBED  # the answer of gpu_context_problem(), once known (it cannot change in a process)
_told = False


def _gpu_initialised() -> bool:
    """Whether this process already has its GPU context (a Workbench render ran, or the UI is up).

    Before that, in background mode, the ``gpu`` module refuses every call with a SystemError (it
    does not start the GPU), in the bpy wheels 4.2 and 5.0 as in Blender 4.3: a "no" proves nothing.
    """
    try:
        import gpu

        gpu.platform.backend_type_get()
    except Exception:  # noqa: BLE001 - SystemError "not available in background mode", or no gpu module
        return False
    return True


def _egl_problem() -> str | None:
    """Why libEGL cannot be loaded, on a Linux with no display server to ask instead; else None.

    A background Blender on Linux gets its OpenGL context from the display server when it can reach
    one (GLX: Workbench works with no libEGL at all), else from EGL; libepoxy dlopen()s
    ``libEGL.so.1`` then and abort()s the process when that fails ("Couldn't open libEGL.so.1").
    Loading the same library here with ctypes only raises OSError.
    """
    if not sys.platform.startswith("linux") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    try:
        ctypes.CDLL("libEGL.so.1")
    except OSError as error:
        return f"libEGL.so.1 cannot be loaded: {error}"
    return None


def _child_render_problem(timeout: float = 180.0) -> str | None:
    """Render 4x4 px with Workbench in a child Blender (the bpy module: a child Python importing it).

    The one faithful test: a libEGL that loads can still have no driver behind it (libglvnd with
    no vendor library, no render node), and Blender then aborts too (libepoxy: "Couldn't find
    current GLX or EGL context"), which nothing short of making the context finds out. If the
    child dies, only the child does. About 1-3 s, once per process.
    """
    if bpy.app.binary_path:
        argv = [bpy.app.binary_path, "-b", "--factory-startup", "--python-exit-code", "1",
                "--python-expr", _PROBE_SCRIPT]
    else:  # bpy imported as a module: this interpreter can import it again
        argv = [sys.executable, "-c", _PROBE_SCRIPT]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"a Workbench test render in a child Blender did not finish: {error}"
    if done.returncode == 0 and _PROBE_OK in done.stdout:
        return None
    lines = [line.strip() for line in (done.stderr + "\n" + done.stdout).splitlines() if line.strip()]
    telling = [line for line in lines if any(word in line for word in ("EGL", "GLX", "GPU", "OpenGL", "context"))]
    detail = (telling or lines or ["no output"])[-1][:200]
    how = f"died of signal {-done.returncode}" if done.returncode < 0 else f"exited with {done.returncode}"
    return f"a Workbench test render in a child Blender {how}: {detail}"


def gpu_context_problem() -> str | None:
    """None where Workbench can render in this process, else why not (one short phrase).

    Cheapest first, and nothing here can take the process down: the UI always has a context; so has
    a process that already rendered with Workbench; a Linux without a display and without a
    loadable libEGL has none (:func:`_egl_problem`); otherwise a child process tries a tiny Workbench
    render (:func:`_child_render_problem`). Asked once per process.
    """
    global _gpu_problem
    if _gpu_problem is _UNPROBED:
        if not bpy.app.background or _gpu_initialised():
            _gpu_problem = None
        else:
            _gpu_problem = _egl_problem() or _child_render_problem()
    return _gpu_problem


def surface_engine() -> str:
    """``'BLENDER_WORKBENCH'``, or ``'CYCLES'`` where there is no GPU context (said once, on stdout)."""
    global _told
    problem = gpu_context_problem()
    if problem is None:
        return 'BLENDER_WORKBENCH'
    if not _told:
        print(f"splatsketch: no GPU context ({problem}): rendering targets with Cycles", flush=True)
        _told = True
    return 'CYCLES'


# --- scenes --------------------------------------------------------------------------------------


def _exr_output(scene) -> None:
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):  # Blender 5.0 lists multilayer EXR under its own media type
        settings.media_type = 'MULTI_LAYER_IMAGE'
    settings.file_format = 'OPEN_EXR_MULTILAYER'
    settings.color_depth = '32'
    settings.exr_codec = 'NONE'


def shader_material(name: str, shader: str, color) -> object:
    """A material whose surface is one shader node (``ShaderNodeHoldout``, ``...BsdfDiffuse``...)."""
    material = bpy.data.materials.new(name)
    material.diffuse_color = (*color[:3], 1.0)
    if material.node_tree is None:  # Blender < 5.0; 5.0 gives every material a node tree
        material.use_nodes = True
    nodes = material.node_tree.nodes
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    node = nodes.new(shader)
    if "Color" in node.inputs:
        node.inputs["Color"].default_value = (*color[:3], 1.0)
    material.node_tree.links.new(node.outputs[0], output.inputs["Surface"])
    return material


def _world_color(world, value: float) -> None:
    """A uniform grey world (Cycles lights with it; Workbench ignores it)."""
    world.color = (value, value, value)
    if world.node_tree is None:  # Blender < 5.0 leaves a new world without nodes: world.color is used
        return
    for node in world.node_tree.nodes:
        if node.type == 'BACKGROUND':
            node.inputs["Color"].default_value = (value, value, value, 1.0)
            node.inputs["Strength"].default_value = 1.0


def cycles_settings(scene, samples: int) -> None:
    """CPU Cycles, ``samples`` per pixel, no denoising, few bounces: clean, quick target renders."""
    scene.cycles.device = 'CPU'
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.max_bounces = 2
    scene.cycles.diffuse_bounces = 1
    scene.cycles.glossy_bounces = scene.cycles.transmission_bounces = scene.cycles.volume_bounces = 0
    scene.render.use_persistent_data = True


def surface_scene(obj_copy, size: int, engine: str | None = None):
    """The scene of the surface render (multilayer EXR, Z pass), with its camera (``scene.camera``).

    Workbench: studio light, the object's viewport colours. Cycles (``engine``, by default where
    there is no GPU context, see :func:`surface_engine`): each viewport colour as a diffuse material
    on ``obj_copy`` (which must be a copy of ours), a grey world and a sun that follows the camera
    from its upper left, like the studio light. Either writes the same passes.
    """
    engine = engine or surface_engine()
    scene = new_scene("SplatSketch Surface", engine, size)
    scene.collection.objects.link(obj_copy)
    scene.view_layers[0].use_pass_z = True
    _exr_output(scene)
    cam = new_camera(scene)
    if engine == 'BLENDER_WORKBENCH':
        shading = scene.display.shading
        shading.light = 'STUDIO'
        shading.color_type = 'MATERIAL'
        shading.show_cavity = False
        return scene
    cycles_settings(scene, CYCLES_SURFACE_SAMPLES)
    _world_color(scene.world, 0.06)
    materials = obj_copy.data.materials
    colors = [tuple(m.diffuse_color) if m is not None else (0.8, 0.8, 0.8) for m in materials] or [(0.8, 0.8, 0.8)]
    viewport = [shader_material("SplatSketch Viewport Colour", "ShaderNodeBsdfDiffuse", c) for c in colors]
    if len(materials):
        for i, material in enumerate(viewport):
            materials[i] = material
    else:
        materials.append(viewport[0])
    sun = bpy.data.objects.new("SplatSketch Key Light", bpy.data.lights.new("SplatSketch Key Light", 'SUN'))
    sun.data.energy = 1.6
    sun.data.angle = 0.2
    scene.collection.objects.link(sun)
    sun.parent = cam  # the light travels forward, right and down in the camera's frame: lit from its upper left
    sun.matrix_basis = mathutils.Vector((0.4, -0.5, -1.0)).to_track_quat('-Z', 'Y').to_matrix().to_4x4()
    return scene


def _lines_scene(obj_copy, size: int):
    """Cycles + Freestyle scene whose PNG alpha holds the lines only (Holdout override)."""
    scene = new_scene("SplatSketch Lines", 'CYCLES', size)
    scene.collection.objects.link(obj_copy)
    cycles_settings(scene, 1)
    scene.render.use_freestyle = True
    scene.render.line_thickness_mode = 'ABSOLUTE'
    scene.render.line_thickness = 1.0
    settings = scene.render.image_settings
    settings.file_format = 'PNG'
    settings.color_mode = 'RGBA'
    settings.color_depth = '8'

    layer = scene.view_layers[0]
    layer.material_override = shader_material("SplatSketch Holdout", "ShaderNodeHoldout", (0.0, 0.0, 0.0))
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
    hide_render flag, parents or collection exclusions cannot hide it from the target renders. A copy
    with mixed winding is rewound (``mesh.wind_consistently``): Freestyle would draw a crease at every
    edge between faces that disagree, and smooth shading would be blotched.
    """
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = bpy.data.meshes.new_from_object(evaluated, preserve_all_data_layers=False, depsgraph=depsgraph)
    if source_mesh.mixed_winding(mesh):
        source_mesh.wind_consistently(mesh, write=True)
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
    background; it comes free with the surface render) and ``seconds_per_view`` (wall time).
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
            cam = surface.camera
            lines.collection.objects.link(cam)
            lines.camera = cam
        for v in range(views):
            with _watch(created):
                place_camera(cam, viewmats[v], Ks[v], size, center, radius)
                layers = pixels.read_exr_channels(render_still(surface, os.path.join(folder, f"surface_{v}.exr")))
                out["rgba"][v] = pixels.surface_rgba(layers)
                out["depth"][v] = pixels.surface_depth(layers, cam.data.clip_end, radius)
                drawn = read_image_rgba(render_still(lines, os.path.join(folder, f"lines_{v}.png")))
                out["lines"][v], out["lines_hidden"][v] = pixels.split_lines(drawn)
            yield v + 1, views
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _remove_created(created)
    out["seconds_per_view"] = (time.perf_counter() - start) / max(views, 1)
    return out
