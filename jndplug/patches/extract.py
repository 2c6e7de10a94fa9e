"""Patch pairs: grid geometry, RoI fusion, PSNR and the on-disk patch-pair dataset.

Geometry: each image is cut into ``PATCH_SIZE`` x ``PATCH_SIZE`` RGB patches on a grid of
``stride`` (default: non-overlapping, leftover border pixels unused), row-major. The central
``ROI_SIZE`` x ``ROI_SIZE`` square is the region of interest (RoI): rows and columns
``(PATCH_SIZE - ROI_SIZE) // 2`` up to that plus ``ROI_SIZE``, i.e. 4..15 of a 20x20 patch.

Fusion makes the distorted patch of a pair: outside the RoI it is the distorted image, inside it
``alpha * clean + (1 - alpha) * distorted`` (rounded to 8 bits). ``copy`` is ``alpha = 1`` (the
RoI is the clean reference), ``blend`` takes ``alpha`` from the caller, 0.5 by default.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jndplug import pixels
from jndplug.errors import JNDPlugValueError
from jndplug.imageio import atomic_write, read_image, to_8bit
from jndplug.patches.collection import PairCollection, PairItem, bucket_items

PATCH_SIZE = 20
ROI_SIZE = 12
FUSIONS = ("copy", "blend")
DATASET_SCHEMA = "jndplug-patch-pairs-v1"
PATCH_FIELDS = ("image_id", "patch_id", "coords", "distortion_type", "MOS", "PSNR", "fusion_type", "alpha")


def patch_grid(height: int, width: int, size: int = PATCH_SIZE, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the whole patches of an image, row-major."""
    stride = size if stride is None else stride
    if size < 1 or stride < 1:
        raise JNDPlugValueError(f"patch size and stride must be >= 1, got {size} and {stride}")
    return [(y, x) for y in range(0, height - size + 1, stride) for x in range(0, width - size + 1, stride)]


def roi_bounds(size: int = PATCH_SIZE, roi: int = ROI_SIZE) -> tuple[int, int]:
    """``(start, stop)`` of the central RoI along each axis of a patch."""
    if not 0 < roi <= size or (size - roi) % 2:
        raise JNDPlugValueError(f"the RoI ({roi}) must fit centrally in the patch ({size}): same parity, not larger")
    start = (size - roi) // 2
    return start, start + roi


def fuse(clean: np.ndarray, distorted: np.ndarray, fusion: str, alpha: float = 0.5,
         roi: int = ROI_SIZE) -> np.ndarray:
    """The fused distorted patch(es): ``[..., S, S, 3]`` uint8 arrays in, same shape out."""
    if clean.shape != distorted.shape or clean.dtype != np.uint8 or distorted.dtype != np.uint8:
        raise ValueError(f"fuse takes two uint8 arrays of one shape, got {clean.shape} {clean.dtype} "
                         f"and {distorted.shape} {distorted.dtype}")
    weight = fusion_alpha(fusion, alpha)
    a, b = roi_bounds(clean.shape[-2], roi)
    out = distorted.copy()
    mixed = weight * clean[..., a:b, a:b, :].astype(np.float64) + (1 - weight) * distorted[..., a:b, a:b, :]
    out[..., a:b, a:b, :] = np.round(mixed).astype(np.uint8)
    return out


def fusion_alpha(fusion: str, alpha: float) -> float:
    """The weight of the clean RoI for a fusion type."""
    if fusion == "copy":
        return 1.0
    if fusion == "blend":
        if not 0.0 <= alpha <= 1.0:
            raise JNDPlugValueError(f"blend alpha must be in [0, 1], got {alpha}")
        return float(alpha)
    raise JNDPlugValueError(f"unknown fusion {fusion!r}; use {' or '.join(FUSIONS)}")


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float | None:
    """PSNR in dB; None for identical inputs (infinite PSNR has no JSON form)."""
    value = pixels.psnr(a, b, peak)
    return None if math.isinf(value) else value


def _as_uint8(array: np.ndarray) -> np.ndarray:
    # 16-bit sources are stored at 8 bits: the patches feed 8-bit models and PSNR at peak 255
    return to_8bit(array)


