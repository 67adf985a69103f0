"""Bring assets into the scene with Blender's own importers, as one mesh each, leaving nothing behind
when an import fails. The CLI's ``--input`` and the quality suite (bench/quality.py) both use it, so
the suite measures what users get.
"""

from __future__ import annotations

import os

import bpy

from ..contract.protocol import MESH_FORMATS
from .mesh_files import non_finite_problem

IMPORTERS = {  # extension -> (operator path, keyword arguments)
    ".obj": ("wm.obj_import", {}),
    ".ply": ("wm.ply_import", {}),
    ".stl": ("wm.stl_import", {}),
    ".gltf": ("import_scene.gltf", {}),
    ".glb": ("import_scene.gltf", {}),
}
assert set(IMPORTERS) == set(MESH_FORMATS), "the batch tool reads MESH_FORMATS to find assets"
# Every ID kind an importer (or a run) may add; a failed step removes what appeared since a snapshot.
DATA_KINDS = ("objects", "meshes", "materials", "images", "textures", "collections", "cameras", "lights",
              "actions", "node_groups", "curves", "armatures")


def id_snapshot() -> set:
    """What exists now, for :func:`remove_new_ids`."""
    return {(kind, id(item), item.name) for kind in DATA_KINDS for item in getattr(bpy.data, kind)}


def remove_new_ids(before: set) -> None:
    """Remove every ID that appeared since ``before`` (a failed import leaves nothing behind)."""
    for kind in DATA_KINDS:
        collection = getattr(bpy.data, kind)
        for item in list(collection):
            if (kind, id(item), item.name) not in before:
                collection.remove(item)


def clear_startup_scene(objects) -> None:
    """Remove the factory startup scene's ``objects`` (Cube, Camera, Light) and the data they leave
    without users, for runs that import their assets into no file."""
    for obj in objects:
        bpy.data.objects.remove(obj)
    for kind in ("meshes", "cameras", "lights", "materials"):  # now without users
        collection = getattr(bpy.data, kind)
        for item in list(collection):
            if item.users == 0:
                collection.remove(item)


def import_asset(context, path: str):
    """Import one file with Blender's own importer; return one mesh object (parts joined)."""
    path = os.path.abspath(os.path.expanduser(path))
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMPORTERS:
        raise ValueError(f"unsupported file type '{ext or os.path.basename(path)}' "
                         f"(supported: {', '.join(sorted(IMPORTERS))})")
    if os.path.isdir(path):
        raise ValueError(f"'{path}' is a folder, not a mesh file")
    if not os.path.isfile(path):
        raise ValueError(f"file '{path}' does not exist")
    problem = non_finite_problem(path)
    if problem:
        raise ValueError(problem)
    op_path, kwargs = IMPORTERS[ext]
    module, name = op_path.split(".")
    before, objects_before = id_snapshot(), set(context.scene.objects)
    try:
        getattr(getattr(bpy.ops, module), name)(filepath=path, **kwargs)
        meshes = [o for o in context.scene.objects if o not in objects_before and o.type == "MESH"]
        if not meshes:
            raise ValueError(f"'{os.path.basename(path)}' contains no mesh")
        for obj in meshes:  # unparent (keeping world transforms) so the join keeps every part in place
            obj.hide_set(False)
            matrix = obj.matrix_world.copy()
            obj.parent = None
            obj.matrix_world = matrix
        if len(meshes) > 1:
            with context.temp_override(active_object=meshes[0], selected_objects=meshes,
                                       selected_editable_objects=meshes):
                bpy.ops.object.join()
        meshes[0].name = os.path.splitext(os.path.basename(path))[0]
        return meshes[0]
    except Exception as error:
        remove_new_ids(before)
        message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ValueError(message if isinstance(error, ValueError) else f"could not import '{path}': {message}") \
            from None
