"""Miniature runs of `jndplug bench sr|codec|estimator`, and the pieces their reports rest on."""

import json
import os

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import jndplug
from conftest import make_image
from jndplug.bench.codec import bd_rate
from jndplug.bench.figures import detail_window
from jndplug.training.datasets import read_source
from jndplug.training.loop import ImageCache, default_measure, resolve_config, validate

# tiny networks and a few iterations: these check the plumbing and the reports, not the claim
SR_FLAGS = ["--archs", "edsr", "--strengths", "1.0", "--seeds", "0", "--steps", "2", "--pretrain-steps", "1",
            "--patch", "32", "--batch", "2",
            "--blocks", "1", "--features", "8", "--workers", "0", "--metrics", "psnr", "psnr_y", "ssim_y", "niqe",
            "stlpips", "--crop-images", "2", "--crop-size", "32"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-data")
    for i in range(4):
        (root / "train" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_image(96, 104, seed=i)).save(root / "train" / "a" / f"{i}.png")
    for s in ("SetA", "SetB"):
        (root / "test" / s).mkdir(parents=True)
        for i in range(2):  # 114 px: mod-cropped to 112, NIQE still has its 96 px block after the 4 px border
            Image.fromarray(make_image(114, 120, seed=10 + i)).save(root / "test" / s / f"img{i}.png")
    (root / "kodak").mkdir()
    for i in range(2):
        Image.fromarray(make_image(96, 128, seed=20 + i)).save(root / "kodak" / f"k{i}.png")
    return root


def test_sr_miniature_run_and_resume(folders, estimator_file, tmp_path, run_cli):
    out = tmp_path / "sr"
    args = ["bench", "sr", "--train", folders / "train", "--test", folders / "test", "--out", out,
            "--estimator", estimator_file, *SR_FLAGS]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "sr_results.json").read_text())
    assert report["test_sets"] == ["SetA", "SetB"]
    assert [(e["arch"], e["target"]) for e in report["summary"]] == [("edsr", "gt"), ("edsr", "jnd1")]
    jnd = report["summary"][1]
    assert set(jnd["delta_vs_gt"]) == {"psnr", "psnr_y", "ssim_y", "niqe", "stlpips"}
    runs = {r["target"]: r for r in report["runs"]}
    paired = runs["jnd1"]["mean"]["psnr"] - runs["gt"]["mean"]["psnr"]
    assert jnd["delta_vs_gt"]["psnr"]["mean"] == pytest.approx(paired)
    md = (out / "sr_results.md").read_text()
    assert "| edsr | jnd1 | 1 |" in md and "better)" in md
    # bicubic upsampling scored the same way, as context
    assert "| bicubic (reference, no training) |" in md and report["bicubic"]["psnr"] > 10
    assert Image.open(out / "reference" / "bicubic" / "outputs" / "SetA" / "img0.png").size == (120, 112)
    for fig in ("pd_plane.png", "crops_edsr.png"):
        assert Image.open(out / fig).size[0] > 100

    # the two runs differ only in the name and the jnd_target block; both fine-tune the same pretrained network
    base = yaml.safe_load((out / "runs" / "edsr_gt_seed0" / "options.yml").read_text())
    adapted = yaml.safe_load((out / "runs" / "edsr_jnd1_seed0" / "options.yml").read_text())
    block = adapted.pop("jnd_target")
    assert block["strength"] == 1.0 and block["estimator"] == str(estimator_file.resolve())
    assert "jnd_target" not in base
    assert base["path"]["pretrain_network_g"].endswith("edsr_pretrain_seed0/experiments/edsr_pretrain_seed0/models/"
                                                      "net_g_latest.pth")
    assert {k: v for k, v in base.items() if k != "name"} == {k: v for k, v in adapted.items() if k != "name"}

    # outputs have the mod-cropped ground truth's size; metrics are against the true ground truth
    out_img = Image.open(out / "runs" / "edsr_jnd1_seed0" / "outputs" / "SetA" / "img0.png")
    assert out_img.size == Image.open(out / "data" / "test" / "SetA" / "GT" / "img0.png").size == (120, 112)

    stamp = os.stat(out / "runs" / "edsr_gt_seed0" / "result.json").st_mtime_ns
    res = run_cli(*args)
    assert res.returncode == 0 and res.stderr.count("done earlier, skipped") == 2
    assert os.stat(out / "runs" / "edsr_gt_seed0" / "result.json").st_mtime_ns == stamp

    res = run_cli(*[a if a != "2" else "3" for a in args])  # other --steps (and batch): refuses to mix results
    assert res.returncode == 1 and "other settings" in res.stderr
    assert "iters: 2 there, 3 now" in res.stderr


