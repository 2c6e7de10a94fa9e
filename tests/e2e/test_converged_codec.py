"""``jndplug bench codec`` (a codec trained to a working RD point, fine-tuned per target), end to end on tiny images."""

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_image

pytest.importorskip("compressai")


def _folder(root: Path, n: int, seed: int, size=(128, 160)) -> None:
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(make_image(*size, seed + i)).save(root / f"im{i}.png")


def test_pretrain_adapt_finetune_and_report(tmp_path, estimator_file, run_cli):
    _folder(tmp_path / "train", 4, 0)
    _folder(tmp_path / "eval", 2, 50)
    out = tmp_path / "out"
    argv = ["bench", "codec", "--train", tmp_path / "train", "--eval", tmp_path / "eval", "--out", out,
            "--estimator", estimator_file, "--channels", "8", "12", "--lambdas", "0.002", "0.02", "--train-images",
            "3", "--val-images", "1", "--val-side", "64", "--patch", "64", "--batch", "2", "--pretrain-steps", "4",
            "--adapt-steps", "2", "--steps", "2", "--val-every", "2", "--targets", "gt", "directed:gain=1",
            "--metrics", "psnr_y", "stlpips"]
    res = run_cli(*argv, "--pretrain-only")
    assert res.returncode == 0, res.stderr[-3000:]
    curve = json.loads((out / "pretrain" / "train.json").read_text())["curve"]
    assert [c["step"] for c in curve] == [2, 4] and all(c["bpp"] > 0 for c in curve)
    assert (out / "adapt_l0.002" / "final.pt").is_file() and not (out / "runs").exists()
    res = run_cli(*argv)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "codec_results.json").read_text())
    assert set(report["table"]) == {"0.002/gt", "0.002/directed:gain=1", "0.02/gt", "0.02/directed:gain=1"}
    assert set(report["bd_rate"]) == {"directed:gain=1"}
    result = json.loads((out / "runs" / "l0.002_directed_gain1_seed0" / "result.json").read_text())
    # bpp comes from real bitstreams: positive, one value per evaluation image
    assert len(result["per_image"]) == 2 and all(r["bpp"] > 0 for r in result["per_image"])
    for name in ("curve.png", "rd.png", "crops.png", "codec_results.md"):
        assert (out / name).is_file()
    # a rerun finds every stage done and changes nothing
    assert run_cli(*argv).returncode == 0
    assert json.loads((out / "codec_results.json").read_text())["table"] == report["table"]


def test_bench_needs_an_existing_estimator(tmp_path, run_cli):
    _folder(tmp_path / "train", 2, 0)
    for kind, test in (("sr", "--test"), ("codec", "--eval")):
        res = run_cli("bench", kind, "--train", tmp_path / "train", test, tmp_path / "train",
                      "--out", tmp_path / kind, "--estimator", tmp_path / "missing.safetensors")
        assert res.returncode == 1
        assert "--estimator" in res.stderr and "not found" in res.stderr
        assert not (tmp_path / kind).exists()  # nothing started
