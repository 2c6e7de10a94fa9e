"""JNDTarget behaviour and input validation, on a randomly initialised estimator (and, for
tiling, on the shipped one)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import jndplug
from conftest import make_image
from jndplug import JNDTarget


@pytest.fixture(scope="module")
def target(unet):
    return JNDTarget(unet)


@pytest.fixture(scope="module")
def batch():
    return torch.stack([jndplug.to_tensor(make_image(64, 80, s)) for s in range(2)])


def test_shape_dtype_device_and_range(target, batch):
    out = target(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype and out.device == batch.device
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, batch)  # the estimator changes the image
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
    with pytest.raises(ValueError, match="strength must be a finite number >= 0"):
        JNDTarget(unet, strength=-0.1)


def test_sur_only_for_conditioned_estimators(unet, batch):
    with pytest.raises(ValueError, match="needs an estimator trained with SUR conditioning"):
        JNDTarget(unet, sur=0.9)
    cond = jndplug.create_estimator("unet", sur_conditioning=True)
    out = JNDTarget(cond, sur=0.9)(batch)
    assert out.shape == batch.shape
    with pytest.raises(ValueError, match=r"sur must be in \(0, 1\]"):
        JNDTarget(cond, sur=1.5)


@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (31, 100), (33, 65)])
def test_any_size_from_16(target, hw):
    x = torch.rand(1, 3, *hw)
    assert target(x).shape == x.shape


def test_tiled_matches_untiled(unet):
    # the random unet keeps squeeze-excitation: its image-wide means are measured tile by tile
    x = jndplug.to_tensor(make_image(300, 420, 7))[None]
    whole = JNDTarget(unet, tile=False)(x)
    tiled = JNDTarget(unet, tile=(160, 64))(x)
    assert (tiled - whole).abs().max() <= 1 / 255


@pytest.mark.parametrize("zero_mean", [False, True])
def test_tiled_keeps_dtype_strength_and_batch(zero_mean):
    torch.manual_seed(1)
    model = jndplug.create_estimator("unet", zero_mean=zero_mean).eval()
    x = torch.stack([jndplug.to_tensor(make_image(200, 260, s)) for s in (3, 4)]).to(torch.bfloat16)
    whole = JNDTarget(model, strength=0.5, tile=False)(x)
    tiled = JNDTarget(model, strength=0.5, tile=(96, 32))(x)
    assert tiled.dtype == torch.bfloat16 and tiled.shape == x.shape
    assert (tiled.float() - whole.float()).abs().max() <= 2 / 255  # bfloat16 steps are 1/256 near 1


@pytest.fixture(scope="module")
def astronaut():
    """skimage's astronaut at 1100x900, the size the tiling defect was reported on."""
    from skimage.data import astronaut

    return jndplug.to_tensor(Image.fromarray(astronaut()).resize((1100, 900), Image.BICUBIC))[None]


@pytest.fixture(scope="module")
def shipped_whole(astronaut):
    return JNDTarget("default", tile=False)(astronaut)


def test_tiled_matches_untiled_with_the_shipped_weights(astronaut, shipped_whole):
    # whatever "default" is when the test runs: with squeeze-excitation (the image-wide means
    # are measured first) or without
    tiled = JNDTarget("default", tile=(512, 128))(astronaut)
    assert (tiled - shipped_whole).abs().max() <= 1 / 255


def test_automatic_tiles_suit_a_model_without_global_pooling(astronaut, shipped_whole):
    import jndplug.target as tgt

    torch.manual_seed(0)
    model = jndplug.create_estimator("unet", squeeze_excite=False, zero_mean=True).eval()
    # a random network's context reaches further than a trained one's; scale its residual to the
    # shipped model's on this image, so that the comparison is at a realistic size
    with torch.no_grad():
        rms = lambda r: r.pow(2).mean().sqrt()  # noqa: E731
        k = rms(shipped_whole - astronaut) / rms(model(astronaut) - astronaut)
        model.head[-1].weight.mul_(k)
        model.head[-1].bias.mul_(k)
    whole = JNDTarget(model, tile=False)(astronaut)
    # tiles smaller than the image, with the automatic tiles' overlap (and so their halo)
    tiled = JNDTarget(model, tile=(2 * tgt.AUTO_TILE[1] + 32, tgt.AUTO_TILE[1]))(astronaut)
    assert (tiled - whole).abs().max() <= 1 / 255


@pytest.mark.parametrize("h,w", [(40, 70), (17, 50), (16, 40)])
def test_tiles_are_padded_as_the_whole_image(h, w):
    from jndplug.target import _TileGrid, _pad_mode

    x = torch.rand(1, 3, h, w)
    grid = _TileGrid((h, w), 32, 8, 32)
    padded = F.pad(x, (0, (-w) % 32, 0, (-h) % 32), mode=_pad_mode(h, w, 32))
    for ty, y0 in enumerate(grid.ys):
        for tx, x0 in enumerate(grid.xs):
            assert torch.equal(grid.crop(x, ty, tx), padded[..., y0:y0 + 32, x0:x0 + 32])


def test_automatic_tiling_above_threshold(unet, monkeypatch):
    import jndplug.target as tgt

    monkeypatch.setattr(tgt, "AUTO_TILE_PIXELS", 100 * 100)
    monkeypatch.setattr(tgt, "AUTO_TILE", (64, 32))
    calls = []
    t = JNDTarget(unet)
    original = t._run
    monkeypatch.setattr(t, "_run", lambda x, **kw: calls.append(x.shape[-2:]) or original(x, **kw))
    t(torch.rand(1, 3, 128, 160))
    assert len(calls) > 1 and all(max(s) <= 64 for s in calls)


_PEAK_MEMORY = textwrap.dedent("""
    import resource, sys, torch, torch.nn as nn
    from jndplug import JNDTarget

    class Tiny(nn.Module):  # cheap, so that the measurement is about the buffers around it
        size_divisor = 32
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
        def forward(self, x):
            return x + 0.01 * self.conv(x)

    target = JNDTarget(Tiny(), strength=0.7, tile=(256, 32))
    target(torch.rand(1, 3, 600, 600))  # everything loaded and warmed up
    x = torch.rand(1, 3, 3000, 3000)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = target(x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print((peak - base) / x.nbytes)
""")


def test_tiled_inference_keeps_no_full_size_temporaries():
    # beyond the output itself, only tile-sized and strip-sized buffers (here a strip is about a
    # tenth of the image): peak memory above the input stays under 1.5 image sizes
    run = subprocess.run([sys.executable, "-c", _PEAK_MEMORY], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) < 1.5


def test_jnd_map(target, batch):
    m = target.jnd_map(batch)
    assert m.shape == (2, 1, *batch.shape[-2:])
    expected = (target(batch) - batch).pow(2).mean(1, keepdim=True).sqrt()
    assert torch.allclose(m, expected, atol=1e-6)
    assert target.jnd_map(batch[0]).shape == (1, *batch.shape[-2:])


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
    with pytest.raises(TypeError, match="estimator must be"):
        JNDTarget(42)
    with pytest.raises(ValueError, match="tile=\\(size, overlap\\)"):
        JNDTarget(unet, tile=(64, 40))
    with pytest.raises(TypeError, match="floating torch.dtype"):
        JNDTarget(unet, dtype=torch.int8)


def test_loads_from_file(estimator_file, batch, unet):
    assert torch.allclose(JNDTarget(estimator_file)(batch), JNDTarget(unet)(batch))


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
