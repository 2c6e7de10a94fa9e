"""Patch-level JND profile: components with known answers, per-pixel maps, structural learning."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from jndplug.models.jnd_profile import (JNDProfile, contrast_masking, decompose, is_profile_file, load_profile,
                                luminance_adaptation, namm, save_profile)
from jndplug.patches.profile import train_structural_visibility
from jndplug.patches import build_patch_dataset, read_collection
from jndplug.target import JNDTarget


pytestmark = pytest.mark.usefixtures("one_thread")


def _grey(value, h=24, w=24):
    return torch.full((1, 3, h, w), value / 255.0)


def test_decomposition_of_known_patches():
    checker = torch.tensor([[100.0, 140.0], [140.0, 100.0]]).repeat(10, 10)
    mean, strength, structure = decompose(checker)
    assert float(mean) == pytest.approx(120) and float(strength) == pytest.approx(20)
    assert set(structure.unique().tolist()) == {-1.0, 1.0}
    patches = torch.rand(5, 20, 20) * 255
    mean, strength, structure = decompose(patches)
    assert torch.allclose(mean[:, None, None] + strength[:, None, None] * structure, patches, atol=1e-3)
    assert torch.allclose(structure.mean((1, 2)), torch.zeros(5), atol=1e-5)
    assert torch.allclose(structure.pow(2).mean((1, 2)), torch.ones(5), atol=1e-4)
    mean, strength, structure = decompose(torch.full((20, 20), 77.0))
    assert float(strength) == 0 and not structure.any()  # a flat patch has no structure


def test_luminance_adaptation_and_contrast_masking_values():
    la = luminance_adaptation(torch.tensor([0.0, 127.0, 255.0]))
    assert la.tolist() == pytest.approx([20.0, 3.0, 6.0])  # 17 + 3; the minimum; 3/128 * 128 + 3
    dark = luminance_adaptation(torch.linspace(0, 127, 50))
    assert (dark[1:] < dark[:-1]).all()
    cm = contrast_masking(torch.tensor([0.0, 26.0]))
    # at s = 26: 0.115 * 16 * 26**2.4 / (2 * 26**2) = 0.92 * 26**0.4
    assert cm.tolist() == pytest.approx([0.0, 0.92 * 26 ** 0.4])
    s = torch.linspace(0, 100, 50)
    assert (contrast_masking(s)[1:] > contrast_masking(s)[:-1]).all()
    assert namm(torch.tensor(3.0), torch.tensor(0.0)) == 3.0
    assert float(namm(torch.tensor(3.0), torch.tensor(3.0))) == pytest.approx(6 - 0.3 * 3)


def test_untrained_profile_is_the_namm_model():
    profile = JNDProfile()
    for value, expected in ((127, 3.0), (0, 20.0), (255, 6.0)):
        m = profile.jnd_map(_grey(value))
        assert m.shape == (1, 1, 24, 24)
        assert torch.allclose(m * 255, torch.full_like(m, expected), atol=1e-3)
    # window covering a whole 20x20 image at its centre pixel: the patch-level components
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        per_pixel, per_patch = profile.components(x), profile.patch_components(x)
    for key in ("mean", "strength", "luminance_adaptation", "contrast_masking", "structural_factor"):
        assert float(per_pixel[key][0, 0, 10, 10]) == pytest.approx(float(per_patch[key][0, 0, 10, 10]), rel=1e-4)
    # a textured region tolerates more than a flat one of the same mean
    flat = _grey(120, 40, 40)
    textured = flat.clone()
    textured[..., ::2, :] += 40 / 255
    assert profile.jnd_map(textured).mean() > profile.jnd_map(flat).mean()
    # one image in, one map out, in the input's dtype; normalisation as JNDTarget's
    single = profile.jnd_map(textured[0].double(), normalize=True)
    assert single.shape == (1, 40, 40) and single.dtype == torch.float64 and float(single.max()) == pytest.approx(1)


def _texture_images(root):
    """Stripes and random binary texture with the same mean and contrast, plus a fixed noise."""
    (root / "img").mkdir(parents=True)
    rows = ["reference,distorted,category,image_id"]
    for i in range(12):
        rng = np.random.default_rng(i)
        if i % 2:
            base = 128 + 40 * np.sign(np.sin(np.pi * (np.arange(40) + 0.5 + i) / 2))[None, :].repeat(40, 0)
        else:
            base = 128 + 40 * rng.choice([-1.0, 1.0], (40, 40))
        ref = np.repeat(base[..., None], 3, 2).astype(np.uint8)
        dist = np.clip(ref + rng.normal(0, 8, ref.shape), 0, 255).round().astype(np.uint8)
        Image.fromarray(ref).save(root / "img" / f"r{i}.png")
        Image.fromarray(dist).save(root / "img" / f"d{i}.png")
        # the same error is seen on regular stripes and hidden in the irregular texture
        rows.append(f"img/r{i}.png,img/d{i}.png,{'slight_flicker' if i % 2 else 'no_flicker'},t{i}")
    (root / "judgements.csv").write_text("\n".join(rows) + "\n")
    data = root / "patches"
    build_patch_dataset(read_collection(f"csv:{root / 'judgements.csv'}"), data, fusions=("blend",), alpha=0.0,
                        progress=False)
    return data


def test_structural_visibility_learns_from_judgements(tmp_path):
    data = _texture_images(tmp_path)
    cfg = {"epochs": 25, "batch": 16, "lr": 3e-3, "hidden": 8, "split": [0.5, 0.25, 0.25], "seed": 0}
    profile, info = train_structural_visibility(data, cfg, progress=False)
    hist = info["history"]
    # the untrained profile cannot tell the textures apart (same mean and strength); the learned one can
    assert hist[0]["val_accuracy"] <= 0.75 and max(h["val_accuracy"] for h in hist) == 1.0
    stripes = torch.full((1, 3, 20, 20), 128 / 255)
    stripes[..., 1::2] += 40 / 255
    stripes[..., ::2] -= 40 / 255
    noise = 128 / 255 + 40 / 255 * torch.from_numpy(np.random.default_rng(99).choice([-1.0, 1.0], (1, 1, 20, 20)))
    noise = noise.float().expand(1, 3, 20, 20)
    with torch.no_grad():
        f_stripes = profile.patch_components(stripes)["structural_factor"].mean()
        f_noise = profile.patch_components(noise)["structural_factor"].mean()
    assert f_noise > f_stripes
    path = save_profile(profile, tmp_path / "profile.safetensors", info)
    assert is_profile_file(path) and not is_profile_file(tmp_path / "judgements.csv")
    loaded = load_profile(path)
    assert loaded.provenance["best_epoch"] == info["best_epoch"]
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.jnd_map(x), profile.jnd_map(x))


def test_profile_errors(tmp_path, estimator_file):
    with pytest.raises(ValueError, match="window"):
        JNDProfile(window=1)
    with pytest.raises(ValueError, match="not a JND profile"):
        load_profile(estimator_file)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        JNDProfile().jnd_map(torch.full((1, 3, 20, 20), 3.0))


def test_profile_and_estimator_maps_share_units():
    """Both providers answer jnd_map with [B,1,H,W] magnitudes in [0,1] units."""
    x = torch.rand(2, 3, 24, 24)

    class Brighter(torch.nn.Module):
        def forward(self, t):
            return t + 2 / 255

    est = JNDTarget(Brighter(), kind="jnd").jnd_map(x.clamp(0, 0.9))
    prof = JNDProfile().jnd_map(x)
    assert est.shape == prof.shape == (2, 1, 24, 24)
    assert torch.allclose(est, torch.full_like(est, 2 / 255), atol=1e-6)
    assert 0 < float(prof.min()) and float(prof.max()) < 1 and math.isfinite(float(prof.sum()))


def test_jnd_profile_command_writes_the_profile(tmp_path, run_cli):
    data = _texture_images(tmp_path)
    out = tmp_path / "profile.safetensors"
    res = run_cli("jnd-profile", data, "--out", out, "--epochs", "2", "--batch", "16", "--seed", "0")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith(f"-> {out}") and is_profile_file(out)
    assert len(load_profile(out).provenance["history"]) == 2


def _study_dataset(tmp_path, scale=2.0, slope=4.0, n_images=6, side=40):
    """A datagen-shaped dataset whose labels follow the image-level model exactly: the panel notices a
    level with probability sigmoid(slope * log r), r the Minkowski-4 mean of the luma change over
    ``scale`` times the analytic profile."""
    import json

    from jndplug.imageio import read_image, to_tensor

    root = tmp_path / "ds"
    (root / "originals").mkdir(parents=True)
    profile, g, images = JNDProfile(), torch.Generator().manual_seed(0), {}
    for i in range(n_images):
        x = 0.25 + 0.5 * torch.nn.functional.avg_pool2d(torch.rand(1, 3, side, side, generator=g), 5, 1, 2)
        noise = torch.randn(1, 1, side, side, generator=g)
        Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
            root / "originals" / f"im{i}.png")
        x = to_tensor(read_image(root / "originals" / f"im{i}.png"))[None]
        (root / "distorted" / f"im{i}").mkdir(parents=True)
        with torch.no_grad():
            t = profile.components(x)["jnd"] * scale
        sur = []
        for k in range(1, 10):
            y = (x + noise * (2 ** (k / 2) * (1 + i / 4)) / 255).clamp(0, 1)
            Image.fromarray((y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
                root / "distorted" / f"im{i}" / f"{k}.png")
            y = to_tensor(read_image(root / "distorted" / f"im{i}" / f"{k}.png"))[None]
            r = float(((luminance_of(y) - luminance_of(x)).abs() / t).pow(4).mean().pow(0.25))
            sur.append(round(1 - 1 / (1 + r ** -slope), 6))
        images[f"im{i}"] = {"jnd_level": sum(s >= 0.5 for s in sur), "sur": sur}
    (root / "study").mkdir()
    (root / "study" / "labels.json").write_text(json.dumps({"n_levels": 9, "images": images}))
    return root


def luminance_of(x):
    from jndplug.models.jnd_profile import luminance

    return luminance(x)


def test_profile_on_study_recovers_the_scale_and_slope_of_image_judgements(tmp_path):
    from jndplug.patches.profile import train_on_study

    root = _study_dataset(tmp_path)
    torch.manual_seed(0)  # the trainer's seed: its initial weights
    start = JNDProfile()
    profile, info = train_on_study(f"generated:{root}", {"structure": False, "epochs": 150, "lr": 0.05, "batch": 4},
                                   progress=False)
    # only the overall scale and the slope move in the baseline
    for (name, p), p0 in zip(profile.structure_net.named_parameters(), start.structure_net.parameters()):
        if name != "4.bias":  # the last layer's bias: the overall scale
            assert torch.equal(p, p0), name
    assert math.exp(float(profile.structure_net[-1].bias)) == pytest.approx(2.0, rel=0.1)
    assert math.exp(float(profile.log_slope)) == pytest.approx(4.0, rel=0.25)
    assert info["test_mae"] < 0.03 and info["history"][info["best_epoch"] - 1]["val_mae"] < 0.03


def test_jnd_profile_command_fits_a_study_and_the_file_is_a_bound(tmp_path, run_cli):
    from jndplug.spec import TargetSpec

    root = _study_dataset(tmp_path, n_images=4, side=32)
    out = tmp_path / "study.safetensors"
    res = run_cli("jnd-profile", f"generated:{root}", "--out", out, "--epochs", "3", "--lr", "0.01")
    assert res.returncode == 0, res.stderr
    assert "noticed fraction off by" in res.stdout and res.stdout.strip().endswith(f"-> {out}")
    profile = load_profile(out)
    assert profile.provenance["config"]["pooling"] == 4.0 and len(profile.provenance["history"]) == 3
    x = _grey(100, 32, 32)
    target = JNDTarget.from_spec(TargetSpec(bound=str(out), strength=1.0))
    assert torch.allclose(target.jnd_map(x), profile.jnd_map(x))
    res = run_cli("jnd-profile", f"generated:{root}", "--out", tmp_path / "b.safetensors", "--buckets", "x")
    assert res.returncode == 1 and "--buckets: applies to a patch-pair dataset" in res.stderr
    assert not (tmp_path / "b.safetensors").exists()
