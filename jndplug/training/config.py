"""The training config: its keys, their defaults, and the checks that run before any work starts."""

from __future__ import annotations

import shlex

from jndplug.errors import JNDPlugValueError
from jndplug.pixels import MS_SSIM_MIN_SIDE

DEFAULTS: dict = {
    "arch": "unet",
    "model": {},  # architecture config (see jndplug.create_estimator)
    "patch": 256,
    "batch": 8,
    "steps": 3000,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "warmup": 100,
    "clip": 1.0,
    # Zhao et al. (2017): a mix of MS-SSIM and L1 trains image-to-image networks better than either
    "loss": {"l1": 0.16, "ms_ssim": 0.84},
    "val_fraction": 0.1,
    "val_every": 250,
    "val_crop": 512,
    "patience": 6,
    "seed": 0,
    "sur_conditioning": False,
    "sur_range": [0.5, 0.95],
    "val_sur": [0.5, 0.75, 0.95],
    "checkpoint_every": 250,
    "amp": True,
    "layouts": {},
    # start from an estimator file (path or pretrained name) of the same architecture and config
    "init": None,
    # which validation round "best" is: highest PSNR against the labels, or the smallest level error
    # (the prediction's distortion placed among the labelled levels); an energy-matched prediction
    # is worse in PSNR than a shrunken one by construction, so it is chosen by level
    "select": "psnr",
}
SELECT = ("psnr", "level")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def resolve_config(overrides: dict) -> dict:
    if not isinstance(overrides, dict):
        raise JNDPlugValueError(f"the training config must be a mapping of config keys to values, got "
                                f"{type(overrides).__name__} {overrides!r:.60}")
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise JNDPlugValueError(f"unknown training config keys: {', '.join(sorted(unknown))} "
                                f"(known: {', '.join(sorted(DEFAULTS))})")
    cfg = {**DEFAULTS, **overrides}
    for key in ("patch", "batch", "steps", "lr", "weight_decay", "warmup", "clip", "val_fraction", "val_every",
                "val_crop", "patience", "seed", "checkpoint_every"):
        # YAML reads 5e-4 as a string (it wants 5.0e-4): say so here rather than deep in the optimiser
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], (int, float)):
            raise JNDPlugValueError(f"config {key} must be a number, got {cfg[key]!r}"
                                    + (" (YAML needs a decimal point in 5.0e-4)" if isinstance(cfg[key], str) else ""))
    # a wrong type here would otherwise surface as a TypeError deep inside training
    for key in ("model", "loss", "layouts"):
        if not isinstance(cfg[key], dict):
            raise JNDPlugValueError(f"config {key} must be a mapping (key: value lines), got {cfg[key]!r:.60}")
    for kind, layout in cfg["layouts"].items():
        if not isinstance(layout, dict):
            raise JNDPlugValueError(f"config layouts.{kind} must be a mapping of folder roles to name lists, "
                                    f"got {layout!r:.60}")
    if not isinstance(cfg["arch"], str):
        raise JNDPlugValueError(f"config arch must be an architecture name, got {cfg['arch']!r:.60}")
    for key in ("sur_conditioning", "amp"):
        if not isinstance(cfg[key], bool):
            raise JNDPlugValueError(f"config {key} must be true or false, got {cfg[key]!r:.60}")
    if not all(_is_number(w) for w in cfg["loss"].values()):
        raise JNDPlugValueError(f"config loss weights must be numbers, got {cfg['loss']!r:.60}")
    if not (isinstance(cfg["sur_range"], list) and len(cfg["sur_range"]) == 2 and all(map(_is_number, cfg["sur_range"]))):
        raise JNDPlugValueError(f"config sur_range must be a pair [lo, hi] of numbers, got {cfg['sur_range']!r:.60}")
    if not (isinstance(cfg["val_sur"], list) and all(_is_number(v) and 0 < v <= 1 for v in cfg["val_sur"])):
        raise JNDPlugValueError(f"config val_sur must be a list of ratios in (0, 1], got {cfg['val_sur']!r:.60}")
    if cfg["select"] not in SELECT:
        raise JNDPlugValueError(f"config select must be one of {', '.join(SELECT)}, got {cfg['select']!r:.60}")
    if cfg["init"] is not None and not isinstance(cfg["init"], str):
        raise JNDPlugValueError(f"config init must be an estimator file path or pretrained name, got "
                                f"{cfg['init']!r:.60}")
    # the terms are torch code: imported here, so that `jndplug train --help` (which shows DEFAULTS) needs no torch
    from jndplug.training.terms import LOSS_TERMS

    bad = set(cfg["loss"]) - set(LOSS_TERMS)
    if bad:
        raise JNDPlugValueError(f"unknown loss terms {sorted(bad)}; use {', '.join(LOSS_TERMS)}")
    from jndplug.models import size_divisor  # imports timm: only once a config is resolved

    divisor = size_divisor(cfg["arch"], **cfg["model"])
    if "ms_ssim" in cfg["loss"] and cfg["patch"] < MS_SSIM_MIN_SIDE:
        loss = dict(cfg["loss"])
        ssim = loss.pop("ms_ssim") + loss.pop("ssim", 0)
        flow = "{" + ", ".join(f"{k}: {v!r}" for k, v in {**loss, "ssim": ssim}.items()) + "}"
        raise JNDPlugValueError(
            f"loss ms_ssim needs patch >= {MS_SSIM_MIN_SIDE}, got {cfg['patch']}; add "
            f"{shlex.join(['--set', f'loss={flow}'])} (the same loss with ssim for ms_ssim; in a config file "
            f"loss: {flow}), or set patch to {-(-MS_SSIM_MIN_SIDE // divisor) * divisor} or more")
    if cfg["patch"] % divisor:
        raise JNDPlugValueError(f"patch must be a multiple of {divisor} (the size divisor of architecture "
                                f"{cfg['arch']}), got {cfg['patch']}")
    for key in ("batch", "steps", "val_every", "checkpoint_every"):
        if int(cfg[key]) < 1:
            raise JNDPlugValueError(f"{key} must be >= 1")
    lo, hi = cfg["sur_range"]
    if not 0 < lo <= hi <= 1:
        raise JNDPlugValueError(f"sur_range must satisfy 0 < lo <= hi <= 1, got {cfg['sur_range']}")
    if cfg["sur_conditioning"]:
        cfg["model"] = {**cfg["model"], "sur_conditioning": True}
    return cfg
