"""Pixel-level constants and measures every layer shares: BT.601 luma and YCbCr, PSNR.

One home for what was written out separately in the JND profile, the perception-directed
target, the distortion shaping of datagen and the benchmarks' truth report.
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
