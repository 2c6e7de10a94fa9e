"""Source photographs: discovery, categories, 16:9 centre crop, downscale, and skip reasons."""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from jndplug.imageio import ImageReadError, list_images, read_image, to_8bit

# Photograph formats only; the other formats read_image knows are left out on purpose.
SOURCE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Source:
    path: Path
    root: Path
    category: str


@dataclass
class PreparedImage:
    source: Source
    image: np.ndarray  # HxWx3 uint8, 16:9, downscaled
    crop_box: tuple[int, int, int, int]  # left, top, right, bottom in source pixels
    source_size: tuple[int, int]  # width, height
    warnings: list[str]


class SkipImage(Exception):
    """A source image that cannot be used; the message is the reason, listed in the manifest."""


def find_sources(roots) -> list[Source]:
    """Every source image under the folders; category = first-level sub-folder (else the folder's name)."""
    found: dict[Path, Source] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"source folder not found: {root}")
        base = root if root.is_dir() else root.parent
        for p in list_images(root):
            if p.suffix.lower() not in SOURCE_EXTENSIONS:
                continue
            rel = p.relative_to(base)
            category = rel.parts[0] if len(rel.parts) > 1 else base.resolve().name
            found.setdefault(p.resolve(), Source(p.resolve(), base.resolve(), category))
    return sorted(found.values(), key=lambda s: (str(s.root), str(s.path)))


def image_id(source: Source) -> str:
    """A file-name-safe id, ``<category>_<stem>``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{source.category}_{source.path.stem}").strip("-.")


def disambiguated_id(source: Source) -> str:
    """The id with a short hash of the path, for two sources that would share an id."""
    return f"{image_id(source)}_{hashlib.sha1(str(source.path).encode()).hexdigest()[:8]}"


def crop_16_9(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred 16:9 box (left, top, right, bottom) inside a width x height image."""
    if width * 9 > height * 16:
        w, h = round(height * 16 / 9), height
    else:
        w, h = width, round(width * 9 / 16)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def target_size(width: int, height: int, size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """Size after downscaling into ``size`` (and ``max_side``), keeping the aspect; never upscales."""
    scale = min(1.0, size[0] / width, size[1] / height)
    if max_side:
        scale = min(scale, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def prepare(source: Source, size: tuple[int, int], min_side: int, max_side: int | None = None) -> PreparedImage:
    """Read, convert, crop to 16:9 and downscale one source; raises SkipImage with the reason."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            arr = read_image(source.path)
        except ImageReadError as exc:
            raise SkipImage(f"unreadable: {exc}") from None
        except OSError as exc:
            raise SkipImage(f"unreadable: {exc}") from None
    notes = [str(w.message) for w in caught]
    if arr.dtype == np.uint16:
        notes.append(f"{source.path}: 16-bit image reduced to 8 bits")
        arr = to_8bit(arr)
    height, width = arr.shape[:2]
    box = crop_16_9(width, height)
    cw, ch = box[2] - box[0], box[3] - box[1]
    if min(cw, ch) < min_side:
        raise SkipImage(f"too small: {width}x{height}, its 16:9 crop is {cw}x{ch}, "
                        f"shorter side under the minimum {min_side}")
    out_w, out_h = target_size(cw, ch, size, max_side)
    im = Image.fromarray(arr).crop(box)
    if (out_w, out_h) != (cw, ch):
        im = im.resize((out_w, out_h), Image.LANCZOS)
    return PreparedImage(source, np.asarray(im).copy(), box, (width, height), notes)
