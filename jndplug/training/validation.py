"""Validation of an estimator during and after training, and which round counts as the best."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from pytorch_msssim import ssim
from tqdm import tqdm

from jndplug.errors import JNDPlugValueError
from jndplug.pixels import psnr
from jndplug.training.batches import ImageCache, target_path
from jndplug.training.datasets import Record

PSNR_CAP_DB = 99.0


def default_measure(img: torch.Tensor, ref: torch.Tensor) -> float:
    """Distortion of ``img`` relative to ``ref`` used to place a prediction among the levels."""
    from jndplug.datagen import distortion_measure  # the measure the levels were ordered by

    return float(distortion_measure(img, ref))


def _center_crop(t: torch.Tensor, size: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    ch, cw = min(size, h) // 32 * 32 or h, min(size, w) // 32 * 32 or w
    top, left = (h - ch) // 2, (w - cw) // 2
    return t[..., top:top + ch, left:left + cw]


@torch.no_grad()
def validate(model: nn.Module, records: list[Record], cache: ImageCache, cfg: dict, device: torch.device,
             measure=None) -> dict:
    """PSNR/SSIM of predictions against labelled JND images, and level agreement where levels exist."""
    model.eval()
    ps = cfg["val_sur"] if cfg["sur_conditioning"] else [None]
    rows = []
    for rec in records:
        x = _center_crop(ImageCache.as_float(cache.get(rec.original)), cfg["val_crop"])[None].to(device)
        for p in ps:
            y = _center_crop(ImageCache.as_float(cache.get(target_path(rec, p))), cfg["val_crop"])[None].to(device)
            pred = (model(x, sur=p) if p is not None else model(x)).clamp(0, 1)
            # capped: a prediction equal to its label must not make the mean over images infinite
            row = {"id": rec.id, "sur": p, "psnr": min(psnr(pred, y), PSNR_CAP_DB),
                   "ssim": float(ssim(pred.float(), y.float(), data_range=1.0))}
            if rec.levels and measure is not None:
                label = rec.level_for_sur(p) if p is not None else rec.label_level
                level_measures = [0.0] + [
                    measure(_center_crop(ImageCache.as_float(cache.get(path)), cfg["val_crop"]), x[0].cpu())
                    for path in rec.levels]
                m = measure(pred[0].cpu(), x[0].cpu())
                nearest = int(np.argmin([abs(m - lm) for lm in level_measures]))
                row.update(level_pred=nearest, level_label=label, level_exact=float(nearest == label),
                           level_error=float(abs(nearest - label)),
                           level_within1=float(abs(nearest - label) <= 1))
            rows.append(row)
    summary = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim")}
    if rows and "level_exact" in rows[0]:
        summary.update(level_exact=float(np.mean([r["level_exact"] for r in rows])),
                       level_error=float(np.mean([r["level_error"] for r in rows])),
                       level_within1=float(np.mean([r["level_within1"] for r in rows])))
    if cfg["sur_conditioning"]:
        for p in ps:
            sub = [r for r in rows if r["sur"] == p]
            summary[f"psnr@sur{p}"] = float(np.mean([r["psnr"] for r in sub]))
    model.train()
    return {"summary": summary, "rows": rows}


@torch.no_grad()
def detection_rates(model: nn.Module, records: list[Record], cache: ImageCache, cfg: dict, device: torch.device,
                    observer_model: str, n_observers: int = 20, seed: int = 0) -> dict:
    """How often the study's simulated observers would notice the predicted JND images.

    A good JND image sits just under the threshold: rarely noticed, yet not much less noticed than
    the labelled one. For every validation image (whole image, as observers see it) and SUR target
    this averages the simulated panel's probability of answering "noticeable" (same psychometric
    function, sensitivities and lapse rate as ``jndplug study simulate``) for the prediction and
    for the labelled JND image.
    """
    from jndplug.study.observers import make_observers
    from jndplug.study.visibility import make_model

    vis = make_model(observer_model)
    panel = make_observers(n_observers, seed, vis.key)
    ps = cfg["val_sur"] if cfg["sur_conditioning"] else [None]
    from jndplug.target import JNDTarget

    # the predictions users get: JNDTarget pads any size, so observers judge whole images
    targets = {p: JNDTarget(model, sur=p, device=device, kind="jnd") for p in ps}
    rows = []
    for rec in tqdm(records, desc=f"detection ({vis.name})", unit="image", leave=False):
        ref = cache.get(rec.original)
        x = ImageCache.as_float(ref)
        ref_u8 = _as_u8(ref)
        for p in ps:
            pred = targets[p](x)
            pred_u8 = (pred.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            label_u8 = _as_u8(cache.get(target_path(rec, p)))
            d_pred, d_label = vis.distance(ref_u8, pred_u8), vis.distance(ref_u8, label_u8)
            rows.append({"id": rec.id, "sur": p, "jod_distance_pred": d_pred, "jod_distance_label": d_label,
                         "detect_pred": float(np.mean([o.p_noticeable(d_pred) for o in panel])),
                         "detect_label": float(np.mean([o.p_noticeable(d_label) for o in panel]))})
    summary = {"observer_model": vis.key, "observers": n_observers}
    for p in ps:
        sub = [r for r in rows if r["sur"] == p]
        tag = "" if p is None else f"@sur{p}"
        summary[f"detect_pred{tag}"] = float(np.mean([r["detect_pred"] for r in sub]))
        summary[f"detect_label{tag}"] = float(np.mean([r["detect_label"] for r in sub]))
    return {"summary": summary, "rows": rows}


def _as_u8(t: torch.Tensor) -> np.ndarray:
    """An image from the cache as HxWx3 uint8, the form the visibility models take."""
    a = ImageCache.as_float(t).permute(1, 2, 0).numpy()
    return (a * 255.0).round().astype(np.uint8)


def selection_score(summary: dict, cfg: dict) -> float:
    """How good a validation round is by ``cfg["select"]``: higher is better."""
    if cfg["select"] == "level" and "level_error" not in summary:
        raise JNDPlugValueError("config select: level needs labelled levels (--data generated:...) "
                                "and level metrics (drop --no-level-metrics)")
    # PSNR breaks ties between rounds at the same level error
    return summary["psnr"] if cfg["select"] == "psnr" else -summary["level_error"] + 1e-3 * summary["psnr"]
