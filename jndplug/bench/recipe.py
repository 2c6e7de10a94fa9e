"""What ``bench sr`` and ``bench codec`` share: the held-back split of the training photos, the
target images of every transform (cached on disk) and the seed-fixed random patch positions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from jndplug.bench.common import BenchError, spread
from jndplug.bench.screen import Transforms, options_of, parse_transform
from jndplug.imageio import list_images

# targets trained against the ground truth itself: no transform, nothing to precompute
UNTRANSFORMED = ("gt", "tolerant")


def transform_specs(targets: list[str], untransformed=UNTRANSFORMED) -> list[tuple]:
    """The screen transforms of ``targets`` (``parse_transform``: a JND target is its ``TargetSpec``),
    so a bad one fails before hours of training; ``gt`` required."""
    if "gt" not in targets:
        raise BenchError("--targets must include gt: every other target is compared with it seed by seed")
    return [parse_transform(t) for t in targets if t not in untransformed]


def split_photos(files: list[Path], n_train: int, n_val: int) -> tuple[list[Path], list[Path]]:
    """``n_train + n_val`` photos spread over the sorted list; every k-th is held back for validation."""
    chosen = spread(files, n_train + n_val)
    k = max(1, len(chosen) // max(1, n_val))
    val = chosen[::k][:n_val]
    held = set(val)
    return [f for f in chosen if f not in held], val


def training_files(root, n_train: int, n_val: int, fits=lambda path: True, what: str = "") -> tuple[list, list]:
    files = [f for f in sorted(list_images(root)) if fits(f)]
    if len(files) < n_train + n_val:
        raise BenchError(f"{root} holds {len(files)} images{what}; --train-images {n_train} and "
                         f"--val-images {n_val} need {n_train + n_val}")
    return split_photos(files, n_train, n_val)


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 to a float ``[3,H,W]`` tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0


def add_targets(data: dict, specs, estimator: str, cache_dir: Path) -> None:
    """The target image of every transform (and the estimator's JND map), per training photo.

    Kept in ``cache_dir`` under a name derived from the estimator file, the transforms and the
    photos, so the runs of several processes (one per architecture) and the final report share them.
    """
    from jndplug.target import JNDTarget

    key = hashlib.sha256(Path(estimator).read_bytes()).hexdigest()[:16] + json.dumps(
        [[label, options_of(what)] for label, what in specs] + data["files"], sort_keys=True)
    cache = cache_dir / f"targets_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    n = len(data["gt"])
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            data["targets"] = {label: [z[f"{label}/{i}"] for i in range(n)] for label, _ in specs}
            data["map"] = [z[f"map/{i}"] for i in range(n)]
        return
    transforms, jnd = Transforms(specs, estimator), JNDTarget(estimator, kind="jnd")
    data["targets"] = {label: [] for label, _ in specs}
    data["map"] = []
    for gt in tqdm(data["gt"], desc="targets", unit="img"):
        for label, y in transforms(gt).items():
            data["targets"][label].append(y)
        data["map"].append(jnd.jnd_map(to_tensor(gt)[None])[0, 0].numpy().astype(np.float16))
    arrays = {f"{label}/{i}": a for label, ims in data["targets"].items() for i, a in enumerate(ims)}
    arrays.update({f"map/{i}": m for i, m in enumerate(data["map"])})
    tmp = cache.with_name(cache.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(cache)


def run_name(*parts, target: str, seed: int) -> str:
    """A run folder's name: the parts, the target spelled for a file name, the seed."""
    return "_".join([*map(str, parts), target.replace(":", "_").replace("=", ""), f"seed{seed}"])


def save_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