def test_codec_refuses_two_starting_points(folders, estimator_file, tmp_path, run_cli):
    res = run_cli("bench", "codec", "--train", folders / "train", "--eval", folders / "kodak", "--out", tmp_path / "c",
                  "--estimator", estimator_file, "--pretrain-steps", "5", "--init-dir", tmp_path)
    assert res.returncode == 1 and "--pretrain-steps and --init-dir" in res.stderr


def test_bench_needs_an_existing_estimator(folders, tmp_path, run_cli):
    for kind, test in (("sr", "--test"), ("codec", "--eval")):
        res = run_cli("bench", kind, "--train", folders / "train", test, folders / "test", "--out", tmp_path / kind,
                      "--estimator", tmp_path / "missing.safetensors")
        assert res.returncode == 1
        assert "--estimator" in res.stderr and "not found" in res.stderr
        assert not (tmp_path / kind).exists()  # nothing started


def test_codec_miniature_run(folders, estimator_file, tmp_path, run_cli):
    out = tmp_path / "codec"
    res = run_cli("bench", "codec", "--train", folders / "train", "--eval", folders / "kodak", "--out", out,
                  "--estimator", estimator_file, "--models", "bmshj2018-factorized", "--qualities", "1", "2",
                  "--pretrain-steps", "1", "--steps", "1", "--patch", "64", "--batch", "2", "--workers", "0",
                  "--metrics", "psnr", "ssimulacra2", "flip")
    assert res.returncode == 0, res.stderr[-3000:]
    # baseline and JND run of a quality fine-tune the same pre-trained codec
    for q in (1, 2):
        pre = out / "runs" / f"bmshj2018-factorized_q{q}_pretrain_seed0" / "train" / "model.pth.tar"
        assert pre.is_file()
        for target in ("gt", "jnd1"):
            run = json.loads((out / "runs" / f"bmshj2018-factorized_q{q}_{target}_seed0" / "result.json").read_text())
            assert run["init"] == str(pre)
    report = json.loads((out / "codec_results.json").read_text())
    assert sorted((e["quality"], e["target"]) for e in report["summary"]) == [(1, "gt"), (1, "jnd1"), (2, "gt"),
                                                                              (2, "jnd1")]
    run = json.loads((out / "runs" / "bmshj2018-factorized_q2_jnd1_seed0" / "result.json").read_text())
    # bpp from the real bitstreams: bytes written by the entropy coder over the pixels of each image
    images = run["bitstreams"]["images"]
    assert run["bpp"] == pytest.approx(np.mean([8 * im["bytes"] / (im["height"] * im["width"]) for im in images]))
    assert run["bitstreams"]["jnd"]["strength"] == 1.0 and run["lmbda"] == 0.0035
    # PSNR of the decoded PNGs (jndplug.metrics) agrees with the coder's own, against the originals
    assert run["mean"]["psnr"] == pytest.approx(run["bitstreams"]["mean"]["psnr"], abs=1e-6)
    assert [row["target"] for row in report["bd_rate"]] == ["jnd1"]
    assert set(report["bd_rate"][0]["bd_rate_percent"]) == {"psnr", "ssimulacra2", "flip"}
    for fig in ("rd.png", "crops_bmshj2018-factorized.png"):
        assert Image.open(out / fig).size[0] > 100
    assert "BD-rate" in (out / "codec_results.md").read_text()


def test_bd_rate_on_known_curves():
    base = [(0.2, 30.0), (0.4, 33.0), (0.8, 36.0)]
    half = [(r / 2, q) for r, q in base]
    assert bd_rate(base, half)[0] == pytest.approx(-50.0)
    assert bd_rate(base, base)[0] == pytest.approx(0.0)
    # lower-is-better metrics (FLIP, LPIPS) are flipped, not misread
    flip_base = [(0.2, 0.3), (0.4, 0.2)]
    assert bd_rate(flip_base, [(r * 1.1, q) for r, q in flip_base], higher_is_better=False)[0] == pytest.approx(10.0)
    value, why = bd_rate(base, [(1.0, 40.0), (2.0, 42.0)])
    assert value is None and "no quality range" in why
    value, why = bd_rate(base[:1], base)
    assert value is None and "two" in why


