"""JNDTarget behaviour and input validation, on a randomly initialised estimator (tiling: test_tiling.py)."""

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import jndplug
from conftest import make_image
from jndplug import JNDTarget
from jndplug.spec import TargetSpec

# the memory benchmark's tensor meter and its stand-in estimator
_BENCH = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "bench_tiling_memory.py"))


def _estimator_bound(estimator, runtime=None, **settings):
    """The directed target bounded by the estimator's map (the default bound, the analytic profile,
    runs no estimator)."""
    return JNDTarget.from_spec(TargetSpec(estimator=estimator, bound="estimator", **settings), **(runtime or {}))


@pytest.fixture(scope="module", params=["default", "estimator bound"])
def target(unet, request):
    # the default target (bounded by the analytic profile) and the one that runs the estimator
    return JNDTarget(unet) if request.param == "default" else _estimator_bound(unet)


@pytest.fixture(scope="module")
def batch():
    return torch.stack([jndplug.to_tensor(make_image(64, 80, s)) for s in range(2)])


def test_shape_dtype_device_and_range(target, batch):
    out = target(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype and out.device == batch.device
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, batch)  # the target changes the image
    single = target(batch[0])
    assert single.shape == batch[0].shape
    assert torch.allclose(single, out[0], atol=1e-5)


def test_no_autograd_graph(target, batch):
    x = batch.clone().requires_grad_(True)
    out = target(x)
    assert not out.requires_grad and out.grad_fn is None


def test_half_precision_inputs_keep_their_dtype(target, batch):
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        out = target(batch.to(dtype))
        assert out.dtype == dtype
        assert (out.float() - target(batch)).abs().max() < 0.01


def test_strength_scales_the_distortion(unet, batch):
    jnd = JNDTarget(unet, kind="jnd")(batch)
    assert torch.equal(JNDTarget(unet, strength=0)(batch), batch)
    half = JNDTarget(unet, kind="jnd", strength=0.5)(batch)
    inside = (jnd > 0.01) & (jnd < 0.99)  # away from the clamp
    assert torch.allclose((half - batch)[inside], 0.5 * (jnd - batch)[inside], atol=1e-5)
    with pytest.raises(ValueError, match="strength: must be a finite number >= 0"):
        JNDTarget(unet, strength=-0.1)


def test_sur_only_for_conditioned_estimators(unet, batch):
    with pytest.raises(ValueError, match="needs an estimator trained with SUR conditioning"):
        _estimator_bound(unet, sur=0.9)
    with pytest.raises(ValueError, match="needs an estimator trained with SUR conditioning"):
        JNDTarget(unet, kind="jnd", sur=0.9)
    cond = jndplug.create_estimator("unet", sur_conditioning=True)
    out = _estimator_bound(cond, sur=0.9)(batch)
    assert out.shape == batch.shape
    with pytest.raises(ValueError, match=r"sur: must be in \(0, 1\]"):
        _estimator_bound(cond, sur=1.5)
    # the default bound (the analytic profile) uses no estimator: a SUR is refused, not ignored
    with pytest.raises(ValueError, match="sur: applies where the estimator takes part"):
        JNDTarget(cond, sur=0.9)


@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (31, 100), (33, 65)])
def test_any_size_from_16(target, hw):
    x = torch.rand(1, 3, *hw)
    assert target(x).shape == x.shape


def test_jnd_map(unet, batch):
    from jndplug.models.jnd_profile import JNDProfile

    target = _estimator_bound(unet)
    m = target.jnd_map(batch)
    assert m.shape == (2, 1, *batch.shape[-2:])
    # the estimator's bound is the estimated JND image's change at the target's strength (2 by default)
    assert target.strength == 2.0
    seed_paper = JNDTarget(target.model, kind="jnd", strength=target.strength)
    expected = (seed_paper(batch) - batch).pow(2).mean(1, keepdim=True).sqrt()
    assert torch.allclose(m, expected, atol=1e-6)
    assert target.jnd_map(batch[0]).shape == (1, *batch.shape[-2:])
    # the default target's bound is the analytic profile at 0.591
    default = JNDTarget(unet)
    assert torch.allclose(default.jnd_map(batch), 0.591 * JNDProfile().jnd_map(batch), atol=1e-6)
    assert default.jnd_map(batch[0]).shape == (1, *batch.shape[-2:])


