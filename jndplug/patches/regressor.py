"""TinyPatchRegressor: patch-level visibility (quality score) regression on patch pairs.

Input: 9 channels, the clean patch, the fused distorted patch and their absolute difference (RGB
each, in [0,1]). Blocks of 3x3 convolution + GroupNorm + ReLU, global average pooling and one
linear output: the pair's score normalised to [0,1] by the collection's scale (1 = not visible).
Recipe: SmoothL1 (beta 0.05), Adam (lr 2e-3), batch 16, 20 epochs, early stopping on the
validation loss (patience 10, min_delta 1e-5), the best epoch's weights kept. Images, never
patches, are split into train / validation / test, so held-out numbers are about unseen images.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from jndplug.artifacts import json_field, load_artifact, module_tensors, save_artifact
from jndplug.errors import JNDPlugValueError
from jndplug.imageio import atomic_write
from jndplug.patches.extract import DATASET_SCHEMA
from jndplug.patches.collection import BUCKETS

REGRESSOR_FORMAT = "jndplug-patch-regressor/1"
DEFAULTS = {
    "epochs": 20, "batch": 16, "lr": 2e-3, "beta": 0.05, "patience": 10, "min_delta": 1e-5,
    "width": 32, "blocks": 3, "groups": 8, "split": [0.7, 0.15, 0.15], "seed": 0,
    "buckets": ["slight_flicker"],
}
SPLITS = ("train", "validation", "test")


class TinyPatchRegressor(nn.Module):
    def __init__(self, width: int = 32, blocks: int = 3, groups: int = 8):
        super().__init__()
        if width < 1 or blocks < 1 or groups < 1 or width % groups:
            raise JNDPlugValueError(f"TinyPatchRegressor needs width divisible by groups and blocks >= 1, "
                                    f"got width {width}, blocks {blocks}, groups {groups}")
        self.config = {"width": width, "blocks": blocks, "groups": groups}
        layers, c = [], 9
        for _ in range(blocks):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(groups, width), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,9,H,W]`` (see :func:`pair_input`) to ``[B]`` scores."""
        if x.ndim != 4 or x.shape[1] != 9:
            raise ValueError(f"TinyPatchRegressor takes [B,9,H,W] inputs, got {tuple(x.shape)}")
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)


def pair_input(clean: np.ndarray | torch.Tensor, fused: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``[B,S,S,3]`` uint8 clean and fused patches to the regressor's ``[B,9,S,S]`` float input."""
    c = torch.as_tensor(clean).permute(0, 3, 1, 2).float() / 255.0
    d = torch.as_tensor(fused).permute(0, 3, 1, 2).float() / 255.0
    return torch.cat([c, d, (c - d).abs()], dim=1)


@dataclass
class PatchPairs:
    """A patch-pair dataset in memory: ``clean`` and ``fused`` ``[N,20,20,3]`` uint8 and records."""

    clean: np.ndarray
    fused: np.ndarray
    records: list[dict]
    score_range: tuple[float, float]

    def targets(self) -> np.ndarray:
        lo, hi = self.score_range
        if any(r["MOS"] is None for r in self.records):
            raise JNDPlugValueError("some patches have no score (category-only source); the regressor needs scores")
        return np.array([(r["MOS"] - lo) / (hi - lo) for r in self.records], dtype=np.float32)

    def subset(self, mask: np.ndarray) -> "PatchPairs":
        idx = np.flatnonzero(mask)
        return PatchPairs(self.clean[idx], self.fused[idx], [self.records[i] for i in idx], self.score_range)


def load_patch_pairs(dataset: str | os.PathLike, buckets: list[str] | None = None) -> PatchPairs:
    """Read a dataset written by ``build_patch_dataset`` (all buckets, or those named)."""
    root = Path(dataset)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root} is not a finished patch-pair dataset (no dataset.json); "
                                "build it with `jndplug patches build`")
    meta = json.loads(meta_path.read_text())
    if meta.get("schema") != DATASET_SCHEMA:
        raise JNDPlugValueError(f"{meta_path}: not a {DATASET_SCHEMA} file")
    names = buckets or [b for b, c in meta["buckets"].items() if c["patches"]]
    unknown = set(names) - set(meta["buckets"])
    if unknown:
        raise JNDPlugValueError(f"unknown buckets {sorted(unknown)}; this dataset has {', '.join(meta['buckets'])}")
    clean, fused, records = [], [], []
    for bucket in names:
        if not meta["buckets"][bucket]["patches"]:
            continue
        recs = json.loads((root / bucket / "patches.json").read_text())
        files: dict[str, dict] = {}
        for r in recs:
            arrays = files.get(r["file"])
            if arrays is None:
                with np.load(root / bucket / r["file"]) as z:
                    arrays = files[r["file"]] = {k: z[k] for k in z.files}
            clean.append(arrays["clean"][r["index"]])
            fused.append(arrays[f"fused_{r['fusion_type']}"][r["index"]])
            records.append(r)
    if not records:
        raise JNDPlugValueError(f"{root}: no patches in buckets {', '.join(names)}")
    return PatchPairs(np.stack(clean), np.stack(fused), records, tuple(meta["score_range"]))


