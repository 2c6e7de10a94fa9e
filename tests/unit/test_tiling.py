"""Tiled inference (jndplug.tiling): agreement with the untiled pass, padding, automatic tiles,
memory, and the estimator-interface hooks it relies on."""

import runpy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import jndplug
import jndplug.tiling as tiling
from conftest import make_image
from jndplug import JNDTarget
from jndplug.models.base import Estimator, GlobalPooling
from jndplug.spec import TargetSpec
from jndplug.tiling import _TileGrid, pad_mode, tiled_forward

ROOT = Path(__file__).resolve().parents[2]


def _estimator_bound(estimator, tile, **settings):
    """The directed target bounded by the estimator's map, which the tiles run (the default bound,
    the analytic profile, runs no estimator)."""
    return JNDTarget.from_spec(TargetSpec(estimator=estimator, bound="estimator", **settings), tile=tile)


def test_tiled_matches_untiled(unet):
    # the random unet keeps squeeze-excitation: its image-wide means are measured tile by tile
    x = jndplug.to_tensor(make_image(300, 420, 7))[None]
    whole = _estimator_bound(unet, tile=False)(x)
    tiled = _estimator_bound(unet, tile=(160, 64))(x)
    assert (tiled - whole).abs().max() <= 1 / 255


@pytest.mark.parametrize("zero_mean", [False, True])
def test_tiled_keeps_dtype_strength_and_batch(zero_mean):
    torch.manual_seed(1)
    model = jndplug.create_estimator("unet", zero_mean=zero_mean).eval()
    x = torch.stack([jndplug.to_tensor(make_image(200, 260, s)) for s in (3, 4)]).to(torch.bfloat16)
    whole = _estimator_bound(model, strength=0.5, tile=False)(x)
    tiled = _estimator_bound(model, strength=0.5, tile=(96, 32))(x)
    assert tiled.dtype == torch.bfloat16 and tiled.shape == x.shape
    assert (tiled.float() - whole.float()).abs().max() <= 2 / 255  # bfloat16 steps are 1/256 near 1


@pytest.fixture(scope="module")
def astronaut():
    """skimage's astronaut at 1100x900, the size the tiling defect was reported on."""
    from skimage.data import astronaut

    return jndplug.to_tensor(Image.fromarray(astronaut()).resize((1100, 900), Image.BICUBIC))[None]


@pytest.fixture(scope="module")
def shipped_whole(astronaut):
    return _estimator_bound("default", tile=False)(astronaut)


def test_tiled_matches_untiled_with_the_shipped_weights(astronaut, shipped_whole):
    # whatever "default" is when the test runs: with squeeze-excitation (the image-wide means
    # are measured first) or without
    tiled = _estimator_bound("default", tile=(512, 128))(astronaut)
    assert (tiled - shipped_whole).abs().max() <= 1 / 255


def test_automatic_tiles_suit_a_model_without_global_pooling(astronaut, shipped_whole):
    torch.manual_seed(0)
    model = jndplug.create_estimator("unet", squeeze_excite=False, zero_mean=True).eval()
    # a random network's context reaches further than a trained one's; scale its residual to the
    # shipped model's on this image, so that the comparison is at a realistic size
    with torch.no_grad():
        rms = lambda r: r.pow(2).mean().sqrt()  # noqa: E731
        k = rms(shipped_whole - astronaut) / rms(model(astronaut) - astronaut)
        model.head[-1].weight.mul_(k)
        model.head[-1].bias.mul_(k)
    whole = _estimator_bound(model, tile=False)(astronaut)
    # tiles smaller than the image, with the automatic tiles' overlap (and so their halo)
    tiled = _estimator_bound(model, tile=(2 * tiling.AUTO_TILE[1] + 32, tiling.AUTO_TILE[1]))(astronaut)
    assert (tiled - whole).abs().max() <= 1 / 255


@pytest.mark.parametrize("h,w", [(40, 70), (17, 50), (16, 40)])
def test_tiles_are_padded_as_the_whole_image(h, w):
    x = torch.rand(1, 3, h, w)
    grid = _TileGrid((h, w), 32, 8, 32)
    padded = F.pad(x, (0, (-w) % 32, 0, (-h) % 32), mode=pad_mode(h, w, 32))
    for ty, y0 in enumerate(grid.ys):
        for tx, x0 in enumerate(grid.xs):
            assert torch.equal(grid.crop(x, ty, tx), padded[..., y0:y0 + 32, x0:x0 + 32])