@pytest.mark.parametrize("kind,gain", [("directed", None), ("directed", 0.0), ("jnd", None)])
def test_jnd_map_is_the_estimators_jnd_whatever_the_kind(unet, batch, kind, gain):
    # the estimator's own JND image, times strength: the bound, not the size of the target's change
    seed_paper = JNDTarget(unet, kind="jnd", strength=0.6)
    want = (seed_paper(batch) - batch).pow(2).mean(1, keepdim=True).sqrt()
    bound = "estimator" if kind == "directed" else None  # the directed kind bounded by the estimator's map
    spec = TargetSpec(estimator=unet, kind=kind, gain=gain, strength=0.6, bound=bound)
    got = JNDTarget.from_spec(spec).jnd_map(batch)
    assert torch.allclose(got, want, atol=1e-6)


def test_distortion_is_the_change_the_target_makes(unet, batch):
    for target in (JNDTarget(unet), _estimator_bound(unet), JNDTarget(unet, kind="jnd")):
        d = target.distortion(batch)
        assert d.shape == batch.shape and d.dtype == batch.dtype
        assert torch.equal(d, target(batch) - batch)
    # the directed change is luma sharpening within the bound (the default's, the estimator's map),
    # smaller than the bound at its largest
    for directed in (JNDTarget(unet), _estimator_bound(unet)):
        assert bool((directed.distortion(batch).abs().amax(1, keepdim=True) <= directed.jnd_map(batch) + 1e-6).all())
    assert torch.equal(JNDTarget(unet, gain=0.0).distortion(batch), torch.zeros_like(batch))


def test_settings_come_from_one_spec(unet, estimator_file):
    from jndplug.spec import TargetSpec

    spec = TargetSpec(estimator=str(estimator_file), strength=0.5, kind="jnd")
    t = JNDTarget.from_spec(spec, tile=False)
    assert t.spec is spec and (t.strength, t.kind, t.gain, t.sur, t.tile) == (0.5, "jnd", None, None, False)
    assert JNDTarget(spec=spec).spec == spec
    assert JNDTarget(estimator_file, strength=0.5, kind="jnd").spec == spec
    assert JNDTarget(unet).spec.gain == 1.0  # resolved: the default gain of the directed kind
    with pytest.raises(TypeError, match="either as spec= or as keyword arguments"):
        JNDTarget(unet, spec=spec)


def test_repr_and_effective_sur_show_the_settings_in_effect(unet, estimator_file):
    t = _estimator_bound(estimator_file)
    assert t.effective_sur is None and t.sur is None  # not SUR-conditioned
    assert repr(t).startswith(f"JNDTarget(estimator={str(estimator_file)!r}, kind='directed', strength=2, gain=1, "
                              "bound='estimator', sur=None,")
    # the default bound is not shown
    assert repr(JNDTarget(estimator_file)).startswith(f"JNDTarget(estimator={str(estimator_file)!r}, "
                                                      "kind='directed', strength=0.591, gain=1, sur=None,")
    assert "kind='jnd', strength=0.5, sur=None" in repr(JNDTarget(unet, kind="jnd", strength=0.5))
    assert "estimator='UNetJND'" in repr(JNDTarget(unet))
    torch.manual_seed(0)
    cond = jndplug.create_estimator("unet", sur_conditioning=True, default_sur=0.75)
    unset, set_ = _estimator_bound(cond), _estimator_bound(cond, sur=0.9)
    assert (unset.sur, unset.effective_sur, set_.effective_sur) == (None, 0.75, 0.9)
    assert "sur=0.75" in repr(unset) and "sur=0.9" in repr(set_)


