"""The converged-codec benchmark script, end to end on tiny images (a few steps, narrow transforms)."""

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_image

pytest.importorskip("compressai")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import converged_codec  # noqa: E402


def _folder(root: Path, n: int, seed: int, size=(128, 160)) -> None:
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(make_image(*size, seed + i)).save(root / f"im{i}.png")


def test_pretrain_adapt_finetune_and_report(tmp_path):
    _folder(tmp_path / "train", 4, 0)
    _folder(tmp_path / "eval", 2, 50)
    out = tmp_path / "out"
    argv = ["--train", str(tmp_path / "train"), "--eval", str(tmp_path / "eval"), "--out", str(out),
            "--channels", "8", "12", "--lambdas", "0.002", "0.02", "--train-images", "3", "--val-images", "1",
            "--val-side", "64", "--patch", "64", "--batch", "2", "--pretrain-steps", "4", "--adapt-steps", "2",
            "--steps", "2", "--val-every", "2", "--targets", "gt", "directed:gain=1",
            "--metrics", "psnr_y", "stlpips"]
    assert converged_codec.main(argv + ["--pretrain-only"]) == 0
    curve = json.loads((out / "pretrain" / "train.json").read_text())["curve"]
    assert [c["step"] for c in curve] == [2, 4] and all(c["bpp"] > 0 for c in curve)
    assert (out / "adapt_l0.002" / "final.pt").is_file() and not (out / "runs").exists()
    assert converged_codec.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["table"]) == {"0.002/gt", "0.002/directed:gain=1", "0.02/gt", "0.02/directed:gain=1"}
    assert set(report["bd_rate"]) == {"directed:gain=1"}
    result = json.loads((out / "runs" / "l0.002_directed_gain1_seed0" / "result.json").read_text())
    # bpp comes from real bitstreams: positive, one value per evaluation image
    assert len(result["per_image"]) == 2 and all(r["bpp"] > 0 for r in result["per_image"])
    for name in ("curve.png", "rd.png", "crops.png", "report.md"):
        assert (out / name).is_file()
    # a rerun finds every stage done and changes nothing
    before = (out / "report.json").read_text()
    assert converged_codec.main(argv) == 0
    assert json.loads((out / "report.json").read_text())["table"] == json.loads(before)["table"]
