"""The ``sur`` part of ``jndplug bench estimator``: does the satisfied-user ratio steer the estimator as it steers the labels?

For every labelled image (only the validation ids of ``--split`` when given) and every p of
``--sur-values``: the distortion of the prediction (PSNR against the original), of the labelled
level at p, and the prediction's PSNR against that label. A larger p should give a weaker
distortion (a higher PSNR against the original) for the predictions as it does for the labels.
Whole images, through ``JNDTarget``.

Level agreement: the level whose distortion (``jndplug.datagen.distortion_measure``) is nearest
the prediction's, against the labelled level at p, exact and within one. Two baselines put these
in context: the original itself as the prediction (its PSNR against the label is the "label vs
original" column), and always answering the level most often labelled at p among the training
images of ``--split`` (what a model that learned nothing about content scores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import jndplug
from jndplug.bench.common import BenchError
from jndplug.pixels import psnr


def sur_steering(weights: Path, data: list[str], split: str | None, values: list[float], device) -> list[dict]:
    from jndplug.datagen import distortion_measure
    from jndplug.training.datasets import read_source
    from jndplug.training.batches import ImageCache

    records = [r for spec in data for r in read_source(spec)]
    train_records = []
    if split:
        chosen = json.loads(Path(split).read_text())
        keep, seen = set(chosen["validation"]), set(chosen["train"])
        train_records = [r for r in records if r.id in seen]
        records = [r for r in records if r.id in keep]
    if not records or any(r.sur is None for r in records):
        raise BenchError("the sur part needs labelled images with satisfied-user curves (--data generated:DATASET "
                         "labelled by `jndplug study aggregate`)" + (f" among the validation ids of {split}" if split
                                                                     else ""))
    if not jndplug.JNDTarget(weights, kind="jnd").accepts_sur:
        raise BenchError(f"{weights} is not SUR-conditioned: its JND image does not depend on p, so the sur part "
                         "has nothing to measure (train one with sur_conditioning: true)")
    targets = {p: jndplug.JNDTarget(weights, sur=p, kind="jnd", device=device) for p in values}
    cache, rows = ImageCache(), []
    image = lambda path: ImageCache.as_float(cache.get(path))  # noqa: E731
    for p in values:
        pred_vs_orig, label_vs_orig, pred_vs_label, levels, nearest = [], [], [], [], []
        for rec in records:
            x = image(rec.original)
            level = rec.level_for_sur(p)
            label = image(rec.image_at(level))
            pred = targets[p](x)  # runs on device, comes back on the CPU
            pred_vs_orig.append(psnr(pred, x))
            label_vs_orig.append(psnr(label, x))
            pred_vs_label.append(psnr(pred, label))
            levels.append(level)
            ladder = [0.0] + [distortion_measure(image(path), x) for path in rec.levels]
            nearest.append(int(np.argmin([abs(distortion_measure(pred, x) - m) for m in ladder])))
        levels_a, nearest_a = np.array(levels), np.array(nearest)
        row = {"weights": str(weights), "sur": p, "images": len(records), "label_level_mean": float(levels_a.mean()),
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
    return rows


def sur_markdown(rows: list[dict]) -> list[str]:
    lines = ["| weights | p | images | mean labelled level | mean predicted level | PSNR prediction vs original | "
             "PSNR label vs original | PSNR prediction vs label | level exact | level within one | "
             "baseline: most common level, exact / within one |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = (f"{r['baseline_level']}: {r['baseline_exact']:.2f} / {r['baseline_within1']:.2f}"
                if "baseline_level" in r else "n/a (no --split)")
        lines.append(f"| {Path(r['weights']).name} | {r['sur']} | {r['images']} | {r['label_level_mean']:.2f} | "
                     f"{r['pred_level_mean']:.2f} | {r['psnr_pred_vs_original']:.2f} | "
                     f"{r['psnr_label_vs_original']:.2f} | {r['psnr_pred_vs_label']:.2f} | {r['level_exact']:.2f} | "
                     f"{r['level_within1']:.2f} | {base} |")
    return lines + [""]
