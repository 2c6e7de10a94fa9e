"""Training crops: originals from ``--dataset`` and, in offline mode, the same crops of their JND images."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from jndplug.errors import user_error_message
from jndplug.imageio import ImageReadError, array_to_tensor, list_images, read_image
from jndplug.precompute import PrecomputedFolderError, check_precomputed
from jndplug.target import JNDTarget

from jndplug.integrations.compressai.codec import CodecError


def split_folders(root: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Training and test images: ``root/train`` and ``root/test`` when ``root/train`` exists (the
    layout of CompressAI's ImageFolder), otherwise every image under ``root`` and no test set."""
    root = Path(root)
    if root.is_file():
        raise CodecError(f"--dataset {root} is a file; it must be a folder of training images (or a folder with "
                         "train/ and test/ sub-folders): put the image in a folder and give that")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if (root / "train").is_dir():
        train = list_images(root / "train")
        test = list_images(root / "test") if (root / "test").is_dir() else []
    else:
        train, test = list_images(root), []
    if not train:
        raise CodecError(f"no training images found under {root / 'train' if (root / 'train').is_dir() else root}")
    return train, test


def check_images(files: list[Path], min_side: int, why: str) -> None:
    """Decode every image fully before any work starts, and refuse them all at once: unreadable files
    (a truncated JPEG passes a header check) and images with a side under ``min_side`` (``why``
    says what needs it)."""
    problems = []
    for path in tqdm(files, desc="checking images", unit="img", disable=len(files) < 100, leave=False):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # grayscale or alpha: said again when the image is used
                h, w = read_image(path).shape[:2]
        except (ImageReadError, OSError) as exc:
            problems.append(str(exc) if isinstance(exc, ImageReadError) else user_error_message(exc) or str(exc))
            continue
        if h < min_side or w < min_side:
            problems.append(f"{path} is {h}x{w}, smaller than {why}")
    if problems:
        raise CodecError(f"{len(problems)} of {len(files)} image(s) cannot be used: {'; '.join(problems[:10])}"
                         f"{f'; ... ({len(problems) - 10} more)' if len(problems) > 10 else ''}; fix or remove them")


def check_offline(root: Path, jnd_root: Path, files: list[Path], target: JNDTarget) -> None:
    """Refuse a precomputed folder made with other settings, missing some of the images or older
    than their sources (:func:`jndplug.precompute.check_precomputed`, the check BasicSR's adapter
    makes too); the error gives the ``jndplug precompute`` command that makes a matching one."""
    try:
        check_precomputed(root, jnd_root, target, files, name=lambda setting: f"--jnd-{setting}")
    except PrecomputedFolderError as exc:
        raise CodecError(f"--jnd-offline-dir {exc}") from None


class CropDataset(Dataset):
    """Crops of ``patch`` pixels: random (seeded by seed, epoch and image) for training, central
    for testing. With ``jnd_root`` each item is ``(original, jnd)``, cut at the same place."""

    def __init__(self, files: list[Path], root: Path, patch: int, *, seed: int = 0, random: bool = True,
                 jnd_root: Path | None = None):
        self.files, self.root, self.patch = files, root, patch
        self.seed, self.random, self.jnd_root = seed, random, jnd_root
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path = self.files[i]
        orig = array_to_tensor(read_image(path))
        h, w = orig.shape[-2:]
        if self.random:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + i)
            top = int(torch.randint(h - self.patch + 1, (1,), generator=g))
            left = int(torch.randint(w - self.patch + 1, (1,), generator=g))
        else:
            top, left = (h - self.patch) // 2, (w - self.patch) // 2
        box = (slice(None), slice(top, top + self.patch), slice(left, left + self.patch))
        if self.jnd_root is None:
            return orig[box]
        jnd_path = self.jnd_root / path.relative_to(self.root)
        jnd = array_to_tensor(read_image(jnd_path))
        if jnd.shape != orig.shape:
            raise CodecError(f"{jnd_path} is {tuple(jnd.shape[-2:])} but its original {path} is {(h, w)}; "
                             "the precomputed folder is stale: rerun `jndplug precompute`")
        return orig[box], jnd[box]


class EpochSampler(Sampler[int]):
    """A fresh permutation per epoch, seeded, that can start part-way (to resume mid-epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[self.skip:].tolist())

    def __len__(self) -> int:
        return self.n - self.skip
