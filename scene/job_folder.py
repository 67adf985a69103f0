"""Write a job folder (docs/JOB_FORMAT.md) for one source object: the add-on's half of the contract.

Everything goes in normalised space (bounding sphere at the origin, radius 1); ``job.json`` keeps
``center`` and ``radius`` so the result can be mapped back (``world = center + radius * p``).
"""

from __future__ import annotations

import os

from ..contract import cameras, protocol
from ..contract.settings import OptimizeConfig
from . import mesh, targets


def blender_renders(settings: dict) -> bool:
    """Whether Blender renders the target views (Workbench surface + Freestyle lines) for these settings.

    With ``targets`` "mesh" it renders nothing: the backend draws lines, depth and a grey studio-lit
    picture (what a CLIP loss looks at) from mesh.npz in seconds, where Blender's renders take a
    third of a second a view or more, with or without a GPU context.
    """
    return settings.get("targets", OptimizeConfig.targets) != "mesh"


def write_job(job_dir: str, obj, depsgraph, settings: dict, train_views: int = 24, heldout_views: int = 8,
              size: int = 224) -> dict:
    """Blocking form of :func:`iter_write_job`."""
    return targets.drain(iter_write_job(job_dir, obj, depsgraph, settings, train_views, heldout_views, size))


def iter_write_job(job_dir: str, obj, depsgraph, settings: dict, train_views: int = 24, heldout_views: int = 8,
                   size: int = 224):
    """Render the targets of ``obj`` and write ``job.json``, ``views.npz`` and ``mesh.npz``.

    Yields ``(views_done, views)`` while the targets render (one view per step, so a modal operator
    stays responsive; nothing renders where the backend draws every view, see
    :func:`blender_renders`) and returns ``{"center": [x,y,z], "radius": r, "views": V, "seconds_per_view": s}``.
    If anything (closing the generator early included)
    fails, the files written so far are removed (and ``job_dir`` too if this call created it), so
    a half-written job never reaches the worker.
    """
    problem = mesh.source_problem(obj)
    if problem:
        raise ValueError(problem)
    created_dir = not os.path.isdir(job_dir)
    os.makedirs(job_dir, exist_ok=True)
    try:
        vertices, faces = mesh.evaluated_mesh_world(obj, depsgraph)
        center, radius = mesh.bounding_sphere(vertices)
        viewmats, Ks, is_train = cameras.train_and_heldout_cameras(train_views, heldout_views, size)
        views = {"seconds_per_view": 0.0}
        if blender_renders(settings):
            views = yield from targets.iter_render_targets(obj, viewmats, Ks, size, center, radius)

        source = {"name": obj.name, "center": [float(c) for c in center], "radius": float(radius)}
        arrays = {"viewmats": viewmats, "Ks": Ks, "is_train": is_train}
        arrays.update({k: views[k] for k in protocol.DRAWN_KEYS if k in views})
        protocol.write_job_folder(job_dir, settings, source, views=arrays,
                                  mesh={"vertices": (vertices - center) / radius, "faces": faces})
    except BaseException:
        for name in protocol.JOB_INPUTS:
            path = os.path.join(job_dir, name)
            if os.path.exists(path):
                os.remove(path)
        if created_dir and not os.listdir(job_dir):
            os.rmdir(job_dir)
        raise
    return {"center": source["center"], "radius": source["radius"], "views": int(len(viewmats)),
            "seconds_per_view": float(views["seconds_per_view"])}
