"""Image files and arrays in and out of jndplug, with the checks every entry point shares.

Conventions: arrays are HxWx3 ``uint8`` or ``uint16``; tensors are float ``[3,H,W]`` or
``[B,3,H,W]`` in [0,1]. Grayscale and RGBA files are converted to RGB with a warning (alpha is
dropped, not composited, since JND is about the colour content). Every file write goes through
``atomic_write`` so an interrupted run never leaves a half-written file behind.

Reading (``read_image``) is the one way in for files: it applies the EXIF orientation, refuses
images over ``max_pixels()`` before decoding them, and turns every decoder failure into an
``ImageReadError`` naming the file, so a folder run reports a bad file and goes on.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import struct
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from jndplug.errors import JNDPlugTypeError, JNDPlugValueError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 16


class ImageReadError(JNDPlugValueError):
    """A file could not be read as an image."""


# Pillow's own refusal threshold (twice PIL.Image.MAX_IMAGE_PIXELS by default, about 13400x13400)
DEFAULT_MAX_PIXELS = 2 * 89_478_485
PIXELS_ENV = "JNDPLUG_MAX_PIXELS"


def max_pixels() -> int:
    """The largest image (width x height) any jndplug read accepts: ``$JNDPLUG_MAX_PIXELS`` or the default."""
    raw = os.environ.get(PIXELS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise JNDPlugValueError(f"{PIXELS_ENV}={raw!r}: expected a positive number of pixels, e.g. 400000000")
    return value


def _check_pixels(path, width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise ImageReadError(f"{path}: {width}x{height} is {width * height:,} pixels, over the limit of "
                             f"{limit:,} (a decompression bomb, or a very large image); to read it, raise "
                             f"{PIXELS_ENV}")


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


# mkstemp's names: prefix + 8 characters from [a-z0-9_] + suffix
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def sweep_stale_temps(root: str | os.PathLike, owned=lambda target: True,
                      min_age_s: float = float("inf")) -> list[Path]:
    """Delete the temporary files ``atomic_write`` left under ``root`` when its process was killed.

    A temporary goes if ``owned(target)`` (the file it was to become is written by the calling
    process alone, so the temporary cannot be live) or once it is older than ``min_age_s`` (a live
    one is being written, so its modification time is recent). Returns the deleted paths.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    now, gone = time.time(), []
    for tmp in root.rglob(".*.tmp"):
        m = _TEMP_NAME.match(tmp.name)
        if not m or not tmp.is_file():
            continue
        try:
            if owned(tmp.with_name(m["target"])) or now - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink()
                gone.append(tmp)
        except FileNotFoundError:
            pass  # renamed into place or swept meanwhile
    return gone


def list_images(root: str | os.PathLike, unreadable: list[OSError] | None = None) -> list[Path]:
    """All image files under ``root`` (recursive, sorted, hidden files skipped).

    A folder that cannot be listed is never silently skipped: its error is appended to
    ``unreadable`` when a list is given (for a caller that reports per file), raised otherwise.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such file or folder: {root}")

    def refused(exc: OSError) -> None:
        if unreadable is None:
            raise exc
        unreadable.append(exc)

    return sorted(Path(folder) / name for folder, _, names in os.walk(root, onerror=refused) for name in names
                  if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith(".")
                  and os.path.isfile(os.path.join(folder, name)))


def check_output_path(src: str | os.PathLike, dst: str | os.PathLike, *, inside_ok: bool = False) -> None:
    """Refuse an output (file or folder) that is, or contains, the input: it would overwrite originals.

    ``inside_ok``: an output folder inside an input folder is allowed (the caller then leaves the
    output folder out of its inputs).
    """
    s, d = Path(src).resolve(), Path(dst).resolve()
    if d == s:
        raise JNDPlugValueError(f"output {dst} is the input {src}: the originals would be overwritten; "
                         "give a separate output")
    if d in s.parents:
        raise JNDPlugValueError(f"output folder {dst} contains the input {src}: outputs could overwrite "
                         "originals; give a folder outside it")
    if not inside_ok and s in d.parents:
        raise JNDPlugValueError(f"destination {dst} must not be inside the source folder {src}; "
                         "give a folder outside it")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 (8-bit files) or uint16 (16-bit PNG and TIFF files).

    The EXIF orientation is applied, as OpenCV's ``imread`` and Pillow's ``ImageOps.exif_transpose``
    do, so the array is upright. A file over ``max_pixels()`` is refused before it is decoded. Any
    failure to read (other than a missing file) raises ``ImageReadError`` naming the file.
    """
    path = Path(path)
    limit = max_pixels()
    try:
        with open(path, "rb") as f:
            head = f.read(26)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26:
            width, height = struct.unpack(">II", head[16:24])
            _check_pixels(path, width, height, limit)
            if head[24] == 16:
                return _read_png16(path)
        elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            array = _read_tiff_deep(path, limit)
            if array is not None:
                return array
        return _read_pillow(path, limit)
    except (FileNotFoundError, ImageReadError):
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's problem, not the run's
        raise ImageReadError(f"{path}: not a readable image file ({type(exc).__name__}: {exc})") from exc


