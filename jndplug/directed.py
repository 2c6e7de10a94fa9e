"""Perception-directed JND images: a sub-threshold distortion that adds detail back.

Under an L2 loss a restorer trained on ``y + d(y)`` learns ``E[y|x] + E[d(y)|x]``: a target
distortion that is close to a filter acts as the same filter on the restorer's output. The seed
paper's JND image is mostly a luma low-pass plus a colour/mean shift, so training on it blurs and
tints. Here the JND map only bounds the distortion; its direction is chosen to restore what a
restorer loses, the luma detail above the low-resolution Nyquist band (docs/directed.md)::

    d = P( gain * (Y - G_sigma * Y) ),   out = x + d  (the same d on R, G and B)

with ``Y`` the BT.601 luma, ``G_sigma`` a Gaussian blur and ``P`` the Euclidean projection onto
``{lo <= d <= hi per pixel, mean(d) = 0}``, where ``[lo, hi]`` is ``[-J, J]`` (the JND map)
narrowed so that ``x + d`` stays in [0, 1] on every channel. Adding one ``d`` to R, G and B
changes Y by ``d`` and leaves Cb and Cr unchanged (the BT.601 luma weights sum to one).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import check_image_tensor
from jndplug.pixels import luma
from jndplug.spec import DEFAULT_SIGMA

SIGMA = DEFAULT_SIGMA  # the reason for its value is with the default, in jndplug.spec
_BISECTION_STEPS = 60


def gaussian_blur(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B,1,H,W]``, mirrored at the borders (replicated if too small)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=y.dtype, device=y.device)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    h, w = y.shape[-2:]
    mode = "reflect" if radius < min(h, w) else "replicate"
    y = F.pad(y, (radius, radius, radius, radius), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))


def highpass(x: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """``Y - G_sigma * Y`` of ``[B,3,H,W]`` RGB: the luma detail finer than about ``1 / (2 pi sigma)`` cycles/px."""
    y = luma(x)
    return y - gaussian_blur(y, sigma)


def directed_distortion(x: torch.Tensor, jnd_map: torch.Tensor, gain: float, sigma: float = SIGMA) -> torch.Tensor:
    """The luma distortion ``d`` (``[B,1,H,W]``) of the directed JND image of ``x`` (``[B,3,H,W]``, [0, 1]).

    ``jnd_map`` (``[B,1,H,W]``, >= 0) bounds ``|d|`` per pixel: ``JNDTarget.jnd_map``, any
    estimator's or ``JNDProfile.jnd_map``. ``|d| <= jnd_map``, ``x + d`` in [0, 1] on every
    channel and ``mean(d) = 0`` per image all hold exactly (the mean to rounding); ``gain = 0``
    gives ``d = 0``.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise JNDPlugValueError(f"x must be [B,3,H,W], got {tuple(x.shape)}")
    if jnd_map.shape != (x.shape[0], 1, *x.shape[-2:]):
        raise JNDPlugValueError(f"jnd_map must be [B,1,H,W] = {(x.shape[0], 1, *x.shape[-2:])}, got {tuple(jnd_map.shape)}")
    if not (math.isfinite(gain) and gain >= 0):
        raise JNDPlugValueError(f"gain must be a finite number >= 0, got {gain}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise JNDPlugValueError(f"sigma must be a finite number > 0, got {sigma}")
    x = x.to(torch.float32)
    if gain == 0:  # exactly: the bisection below would leave a rounding-sized offset
        return torch.zeros_like(x[:, :1])
    bound = jnd_map.to(torch.float32).clamp(min=0)
    lo = torch.maximum(-bound, -x.amin(1, keepdim=True)).clamp(max=0)
    hi = torch.minimum(bound, 1 - x.amax(1, keepdim=True)).clamp(min=0)
    v = gain * highpass(x, sigma)
    # The projection onto box ∩ {mean 0} is clip(v - t, lo, hi) for the t where its mean is zero
    # (the KKT conditions); the mean falls monotonically in t, so bisect, per image. lo <= 0 <= hi
    # makes t exist.
    t_lo = (v - hi).amin(dim=(-2, -1), keepdim=True)
    t_hi = (v - lo).amax(dim=(-2, -1), keepdim=True)
    for _ in range(_BISECTION_STEPS):
        t = (t_lo + t_hi) / 2
        positive = torch.clamp(v - t, lo, hi).mean(dim=(-2, -1), keepdim=True, dtype=torch.float64) > 0
        t_lo = torch.where(positive, t, t_lo)
        t_hi = torch.where(positive, t_hi, t)
    return torch.clamp(v - (t_lo + t_hi) / 2, lo, hi)


def directed_jnd(x: torch.Tensor, jnd_map: torch.Tensor, gain: float, sigma: float = SIGMA) -> torch.Tensor:
    """The directed JND image ``x + d`` (see :func:`directed_distortion`); ``[B,3,H,W]`` or ``[3,H,W]``."""
    check_image_tensor(x)
    single = x.ndim == 3
    xb, mb = (x[None], jnd_map[None]) if single else (x, jnd_map)
    out = (xb.to(torch.float32) + directed_distortion(xb, mb, gain, sigma)).to(x.dtype)
    return out[0] if single else out
