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

import functools
import math

import torch
import torch.nn.functional as F

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import check_image_tensor
from jndplug.pixels import luma
from jndplug.spec import DEFAULT_SIGMA

SIGMA = DEFAULT_SIGMA  # the reason for its value is with the default, in jndplug.spec
_BISECTION_STEPS = 60
# The high-pass and the projection go by strips of rows of about this many pixels (over the batch),
# so that their temporaries stay a strip's size whatever the image's
STRIP_PIXELS = 2**20


def gaussian_blur(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B,1,H,W]``, mirrored at the borders (replicated if too small)."""
    radius, k = _kernel(sigma, y.dtype, y.device)
    h, w = y.shape[-2:]
    mode = "reflect" if radius < min(h, w) else "replicate"
    y = F.pad(y, (radius, radius, radius, radius), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))


def _kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> tuple[int, torch.Tensor]:
    """The blur's radius, ``ceil(3 sigma)``, and its normalised 1-D kernel."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-t**2 / (2 * sigma**2))
    return radius, k / k.sum()


def highpass(x: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """``Y - G_sigma * Y`` of ``[B,3,H,W]`` RGB: the luma detail finer than about ``1 / (2 pi sigma)`` cycles/px."""
    y = luma(x)
    return y - gaussian_blur(y, sigma)


def directed_distortion(x: torch.Tensor, jnd_map: torch.Tensor, gain: float, sigma: float = SIGMA) -> torch.Tensor:
    """The luma distortion ``d`` (``[B,1,H,W]``) of the directed JND image of ``x`` (``[B,3,H,W]``, [0, 1]).

    ``jnd_map`` (``[B,1,H,W]``, >= 0) bounds ``|d|`` per pixel: ``JNDTarget.jnd_map``, any
    estimator's or ``JNDProfile.jnd_map``. ``|d| <= jnd_map``, ``x + d`` in [0, 1] on every
    channel and ``mean(d) = 0`` per image all hold exactly (the mean to rounding); ``gain = 0``
    gives ``d = 0``. Memory: besides ``d``, two 1-channel float32 planes of the batch and
    temporaries of a strip of :data:`STRIP_PIXELS` pixels.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise JNDPlugValueError(f"x must be [B,3,H,W], got {tuple(x.shape)}")
    if jnd_map.shape != (x.shape[0], 1, *x.shape[-2:]):
        raise JNDPlugValueError(f"jnd_map must be [B,1,H,W] = {(x.shape[0], 1, *x.shape[-2:])}, got {tuple(jnd_map.shape)}")
    if not (math.isfinite(gain) and gain >= 0):
        raise JNDPlugValueError(f"gain must be a finite number >= 0, got {gain}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise JNDPlugValueError(f"sigma must be a finite number > 0, got {sigma}")
    b, _, h, w = x.shape
    if gain == 0:  # exactly: the bisection below would leave a rounding-sized offset
        return x.new_zeros((b, 1, h, w), dtype=torch.float32)
    rows = max(1, STRIP_PIXELS // (b * w))
    strips = [slice(r, min(r + rows, h)) for r in range(0, h, rows)]
    # v (returned as d), lo and hi are the only planes the size of the batch
    v = x.new_empty((b, 1, h, w), dtype=torch.float32)
    lo, hi = torch.empty_like(v), torch.empty_like(v)
    for s in strips:
        xs = x[..., s, :].to(torch.float32)
        bound = jnd_map[..., s, :].to(torch.float32).clamp(min=0)
        lo[..., s, :] = torch.maximum(-bound, -xs.amin(1, keepdim=True)).clamp(max=0)
        hi[..., s, :] = torch.minimum(bound, 1 - xs.amax(1, keepdim=True)).clamp(min=0)
        v[..., s, :] = _highpass_rows(x, s, sigma).mul_(gain)
    # The projection onto box ∩ {mean 0} is clip(v - t, lo, hi) for the t where its mean is zero
    # (the KKT conditions); the mean falls monotonically in t, so bisect, per image, summing the
    # strips (the sign of the sum is the sign of the mean). lo <= 0 <= hi makes t exist.
    t_lo = functools.reduce(torch.minimum, [(v[..., s, :] - hi[..., s, :]).amin(dim=(-2, -1), keepdim=True)
                                            for s in strips])
    t_hi = functools.reduce(torch.maximum, [(v[..., s, :] - lo[..., s, :]).amax(dim=(-2, -1), keepdim=True)
                                            for s in strips])
    for _ in range(_BISECTION_STEPS):
        t = (t_lo + t_hi) / 2
        total = functools.reduce(torch.add, [torch.clamp(v[..., s, :] - t, lo[..., s, :], hi[..., s, :])
                                             .sum(dim=(-2, -1), keepdim=True, dtype=torch.float64) for s in strips])
        positive = total > 0
        t_lo = torch.where(positive, t, t_lo)
        t_hi = torch.where(positive, t_hi, t)
    return v.sub_((t_lo + t_hi) / 2).clamp_(lo, hi)


def _highpass_rows(x: torch.Tensor, rows: slice, sigma: float) -> torch.Tensor:
    """Rows ``rows`` of ``highpass(x, sigma)``, from those rows and the blur's context around them
    (mirrored or replicated at the image's edges as :func:`gaussian_blur` pads the whole image)."""
    radius, k = _kernel(sigma, torch.float32, x.device)
    h, w = x.shape[-2:]
    mode = "reflect" if radius < min(h, w) else "replicate"
    index = torch.arange(rows.start - radius, rows.stop + radius, device=x.device)
    if mode == "reflect":
        index = index.abs()
        index = torch.where(index >= h, 2 * (h - 1) - index, index)
    else:
        index = index.clamp(0, h - 1)
    y = luma(x.index_select(-2, index).to(torch.float32))
    blurred = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    blurred = F.conv2d(blurred, k.view(1, 1, -1, 1))
    return y[..., radius:-radius, :] - blurred


def directed_jnd(x: torch.Tensor, jnd_map: torch.Tensor, gain: float, sigma: float = SIGMA) -> torch.Tensor:
    """The directed JND image ``x + d`` (see :func:`directed_distortion`); ``[B,3,H,W]`` or ``[3,H,W]``."""
    check_image_tensor(x)
    single = x.ndim == 3
    xb, mb = (x[None], jnd_map[None]) if single else (x, jnd_map)
    out = (xb.to(torch.float32) + directed_distortion(xb, mb, gain, sigma)).to(x.dtype)
    return out[0] if single else out
