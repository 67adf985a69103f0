"""Job and evaluation folders from a multi-view capture (``--images``, *Add > Sketch from Images*).

The Blender half of :mod:`pictures.capture`: pictures are decoded by Blender's own loader (any format it
reads; one picture per step, so a modal operator stays responsive), then the capture's numpy code
makes the targets, the visual hull and the normalisation. Only the pictures a job uses are decoded
(its views and the hull's, at most HULL_FRAMES), so a long capture costs time and memory like a short
one. Nothing is written until every one of them has loaded and been checked, and a failure removes
what was written, as for meshes.
"""

from __future__ import annotations

import os
import shutil
from typing import NamedTuple

import numpy as np

from ..contract import protocol
from ..pictures import capture, line_detector, pixels, visual_hull
from ..pictures.capture import CaptureError
from ..stop_request import check_stop
from . import mesh, targets
from .sketch_object import world_control_points
from .stroke_style import shown_count, stroke_width

EVAL_FRAMES = 24  # held-out frames scored by --evaluate (spread over the test set)
HULL_PICTURE_SIZE = 512  # silhouettes are carved at up to this many pixels (the job's pictures are smaller)
LINE_PICTURE_SIZE = 512  # lines inside the silhouette are found at up to this many pixels, then pooled
# The hull is carved from at most this many training pictures, spread round the object (more add
# nothing a carving at HULL_FINE voxels can show); only these and the job's own views are decoded, so
# a capture of thousands of frames holds about as much as one of a hundred.
HULL_FRAMES = 128


def _decoded(path: str, what: str) -> np.ndarray:
    """The picture at ``path`` as uint8 ``[H,W,4]``; a file Blender cannot decode is named as such
    (its loader hands back an empty image for a file that is not a picture)."""
    try:
        rgba = targets.read_image_rgba(path)
    except RuntimeError as error:  # Blender: "Error: Cannot read image ..."
        raise CaptureError(f"{path}: Blender cannot read this {what} ({error})") from None
    if rgba.size == 0:
        raise CaptureError(f"{path}: Blender cannot read this {what} (not a picture it knows, or damaged)")
    return rgba


def _picture(frame: capture.Frame, masked: bool) -> np.ndarray:
    rgba = _decoded(frame.image, "image")
    if masked:
        mask = _decoded(frame.mask, "mask")
        if mask.shape != rgba.shape:
            raise CaptureError(f"{frame.mask}: the mask is {mask.shape[1]}x{mask.shape[0]} px but its image "
                               f"is {rgba.shape[1]}x{rgba.shape[0]} px")
        rgba = rgba.copy()
        rgba[..., 3] = mask[..., :3].max(axis=-1) * (mask[..., 3].astype(np.float32) / 255.0)
    return rgba


class Loaded(NamedTuple):
    rgba: np.ndarray  # [V,h,w,4] uint8, the job's size
    viewmats: np.ndarray  # [V,4,4] world-to-camera (OpenCV), the capture's world frame
    Ks: np.ndarray  # [V,3,3] for ``rgba``
    full: tuple  # (W, H) of the pictures as stored
    hull_alpha: np.ndarray | None = None  # [V,H',W'] float32 in 0..1, at HULL_PICTURE_SIZE
    hull_Ks: np.ndarray | None = None  # [V,3,3] for ``hull_alpha``
    detail: list | None = None  # [V] uint8 [H'',W'',4]: the pictures at up to LINE_PICTURE_SIZE, for their lines