@pytest.mark.parametrize("bad,err,match", [
    (torch.rand(1, 1, 32, 32), ValueError, "3 \\(RGB\\) channels"),
    (torch.rand(1, 4, 32, 32), ValueError, "3 \\(RGB\\) channels"),
    ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), TypeError, "integer dtype"),
    (torch.rand(1, 3, 32, 32) * 255, ValueError, "look like 0-255"),
    (torch.full((1, 3, 32, 32), float("nan")), ValueError, "NaN or Inf"),
    (torch.rand(32, 32), ValueError, r"\[3,H,W\] or \[B,3,H,W\]"),
    (torch.rand(1, 3, 8, 32), ValueError, "at least 16x16"),
    (np.zeros((32, 32, 3)), TypeError, "to_tensor"),
])
def test_bad_input(target, bad, err, match):
    with pytest.raises(err, match=match):
        target(bad)


@pytest.mark.parametrize("value,match", [
    (float("nan"), "NaN or Inf"), (float("inf"), "NaN or Inf"), (-float("inf"), "NaN or Inf"),
    (-0.5, r"values must lie in \[0,1\], got range \[-0.5, "), (1.5, r"got range \[0, 1.5\]$"),
    (200.0, "look like 0-255"),
])
def test_value_check_catches_each_case(target, value, match):
    x = torch.zeros(2, 3, 32, 32)
    x[1, 2, 5, 7] = value
    with pytest.raises(ValueError, match=match):
        target(x)
    with pytest.raises(ValueError, match=match):
        target.jnd_map(x)


def test_value_check_can_be_skipped(unet):
    x = torch.rand(1, 3, 32, 32)
    x[0, 0, 3, 3] = float("nan")
    out = JNDTarget(unet, kind="jnd", check_values=False)(x)  # not checked: the NaN goes through
    assert out.shape == x.shape and out.isnan().any()
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):  # shapes are still checked
        JNDTarget(unet, check_values=False)(torch.rand(1, 4, 32, 32))


def test_bad_constructor_arguments(unet):
    with pytest.raises(ValueError, match="estimator: must be a pretrained name"):
        JNDTarget(42)
    with pytest.raises(ValueError, match="tile=\\(size, overlap\\)"):
        JNDTarget(unet, tile=(64, 40))
    with pytest.raises(TypeError, match="floating torch.dtype"):
        JNDTarget(unet, dtype=torch.int8)


def test_loads_from_file(estimator_file, batch, unet):
    # through the estimator's map (the default bound, the analytic profile, does not run the estimator)
    assert torch.allclose(_estimator_bound(estimator_file)(batch), _estimator_bound(unet)(batch))
    assert torch.allclose(JNDTarget(estimator_file, kind="jnd")(batch), JNDTarget(unet, kind="jnd")(batch))