def _read_pillow(path: Path, limit: int) -> np.ndarray:
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if pillow_limit is not None and limit > 2 * pillow_limit:
        # one limit for every read: a larger JNDPLUG_MAX_PIXELS lifts Pillow's refusal with it
        Image.MAX_IMAGE_PIXELS = -(-limit // 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit above decides
        im = Image.open(path)
    with im:
        _check_pixels(path, *im.size, limit)
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        return pil_to_array(im, source=str(path))


def _read_png16(path: Path) -> np.ndarray:
    # Pillow reads 16-bit RGB PNGs as 8-bit, silently; pypng keeps all 16 bits.
    import png

    with open(path, "rb") as f:  # png.Reader(filename=...) would leave its file open
        width, height, rows, info = png.Reader(file=f).asDirect()
        arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, info["planes"])
    return _orient(_deep_to_rgb(arr, str(path)), _png_orientation(path))


def _read_tiff_deep(path: Path, limit: int) -> np.ndarray | None:
    """A TIFF with more than 8 bits per sample (Pillow reads 16-bit RGB as 8-bit); None otherwise."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        if page.bitspersample <= 8:
            return None
        _check_pixels(path, page.imagewidth, page.imagelength, limit)
        if page.axes not in ("YX", "YXS", "SYX"):
            raise ImageReadError(f"{path}: TIFF with axes {page.axes} {page.shape}; jndplug reads single "
                                 "grayscale or colour images")
        if page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
            # palette indices or inverted grey would be taken as intensities
            raise ImageReadError(f"{path}: {page.bitspersample}-bit {page.photometric.name} TIFF; jndplug reads "
                                 "16-bit grayscale (min-is-black) and RGB TIFFs: convert it to one of those")
        arr = page.asarray()
        if page.axes == "SYX":
            arr = np.moveaxis(arr, 0, -1)
        tag = page.tags.get(274)
        orientation = int(tag.value) if tag is not None else 1
    return _orient(_deep_to_rgb(arr if arr.ndim == 3 else arr[..., None], str(path)), orientation)


def _deep_to_rgb(arr: np.ndarray, source: str) -> np.ndarray:
    """An HxWxC array of more than 8 bits as HxWx3 uint16, refusing what 16 bits cannot hold."""
    if np.issubdtype(arr.dtype, np.floating):
        raise ImageReadError(f"{source}: floating-point samples ({arr.dtype}); jndplug reads 8- and 16-bit "
                             "integer images: convert it to a 16-bit PNG or TIFF (values scaled to 0..65535)")
    if arr.dtype != np.uint16:
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ImageReadError(f"{source}: {arr.dtype} values from {lo} to {hi} do not fit 16 bits; jndplug "
                                 "reads 8- and 16-bit images: convert it to a 16-bit PNG or TIFF")
        arr = arr.astype(np.uint16)
    if arr.shape[2] in (2, 4):
        warnings.warn(f"{source}: alpha channel dropped", stacklevel=4)
        arr = arr[..., :-1]
    if arr.shape[2] == 1:
        warnings.warn(f"{source}: 16-bit grayscale converted to RGB", stacklevel=4)
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] != 3:
        raise ImageReadError(f"{source}: {arr.shape[2]} channels; jndplug reads grayscale, RGB and RGBA images")
    return np.ascontiguousarray(arr)


def _png_orientation(path: Path) -> int:
    """The EXIF orientation in a PNG's eXIf chunk (1 when there is none)."""
    with open(path, "rb") as f:
        f.seek(8)
        while True:
            head = f.read(8)
            if len(head) < 8:
                return 1
            length, kind = struct.unpack(">I4s", head)
            if kind == b"eXIf":
                exif = Image.Exif()
                exif.load(f.read(length))
                return int(exif.get(0x0112, 1))
            if kind == b"IEND":
                return 1
            f.seek(length + 4, os.SEEK_CUR)


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``arr`` turned upright for an EXIF orientation, as ImageOps.exif_transpose turns a PIL image."""
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return arr if turned is None else np.ascontiguousarray(turned(arr))


def pil_to_array(im: Image.Image, source: str = "image") -> np.ndarray:
    """A PIL image as HxWx3 uint8, or uint16 for 16-bit grayscale / 48-bit files."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _deep_to_rgb(np.asarray(im)[..., None], source)
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
    """Write HxWx3 uint8/uint16 (or HxW for maps) atomically; the format follows the suffix.

    16-bit arrays go to PNG or TIFF only. Nothing is carried over from the input file: no EXIF, so
    the upright pixels ``read_image`` returned are what every reader sees.
    """
    path = Path(path)
    if array.dtype == np.uint16:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile  # Pillow cannot write 16-bit RGB

            buf = io.BytesIO()  # tifffile wants a named file, and atomic_write's has only a descriptor
            tifffile.imwrite(buf, array, photometric="rgb" if array.ndim == 3 else "minisblack")
            with atomic_write(path) as f:
                f.write(buf.getbuffer())
            return
        if path.suffix.lower() != ".png":
            raise JNDPlugValueError(f"{path}: 16-bit images can only be written as PNG or TIFF")
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
        raise JNDPlugValueError(f"{path}: unknown image file extension {path.suffix!r}")
    with atomic_write(path) as f:
        # Pillow writes lossy WebP by default, whose error exceeds a JND image's change
        Image.fromarray(array).save(f, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))