def iter_load(frames: list, size: int, expect: tuple | None = None, hull: bool = False, detail=False):
    """Decode, check and resize ``frames``; yields once per picture, returns :class:`Loaded` (with
    ``hull``, also the silhouettes at up to ``HULL_PICTURE_SIZE`` px: the hull is carved from sharper
    silhouettes than the job's, so a wire a pixel thin at the job's size is still in it; with
    ``detail``, the pictures at up to ``LINE_PICTURE_SIZE`` px, where thin lines are still lines:
    ``True`` for every frame, or a set of positions in ``frames``, the others None, as they are large)."""
    rgbas, viewmats, Ks, alphas, hull_Ks, details = [], [], [], [], [], []
    for i, frame in enumerate(frames):
        rgba = _picture(frame, bool(frame.mask))
        check_stop()  # decoding and each resize of a large picture take a good part of a second
        full = (rgba.shape[1], rgba.shape[0])
        if expect is None:
            expect = full
        elif full != expect:
            raise CaptureError(f"{frame.image}: {full[0]}x{full[1]} px, but the capture's first picture is "
                               f"{expect[0]}x{expect[1]} px; every picture must have the same size")
        if not (rgba[..., 3] < 255).any():
            raise CaptureError(f"{frame.image}: the picture has no transparent background (no alpha), so the "
                               "object's silhouette is unknown; give masks with --masks DIR (white = object)")
        if not pixels.silhouette(rgba).any():
            raise CaptureError(f"{frame.image}: the object is not in the picture (alpha is empty)")
        width, height = pixels.target_size(*full, size)
        viewmat, K = capture.camera(frame, *full)
        K[:2] *= np.array([[width / full[0]], [height / full[1]]])
        rgbas.append(pixels.resize_rgba(rgba, width, height))
        viewmats.append(viewmat)
        Ks.append(K)
        if hull:
            check_stop()
            w, h = pixels.target_size(*full, HULL_PICTURE_SIZE)
            alphas.append(pixels.resize_rgba(rgba, w, h)[..., 3].astype(np.float32) / 255.0)
            hull_Ks.append(K * np.array([[w / width], [h / height], [1.0]]))
        if detail is True or detail and i in detail:
            check_stop()
            details.append(pixels.resize_rgba(rgba, *pixels.target_size(*full, LINE_PICTURE_SIZE)))
        elif detail:
            details.append(None)
        yield i + 1, len(frames)
    return Loaded(np.stack(rgbas), np.stack(viewmats), np.stack(Ks), expect,
                  np.stack(alphas) if hull else None, np.stack(hull_Ks) if hull else None,
                  details if detail else None)


def iter_write_capture_job(job_dir: str, cap: capture.Capture, settings: dict, train_views: int = 24,
                           heldout_views: int = 8, size: int = 224):
    """``job.json``, ``views.npz`` (training pictures, held-out test pictures, their line images, the
    hull's depth and hidden contours) and ``mesh.npz`` (the visual hull) for a capture. Yields
    ``(pictures_done, pictures)``; returns ``{"center", "radius", "views", "train", "heldout",
    "hull_faces"}`` (centre and radius in the capture's world frame). On any failure the files
    written so far are removed."""
    held = [cap.test[i] for i in capture.pick_spread(cap.test, heldout_views)] if cap.test and heldout_views else []
    picked = capture.pick_spread(cap.train, train_views)
    # The hull's frames (spread sampling is greedy from frame 0, so they include the job's picks).
    carved = sorted(set(capture.pick_spread(cap.train, HULL_FRAMES)) | set(picked))
    at = [carved.index(i) for i in picked]  # the job's views among the loaded frames
    # Steps: every picture, the hull, then each job view's depth and lines (so a modal stays responsive).
    total = len(carved) + len(held) + 1 + len(picked) + len(held)
    train = yield from _counted(iter_load([cap.train[i] for i in carved], size, hull=True, detail=set(at)), 0, total)
    rgba, viewmats, Ks = train.rgba, train.viewmats, train.Ks
    details = [train.detail[i] for i in at]
    if held:
        test = yield from _counted(iter_load(held, size, train.full, detail=True), len(carved), total)
        test_rgba, test_viewmats, test_Ks = test.rgba, test.viewmats, test.Ks
        details += test.detail
    vertices, faces = visual_hull.visual_hull(viewmats, train.hull_Ks, train.hull_alpha)
    done = len(carved) + len(held) + 1
    yield done, total
    center, radius = mesh.bounding_sphere(vertices)
    views = {"rgba": rgba[at], "viewmats": viewmats[at], "Ks": Ks[at]}
    if held:
        views = {k: np.concatenate([views[k], v]) for k, v in
                 (("rgba", test_rgba), ("viewmats", test_viewmats), ("Ks", test_Ks))}
    views["viewmats"] = np.stack([visual_hull.normalised_viewmat(v, center, radius) for v in views["viewmats"]])
    views["is_train"] = np.arange(len(views["rgba"])) < len(picked)
    hull = (vertices - center) / radius
    samples = visual_hull.surface_samples(hull, faces)
    contours = visual_hull.HullContours(hull, faces)
    height, width = views["rgba"].shape[1:3]
    depths, lines, hidden = [], [], []
    for v, K, image, sharp in zip(views["viewmats"], views["Ks"], views["rgba"], details):
        # The hull's depth: where a picture cannot show a contour (a part in front of a body of the
        # same shade) the hull still has it; it also lifts line pixels onto the surface for the starts.
        depth = visual_hull.depth_map(samples, v, K, width, height) * pixels.silhouette(image)
        depths.append(depth)
        lines.append(line_detector.line_image(image, depth=depth, detail=sharp))
        hidden.append(np.where(contours.hidden(v, K, depth), 255, 0).astype(np.uint8))
        done += 1
        yield done, total
    views.update(depth=np.stack(depths), lines=np.stack(lines), lines_hidden=np.stack(hidden))
    source = {"name": cap.name, "center": [float(c) for c in center], "radius": float(radius),
              "capture": cap.train_json}
    created_dir = not os.path.isdir(job_dir)
    try:
        protocol.write_job_folder(job_dir, settings, source, views=views,
                                  mesh={"vertices": hull, "faces": faces})
    except BaseException:
        for name in protocol.JOB_INPUTS:
            if os.path.exists(os.path.join(job_dir, name)):
                os.remove(os.path.join(job_dir, name))
        if created_dir and os.path.isdir(job_dir) and not os.listdir(job_dir):
            os.rmdir(job_dir)
        raise
    return {**source, "views": len(views["rgba"]), "train": len(picked), "heldout": len(held),
            "hull_faces": int(len(faces))}


