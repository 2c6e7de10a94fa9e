"""Fit the JND profile's structural visibility network to the judgements of a patch-pair dataset.

The profile itself is :class:`jndplug.models.jnd_profile.JNDProfile`; this is its training on
``jndplug patches build`` output, split by image as for the regressor.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn

from jndplug.errors import JNDPlugValueError
from jndplug.models.jnd_profile import JNDProfile
from jndplug.patches.regressor import fit_epochs, load_patch_pairs, split_images


def train_structural_visibility(dataset: str | os.PathLike, config: dict | None = None,
                                progress: bool = True) -> tuple[JNDProfile, dict]:
    """Fit the structural visibility network to the judgements of a patch-pair dataset.

    A pair is labelled visible unless its category is ``no_flicker``. Images are split as for
    the regressor; the epoch with the lowest validation loss is kept. Returns the profile and
    ``{"history", "best_epoch", "split", ...}``.
    """
    defaults = {"epochs": 10, "batch": 64, "lr": 1e-3, "window": 20, "hidden": 16, "seed": 0,
                "split": [0.7, 0.15, 0.15], "buckets": None}
    cfg = {**defaults, **(config or {})}
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise JNDPlugValueError(f"unknown profile training keys {sorted(unknown)} (known: "
                                f"{', '.join(sorted(defaults))})")
    pairs = load_patch_pairs(dataset, cfg["buckets"])
    split = split_images([r["image_id"] for r in pairs.records], cfg["split"], cfg["seed"])
    image_of = np.array([r["image_id"] for r in pairs.records])
    visible = torch.tensor([r["category"] != "no_flicker" for r in pairs.records], dtype=torch.float32)
    clean = torch.from_numpy(pairs.clean).permute(0, 3, 1, 2).float() / 255.0
    fused = torch.from_numpy(pairs.fused).permute(0, 3, 1, 2).float() / 255.0
    train_idx = np.flatnonzero(np.isin(image_of, split["train"]))
    val_idx = torch.from_numpy(np.flatnonzero(np.isin(image_of, split["validation"])))
    if not len(train_idx) or not len(val_idx):
        raise JNDPlugValueError(f"{dataset}: no patches of the "
                                f"{'training' if not len(train_idx) else 'validation'} images")
    torch.manual_seed(cfg["seed"])
    profile = JNDProfile(cfg["window"], cfg["hidden"])
    loss_fn = nn.BCEWithLogitsLoss()

    def validate() -> dict:
        logit = profile.visibility_logit(clean[val_idx], fused[val_idx])
        return {"val_loss": loss_fn(logit, visible[val_idx]).item(),
                "val_accuracy": float(((logit > 0).float() == visible[val_idx]).float().mean())}

    history, best_epoch, best = fit_epochs(
        profile, train_idx, lambda idx: loss_fn(profile.visibility_logit(clean[idx], fused[idx]), visible[idx]),
        validate, cfg, desc="structural visibility", progress=progress)
    return profile.eval(), {"history": history, "best_epoch": best_epoch, "best_val_loss": best, "split": split,
                            "dataset": str(dataset), "config": cfg}
