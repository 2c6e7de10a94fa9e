"""Losses that know about just-noticeable differences."""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn

from jndplug.errors import JNDPlugValueError

KINDS = ("l1", "l2")
REDUCTIONS = ("mean", "sum", "none")


def jnd_provider(source):
    """Something with ``jnd_map(x)`` from a provider, a name or path, or an estimator module.

    Accepts: any object with a ``jnd_map`` method (``JNDTarget``, whose map is its estimator's JND
    magnitude whatever its kind; ``JNDProfile``); a JND profile ``.safetensors`` file; a pretrained
    estimator name or estimator weights file; an estimator ``nn.Module`` (wrapped in a ``JNDTarget``).
    """
    from jndplug.models.jnd_profile import is_profile_file, load_profile
    from jndplug.target import JNDTarget

    if hasattr(source, "jnd_map"):
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_profile(source) if is_profile_file(source) else JNDTarget(source, kind="jnd")
    if isinstance(source, nn.Module):
        return JNDTarget(source, kind="jnd")
    raise TypeError(f"jnd must be a JND map provider (JNDTarget, JNDProfile), a name or .safetensors path, "
                    f"or an estimator nn.Module; got {type(source).__name__}")


class JNDTolerantLoss(nn.Module):
    """L1 or L2 loss that does not penalise error within the per-pixel JND magnitude.

    Per pixel and channel, with ``m`` the JND map of the ground truth (``[B,1,H,W]``, shared by
    the channels) the penalty is ``max(|pred - gt| - scale * m, 0)`` (``l1``) or its square
    (``l2``): zero, with zero gradient, inside the tolerance band; the plain L1/L2 error shrunk by
    the band outside it. Use it instead of swapping the target for a JND image, or next to it.

    Args:
        jnd: where the map comes from (see :func:`jnd_provider`); ``None`` means every call
            passes ``jnd_map=`` (e.g. maps precomputed with the data).
        kind: ``"l1"`` or ``"l2"``.
        scale: multiplies the map; 0 gives the plain loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        loss_weight: overall factor (the BasicSR loss convention).

    Called as ``loss(pred, gt)`` or ``loss(pred, gt, jnd_map=m)`` with ``[B,3,H,W]`` tensors; the
    map is computed from ``gt`` without gradient, on its device.
    """

    def __init__(self, jnd=None, kind: str = "l1", scale: float = 1.0, reduction: str = "mean",
                 loss_weight: float = 1.0):
        super().__init__()
        if kind not in KINDS:
            raise JNDPlugValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if reduction not in REDUCTIONS:
            raise JNDPlugValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        if not scale >= 0:
            raise JNDPlugValueError(f"scale must be >= 0, got {scale}")
        self.kind, self.scale, self.reduction, self.loss_weight = kind, float(scale), reduction, float(loss_weight)
        # Kept outside the module tree on purpose: the JND source is frozen, follows the input's
        # device by itself, and its weights do not belong in the loss's state dict.
        self.__dict__["jnd"] = None if jnd is None else jnd_provider(jnd)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, scale={self.scale}, reduction={self.reduction}, jnd={self.jnd!r}"

    def forward(self, pred: torch.Tensor, gt: torch.Tensor, jnd_map: torch.Tensor | None = None) -> torch.Tensor:
        if pred.shape != gt.shape:
            raise JNDPlugValueError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
        if jnd_map is None:
            if self.jnd is None:
                raise JNDPlugValueError("no JND map: construct JNDTolerantLoss with jnd=... or pass jnd_map=")
            with torch.no_grad():
                jnd_map = self.jnd.jnd_map(gt.detach())
        jnd_map = jnd_map.detach().to(device=pred.device, dtype=pred.dtype)
        try:
            band = torch.broadcast_to(self.scale * jnd_map, pred.shape)
        except RuntimeError:
            raise JNDPlugValueError(f"jnd_map of shape {tuple(jnd_map.shape)} does not broadcast to "
                             f"{tuple(pred.shape)}; give [B,1,H,W] or the prediction's shape") from None
        excess = torch.relu((pred - gt).abs() - band)
        err = excess if self.kind == "l1" else excess.pow(2)
        if self.reduction == "mean":
            err = err.mean()
        elif self.reduction == "sum":
            err = err.sum()
        return self.loss_weight * err


class JNDTolerantRateDistortionLoss(nn.Module):
    """A learned codec's rate-distortion loss with the MSE replaced by a JND-tolerant MSE.

    ``loss = lmbda * 255^2 * D + bpp``, the convention of CompressAI's ``RateDistortionLoss`` (same
    rate, same weighting, same output keys ``bpp_loss``, ``mse_loss``, ``loss``), with ``D`` the
    squared error beyond the per-pixel JND magnitude of the original (:class:`JNDTolerantLoss`,
    ``kind="l2"``): error people would not see costs nothing, so the codec spends its bits on what
    they would. Called as ``loss(output, target)`` with the codec's forward result (``x_hat`` and a
    mapping ``likelihoods``) and the original ``[B,3,H,W]`` batch.
    """

    def __init__(self, lmbda: float, estimator, scale: float = 1.0):
        super().__init__()
        self.lmbda = lmbda
        self.tolerant = JNDTolerantLoss(estimator, kind="l2", scale=scale)

    def forward(self, output: dict, target: torch.Tensor) -> dict:
        n, _, h, w = target.size()
        # the rate: -log2 of every latent's likelihood, per pixel of the image
        bpp = sum(torch.log(lk).sum() / (-math.log(2) * n * h * w) for lk in output["likelihoods"].values())
        mse = self.tolerant(output["x_hat"], target)
        return {"bpp_loss": bpp, "mse_loss": mse, "loss": self.lmbda * 255**2 * mse + bpp}
