"""Write a job folder (docs/JOB_FORMAT.md) for one source object: the add-on's half of the contract.

Everything goes in normalised space (bounding sphere at the origin, radius 1); ``job.json`` keeps
``center`` and ``radius`` so the result can be mapped back (``world = center + radius * p``).
"""

from __future__ import annotations

import os

from ..backend import cameras, protocol
from ..backend.config import CLIP_LOSSES, DEFAULT_LOSS_WEIGHTS, OptimizeConfig
from . import mesh, targets


def blender_renders(settings: dict) -> tuple[bool, bool]:
    """``(surface, lines)``: which target renders Blender must make for these settings.

    With ``targets`` "mesh" the backend draws lines, depth and a grey studio-lit picture from
    mesh.npz. Blender still renders the object's own picture (its viewport colours) for a CLIP
    objective, but only with Workbench, milliseconds a view: where there is no GPU context the
    fallback would be Cycles, about as slow as the Freestyle renders this setting avoids.
    """
    if settings.get("targets", OptimizeConfig.targets) != "mesh":
        return True, True
    losses = settings.get("losses", DEFAULT_LOSS_WEIGHTS)
    clip = isinstance(losses, dict) and any(isinstance(losses.get(n), (int, float)) and losses[n] > 0
                                            for n in CLIP_LOSSES)
    return clip and targets.gpu_context_problem() is None, False


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
        surface, lines = blender_renders(settings)
        views = {"seconds_per_view": 0.0}
        if surface:
            views = yield from targets.iter_render_targets(obj, viewmats, Ks, size, center, radius, lines)

        source = {"name": obj.name, "center": [float(c) for c in center], "radius": float(radius)}
        arrays = {"viewmats": viewmats, "Ks": Ks, "is_train": is_train, "size": [size, size]}
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