def test_crop_region_is_chosen_from_the_ground_truth_texture():
    gt = np.full((120, 160, 3), 128, np.uint8)
    gt[70:100, 20:50] = np.random.default_rng(0).integers(0, 255, (30, 30, 3))
    top, left = detail_window(gt, 30)
    assert (top, left) == (70, 20)


def test_estimator_miniature_run(estimator_file, tmp_path, run_cli):
    # a labelled dataset in the layout of `jndplug datagen build` + `jndplug study aggregate`
    gen = tmp_path / "gen"
    labels = {}
    for i in range(2):
        img = make_image(64, 64, seed=30 + i)
        (gen / "distorted" / f"im{i}").mkdir(parents=True)
        (gen / "originals").mkdir(exist_ok=True)
        Image.fromarray(img).save(gen / "originals" / f"im{i}.png")
        for level in range(1, 10):
            rng = np.random.default_rng(level)
            Image.fromarray(np.clip(img + rng.normal(0, 2 * level, img.shape), 0, 255).astype(np.uint8)).save(
                gen / "distorted" / f"im{i}" / f"{level}.png")
        labels[f"im{i}"] = {"jnd_level": 3, "sur": [1, 1, 0.9, 0.8, 0.6, 0.4, 0.2, 0.1, 0.0]}
    (gen / "labels.json").write_text(json.dumps({"images": labels}))
    out = tmp_path / "est"
    res = run_cli("bench", "estimator", "--out", out, "--estimator", estimator_file, "--weights", estimator_file,
                  "--data", f"generated:{gen}", "--archs", "unet", "--sizes", "64x48", "--budget", "0.1",
                  "--patch", "32", "--batch", "2", "--steps", "1", "--repeats", "1", "--val-crop", "64")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "estimator_results.json").read_text())
    assert [(r["model"], r["size"]) for r in report["speed"]] == [("unet", "64x48"), (estimator_file.name, "64x48")]
    assert report["speed"][0]["macs_per_pixel"] > 1000
    acc = report["accuracy"][0]
    assert acc["images"] == 2 and acc["psnr"] > 10
    # the accuracy part is the training loop's validation of the same file on the same crops
    model = jndplug.load_estimator(estimator_file)
    expected = validate(model, read_source(f"generated:{gen}"), ImageCache(),
                        resolve_config({"val_crop": 64, "sur_conditioning": model.accepts_sur}), "cpu",
                        default_measure)["summary"]
    assert {k: acc[k] for k in expected} == pytest.approx(expected)
    assert {"level_exact", "level_within1"} <= set(expected)
    o = report["overhead"]
    assert o["ratio"] == pytest.approx(o["seconds_per_step_with"] / o["seconds_per_step_without"])
    assert "ratio" in (out / "estimator_results.md").read_text()


def test_estimator_accuracy_without_data_is_noted_not_faked(tmp_path, run_cli):
    res = run_cli("bench", "estimator", "--parts", "speed", "accuracy", "--out", tmp_path, "--archs", "unet",
                  "--sizes", "32x32", "--budget", "0")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "estimator_results.json").read_text())
    assert "accuracy" not in report and "not run" in report["notes"][0]


def test_estimator_speed_in_bfloat16(tmp_path, run_cli, monkeypatch):
    # the timed pass really runs in the requested arithmetic, and the table says which
    seen = []
    original = torch.nn.Conv2d.forward
    monkeypatch.setattr(torch.nn.Conv2d, "forward", lambda self, x: seen.append(x.dtype) or original(self, x))
    res = run_cli("bench", "estimator", "--parts", "speed", "--out", tmp_path, "--archs", "unet",
                  "--sizes", "32x32", "--budget", "0", "--dtype", "bfloat16")
    assert res.returncode == 0, res.stderr
    row = json.loads((tmp_path / "estimator_results.json").read_text())["speed"][0]
    assert row["dtype"] == "bfloat16" and row["macs_per_pixel"] > 1000
    assert torch.bfloat16 in seen and seen[-1] == torch.bfloat16
    assert "| bfloat16 |" in (tmp_path / "estimator_results.md").read_text()
