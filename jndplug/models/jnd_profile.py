"""Patch-level JND profile by structural visibility learning.

After Shen et al., "Just Noticeable Distortion Profile Inference: A Patch-Level Structural
Visibility Learning Approach", IEEE TIP 2021: a patch is decomposed into three conceptually
independent components and each gets a visibility threshold.

* Decomposition (the SSIM decomposition of Wang et al., IEEE TIP 2004, used as a patch
  representation by Ma et al.'s structural patch decomposition, SPD, IEEE TIP 2017):
  ``patch = mean + strength * structure`` with ``mean`` the mean luminance, ``strength`` the
  signal strength (the standard deviation, i.e. the patch's contrast) and ``structure`` the
  zero-mean, unit-variance pattern (all zero for a flat patch).
* Luminance adaptation (Chou & Li, IEEE TCSVT 1995), on 8-bit luminance ``m``:
  ``17 * (1 - sqrt(m / 127)) + 3`` for ``m <= 127``, ``3 / 128 * (m - 127) + 3`` above.
* Contrast masking (the luminance-contrast masking of Wu et al., IEEE TIP 2013, with its
  constants): ``0.115 * 16 * s**2.4 / (s**2 + 26**2)`` with ``s`` the signal strength.
* The two combine by the nonlinear additivity model for masking (NAMM, Yang et al., IEEE TCSVT
  2005): ``T = T_la + T_cm - 0.3 * min(T_la, T_cm)``.
* Structural visibility: a small convolutional network reads the structure component and
  scales the threshold by ``exp(net(structure))``. Its last layer starts at zero, so an untrained
  profile is exactly the NAMM model above; :func:`jndplug.patches.profile.train_structural_visibility`
  fits it to
  visibility judgements on patch pairs (``jndplug patches build`` output, from our study or any
  collection with the same schema).

:meth:`JNDProfile.jnd_map` gives the per-pixel profile (sliding-window components) in the units
and shapes of ``JNDTarget.jnd_map``, so it can stand wherever a JND map is used, e.g. in
``jndplug.losses.JNDTolerantLoss``. Thresholds are on luminance; colour distortions are not
modelled separately.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from jndplug.artifacts import format_of, json_field, load_artifact, module_tensors, save_artifact
from jndplug.errors import JNDPlugValueError
from jndplug.imageio import check_image_tensor
from jndplug.pixels import luma

PROFILE_FORMAT = "jndplug-jnd-profile/1"
NAMM_OVERLAP = 0.3  # Yang et al. 2005: gain reduction where the two maskings overlap


def luminance(x: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` RGB in [0,1] to ``[B,1,H,W]`` 8-bit-scale luminance (ITU-R BT.601 weights)."""
    return luma(x) * 255.0