def test_automatic_tiling_above_threshold(unet, monkeypatch):
    monkeypatch.setattr(tiling, "AUTO_TILE_PIXELS", 100 * 100)
    monkeypatch.setattr(tiling, "AUTO_TILE", (64, 32))
    calls = []
    t = _estimator_bound(unet, tile=None)  # automatic tiles
    original = t._run
    monkeypatch.setattr(t, "_run", lambda x, **kw: calls.append(x.shape[-2:]) or original(x, **kw))
    t(torch.rand(1, 3, 128, 160))
    assert len(calls) > 1 and all(max(s) <= 64 for s in calls)


def test_tiled_inference_keeps_no_full_size_temporaries():
    # counted per tensor (the memory benchmark's meter, the same on every run): beyond its input,
    # the call holds the float32 copy of it and the output (one image size each) and strips one
    # tile row high (an eighth of the image here) with the tiles; kind jnd, the tiler alone
    bench = runpy.run_path(str(ROOT / "benchmarks" / "bench_tiling_memory.py"))
    target = JNDTarget(bench["StandIn"](), strength=0.7, tile=(128, 16), kind="jnd")
    x = torch.rand(1, 3, 1024, 1024)
    with bench["LiveBytes"]() as meter:
        target(x)
    assert meter.peak <= 2.5 * x.nbytes


def _ramp_image(h=96, w=136):
    """Brightness rising across the image, so that every tile's mean differs from the image's."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([0.1 + 0.8 * xx, 0.2 + 0.6 * yy, 0.5 * (xx + yy) / 1.2 + 0.1])[None]


class _Pool(GlobalPooling):
    def forward(self, x):
        return self.pooled(x)


class _MeanPull(Estimator):
    """Pulls each pixel towards the image's mean: its output depends on the whole image."""

    size_divisor = 8

    def __init__(self):
        super().__init__()
        self.pool = _Pool()

    def forward(self, x):
        return x + 0.2 * (self.pool(x) - x)


class _Centred(Estimator):
    """A pointwise residual with the image's mean removed, as a zero-mean estimator does."""

    size_divisor = 8
    zero_mean = True

    def __init__(self):
        super().__init__()
        self.centre_flags = []

    def forward(self, x, center=True):
        self.centre_flags.append(center)
        r = 0.1 * x * x
        return x + (r - r.mean(dim=(-2, -1), keepdim=True) if center else r)


def test_tiled_forward_measures_the_declared_global_pooling_layers(monkeypatch):
    x = _ramp_image()
    model = _MeanPull()
    assert model.global_pools() == [model.pool]
    whole = tiling.blend(x, model(x), 0.5)
    tiled = tiled_forward(model, x, (48, 16), strength=0.5)
    assert (tiled - whole).abs().max() < 1e-5
    assert model.pool.global_mean is None and model.pool.observer is None  # left as found
    monkeypatch.setattr(tiling, "POOL_PASSES", 0)  # each tile would pool over itself instead
    assert (tiled_forward(model, x, (48, 16), strength=0.5) - whole).abs().max() > 0.01


def test_tiled_forward_centres_a_zero_mean_estimator_once():
    x = _ramp_image()
    model = _Centred()
    whole = model(x).clamp(0, 1)
    model.centre_flags.clear()
    tiled = tiled_forward(model, x, (48, 16))
    assert len(model.centre_flags) > 1 and not any(model.centre_flags)  # tiles stay uncentred
    assert (tiled - whole).abs().max() < 1e-5


def test_jndtarget_tiles_through_tiled_forward(unet):
    x = jndplug.to_tensor(make_image(100, 140, 2))[None]
    via_target = JNDTarget(unet, kind="jnd", strength=0.7, tile=(64, 16))(x)
    direct = tiled_forward(unet, x, (64, 16), strength=0.7)
    assert torch.equal(via_target, direct)


@pytest.mark.parametrize("tile", [(64, 40), (16, 0), (64,), "big"])
def test_bad_tiles_are_refused(tile):
    from jndplug.errors import JNDPlugValueError

    with pytest.raises(JNDPlugValueError, match="tile"):
        tiling.check_tile(tile)