def test_conversion_helpers():
    a8 = make_image(20, 30)
    t = jndplug.to_tensor(a8)
    assert t.shape == (3, 20, 30) and t.dtype == torch.float32 and t.max() <= 1
    assert np.array_equal(jndplug.to_array(t), a8)
    a16 = make_image(20, 30, dtype=np.uint16)
    t16 = jndplug.to_tensor(a16)
    assert np.array_equal(jndplug.to_array(t16, np.uint16), a16)
    assert torch.allclose(jndplug.to_tensor(Image.fromarray(a8)), t)
    assert np.array_equal(np.asarray(jndplug.to_pil(t)), a8)
    with pytest.warns(UserWarning, match="grayscale"):
        g = jndplug.to_tensor(Image.fromarray(a8[..., 0]))
    assert g.shape == (3, 20, 30) and torch.equal(g[0], g[1])
    with pytest.warns(UserWarning, match="alpha channel"):
        assert jndplug.to_tensor(Image.fromarray(np.dstack([a8, a8[..., :1]]))).shape == (3, 20, 30)
    with pytest.raises(ValueError, match="HxWx3"):
        jndplug.to_tensor(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(TypeError, match="unsupported array dtype"):
        jndplug.to_tensor(np.zeros((4, 4, 3), np.int32))


def _bytes_per_pixel(target, x) -> float:
    """The most bytes of tensors ``target(x)`` holds at once beyond its input, per pixel of ``x``."""
    with _BENCH["LiveBytes"]() as meter:
        target(x)
    return meter.peak / (x.shape[0] * x.shape[-2] * x.shape[-1])


@pytest.fixture
def small_budgets(monkeypatch):
    """The memory budgets scaled down to test-sized images: the directed projection goes by strips
    of 32 rows of a 768-pixel-wide image, batches one 256x256 image at a time."""
    import jndplug.directed as directed
    import jndplug.tiling as tiling

    monkeypatch.setattr(directed, "STRIP_PIXELS", 32 * 768)
    monkeypatch.setattr(tiling, "BATCH_PIXELS", 256 * 256)


def _stand_in():
    # the memory benchmark's one-convolution estimator: what is measured is jndplug's own buffers
    return _BENCH["StandIn"]()


def _profile_weights() -> int:
    """Bytes of the analytic profile's own weights, made the first time a profile-bounded target runs
    on a device (``jndplug.bounds._profile``): they do not grow with the image."""
    from jndplug.models.jnd_profile import JNDProfile

    return sum(p.nbytes for p in JNDProfile().parameters())


@pytest.mark.usefixtures("small_budgets", "one_thread")
@pytest.mark.parametrize("bound", [None, "estimator"])  # the default bound (the analytic profile), the estimator's map
def test_default_target_keeps_few_image_sized_buffers(bound):
    x = torch.rand(1, 3, 512, 768)
    target = JNDTarget.from_spec(TargetSpec(estimator=_stand_in(), bound=bound), tile=(128, 16))
    if bound == "estimator":
        # the float32 copy of the input and the result (12 bytes per pixel each), the bound and the
        # distortion (4 each) and the tiler's strip of 128 rows: 33 bytes per pixel, as kind jnd's
        # tiler alone; with the directed step on the whole image it took 48
        assert _bytes_per_pixel(target, x) <= 36
    else:
        # measured 164.0 on 2026-12-07 and derived from the code: the float32 copy of the input (12),
        # the profile's six one-channel maps held at once (luma, mean, strength, structure, luminance
        # adaptation, contrast masking: 4 each) and its structure network's two 16-channel
        # activations at its ReLU (64 each), on the whole image (the profile is not tiled); plus the
        # profile's weights the first time it is made
        assert _bytes_per_pixel(target, x) <= 12 + 6 * 4 + 2 * 64 + _profile_weights() / x[0, 0].numel()
    by_strips = target(x)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(jndplug.directed, "STRIP_PIXELS", 512 * 768)  # one strip: the whole image at once
        assert (by_strips - target(x)).abs().max() <= 1e-6


@pytest.mark.usefixtures("small_budgets", "one_thread")
def test_a_batch_is_made_in_chunks_that_follow_a_pixel_budget():
    # four images, one at a time: the float32 copy of the batch (12 bytes per pixel), the rest
    # for one image only (19 in all); the whole batch at once took 48 bytes per pixel, 36 for kind jnd
    # (the directed kind bounded by the estimator's map, and kind jnd)
    x = torch.rand(4, 3, 256, 256)
    for spec in (TargetSpec(estimator=_stand_in(), bound="estimator"), TargetSpec(estimator=_stand_in(), kind="jnd")):
        assert _bytes_per_pixel(JNDTarget.from_spec(spec, tile=False), x) <= 24, spec
    # the default, bounded by the analytic profile: the copy of the batch (12) and a quarter of the
    # profile's 152 bytes per pixel of one image (test_default_target_keeps_few_image_sized_buffers):
    # 50, measured 50.0 on 2026-12-07 (the whole batch at once: 164)
    default = JNDTarget(_stand_in(), tile=False)
    assert _bytes_per_pixel(default, x) <= 12 + (6 * 4 + 2 * 64) / 4 + _profile_weights() / x[:, 0].numel()
    for target in (default, _estimator_bound(_stand_in(), {"tile": False})):
        chunked, chunked_map = target(x), target.jnd_map(x)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(jndplug.tiling, "BATCH_PIXELS", 4 * 256 * 256)
            whole, whole_map = target(x), target.jnd_map(x)
        assert (chunked - whole).abs().max() <= 1e-6 and (chunked_map - whole_map).abs().max() <= 1e-6