def to_8bit(array: np.ndarray) -> np.ndarray:
    """An HxWx3 uint16 array as uint8, rounded (65535 maps to 255; 257 = 65535 / 255); uint8 as it is."""
    if array.dtype == np.uint8:
        return array
    if array.dtype != np.uint16:
        raise TypeError(f"to_8bit takes uint8 or uint16 arrays, got {array.dtype}")
    return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8/uint16 (or float in [0,1]) array to a float32 ``[3,H,W]`` tensor in [0,1]."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(array).__name__}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise JNDPlugValueError(f"expected an HxWx3 array, got shape {tuple(array.shape)}")
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype)
    if peak is None and not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"unsupported array dtype {array.dtype}; use uint8, uint16 or float in [0,1]")
    # converted straight into the result: one float32 copy of the image, not three
    t = torch.empty((3, *array.shape[:2]), dtype=torch.float32)
    with warnings.catch_warnings():
        # a read-only array (e.g. from np.asarray of a PIL image) is only read here, copied into t
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
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
    """Raise a JNDPlugValueError/JNDPlugTypeError naming the problem if ``x`` is not a batch or image in [0,1].

    ``values=False`` checks only type and shape, which cost nothing; the value check (NaN, Inf,
    range) reads one small result back from the tensor's device, a synchronisation on a GPU.
    """
    if not isinstance(x, torch.Tensor):
        raise JNDPlugTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                               "convert PIL images or numpy arrays with jndplug.to_tensor()")
    if not x.is_floating_point():
        raise JNDPlugTypeError(f"{name} has integer dtype {x.dtype}; convert to float in [0,1] "
                               "(for uint8 data: x.float() / 255)")
    if x.ndim not in (3, 4):
        raise JNDPlugValueError(f"{name} must be [3,H,W] or [B,3,H,W], got shape {tuple(x.shape)}")
    channels = x.shape[-3]
    if channels != 3:
        raise JNDPlugValueError(f"{name} must have 3 (RGB) channels in dim -3, got {channels} "
                         f"(shape {tuple(x.shape)}); repeat grayscale to 3 channels, drop alpha")
    h, w = x.shape[-2:]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise JNDPlugValueError(f"{name} is {h}x{w}; jndplug needs images of at least {MIN_SIDE}x{MIN_SIDE}")
    if x.numel() == 0:
        raise JNDPlugValueError(f"{name} is empty")
    if not values:
        return
    # min and max propagate NaN and hold any Inf, so one reduction read back once answers both
    # questions, without a full-size isfinite mask
    lo, hi = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise JNDPlugValueError(f"{name} contains NaN or Inf values")
    if hi > 1.0 + 1e-3 or lo < -1e-3:
        hint = " (values look like 0-255: divide by 255)" if hi > 2.0 else ""
        raise JNDPlugValueError(f"{name} values must lie in [0,1], got range [{lo:.4g}, {hi:.4g}]{hint}")
