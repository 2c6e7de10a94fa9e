"""The functions the kind table (:data:`jndplug.spec.KIND_TABLE`, :data:`jndplug.spec.BOUNDS`)
names: each kind's target image and each bound of the directed image, as ``f(target, x)`` of a
:class:`jndplug.target.JNDTarget` and a float32 ``[B,3,H,W]`` batch in [0, 1] on the target's device.

A new bound is a row in ``BOUNDS`` and a function here returning the ``[B,1,H,W]`` float32 bound at
``target.strength``; a new kind is a row in ``KIND_TABLE`` and its image function.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from jndplug import directed
from jndplug.pixels import luma
from jndplug.spec import bound_row

LOCAL_RADIUS = 3  # the 7x7 window of the local standard deviation


def estimated_image(target, x: torch.Tensor) -> torch.Tensor:
    """The seed paper's JND image: the estimator's output blended by strength (``kind="jnd"``)."""
    return target._estimated(x)


def directed_image(target, x: torch.Tensor) -> torch.Tensor:
    """The perception-directed JND image (``kind="directed"``): ``x`` plus the zero-mean luma
    sharpening of :func:`jndplug.directed.directed_distortion`, bounded by the spec's bound."""
    bound = target._bound(x)
    gain = target.gain * (target.strength if bound_row(target.spec.bound).scales_sharpening else 1.0)
    return (x + directed.directed_distortion(x, bound, gain, target.spec.sigma)).clamp_(0, 1)


def estimator_map(target, x: torch.Tensor) -> torch.Tensor:
    """RMS over channels of the estimator's JND image minus ``x``: the seed paper's JND magnitude."""
    # the estimated image is this call's own: the change is made in its place
    return target._estimated(x).sub_(x).square_().mean(1, keepdim=True).sqrt_()


def profile_map(target, x: torch.Tensor) -> torch.Tensor:
    """The analytic JND profile (luminance adaptation and contrast masking combined by NAMM; the
    untrained :class:`jndplug.models.jnd_profile.JNDProfile`) times strength."""
    # the profile's forward, not its jnd_map: the target has checked (or, with check_values=False,
    # deliberately not checked) the batch already
    return target.strength * _profile(x.device)(x).to(torch.float32)


def profile_file_map(target, x: torch.Tensor) -> torch.Tensor:
    """A trained JND profile's map (the file ``bound`` names) times strength."""
    path = target.spec.bound
    return target.strength * _profile_file(path, os.stat(path).st_mtime_ns, x.device)(x).to(torch.float32)


def localstd_map(target, x: torch.Tensor) -> torch.Tensor:
    """Strength times the standard deviation of the luma in the 7x7 window around each pixel
    (mirrored at the borders): the change may grow with the local contrast that masks it."""
    y = F.pad(luma(x), (LOCAL_RADIUS,) * 4, mode="reflect" if min(x.shape[-2:]) > LOCAL_RADIUS else "replicate")
    size = 2 * LOCAL_RADIUS + 1
    mean = F.avg_pool2d(y, size, stride=1)
    var = (F.avg_pool2d(y * y, size, stride=1) - mean * mean).clamp_(min=0)
    return target.strength * var.sqrt_()


def flat_map(target, x: torch.Tensor) -> torch.Tensor:
    """Strength 8-bit levels everywhere: the change is clipped where it would be largest, at edges."""
    return torch.full_like(x[:, :1], target.strength / 255.0)


def no_bound(target, x: torch.Tensor) -> torch.Tensor:
    """No bound (the strength scales the sharpening instead, ``Bound.scales_sharpening``)."""
    return torch.full_like(x[:, :1], float("inf"))


@functools.lru_cache(maxsize=4)
def _profile(device: torch.device):
    from jndplug.models.jnd_profile import JNDProfile

    return JNDProfile().to(device).eval().requires_grad_(False)


@functools.lru_cache(maxsize=4)
def _profile_file(path: str, mtime_ns: int, device: torch.device):
    # keyed by the file's time as well: a profile retrained in place is read again
    from jndplug.models.jnd_profile import load_profile

    return load_profile(path).to(device)

