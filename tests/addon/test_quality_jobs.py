"""The evaluation views' Blender half (scene/evaluation_folder.py, shared by Evaluate, --evaluate and the
quality suite) and the suite's import-and-join of a multi-object mesh file, on Suzanne at tiny sizes."""

import importlib.util
import math
import os

import bpy
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("quality_suite", os.path.join(REPO, "bench", "quality.py"))
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)
job_folder, targets, mesh, evaluation = quality._scene_modules()
cameras = evaluation.cameras


def test_eval_npz_has_the_views_npz_keys_and_disjoint_cameras(suzanne, tmp_path):
    vertices, _ = mesh.evaluated_mesh_world(suzanne, bpy.context.evaluated_depsgraph_get())
    center, radius = mesh.bounding_sphere(vertices)
    objects = len(bpy.data.objects)
    path = tmp_path / "eval.npz"
    viewmats, Ks = evaluation.eval_cameras(count=3, size=32)
    targets.drain(evaluation.iter_write_views(str(path), suzanne, viewmats, Ks, 32, center, radius))
    assert len(bpy.data.objects) == objects  # the renders clean up after themselves
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == set(quality.EVAL_KEYS)
        assert data["viewmats"].shape == (3, 4, 4) and data["viewmats"].dtype == np.float32
        assert data["Ks"].shape == (3, 3, 3) and data["Ks"].dtype == np.float32
        assert data["rgba"].shape == (3, 32, 32, 4) and data["rgba"].dtype == np.uint8
        for key in ("lines", "lines_hidden"):
            assert data[key].shape == (3, 32, 32) and data[key].dtype == np.uint8
        assert (data["rgba"][..., 3] > 127).any(axis=(1, 2)).all()  # Suzanne in every view
        assert (data["lines"] > 127).any(axis=(1, 2)).all()  # and her lines
        assert math.isclose(float(data["Ks"][0, 0, 2]), 16.0)
        # never one of the optimisation's views (training phase 0, held-out phase 0.5)
        optimised, _, _ = cameras.train_and_heldout_cameras(24, 8, 32)
        eyes = lambda vm: np.stack([-m[:3, :3].T @ m[:3, 3] for m in vm.astype(np.float64)])  # noqa: E731
        gaps = np.linalg.norm(eyes(data["viewmats"])[:, None] - eyes(optimised)[None], axis=-1)
        assert gaps.min() > 1e-3


def test_evaluation_folder_for_a_sketch_and_cleanup_when_closed(suzanne, tmp_path):
    sketch_object = importlib.import_module("splatsketch_quality.scene.sketch_object")
    vertices, _ = mesh.evaluated_mesh_world(suzanne, bpy.context.evaluated_depsgraph_get())
    center, radius = mesh.bounding_sphere(vertices)
    points = np.random.default_rng(1).uniform(-0.6, 0.6, (3, 4, 3))
    sketch = sketch_object.create_sketch(suzanne, points, center, radius, 0.01)
    steps = evaluation.iter_write_evaluation(str(tmp_path / "ev"), sketch, suzanne,
                                             bpy.context.evaluated_depsgraph_get(), turntable=False)
    assert next(steps) == (1, 24)
    steps.close()  # cancelled: nothing half-written remains
    assert not (tmp_path / "ev").exists()
    source = targets.drain(evaluation.iter_write_evaluation(
        str(tmp_path / "ev"), sketch, suzanne, bpy.context.evaluated_depsgraph_get(), turntable=False))
    assert source["name"] == suzanne.name and source["sketch"] == sketch.name
    assert sorted(os.listdir(tmp_path / "ev")) == ["eval.npz", "job.json", "mesh.npz", "result.npz"]
    with np.load(tmp_path / "ev" / "result.npz") as result:  # back in normalised space, as optimised
        assert np.allclose(result["control_points"], points, atol=1e-5)
        assert np.allclose(result["widths"], 0.01)


def test_import_joins_a_multi_object_file_into_one_mesh(tmp_path):
    bpy.ops.mesh.primitive_monkey_add(location=(1.0, 0.0, 0.0))
    bpy.ops.mesh.primitive_cube_add(location=(-2.0, 0.0, 0.0), size=0.5)
    path = tmp_path / "two.obj"
    bpy.ops.object.select_all(action='SELECT')
    bpy.ops.wm.obj_export(filepath=str(path), export_selected_objects=False, export_materials=False)
    obj = quality.import_joined(path)
    meshes = [o for o in bpy.context.scene.objects if o.type == 'MESH']
    assert meshes == [obj]
    vertices, _ = mesh.evaluated_mesh_world(obj, bpy.context.evaluated_depsgraph_get())
    assert len(vertices) == 507 + 8 + 8  # Suzanne + the cube + the factory scene's cube
    assert vertices[:, 0].min() < -2.0 and vertices[:, 0].max() > 1.5