def _counted(steps, start: int, total: int):
    """``yield from steps`` with its ``(done, _)`` counted from ``start`` out of ``total``."""
    while True:
        try:
            done, _ = next(steps)
        except StopIteration as stop:
            return stop.value
        yield start + done, total


def iter_write_capture_evaluation(folder: str, sketch_obj, cap: capture.Capture, center, radius: float,
                                  size: int = 256):
    """What ``python -m backend evaluate`` needs to score ``sketch_obj`` on the capture's held-out
    pictures (never used to make it): ``result.npz``, ``job.json`` and ``eval.npz`` with their line
    images. Yields ``(pictures_done, pictures)``; on any failure ``folder`` is removed."""
    if not cap.test:
        raise CaptureError(f"{cap.train_json}: no held-out pictures to score on (no {capture.TEST_JSON} and "
                           f"fewer than {2 * capture.TEST_SPLIT_EVERY} training frames to split)")
    if not shown_count(sketch_obj):
        raise CaptureError(f"'{sketch_obj.name}' has no strokes to show: nothing to evaluate")
    frames = [cap.test[i] for i in capture.pick_spread(cap.test, EVAL_FRAMES)]
    os.makedirs(folder, exist_ok=True)
    try:
        loaded = yield from iter_load(frames, size, detail=True)
        rgba, viewmats, Ks = loaded.rgba, loaded.viewmats, loaded.Ks
        center = np.asarray(center, np.float64)
        control_points = (world_control_points(sketch_obj, shown_only=True) - center) / radius
        width = stroke_width(sketch_obj) / radius
        source = {"name": cap.name, "center": [float(c) for c in center], "radius": float(radius),
                  "sketch": sketch_obj.name, "capture": cap.train_json}
        protocol.write_job_folder(
            folder, {}, source,
            result={"control_points": control_points.astype(np.float32),
                    "widths": np.full(len(control_points), width, np.float32)},
            eval={"viewmats": np.stack([visual_hull.normalised_viewmat(v, center, radius) for v in viewmats])
                  .astype(np.float32), "Ks": Ks.astype(np.float32), "rgba": rgba,
                  "lines": np.stack([line_detector.line_image(image, detail=sharp)
                                     for image, sharp in zip(rgba, loaded.detail)])})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return source