def split_images(image_ids, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, list[str]]:
    """Seeded split of image ids into train / validation / test, each non-empty."""
    ids = sorted(set(image_ids))
    if len(ids) < 3:
        raise JNDPlugValueError(f"need at least 3 distinct images to split into train/validation/test, got {len(ids)}")
    if len(fractions) != 3 or min(fractions) <= 0:
        raise JNDPlugValueError(f"split needs three positive fractions, got {fractions}")
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    total = sum(fractions)
    n_val = max(1, round(fractions[1] / total * len(ids)))
    n_test = max(1, round(fractions[2] / total * len(ids)))
    n_val = min(n_val, len(ids) - 2)
    n_test = min(n_test, len(ids) - n_val - 1)
    return {"validation": sorted(ids[:n_val]), "test": sorted(ids[n_val:n_val + n_test]),
            "train": sorted(ids[n_val + n_test:])}


def predict(model: nn.Module, pairs: PatchPairs, batch: int = 512) -> np.ndarray:
    """Normalised scores of every patch pair (1 = not visible)."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(pairs.records), batch):
            out.append(model(pair_input(pairs.clean[i:i + batch], pairs.fused[i:i + batch])))
    return torch.cat(out).numpy()


def fit_epochs(model: nn.Module, items, batch_loss, validate, cfg: dict, desc: str, progress: bool = True,
               min_delta: float = 0.0, patience: int | None = None) -> tuple[list[dict], int, float]:
    """Adam (``cfg["lr"]``) over mini-batches (``cfg["batch"]``) of ``items`` (indices, or their
    count) shuffled each epoch by a generator seeded with ``cfg["seed"]``, for up to
    ``cfg["epochs"]`` epochs. ``batch_loss(idx)`` is a mini-batch's loss; ``validate()`` (in eval
    mode, without gradients) gives the epoch's validation entries, ``val_loss`` among them. Keeps
    the weights of the epoch whose ``val_loss`` is lowest (by more than ``min_delta``) and stops
    after ``patience`` epochs without one. Returns the history, the best epoch and its loss."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    rng = np.random.default_rng(cfg["seed"])
    best, best_state, best_epoch, bad, history = math.inf, None, 0, 0, []
    bar = tqdm(range(1, cfg["epochs"] + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = rng.permutation(items)
        losses = []
        for i in range(0, len(order), cfg["batch"]):
            loss = batch_loss(order[i:i + cfg["batch"]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            scores = validate()
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), **scores})
        bar.set_postfix(train=f"{history[-1]['train_loss']:.4f}", val=f"{scores['val_loss']:.4f}")
        if scores["val_loss"] < best - min_delta:
            best, best_epoch, bad = scores["val_loss"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if patience is not None and bad >= patience:
                break
    bar.close()
    model.load_state_dict(best_state)
    return history, best_epoch, best


def train_regressor(dataset: str | os.PathLike, out: str | os.PathLike, config: dict | None = None,
                    progress: bool = True) -> dict:
    """Train a TinyPatchRegressor on a patch-pair dataset; returns the history and best epoch.

    Writes ``out/split.json``, ``out/log.json`` and ``out/regressor.safetensors`` (the best
    validation epoch's weights, with the config, score range and split in its metadata).
    """
    cfg = {**DEFAULTS, **(config or {})}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise JNDPlugValueError(f"unknown regressor config keys {sorted(unknown)} (known: "
                                f"{', '.join(sorted(DEFAULTS))})")
    bad_buckets = set(cfg["buckets"]) - set(BUCKETS)
    if bad_buckets:
        raise JNDPlugValueError(f"unknown buckets {sorted(bad_buckets)}; use {', '.join(BUCKETS)}")
    out = Path(out)
    everything = load_patch_pairs(dataset)
    split = split_images([r["image_id"] for r in everything.records], cfg["split"], cfg["seed"])
    bucket_of = np.array([r["bucket"] for r in everything.records])
    pairs = everything.subset(np.isin(bucket_of, cfg["buckets"]))
    image_of = np.array([r["image_id"] for r in pairs.records])
    train = pairs.subset(np.isin(image_of, split["train"]))
    val = pairs.subset(np.isin(image_of, split["validation"]))
    if not train.records or not val.records:
        which = "training" if not train.records else "validation"
        raise JNDPlugValueError(f"buckets {cfg['buckets']} have no patches of the {which} images; "
                                "use more images or other buckets")
    torch.manual_seed(cfg["seed"])
    model = TinyPatchRegressor(cfg["width"], cfg["blocks"], cfg["groups"])
    loss_fn = nn.SmoothL1Loss(beta=cfg["beta"])
    x_val, y_val = pair_input(val.clean, val.fused), torch.from_numpy(val.targets())
    y_train = torch.from_numpy(train.targets())
    history, best_epoch, best = fit_epochs(
        model, len(train.records),
        lambda idx: loss_fn(model(pair_input(train.clean[idx], train.fused[idx])), y_train[idx]),
        lambda: {"val_loss": loss_fn(model(x_val), y_val).item()},
        cfg, desc="regressor", progress=progress, min_delta=cfg["min_delta"], patience=cfg["patience"])
    result = {"history": history, "best_epoch": best_epoch, "best_val_loss": best,
              "stopped_early": len(history) < cfg["epochs"], "train_patches": len(train.records),
              "val_patches": len(val.records)}
    with atomic_write(out / "split.json", "w") as f:
        json.dump(split, f, indent=1)
    with atomic_write(out / "log.json", "w") as f:
        json.dump(result, f, indent=1)
    save_regressor(model, out / "regressor.safetensors",
                   {"training": cfg, "score_range": list(pairs.score_range), "split": split,
                    "dataset": str(dataset), "best_epoch": best_epoch, "best_val_loss": best})
    return result


def save_regressor(model: TinyPatchRegressor, path: str | os.PathLike, info: dict) -> Path:
    return save_artifact(path, module_tensors(model), REGRESSOR_FORMAT, {"config": model.config, "info": info},
                         "patch regressor")


def load_regressor(path: str | os.PathLike) -> TinyPatchRegressor:
    """A saved regressor in eval mode, with its training ``info`` (score range, split...) attached."""
    path = Path(path)
    tensors, meta = load_artifact(path, REGRESSOR_FORMAT, "patch regressor")
    model = TinyPatchRegressor(**json_field(path, meta, "config"))
    model.load_state_dict(tensors)
    model.info = json_field(path, meta, "info")
    return model.eval()
