"""jndplug.metrics on known cases: identical images, a known offset, a one-pixel shift, BasicSR's own numbers."""

import importlib.util
import json
import math
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from conftest import PYTHON, make_image, noisy
from jndplug.errors import CorruptFileError
from jndplug.imageio import read_image
from jndplug.metrics import MetricSuite, evaluate_folders, psnr, ssim, to_markdown


@pytest.fixture(scope="module")
def photo():
    # a natural photograph (NIQE and the perceptual metrics are fitted to those), 192x192: MS-SSIM needs 161
    return np.ascontiguousarray(data.astronaut()[100:292, 150:342])


@pytest.fixture(scope="module")
def suite():
    return MetricSuite(["psnr", "psnr_y", "ssim", "ssim_y", "ms_ssim", "niqe", "cvvdp", "ssimulacra2", "flip",
                        "stlpips"])


def test_identical_images_score_perfectly(suite, photo):
    values, notes = suite(photo, photo.copy())
    assert not suite.skipped and not notes
    assert values["psnr"] == math.inf and values["psnr_y"] == math.inf
    assert values["ssim"] == pytest.approx(1.0) and values["ssim_y"] == pytest.approx(1.0)
    assert values["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert values["cvvdp"] == pytest.approx(10.0, abs=1e-4)  # JOD of an invisible difference
    assert values["ssimulacra2"] == pytest.approx(100.0)
    assert values["flip"] == pytest.approx(0.0, abs=1e-7)
    assert values["stlpips"] == pytest.approx(0.0, abs=1e-7)
    assert math.isfinite(values["niqe"])  # no reference: a naturalness score of the output alone


def test_every_metric_ranks_noise_as_worse(suite, photo):
    mild, strong = suite(noisy(photo, 3), photo)[0], suite(noisy(photo, 12), photo)[0]
    for name in suite.names:
        better = mild[name] > strong[name] if name in ("psnr", "psnr_y", "ssim", "ssim_y", "ms_ssim", "cvvdp",
                                                       "ssimulacra2") else mild[name] < strong[name]
        assert better, f"{name}: sigma 3 gives {mild[name]}, sigma 12 gives {strong[name]}"


def test_psnr_of_a_known_offset():
    img = np.random.default_rng(0).integers(20, 230, (40, 48, 3)).astype(np.uint8)
    brighter = img + np.uint8(5)
    assert psnr(brighter, img) == pytest.approx(20 * math.log10(255 / 5))
    # +5 on R, G and B moves BT.601 luma by 5 * (65.481 + 128.553 + 24.966) / 255 = 5 * 219 / 255
    assert psnr(brighter, img, y_channel=True) == pytest.approx(20 * math.log10(255 / (5 * 219 / 255)), abs=1e-4)
    # the crop border removes exactly the pixels that differ
    framed = img.copy()
    framed[:3], framed[-3:], framed[:, :3], framed[:, -3:] = 0, 0, 0, 0
    assert psnr(framed, img, crop_border=3) == math.inf
    assert psnr(framed, img, crop_border=2) < 30


def test_psnr_and_ssim_match_basicsr(photo):
    from jndplug.basicsr_compat import install_torchvision_shim

    install_torchvision_shim()
    from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

    out = noisy(photo, 6)

    def bgr(a):  # BasicSR reads files with OpenCV: BGR
        return a[..., ::-1].astype(np.float64)

    for y in (False, True):
        assert psnr(out, photo, 4, y) == pytest.approx(calculate_psnr(bgr(out), bgr(photo), 4, test_y_channel=y),
                                                       abs=1e-9)
        assert ssim(out, photo, 4, y) == pytest.approx(calculate_ssim(bgr(out), bgr(photo), 4, test_y_channel=y),
                                                       abs=1e-9)


def test_one_pixel_shift_is_tolerated_by_stlpips_not_by_psnr(suite, photo):
    ref, shifted = photo[:, 1:-1], photo[:, 2:]
    mse = np.mean((shifted.astype(float) - ref) ** 2)
    same_mse_noise = noisy(ref, math.sqrt(mse))
    shift_values, noise_values = suite(shifted, ref)[0], suite(same_mse_noise, ref)[0]
    assert abs(shift_values["psnr"] - noise_values["psnr"]) < 1.0  # equal fidelity by construction
    assert shift_values["stlpips"] < 0.1 * noise_values["stlpips"]


def test_niqe_prefers_the_clean_photograph(suite, photo):
    assert suite(photo, photo)[0]["niqe"] < suite(noisy(photo, 10), photo)[0]["niqe"]


def test_small_images_get_a_reason_not_a_biased_mean(tmp_path):
    refs, outs = tmp_path / "ref", tmp_path / "out"
    refs.mkdir(), outs.mkdir()
    for i, side in enumerate((200, 64)):
        img = make_image(side, side, seed=i)
        Image.fromarray(img).save(refs / f"{i}.png")
        Image.fromarray(noisy(img, 4)).save(outs / f"{i}.png")
    table = evaluate_folders(outs, refs, ["psnr", "ms_ssim"])
    assert [r["ms_ssim"] is None for r in table["images"]] == [False, True]
    assert table["mean"]["ms_ssim"] is None
    assert "161" in table["notes"]["ms_ssim"]
    assert table["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in table["images"]]))


ALEXNET, VGG16 = "alexnet-owt-7be5be79.pth", "vgg16-397923af.pth"  # torchvision's ImageNet files


def test_lpips_and_dists_without_trunk_are_reported_skipped(tmp_path, torch_hub):
    suite = MetricSuite(["psnr", "lpips", "dists"])
    assert suite.names == ["psnr"]
    # the reason names the exact file to put in place, and where it comes from
    assert f"{torch_hub / ALEXNET} " in suite.skipped["lpips"] and f"{torch_hub / VGG16} " in suite.skipped["dists"]
    assert "https://download.pytorch.org/models/" + VGG16 in suite.skipped["dists"]
    img = make_image(32, 32)
    Image.fromarray(img).save(tmp_path / "a.png")
    table = evaluate_folders(tmp_path, tmp_path, suite=suite)
    text = to_markdown(table)
    assert "lpips: skipped" in text and "dists: skipped" in text


def test_lpips_and_dists_read_their_trunks_from_torchs_hub_cache(torch_hub, photo):
    import torchvision

    torch.manual_seed(0)
    torch_hub.mkdir(parents=True)
    # random trunks stand in for the ImageNet checkpoints (torchvision's layout and file names); the
    # fixture fails the test if torchvision looks for them anywhere else
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), torch_hub / ALEXNET)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), torch_hub / VGG16)
    suite = MetricSuite(["lpips", "dists"])
    assert not suite.skipped
    small = photo[:64, :64]
    same, diff = suite(small, small)[0], suite(noisy(small, 20), small)[0]
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6) and same["dists"] == pytest.approx(0.0, abs=1e-5)
    assert diff["lpips"] > 1e-4 and diff["dists"] > 1e-4
    torch.save({"classifier.weight": torch.zeros(1)}, torch_hub / ALEXNET)
    with pytest.raises(CorruptFileError, match=rf"{ALEXNET}: not torchvision's ImageNet AlexNet: it lacks "
                                              r"features\.0\.weight"):
        MetricSuite(["lpips"])


