"""Load a frozen open_clip model for the CLIP losses, offline unless the job allows downloads.

The worker must never hang on a network timeout or print a traceback because weights are missing:
every failure here is a :class:`ClipWeightsUnavailable` (weights missing or unreadable, exit code 3,
the geometry-only fallback may apply) or a :class:`BadJob` (unknown model or tag: a typo) whose
one-line message says what to provide. Cached weights are found on disk by this module itself, so
open_clip is only ever handed a local file unless ``allow_download`` is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from contract.settings import ClipConfig

from ..errors import BadJob, ClipWeightsUnavailable

# Names of the activations of a ModifiedResNet (open_clip's own forward_intermediates order).
RESNET_LAYERS = ("stem", "layer1", "layer2", "layer3", "layer4")


@dataclass
class ClipBundle:
    """A frozen CLIP model plus what the losses need to feed it and read it."""

    model: torch.nn.Module  # eval mode, every parameter requires_grad=False
    mean: torch.Tensor  # [1,3,1,1] normalisation on the model's device
    std: torch.Tensor  # [1,3,1,1]
    input_size: int  # square input side in pixels
    name: str  # open_clip model name
    layer_names: tuple[str, ...]  # what ``features`` can return, by index
    geometric_layers: tuple[int, ...]  # indices the geometric loss compares (RN: layer2, layer3)
    tokenizer: Callable | None = None
    autocast_dtype: torch.dtype | None = None  # run the image tower under autocast (``amp=True``)
    compiled: Callable | None = None  # torch.compile'd image tower, used where gradients flow
    text_released: bool = False  # release_text_tower() ran: prompts can no longer be encoded

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def is_resnet(self) -> bool:
        return self.layer_names == RESNET_LAYERS

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[N,3,H,W]`` in [0,1] -> the model's input: resized (antialiased) and normalised."""
        size = self.input_size
        if rgb.shape[-2:] != (size, size):
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (rgb - self.mean) / self.std

    def features(
        self, x: torch.Tensor, layers: Sequence[int], embed: bool = True
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """One pass over normalised images: (image embedding [N,D] or None, activations at ``layers``).

        ResNets run their blocks by hand (stem, layer1..4, attention pool) so one pass yields both
        the mid-level maps and the embedding, stopping early when no embedding is needed. ViTs use
        open_clip's ``forward_intermediates`` (block outputs as [N,C,h,w] token maps).
        """
        amp = self.autocast_dtype is not None
        tower = self.compiled if self.compiled is not None and x.requires_grad and torch.is_grad_enabled() \
            else self._features
        with torch.autocast(x.device.type, dtype=self.autocast_dtype, enabled=amp):
            emb, acts = tower(x, tuple(layers), embed)
        if amp:
            emb, acts = None if emb is None else emb.float(), [a.float() for a in acts]
        return emb, acts

    def _features(self, x, layers, embed):
        visual = self.model.visual
        wanted = sorted({int(i) for i in layers})
        if not self.is_resnet:
            out = visual.forward_intermediates(x, indices=wanted, output_fmt="NCHW", intermediates_only=not embed)
            acts = dict(zip(wanted, out["image_intermediates"], strict=True))
            return out.get("image_features"), [acts[int(i)] for i in layers]
        blocks = [visual.stem, visual.layer1, visual.layer2, visual.layer3, visual.layer4]
        last = len(blocks) - 1 if embed else max(wanted, default=-1)
        acts = {}
        for i, block in enumerate(blocks[: last + 1]):
            x = block(x)
            if i in wanted:
                acts[i] = x
        return (visual.attnpool(x) if embed else None), [acts[int(i)] for i in layers]

    def compile_image_tower(self) -> None:
        """Compile the image tower for the passes that carry gradients (one graph per batch shape; passes
        without gradients, such as encoding targets, stay eager). A compiler problem falls back to eager."""
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True
        # On a GPU, CUDA graphs as well (one launch per pass instead of hundreds): unmeasured so far.
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        self.compiled = torch.compile(self._features, dynamic=False, mode=mode)

    def release_text_tower(self) -> None:
        """Drop everything but the image tower (RN101: 242 of 456 MiB of weights) once prompts are encoded."""
        for name, _ in list(self.model.named_children()):
            if name != "visual":
                delattr(self.model, name)
        for name, _ in list(self.model.named_parameters(recurse=False)):
            delattr(self.model, name)
        self.tokenizer = None
        self.text_released = True

    @torch.no_grad()
    def encode_text(self, prompt: str) -> torch.Tensor:
        """Text embedding ``[D]`` of one prompt (no gradient: it is a fixed target)."""
        if self.text_released:
            raise RuntimeError("this CLIP model's text tower was released after the losses were built")
        if self.tokenizer is None:
            raise ClipWeightsUnavailable(f"no tokenizer available offline for CLIP model {self.name}")
        tokens = self.tokenizer([prompt]).to(self.device)
        return self.model.encode_text(tokens)[0].float()


def _fold_batchnorm(visual: torch.nn.Module) -> int:
    """Fold every eval-mode BatchNorm of a ModifiedResNet into the convolution before it.

    Exact in eval mode and ~15% less CPU time per forward+backward (one pass less over every
    activation map). Returns how many were folded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for module in list(visual.modules()):
        pairs = [(f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
        if isinstance(module, torch.nn.Sequential) and len(module) == 3:  # downsample: avgpool, conv, bn
            names = list(module._modules)
            pairs.append((names[1], names[2]))
        for conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, torch.nn.Identity())
                folded += 1
    return folded


def low_precision_dtype(device: torch.device) -> torch.dtype:
    """bf16 (fp16 on CUDA cards without bf16). Only worth it on CPUs with AMX / AVX512-BF16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


_REGISTERED_CONFIGS: dict[str, str] = {}


def _register_model_config(open_clip, name: str, path: str) -> None:
    """Register a JSON model config under ``name`` (open_clip keys configs by file stem, so copy it)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BadJob(f"cannot read CLIP model config {path!r}: {_one_line(e)}") from None
    if not all(k in data for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise BadJob(f"CLIP model config {path!r} needs embed_dim, vision_cfg and text_cfg")
    if not name or "/" in name or ":" in name:
        raise BadJob(f"CLIP model name {name!r} cannot be used with a model_config file")
    text = json.dumps(data, sort_keys=True)
    if _REGISTERED_CONFIGS.get(name) == text:
        return
    folder = Path(tempfile.mkdtemp(prefix="splatsketch_clip_cfg_"))
    (folder / f"{name}.json").write_text(text)
    open_clip.add_model_config(folder / f"{name}.json")
    _REGISTERED_CONFIGS[name] = text


def _cached_weights(open_clip, name: str, tag: str, cache_dir: str) -> tuple[str | None, list[str]]:
    """Find the weights of a known tag on disk without the network: (file or None, where they'd be)."""
    pcfg = open_clip.get_pretrained_cfg(name, tag)
    expected: list[str] = []
    hub = pcfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        root = cache_dir or constants.HF_HUB_CACHE
        for fname in names:
            found = try_to_load_from_cache(repo, fname, cache_dir=cache_dir or None)
            if isinstance(found, str) and os.path.isfile(found):
                return found, expected
        folder = os.path.join(root, "models--" + repo.replace("/", "--"))
        expected.append(f"the Hugging Face cache {folder} (repo {repo}, file {names[-1]})")
    url = pcfg.get("url", "")
    if url:
        path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(path):
            return path, expected
        expected.insert(0, f"the file {path} (from {url})")
    if "file" in pcfg and os.path.isfile(pcfg["file"]):
        return pcfg["file"], expected
    return None, expected


def _tokenizer(open_clip, name: str):
    """The model's tokenizer, or None when it needs files that are not here (image losses still work)."""
    try:
        return open_clip.get_tokenizer(name)
    except Exception:  # noqa: BLE001  (an optional extra: the image losses still work without it)
        return None


@contextlib.contextmanager
def _offline_env():
    """Keep Hugging Face / open_clip from reaching the network while a local model is built."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _resolve_weights(open_clip, cfg: ClipConfig, random_weights: bool) -> tuple[str, dict]:
    """Decide what to hand open_clip as ``pretrained``: a local file, a tag (downloads allowed) or ''."""
    if random_weights:
        return "", {}
    if cfg.checkpoint:
        if not os.path.isfile(cfg.checkpoint):
            raise ClipWeightsUnavailable(f"CLIP checkpoint file not found: {cfg.checkpoint} (setting clip.checkpoint)")
        return cfg.checkpoint, {}
    tag = cfg.pretrained
    if not tag:
        if random_weights or cfg.model_config:
            return "", {}
        raise ClipWeightsUnavailable(
            f"no CLIP weights given for {cfg.model}: set clip.pretrained to a tag or clip.checkpoint to a local file"
        )
    pcfg = open_clip.get_pretrained_cfg(cfg.model, tag)
    if not pcfg:
        if os.path.isfile(tag):
            return tag, {}
        known = ", ".join(open_clip.list_pretrained_tags_by_model(cfg.model)) or "none"
        raise BadJob(f"unknown CLIP weights tag {tag!r} for model {cfg.model} (known tags: {known})")
    preprocess = {k: pcfg[k] for k in ("mean", "std") if k in pcfg}
    if cfg.allow_download:
        return tag, preprocess
    found, expected = _cached_weights(open_clip, cfg.model, tag, cfg.cache_dir)
    if found is None:
        raise ClipWeightsUnavailable(
            f"CLIP weights {cfg.model}/{tag} are not on this machine and downloads are off: provide "
            + " or ".join(expected)
            + ", or set clip.checkpoint to a local weights file, or allow downloads (clip.allow_download)"
        )
    return found, preprocess


def load_clip(cfg: ClipConfig, device: torch.device, *, random_weights: bool = False, amp: bool = False) -> ClipBundle:
    """Build the frozen CLIP model named by ``cfg`` on ``device``.

    ``random_weights=True`` (benchmarks only, deliberately not a ClipConfig field so no job can ask
    for it) builds the real architecture untrained, ignoring pretrained/checkpoint. ``amp=True`` runs the
    image tower under bf16 autocast: ~25% less CPU time on CPUs with AMX / AVX512-BF16, slower elsewhere.
    """
    import open_clip

    if cfg.model_config:
        _register_model_config(open_clip, cfg.model, cfg.model_config)
    schema = cfg.model.split(":")[0] if cfg.model.startswith(("hf-hub:", "local-dir:")) else ""
    if schema == "hf-hub" and not cfg.allow_download:
        raise ClipWeightsUnavailable(
            f"CLIP model {cfg.model} lives on the Hugging Face hub and downloads are off: "
            "use local-dir:<folder with open_clip_config.json and weights> or allow downloads (clip.allow_download)"
        )
    if not schema and open_clip.get_model_config(cfg.model) is None:
        raise BadJob(f"unknown CLIP model {cfg.model!r} (e.g. RN101-quickgelu, RN50-quickgelu, ViT-B-32)")
    # A schema names its own weights (open_clip ignores ``pretrained`` then).
    pretrained, preprocess = ("", {}) if schema else _resolve_weights(open_clip, cfg, random_weights)
    offline = contextlib.nullcontext() if cfg.allow_download else _offline_env()
    try:
        with offline:
            model = open_clip.create_model(
                cfg.model,
                pretrained=pretrained or None,
                device=torch.device(device),
                cache_dir=cfg.cache_dir or None,
                force_preprocess_cfg=preprocess or None,
            )
            tokenizer = _tokenizer(open_clip, cfg.model)
    except Exception as e:  # noqa: BLE001  open_clip raises RuntimeError/KeyError/pickle errors for bad files
        what = f"file {pretrained}" if pretrained and os.path.isfile(pretrained) else f"{cfg.model}/{pretrained}"
        raise ClipWeightsUnavailable(f"cannot load CLIP weights {what}: {_one_line(e)}") from None
    model.eval()
    if hasattr(model.visual, "attnpool"):
        _fold_batchnorm(model.visual)
    model.requires_grad_(False)

    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    dev = torch.device(device)
    mean = torch.tensor(pre.get("mean", open_clip.OPENAI_DATASET_MEAN), dtype=torch.float32, device=dev)
    std = torch.tensor(pre.get("std", open_clip.OPENAI_DATASET_STD), dtype=torch.float32, device=dev)
    visual = model.visual
    if hasattr(visual, "attnpool") and hasattr(visual, "layer4"):
        layer_names, geometric = RESNET_LAYERS, (2, 3)  # CLIPasso's [0,0,1,1,0]
    elif hasattr(visual, "forward_intermediates") and hasattr(visual, "transformer"):
        depth = len(visual.transformer.resblocks)
        layer_names = tuple(f"block{i}" for i in range(depth))
        geometric = tuple(sorted({max(0, depth // 3 - 1), max(0, 2 * depth // 3 - 1)}))  # mid-level blocks
    else:
        raise BadJob(f"CLIP model {cfg.model} has an image tower the CLIP losses cannot read (use RN or ViT)")
    return ClipBundle(
        model=model,
        mean=mean.view(1, 3, 1, 1),
        std=std.view(1, 3, 1, 1),
        input_size=size,
        name=cfg.model,
        layer_names=layer_names,
        geometric_layers=geometric,
        tokenizer=tokenizer,
        autocast_dtype=low_precision_dtype(dev) if amp else None,
    )
