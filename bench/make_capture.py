"""Make a NeRF-synthetic capture of a mesh: RGBA pictures and camera poses, as a camera rig would.

    .venv/bin/python bench/make_capture.py MESH_FILE_OR_NAME OUT_DIR [--views 48] [--test 24] [--size 400]

Writes ``OUT_DIR/transforms_train.json`` and ``OUT_DIR/transforms_test.json`` (``camera_angle_x``;
per frame ``file_path`` without extension, as in the NeRF synthetic scenes, and a camera-to-world
``transform_matrix`` in Blender's camera convention, in the mesh's own world frame) and
``OUT_DIR/train/r_<i>.png``, ``OUT_DIR/test/r_<i>.png`` (straight-alpha RGBA on a transparent
background, rendered by the add-on's own surface render: Workbench studio light, the object's colours;
Cycles where there is no GPU context). Training cameras are a Fibonacci orbit (phase 0), test
cameras a disjoint one (phase 0.5), both at a random-free, fixed field of view, so a capture is
reproducible. ``MESH`` is a file (.obj/.ply/.stl/.gltf/.glb) or a name of the quality suite's meshes.

Used by tests (tiny captures) and by bench/images_vs_mesh.py (sketch from pictures vs from the mesh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import _scene_module, import_joined, mesh_path  # noqa: E402 - the suite's importer and meshes


def render_capture(obj, out: Path, views: int, test: int, size: int, fov_deg: float = 40.0) -> dict:
    """Render ``obj`` into a capture folder ``out`` (replaced if there); returns the json of train."""
    import bpy

    cameras = _scene_module("contract.cameras")
    targets, mesh = (_scene_module(f"scene.{m}") for m in ("targets", "mesh"))
    pixels = _scene_module("pictures.pixels")
    vertices, _ = mesh.evaluated_mesh_world(obj, bpy.context.evaluated_depsgraph_get())
    center, radius = mesh.bounding_sphere(vertices)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    angle = math.radians(fov_deg)
    written = {}
    with targets.temporary_data() as folder:
        copy = targets.copy_evaluated(obj)
        scene = targets.surface_scene(copy, size)
        cam = scene.camera
        for split, count, phase in (("train", views, 0.0), ("test", test, 0.5)):
            viewmats, Ks = cameras.orbit_cameras(count, size, fov_deg, phase=phase)
            (staging / split).mkdir(parents=True, exist_ok=True)
            frames = []
            for i, (viewmat, K) in enumerate(zip(viewmats, Ks)):
                targets.place_camera(cam, viewmat, K, size, center, radius)
                layers = pixels.read_exr_channels(targets.render_still(scene, os.path.join(folder, f"{split}{i}.exr")))
                pixels.write_png(str(staging / split / f"r_{i}.png"), pixels.surface_rgba(layers))
                frames.append({"file_path": f"./{split}/r_{i}",
                               "transform_matrix": np.array(cam.matrix_world).tolist()})
            data = {"camera_angle_x": angle, "frames": frames}
            (staging / f"transforms_{split}.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
            written[split] = data
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return written["train"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mesh", help="a mesh file, or a quality-suite mesh name (duck, spot, ...)")
    parser.add_argument("out", help="the capture folder to write (replaced)")
    parser.add_argument("--views", type=int, default=48, help="training pictures (default 48)")
    parser.add_argument("--test", type=int, default=24, help="held-out pictures (default 24)")
    parser.add_argument("--size", type=int, default=400, help="picture size in pixels (default 400)")
    args = parser.parse_args(argv)
    path = Path(args.mesh) if os.path.exists(args.mesh) else mesh_path(args.mesh)
    start = time.perf_counter()
    obj = import_joined(path)
    render_capture(obj, Path(args.out).resolve(), args.views, args.test, args.size)
    print(f"{args.out}: {args.views} + {args.test} pictures of {path.name} at {args.size} px "
          f"in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
