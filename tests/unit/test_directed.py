"""Perception-directed JND images (jndplug.directed) and the zero-training screen (jndplug bench screen)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import jndplug
from conftest import make_image
from jndplug.bench.truth import band_power_ratios
from jndplug.pixels import YCBCR
from jndplug.cli import main
from jndplug.directed import directed_distortion, directed_jnd
from jndplug.models.jnd_profile import JNDProfile
from jndplug.target import JNDTarget


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(seed=0):
    """Two images with saturated regions (where the [0, 1] range narrows the bound) and texture."""
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([jndplug.to_tensor(make_image(40, 52, seed=seed + i)) for i in range(2)])
    x = (x + 0.15 * torch.rand(x.shape, generator=g)).clamp(0, 1)
    x[0, :, :6] = 1.0
    x[1, :, -6:] = 0.0
    return x


@pytest.mark.parametrize("gain", [0.3, 1.0, 8.0])
def test_distortion_is_zero_mean_luma_only_and_inside_the_bound(gain):
    x = _images()
    g = torch.Generator().manual_seed(1)
    bound = 0.02 * torch.rand((2, 1, *x.shape[-2:]), generator=g)
    d = directed_distortion(x, bound, gain)
    assert d.shape == (2, 1, *x.shape[-2:])
    assert float(d.abs().max()) > 1e-3  # it does something
    assert bool((d.abs() <= bound + 1e-7).all())  # never outside the JND bound
    assert float(d.mean(dim=(-2, -1)).abs().max()) < 1e-6  # zero mean per image
    y = directed_jnd(x, bound, gain)
    assert float(y.min()) >= 0 and float(y.max()) <= 1 + 1e-6  # stays a valid image, without clamping
    # the same change on R, G and B: only BT.601 luma moves
    diff = (y - x).permute(0, 2, 3, 1).numpy().astype(np.float64) @ YCBCR.T
    assert np.abs(diff[..., 1:]).max() < 1e-6 and np.abs(diff[..., 0]).max() > 1e-3
    if gain == 8.0:  # a large gain saturates: the bound is reached where the image allows it
        assert float((d.abs() - bound).abs().min()) < 1e-6


def test_gain_zero_and_a_zero_bound_are_the_identity():
    x = _images()
    bound = torch.full((2, 1, *x.shape[-2:]), 0.02)
    assert torch.equal(directed_distortion(x, bound, 0.0), torch.zeros_like(bound))
    assert torch.equal(directed_distortion(x, torch.zeros_like(bound), 2.0), torch.zeros_like(bound))



def _whole_image_distortion(x, bound, gain, sigma):
    """The projection as it was computed on the whole batch at once, before it went by strips."""
    from jndplug.directed import highpass

    lo = torch.maximum(-bound, -x.amin(1, keepdim=True)).clamp(max=0)
    hi = torch.minimum(bound, 1 - x.amax(1, keepdim=True)).clamp(min=0)
    v = gain * highpass(x, sigma)
    t_lo = (v - hi).amin(dim=(-2, -1), keepdim=True)
    t_hi = (v - lo).amax(dim=(-2, -1), keepdim=True)
    for _ in range(60):
        t = (t_lo + t_hi) / 2
        positive = torch.clamp(v - t, lo, hi).mean(dim=(-2, -1), keepdim=True, dtype=torch.float64) > 0
        t_lo, t_hi = torch.where(positive, t, t_lo), torch.where(positive, t_hi, t)
    return torch.clamp(v - (t_lo + t_hi) / 2, lo, hi)


@pytest.mark.parametrize("hw,sigma", [((97, 61), 1.0), ((97, 61), 2.5), ((20, 90), 1.0), ((7, 40), 3.0)])
def test_strips_give_the_whole_image_result(monkeypatch, hw, sigma):
    # strips of 5 rows over both images: the blur's context (ceil(3 sigma) rows, mirrored at the
    # image's edges, replicated where the image is smaller than the blur) crosses strips, and the
    # bisection sums the strips; the last case is one whole-image strip of a 7-row image
    import jndplug.directed as directed

    g = torch.Generator().manual_seed(3)
    x = torch.rand((2, 3, *hw), generator=g)
    x[0, :, :4] = 1.0  # saturated rows narrow the bound
    bound = 0.05 * torch.rand((2, 1, *hw), generator=g)
    monkeypatch.setattr(directed, "STRIP_PIXELS", 2 * 5 * hw[1])
    d = directed_distortion(x, bound, 3.0, sigma)
    assert (d - _whole_image_distortion(x, bound, 3.0, sigma)).abs().max() <= 1e-6
    assert float(d.mean(dim=(-2, -1)).abs().max()) < 1e-6

def test_it_sharpens_a_blurred_image():
    x = _images()
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    y = directed_jnd(blurred, torch.full((2, 1, *x.shape[-2:]), 0.03), 1.0)
    a, b = jndplug.to_array(blurred[0]), jndplug.to_array(y[0])
    assert band_power_ratios(a.astype(np.float64) / 255, b.astype(np.float64) / 255)[-1] > 1.2


def test_operator_rejects_bad_arguments():
    x = _images()
    bound = torch.zeros((2, 1, *x.shape[-2:]))
    with pytest.raises(ValueError, match="gain"):
        directed_distortion(x, bound, -1.0)
    with pytest.raises(ValueError, match="jnd_map"):
        directed_distortion(x, bound[:, :, :-1], 1.0)
    with pytest.raises(ValueError, match="sigma"):
        directed_distortion(x, bound, 1.0, sigma=0)


def test_jndtarget_directed_is_the_operator_bounded_by_its_jnd_map(estimator_file):
    from jndplug.spec import TargetSpec

    x = _images()
    seed_paper = JNDTarget(estimator_file, kind="jnd")
    target = JNDTarget.from_spec(TargetSpec(estimator=estimator_file, kind="directed", bound="estimator",
                                            strength=1, gain=0.7))
    want = directed_jnd(x, seed_paper.jnd_map(x), 0.7)
    torch.testing.assert_close(target(x), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(target(x[0]), want[0], rtol=0, atol=1e-6)  # a single image
    assert not torch.allclose(target(x), seed_paper(x), atol=1e-4)
    assert torch.equal(target.jnd_map(x), seed_paper.jnd_map(x))  # the bound, whatever the kind
    assert bool((target.distortion(x).abs() <= seed_paper.jnd_map(x) + 1e-6).all())
    assert torch.equal(JNDTarget(estimator_file, kind="directed", gain=0.0)(x), x)
    assert torch.equal(JNDTarget(estimator_file, kind="directed", strength=0.0)(x), x)
    assert "kind='directed', strength=1, gain=0.7," in repr(target)
    assert "kind='jnd'," in repr(seed_paper) and "gain" not in repr(seed_paper)
    # the perception-directed image is the default, on the evidence of BENCHMARKS.md "Converged restorers"
    default = JNDTarget(estimator_file)
    assert default.kind == "directed" and default.gain == jndplug.spec.DEFAULT_GAIN
    # bounded by the analytic JND profile at 0.591 (as visible as the estimator's map at 2 on the
    # calibration photos, BENCHMARKS.md "Where the budget goes")
    assert (default.spec.bound, default.strength) == ("profile", 0.591)
    profile = 0.591 * JNDProfile().jnd_map(x)
    torch.testing.assert_close(default.jnd_map(x), profile, rtol=0, atol=1e-6)
    torch.testing.assert_close(default(x), directed_jnd(x, profile, 1.0), rtol=0, atol=1e-6)
    # bounded by the estimator's map, its default strength is twice the map (the directed distortion's
    # own threshold, BENCHMARKS.md): its bound is the estimated JND image's change at strength 2
    by_estimator = JNDTarget.from_spec(TargetSpec(estimator=estimator_file, bound="estimator"))
    assert by_estimator.strength == 2.0
    twice = JNDTarget(estimator_file, kind="jnd", strength=2)
    torch.testing.assert_close(by_estimator.jnd_map(x), twice.jnd_map(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(by_estimator(x), directed_jnd(x, twice.jnd_map(x), 1.0), rtol=0, atol=1e-6)


def test_jndtarget_rejects_bad_kind_and_gain(estimator_file):
    with pytest.raises(ValueError, match="kind"):
        JNDTarget(estimator_file, kind="sharp")
    with pytest.raises(ValueError, match="gain: applies to kind directed only"):
        JNDTarget(estimator_file, kind="jnd", gain=1.0)
    with pytest.raises(ValueError, match="gain"):
        JNDTarget(estimator_file, kind="directed", gain=float("nan"))


def test_directed_with_the_analytic_profile_bound():
    x = _images()
    m = JNDProfile().jnd_map(x)
    d = directed_distortion(x, m, 1.0)
    assert float(d.abs().max()) > 1e-3 and bool((d.abs() <= m + 1e-7).all())


@pytest.mark.parametrize("bound", [None, "estimator"])  # the default bound (profile), the shipped estimator's map
def test_shipped_directed_target_adds_high_frequency_luma_to_a_bicubic_photo(bound):
    """Astronaut (512 px) downscaled x4 and bicubic-upscaled back, as an SR input would look.

    The directed JND image must add power in the 1/4-1/2 cycles/px luma band (3.92x measured with
    the estimator file shipped on 2026-12-01, sha256 fa780d608b0166dd..., as the bound). Observed on
    that same file, not asserted because the weights are being retrained: the seed paper's JND image
    lowers that band's power to 0.66x, and 0.76x in the 1/8-1/4 band, on this exact input.
    """
    from skimage import data as skdata

    from jndplug.spec import TargetSpec

    photo = Image.fromarray(skdata.astronaut())
    up = np.asarray(photo.resize((128, 128), Image.BICUBIC).resize((512, 512), Image.BICUBIC))
    x = jndplug.to_tensor(up.copy())
    y = JNDTarget.from_spec(TargetSpec(kind="directed", bound=bound))(x)
    ratios = band_power_ratios(up.astype(np.float64) / 255, y.permute(1, 2, 0).numpy().astype(np.float64))
    assert ratios[-1] > 1.0, ratios


# ---------------------------------------------------------------------------------------------
# jndplug bench screen

@pytest.fixture(scope="module")
def screen_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("screen")
    (root / "gt").mkdir()
    (root / "out").mkdir()
    for i in range(2):
        gt = Image.fromarray(make_image(64, 64, seed=30 + i))
        gt.save(root / "gt" / f"{i}.png")
        gt.resize((16, 16), Image.BICUBIC).resize((64, 64), Image.BICUBIC).save(root / "out" / f"{i}.png")
    return root


def test_screen_scores_each_transform_against_identity(tmp_path, screen_data, estimator_file, capsys):
    out = tmp_path / "res"
    rc = main(["bench", "screen", "--gt", str(screen_data / "gt"), "--outputs", str(screen_data / "out"),
               "--estimator", str(estimator_file), "--metrics", "psnr_y", "ssim_y",
               "--transforms", "jnd", "directed:gain=2", "directed:gain=0", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "screen.json").read_text())
    assert "directed:gain=2" in (out / "screen.md").read_text() and "| identity |" in capsys.readouterr().out
    by = {e["transform"]: e for e in result["summary"]}
    assert list(by) == ["identity", "jnd", "directed:gain=2", "directed:gain=0"]
    assert result["images"] == 2 and len(result["per_image"]["identity"]) == 2
    # identity is the outputs themselves, scored as `jndplug metrics` would
    from jndplug.metrics import evaluate_folders
    table = evaluate_folders(screen_data / "out", screen_data / "gt", ["psnr_y", "ssim_y"])
    assert by["identity"]["mean"]["psnr_y"] == pytest.approx(table["mean"]["psnr_y"])
    assert by["identity"]["band_power_ratio"] == pytest.approx([1.0] * 4)
    assert by["directed:gain=0"]["delta"] == {"psnr_y": 0.0, "ssim_y": 0.0}
    assert by["directed:gain=0"]["prediction"] == {"psnr_y": "none", "ssim_y": "none"}
    for label in ("jnd", "directed:gain=2"):
        e = by[label]
        for m in ("psnr_y", "ssim_y"):
            assert e["delta"][m] == pytest.approx(e["mean"][m] - by["identity"]["mean"][m])
            assert e["prediction"][m] == ("help" if e["delta"][m] > 0 else "hurt")
    d = by["directed:gain=2"]
    assert d["band_power_ratio"][-1] > 1.0  # it adds fine detail
    assert d["chroma_share"] < 0.01 and d["rms_255"] > 0  # luma only (to 8-bit rounding)


def test_screen_bicubic_stand_in_and_usm(tmp_path, screen_data):
    out = tmp_path / "res"
    rc = main(["bench", "screen", "--gt", str(screen_data / "gt"), "--bicubic", "4", "--metrics", "psnr_y",
               "--transforms", "usm:weight=1", "directed:gain=1,bound=profile", "--crop", "48", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "screen.json").read_text())
    assert result["source"] == "bicubic x4" and result["crop_border"] == 4 and result["estimator"] is None
    by = {e["transform"]: e for e in result["summary"]}
    assert by["usm:weight=1"]["band_power_ratio"][-1] > 1.0
    assert by["directed:gain=1,bound=profile"]["rms_255"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--transforms", "blur"], "unknown transform 'blur'"),
    (["--transforms", "directed:gain=-1"], "gain: must be a finite number >= 0"),
    (["--transforms", "directed:weight=1"], "weight: unknown key"),
    (["--transforms", "directed:bound=nowhere"], "bound: must be one of estimator, profile"),
    (["--bicubic", "1"], "scale must be an integer >= 2"),
])
def test_screen_explains_bad_arguments(tmp_path, screen_data, argv, message, capsys):
    src = [] if "--bicubic" in argv else ["--bicubic", "4"]
    rc = main(["bench", "screen", "--gt", str(screen_data / "gt"), *src, "--metrics", "psnr_y",
               "--out", str(tmp_path / "r"), *argv])
    assert rc == 1 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_screen_explains_missing_outputs_and_keeps_earlier_results(tmp_path, screen_data, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["bench", "screen", "--gt", str(screen_data / "gt"), "--metrics", "psnr_y", "--transforms", "identity"]
    assert main([*args, "--outputs", str(empty), "--out", str(tmp_path / "r")]) == 1
    assert "have no output" in capsys.readouterr().err
    for i in range(2):
        Image.fromarray(make_image(60, 64)).save(empty / f"{i}.png")
    assert main([*args, "--outputs", str(empty), "--crop", "32", "--out", str(tmp_path / "r")]) == 1
    assert "the output is 64x60 but the ground truth is 64x64" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    out = tmp_path / "done"
    assert main([*args, "--bicubic", "4", "--out", str(out)]) == 0
    before = (out / "screen.json").read_bytes()
    assert main([*args, "--bicubic", "2", "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and (out / "screen.json").read_bytes() == before
    assert main([*args, "--bicubic", "2", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "screen.json").read_text())["source"] == "bicubic x2"


# ---------------------------------------------------------------------------------------------
# precompute records the kind

def test_precompute_records_kind_and_gain(tmp_path, estimator_file):
    from jndplug.precompute import read_manifest, settings_of

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(make_image(32, 32)).save(src / "a.png")
    assert main(["precompute", str(src), "--out", str(tmp_path / "d"), "--estimator", str(estimator_file),
                 "--kind", "directed", "--gain", "0.5", "--device", "cpu"]) == 0
    settings = read_manifest(tmp_path / "d")["settings"]
    assert settings["kind"] == "directed" and settings["gain"] == 0.5
    x = jndplug.to_tensor(make_image(32, 32))
    written = jndplug.to_tensor(np.asarray(Image.open(tmp_path / "d" / "a.png")))
    want = JNDTarget(estimator_file, kind="directed", gain=0.5)(x)
    assert float((written - want).abs().max()) <= 0.5 / 255 + 1e-6
    # every manifest spells out the kind; one without it (made before kind existed) reads as kind jnd
    seed = settings_of(JNDTarget(estimator_file, kind="jnd"))
    assert seed["kind"] == "jnd" and seed["gain"] is None


def test_jndtarget_takes_the_profile_bound_and_sigma_from_its_spec(estimator_file):
    from jndplug.spec import TargetSpec

    x = _images(3)
    target = JNDTarget.from_spec(TargetSpec(estimator=estimator_file, bound="profile", sigma=2.0, strength=1.5))
    bound = 1.5 * JNDProfile().jnd_map(x)
    assert torch.allclose(target.jnd_map(x), bound, atol=1e-6)
    expected = (x + directed_distortion(x, bound, 1.0, sigma=2.0)).clamp(0, 1)
    assert torch.allclose(target(x), expected, atol=1e-6)
    # the bound decides: the same spec bounded by the estimator makes another image
    by_estimator = JNDTarget.from_spec(TargetSpec(estimator=estimator_file, bound="estimator", sigma=2.0,
                                                  strength=1.5))
    assert not torch.allclose(target(x), by_estimator(x), atol=1e-3)
    # the profile is the default bound: named only where another bound is used
    assert target.describe() == "directed JND image (gain 1, sigma 2), strength 1.5"
    assert "gain=1, sigma=2, sur=" in repr(target) and "bound" not in repr(target)
    assert "(gain 1, bound estimator, sigma 2)" in by_estimator.describe()
    assert "bound='estimator', sigma=2," in repr(by_estimator)


@pytest.mark.parametrize("bound", [None, "estimator"])  # the default bound (profile), and the estimator's map
def test_check_values_false_is_honoured_by_the_default_kind(estimator_file, bound):
    from jndplug.spec import TargetSpec

    spec = TargetSpec(estimator=estimator_file, bound=bound)
    x = _images(4)
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(jndplug.errors.JNDPlugValueError, match="NaN"):
        JNDTarget.from_spec(spec)(x)
    # the caller vouches for its inputs: no check (and no device sync), whatever the kind and bound
    out = JNDTarget.from_spec(spec, check_values=False)(x)
    assert out.shape == x.shape


def test_low_precision_inputs_get_a_float32_bound(estimator_file):
    from jndplug.spec import TargetSpec

    # the bound used to be rounded to the input's dtype inside the estimator pass (bf16 steps of ~1/256);
    # the default directed target (bounded by the profile), the directed one bounded by the estimator, kind jnd
    xb = _images(5).to(torch.bfloat16)
    for spec in (TargetSpec(estimator=estimator_file), TargetSpec(estimator=estimator_file, bound="estimator"),
                 TargetSpec(estimator=estimator_file, kind="jnd")):
        target = JNDTarget.from_spec(spec)
        assert torch.equal(target.jnd_map(xb), target.jnd_map(xb.float()).to(torch.bfloat16))
        assert torch.equal(target(xb), target(xb.float()).to(torch.bfloat16))