def test_cli_writes_json_and_markdown(tmp_path, run_cli):
    refs, outs = tmp_path / "ref" / "sub", tmp_path / "out" / "sub"
    refs.mkdir(parents=True), outs.mkdir(parents=True)
    for i in range(2):
        img = make_image(40, 48, seed=i)
        Image.fromarray(img).save(refs / f"img{i}.jpg", quality=98)
        Image.fromarray(noisy(img, 5, seed=i)).save(outs / f"img{i}.png")  # matched by name without extension
    res = run_cli("metrics", tmp_path / "out", tmp_path / "ref", "--metrics", "psnr", "ssim_y", "--crop-border", "2",
                  "--device", "cpu", "--json", tmp_path / "m.json", "--md", tmp_path / "m.md")
    assert res.returncode == 0, res.stderr
    table = json.loads((tmp_path / "m.json").read_text())
    assert [r["file"] for r in table["images"]] == ["sub/img0", "sub/img1"]
    assert table["crop_border"] == 2 and table["metrics"] == ["psnr", "ssim_y"]
    assert "| **mean** |" in (tmp_path / "m.md").read_text()
    single = evaluate_folders(outs / "img0.png", refs / "img0.jpg", ["psnr"])  # two files are simply paired
    expected = psnr(read_image(outs / "img0.png"), read_image(refs / "img0.jpg"))
    assert [r["file"] for r in single["images"]] == ["img0"] and single["mean"]["psnr"] == pytest.approx(expected)

    (outs / "img1.png").unlink()
    res = run_cli("metrics", tmp_path / "out", tmp_path / "ref")
    assert res.returncode == 1 and "sub/img1" in res.stderr and "no output" in res.stderr


