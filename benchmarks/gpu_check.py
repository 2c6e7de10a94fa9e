"""The checks that need a GPU, as one prepared script for a lent CUDA machine.

    python benchmarks/gpu_check.py --train DIR --test DIR --out gpu-check            # on the GPU
    python benchmarks/gpu_check.py --train DIR --test DIR --out smoke --smoke        # anywhere, tiny sizes

Four steps, each a command of this repository run in its own process with a time limit, so that a
failing or slow step neither hides the others nor runs past the machine's lease:

1. ``torchrun``: the CUDA/NCCL case of the BasicSR adapter's torchrun test (two ranks where the
   machine has two GPUs, one otherwise); with ``--smoke`` its CPU/gloo case;
2. ``estimator``: ``jndplug bench estimator --parts speed overhead`` at 1920x1080 in bfloat16 (the
   estimator's throughput and ``JNDTarget``'s overhead in an EDSR-baseline training step);
3. ``sr``: one seed of the SR proof, ``jndplug bench sr`` with EDSR-baseline at 192 px GT patches,
   the ground truth against the shipped default target and the target at twice its budget;
4. the machine, each step's command, status and wall time, in ``OUT/summary.json`` and
   ``OUT/summary.md``.

The sizes are set so that the whole script takes under 9 minutes on one H100 (the estimate is in
``STEPS``' time limits); ``--smoke`` shrinks every size so that the same script, with the same
commands, runs in about two minutes on a CPU, and the test suite runs it that way. Exit status 1 if
any step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def steps(train: str, test: str, out: Path, smoke: bool) -> list[tuple[str, list[str], int]]:
    """``(name, argv, time limit in s)`` of each step."""
    py = [sys.executable]
    if smoke:
        torchrun = py + ["-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "tests/integration/test_integration_basicsr.py", "-k", "torchrun and cpu"]
        estimator = ["--sizes", "64x64", "--dtype", "float32", "--device", "cpu", "--budget", "0.2",
                     "--patch", "16", "--batch", "2", "--steps", "1", "--repeats", "1"]
        sr = ["--device", "cpu", "--patch", "16", "--batch", "2", "--blocks", "1", "--features", "8",
              "--train-images", "3", "--val-images", "1", "--val-side", "32", "--crop", "32",
              "--pretrain-steps", "2", "--val-every", "1", "--steps", "1", "--metrics", "psnr_y"]
    else:
        torchrun = py + ["-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "tests/integration/test_integration_basicsr.py", "-k", "torchrun and cuda"]
        estimator = ["--sizes", "1920x1080", "--dtype", "bfloat16", "--device", "cuda", "--budget", "10",
                     "--patch", "48", "--batch", "16", "--steps", "20"]
        sr = ["--device", "cuda", "--patch", "192", "--batch", "16", "--train-images", "200",
              "--pretrain-steps", "3000", "--val-every", "500", "--steps", "300",
              "--metrics", "psnr_y", "ssim_y", "niqe", "stlpips", "ssimulacra2"]
    return [
        ("torchrun", torchrun, 120),
        ("estimator", py + ["-m", "jndplug", "bench", "estimator", "--parts", "speed", "overhead",
                            "--out", str(out / "estimator"), *estimator], 120),
        ("sr", py + ["-m", "jndplug", "bench", "sr", "--train", train, "--test", test, "--out", str(out / "sr"),
                     "--archs", "edsr", "--seeds", "0", "--targets", "gt", "directed:bound=estimator,strength=2", "directed",
                     *sr], 290),
    ]


def machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "gpu": gpu, "gpus": torch.cuda.device_count(), "cpus": os.cpu_count()}


def run(train: str, test: str, out: Path, smoke: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, argv, limit in steps(train, test, out, smoke):
        t0 = time.perf_counter()
        print(f"[{name}] {' '.join(argv)}", file=sys.stderr, flush=True)
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=limit)
            status, tail = done.returncode, (done.stdout + done.stderr)[-4000:]
        except subprocess.TimeoutExpired as exc:
            status, tail = "timeout", str(exc.stdout or "")[-4000:]
        seconds = round(time.perf_counter() - t0, 1)
        (out / f"{name}.log").write_text(tail)
        print(f"[{name}] status {status} in {seconds} s", file=sys.stderr, flush=True)
        results.append({"step": name, "command": argv, "status": status, "seconds": seconds, "limit_s": limit})
    summary = {"smoke": smoke, "machine": machine(), "steps": results,
               "ok": all(r["status"] == 0 for r in results)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = [f"# GPU check ({'smoke, tiny sizes' if smoke else 'full'})", "",
             f"Machine: {summary['machine']}", "", "| step | status | seconds | limit |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']} | {r['limit_s']} |" for r in results]
    lines += ["", "Results: estimator/estimator_results.md, sr/sr_results.md; each step's output tail: STEP.log."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="training photos for the SR step")
    p.add_argument("--test", required=True, help="folder with the CSet5 and CSet14 test sets")
    p.add_argument("--out", required=True, type=Path, help="results folder")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script, measures nothing")
    args = p.parse_args(argv)
    if (args.out / "summary.json").exists():
        p.error(f"{args.out} holds an earlier check's summary.json; choose another --out")
    return 0 if run(args.train, args.test, args.out, args.smoke)["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
