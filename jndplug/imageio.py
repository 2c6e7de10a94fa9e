"""Image files and arrays in and out of jndplug, with the checks every entry point shares.

Conventions: arrays are HxWx3 ``uint8`` or ``uint16``; tensors are float ``[3,H,W]`` or
``[B,3,H,W]`` in [0,1]. Grayscale and RGBA files are converted to RGB with a warning (alpha is
dropped, not composited, since JND is about the colour content). Every file write goes through
``atomic_write`` so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 16


class ImageReadError(ValueError):
    """A file could not be read as an image."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root`` (recursive, sorted, hidden files skipped)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such file or folder: {root}")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 (8-bit files) or uint16 (16-bit PNG files)."""
    path = Path(path)
    try:
        if _png_bit_depth(path) == 16:
            return _read_png16(path)
        with Image.open(path) as im:
            im.load()
            return pil_to_array(im, source=str(path))
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image file ({exc})") from exc


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 26:
        return None
    return head[24]


def _read_png16(path: Path) -> np.ndarray:
    # Pillow reads 16-bit RGB PNGs as 8-bit, silently; pypng keeps all 16 bits.
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = info["planes"]
    arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, planes)
    if planes in (2, 4):
        warnings.warn(f"{path}: alpha channel dropped", stacklevel=3)
        arr = arr[..., :-1]
    if arr.shape[2] == 1:
        warnings.warn(f"{path}: 16-bit grayscale converted to RGB", stacklevel=3)
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def pil_to_array(im: Image.Image, source: str = "image") -> np.ndarray:
    """A PIL image as HxWx3 uint8, or uint16 for 16-bit grayscale / 48-bit files."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        warnings.warn(f"{source}: 16-bit grayscale converted to RGB", stacklevel=3)
        arr = np.asarray(im).astype(np.uint16)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode == "RGB":
        return np.asarray(im).copy()
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        warnings.warn(f"{source}: alpha channel ({im.mode}) dropped", stacklevel=3)
    if im.mode in ("L", "LA", "1"):
        warnings.warn(f"{source}: grayscale ({im.mode}) converted to RGB", stacklevel=3)
    elif im.mode not in ("P", "PA", "RGBA"):
        warnings.warn(f"{source}: mode {im.mode} converted to RGB", stacklevel=3)
    return np.asarray(im.convert("RGB")).copy()


def write_image(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write HxWx3 uint8/uint16 (or HxW for maps) atomically; the format follows the suffix."""
    path = Path(path)
    if array.dtype == np.uint16:
        if path.suffix.lower() != ".png":
            raise ValueError(f"{path}: 16-bit images can only be written as PNG")
        import png  # Pillow cannot write 16-bit RGB

        rgb = array.ndim == 3
        writer = png.Writer(array.shape[1], array.shape[0], bitdepth=16, greyscale=not rgb)
        with atomic_write(path) as f:
            writer.write(f, array.reshape(array.shape[0], -1).tolist())
        return
    if array.dtype != np.uint8:
        raise TypeError(f"{path}: write_image takes uint8 or uint16 arrays, got {array.dtype}")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image file extension {path.suffix!r}")
    with atomic_write(path) as f:
        Image.fromarray(array).save(f, format=fmt)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8/uint16 (or float in [0,1]) array to a float32 ``[3,H,W]`` tensor in [0,1]."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(array).__name__}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 array, got shape {tuple(array.shape)}")
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype)
    if peak is None and not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"unsupported array dtype {array.dtype}; use uint8, uint16 or float in [0,1]")
    # converted straight into the result: one float32 copy of the image, not three
    t = torch.empty((3, *array.shape[:2]), dtype=torch.float32)
    t.copy_(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1))
    return t.div_(peak) if peak is not None else t


def tensor_to_array(t: torch.Tensor, dtype=np.uint8) -> np.ndarray:
    """Float ``[3,H,W]`` tensor in [0,1] to an HxWx3 array of ``dtype`` (uint8 or uint16), rounded."""
    if t.ndim != 3:
        raise ValueError(f"expected a [3,H,W] tensor, got shape {tuple(t.shape)}")
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(np.dtype(dtype))
    if peak is None:
        raise TypeError(f"tensor_to_array writes uint8 or uint16, not {dtype}")
    h, w = t.shape[-2:]
    out = np.empty((h, w, 3), dtype=dtype)
    rows = max(1, (1 << 22) // max(1, w))  # a few million values at a time: no full-size float copy
    for top in range(0, h, rows):
        a = t[:, top:top + rows].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        out[top:top + rows] = np.round(a * peak)
    return out


def to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """A PIL image or an HxWx3 uint8/uint16/float array as a float32 ``[3,H,W]`` tensor in [0,1]."""
    if isinstance(image, Image.Image):
        image = pil_to_array(image)
    return array_to_tensor(image)


def to_array(t: torch.Tensor, dtype=np.uint8) -> np.ndarray:
    """A ``[3,H,W]`` tensor in [0,1] as an HxWx3 uint8 (default) or uint16 array."""
    return tensor_to_array(t, dtype)


def to_pil(t: torch.Tensor) -> Image.Image:
    """A ``[3,H,W]`` tensor in [0,1] as an 8-bit RGB PIL image."""
    return Image.fromarray(tensor_to_array(t, np.uint8))


def check_image_tensor(x: torch.Tensor, name: str = "input", values: bool = True) -> None:
    """Raise a ValueError/TypeError naming the problem if ``x`` is not a batch or image in [0,1].

    ``values=False`` checks only type and shape, which cost nothing; the value check (NaN, Inf,
    range) reads one small result back from the tensor's device, a synchronisation on a GPU.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                        "convert PIL images or numpy arrays with jndplug.to_tensor()")
    if not x.is_floating_point():
        raise TypeError(f"{name} has integer dtype {x.dtype}; convert to float in [0,1] "
                        "(for uint8 data: x.float() / 255)")
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be [3,H,W] or [B,3,H,W], got shape {tuple(x.shape)}")
    channels = x.shape[-3]
    if channels != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels in dim -3, got {channels} "
                         f"(shape {tuple(x.shape)}); repeat grayscale to 3 channels, drop alpha")
    h, w = x.shape[-2:]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"{name} is {h}x{w}; jndplug needs images of at least {MIN_SIDE}x{MIN_SIDE}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not values:
        return
    # min and max propagate NaN and hold any Inf, so one reduction read back once answers both
    # questions, without a full-size isfinite mask
    lo, hi = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or Inf values")
    if hi > 1.0 + 1e-3 or lo < -1e-3:
        hint = " (values look like 0-255: divide by 255)" if hi > 2.0 else ""
        raise ValueError(f"{name} values must lie in [0,1], got range [{lo:.4g}, {hi:.4g}]{hint}")
