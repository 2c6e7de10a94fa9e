"""Does the satisfied-user ratio p steer a SUR-conditioned estimator the way the labels move?

    python benchmarks/bench_sur.py --weights W.safetensors --data generated:DATASET \
        [--split RUN_DIR/split.json] [--sur 0.5 0.75 0.95] [--json OUT.json]

For every image (only the validation ids of ``--split`` when given) and every p: the distortion
of the prediction (PSNR against the original), the distortion of the labelled level at p, and the
prediction's PSNR against that label. Larger p should give weaker distortion (higher PSNR against
the original) for predictions as it does for labels. Whole images, through ``JNDTarget``.

Level agreement: the level whose distortion (``jndplug.datagen.distortion_measure``) is nearest
the prediction's, against the labelled level at p, exact and within one. Two baselines put the
numbers in context: the original itself as the prediction (its PSNR against the label is the
"label vs original" column), and always answering the level most often labelled at p among the
training images of ``--split`` (a model that learned nothing about content scores this).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import torch

import jndplug
from jndplug.datagen import distortion_measure
from jndplug.training.loop import ImageCache
from jndplug.training.datasets import read_source


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
    train_records = []
    if args.split:
        split = json.load(open(args.split))
        keep, seen = set(split["validation"]), set(split["train"])
        train_records = [r for r in records if r.id in seen]
        records = [r for r in records if r.id in keep]
    if not records or any(r.sur is None for r in records):
        print("bench_sur: need labelled images with SUR curves (generated data)", file=sys.stderr)
        return 1
    targets = {p: jndplug.JNDTarget(args.weights, sur=p, kind="jnd") for p in args.sur}
    cache = ImageCache()
    rows = []
    for p in args.sur:
        pred_vs_orig, label_vs_orig, pred_vs_label, levels, nearest = [], [], [], [], []
        for rec in records:
            x = ImageCache.as_float(cache.get(rec.original))
            level = rec.level_for_sur(p)
            label = ImageCache.as_float(cache.get(rec.image_at(level)))
            pred = targets[p](x)
            pred_vs_orig.append(_psnr(pred, x))
            label_vs_orig.append(_psnr(label, x))
            pred_vs_label.append(_psnr(pred, label))
            levels.append(level)
            ladder = [0.0] + [distortion_measure(ImageCache.as_float(cache.get(path)), x) for path in rec.levels]
            nearest.append(int(np.argmin([abs(distortion_measure(pred, x) - m) for m in ladder])))
        levels_a, nearest_a = np.array(levels), np.array(nearest)
        row = {"sur": p, "images": len(records), "label_level_mean": float(levels_a.mean()),
               "psnr_pred_vs_original": float(np.mean(pred_vs_orig)),
               "psnr_label_vs_original": float(np.mean(label_vs_orig)),
               "psnr_pred_vs_label": float(np.mean(pred_vs_label)),
               "pred_level_mean": float(nearest_a.mean()),
               "level_exact": float(np.mean(nearest_a == levels_a)),
               "level_within1": float(np.mean(np.abs(nearest_a - levels_a) <= 1))}
        if train_records:
            train_levels = [r.level_for_sur(p) for r in train_records]
            mode = max(set(train_levels), key=train_levels.count)
            row.update(baseline_level=mode, baseline_exact=float(np.mean(levels_a == mode)),
                       baseline_within1=float(np.mean(np.abs(levels_a - mode) <= 1)))
        rows.append(row)
    print("| p | images | mean labelled level | mean predicted level | PSNR prediction vs original | "
          "PSNR label vs original | PSNR prediction vs label | level exact | level within one | "
          "baseline: most common level, exact / within one |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = (f"{r['baseline_level']}: {r['baseline_exact']:.2f} / {r['baseline_within1']:.2f}"
                if "baseline_level" in r else "n/a (no --split)")
        print(f"| {r['sur']} | {r['images']} | {r['label_level_mean']:.2f} | {r['pred_level_mean']:.2f} | "
              f"{r['psnr_pred_vs_original']:.2f} | {r['psnr_label_vs_original']:.2f} | {r['psnr_pred_vs_label']:.2f} | "
              f"{r['level_exact']:.2f} | {r['level_within1']:.2f} | {base} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
