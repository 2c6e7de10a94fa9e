"""``jndplug bench sr`` (converged restorers fine-tuned per target), end to end on tiny images."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

import pytest
from conftest import make_image
from jndplug.bench import sr
from jndplug.bench.common import BenchError
from jndplug.bench.sr_arms import GAN_TERMS, gan_parts, images_of
from jndplug.cli import build_parser


def _folder(root: Path, n: int, seed: int, size=(64, 96)) -> None:
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(make_image(*size, seed + i)).save(root / f"im{i}.png")


FLAGS = ["--test-sets", "S", "--archs", "edsr", "--seeds", "0", "1", "--train-images", "4", "--val-images", "1",
         "--val-side", "32", "--crop", "48", "--patch", "16", "--batch", "2", "--blocks", "1", "--features", "8",
         "--pretrain-steps", "4", "--val-every", "2", "--steps", "2",
         "--targets", "gt", "jnd", "directed:gain=1", "tolerant", "--metrics", "psnr_y", "stlpips"]


def test_pretrain_finetune_screen_and_report(tmp_path, estimator_file, run_cli):
    _folder(tmp_path / "train" / "a", 5, 0)
    _folder(tmp_path / "test" / "S", 2, 50)
    out = tmp_path / "out"
    argv = ["bench", "sr", "--train", tmp_path / "train", "--test", tmp_path / "test", "--out", out,
            "--estimator", estimator_file, *FLAGS]
    res = run_cli(*argv, "--pretrain-only")
    assert res.returncode == 0, res.stderr[-3000:]
    curve = json.loads((out / "pretrain_edsr" / "curve.json").read_text())
    assert [c["step"] for c in curve] == [2, 4] and (out / "pretrain_edsr" / "curve.png").is_file()
    assert not (out / "runs").exists()
    res = run_cli(*argv)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list(out.glob("targets_*.npz"))) == 1  # shared by later runs and processes
    report = json.loads((out / "sr_results.json").read_text())
    table = report["table"]["edsr"]
    assert set(table) == {"gt", "jnd", "directed:gain=1", "tolerant", "screen_agreement"}
    # seed-paired deltas: the ground-truth run against itself is exactly zero
    assert table["gt"]["psnr_y"]["delta"]["mean"] == 0
    assert table["jnd"]["psnr_y"]["value"]["n"] == 2
    # the held-back photo never appears among the training photos
    assert not set(report["val_files"]) & set(report["train_files"])
    assert table["screen_agreement"]["total"] == 4  # two transforms x two metrics
    assert report["settings"]["steps"] == 2
    for f in ("sr_results.md", "pd_plane.png", "crops_edsr.png", "screen_edsr/screen.json"):
        assert (out / f).is_file(), f
    # a rerun resumes: nothing is retrained, results are read back unchanged
    stamp = os.stat(out / "runs" / "edsr_jnd_seed0" / "result.json").st_mtime_ns
    assert run_cli(*argv).returncode == 0
    assert os.stat(out / "runs" / "edsr_jnd_seed0" / "result.json").st_mtime_ns == stamp
    outputs = np.asarray(Image.open(out / "runs" / "edsr_gt_seed0" / "outputs" / "S" / "im0.png"))
    assert outputs.shape == (48, 48, 3)
    # a finished fine-tune made with other settings is refused, naming the difference, not mixed in
    other = list(argv)
    other[other.index("--steps") + 1] = "3"
    res = run_cli(*other)
    assert res.returncode == 1 and "other settings" in res.stderr and "steps: 2 there, 3 now" in res.stderr


def test_settings_are_the_flags_and_callable_from_python(tmp_path):
    args = build_parser("bench").parse_args(["bench", "sr", "--train", "t", "--test", "s", "--steps", "7"])
    from jndplug.settings import settings_from_args

    settings = settings_from_args(sr.Settings, args)
    assert settings == sr.Settings(train="t", test="s", steps=7)
    # the networks of the published runs are the default; the runs differ from it only by flags
    assert (settings.blocks, settings.features, settings.pretrain_steps) == (16, 64, 10000)


def test_bad_targets_fail_before_training(tmp_path):
    with pytest.raises(BenchError, match="unknown transform"):
        sr.run(sr.Settings(train=str(tmp_path), test=str(tmp_path), out=str(tmp_path / "o"), targets=["gt", "blur"]))
    with pytest.raises(BenchError, match="must include gt"):
        sr.run(sr.Settings(train=str(tmp_path), test=str(tmp_path), out=str(tmp_path / "o"), targets=["jnd"]))
    assert not (tmp_path / "o").exists()


def test_perceptual_loss_post_sharpening_and_gan_arms(tmp_path, estimator_file, run_cli):
    """What users do instead of moving the target: a perceptual-loss fine-tune (a curve over weights)
    and the gt fine-tune's outputs sharpened after the fact, scored like every other target; and a
    GAN restorer trained against the ground truth and against the target, compared with each other."""
    pytest.importorskip("stlpips_pytorch")
    _folder(tmp_path / "train" / "a", 5, 0)
    _folder(tmp_path / "test" / "S", 2, 50)
    out = tmp_path / "out"
    flags = ["--test-sets", "S", "--archs", "edsr", "--seeds", "0", "--train-images", "4", "--val-images", "1",
             "--val-side", "32", "--crop", "48", "--patch", "16", "--batch", "2", "--blocks", "1", "--features", "8",
             "--pretrain-steps", "4", "--val-every", "2", "--steps", "2", "--metrics", "psnr_y", "stlpips",
             "--targets", "gt", "directed:strength=2", "perceptual:weight=0.1", "perceptual:weight=1",
             "post:directed:strength=2", "gan:gt", "gan:directed:strength=2"]
    res = run_cli("bench", "sr", "--train", tmp_path / "train", "--test", tmp_path / "test", "--out", out,
                  "--estimator", estimator_file, *flags)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "sr_results.json").read_text())
    table = report["table"]["edsr"]
    assert {"gt", "directed:strength=2", "perceptual:weight=0.1", "perceptual:weight=1",
            "post:directed:strength=2"} <= set(table)
    runs = out / "runs"
    gt = np.asarray(Image.open(runs / "edsr_gt_seed0" / "outputs" / "S" / "im0.png"))
    perceptual = np.asarray(Image.open(runs / "edsr_perceptual_weight1_seed0" / "outputs" / "S" / "im0.png"))
    assert not np.array_equal(gt, perceptual)  # the feature term changed the training
    # post-sharpening trains nothing: it is the transform applied to the gt fine-tune's outputs
    from jndplug.imageio import array_to_tensor
    from jndplug.spec import TargetSpec
    from jndplug.target import JNDTarget

    post = json.loads((runs / "edsr_post_directed_strength2_seed0" / "result.json").read_text())
    assert post["train_seconds"] == 0 and post["steps"] == 0
    # the one target path: the transform of post:T is JNDTarget's image of T, rounded to 8 bits
    spec = dataclasses.replace(TargetSpec.parse("directed:strength=2"), estimator=str(estimator_file))
    y = JNDTarget.from_spec(spec)(array_to_tensor(gt)[None])[0].permute(1, 2, 0).numpy().astype(np.float64)
    want = np.clip(np.round(y * 255), 0, 255).astype(np.uint8)
    got = np.asarray(Image.open(runs / "edsr_post_directed_strength2_seed0" / "outputs" / "S" / "im0.png"))
    assert np.array_equal(got, want)
    # the targets are placed against the perceptual-loss curve at their own PSNR-Y
    versus = table["against_perceptual_curve"]
    assert set(versus) == {"directed:strength=2", "post:directed:strength=2", "gan:gt", "gan:directed:strength=2"}
    curve = sorted((table[t]["psnr_y"]["value"]["mean"], table[t]["stlpips"]["value"]["mean"])
                   for t in ("gt", "perceptual:weight=0.1", "perceptual:weight=1"))
    for v in versus.values():
        inside = curve[0][0] <= v["psnr_y"] <= curve[-1][0]
        assert (v["curve"] is not None) == inside
        if inside:
            assert v["curve"] == pytest.approx(np.interp(v["psnr_y"], *zip(*curve)))
    assert "Against the perceptual-loss curve" in (out / "sr_results.md").read_text()
    assert (out / "pd_plane.png").is_file()
    # the GAN arms: trained (not copies of the L1 fine-tune), each compared with its own baseline
    gan = np.asarray(Image.open(runs / "edsr_gan_gt_seed0" / "outputs" / "S" / "im0.png"))
    gan_directed = np.asarray(Image.open(runs / "edsr_gan_directed_strength2_seed0" / "outputs" / "S" / "im0.png"))
    assert not np.array_equal(gan, gt) and not np.array_equal(gan_directed, gan)
    assert table["gan:gt"]["psnr_y"]["baseline"] == "gt"
    assert table["gan:directed:strength=2"]["psnr_y"]["baseline"] == "gan:gt"
    means = {r: json.loads((runs / r / "result.json").read_text())["mean"]["psnr_y"]
             for r in ("edsr_gan_gt_seed0", "edsr_gan_directed_strength2_seed0")}
    assert table["gan:directed:strength=2"]["psnr_y"]["delta"]["mean"] == pytest.approx(
        means["edsr_gan_directed_strength2_seed0"] - means["edsr_gan_gt_seed0"])


def test_bad_arm_settings_fail_before_training(tmp_path):
    for targets, message in ((["gt", "perceptual:weight=0"], "perceptual:weight=W with W a number > 0"),
                             (["gt", "perceptual:w=1"], "perceptual:weight=W"),
                             (["gt", "post:blur"], "unknown transform"),
                             (["gt", "gan:directed:strength=2"], "add gan:gt"),
                             (["gt", "gan:gt", "gan:post:usm"], "write gan:gt or gan:TRANSFORM"),
                             (["gt", "gan:gt", "gan:blur"], "unknown transform"),
                             (["gt", "gan:gt", "gan:directed:strength=2,terms=pixl"],
                              "unknown term 'pixl'; did you mean pixel\\? write terms=all or terms=A\\+B"),
                             (["gt", "gan:gt", "gan:usm:terms=discriminator"], "unknown term 'discriminator'; write"),
                             (["gt", "gan:gt", "gan:usm:terms="], "unknown term ''"),
                             (["gt", "gan:gt", "gan:gt:terms=pixel"], "give terms= once, to a gan:TRANSFORM"),
                             (["gt", "gan:gt", "gan:usm:terms=pixel,terms=all"], "give terms= once")):
        with pytest.raises(BenchError, match=message):
            sr.run(sr.Settings(train=str(tmp_path), test=str(tmp_path), out=str(tmp_path / "o"), targets=targets))
    assert not (tmp_path / "o").exists()


def test_gan_arm_terms_spelling():
    assert gan_parts("gan:gt") == ("gt", GAN_TERMS)
    # every term by default, as gan: arms trained before terms= existed
    assert gan_parts("gan:directed:strength=2") == ("directed:strength=2", GAN_TERMS)
    assert gan_parts("gan:directed:terms=perceptual+pixel,strength=2") == ("directed:strength=2",
                                                                           ("pixel", "perceptual"))
    assert gan_parts("gan:jnd:terms=adversarial") == ("jnd", ("adversarial",))
    # Real-ESRGAN's recipe by default, every term when asked
    assert gan_parts("gan:usm") == ("usm", ("pixel", "perceptual"))
    assert gan_parts("gan:usm:weight=0.7,terms=all") == ("usm:weight=0.7", GAN_TERMS)
    # the image trained with is the transform's, shared with the other arms of that transform
    assert images_of("gan:directed:strength=2,terms=pixel") == "directed:strength=2"


def test_gan_arms_give_each_term_its_images(tmp_path, estimator_file, monkeypatch):
    """Per step, what the pixel loss, the perceptual features and the discriminator's real samples
    are given: the arms' own images where their terms say so, the ground truth (gan:gt's) elsewhere."""
    pytest.importorskip("stlpips_pytorch")
    import torch

    from jndplug.bench import sr_arms

    _folder(tmp_path / "train" / "a", 5, 0)
    _folder(tmp_path / "test" / "S", 1, 50)
    targets = ["gt", "gan:gt", "gan:directed:strength=2", "gan:directed:strength=2,terms=pixel+perceptual",
               "gan:usm"]
    seen = {t: {"pixel": [], "perceptual": [], "adversarial": []} for t in targets}
    current = []
    finetune, feature_network, l1 = sr.finetune, sr.feature_network, torch.nn.functional.l1_loss
    d_step = sr_arms.GANTerm.discriminator_step

    def tagged(arch, target, *args, **kwargs):
        current[:] = [target]
        return finetune(arch, target, *args, **kwargs)

    def features(target, device):
        net = feature_network(target, device)

        def call(x):
            if not x.requires_grad:  # the image compared with (the output carries gradients)
                seen[current[0]]["perceptual"].append(x.clone())
            return net(x)

        return call

    def pixel(a, b, *args, **kwargs):
        if current and b.shape[1] == 3:  # the feature distances compare many-channel maps
            seen[current[0]]["pixel"].append(b.clone())
        return l1(a, b, *args, **kwargs)

    def discriminator_step(self, real, fake):
        seen[current[0]]["adversarial"].append(real.clone())
        return d_step(self, real, fake)

    monkeypatch.setattr(sr, "finetune", tagged)
    monkeypatch.setattr(sr, "feature_network", features)
    monkeypatch.setattr(torch.nn.functional, "l1_loss", pixel)
    monkeypatch.setattr(sr_arms.GANTerm, "discriminator_step", discriminator_step)
    s = sr.Settings(train=str(tmp_path / "train"), test=str(tmp_path / "test"), out=str(tmp_path / "out"),
                    estimator=str(estimator_file), test_sets=["S"], archs=["edsr"], seeds=[0], train_images=4,
                    val_images=1, val_side=32, crop=48, patch=16, batch=2, blocks=1, features=8, pretrain_steps=2,
                    val_every=2, steps=2, metrics=["psnr_y"], targets=targets, device="cpu")
    report = sr.run(s)

    def same(a, b):
        return len(a) == len(b) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))

    truth = seen["gan:gt"]["pixel"]  # the ground-truth patches of the seed's two steps
    assert same(seen["gan:gt"]["perceptual"], truth) and same(seen["gan:gt"]["adversarial"], truth)
    every = seen["gan:directed:strength=2"]
    assert same(every["perceptual"], every["pixel"]) and same(every["adversarial"], every["pixel"])
    # the random test estimator leaves some 16-px patches as they are, not both of these
    assert not same(every["pixel"], truth)
    split = seen["gan:directed:strength=2,terms=pixel+perceptual"]
    assert same(split["pixel"], every["pixel"]) and same(split["perceptual"], every["pixel"])
    assert same(split["adversarial"], truth)
    usm = seen["gan:usm"]  # Real-ESRGAN: the USM ground truth for pixel and perceptual, the GT for the discriminator
    assert same(usm["perceptual"], usm["pixel"]) and same(usm["adversarial"], truth)
    assert not same(usm["pixel"], truth)
    table = report["table"]["edsr"]
    for target in targets[2:]:
        assert table[target]["psnr_y"]["baseline"] == "gan:gt"
