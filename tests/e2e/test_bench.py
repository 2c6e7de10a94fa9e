"""Miniature runs of `jndplug bench estimator`, and the pieces the bench reports rest on (bench sr and codec:
test_converged_sr.py, test_converged_codec.py)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import jndplug
from conftest import make_image
from jndplug.bench.codec_report import bd_rate
from jndplug.training.datasets import read_source
from jndplug.training.loop import ImageCache, default_measure, resolve_config, validate

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
    assert report["speed"][0]["macs_per_pixel"] == 10_665  # the default unet, BENCHMARKS.md "Estimator cost"
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
    assert row["dtype"] == "bfloat16" and row["macs_per_pixel"] == 10_665  # counted, whatever the arithmetic
    assert torch.bfloat16 in seen and seen[-1] == torch.bfloat16
    assert "| bfloat16 |" in (tmp_path / "estimator_results.md").read_text()