def test_niqe_leaves_basicsr_training_unhooked():
    # NIQE needs basicsr importable, not the training adapter: basicsr.train and the loss registry
    # stay as BasicSR made them
    if importlib.util.find_spec("basicsr") is None:
        pytest.skip("basicsr is not installed")
    code = ("import numpy as np, jndplug.metrics as m; "
            "img = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8); "
            "print('niqe', m.MetricSuite(['niqe'])(img, img)[0]['niqe']); "
            "import basicsr.train as t; from basicsr.utils.registry import LOSS_REGISTRY; "
            "print('hooked', [n for n in ('parse_options', 'build_model', 'load_resume_state') "
            "if getattr(t, n).__module__.startswith('jndplug') or hasattr(getattr(t, n), '__wrapped__')]); "
            "print('registered', 'JNDTolerantLoss' in LOSS_REGISTRY)")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert math.isfinite(float(lines[0].split()[1]))
    assert lines[1:] == ["hooked []", "registered False"]


def test_core_imports_without_basicsr_or_compressai():
    code = ("import sys, jndplug, jndplug.metrics, jndplug.bench.sr, jndplug.bench.codec, jndplug.bench.estimator, "
            "jndplug.cli; jndplug.cli.build_parser(); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('basicsr', 'compressai')]; assert not bad, bad")
    subprocess.run([PYTHON, "-c", code], check=True, timeout=120)


def test_the_suite_and_the_study_share_one_display_and_one_call_per_metric():
    # one home for FLIP and SSIMULACRA 2 (and ColorVideoVDP) and the display they model: the metric
    # table and the study's visibility models give the same numbers for the same pair
    pytest.importorskip("flip_evaluator")
    pytest.importorskip("ssimulacra2")
    from jndplug.metrics.perceptual import STUDY_DISPLAY
    from jndplug.study.visibility import CVVDP, FLIP, SSIMULACRA2

    ref = make_image(64, 80, seed=3)
    out = np.clip(ref.astype(int) + np.random.default_rng(1).integers(-12, 13, ref.shape), 0, 255).astype(np.uint8)
    values, _ = MetricSuite(["flip", "ssimulacra2"])(out, ref)
    assert values["flip"] == pytest.approx(FLIP().mean_error(ref, out), rel=1e-6)
    assert values["ssimulacra2"] == pytest.approx(SSIMULACRA2().score(ref, out), rel=1e-9)
    assert STUDY_DISPLAY.viewing_distance_m == FLIP().viewing_distance_m == 0.6
    if importlib.util.find_spec("pycvvdp") is not None:
        model = CVVDP()
        assert (model.resolution, model.diagonal_inches) == (STUDY_DISPLAY.resolution, STUDY_DISPLAY.diagonal_inches)
