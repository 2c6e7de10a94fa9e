"""Does the satisfied-user ratio p steer a SUR-conditioned estimator the way the labels move?

    python benchmarks/bench_sur.py --weights W.safetensors --data generated:DATASET \
        [--split RUN_DIR/split.json] [--sur 0.5 0.75 0.95] [--json OUT.json]

For every image (only the validation ids of ``--split`` when given) and every p: the distortion
of the prediction (PSNR against the original), the distortion of the labelled level at p, and the
prediction's PSNR against that label. Larger p should give weaker distortion (higher PSNR against
the original) for predictions as it does for labels. Whole images, through ``JNDTarget``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import torch

import jndplug
from jndplug.training.loop import ImageCache
from jndplug.training.sources import read_source


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a.float() - b.float()) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="a SUR-conditioned estimator (.safetensors or pretrained name)")
    ap.add_argument("--data", required=True, metavar="generated:DATASET[,LABELS]")
    ap.add_argument("--split", help="split.json of the training run: evaluate its validation ids only")
    ap.add_argument("--sur", type=float, nargs="+", default=[0.5, 0.75, 0.95])
    ap.add_argument("--json", help="also write the table here")
    args = ap.parse_args(argv)

    records = read_source(args.data)
    if args.split:
        keep = set(json.load(open(args.split))["validation"])
        records = [r for r in records if r.id in keep]
    if not records or any(r.sur is None for r in records):
        print("bench_sur: need labelled images with SUR curves (generated data)", file=sys.stderr)
        return 1
    targets = {p: jndplug.JNDTarget(args.weights, sur=p) for p in args.sur}
    cache = ImageCache()
    rows = []
    for p in args.sur:
        pred_vs_orig, label_vs_orig, pred_vs_label, levels = [], [], [], []
        for rec in records:
            x = ImageCache.as_float(cache.get(rec.original))
            level = rec.level_for_sur(p)
            label = ImageCache.as_float(cache.get(rec.image_at(level)))
            pred = targets[p](x)
            pred_vs_orig.append(_psnr(pred, x))
            label_vs_orig.append(_psnr(label, x))
            pred_vs_label.append(_psnr(pred, label))
            levels.append(level)
        rows.append({"sur": p, "images": len(records), "label_level_mean": float(np.mean(levels)),
                     "psnr_pred_vs_original": float(np.mean(pred_vs_orig)),
                     "psnr_label_vs_original": float(np.mean(label_vs_orig)),
                     "psnr_pred_vs_label": float(np.mean(pred_vs_label))})
    print("| p | images | mean labelled level | PSNR prediction vs original | PSNR label vs original | PSNR prediction vs label |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sur']} | {r['images']} | {r['label_level_mean']:.2f} | {r['psnr_pred_vs_original']:.2f} | "
              f"{r['psnr_label_vs_original']:.2f} | {r['psnr_pred_vs_label']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