def decompose(patch: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean, strength, structure)`` of luminance patches ``[..., H, W]``.

    ``patch == mean + strength * structure`` exactly (up to float rounding); ``mean`` and
    ``strength`` have shape ``[...]``, ``structure`` the patch's shape.
    """
    mean = patch.mean(dim=(-2, -1))
    centred = patch - mean[..., None, None]
    strength = centred.pow(2).mean(dim=(-2, -1)).sqrt()
    structure = torch.where(strength[..., None, None] > eps, centred / strength.clamp_min(eps)[..., None, None],
                            torch.zeros_like(centred))
    return mean, strength, structure


def luminance_adaptation(mean: torch.Tensor) -> torch.Tensor:
    """Chou & Li (1995) visibility threshold of a background luminance in [0, 255]."""
    mean = mean.clamp(0, 255)
    dark = 17.0 * (1.0 - torch.sqrt(mean / 127.0)) + 3.0
    bright = 3.0 / 128.0 * (mean - 127.0) + 3.0
    return torch.where(mean <= 127, dark, bright)


def contrast_masking(strength: torch.Tensor) -> torch.Tensor:
    """Wu et al. (2013) luminance-contrast masking threshold of a signal strength (8-bit scale)."""
    s = strength.clamp_min(0)
    return 0.115 * 16.0 * s.pow(2.4) / (s.pow(2) + 26.0 ** 2)


def namm(t_la: torch.Tensor, t_cm: torch.Tensor) -> torch.Tensor:
    """Yang et al. (2005) nonlinear additivity of two masking thresholds."""
    return t_la + t_cm - NAMM_OVERLAP * torch.minimum(t_la, t_cm)


def _box(x: torch.Tensor, window: int) -> torch.Tensor:
    lo, hi = window // 2, window - 1 - window // 2
    mode = "reflect" if max(lo, hi) < min(x.shape[-2:]) else "replicate"
    return F.avg_pool2d(F.pad(x, (lo, hi, lo, hi), mode=mode), window, stride=1)


class JNDProfile(nn.Module):
    """The patch-level JND profile (see the module docstring).

    Args:
        window: side of the patch over which mean, strength and structure are measured; for the
            per-pixel map the window slides over the image.
        hidden: channels of the structural visibility network.
    """

    def __init__(self, window: int = 20, hidden: int = 16):
        super().__init__()
        if window < 2 or hidden < 1:
            raise JNDPlugValueError(f"JNDProfile needs window >= 2 and hidden >= 1, got {window} and {hidden}")
        self.config = {"window": window, "hidden": hidden}
        self.window = window
        self.structure_net = nn.Sequential(
            nn.Conv2d(1, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, 1, 3, padding=1))
        nn.init.zeros_(self.structure_net[-1].weight)
        nn.init.zeros_(self.structure_net[-1].bias)
        # slope of the psychometric function used in training (visible iff error exceeds threshold)
        self.log_slope = nn.Parameter(torch.tensor(math.log(4.0)))

    def components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-pixel components of ``[B,3,H,W]`` images in [0,1], 8-bit scale, each ``[B,1,H,W]``."""
        y = luminance(x.float())
        mean = _box(y, self.window)
        strength = (_box(y * y, self.window) - mean * mean).clamp_min(0).sqrt()
        structure = torch.where(strength > 1e-6, (y - mean) / strength.clamp_min(1e-6), torch.zeros_like(y))
        return self._thresholds(mean, strength, structure)

    def patch_components(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """Components of ``[B,3,S,S]`` patches in [0,1], one mean and strength per patch."""
        mean, strength, structure = decompose(luminance(patches.float())[:, 0])
        s = patches.shape[-1]
        return self._thresholds(mean.view(-1, 1, 1, 1).expand(-1, 1, s, s),
                                strength.view(-1, 1, 1, 1).expand(-1, 1, s, s), structure[:, None])

    def _thresholds(self, mean, strength, structure) -> dict[str, torch.Tensor]:
        t_la, t_cm = luminance_adaptation(mean), contrast_masking(strength)
        factor = torch.exp(self.structure_net(structure))
        return {"mean": mean, "strength": strength, "structure": structure, "luminance_adaptation": t_la,
                "contrast_masking": t_cm, "structural_factor": factor, "jnd": namm(t_la, t_cm) * factor}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [0,1] to the per-pixel JND magnitude ``[B,1,H,W]`` in [0,1] units."""
        return self.components(x)["jnd"] / 255.0

    @torch.no_grad()
    def jnd_map(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """As ``JNDTarget.jnd_map``: ``[B,1,H,W]`` (``[1,H,W]`` for one image), input dtype and device."""
        check_image_tensor(x)
        if next(self.parameters()).device != x.device:
            self.to(x.device)
        single = x.ndim == 3
        m = self(x[None] if single else x)
        if normalize:
            peak = m.amax(dim=(-2, -1), keepdim=True)
            m = m / torch.where(peak > 0, peak, torch.ones_like(peak))
        m = m.to(x.dtype)
        return m[0] if single else m

    def visibility_logit(self, clean: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
        """Logit of "the difference is visible" for ``[B,3,S,S]`` patch pairs in [0,1].

        The luminance error is measured in units of the profile (``e / T`` per pixel) and pooled
        as an RMS ``r``; the pair is visible with probability ``sigmoid(slope * log r)``, one half
        exactly at the threshold.
        """
        t = self.patch_components(clean)["jnd"]
        err = (luminance(distorted.float()) - luminance(clean.float())).abs()
        r = (err / t).pow(2).mean(dim=(1, 2, 3)).sqrt()
        return self.log_slope.exp() * torch.log(r + 1e-6)


def save_profile(profile: JNDProfile, path: str | os.PathLike, provenance: dict | None = None) -> Path:
    """Write a profile as ``.safetensors`` with its config and free-form provenance (atomic)."""
    return save_artifact(path, module_tensors(profile), PROFILE_FORMAT,
                         {"config": profile.config, "provenance": provenance or {}}, "JND profile")


def load_profile(path: str | os.PathLike) -> JNDProfile:
    """A saved profile in eval mode, with ``provenance`` attached."""
    path = Path(path)
    tensors, meta = load_artifact(path, PROFILE_FORMAT, "JND profile")
    profile = JNDProfile(**json_field(path, meta, "config"))
    profile.load_state_dict(tensors)
    profile.provenance = json_field(path, meta, "provenance", {})
    for p in profile.parameters():
        p.requires_grad_(False)
    return profile.eval()


def is_profile_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a JND profile file (as opposed to an estimator's weights)."""
    return format_of(path) == PROFILE_FORMAT
