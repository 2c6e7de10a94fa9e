"""What a level's distortion may look like before it is scaled onto the PSNR ladder.

A raw autoencoder output differs from its input in three ways people see very differently: a
global per-channel shift (a colour cast, seen at once when two images sit side by side, yet
discounted by ColorVideoVDP), chroma changes, and luma structure. And it spreads its error evenly,
whereas every masking model and human JND data set puts far more tolerance in texture than in flat
regions. Shaping corrects each of these on the candidate, before the blend towards the original
puts it on its rung:

- ``masking``: the distortion is multiplied by a visibility-threshold map of the original,
  normalised to mean 1 and raised to this power (0: no weighting). The map is the classic
  pixel-domain JND of luminance adaptation (Chou & Li 1995) and contrast masking (Wu et al. 2013)
  combined by NAMM (Yang et al. 2005), as in :mod:`jndplug.models.jnd_profile`, over a 7x7 window.
- ``chroma``: the Cb and Cr parts of the distortion (BT.601) are scaled by this factor.
- ``remove_mean``: each channel's mean shift is removed, in proportion to the masking weight, so
  that flat regions stay as untouched as the weighting made them.

Because the blend only scales the distortion, the level keeps all three properties, up to
clamping to [0, 1] and rounding to 8 bits.
"""

from __future__ import annotations

import torch

from jndplug.errors import JNDPlugValueError
from jndplug.models.jnd_profile import JNDProfile
from jndplug.pixels import YCBCR

# BT.601 luma and (unscaled) colour-difference rows; the inverse is computed, not hand-written
_YCC = torch.tensor(YCBCR, dtype=torch.float32)
MASKING_WINDOW = 7


def masking_weight(x: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """``[1,H,W]`` weight of mean 1 from the NAMM visibility threshold of ``[3,H,W]`` image ``x``."""
    if power == 0:
        return torch.ones_like(x[:1])
    t = JNDProfile(window=MASKING_WINDOW).components(x[None])["jnd"][0]
    w = t.pow(power)
    return w / w.mean().clamp_min(1e-12)


def shape_distortion(x: torch.Tensor, candidate: torch.Tensor, *, remove_mean: bool = True,
                     masking: float = 1.0, chroma: float = 1.0) -> torch.Tensor:
    """The shaped candidate ``x + d'`` (not clamped) for ``[3,H,W]`` images in [0,1]."""
    if masking < 0 or chroma < 0:
        raise JNDPlugValueError(f"masking power and chroma factor must be >= 0, got {masking} and {chroma}")
    d = candidate.float() - x.float()
    if chroma != 1:
        m = _YCC.to(d)
        ycc = torch.einsum("ij,jhw->ihw", m, d)
        ycc[1:] *= chroma
        d = torch.einsum("ij,jhw->ihw", torch.linalg.inv(m), ycc)
    w = masking_weight(x.float(), masking)
    d = d * w
    if remove_mean:
        d = d - d.mean(dim=(-2, -1), keepdim=True) * w
    return x.float() + d
