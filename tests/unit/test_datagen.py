"""Distortion generation: tiny images, autoencoders trained for two steps."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from conftest import make_image

from jndplug.datagen import AutoencoderSpec, BuildSettings, build_dataset, load_autoencoder, psnr_ladder
from jndplug.datagen import build as build_module
from jndplug.datagen.levels import form_levels
from jndplug.datagen.recipes import FeatureNetwork
from jndplug.datagen.photos import crop_16_9, target_size
from jndplug.imageio import read_image, write_image

FAST = dict(steps=2, patch=48, batch=2, train_images=3, min_side=32, use_stlpips=False)


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "city" / "a.png", make_image(60, 100, seed=1))  # cropped to 100x56
    write_image(root / "city" / "b.jpg", make_image(72, 96, seed=2))   # cropped to 96x54
    write_image(root / "nature" / "deep" / "c.png", make_image(54, 96, seed=3))
    return root


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _files(root):
    """Every output file's bytes; for autoencoders their tensors (the metadata holds training time)."""
    from safetensors.torch import load_file

    out = {}
    for p in root.rglob("*"):
        if p.is_file() and p.name != "manifest.json":
            key = p.relative_to(root).as_posix()
            out[key] = ({k: v.numpy().tobytes() for k, v in load_file(p).items()} if p.suffix == ".safetensors"
                        else p.read_bytes())
    return out


def test_layout_manifest_and_monotonic_levels(src, tmp_path):
    out = tmp_path / "ds"
    summary = build_dataset(src, out, progress=False, **FAST)
    assert summary["images"] == summary["built"] == 3 and summary["skipped"] == []
    doc = json.loads((out / "manifest.json").read_text())
    for key in ("format", "settings", "seed", "versions", "distortion_measure", "level_psnr_targets",
                "autoencoders", "feature_network", "images", "skipped", "summary"):
        assert key in doc
    assert doc["feature_network"]["weights"].startswith("random")
    assert len(doc["autoencoders"]) == 9
    for ae in doc["autoencoders"]:
        model, info = load_autoencoder(out / ae["file"])
        assert model.spec.to_dict() == ae["spec"] and info["steps"] == 2
    ids = {r["id"]: r for r in doc["images"]}
    assert set(ids) == {"city_a", "city_b", "nature_c"}
    assert ids["nature_c"]["category"] == "nature" and ids["city_a"]["category"] == "city"
    assert ids["city_a"]["size"] == [100, 56] and ids["city_b"]["crop_box"] == [0, 9, 96, 63]
    for iid, r in ids.items():
        original = read_image(out / "originals" / f"{iid}.png")
        assert original.shape == (r["size"][1], r["size"][0], 3)
        assert (out / r["contact_sheet"]).is_file()
        assert [e["level"] for e in r["levels"]] == list(range(1, 10))
        measured = [_psnr(original, read_image(out / "distorted" / iid / f"{k}.png")) for k in range(1, 10)]
        assert all(a > b for a, b in zip(measured, measured[1:])), measured  # strictly more distorted
        for e, m in zip(r["levels"], measured):
            assert e["psnr"] == pytest.approx(m, abs=1e-3)
            assert 0 < e["ssim"] <= 1 and 0 < e["ms_ssim"] <= 1
            assert e["autoencoder"].startswith("ae") and e["loss_recipe"]
        assert r["monotonic"] and not r["order"]["violations"]
        # calibrated onto the ladder: both ends of it are reached
        assert measured[0] == pytest.approx(44.0, abs=0.5) and measured[-1] == pytest.approx(22.0, abs=0.5)


