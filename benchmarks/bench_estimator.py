"""Cost of the estimator architectures: MACs per pixel, parameters, images per second.

    python benchmarks/bench_estimator.py [--device cpu|cuda] [--sizes 512x512 1920x1080]

Both architectures are timed in the same run, so their ratio is meaningful on any machine;
absolute numbers hold only for the machine they were measured on. Weights are random: speed does
not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import jndplug
from jndplug.profile import count_parameters, macs_per_pixel


def time_forward(model, size, device, budget_s: float, dtype=torch.float32) -> tuple[float, int]:
    x = torch.rand(1, 3, *size, device=device, dtype=dtype)
    with torch.no_grad():
        model(x)  # warm-up (allocations, cuDNN algorithm choice)
        if device.type == "cuda":
            torch.cuda.synchronize()
        runs, start = 0, time.perf_counter()
        while runs == 0 or (time.perf_counter() - start < budget_s and runs < 50):
            model(x)
            runs += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / runs, runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", nargs="+", default=["512x512", "1920x1080"])
    ap.add_argument("--budget", type=float, default=10.0, help="seconds of timed runs per case (at least one run)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    sizes = [tuple(int(v) for v in s.split("x"))[::-1] for s in args.sizes]  # WxH -> (H, W)
    rows = []
    for arch in ("unet", "resjnd"):
        torch.manual_seed(0)
        model = jndplug.create_estimator(arch).eval().to(device)
        macs = macs_per_pixel(model, (64, 64))
        params = count_parameters(model)
        for h, w in sizes:
            seconds, runs = time_forward(model, (h, w), device, args.budget)
            rows.append({"arch": arch, "size": f"{w}x{h}", "macs_per_pixel": round(macs), "params": params,
                         "seconds_per_image": seconds, "images_per_second": 1 / seconds, "runs": runs})
            print(f"{arch:7s} {w}x{h}: {macs:,.0f} MACs/px, {params:,} params, {seconds * 1000:,.1f} ms/image "
                  f"({runs} runs)", flush=True)
    print("\nspeed ratio unet / resjnd (images per second):")
    for h, w in sizes:
        u = next(r for r in rows if r["arch"] == "unet" and r["size"] == f"{w}x{h}")
        r = next(r for r in rows if r["arch"] == "resjnd" and r["size"] == f"{w}x{h}")
        print(f"  {w}x{h}: {u['images_per_second'] / r['images_per_second']:.0f}x")
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "results": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)


if __name__ == "__main__":
    main()
