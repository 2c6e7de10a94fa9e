"""PSNR and SSIM with BasicSR's conventions, without needing BasicSR (tests check they agree)."""

from __future__ import annotations

import numpy as np

from jndplug import pixels
from jndplug.errors import JNDPlugValueError


class MetricsError(JNDPlugValueError):
    """Folders that cannot be compared (missing files, size mismatch, unknown metric)."""


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in [16, 235] of an RGB image in [0, 255], computed as BasicSR's ``to_y_channel``."""
    x = img.astype(np.float32) / 255.0
    y = np.dot(x, [65.481, 128.553, 24.966]) + 16.0
    return (y / 255.0).astype(np.float32)[..., None] * 255.0


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR of two HxWx3 RGB images in [0, 255] (peak 255), as BasicSR's ``calculate_psnr``."""
    img, ref = _prepare(img, ref, crop_border, y_channel)
    return pixels.psnr(img, ref, peak=255.0)


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """SSIM of two HxWx3 RGB images in [0, 255], as BasicSR's ``calculate_ssim`` (channel mean)."""
    img, ref = _prepare(img, ref, crop_border, y_channel)
    return float(np.mean([_ssim_channel(img[..., c], ref[..., c]) for c in range(img.shape[2])]))


def _prepare(img, ref, crop_border, y_channel):
    if img.shape != ref.shape:
        raise MetricsError(f"image shapes differ: {img.shape} vs {ref.shape}")
    if crop_border:
        inner = (slice(crop_border, -crop_border), slice(crop_border, -crop_border))
        img, ref = img[inner], ref[inner]
    if y_channel:
        img, ref = rgb_to_y(img), rgb_to_y(ref)
    return img.astype(np.float64), ref.astype(np.float64)


_GAUSS = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
_GAUSS /= _GAUSS.sum()  # cv2.getGaussianKernel(11, 1.5)


def _filter(x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import correlate1d

    # separable, valid region only (BasicSR crops 5 px after cv2.filter2D, so the border mode is moot)
    return correlate1d(correlate1d(x, _GAUSS, axis=0), _GAUSS, axis=1)[5:-5, 5:-5]


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = _filter(a), _filter(b)
    s11 = _filter(a * a) - mu1**2
    s22 = _filter(b * b) - mu2**2
    s12 = _filter(a * b) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return float(m.mean())


# ---------------------------------------------------------------------------------------------
# The suite: every metric set up once, then applied to pairs of arrays