def test_resume_after_interruption_matches_a_fresh_run(src, tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"
    build_dataset(src, fresh, progress=False, **FAST)

    out = tmp_path / "resumed"
    real_write, calls = build_module.write_image, []

    def interrupted_write(path, array):
        calls.append(path)
        if len(calls) == 14:  # second image, part-way through its levels
            raise KeyboardInterrupt
        real_write(path, array)

    monkeypatch.setattr(build_module, "write_image", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(src, out, progress=False, **FAST)
    monkeypatch.setattr(build_module, "write_image", real_write)
    assert not list(out.rglob("*.tmp"))
    assert sorted(p.stem for p in (out / "records").glob("*.json")) == ["city_a"]
    assert [r["id"] for r in json.loads((out / "manifest.json").read_text())["images"]] == ["city_a"]
    first = {p: p.stat().st_mtime_ns for p in (out / "distorted" / "city_a").iterdir()}

    summary = build_dataset(src, out, progress=False, **FAST)
    assert summary["already_done"] == 1 and summary["built"] == 2
    assert {p: p.stat().st_mtime_ns for p in first} == first  # finished image untouched
    assert _files(out) == _files(fresh)  # resumed run == uninterrupted run, byte for byte
    assert build_dataset(src, out, progress=False, **FAST)["built"] == 0


def test_deterministic_for_a_seed(src, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    family = [AutoencoderSpec("tiny-skip", 8, 1, 8, (0,), {"l1": 1.0}, 3),
              AutoencoderSpec("tiny-noskip", 8, 2, 4, (), {"l2": 1.0, "ms_ssim": 0.5, "feature": 0.1}, 3)]
    for out, seed in ((a, 5), (b, 5), (c, 6)):
        build_dataset(src, out, family=family, progress=False, **{**FAST, "seed": seed})
    assert _files(a) == _files(b)
    assert _files(a)["autoencoders/tiny-skip.safetensors"] != _files(c)["autoencoders/tiny-skip.safetensors"]
    assert _files(a)["distorted/city_a/5.png"] != _files(c)["distorted/city_a/5.png"]


def test_bad_sources_are_reported_not_fatal(src, tmp_path, caplog):
    (src / "city" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    write_image(src / "city" / "tiny.png", make_image(20, 30, seed=4))
    gray = make_image(54, 96, seed=5)[..., 0]
    from PIL import Image
    Image.fromarray(gray, "L").save(src / "nature" / "gray.png")
    Image.fromarray(np.dstack([make_image(54, 96, seed=6), np.full((54, 96), 128, np.uint8)]), "RGBA").save(
        src / "nature" / "alpha.png")
    out = tmp_path / "ds"
    with caplog.at_level(logging.WARNING, logger="jndplug.datagen"):
        summary = build_dataset(src, out, progress=False, **FAST)
    reasons = {s["source"].rsplit("/", 1)[-1]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"broken.png", "tiny.png"}
    assert reasons["broken.png"].startswith("unreadable") and "too small" in reasons["tiny.png"]
    assert "minimum 32" in reasons["tiny.png"]
    assert summary["built"] == 5
    doc = json.loads((out / "manifest.json").read_text())
    assert {s["source"] for s in doc["skipped"]} == {s["source"] for s in summary["skipped"]}
    recs = {r["id"]: r for r in doc["images"]}
    assert any("grayscale" in w for w in recs["nature_gray"]["warnings"])
    assert any("alpha" in w for w in recs["nature_alpha"]["warnings"])
    assert "grayscale" in caplog.text and "broken.png" in caplog.text
    assert read_image(out / "distorted" / "nature_gray" / "9.png").shape == (54, 96, 3)


def test_user_level_function(src, tmp_path):
    def fading(image, level):  # weakest at level 9: out of order on purpose
        return image * (1 - 0.02 * (10 - level))

    out = tmp_path / "ds"
    summary = build_dataset(src, out, level_fn=fading, progress=False, **FAST)
    assert summary["built"] == 3 and not summary["not_monotonic"]
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["autoencoders"] == [] and not (out / "autoencoders").exists()
    assert doc["settings"]["level_source"].startswith("callable ") and "fading" in doc["settings"]["level_source"]
    r = doc["images"][0]
    assert r["order"]["reordered"]
    assert [e["level_fn_level"] for e in r["levels"]] == list(range(9, 0, -1))
    psnrs = [e["psnr"] for e in r["levels"]]
    assert all(a > b for a, b in zip(psnrs, psnrs[1:]))

    def wrong(image, level):
        return image[:, :10]

    with pytest.raises(ValueError, match="returned shape"):
        build_dataset(src, tmp_path / "bad", level_fn=wrong, progress=False, **FAST)


def test_rerun_with_other_settings_is_refused(src, tmp_path):
    out = tmp_path / "ds"
    build_dataset(src, out, level_fn=lambda x, k: x * (1 - 0.02 * k), progress=False, **FAST)
    with pytest.raises(ValueError, match="seed"):
        build_dataset(src, out, level_fn=lambda x, k: x * (1 - 0.02 * k), progress=False, **{**FAST, "seed": 1})


def test_a_run_that_built_nothing_does_not_bind_the_corrected_rerun(src, tmp_path):
    out = tmp_path / "ds"
    darker = lambda x, k: x * (1 - 0.02 * k)  # noqa: E731
    first = build_dataset(src, out, level_fn=darker, progress=False, **{**FAST, "min_side": 500})
    assert first["built"] == 0 and len(first["skipped"]) == 3  # every source under the minimum
    fixed = build_dataset(src, out, level_fn=darker, progress=False, **FAST)
    assert fixed["built"] == 3
    assert json.loads((out / "manifest.json").read_text())["settings"]["min_side"] == 32
    # once something is built, the settings bind again
    with pytest.raises(ValueError, match="min_side"):
        build_dataset(src, out, level_fn=darker, progress=False, **{**FAST, "min_side": 40})


def test_order_repair_and_report():
    x = make_image(48, 64, seed=7)
    t = torch.from_numpy(x).permute(2, 0, 1).float() / 255
    same = (t * 0.9).clamp(0, 1)
    levels, report = form_levels(x, [same, same, (t * 0.8).clamp(0, 1)], None)
    psnrs = [lv.psnr for lv in levels]
    assert all(a > b for a, b in zip(psnrs, psnrs[1:])) and report["repairs"][0]["level"] == 1
    levels, report = form_levels(x, [t, t], None)  # identical to the original: nothing to repair with
    assert report["violations"]
    assert psnr_ladder(9) == pytest.approx([44 - 2.75 * k for k in range(9)])


def test_cli_build_and_errors(src, tmp_path, capsys):
    from jndplug.cli import main

    fn = tmp_path / "mylevels.py"
    fn.write_text("def darker(image, level):\n    return image * (1 - 0.03 * level)\n")
    out = tmp_path / "ds"
    rc = main(["datagen", "--src", str(src), "--out", str(out), "--min-side", "32",
               "--level-fn", f"{fn}:darker", "--no-progress", "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0 and "3 images (3 built now" in text and "level  PSNR" in text
    assert main(["datagen", "--src", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "source folder not found" in capsys.readouterr().err
    assert main(["datagen", "--src", str(src), "--out", str(tmp_path / "x"),
                 "--level-fn", "nosuchmodule_xyz:f"]) == 1
    assert "cannot import" in capsys.readouterr().err


def test_crop_and_downscale_geometry():
    assert crop_16_9(481, 321) == (0, 25, 481, 296)
    assert crop_16_9(321, 481) == (0, 150, 321, 331)
    assert crop_16_9(2000, 1000) == (111, 0, 1889, 1000)
    assert target_size(481, 271, (1920, 1080), None) == (481, 271)  # never upscales
    assert target_size(3840, 2160, (1920, 1080), None) == (1920, 1080)
    assert target_size(1024, 576, (1920, 1080), 512) == (512, 288)


def test_feature_network_uses_bundled_stlpips_vgg16():
    from jndplug.datagen.recipes import _stlpips_vgg_file

    path = _stlpips_vgg_file()
    if path is None:
        pytest.skip("stlpips-pytorch is not installed")
    net = FeatureNetwork()
    assert net.source["weights"].startswith("stlpips-pytorch") and len(net.source["sha256"]) == 64
    state = torch.load(path, map_location="cpu", weights_only=True)
    first = next(v for k, v in net.trunk.state_dict().items() if k.endswith("weight"))
    assert torch.equal(first, state["net.slice1.0.weight"])
    assert [f.shape[1] for f in net(torch.rand(1, 3, 32, 32))] == [64, 128, 256]
    random_net = FeatureNetwork(use_stlpips=False)
    assert random_net.source["weights"].startswith("random")
    assert torch.equal(random_net.trunk.state_dict()["features_0.weight"],
                       FeatureNetwork(use_stlpips=False).trunk.state_dict()["features_0.weight"])


def test_settings_are_checked(src, tmp_path):
    with pytest.raises(ValueError, match="PSNR range"):
        build_dataset(src, tmp_path / "a", psnr_range=(20, 30), progress=False, **FAST)
    with pytest.raises(TypeError, match="unknown setting"):
        build_dataset(src, tmp_path / "a", colour="red", progress=False)
    with pytest.raises(ValueError, match="patch size"):
        build_dataset(src, tmp_path / "a", progress=False, **{**FAST, "patch": 200})
    assert BuildSettings().min_side == 160


def test_module_entry_point():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "jndplug.datagen", "build", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--level-fn" in r.stdout and "--max-side" in r.stdout


def _textured_half(h=48, w=64, seed=0):
    """Flat mid-grey on the left, strong texture on the right."""
    rng = np.random.default_rng(seed)
    x = torch.full((3, h, w), 0.5)
    x[:, :, w // 2:] = torch.from_numpy(rng.uniform(0.2, 0.8, (1, h, w - w // 2))).float().expand(3, -1, -1)
    return x


def test_shaping_removes_the_mean_puts_distortion_in_texture_and_scales_chroma():
    from jndplug.datagen.shaping import shape_distortion

    x = _textured_half()
    rng = np.random.default_rng(1)
    d = torch.from_numpy(rng.normal(0, 0.02, x.shape)).float() + torch.tensor([0.03, -0.01, 0.0]).view(3, 1, 1)
    cand = x + d
    assert torch.allclose(shape_distortion(x, cand, remove_mean=False, masking=0, chroma=1), cand, atol=1e-6)
    plain = shape_distortion(x, cand, remove_mean=True, masking=0, chroma=1) - x
    assert plain.mean(dim=(1, 2)).abs().max() < 1e-6
    shaped = shape_distortion(x, cand) - x  # the defaults: mean removed, masking power 1
    assert shaped.mean(dim=(1, 2)).abs().max() < 1e-6
    w = x.shape[-1] // 2
    flat, texture = shaped[:, :, 2:w - 2].abs().mean(), shaped[:, :, w + 2:].abs().mean()
    assert texture > 2 * flat, (float(flat), float(texture))
    luma_only = shape_distortion(x, cand, remove_mean=False, masking=0, chroma=0) - x
    ycc = torch.einsum("ij,jhw->ihw", torch.tensor([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]),
                       luma_only)
    assert ycc.abs().max() < 1e-5 and luma_only.abs().max() > 0.01
    with pytest.raises(ValueError, match=">= 0"):
        shape_distortion(x, cand, masking=-1)


def test_levels_carry_no_mean_shift_by_default_and_keep_it_on_request(src, tmp_path):
    def shifts(out):
        worst = 0.0
        for iid in ("city_a", "city_b", "nature_c"):
            o = read_image(out / "originals" / f"{iid}.png").astype(np.float64)
            for k in range(1, 10):
                lv = read_image(out / "distorted" / iid / f"{k}.png").astype(np.float64)
                worst = max(worst, float(np.abs((lv - o).mean(axis=(0, 1))).max()))
        return worst

    build_dataset(src, tmp_path / "ds", progress=False, **FAST)
    doc = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert doc["settings"]["remove_mean"] is True and doc["settings"]["masking"] == 1.0
    entry = doc["images"][0]["levels"][0]
    assert entry["raw_psnr"] > 0 and entry["raw_mean_shift"] >= 0
    assert doc["summary"]["per_level"][0]["raw_psnr_mean"] > 0  # each member's raw strength, reported
    build_dataset(src, tmp_path / "kept", progress=False, remove_mean=False, **FAST)
    # untrained autoencoders shift colours a lot; removing the shift leaves only clamping/rounding
    assert shifts(tmp_path / "ds") < 1.0 < shifts(tmp_path / "kept")


def test_feature_loss_members_can_train_for_other_step_counts():
    from jndplug.datagen import default_family

    fam = default_family(400, 200)
    assert [s.steps for s in fam if "feature" in s.loss] == [200, 200, 200]
    assert {s.steps for s in fam if "feature" not in s.loss} == {400}
    assert default_family(300) == default_family(300, None)
    with pytest.raises(ValueError, match="steps"):
        BuildSettings(feature_steps=-1).check()
