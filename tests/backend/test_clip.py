"""CLIP model loading and the CLIP losses, on tiny random-weight models (never downloads)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import time

import open_clip
import pytest
import torch

from backend.errors import BadJob, ClipWeightsUnavailable
from backend.losses.base import LossContext, LossInputs, Targets
from backend.losses.clip import augmentation_grids, clip_geometric, clip_semantic, grids_from_rows, warp
from backend.losses.clip_model import _fold_batchnorm, load_clip
from contract.settings import ClipConfig, OptimizeConfig

CPU = torch.device("cpu")
V, H = 5, 48  # views and render size (not the tiny model's 64 px input: exercises the resize)


def tiny(path, name="tiny-rn") -> ClipConfig:
    return ClipConfig(model=name, model_config=str(path), pretrained="")


def strokes(n: int, seed: int) -> torch.Tensor:
    """``[n,H,W]`` sketch-like images: white paper with a few dark bars."""
    g = torch.Generator().manual_seed(seed)
    img = torch.ones(n, H, H)
    for i in range(n):
        for _ in range(4):
            y, x = torch.randint(4, H - 12, (2,), generator=g).tolist()
            img[i, y : y + 2, x : x + 10] = 0.0
    return img


def lively(bundle):
    """Re-initialise the convolutions so signals survive the depth (open_clip's random init leaves the
    residual branches at zero and shrinks activations, so every image would get the same embedding)."""
    with torch.no_grad():
        for module in bundle.model.visual.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, generator=torch.Generator().manual_seed(0))
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1.0)
    return bundle


@functools.cache
def shared_bundle(model: str, config_path: str):
    """One lively tiny model per config for the loss tests (loading is most of a test's time)."""
    return lively(load_clip(ClipConfig(model=model, model_config=config_path, pretrained=""), CPU))


def make_ctx(clip_cfg: ClipConfig, target_images: torch.Tensor, prompt: str = "", augmentations: int = 2, **settings):
    """A LossContext whose target RGB views are ``target_images`` (grey) composited over white."""
    targets = Targets(
        viewmats=torch.eye(4).repeat(V, 1, 1),
        Ks=torch.eye(3).repeat(V, 1, 1),
        is_train=torch.ones(V, dtype=torch.bool),
        rgb=target_images[:, None].expand(-1, 3, -1, -1).contiguous(),
        alpha=1 - target_images,
    )
    cfg = OptimizeConfig(augmentations=augmentations, prompt=prompt, clip=clip_cfg, **settings)
    return LossContext(targets, cfg, CPU, load_clip=lambda: shared_bundle(clip_cfg.model, clip_cfg.model_config))


def inputs(images, view_ids, seed=0, augment=True) -> LossInputs:
    z = torch.zeros(1, 4, 3)
    gen = torch.Generator().manual_seed(seed)
    return LossInputs(images, torch.as_tensor(view_ids), z, z, generator=gen, augment=augment)


@pytest.fixture
def tiny_rn(tiny_clip_config):
    return tiny(tiny_clip_config)


@pytest.mark.parametrize("kind", ["rn", "vit"])
def test_tiny_models_load_frozen(kind, tiny_clip_config, tiny_clip_vit_config):
    path = tiny_clip_config if kind == "rn" else tiny_clip_vit_config
    bundle = load_clip(tiny(path, f"tiny-{kind}"), CPU)
    assert not bundle.model.training
    assert not any(p.requires_grad for p in bundle.model.parameters())
    assert bundle.input_size == 64 and bundle.mean.shape == (1, 3, 1, 1)
    emb, acts = bundle.features(bundle.normalize(torch.rand(2, 3, H, H)), bundle.geometric_layers)
    assert emb.shape == (2, 32) and len(acts) == 2
    assert bundle.encode_text("a chair").shape == (32,)


def test_resnet_activations_at_layer2_and_layer3(tiny_rn):
    bundle = load_clip(tiny_rn, CPU)
    assert [bundle.layer_names[i] for i in bundle.geometric_layers] == ["layer2", "layer3"]
    x = bundle.normalize(torch.rand(3, 3, 64, 64))
    emb, (layer2, layer3) = bundle.features(x, bundle.geometric_layers)
    # width 16: layer2 has 2*16*4 channels at 1/8 resolution, layer3 4*16*4 at 1/16
    assert layer2.shape == (3, 128, 8, 8) and layer3.shape == (3, 256, 4, 4)
    none, (again,) = bundle.features(x, [2], embed=False)
    assert none is None and torch.allclose(again, layer2)
    torch.testing.assert_close(emb, bundle.model.encode_image(x))


@pytest.mark.parametrize("augment", [False, True])
def test_losses_zero_for_identical_pairs_positive_otherwise(tiny_rn, augment):
    sketch = strokes(V, seed=1)
    ctx = make_ctx(tiny_rn, sketch)
    geo, sem = clip_geometric(ctx), clip_semantic(ctx)
    assert (geo.name, sem.name) == ("clip_geometric", "clip_semantic")
    ids = [0, 3, 4]
    other = inputs(strokes(3, seed=2), ids, augment=augment)
    same = inputs(sketch[ids].clone(), ids, augment=augment)
    # augmented pairs share one warp, so identical images stay identical under augmentation too
    for loss in (geo, sem):
        differ, equal = loss(other), loss(same)
        assert differ.shape == equal.shape == (3,)
        assert (differ > 0).all() and (equal.abs() < 1e-3 * differ.min()).all()


def test_gradients_reach_the_sketch_not_clip(tiny_rn):
    ctx = make_ctx(tiny_rn, strokes(V, seed=1))
    geo, sem = clip_geometric(ctx), clip_semantic(ctx)
    images = strokes(2, seed=3).requires_grad_(True)
    step = inputs(images, [1, 2])
    (geo(step).mean() + 0.1 * sem(step).mean()).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0 and images.grad.isfinite().all()
    assert all(p.grad is None for p in ctx.clip().model.parameters())


def count_clip_calls(shared, monkeypatch) -> list:
    """(rows, with grad) of every CLIP call the model makes from now on."""
    calls = []
    original = type(shared.bundle).features

    def counting(self, x, layers, embed=True):
        calls.append((x.shape[0], torch.is_grad_enabled()))
        return original(self, x, layers, embed)

    monkeypatch.setattr(type(shared.bundle), "features", counting)
    return calls


def test_one_clip_pass_per_step_shared_by_both_losses(tiny_rn, monkeypatch):
    ctx = make_ctx(tiny_rn, strokes(V, seed=1), augmentations=3, augmentation_bank=0, clip_views_per_pass=8)
    geo, sem = clip_geometric(ctx), clip_semantic(ctx)
    calls = count_clip_calls(geo.shared, monkeypatch)
    step = inputs(strokes(2, seed=4), [0, 1])
    geo(step), sem(step)
    # sketch: 2 views x (1 + 3 pairs) in one call with grad; augmented targets: 2 x 3 without
    assert sorted(calls) == [(6, False), (8, True)]
    geo(step)  # the same loss again on the same images is a new evaluation (fresh augmentations)
    assert len(calls) == 4


def test_the_bank_encodes_targets_once_and_a_step_runs_clip_on_the_sketch_only(tiny_rn, monkeypatch):
    ctx = make_ctx(tiny_rn, strokes(V, seed=1), augmentations=3, augmentation_bank=6, bank_refresh=1)
    geo, sem = clip_geometric(ctx), clip_semantic(ctx)
    calls = count_clip_calls(geo.shared, monkeypatch)
    images = strokes(2, seed=4).requires_grad_(True)
    geo(inputs(images, [0, 1])), sem(inputs(images, [0, 1]))
    assert calls[:2] == [(16, False), (14, False)]  # the bank: 5 views x 6, in chunks of 16
    calls.clear()
    step = inputs(images, [3, 1], seed=5)
    geo(step), sem(step)
    # one refreshed entry (no grad), then the sketch a view at a time (CPU default) with 1 + 3 pairs
    assert calls == [(1, False), (4, True), (4, True)]
    bank = geo.shared.bank
    assert len(bank) == 30 and bank.acts[0].dtype == torch.float16


def test_bank_entries_are_the_targets_warped_by_their_own_grids(tiny_rn):
    ctx = make_ctx(tiny_rn, strokes(V, seed=1), augmentations=2, augmentation_bank=4)
    geo = clip_geometric(ctx)
    geo(inputs(strokes(1, seed=2), [0]))  # builds the bank
    shared, bank = geo.shared, geo.shared.bank
    b = shared.bundle
    entries = torch.tensor([0, 5, 19])
    warped = warp(shared.targets[bank.entry_view[entries]], grids_from_rows(bank.rows[entries], b.input_size))
    _, acts = b.features(b.normalize(warped), shared.layers, embed=False)
    for stored, fresh in zip(bank.acts, acts, strict=True):
        torch.testing.assert_close(stored[entries].float(), fresh, rtol=2e-3, atol=2e-3 * fresh.abs().max().item())
    # identical sketch and target stay identical under the bank's warps: the loss is ~0
    same = inputs(ctx.targets.rgb[[2, 4], 0].clone(), [2, 4])
    assert geo(same).abs().max() < 1e-3 * geo(inputs(strokes(2, seed=3), [2, 4])).min()


@pytest.mark.parametrize("hard", [0.0, 6.0])
def test_view_by_view_passes_give_the_gradient_of_one_pass(tiny_rn, hard):
    from backend.losses import total_loss

    sketch = strokes(V, seed=1)
    grads, values = {}, {}
    for per_pass in (1, 2, 8):
        ctx = make_ctx(tiny_rn, sketch, augmentations=2, clip_views_per_pass=per_pass)
        losses = {"clip_geometric": (1.0, clip_geometric(ctx)), "clip_semantic": (0.1, clip_semantic(ctx))}
        images = strokes(3, seed=7).requires_grad_(True)
        total, parts = total_loss(losses, inputs(images, [0, 2, 4], seed=3), hard_views=hard)
        total.backward()
        grads[per_pass], values[per_pass] = images.grad, float(total.detach())
    for per_pass in (1, 2):
        assert values[per_pass] == pytest.approx(values[8], rel=1e-5)
        torch.testing.assert_close(grads[per_pass], grads[8], rtol=1e-4, atol=1e-4 * grads[8].abs().max().item())


def test_a_clip_loss_used_alone_gets_its_own_gradient_from_view_by_view_passes(tiny_rn):
    sketch = strokes(V, seed=1)
    grads = []
    for per_pass in (1, 8):
        ctx = make_ctx(tiny_rn, sketch, augmentations=2, clip_views_per_pass=per_pass)
        geo, _ = clip_geometric(ctx), clip_semantic(ctx)  # both readers, but only one in the total
        images = strokes(2, seed=8).requires_grad_(True)
        geo(inputs(images, [1, 3], seed=4)).sum().backward()
        grads.append(images.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4 * grads[1].abs().max().item())


def test_a_compiled_image_tower_gives_the_eager_values_and_gradients(tiny_rn):
    from backend.losses.clip import compile_choice

    sketch = strokes(V, seed=1)
    out = {}
    for choice in ("off", "on"):
        torch.manual_seed(0)  # open_clip initialises what `lively` leaves (attention pool) from the global RNG
        bundle = lively(load_clip(tiny_rn, CPU))  # its own model: compiling must not touch the shared one
        targets = make_ctx(tiny_rn, sketch).targets
        cfg = OptimizeConfig(augmentations=2, clip=tiny_rn, clip_compile=choice)
        ctx = LossContext(targets, cfg, CPU, load_clip=lambda b=bundle: b)
        geo, sem = clip_geometric(ctx), clip_semantic(ctx)
        assert (bundle.compiled is not None) == (choice == "on")
        images = strokes(2, seed=9).requires_grad_(True)
        step = inputs(images, [1, 4], seed=2)
        total = geo(step).sum() + 0.1 * sem(step).sum()
        total.backward()
        out[choice] = float(total.detach()), images.grad
    # the compiled kernels sum in another order: fp32 rounding only
    assert out["on"][0] == pytest.approx(out["off"][0], rel=1e-5)
    g_on, g_off = out["on"][1].flatten(), out["off"][1].flatten()
    assert torch.nn.functional.cosine_similarity(g_on, g_off, dim=0) > 0.99999
    assert float(g_on.norm() / g_off.norm()) == pytest.approx(1.0, abs=1e-4)
    long_run = OptimizeConfig(iterations=2000)
    assert compile_choice(OptimizeConfig(), CPU) == (False, "not compiled (run shorter than 1000 steps)")
    assert compile_choice(long_run, torch.device("cuda"))[0] is False
    assert compile_choice(dataclasses.replace(long_run, clip_compile="off"), CPU)[0] is False


def test_augmentation_is_one_shared_warp_and_deterministic():
    img = torch.rand(3, 3, 32, 32)
    grids = augmentation_grids(3, 32, torch.Generator().manual_seed(7), CPU)
    assert grids.shape == (3, 32, 32, 2)
    pair = warp(torch.cat([img, img]), torch.cat([grids, grids]))
    torch.testing.assert_close(pair[:3], pair[3:])
    again = augmentation_grids(3, 32, torch.Generator().manual_seed(7), CPU)
    torch.testing.assert_close(grids, again)
    assert not torch.allclose(grids, augmentation_grids(3, 32, torch.Generator().manual_seed(8), CPU))
    assert not torch.allclose(warp(img, grids), img)  # it really warps
    assert torch.allclose(warp(torch.ones(1, 1, 32, 32), grids[:1]), torch.ones(1))  # white outside


def test_losses_deterministic_for_a_fixed_generator(tiny_rn):
    ctx = make_ctx(tiny_rn, strokes(V, seed=1))
    geo = clip_geometric(ctx)
    images = strokes(2, seed=5)
    first, second = geo(inputs(images, [2, 3], seed=11)), geo(inputs(images, [2, 3], seed=11))
    torch.testing.assert_close(first, second)
    assert not torch.allclose(first, geo(inputs(images, [2, 3], seed=12)))
    plain = inputs(images, [2, 3], seed=11, augment=False)
    state = plain.generator.get_state()
    geo(plain)
    assert torch.equal(state, plain.generator.get_state())  # no augmentation: no random draws


def test_semantic_loss_with_a_prompt(tiny_rn):
    sketch = strokes(V, seed=1)
    plain = clip_semantic(make_ctx(tiny_rn, sketch))
    prompted = clip_semantic(make_ctx(tiny_rn, sketch, prompt="a drawing of a chair"))
    images = sketch[:2].clone().requires_grad_(True)
    step = inputs(images, [0, 1], augment=False)
    assert plain(step).abs().max() < 1e-4
    loss = prompted(step)
    assert (loss > 1e-4).all()
    loss.sum().backward()
    assert images.grad.abs().sum() > 0


def test_missing_weights_fail_fast_with_what_to_provide(tmp_path):
    start = time.monotonic()
    with pytest.raises(ClipWeightsUnavailable) as err:
        load_clip(ClipConfig(model="RN101-quickgelu", pretrained="openai", cache_dir=str(tmp_path)), CPU)
    assert time.monotonic() - start < 3
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "RN101.pt") in message and "clip.checkpoint" in message


