"""The torch renderer against gsplat's rules: a dense reference, gsplat's own projection, finite
differences, a memory bound, renderer choice and pixel-sized widths. CPU only, nothing downloads."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from backend.errors import DeviceUnavailable
from backend.render import TorchRenderer, choose_renderer, pixel_scales
from backend.render.torch_renderer import project
from contract.cameras import look_at, orbit_cameras

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- dense reference (gsplat's rules)
def dense_reference(means, scales, opacity, viewmats, Ks, width, height):
    """Every pixel x every splat, written plainly from gsplat 1.5.3's kernels (small inputs only)."""
    V, N = viewmats.shape[0], means.shape[0]
    scales = torch.as_tensor(scales, dtype=means.dtype)
    scales = scales.expand(V, N) if scales.dim() < 2 else scales
    opacity = torch.as_tensor(opacity, dtype=means.dtype).expand(N)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=means.dtype), torch.arange(width, dtype=means.dtype),
                            indexing="ij")
    px, py = xs + 0.5, ys + 0.5  # pixel centres
    images = []
    for v in range(V):
        R, t, K = viewmats[v, :3, :3], viewmats[v, :3, 3], Ks[v]
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        image = torch.ones(height, width, dtype=means.dtype)
        for n in range(N):
            o = opacity[n]
            x, y, z = R @ means[n] + t
            if z < 0.01 or o < 1 / 255:
                continue
            tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
            tx = z * torch.clamp(x / z, -(cx / fx + 0.3 * tan_fovx), (width - cx) / fx + 0.3 * tan_fovx)
            ty = z * torch.clamp(y / z, -(cy / fy + 0.3 * tan_fovy), (height - cy) / fy + 0.3 * tan_fovy)
            J = torch.stack([torch.stack([fx / z, 0 * z, -fx * tx / z**2]),
                             torch.stack([0 * z, fy / z, -fy * ty / z**2])])
            cov = J @ (R @ (scales[v, n] ** 2 * torch.eye(3, dtype=means.dtype)) @ R.T) @ J.T
            cov = cov + 0.3 * torch.eye(2, dtype=means.dtype)
            conic = torch.linalg.inv(cov)
            mx, my = fx * x / z + cx, fy * y / z + cy
            dx, dy = mx - px, my - py
            sigma = 0.5 * (conic[0, 0] * dx**2 + conic[1, 1] * dy**2) + conic[0, 1] * dx * dy
            alpha = torch.clamp_max(o * torch.exp(-sigma), 0.999)
            alpha = torch.where((sigma < 0) | (alpha < 1 / 255), torch.zeros_like(alpha), alpha)
            image = image * (1 - alpha)
        images.append(image)
    return torch.stack(images)


def random_case(seed, views=3, splats=40, size=(40, 32), dtype=torch.float64, per_view=False):
    """Splats around the origin seen by orbit cameras; some off-screen, some behind a camera."""
    g = torch.Generator().manual_seed(seed)
    width, height = size
    vm, K = orbit_cameras(views, 36, fov_deg=50.0)
    viewmats = torch.tensor(vm, dtype=dtype)
    Ks = torch.tensor(K, dtype=dtype)
    Ks[:, 0, 2], Ks[:, 1, 2] = width / 2 + 1.7, height / 2 - 2.3  # non-square, off-centre
    Ks[:, 1, 1] *= 1.1
    means = (torch.rand(splats, 3, generator=g, dtype=dtype) * 2 - 1) * 1.2
    eye = torch.linalg.inv(viewmats[0])[:3, 3]
    means[:4] = eye * torch.tensor([1.3, 0.9, 1.001, 0.995], dtype=dtype)[:, None]  # behind / at the camera
    means[4:7] *= 3.0  # mostly off-screen
    if per_view:
        scales = 0.01 + 0.06 * torch.rand(views, splats, generator=g, dtype=dtype)
    else:
        scales = 0.01 + 0.06 * torch.rand(splats, generator=g, dtype=dtype)
    return means, scales, viewmats, Ks, width, height


