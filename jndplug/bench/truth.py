"""What a JND image's distortion is made of: colour, global shift, frequency content, masking.

Pure functions on HxWx3 float RGB arrays in [0, 1] (``x`` the original, ``y`` the distorted
image, ``d = y - x``), used by ``jndplug bench estimator --parts truth`` (docs/bench.md):

- :func:`mean_shift`: the per-channel mean of ``d``;
- :func:`chroma_share`: the share of the distortion's energy in chroma, in BT.601 YCbCr;
- :func:`mean_shift_share`: the share of the distortion's (RGB) energy that is a per-channel
  constant;
- :func:`band_power_ratios`: luma power spectrum of ``y`` over that of ``x`` in radial bands;
- :func:`masking`: how the distortion's magnitude follows local luma contrast.

A share or ratio whose denominator is zero (no distortion, a band without power) is None.
"""

from __future__ import annotations

import numpy as np

from jndplug.pixels import YCBCR

# radial frequency bands of the luma spectrum, in cycles per pixel: [lo, hi), the last one closed
BANDS = ((0.0, 1 / 16), (1 / 16, 1 / 8), (1 / 8, 1 / 4), (1 / 4, 1 / 2))
BAND_NAMES = ("0-1/16", "1/16-1/8", "1/8-1/4", "1/4-1/2")
LOCAL_WINDOW = 7


def _check(x: np.ndarray, y: np.ndarray | None = None) -> None:
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"expected HxWx3 RGB arrays, got shape {x.shape}")
    if y is not None and y.shape != x.shape:
        raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")


def ycbcr(rgb: np.ndarray) -> np.ndarray:
    """BT.601 Y, Cb, Cr (without offsets) of RGB in [0, 1]; linear, so it also maps differences."""
    return np.asarray(rgb, np.float64) @ YCBCR.T


def luma(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, np.float64) @ YCBCR[0]


def mean_shift(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-channel mean of ``y - x`` (R, G, B), in the inputs' units."""
    _check(x, y)
    return (np.asarray(y, np.float64) - np.asarray(x, np.float64)).mean(axis=(0, 1))


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def chroma_share(x: np.ndarray, y: np.ndarray) -> float | None:
    """Energy of the Cb and Cr differences over that of the Y, Cb and Cr differences (BT.601)."""
    _check(x, y)
    e = (ycbcr(np.asarray(y, np.float64) - np.asarray(x, np.float64)) ** 2).sum(axis=(0, 1))
    return _ratio(e[1] + e[2], e.sum())


def mean_shift_share(x: np.ndarray, y: np.ndarray) -> float | None:
    """Energy of the per-channel mean of ``d`` over the energy of ``d`` (RGB, all pixels).

    ``sum(d**2) = N * sum_c(mean_c**2) + sum((d - mean)**2)``, so the share lies in [0, 1]:
    1 for a pure colour cast or brightness change, 0 for a zero-mean distortion.
    """
    _check(x, y)
    d = np.asarray(y, np.float64) - np.asarray(x, np.float64)
    n = d.shape[0] * d.shape[1]
    return _ratio(n * float((d.mean(axis=(0, 1)) ** 2).sum()), float((d**2).sum()))


def _radial_power(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum of one channel (its mean removed, Hann-windowed) and each bin's radius."""
    h, w = img.shape
    window = np.outer(np.hanning(h), np.hanning(w))  # periodic-boundary edges would leak into every band
    power = np.abs(np.fft.fft2((img - img.mean()) * window)) ** 2
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return power, np.hypot(fy, fx)


def band_power_ratios(x: np.ndarray, y: np.ndarray, bands=BANDS) -> list[float | None]:
    """Luma power of ``y`` over luma power of ``x`` in each radial band (cycles per pixel).

    Each image's mean is removed first (the DC term is the mean shift, reported on its own);
    frequencies beyond 1/2 (the spectrum's corners, not a full ring) are left out. Below 1 the
    distorted image has less detail than the original in that band (low-pass), above 1 more.
    """
    _check(x, y)
    px, r = _radial_power(luma(x))
    py, _ = _radial_power(luma(y))
    out = []
    for i, (lo, hi) in enumerate(bands):
        sel = (r >= lo) & ((r <= hi) if i == len(bands) - 1 else (r < hi)) & (r > 0)
        out.append(_ratio(float(py[sel].sum()), float(px[sel].sum())))
    return out


def local_std(img: np.ndarray, size: int = LOCAL_WINDOW) -> np.ndarray:
    """Standard deviation of a 2-D array in a ``size`` x ``size`` window (mirrored at the borders)."""
    from scipy.ndimage import uniform_filter

    img = np.asarray(img, np.float64)
    mean = uniform_filter(img, size, mode="reflect")
    var = uniform_filter(img * img, size, mode="reflect") - mean * mean
    return np.sqrt(np.clip(var, 0, None))  # rounding can make a flat window's variance slightly negative


def masking(x: np.ndarray, jnd_map: np.ndarray, size: int = LOCAL_WINDOW) -> dict:
    """How a JND map follows local contrast: masking models put more tolerance in texture.

    ``jnd_map``: HxW distortion magnitudes (e.g. ``JNDTarget.jnd_map``). Returns ``spearman``,
    the rank correlation over pixels of the map with the local ``size`` x ``size`` standard
    deviation of the original's luma, and ``flat`` / ``textured``: the map's mean over the quarter
    of pixels with the lowest / highest local standard deviation (ties in order of position).
    """
    from scipy.stats import spearmanr

    _check(x)
    m = np.asarray(jnd_map, np.float64)
    if m.shape != x.shape[:2]:
        raise ValueError(f"the map is {m.shape} but the image is {x.shape[:2]}")
    s = local_std(luma(x), size).ravel()
    m = m.ravel()
    order = np.argsort(s, kind="stable")
    q = max(1, s.size // 4)
    rho = None
    if np.ptp(m) > 0 and np.ptp(s) > 0:  # a constant has no ranks to correlate
        rho = float(spearmanr(m, s).statistic)
    return {"spearman": rho, "flat": float(m[order[:q]].mean()), "textured": float(m[order[-q:]].mean())}