def test_no_random_weights_unless_asked(tiny_rn):
    with pytest.raises(ClipWeightsUnavailable, match="no CLIP weights"):
        load_clip(ClipConfig(model="RN101-quickgelu", pretrained=""), CPU)
    with pytest.raises(ClipWeightsUnavailable, match="downloads are off"):
        load_clip(ClipConfig(model="hf-hub:someone/some-clip"), CPU)
    # benchmarks ask explicitly; then named weights are ignored
    asked = dataclasses.replace(tiny_rn, pretrained="openai", checkpoint="/nonexistent.pt")
    assert load_clip(asked, CPU, random_weights=True).name == "tiny-rn"


def test_bad_checkpoints_and_names(tmp_path, tiny_rn):
    with pytest.raises(ClipWeightsUnavailable, match="not found"):
        load_clip(ClipConfig(checkpoint=str(tmp_path / "missing.pt")), CPU)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ClipWeightsUnavailable, match="garbage.pt"):
        load_clip(ClipConfig(model="tiny-rn", model_config=tiny_rn.model_config, checkpoint=str(garbage)), CPU)
    with pytest.raises(BadJob, match="unknown CLIP model 'RN-nope'"):
        load_clip(ClipConfig(model="RN-nope"), CPU)
    with pytest.raises(BadJob, match="unknown CLIP weights tag"):
        load_clip(ClipConfig(model="RN101-quickgelu", pretrained="nope"), CPU)


