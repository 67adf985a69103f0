"""CLIPasso's two CLIP losses: geometric (mid-level activations) and semantic (embeddings).

CLIP is by far the most expensive part of a step, so both losses read ONE shared pass
(:class:`ClipPairFeatures`, stored on the LossContext): the sketch views and their augmented copies
go through CLIP together. The targets are encoded up front: the un-augmented views when the losses
are built, the augmented ones in a :class:`TargetBank` whose warps the step applies to its sketch
(``augmentation_bank: 0`` encodes fresh augmented targets every step instead, as CLIPasso). CLIP's
parameters are frozen, so backward only computes gradients with respect to the sketch pixels; on a
CPU the pass runs a view at a time with its backward (:class:`_PassByPass`), holding one view's
activations instead of all of them.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
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
    h = torch.linalg.solve_ex(a, b)[0]  # no error check: corners move at most half-way, never singular
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).view(-1, 3, 3)


AUGMENTATION_NUMBERS = 11  # random numbers per augmentation: 8 corner moves, crop side, crop centre (2)


def augmentation_rows(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``[n, AUGMENTATION_NUMBERS]`` uniform numbers, one row per augmentation (drawn on the generator's device)."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, AUGMENTATION_NUMBERS, generator=generator, device=gen_device).to(device)


@functools.cache
def _corners(device: torch.device) -> torch.Tensor:
    """The image corners in [-1, 1], made once per device (a fresh host tensor each step is a copy to wait for)."""
    return torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)


def grids_from_rows(r: torch.Tensor, size: int) -> torch.Tensor:
    """Sampling grids ``[n,size,size,2]`` for ``grid_sample``: a random perspective then a random crop.

    Both warps are composed into one grid (one interpolation, fully batched). Coordinates are
    normalised to [-1, 1]. The perspective moves each image corner inwards by up to
    ``DISTORTION`` of the half-side per axis (torchvision's RandomPerspective); the crop is a square
    covering a uniform ``CROP_SCALE`` fraction of the area at a uniform position, resized to the
    full output. ``r`` holds one row of :func:`augmentation_rows` per grid.
    """
    n, device = r.shape[0], r.device
    corners = _corners(device)
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


def augmentation_grids(n: int, size: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` random augmentation grids (:func:`grids_from_rows` of fresh :func:`augmentation_rows`)."""
    return grids_from_rows(augmentation_rows(n, generator, device), size)


def warp(images: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Resample ``[n,C,S,S]`` images in [0,1] along ``grids``; what falls outside is white paper."""
    return F.grid_sample(images - 1, grids, mode="bilinear", padding_mode="zeros", align_corners=False) + 1


@dataclass
class _Augmented:
    """This step's augmentations: ``pairs`` rows per view, pair-major ``[pairs * B]`` (pair 0 = none)."""

    grids: torch.Tensor | None  # [(pairs-1) * B, S, S, 2] warps of the sketch (None: no augmentation)
    target_emb: torch.Tensor | None  # [pairs * B, D]
    target_acts: list[torch.Tensor]  # per layer [pairs * B, C, h, w]
    pairs: int

    def views(self, lo: int, hi: int, batch: int) -> _Augmented:
        """The rows of views ``lo:hi`` of a batch of ``batch`` views, still pair-major."""
        rows = torch.cat([torch.arange(lo, hi) + p * batch for p in range(self.pairs)]).to(self.target_acts[0].device)
        grids = None if self.grids is None else self.grids[rows[hi - lo:] - batch]
        return _Augmented(grids, None if self.target_emb is None else self.target_emb[rows],
                          [a[rows] for a in self.target_acts], self.pairs)


def _half_holds(values: torch.Tensor) -> bool:
    """float16 keeps these activations: none above its range (65504), hardly any non-zero below its
    normal range (2^-14, where it keeps fewer digits; untrained towers have such tiny activations)."""
    magnitude = values.abs()
    nonzero = magnitude > 0
    tiny = (nonzero & (magnitude < 2.0**-14)).sum() / nonzero.sum().clamp_min(1)
    return bool(magnitude.max() < 6e4) and bool(tiny < 0.01)


class TargetBank:
    """``per_view`` augmentations of every training view's target, encoded once: a step picks
    ``augmentations`` of them per view (distinct, at random) and warps its sketch with the same warps,
    so it runs CLIP on the sketch only. ``refresh`` entries, oldest first, are re-drawn each step.

    Activations are stored in float16 (half the memory; 3 significant digits, far below the sketch-
    target differences the geometric loss measures), in float32 where float16 would not hold them."""

    def __init__(self, shared: ClipPairFeatures, train_ids: list[int], per_view: int, refresh: int,
                 generator: torch.Generator, embed: bool):
        b = shared.bundle
        self.shared, self.per_view, self.refresh, self.embed = shared, per_view, refresh, embed
        self.entry_view = torch.tensor(train_ids, device=b.device).repeat_interleave(per_view)  # [N]
        first = torch.full((shared.targets.shape[0],), -1, dtype=torch.long)
        first[train_ids] = torch.arange(len(train_ids)) * per_view
        self.first = first.to(b.device)  # a view's first entry
        self.rows = augmentation_rows(len(self.entry_view), generator, b.device)
        self.emb: torch.Tensor | None = None
        self.acts: list[torch.Tensor] = []
        self.oldest = 0
        self._encode(torch.arange(len(self.entry_view), device=b.device))

    def __len__(self) -> int:
        return int(self.entry_view.shape[0])

    @torch.no_grad()
    def _encode(self, entries: torch.Tensor) -> None:
        s, b = self.shared, self.shared.bundle
        for chunk in entries.split(_CHUNK):
            warped = warp(s.targets[self.entry_view[chunk]], grids_from_rows(self.rows[chunk], b.input_size))
            emb, acts = b.features(b.normalize(warped), s.layers, embed=self.embed)
            if not self.acts:  # first chunk: allocate
                self.emb = None if emb is None else emb.new_zeros((len(self),) + emb.shape[1:], dtype=torch.float32)
                fits = all(_half_holds(a) for a in acts)  # checked once, on the first chunk
                self.acts = [a.new_zeros((len(self),) + a.shape[1:], dtype=torch.float16 if fits else torch.float32)
                             for a in acts]
            if emb is not None:
                self.emb[chunk] = emb.float()
            for store, a in zip(self.acts, acts, strict=True):
                store[chunk] = a.to(store.dtype)

    def step(self, views: torch.Tensor, count: int, generator: torch.Generator | None) -> _Augmented:
        """``count`` augmentations per view of ``views`` (rows pair-major), after this step's refresh."""
        if self.refresh:
            count_now = min(self.refresh, len(self))
            entries = (self.oldest + torch.arange(count_now, device=self.entry_view.device)) % len(self)
            self.oldest = (self.oldest + count_now) % len(self)
            self.rows[entries] = augmentation_rows(len(entries), generator, self.rows.device)
            self._encode(entries)
        gen_device = generator.device if generator is not None else views.device
        pick = torch.rand(len(views), self.per_view, generator=generator, device=gen_device).argsort(dim=1)[:, :count]
        entries = (self.first[views][:, None] + pick.to(views.device)).T.reshape(-1)  # pair-major
        return _Augmented(grids_from_rows(self.rows[entries], self.shared.bundle.input_size),
                          None if self.emb is None else self.emb[entries],
                          [a[entries].float() for a in self.acts], count + 1)


class _PassByPass(torch.autograd.Function):
    """The CLIP losses' per-view values, differentiable w.r.t. the sketch pixels, where CLIP ran (and
    its backward) a few views at a time during the forward, so only one pass's activations were held.

    The backward that ran used the configured loss weights; when the gradients arriving are the
    weighted sum (per-view factors allowed: ``hard_views``), the stored gradient is exact. Otherwise
    (a loss used on its own) the passes are run again with the gradients that arrived."""

    @staticmethod
    def forward(ctx, images, step):
        ctx.step = step
        return tuple(step.values[user].clone() for user in step.users)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *upstream):
        return ctx.step.gradient(torch.stack(upstream)), None


class _Passes:
    """One step's CLIP passes run view chunk by view chunk, with their backward (see _PassByPass)."""

    def __init__(self, shared: ClipPairFeatures, images: torch.Tensor, views: torch.Tensor,
                 aug: _Augmented | None, per_pass: int):
        self.shared, self.views, self.aug, self.per_pass = shared, views, aug, per_pass
        self.images = images.detach()
        self.users = list(shared.users)
        self.weights = torch.tensor([shared.weights[u] for u in self.users], device=images.device)
        self.grad, self.values = self._run(self.weights[:, None].expand(-1, len(views)))

    def _run(self, coefficients: torch.Tensor):
        """Forward + backward per chunk: values per user ``[B]`` and d(sum coefficients * values)/d images."""
        grad = torch.zeros_like(self.images)
        parts: dict[str, list[torch.Tensor]] = {u: [] for u in self.users}
        batch = len(self.views)
        for lo in range(0, batch, self.per_pass):
            hi = min(lo + self.per_pass, batch)
            with torch.enable_grad():
                x = self.images[lo:hi].clone().requires_grad_(True)
                aug = None if self.aug is None else self.aug.views(lo, hi, batch)
                values = self.shared.values(x, self.views[lo:hi], aug)
                weighted = sum((coefficients[i, lo:hi] * values[u]).sum() for i, u in enumerate(self.users))
                grad[lo:hi] = torch.autograd.grad(weighted, x)[0]
            for u in self.users:
                parts[u].append(values[u].detach())
        return grad, {u: torch.cat(v) for u, v in parts.items()}

    def gradient(self, upstream: torch.Tensor) -> torch.Tensor:
        """d loss / d images for ``upstream[u, v]`` = d loss / d values[u][v]."""
        factor = upstream[0] / self.weights[0]  # per view
        if torch.allclose(upstream, factor[None] * self.weights[:, None], rtol=1e-5, atol=1e-30):
            return self.grad * factor[:, None, None]
        return self._run(upstream)[0]


def views_per_pass(setting: int, device: torch.device) -> int:
    """``clip_views_per_pass`` resolved: 0 is one view per pass on a CPU, every view at once elsewhere."""
    return int(setting) or (1 if torch.device(device).type == "cpu" else 256)


# A compile (~100 s on 2 cores) pays back after ~70 RN101 steps; below this many steps a run starts at once.
COMPILE_FROM = 1000


def compile_choice(cfg, device: torch.device) -> tuple[bool, str]:
    """Whether to torch.compile CLIP's image tower for this run, and why (setting ``clip_compile``)."""
    if cfg.clip_compile == "off":
        return False, "not compiled (setting)"
    if cfg.clip_compile == "on":
        return True, "image tower compiled (setting)"
    if torch.device(device).type != "cpu":
        return False, "not compiled (not measured on a GPU yet)"
    if cfg.iterations * cfg.best_of < COMPILE_FROM:
        return False, f"not compiled (run shorter than {COMPILE_FROM} steps)"
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl")):
        return False, "not compiled (no C++ compiler on PATH)"
    return True, "image tower compiled (a long CPU run)"


def describe(cfg, device: torch.device) -> str:
    """One line for the log: how this run's CLIP losses get their targets and run their passes."""
    if not cfg.augmentations:
        targets = "no augmentations"
    elif cfg.augmentation_bank:
        targets = (f"{cfg.augmentations} augmentations per view from a bank of {cfg.augmentation_bank} encoded "
                   f"once ({cfg.bank_refresh} re-drawn per step)")
    else:
        targets = f"{cfg.augmentations} fresh augmentations per view, targets encoded every step"
    per = views_per_pass(cfg.clip_views_per_pass, device)
    passes = "all views in one pass" if per >= cfg.views_per_step else f"{per} view(s) per pass with its backward"
    return f"CLIP: {targets}; {passes}; {compile_choice(cfg, device)[1]}"


class ClipPairFeatures:
    """Shared by both CLIP losses of a run: target features, the augmentation bank and this step's
    CLIP pass (computed by the first loss that asks, read by the other)."""

    def __init__(self, ctx: LossContext):
        self.bundle: ClipBundle = ctx.clip()
        cfg = ctx.config
        self.augmentations = int(cfg.augmentations)
        self.layers = tuple(self.bundle.geometric_layers)
        self.users: dict[str, Callable] = {}  # loss name -> per-row loss of a features batch
        self.weights: dict[str, float] = {}
        self._step: _Step | None = None
        self._bank_size, self._bank_refresh = int(cfg.augmentation_bank), int(cfg.bank_refresh)
        self._bank_seed = int(cfg.seed)
        self.bank: TargetBank | None = None
        self._train_ids = torch.nonzero(ctx.targets.is_train.cpu()).flatten().tolist()
        self.per_pass = views_per_pass(cfg.clip_views_per_pass, self.bundle.device)
        if compile_choice(cfg, self.bundle.device)[0] and self.bundle.compiled is None:
            self.bundle.compile_image_tower()
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
    def of(cls, ctx: LossContext, user: str, per_row: Callable) -> ClipPairFeatures:
        """The context's shared instance (built on first use), with ``user`` registered as a reader."""
        shared = getattr(ctx, "_clip_pair_features", None)
        if shared is None:
            shared = cls(ctx)
            ctx._clip_pair_features = shared
        shared.users[user] = per_row
        shared.weights[user] = float(ctx.config.losses.get(user, 1.0)) or 1.0
        return shared

    def forget_step(self) -> None:
        """Drop this step's cached CLIP pass, so the next reader computes it again (e.g. in another precision)."""
        self._step = None

    def value(self, inputs: LossInputs, user: str) -> torch.Tensor:
        """``user``'s per-view value this step; computed for every user by the first, then dropped."""
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
        self._step = None if s.taken >= set(self.users) else s
        return s.values[user]

    @property
    def embeds(self) -> bool:
        """Whether a reader needs image embeddings (the semantic loss); else CLIP stops after layer3."""
        return "clip_semantic" in self.users

    def _plain(self, views: torch.Tensor) -> _Augmented:
        """The un-augmented targets' rows (pair 0), encoded when the losses were built."""
        return _Augmented(None, self.target_emb[views], [a[views] for a in self.target_acts], 1)

    def _augmentations(self, views: torch.Tensor, generator: torch.Generator | None) -> _Augmented:
        """The step's augmented pairs: from the bank, or drawn and encoded now (no bank)."""
        b = self.bundle
        if self._bank_size:
            if self.bank is None:  # built on first use, when every reader is known (embeddings or not)
                self.bank = TargetBank(self, self._train_ids, self._bank_size, self._bank_refresh,
                                       torch.Generator().manual_seed(self._bank_seed), self.embeds)
            aug = self.bank.step(views, self.augmentations, generator)
        else:
            rows = augmentation_rows(self.augmentations * len(views), generator, b.device)
            grids = grids_from_rows(rows, b.input_size)
            with torch.no_grad():
                warped = warp(self.targets[views].repeat(self.augmentations, 1, 1, 1), grids)
                emb, acts = b.features(b.normalize(warped), self.layers, embed=self.embeds)
            aug = _Augmented(grids, None if emb is None else emb.float(), acts, self.augmentations + 1)
        plain = self._plain(views)
        return _Augmented(aug.grids, None if aug.target_emb is None else torch.cat([plain.target_emb, aug.target_emb]),
                          [torch.cat([t, a]) for t, a in zip(plain.target_acts, aug.target_acts, strict=True)],
                          aug.pairs)

    def values(self, images: torch.Tensor, views: torch.Tensor, aug: _Augmented | None) -> dict[str, torch.Tensor]:
        """Every user's per-view values ``[B]`` for sketch ``images [B,H,W]`` (one CLIP call)."""
        b = self.bundle
        sketch = _resize(images[:, None].float(), b.input_size)  # [B,1,S,S]; grey, expanded to RGB below
        if aug is None:
            aug = self._plain(views)
        elif aug.grids is not None:
            sketch = torch.cat([sketch, warp(sketch.repeat(aug.pairs - 1, 1, 1, 1), aug.grids)])
        emb, acts = b.features(b.normalize(sketch.expand(-1, 3, -1, -1)), self.layers, self.embeds)
        features = _Features(None if emb is None else emb.float(), aug.target_emb, acts, aug.target_acts)
        return {u: per_row(features).view(aug.pairs, -1).mean(dim=0) for u, per_row in self.users.items()}

    def _compute(self, inputs: LossInputs, augment: bool) -> _Step:
        images, views = inputs.images, inputs.view_ids.to(self.bundle.device)
        aug = self._augmentations(views, inputs.generator) if augment else None
        if images.requires_grad and torch.is_grad_enabled() and self.per_pass < len(views):
            passes = _Passes(self, images, views, aug, self.per_pass)
            values = dict(zip(passes.users, _PassByPass.apply(images, passes), strict=True))
        else:
            values = self.values(images, views, aug)
        return _Step(inputs.images, inputs.view_ids, inputs.images._version, augment, values)


@dataclass
class _Features:
    """One CLIP call's rows, pair-major ``[pairs * B]``, beside the targets' matching rows."""

    sketch_emb: torch.Tensor | None
    target_emb: torch.Tensor | None
    sketch_acts: list[torch.Tensor]
    target_acts: list[torch.Tensor]


@dataclass
class _Step:
    """This step's values per user, kept until every user has read its own."""

    images: torch.Tensor
    view_ids: torch.Tensor
    version: int
    augment: bool
    values: dict[str, torch.Tensor]
    taken: set[str] = field(default_factory=set)


class _ClipLoss:
    """A named loss reading the shared pass: ``(inputs) -> [B]``, averaged over the augmented pairs."""

    def __init__(self, name: str, shared: ClipPairFeatures):
        self.name, self.shared = name, shared

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return self.shared.value(inputs, self.name)


def clip_geometric(ctx: LossContext) -> _ClipLoss:
    """Mean squared difference of CLIP activations (RN: layer2 + layer3), sketch vs target."""

    def per_row(s: _Features) -> torch.Tensor:
        return sum((a - t).square().flatten(1).mean(dim=1) for a, t in zip(s.sketch_acts, s.target_acts, strict=True))

    return _ClipLoss("clip_geometric", ClipPairFeatures.of(ctx, "clip_geometric", per_row))


def clip_semantic(ctx: LossContext) -> _ClipLoss:
    """1 - cos between CLIP image embeddings of sketch and target (plus 1 - cos to the prompt's text)."""
    prompt = ctx.config.prompt.strip()
    text = ctx.clip().encode_text(prompt) if prompt else None

    def per_row(s: _Features) -> torch.Tensor:
        loss = 1 - F.cosine_similarity(s.sketch_emb, s.target_emb, dim=-1)
        if text is not None:
            loss = loss + 1 - F.cosine_similarity(s.sketch_emb, text[None], dim=-1)
        return loss

    return _ClipLoss("clip_semantic", ClipPairFeatures.of(ctx, "clip_semantic", per_row))
