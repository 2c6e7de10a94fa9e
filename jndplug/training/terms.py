"""The loss terms an estimator is trained with (``loss`` in the training config)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim, ssim

LOSS_TERMS = ("l1", "l2", "ssim", "ms_ssim", "energy")
ENERGY_WINDOW = 8  # pixels: about the size of the texture patches the JND varies over


def local_rms(residual: torch.Tensor, window: int = ENERGY_WINDOW) -> torch.Tensor:
    """Root-mean-square of a residual over ``window`` x ``window`` blocks, all channels together."""
    energy = F.avg_pool2d(residual.pow(2).mean(1, keepdim=True), window, stride=window // 2, ceil_mode=True)
    return (energy + 1e-10).sqrt()


def compute_loss(pred: torch.Tensor, target: torch.Tensor, weights: dict,
                 source: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of the configured loss terms.

    ``energy`` compares the local size of the predicted distortion (``pred - source``) with the
    labelled one's, not its pattern. Where the labelled distortion is not predictable from the
    photograph, L1 and SSIM learn its conditional mean, which is far smaller than any one sample;
    the energy term keeps the prediction as large as the label says is still invisible.
    """
    pred, target = pred.float(), target.float()
    total = pred.new_zeros(())
    if "energy" in weights and source is None:
        raise ValueError("the energy loss term needs the source image (compute_loss(..., source=x))")
    for term, w in weights.items():
        if term == "l1":
            total = total + w * F.l1_loss(pred, target)
        elif term == "l2":
            total = total + w * F.mse_loss(pred, target)
        elif term == "ssim":
            total = total + w * (1 - ssim(pred.clamp(0, 1), target, data_range=1.0))
        elif term == "ms_ssim":
            total = total + w * (1 - ms_ssim(pred.clamp(0, 1), target, data_range=1.0))
        elif term == "energy":
            source = source.float()
            total = total + w * F.l1_loss(local_rms(pred - source), local_rms(target - source))
    return total
