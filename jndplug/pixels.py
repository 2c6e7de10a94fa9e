"""Pixel-level constants and measures every layer shares: BT.601 luma and YCbCr, PSNR, central
crops and the bicubic low-resolution copies of super-resolution data.

One home for what was written out separately in the JND profile, the perception-directed
target, the distortion shaping of datagen, the benchmarks and the integrations.
"""

from __future__ import annotations

import math

import numpy as np

# ITU-R BT.601 luma weights of R, G, B
BT601 = (0.299, 0.587, 0.114)
# BT.601 Y, Cb, Cr of RGB without offsets (only differences are used, so offsets cancel):
# Y = 0.299 R + 0.587 G + 0.114 B, Cb = (B - Y) / 1.772, Cr = (R - Y) / 1.402
YCBCR = np.array([[0.299, 0.587, 0.114],
                  [-0.299 / 1.772, -0.587 / 1.772, 0.886 / 1.772],
                  [0.701 / 1.402, -0.587 / 1.402, -0.114 / 1.402]])
# the smallest image side MS-SSIM takes: five scales of an 11-tap window
MS_SSIM_MIN_SIDE = 161


def luma(x):
    """``[B,3,H,W]`` RGB tensor to ``[B,1,H,W]`` BT.601 luma (same units)."""
    import torch

    w = torch.tensor(BT601, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def mse_to_psnr(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB of a mean squared error at ``peak``: infinite for identical images."""
    return math.inf if mse <= 0 else 10 * math.log10(peak * peak / mse)


def psnr(a, b, peak: float = 1.0) -> float:
    """PSNR in dB of ``a`` against ``b`` (tensors or arrays of one shape), computed in float64.

    Identical images give ``math.inf``; a caller that must write JSON or average over images
    decides what stands for it.
    """
    if hasattr(a, "detach"):  # a torch tensor
        mse = float(((a.detach().double() - b.detach().double()) ** 2).mean())
    else:
        mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return mse_to_psnr(mse, peak)


def centre_crop(a: np.ndarray, side: int | None, multiple: int = 1, square: bool = False) -> np.ndarray:
    """The central crop of an HxW(xC) array, each side at most ``side`` and floored to ``multiple``
    (a model's scale or downsampling factor); ``square`` makes both sides equal. ``side`` None: ``a``."""
    if not side:
        return a
    h, w = a.shape[:2]
    if square:
        ch = cw = min(side, h, w) // multiple * multiple
    else:
        ch, cw = min(side, h) // multiple * multiple, min(side, w) // multiple * multiple
    top, left = (h - ch) // 2, (w - cw) // 2
    return a[top:top + ch, left:left + cw]


def bicubic_resize(a: np.ndarray, scale: float) -> np.ndarray:
    """An HxWx3 uint8 array resized by BasicSR's MATLAB-style bicubic ``imresize``, rounded to uint8."""
    from jndplug.basicsr_compat import install_torchvision_shim

    install_torchvision_shim()  # basicsr 1.4.2 imports a torchvision module that no longer exists
    from basicsr.utils.matlab_functions import imresize

    return np.clip(np.round(imresize(a.astype(np.float64) / 255.0, scale) * 255), 0, 255).astype(np.uint8)


def bicubic_lq(gt: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(``gt`` mod-cropped to ``scale``, its bicubic x1/scale copy), uint8: super-resolution pairs as
    BasicSR's data are made."""
    h, w = (s // scale * scale for s in gt.shape[:2])
    gt = gt[:h, :w]
    return gt, bicubic_resize(gt, 1 / scale)
