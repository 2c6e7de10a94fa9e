"""The truth report's measurements on hand-made images whose answers are known."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from conftest import make_image
from jndplug.bench import truth


def _photo(h=96, w=128, seed=0):
    return make_image(h, w, seed).astype(np.float64) / 255.0


def _noise(h=128, w=128, seed=0):
    return np.random.default_rng(seed).uniform(0.2, 0.8, (h, w, 3))


def _blur(x, sigma):
    return np.stack([gaussian_filter(x[..., c], sigma, mode="reflect") for c in range(3)], axis=-1)


def _bt601_chroma_share(shift):
    # the published BT.601 YCbCr rows, written out independently of the module's matrix
    y = 0.299 * shift[0] + 0.587 * shift[1] + 0.114 * shift[2]
    cb = -0.168736 * shift[0] - 0.331264 * shift[1] + 0.5 * shift[2]
    cr = 0.5 * shift[0] - 0.418688 * shift[1] - 0.081312 * shift[2]
    return (cb**2 + cr**2) / (y**2 + cb**2 + cr**2)


@pytest.mark.parametrize("shift", [(6, 0, 0), (-7.0, -0.8, -0.9), (0, 0, 5)])
def test_a_pure_per_channel_shift_is_all_mean_shift_with_its_constructed_chroma_share(shift):
    x = _photo()
    s = np.array(shift) / 255
    y = x + s
    np.testing.assert_allclose(truth.mean_shift(x, y) * 255, shift, atol=1e-9)
    assert truth.mean_shift_share(x, y) == pytest.approx(1.0)
    assert truth.chroma_share(x, y) == pytest.approx(_bt601_chroma_share(s), rel=1e-4)


def test_a_grey_shift_has_no_chroma_and_a_luma_free_distortion_is_all_chroma():
    x = _photo()
    assert truth.chroma_share(x, x + 4 / 255) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(1)
    # (0.587, -0.299, 0) has zero BT.601 luma: its energy lies entirely in Cb and Cr
    d = rng.normal(0, 0.01, x.shape[:2])[..., None] * np.array([0.587, -0.299, 0.0])
    assert truth.chroma_share(x, x + d) == pytest.approx(1.0)


def test_zero_mean_noise_has_almost_no_mean_shift_share_and_no_distortion_has_no_shares():
    x = _photo()
    noise = np.random.default_rng(2).normal(0, 0.02, x.shape)
    noise -= noise.mean(axis=(0, 1))
    assert truth.mean_shift_share(x, x + noise) == pytest.approx(0.0, abs=1e-12)
    # a cast with the noise's energy: half of the total (the cross term vanishes)
    cast = np.sqrt((noise**2).mean()) * np.ones(3)
    assert truth.mean_shift_share(x, x + noise + cast) == pytest.approx(0.5)
    assert truth.mean_shift_share(x, x) is None and truth.chroma_share(x, x) is None


def test_a_blur_removes_high_frequencies_and_keeps_low_ones():
    x = _noise()
    ratios = truth.band_power_ratios(x, _blur(x, 1.0))
    assert len(ratios) == len(truth.BAND_NAMES) == 4
    assert ratios[0] > 0.85 and ratios[-1] < 0.15
    assert all(a > b for a, b in zip(ratios, ratios[1:]))


def test_sharpening_adds_high_frequencies_and_identity_changes_nothing():
    x = _noise(seed=3)
    sharp = x + 1.0 * (x - _blur(x, 1.0))
    ratios = truth.band_power_ratios(x, sharp)
    assert ratios[-1] > 1.5 and ratios[0] < ratios[-1]
    assert truth.band_power_ratios(x, x) == pytest.approx([1.0] * 4)
    # a global cast is not detail: the mean is removed before the spectrum
    assert truth.band_power_ratios(x, x + 0.05) == pytest.approx([1.0] * 4)


def test_local_std_of_flat_and_checkerboard_windows():
    assert np.all(truth.local_std(np.full((20, 20), 0.3)) == 0)
    board = (np.indices((21, 21)).sum(axis=0) % 2).astype(float)
    inner = truth.local_std(board)[3:-3, 3:-3]
    p = 25 / 49  # a 7x7 window of a checkerboard holds 25 of one colour and 24 of the other
    np.testing.assert_allclose(inner, np.sqrt(p * (1 - p)), rtol=1e-9)


def _flat_and_textured(h=64, w=96, seed=4):
    x = np.full((h, w, 3), 0.5)
    x[:, w // 2:] += np.random.default_rng(seed).uniform(-0.3, 0.3, (h, w - w // 2, 1))
    return x


def test_a_distortion_that_follows_local_contrast_correlates_with_it():
    x = _flat_and_textured()
    s = truth.local_std(truth.luma(x))
    exact = truth.masking(x, s)
    assert exact["spearman"] == pytest.approx(1.0)
    assert exact["flat"] == pytest.approx(0.0, abs=1e-6) and exact["textured"] > 0.05
    assert truth.masking(x, 1 - s)["spearman"] == pytest.approx(-1.0)


def test_a_distortion_roughly_proportional_to_local_contrast_correlates_highly():
    # texture whose amplitude grows from left to right, distortion = local std within +-20%
    h, w = 64, 96
    amp = np.linspace(0, 0.3, w)[None, :, None]
    x = 0.5 + amp * np.random.default_rng(7).uniform(-1, 1, (h, w, 1)) * np.ones(3)
    s = truth.local_std(truth.luma(x))
    noisy = s * np.random.default_rng(5).uniform(0.8, 1.2, s.shape)
    res = truth.masking(x, noisy)
    assert res["spearman"] > 0.9 and res["textured"] > 3 * res["flat"]


def test_a_distortion_blind_to_contrast_does_not_correlate():
    x = _flat_and_textured()
    m = np.random.default_rng(6).uniform(0, 0.02, x.shape[:2])
    res = truth.masking(x, m)
    assert abs(res["spearman"]) < 0.05
    assert res["flat"] == pytest.approx(res["textured"], rel=0.05)
    assert truth.masking(x, np.full(x.shape[:2], 0.01))["spearman"] is None


def test_mismatched_inputs_are_refused():
    x = _photo()
    with pytest.raises(ValueError, match="shapes differ"):
        truth.chroma_share(x, x[1:])
    with pytest.raises(ValueError, match="map"):
        truth.masking(x, np.zeros((3, 3)))


# --- `jndplug bench estimator --parts truth` on tiny images


@pytest.fixture
def photos(tmp_path):
    from PIL import Image

    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(make_image(96, 128, seed=40)).save(root / "a.png")
    Image.fromarray(make_image(96, 128, seed=41)).save(root / "sub" / "b.png")
    return root


def test_truth_part_writes_its_report_resumes_and_refuses_other_settings(photos, estimator_file, tmp_path, capsys,
                                                                         run_cli):
    import json

    from PIL import Image

    import jndplug
    from jndplug.bench.truth_report import load_photo
    from jndplug.cli import main

    out = tmp_path / "out"
    args = ["bench", "estimator", "--parts", "truth", "--weights", "default", estimator_file, "--images", photos,
            "--max-side", "64", "--out", out]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "estimator_results.json").read_text())
    rows = report["truth"]
    assert [r["label"] for r in rows] == ["default", "random-unet"]
    assert rows[0]["sur_effective"] == 0.75 and rows[0]["skipped"] == {}
    for r in rows:
        assert [i["file"] for i in r["per_image"]] == ["a.png", "sub/b.png"]
        for i in r["per_image"]:
            assert (i["width"], i["height"]) == (64, 48)
            assert i["ssimulacra2"] < 100 and 0 < i["flip"] < 1 and 0 < i["cvvdp"] <= 10
            assert 0 <= i["chroma_share"] <= 1 and 0 <= i["mean_shift_share"] <= 1
            assert i["max_mean_shift"] == pytest.approx(max(abs(v) for v in i["mean_shift_rgb"]))
            assert all(v > 0 for v in i["band_ratios"]) and -1 <= i["spearman"] <= 1
            assert 0 <= i["flat"] and 0 <= i["textured"]
        s = r["summary"]
        assert s["ssimulacra2"] == pytest.approx(np.mean([i["ssimulacra2"] for i in r["per_image"]]))
        assert s["ssimulacra2_min"] == min(i["ssimulacra2"] for i in r["per_image"])
    # the report's numbers are those of the estimator's own JND image (kind="jnd"), 8-bit, on the
    # downscaled photo
    x8 = load_photo(photos / "sub" / "b.png", 64)
    x = jndplug.to_tensor(x8)
    target = jndplug.JNDTarget("default", kind="jnd")
    y8 = jndplug.to_array(target(x))
    got = rows[0]["per_image"][1]
    np.testing.assert_allclose(got["mean_shift_rgb"], truth.mean_shift(x8 / 255, y8 / 255) * 255, atol=1e-6)
    assert got["chroma_share"] == pytest.approx(truth.chroma_share(x8 / 255, y8 / 255))
    assert got["spearman"] == pytest.approx(truth.masking(x8 / 255, target.jnd_map(x)[0].numpy())["spearman"])
    md = (out / "estimator_results.md").read_text()
    assert "| default | unet | 0.75 | 1 | 2 |" in md and "| sub/b.png |" in md
    assert Image.open(out / "truth_bands.png").size[0] > 100

    # reruns in this process (the same entry point, without a second interpreter start-up)
    capsys.readouterr()
    assert main([str(a) for a in args]) == 0
    assert capsys.readouterr().err.count("done earlier, skipped") == 2
    assert json.loads((out / "estimator_results.json").read_text())["truth"] == rows
    before = (out / "truth" / "default" / "result.json").read_text()
    assert main([str(a) for a in args] + ["--strength", "0.5"]) == 1
    assert "other settings (strength: 1.0 there, 0.5 now)" in capsys.readouterr().err
    assert (out / "truth" / "default" / "result.json").read_text() == before


def test_truth_part_reports_a_missing_metric_as_skipped(photos, estimator_file, monkeypatch, tmp_path):
    import json
    import sys

    from jndplug.cli import main

    monkeypatch.setitem(sys.modules, "pycvvdp", None)  # as if ColorVideoVDP were not installed
    out = tmp_path / "out"
    assert main(["bench", "estimator", "--parts", "truth", "--weights", "default", str(estimator_file),
                 "--images", str(photos), "--max-side", "64", "--limit", "1", "--strength", "0", "--sur", "0.9",
                 "--metrics", "cvvdp", "ssimulacra2", "--out", str(out)]) == 0
    report = json.loads((out / "estimator_results.json").read_text())
    row = report["truth"][0]
    # --sur reaches the SUR-conditioned default; the unconditioned file runs as it is, and the notes say so
    assert row["sur_effective"] == 0.9 and report["truth"][1]["sur_effective"] is None
    assert "applies only to SUR-conditioned" in report["notes"][0]
    assert "needs cvvdp" in row["skipped"]["cvvdp"] and row["summary"]["cvvdp"] is None
    # strength 0: the JND image is the original, so there is no distortion to share out
    s = row["summary"]
    assert s["ssimulacra2"] == pytest.approx(100) and s["max_mean_shift"] == 0
    assert s["chroma_share"] is None and s["band_ratios"] == pytest.approx([1.0] * 4)
    md = (out / "estimator_results.md").read_text()
    assert "- cvvdp: skipped: needs cvvdp" in md and "n/a" in md


def test_truth_part_needs_photos_and_says_so(tmp_path, capsys):
    import json

    from jndplug.cli import main

    assert main(["bench", "estimator", "--parts", "truth", "--weights", "default", "--out", str(tmp_path / "a")]) == 0
    assert "truth: not run" in json.loads((tmp_path / "a" / "estimator_results.json").read_text())["notes"][0]
    (tmp_path / "empty").mkdir()
    assert main(["bench", "estimator", "--parts", "truth", "--weights", "default", "--images",
                 str(tmp_path / "empty"), "--out", str(tmp_path / "b")]) == 1
    assert "no image files" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main(["bench", "estimator", "--parts", "truth", "--weights", "default", "--images",
                 str(tmp_path / "empty"), "--sur", "1.5", "--out", str(tmp_path / "b")]) == 1
    assert "--sur: must be in (0, 1], got 1.5" in capsys.readouterr().err