def build_patch_dataset(collection: PairCollection, out: str | Path, fusions: tuple[str, ...] = FUSIONS,
                        alpha: float = 0.5, max_levels: int | None = None, stride: int = PATCH_SIZE,
                        max_patches_per_image: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Cut every bucketed pair of ``collection`` into fused patch pairs under ``out``.

    Writes ``out/<bucket>/arrays/<n>.npz`` (``clean`` and ``fused_<fusion>``, ``[P,20,20,3]``
    uint8, one file per distorted image), ``out/<bucket>/patches.json`` (one record per patch
    and fusion: the fields of ``PATCH_FIELDS`` plus ``level``, ``category``, ``bucket``,
    ``file`` and ``index``) and, last, ``out/dataset.json`` with the build settings and counts.
    The ``same_score`` bucket is always fused by ``blend``. ``max_patches_per_image`` keeps a
    seeded random subset of grid positions, the same for every distortion of an image.
    """
    for f in fusions:
        fusion_alpha(f, alpha)
    if not fusions:
        raise JNDPlugValueError("give at least one fusion (copy, blend)")
    out = Path(out)
    buckets, excluded = bucket_items(collection.items, max_levels)
    counts = {}
    total = sum(len(v) for v in buckets.values())
    bar = tqdm(total=total, desc="patch pairs", unit="image", disable=not progress)
    for bucket, items in buckets.items():
        bucket_fusions = ("blend",) if bucket == "same_score" else tuple(fusions)
        records = []
        for n, item in enumerate(items):
            records += _item_patches(item, out / bucket, n, bucket, bucket_fusions, alpha, stride,
                                     max_patches_per_image, seed)
            bar.update(1)
        if items:
            with atomic_write(out / bucket / "patches.json", "w") as f:
                json.dump(records, f)
        counts[bucket] = {"images": len(items), "patches": len(records)}
    bar.close()
    summary = {
        "schema": DATASET_SCHEMA, "source": collection.source, "score_range": list(collection.score_range),
        "patch": PATCH_SIZE, "roi": ROI_SIZE, "stride": stride, "fusions": list(fusions), "alpha": alpha,
        "max_levels": max_levels, "max_patches_per_image": max_patches_per_image, "seed": seed,
        "buckets": counts, "excluded_groups": excluded,
        "categories": dict(Counter(it.category for v in buckets.values() for it in v)),
    }
    # dataset.json last: its presence says the buckets beside it are complete
    with atomic_write(out / "dataset.json", "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def _item_patches(item: PairItem, bucket_dir: Path, n: int, bucket: str, fusions: tuple[str, ...], alpha: float,
                  stride: int, max_patches: int | None, seed: int) -> list[dict]:
    clean_img = _as_uint8(read_image(item.reference))
    dist_img = _as_uint8(read_image(item.distorted))
    if clean_img.shape != dist_img.shape:
        raise JNDPlugValueError(f"{item.distorted}: size {dist_img.shape[:2]} differs from its reference "
                                f"{item.reference} {clean_img.shape[:2]}")
    grid = patch_grid(*clean_img.shape[:2], PATCH_SIZE, stride)
    ids = np.arange(len(grid))
    if max_patches is not None and len(grid) > max_patches:
        rng = np.random.default_rng([seed, zlib.crc32(item.image_id.encode())])
        ids = np.sort(rng.choice(len(grid), max_patches, replace=False))
    if not len(ids):
        raise JNDPlugValueError(f"{item.reference} is smaller than one {PATCH_SIZE}x{PATCH_SIZE} patch")
    clean = np.stack([clean_img[grid[i][0]:grid[i][0] + PATCH_SIZE, grid[i][1]:grid[i][1] + PATCH_SIZE] for i in ids])
    dist = np.stack([dist_img[grid[i][0]:grid[i][0] + PATCH_SIZE, grid[i][1]:grid[i][1] + PATCH_SIZE] for i in ids])
    arrays = {"clean": clean}
    records = []
    rel = f"arrays/{n:06d}.npz"
    for fusion in fusions:
        fused = fuse(clean, dist, fusion, alpha)
        arrays[f"fused_{fusion}"] = fused
        for k, i in enumerate(ids):
            y, x = grid[i]
            records.append({
                "image_id": item.image_id, "patch_id": int(i), "coords": [int(y), int(x)],
                "distortion_type": item.distortion_type, "MOS": item.score, "PSNR": psnr(clean[k], fused[k]),
                "fusion_type": fusion, "alpha": fusion_alpha(fusion, alpha),
                "level": item.level, "category": item.category, "bucket": bucket,
                "distorted": item.distorted.name, "file": rel, "index": k,
            })
    with atomic_write(bucket_dir / rel) as f:
        np.savez(f, **arrays)
    return records