@pytest.mark.parametrize("seed,per_view,opacity", [
    (0, False, 1.0), (1, True, 1.0), (2, False, 0.6), (3, True, "random"),
])
def test_matches_dense_reference(seed, per_view, opacity):
    means, scales, viewmats, Ks, width, height = random_case(seed, per_view=per_view)
    if opacity == "random":
        opacity = torch.rand(means.shape[0], generator=torch.Generator().manual_seed(seed), dtype=means.dtype)
        opacity[:3] = 0.002  # below 1/255: culled
    image = TorchRenderer()(means, scales, opacity, viewmats, Ks, width, height)
    expected = dense_reference(means, scales, opacity, viewmats, Ks, width, height)
    assert image.shape == (viewmats.shape[0], height, width)
    assert expected.min() < 0.5  # the case draws real ink
    assert (image - expected).abs().max() < 1e-4


def test_float32_close_to_reference():
    means, scales, viewmats, Ks, width, height = random_case(7, per_view=True)
    image = TorchRenderer()(means.float(), scales.float(), 1.0, viewmats.float(), Ks.float(), width, height)
    expected = dense_reference(means, scales, 1.0, viewmats, Ks, width, height)
    assert image.dtype == torch.float32
    diff = (image.double() - expected).abs()
    assert diff.max() < 5e-3 and diff.mean() < 1e-4  # only alpha = 1/255 threshold flips differ


def test_large_and_near_splats_are_drawn_whole():
    """Splats larger than the image (close to the camera) need no patch cap to be exact."""
    means, _, viewmats, Ks, width, height = random_case(5, splats=6)
    eye = torch.linalg.inv(viewmats[1])[:3, 3]
    means[:3] = eye * torch.tensor([0.8, 0.85, 0.9], dtype=means.dtype)[:, None]
    scales = torch.tensor([0.05, 0.2, 0.02, 0.03, 0.03, 0.03], dtype=means.dtype)
    image = TorchRenderer()(means, scales, 0.5, viewmats, Ks, width, height)
    expected = dense_reference(means, scales, 0.5, viewmats, Ks, width, height)
    assert (image - expected).abs().max() < 1e-4


@pytest.mark.parametrize("seed,per_view,opacity", [(0, False, 1.0), (3, True, "random")])
def test_fixed_shapes_give_the_same_image_and_gradients(seed, per_view, opacity):
    means, scales, viewmats, Ks, width, height = random_case(seed, per_view=per_view)
    if opacity == "random":
        g = torch.Generator().manual_seed(seed)
        opacity = 0.2 + 0.8 * torch.rand(means.shape[0], generator=g, dtype=means.dtype)
    g = torch.Generator().manual_seed(1)
    weights = torch.rand(viewmats.shape[0], height, width, generator=g, dtype=means.dtype)
    out = {}
    for fixed in (False, True):
        leaf = means.clone().requires_grad_(True)
        renderer = TorchRenderer(fixed_shapes=fixed)
        image = renderer(leaf, scales, opacity, viewmats, Ks, width, height)
        (image * weights).sum().backward()
        out[fixed] = image.detach(), leaf.grad
    largest = int(project(means, scales, opacity, viewmats, Ks, width, height).radii.max())
    assert renderer.half >= largest or 2 * renderer.half + 1 >= max(width, height)  # whole splats, or whole image
    torch.testing.assert_close(out[True][0], out[False][0], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-9, atol=1e-12)


def test_a_fixed_shape_patch_grows_when_a_splat_outgrows_it():
    means, _, viewmats, Ks, width, height = random_case(4, splats=8)
    means = means[8 - 3:] * 0.3  # on screen in every view
    renderer = TorchRenderer(fixed_shapes=True)
    renderer(means, torch.full((3,), 0.01, dtype=means.dtype), 1.0, viewmats, Ks, width, height)
    small = renderer.half
    assert not renderer.settle()
    wide = torch.full((3,), 0.08, dtype=means.dtype)
    expected = TorchRenderer()(means, wide, 1.0, viewmats, Ks, width, height)
    clipped = renderer(means, wide, 1.0, viewmats, Ks, width, height)
    assert (clipped - expected).abs().max() > 1e-3  # the patch cut the wide splats
    assert renderer.settle() and renderer.half > small
    torch.testing.assert_close(renderer(means, wide, 1.0, viewmats, Ks, width, height), expected, rtol=0, atol=1e-12)


