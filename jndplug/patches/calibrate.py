"""Threshold calibration: the regressor's scores binned into Green / Orange / Red.

The true class of a patch is its pair's visibility category: ``no_flicker`` is Green (not
visible), ``slight_flicker`` Orange (just noticeable), ``obvious_flicker`` Red. A predicted score
``p`` (1 = not visible) is Green when ``p >= green_at``, Red when ``p < red_below`` and Orange in
between. The two thresholds maximise balanced accuracy (mean per-class recall, over the classes
present) on the validation images; accuracy, balanced accuracy and the confusion matrix are then
reported on the test images, which neither training nor calibration saw.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import atomic_write

CLASSES = ("green", "orange", "red")
CATEGORY_CLASS = {"no_flicker": 0, "slight_flicker": 1, "obvious_flicker": 2}
MAX_CANDIDATES = 201


def classify(scores: np.ndarray, green_at: float, red_below: float) -> np.ndarray:
    """Class index per score: 0 green, 1 orange, 2 red."""
    scores = np.asarray(scores)
    return np.where(scores >= green_at, 0, np.where(scores < red_below, 2, 1))


def evaluate(true: np.ndarray, pred: np.ndarray) -> dict:
    """Accuracy, balanced accuracy and the 3x3 confusion matrix (rows true, columns predicted)."""
    true, pred = np.asarray(true), np.asarray(pred)
    if not len(true):
        raise JNDPlugValueError("nothing to evaluate: no patches")
    confusion = np.zeros((3, 3), dtype=int)
    np.add.at(confusion, (true, pred), 1)
    present = confusion.sum(1) > 0
    recalls = np.diag(confusion)[present] / confusion.sum(1)[present]
    return {"n": int(len(true)), "accuracy": float(np.diag(confusion).sum() / len(true)),
            "balanced_accuracy": float(recalls.mean()), "classes": list(CLASSES),
            "confusion": confusion.tolist()}


def fit_thresholds(scores: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """``(green_at, red_below)`` maximising balanced accuracy; ties go to the first pair found."""
    scores, true = np.asarray(scores, dtype=np.float64), np.asarray(true)
    if not len(scores):
        raise JNDPlugValueError("no patches to calibrate on")
    uniq = np.unique(scores)
    # candidate cuts: below everything, between neighbours, above everything (at most MAX_CANDIDATES)
    cuts = np.concatenate([[uniq[0] - 1], (uniq[1:] + uniq[:-1]) / 2, [uniq[-1] + 1]])
    if len(cuts) > MAX_CANDIDATES:
        cuts = np.unique(np.quantile(cuts, np.linspace(0, 1, MAX_CANDIDATES)))
    # at_least[c, k]: patches of class c scoring >= cuts[k]
    at_least = np.stack([len(s) - np.searchsorted(np.sort(s), cuts, side="left")
                         for s in (scores[true == c] for c in range(3))])
    n = np.array([(true == c).sum() for c in range(3)])
    present = n > 0
    k = len(cuts)
    g = at_least[:, :, None]  # green_at = cuts[i] along rows
    r = at_least[:, None, :]  # red_below = cuts[j] along columns
    recall = np.stack([np.broadcast_to(g[0], (k, k)) / max(n[0], 1),      # green: score >= green_at
                       (r[1] - g[1]) / max(n[1], 1),                     # orange: red_below <= score < green_at
                       np.broadcast_to(n[2] - r[2], (k, k)) / max(n[2], 1)])  # red: score < red_below
    bal = recall[present].mean(0)
    bal[np.triu_indices(len(cuts), 1)] = -1  # red_below (column) must not exceed green_at (row)
    i, j = np.unravel_index(np.argmax(bal), bal.shape)
    return float(cuts[i]), float(cuts[j])


def calibrate(run: str | os.PathLike, dataset: str | os.PathLike, buckets: list[str] | None = None,
              out: str | os.PathLike | None = None) -> dict:
    """Fit thresholds on the run's validation images, report on its test images.

    ``run`` is a folder written by ``train_regressor``; ``dataset`` the patch-pair dataset
    (all buckets by default). Writes ``calibration.json`` into ``out`` (default: ``run``).
    """
    from jndplug.patches.regressor import load_patch_pairs, load_regressor, predict

    run = Path(run)
    model = load_regressor(run / "regressor.safetensors")
    split = model.info["split"]
    pairs = load_patch_pairs(dataset, buckets)
    image_of = np.array([r["image_id"] for r in pairs.records])
    true = np.array([CATEGORY_CLASS[r["category"]] for r in pairs.records])
    scores = predict(model, pairs)
    fit, held = np.isin(image_of, split["validation"]), np.isin(image_of, split["test"])
    if not fit.any() or not held.any():
        raise JNDPlugValueError(f"{dataset}: no patches of the run's "
                                f"{'validation' if not fit.any() else 'test'} images "
                                f"in buckets {buckets or 'all'}")
    green_at, red_below = fit_thresholds(scores[fit], true[fit])
    report = {"thresholds": {"green_at": green_at, "red_below": red_below},
              "rule": "green if score >= green_at, red if score < red_below, orange otherwise",
              "validation": evaluate(true[fit], classify(scores[fit], green_at, red_below)),
              "test": evaluate(true[held], classify(scores[held], green_at, red_below)),
              "buckets": buckets or "all", "dataset": str(dataset)}
    with atomic_write(Path(out or run) / "calibration.json", "w") as f:
        json.dump(report, f, indent=1)
    return report
