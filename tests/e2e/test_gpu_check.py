"""benchmarks/gpu_check.py, the script prepared for a lent GPU, run as a user would with --smoke."""

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from conftest import make_image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_smoke_runs_every_step_and_writes_one_folder(tmp_path):
    for sub, n, seed in [("train/a", 5, 0), ("test/CSet5", 1, 50), ("test/CSet14", 1, 60)]:
        (tmp_path / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(make_image(64, 96, seed + i)).save(tmp_path / sub / f"im{i}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--train", str(tmp_path / "train"), "--test",
           str(tmp_path / "test"), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["smoke"] and summary["ok"]
    assert [s["step"] for s in summary["steps"]] == ["torchrun", "estimator", "sr"]
    assert all(s["status"] == 0 and s["seconds"] <= s["limit_s"] for s in summary["steps"])
    # the full run's limits add up to under nine minutes of the lease
    assert sum(s["limit_s"] for s in summary["steps"]) < 9 * 60
    assert (out / "estimator" / "estimator_results.json").is_file() and (out / "sr" / "sr_results.json").is_file()
    sr = json.loads((out / "sr" / "sr_results.json").read_text())
    # the shipped default target (directed, bounded by the analytic profile) and the previous one
    # (bounded by the estimator's map at strength 2) were trained
    assert {"directed", "directed:bound=estimator,strength=2"} <= set(sr["table"]["edsr"])
    # a second check never overwrites the first
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "earlier check" in again.stderr
