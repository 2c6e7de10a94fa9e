"""From records to tensors: the train/validation split, the image cache and the seeded batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import read_image
from jndplug.training.datasets import Record


def split_records(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Split by image, never by patch, reproducibly."""
    ids = sorted({r.id for r in records})
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    n_val = 0 if len(ids) < 2 else max(1, round(fraction * len(ids)))
    val_ids = set(ids[:n_val])
    return [r for r in records if r.id not in val_ids], [r for r in records if r.id in val_ids]


class ImageCache:
    """Decoded images kept in memory as uint8/uint16 tensors: decoding PNGs would dominate a CPU step."""

    def __init__(self):
        self._store: dict[Path, torch.Tensor] = {}

    def get(self, path: Path) -> torch.Tensor:
        t = self._store.get(path)
        if t is None:
            a = read_image(path)
            t = torch.from_numpy(a).permute(2, 0, 1).contiguous()
            self._store[path] = t
        return t

    @staticmethod
    def as_float(t: torch.Tensor) -> torch.Tensor:
        return t.float() / (65535.0 if t.dtype == torch.uint16 else 255.0) if t.dtype != torch.float32 else t


def target_path(rec: Record, p: float | None) -> Path:
    if p is not None:
        return rec.image_at(rec.level_for_sur(p))
    return rec.target or rec.original


def sample_batch(records: list[Record], cache: ImageCache, cfg: dict, step: int, rank: int = 0):
    """The batch of ``step``: a pure function of (seed, step, rank), so resumes are exact."""
    g = torch.Generator().manual_seed(int(cfg["seed"]) * 1_000_003 + step * 7919 + rank * 104_729)
    size = cfg["patch"]
    xs, ys, ps = [], [], []
    lo, hi = cfg["sur_range"]
    for _ in range(cfg["batch"]):
        rec = records[int(torch.randint(len(records), (1,), generator=g))]
        p = lo + (hi - lo) * float(torch.rand((), generator=g)) if cfg["sur_conditioning"] else None
        x, y = cache.get(rec.original), cache.get(target_path(rec, p))
        h, w = x.shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=g))
        left = int(torch.randint(w - size + 1, (1,), generator=g))
        x, y = x[:, top:top + size, left:left + size], y[:, top:top + size, left:left + size]
        flips = torch.rand(2, generator=g) < 0.5
        k = int(torch.randint(4, (1,), generator=g))
        for axis, flip in zip((-1, -2), flips.tolist()):
            if flip:
                x, y = x.flip(axis), y.flip(axis)
        x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
        xs.append(ImageCache.as_float(x))
        ys.append(ImageCache.as_float(y))
        ps.append(p)
    sur = torch.tensor(ps, dtype=torch.float32) if cfg["sur_conditioning"] else None
    return torch.stack(xs), torch.stack(ys), sur


def check_sizes(records: list[Record], cache: ImageCache, cfg: dict) -> None:
    for rec in records:
        x = cache.get(rec.original)
        for path in ([rec.target] if rec.target else []) + rec.levels:
            y = cache.get(path)
            if y.shape != x.shape:
                raise JNDPlugValueError(f"{path}: size {tuple(y.shape[1:])} differs from its original "
                                        f"{rec.original} {tuple(x.shape[1:])}")
        if min(x.shape[-2:]) < cfg["patch"]:
            raise JNDPlugValueError(f"{rec.original} is {x.shape[-2]}x{x.shape[-1]}, smaller than patch "
                                    f"{cfg['patch']}; "
                                    "lower the patch size in the config")
