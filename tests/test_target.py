"""JNDTarget behaviour and input validation, on a randomly initialised estimator."""

import numpy as np
import pytest
import torch
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
    jnd = JNDTarget(unet)(batch)
    assert torch.equal(JNDTarget(unet, strength=0)(batch), batch)
    half = JNDTarget(unet, strength=0.5)(batch)
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
    x = jndplug.to_tensor(make_image(300, 420, 7))[None]
    whole = JNDTarget(unet, tile=False)(x)
    tiled = JNDTarget(unet, tile=(160, 64))(x)
    assert (tiled - whole).abs().max() <= 1 / 255


def test_automatic_tiling_above_threshold(unet, monkeypatch):
    import jndplug.target as tgt

    monkeypatch.setattr(tgt, "AUTO_TILE_PIXELS", 100 * 100)
    monkeypatch.setattr(tgt, "AUTO_TILE", (64, 32))
    calls = []
    t = JNDTarget(unet)
    original = t._run
    monkeypatch.setattr(t, "_run", lambda x: calls.append(x.shape[-2:]) or original(x))
    t(torch.rand(1, 3, 128, 160))
    assert len(calls) > 1 and all(max(s) <= 64 for s in calls)


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