def test_nothing_visible_gives_white_paper_and_zero_gradients():
    means, scales, viewmats, Ks, width, height = random_case(9, splats=5)
    means = torch.linalg.inv(viewmats[0])[:3, 3] * 1.5 + 0 * means  # all behind camera 0
    means.requires_grad_()
    image = TorchRenderer()(means, scales, 1.0, viewmats[:1], Ks[:1], width, height)
    assert torch.equal(image.detach(), torch.ones(1, height, width, dtype=means.dtype))
    image.sum().backward()
    assert torch.equal(means.grad, torch.zeros_like(means))


# ---------------------------------------------------------------- gsplat's own projection
def test_projection_matches_gsplat_torch_impl():
    from gsplat.cuda._torch_impl import _fully_fused_projection

    means, scales, viewmats, Ks, width, height = random_case(11, views=4, splats=200)
    covars = scales[:, None, None] ** 2 * torch.eye(3, dtype=means.dtype)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmats, Ks, width, height)
    ours = project(means, scales, 1.0, viewmats, Ks, width, height, use_opacity_bound=False)
    valid = (radii > 0).all(-1)
    assert valid.sum() > 100 and (~valid).sum() > 10  # both kinds present
    assert torch.equal(ours.valid, valid)
    assert torch.equal(ours.radii, radii.to(torch.int32))
    torch.testing.assert_close(ours.means2d[valid], means2d[valid], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(ours.conics[valid], conics[valid], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.depths, depths, rtol=1e-12, atol=1e-12)


def test_projection_bench_case_reports_agreement_and_both_timings():
    """``python bench/backend_speed.py --case projection``: the side-by-side figures docs/PERFORMANCE.md quotes."""
    from bench.backend_speed import run_case

    r = run_case("projection", "cpu", 1, "torch")
    same = r["vs_gsplat_torch"]
    assert same["same_valid"] and same["radii_equal"] and r["valid"] > 1000
    assert same["means2d_max_abs_px"] < 1e-3 and same["conics_max_rel"] < 1e-4 and same["depths_max_abs"] < 1e-5
    assert r["ms"]["ours"] > 0 and r["ms"]["gsplat_torch"] > 0


def test_opacity_bound_like_gsplat_cuda_kernel():
    """The CUDA kernel shrinks the box to where o*exp(-sigma) can reach 1/255."""
    means, scales, viewmats, Ks, width, height = random_case(12, splats=50)
    for o in (1.0, 0.1, 0.003):
        proj = project(means, scales, o, viewmats, Ks, width, height)
        extend = min(3.33, math.sqrt(2 * math.log(o * 255))) if o >= 1 / 255 else 0.0
        cov_xx = proj.conics[..., 2] / (proj.conics[..., 0] * proj.conics[..., 2] - proj.conics[..., 1] ** 2)
        expected = torch.ceil(extend * cov_xx.sqrt()).to(torch.int32)
        assert torch.equal(proj.radii[..., 0][proj.valid], expected[proj.valid])
        if o < 1 / 255:
            assert not proj.valid.any()


# ---------------------------------------------------------------- gradients
def test_gradients_match_finite_differences():
    means, scales, viewmats, Ks, width, height = random_case(21, views=2, splats=6, size=(20, 16), per_view=True)
    means = means[6:].clone()  # keep clear of the camera for smooth finite differences
    means = torch.cat([means, torch.zeros(1, 3, dtype=means.dtype)])  # and one splat near the centre
    scales = (scales[:, :means.shape[0]] * 1.5).clone()
    opacity = torch.full((means.shape[0],), 0.8, dtype=means.dtype)
    weights = torch.rand(2, height, width, generator=torch.Generator().manual_seed(3), dtype=means.dtype)
    renderer = TorchRenderer()

    def loss(m, s, o):
        return (renderer(m, s, o, viewmats, Ks, width, height) * weights).sum()

    inputs = (means.requires_grad_(), scales.requires_grad_(), opacity.requires_grad_())
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_of_clamped_centre_is_zero_like_gsplat():
    """alpha clamped at 0.999 passes no gradient (gsplat's backward does the same)."""
    viewmats = torch.tensor(look_at((0.0, -3.0, 0.0)), dtype=torch.float64)[None]
    Ks = torch.tensor([[[40.0, 0, 8.0], [0, 40.0, 8.0], [0, 0, 1]]], dtype=torch.float64)
    # camera x = world x, camera y = -world z, depth 3: this lands on pixel (8, 8)'s centre
    means = torch.tensor([[0.5 * 3 / 40, 0.0, -0.5 * 3 / 40]], dtype=torch.float64, requires_grad=True)
    image = TorchRenderer()(means, 0.2, 1.0, viewmats, Ks, 16, 16)
    assert float(image.detach()[0, 8, 8]) == pytest.approx(0.001)
    image[0, 8, 8].backward()  # the pixel at the mean: clamped
    assert torch.all(means.grad == 0)


# ---------------------------------------------------------------- memory
class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _big_scene(curves=64, samples=64, views=8, size=224):
    from backend.curves import splat_means

    g = torch.Generator().manual_seed(0)
    control = (torch.rand(curves, 4, 3, generator=g) * 1.4 - 0.7).requires_grad_()
    vm, K = orbit_cameras(views, size)
    return control, splat_means(control, samples), torch.tensor(vm), torch.tensor(K)


def test_no_tensor_scales_with_views_pixels_splats():
    control, means, viewmats, Ks = _big_scene()
    dense = viewmats.shape[0] * 224 * 224 * means.shape[0]
    with _LargestTensor() as probe:
        image = TorchRenderer()(means, 0.012, 1.0, viewmats, Ks, 224, 224)
        image.mean().backward()
    assert control.grad is not None and torch.isfinite(control.grad).all()
    assert dense > 1.6e9  # the dense form: 6.6 GB in float32
    assert probe.largest < 8e6, probe.largest  # ~ chunk of patch pixels / the [V,H,W] buffer


def test_peak_memory_of_large_render_is_small():
    """8 views x 224 px x 64 curves x 64 samples, forward + backward, in a fresh process.

    The bound is on the render's own tensors (torch's profiler keeps a running total of live CPU
    allocations), which is the same on every machine. Resident memory is checked too, loosely:
    it also counts allocator caching and one-off library setup, which differ between CPUs
    (a CI machine showed +524 MiB where this one shows +90 MiB for the same render).
    """
    script = textwrap.dedent("""
        import json, os, resource, tempfile, torch
        from tests.backend.test_render import _big_scene
        from backend.render import TorchRenderer
        torch.set_num_threads(2)
        control, means, viewmats, Ks = _big_scene()
        before = int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()
        activities = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
            image = TorchRenderer()(means, 0.012, 1.0, viewmats, Ks, 224, 224)
            image.mean().backward()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with tempfile.TemporaryDirectory() as folder:
            trace = os.path.join(folder, "trace.json")
            prof.export_chrome_trace(trace)
            events = json.load(open(trace))["traceEvents"]
        live = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
        print(max(live), peak - before, peak)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    tensors, grown, peak = map(int, out.stdout.split())
    # the dense form would need 6.6 GB for one [V, H, W, N] tensor; the patch renderer needs ~70 MiB
    assert 0 < tensors < 256 * 2**20, f"render's live tensors peaked at {tensors / 2**20:.0f} MiB"
    assert grown < 2 * 2**30, f"render grew the process by {grown / 2**20:.0f} MiB (peak {peak / 2**20:.0f})"


# ---------------------------------------------------------------- renderer choice
def test_auto_on_cpu_is_torch_and_never_touches_gsplat_cuda():
    renderer, why = choose_renderer("auto", torch.device("cpu"))
    assert renderer.name == "torch" and isinstance(renderer, TorchRenderer)
    assert "torch" in why and "no CUDA" in why
    renderer, why = choose_renderer("torch", "cpu")
    assert renderer.name == "torch" and "requested" in why
    assert "gsplat.cuda._backend" not in sys.modules


def test_gsplat_without_cuda_is_device_unavailable():
    with pytest.raises(DeviceUnavailable, match="gsplat.*CUDA"):
        choose_renderer("gsplat", torch.device("cpu"))
    with pytest.raises(DeviceUnavailable) as info:
        choose_renderer("gsplat", "cuda")
    assert info.value.exit_code == 4
    assert "gsplat.cuda._backend" not in sys.modules


def test_auto_with_unbuilt_gsplat_extension_falls_back_without_building(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    renderer, why = choose_renderer("auto", "cuda")
    assert renderer.name == "torch" and "not built" in why
    assert "gsplat.cuda._backend" not in sys.modules


def test_unknown_renderer_is_rejected():
    with pytest.raises(ValueError):
        choose_renderer("vulkan", "cpu")


# ---------------------------------------------------------------- pixel-sized widths
@pytest.mark.parametrize("width_px", [0.7, 1.5, 3.0])
def test_pixel_scales_give_requested_pixel_sigma(width_px):
    vm, K = orbit_cameras(3, 128)
    viewmats, Ks = torch.tensor(vm, dtype=torch.float64), torch.tensor(K, dtype=torch.float64)
    # points on each camera's optical axis at several depths
    inv = torch.linalg.inv(viewmats)
    depths = torch.tensor([1.5, 2.8, 4.0], dtype=torch.float64)
    means = torch.cat([inv[v, :3, 3] + depths[:, None] * inv[v, :3, 2] for v in range(3)])
    scales = pixel_scales(means, viewmats, Ks, width_px)
    assert scales.shape == (3, means.shape[0])
    proj = project(means, scales, 1.0, viewmats, Ks, 128, 128)
    a, b, c = proj.conics.unbind(-1)
    det = a * c - b * b
    cov_xx, cov_yy = c / det, a / det  # inverse of the conic
    for v in range(3):
        on_axis = slice(3 * v, 3 * v + 3)
        expected = torch.full((3,), width_px**2 + 0.3, dtype=torch.float64)
        torch.testing.assert_close(cov_xx[v, on_axis], expected)
        torch.testing.assert_close(cov_yy[v, on_axis], expected)


def test_renderer_entry_rejects_mismatched_shapes_in_one_clear_line():
    viewmats, Ks = (torch.as_tensor(a) for a in orbit_cameras(2, 16))
    means = torch.zeros(5, 3)
    render = TorchRenderer()
    cases = [
        (dict(means=torch.zeros(5, 4)), "means must be [N,3], got [5, 4]"),
        (dict(viewmats=viewmats[:, :3]), "viewmats must be [V,4,4], got [2, 3, 4]"),
        (dict(Ks=Ks[:1]), "Ks must be [V,3,3] = [2,3,3] (one per viewmat), got [1, 3, 3]"),
        (dict(opacity=torch.ones(4)), "opacity must be a number or [N] = [5], got [4]"),
    ]
    for change, message in cases:
        args = dict(means=means, scales=torch.full((5,), 0.02), opacity=1.0, viewmats=viewmats, Ks=Ks)
        args.update(change)
        with pytest.raises(AssertionError) as info:
            render(args["means"], args["scales"], args["opacity"], args["viewmats"], args["Ks"], 16, 16)
        assert str(info.value) == message
    assert render(means, torch.full((5,), 0.02), torch.ones(5), viewmats, Ks, 16, 16).shape == (2, 16, 16)


def test_one_pinhole_projection_in_torch_and_numpy():
    """The renderer's splat centres, backend.render.pinhole.project and contract.cameras.project agree."""
    from backend.render import pinhole
    from contract import cameras

    viewmats, Ks = (torch.as_tensor(a, dtype=torch.float64) for a in orbit_cameras(3, 32))
    points = torch.rand(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5
    uv, z = pinhole.project(points, viewmats, Ks)
    assert uv.shape == (3, 40, 2) and z.shape == (3, 40)
    proj = project(points, torch.full((40,), 1e-3, dtype=torch.float64), 1.0, viewmats, Ks, 32, 32)
    assert torch.equal(proj.means2d, uv) and torch.equal(proj.depths, z)  # the very same arithmetic
    uv_np, z_np = cameras.project(points.numpy(), viewmats.numpy(), Ks.numpy())
    torch.testing.assert_close(torch.as_tensor(uv_np), uv, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.as_tensor(z_np), z, rtol=0, atol=1e-12)
    uv0, z0 = cameras.project_points(points.numpy(), viewmats[0].numpy(), Ks[0].numpy())
    assert (uv0 == uv_np[0]).all() and (z0 == z_np[0]).all()