def test_local_checkpoint_round_trip(tmp_path, tiny_rn):
    load_clip(tiny_rn, CPU)  # registers the tiny config
    original = open_clip.create_model("tiny-rn").eval()
    path = tmp_path / "tiny.pt"
    torch.save(original.state_dict(), path)
    cfg = ClipConfig(model="tiny-rn", model_config=tiny_rn.model_config, checkpoint=str(path))
    bundle = load_clip(cfg, CPU)
    x = bundle.normalize(torch.rand(2, 3, 64, 64))
    torch.testing.assert_close(bundle.features(x, (2,))[0], original.encode_image(x), rtol=1e-4, atol=1e-5)


def test_batchnorm_folding_is_exact(tiny_rn):
    load_clip(tiny_rn, CPU)  # registers the tiny config
    visual = open_clip.create_model("tiny-rn").visual.eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    folded = copy.deepcopy(visual)
    assert _fold_batchnorm(folded) == 3 + 3 * 4 + 4  # stem, 3 per bottleneck, 4 downsamples
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 64, 64, generator=g)
    torch.testing.assert_close(folded(x), visual(x), rtol=1e-4, atol=1e-5)


def test_amp_returns_float32_close_to_fp32(tiny_rn):
    exact = lively(load_clip(tiny_rn, CPU))
    assert load_clip(tiny_rn, CPU, amp=True).autocast_dtype == torch.bfloat16
    amp = dataclasses.replace(exact, autocast_dtype=torch.bfloat16)
    x = exact.normalize(torch.rand(2, 3, 64, 64))
    (e1, _), (e2, a2) = exact.features(x, (2, 3)), amp.features(x, (2, 3))
    assert e2.dtype == a2[0].dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(e1, e2).min() > 0.99


def test_vit_losses(tiny_clip_vit_config):
    sketch = strokes(V, seed=1)
    ctx = make_ctx(tiny(tiny_clip_vit_config, "tiny-vit"), sketch)
    geo, sem = clip_geometric(ctx), clip_semantic(ctx)
    assert geo(inputs(sketch[:2].clone(), [0, 1])).abs().max() < 1e-5
    images = strokes(2, seed=6).requires_grad_(True)
    step = inputs(images, [0, 1])
    loss = geo(step) + sem(step)
    assert (loss > 0).all()
    loss.sum().backward()
    assert images.grad.abs().sum() > 0
