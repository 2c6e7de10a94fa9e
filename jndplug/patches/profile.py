"""Fit the JND profile's structural visibility network to the judgements of a patch-pair dataset.

The profile itself is :class:`jndplug.models.jnd_profile.JNDProfile`; this is its training on
``jndplug patches build`` output, split by image as for the regressor.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

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


def train_on_study(source: str, config: dict | None = None, progress: bool = True) -> tuple[JNDProfile, dict]:
    """Fit the profile to a study's judgements of whole images (``generated:DATASET[,LABELS]``, a
    ``jndplug datagen`` dataset labelled by ``jndplug study aggregate``).

    Patch pairs label every patch of a noticed image as visible, also where the change is nil: for
    a distortion whose size varies across the image (a sharpening: halos at edges, nothing in flat
    regions) that says nothing about where it was seen. Here a level image is noticed with
    probability ``sigmoid(slope * log r)``, ``r`` the Minkowski mean (exponent ``pooling``) over the
    image of the luma change in units of the profile, and the target is the panel's fraction who
    noticed it (one minus the level's satisfied-user ratio): the image-level judgement decides how
    the per-pixel threshold is shaped. With ``structure=False`` only the threshold's overall scale
    and the slope are fitted (the analytic profile, the baseline a learned structure must beat).
    Images are split as for the regressor; the epoch with the lowest validation loss is kept.
    """
    from jndplug.data.layout import JNDDataset, find_labels, read_labels
    from jndplug.data.specs import parse_spec
    from jndplug.imageio import read_image, to_tensor
    from jndplug.models.jnd_profile import luminance

    defaults = {"epochs": 40, "batch": 4, "lr": 3e-3, "window": 20, "hidden": 16, "seed": 0,
                "split": [0.7, 0.15, 0.15], "pooling": 4.0, "structure": True}
    cfg = {**defaults, **(config or {})}
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise JNDPlugValueError(f"unknown profile training keys {sorted(unknown)} (known: "
                                f"{', '.join(sorted(defaults))})")
    if not cfg["pooling"] >= 1:
        raise JNDPlugValueError(f"pooling must be a Minkowski exponent >= 1, got {cfg['pooling']}")
    _, path = parse_spec(source, ("generated",))
    root, _, labels_arg = path.partition(",")
    ds = JNDDataset(root)
    labels = read_labels(find_labels(ds.root, labels_arg or None, source))["images"]
    ids = [i for i in ds.ids if labels.get(i, {}).get("sur")]
    if len(ids) < 3:
        raise JNDPlugValueError(f"{source}: {len(ids)} labelled images; the study must label at least 3")
    originals, changes, noticed = {}, {}, {}
    for i in ids:
        x = to_tensor(read_image(ds.original_path(i)))[None]
        y = luminance(x)
        originals[i] = x
        # |luma change| in 8-bit levels per level image, kept in half precision (it is rounded to
        # levels anyway)
        changes[i] = torch.cat([(luminance(to_tensor(read_image(ds.level_path(i, k)))[None]) - y).abs()
                                for k in range(1, ds.n_levels + 1)]).half()
        noticed[i] = 1.0 - torch.tensor(labels[i]["sur"], dtype=torch.float32)
    split = split_images(ids, cfg["split"], cfg["seed"])
    torch.manual_seed(cfg["seed"])
    profile = JNDProfile(cfg["window"], cfg["hidden"])
    if not cfg["structure"]:  # only the last bias (the overall scale) and the slope
        for p in profile.structure_net.parameters():
            p.requires_grad_(False)
        profile.structure_net[-1].bias.requires_grad_(True)
    beta = float(cfg["pooling"])

    def logits(i: str) -> torch.Tensor:
        t = profile.components(originals[i])["jnd"]
        r = (changes[i].float() / t).pow(beta).mean(dim=(1, 2, 3)).pow(1 / beta)
        return profile.log_slope.exp() * torch.log(r + 1e-6)

    def loss_of(names) -> torch.Tensor:
        return torch.stack([F.binary_cross_entropy_with_logits(logits(i), noticed[i]) for i in names]).mean()

    def validate() -> dict:
        names = split["validation"]
        p = torch.cat([torch.sigmoid(logits(i)) for i in names])
        q = torch.cat([noticed[i] for i in names])
        return {"val_loss": loss_of(names).item(), "val_mae": float((p - q).abs().mean())}

    train_ids = np.array(split["train"])
    history, best_epoch, best = fit_epochs(
        profile, np.arange(len(train_ids)), lambda idx: loss_of(train_ids[idx]), validate,
        {**cfg, "lr": cfg["lr"]}, desc="profile on study", progress=progress)
    test = split["test"]
    with torch.no_grad():
        profile.eval()
        p = torch.cat([torch.sigmoid(logits(i)) for i in test])
        q = torch.cat([noticed[i] for i in test])
        scores = {"test_loss": loss_of(test).item(), "test_mae": float((p - q).abs().mean())}
    return profile.eval().requires_grad_(False), {"history": history, "best_epoch": best_epoch,
                                                  "best_val_loss": best, "split": split, "dataset": source, "config": cfg, **scores}
