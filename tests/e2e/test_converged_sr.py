"""The converged-restorer benchmark script, end to end on tiny images (a few steps, one block)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import converged_sr  # noqa: E402


def _folder(root: Path, n: int, seed: int, size=(64, 96)) -> None:
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(make_image(*size, seed + i)).save(root / f"im{i}.png")


def test_pretrain_finetune_screen_and_report(tmp_path):
    _folder(tmp_path / "train" / "a", 5, 0)
    _folder(tmp_path / "test" / "S", 2, 50)
    out = tmp_path / "out"
    argv = ["--train", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "--test-sets", "S",
            "--out", str(out), "--archs", "edsr", "--seeds", "0", "1", "--train-images", "4", "--val-images", "1",
            "--val-side", "32", "--crop", "48", "--patch", "16", "--batch", "2", "--blocks", "1", "--features", "8",
            "--pretrain-steps", "4", "--val-every", "2", "--finetune-steps", "2",
            "--targets", "gt", "jnd", "directed:gain=1", "tolerant", "--metrics", "psnr_y", "stlpips"]
    assert converged_sr.main(argv + ["--pretrain-only"]) == 0
    curve = json.loads((out / "pretrain_edsr" / "curve.json").read_text())
    assert [c["step"] for c in curve] == [2, 4] and (out / "pretrain_edsr" / "curve.png").is_file()
    assert not (out / "runs").exists()
    assert converged_sr.main(argv) == 0
    assert len(list(out.glob("targets_*.npz"))) == 1  # shared by later runs and processes
    report = json.loads((out / "report.json").read_text())
    table = report["table"]["edsr"]
    assert set(table) == {"gt", "jnd", "directed:gain=1", "tolerant", "screen_agreement"}
    # seed-paired deltas: the ground-truth run against itself is exactly zero
    assert table["gt"]["psnr_y"]["delta"]["mean"] == 0
    assert table["jnd"]["psnr_y"]["value"]["n"] == 2
    # the held-back photo never appears among the training photos
    assert not set(report["val_files"]) & set(report["train_files"])
    assert report["table"]["edsr"]["screen_agreement"]["total"] == 4  # two transforms x two metrics
    for f in ("report.md", "pd_plane.png", "crops_edsr.png", "screen_edsr/screen.json"):
        assert (out / f).is_file(), f
    # a rerun resumes: nothing is retrained, results are read back unchanged
    mtime = (out / "runs" / "edsr_jnd_seed0" / "result.json").stat().st_mtime
    assert converged_sr.main(argv) == 0
    assert (out / "runs" / "edsr_jnd_seed0" / "result.json").stat().st_mtime == mtime
    outputs = np.asarray(Image.open(out / "runs" / "edsr_gt_seed0" / "outputs" / "S" / "im0.png"))
    assert outputs.shape == (48, 48, 3)


def test_bad_target_spec_fails_before_training(tmp_path):
    with pytest.raises(Exception, match="unknown transform"):
        converged_sr.main(["--train", str(tmp_path), "--test", str(tmp_path), "--out", str(tmp_path / "o"),
                           "--targets", "gt", "blur"])
    with pytest.raises(SystemExit, match="must include gt"):
        converged_sr.main(["--train", str(tmp_path), "--test", str(tmp_path), "--out", str(tmp_path / "o"),
                           "--targets", "jnd"])
