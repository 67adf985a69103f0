"""CLIPasso's two CLIP losses: geometric (mid-level activations) and semantic (embeddings).

CLIP is by far the most expensive part of a step, so both losses read ONE shared pass
(:class:`ClipPairFeatures`, stored on the LossContext): the sketch views and their augmented copies
go through CLIP in a single batched call with gradients, the augmented targets in a single call
without, and the un-augmented targets are encoded once when the losses are built. CLIP's
parameters are frozen, so backward only computes gradients with respect to the sketch pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .base import LossContext, LossInputs
from .clip_model import ClipBundle

DISTORTION = 0.5  # RandomPerspective(distortion_scale=0.5, p=1), as CLIPasso
CROP_SCALE = (0.8, 1.0)  # RandomResizedCrop area range, square crops (ratio 1)
_CHUNK = 16  # views per no-grad CLIP call when encoding all targets up front


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _homographies(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``[N,3,3]`` projective maps taking the 4 points ``src[N,4,2]`` to ``dst[N,4,2]`` (batched DLT)."""
    x, y = src.unbind(-1)
    u, v = dst.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # [N,8,8]
    b = torch.cat([u, v], dim=1)  # [N,8]
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).view(-1, 3, 3)


def augmentation_grids(n: int, size: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Sampling grids ``[n,size,size,2]`` for ``grid_sample``: a random perspective then a random crop.

    Both warps are composed into one grid (one interpolation, fully batched). Coordinates are
    normalised to [-1, 1]. The perspective moves each image corner inwards by up to
    ``DISTORTION`` of the half-side per axis (torchvision's RandomPerspective); the crop is a square
    covering a uniform ``CROP_SCALE`` fraction of the area at a uniform position, resized to the
    full output. One row of random numbers per grid, drawn from ``generator`` for determinism.
    """
    gen_device = generator.device if generator is not None else device
    r = torch.rand(n, 11, generator=generator, device=gen_device).to(device)
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)
    moved = corners - corners * DISTORTION * r[:, :8].view(n, 4, 2)  # each corner inwards
    to_source = _homographies(moved, corners.expand(n, 4, 2))  # warped image coords -> source image coords
    side = torch.sqrt(CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * r[:, 8])  # crop half-size in [-1,1]
    centre = (1 - side[:, None]) * (2 * r[:, 9:11] - 1)
    t = (torch.arange(size, device=device, dtype=torch.float32) * 2 + 1) / size - 1  # pixel centres
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, -1, 3)  # [1,S*S,3]
    crop = torch.diag_embed(torch.stack([side, side, torch.ones_like(side)], dim=-1))
    crop[:, :2, 2] = centre
    pts = base @ (to_source @ crop).transpose(1, 2)  # [n,S*S,3]
    return (pts[..., :2] / pts[..., 2:]).view(n, size, size, 2)


def warp(images: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Resample ``[n,C,S,S]`` images in [0,1] along ``grids``; what falls outside is white paper."""
    return F.grid_sample(images - 1, grids, mode="bilinear", padding_mode="zeros", align_corners=False) + 1


@dataclass
class _StepFeatures:
    """CLIP outputs of one step: rows are pair-major, ``[pairs * B]`` (pair 0 = un-augmented)."""

    images: torch.Tensor
    view_ids: torch.Tensor
    version: int
    augment: bool
    pairs: int
    sketch_emb: torch.Tensor | None
    target_emb: torch.Tensor
    sketch_acts: list[torch.Tensor]
    target_acts: list[torch.Tensor]
    taken: set[str] = field(default_factory=set)


class ClipPairFeatures:
    """Shared by both CLIP losses of a run: caches target features and this step's CLIP pass."""

    def __init__(self, ctx: LossContext):
        self.bundle: ClipBundle = ctx.clip()
        self.augmentations = int(ctx.config.augmentations)
        self.layers = tuple(self.bundle.geometric_layers)
        self.users: set[str] = set()
        self._step: _StepFeatures | None = None
        b = self.bundle
        with torch.no_grad():
            self.targets = _resize(ctx.targets.rgb.to(b.device, torch.float32), b.input_size)  # [V,3,S,S]
            embs, acts = [], []
            for chunk in self.targets.split(_CHUNK):
                emb, act = b.features(b.normalize(chunk), self.layers)
                embs.append(emb.float())
                acts.append(act)
            self.target_emb = torch.cat(embs)
            self.target_acts = [torch.cat(layer) for layer in zip(*acts, strict=True)]

    @classmethod
    def of(cls, ctx: LossContext, user: str) -> ClipPairFeatures:
        """The context's shared instance (built on first use), with ``user`` registered as a reader."""
        shared = getattr(ctx, "_clip_pair_features", None)
        if shared is None:
            shared = cls(ctx)
            ctx._clip_pair_features = shared
        shared.users.add(user)
        return shared

    def forget_step(self) -> None:
        """Drop this step's cached CLIP pass, so the next reader computes it again (e.g. in another precision)."""
        self._step = None

    def step(self, inputs: LossInputs, user: str) -> _StepFeatures:
        """This step's features; computed by the first reader, reused by the others, then dropped."""
        s = self._step
        augment = bool(inputs.augment) and self.augmentations > 0
        fresh = (
            s is None
            or s.images is not inputs.images
            or s.view_ids is not inputs.view_ids
            or s.version != inputs.images._version
            or s.augment != augment
            or user in s.taken
        )
        if fresh:
            s = self._compute(inputs, augment)
        s.taken.add(user)
        self._step = None if s.taken >= self.users else s
        return s

    def _compute(self, inputs: LossInputs, augment: bool) -> _StepFeatures:
        b = self.bundle
        size, views = b.input_size, inputs.view_ids.to(self.targets.device)
        sketch = _resize(inputs.images[:, None].float(), size)  # [B,1,S,S]; grey, expanded to RGB below
        target_emb, target_acts = self.target_emb[views], [a[views] for a in self.target_acts]
        pairs = 1
        if augment:
            pairs += self.augmentations
            grids = augmentation_grids(self.augmentations * len(views), size, inputs.generator, b.device)
            sketch = torch.cat([sketch, warp(sketch.repeat(self.augmentations, 1, 1, 1), grids)])
            with torch.no_grad():
                aug_targets = warp(self.targets[views].repeat(self.augmentations, 1, 1, 1), grids)
                emb, acts = b.features(b.normalize(aug_targets), self.layers, embed="clip_semantic" in self.users)
            if emb is not None:
                target_emb = torch.cat([target_emb, emb.float()])
            target_acts = [torch.cat([t, a]) for t, a in zip(target_acts, acts, strict=True)]
        emb, acts = b.features(b.normalize(sketch.expand(-1, 3, -1, -1)), self.layers, "clip_semantic" in self.users)
        return _StepFeatures(
            inputs.images, inputs.view_ids, inputs.images._version, augment, pairs,
            None if emb is None else emb.float(), target_emb, acts, target_acts,
        )  # fmt: skip


class _ClipLoss:
    """A named loss reading the shared pass: ``(inputs) -> [B]``, averaged over the augmented pairs."""

    def __init__(self, name: str, shared: ClipPairFeatures, per_row):
        self.name, self.shared, self.per_row = name, shared, per_row

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        s = self.shared.step(inputs, self.name)
        return self.per_row(s).view(s.pairs, -1).mean(dim=0)


def clip_geometric(ctx: LossContext) -> _ClipLoss:
    """Mean squared difference of CLIP activations (RN: layer2 + layer3), sketch vs target."""
    shared = ClipPairFeatures.of(ctx, "clip_geometric")

    def per_row(s: _StepFeatures) -> torch.Tensor:
        return sum((a - t).square().flatten(1).mean(dim=1) for a, t in zip(s.sketch_acts, s.target_acts, strict=True))

    return _ClipLoss("clip_geometric", shared, per_row)


def clip_semantic(ctx: LossContext) -> _ClipLoss:
    """1 - cos between CLIP image embeddings of sketch and target (plus 1 - cos to the prompt's text)."""
    shared = ClipPairFeatures.of(ctx, "clip_semantic")
    prompt = ctx.config.prompt.strip()
    text = shared.bundle.encode_text(prompt) if prompt else None

    def per_row(s: _StepFeatures) -> torch.Tensor:
        loss = 1 - F.cosine_similarity(s.sketch_emb, s.target_emb, dim=-1)
        if text is not None:
            loss = loss + 1 - F.cosine_similarity(s.sketch_emb, text[None], dim=-1)
        return loss

    return _ClipLoss("clip_semantic", shared, per_row)
