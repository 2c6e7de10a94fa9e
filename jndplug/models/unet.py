"""The default JND estimator: a small U-Net around a timm encoder, with a global residual.

Why this shape: the distortions a JND image carries are CNN-style (shifted colour distributions,
slightly moved edges, smoothed texture), which need context well beyond a few pixels, so a strided
encoder (receptive field of hundreds of pixels at stride 32) sees the scene while a light decoder
with skip connections puts the residual back at full resolution. Almost all the compute sits in
the low-resolution encoder; the full-resolution layers are kept thin, which is what makes the
network cheap per pixel (see ``jndplug.models.cost.macs_per_pixel``).
"""

from __future__ import annotations

import os
from typing import Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models._efficientnet_blocks import SqueezeExcite  # mobilenetv3's block; no public path exports it

from jndplug.errors import CorruptFileError, JNDPlugValueError, load_torch_file
from jndplug.models.registry import register_estimator
from jndplug.models.base import Estimator, GlobalPooling

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class _FiLM(nn.Module):
    """Per-channel scale and shift of decoder features from the target satisfied-user ratio."""

    def __init__(self, channels: Sequence[int], hidden: int = 32):
        super().__init__()
        self.channels = list(channels)
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * sum(channels)))
        nn.init.zeros_(self.mlp[-1].weight)  # start as the identity modulation
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, sur: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        params = self.mlp(sur.view(-1, 1))
        out, start = [], 0
        for c in self.channels:
            scale, shift = params[:, start : start + c], params[:, start + c : start + 2 * c]
            out.append((1 + scale[:, :, None, None], shift[:, :, None, None]))
            start += 2 * c
        return out


@register_estimator("unet")
class UNetJND(Estimator):
    """U-Net JND estimator.

    Config:
        backbone: timm model name used with ``features_only=True``.
        decoder_channels: decoder width at each encoder stage, shallow to deep.
        head_channels: width of the full-resolution head.
        sur_conditioning: if true, the network takes a target satisfied-user ratio ``sur`` in
            [0, 1] (the fraction of people who must not notice the distortion) and is trained
            to give weaker distortion for larger ``sur``.
        default_sur: the ratio used when a conditioned network is called without one.
        encoder_weights: optional local file with pretrained weights for the backbone (timm
            checkpoint, ``.safetensors`` or ``.pth``). Never downloaded, never stored in config.
        squeeze_excite: keep the backbone's squeeze-excitation blocks. They pool over the whole
            input, so on a tile they see the tile's mean rather than the image's; tiled
            inference (:mod:`jndplug.tiling`) first measures the image's means tile by tile
            (extra passes, see ``GlobalPooling``). ``False`` replaces them by the identity: tiled
            inference is then one pass, exact up to the tiles' halo.
        zero_mean: remove each image's per-channel mean from the predicted residual, so the JND
            image never carries a global colour cast (people comparing two images see one even
            where the visibility models used for labelling discount it).
    """

    # options naming a local file: never stored in, nor taken from, a weights file's config
    file_options = ("encoder_weights",)

    def __init__(
        self,
        backbone: str = "mobilenetv3_small_100",
        decoder_channels: Sequence[int] = (24, 32, 48, 64, 96),
        head_channels: int = 16,
        sur_conditioning: bool = False,
        default_sur: float = 0.75,
        encoder_weights: str | os.PathLike | None = None,
        squeeze_excite: bool = True,
        zero_mean: bool = False,
    ):
        super().__init__()
        if not isinstance(backbone, str):
            raise JNDPlugValueError(f"backbone must be a timm model name, got {backbone!r:.60}")
        if isinstance(decoder_channels, (str, bytes)) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in decoder_channels):
            raise JNDPlugValueError(f"decoder_channels must be a list of positive integers, got {decoder_channels!r:.60}")
        if isinstance(head_channels, bool) or not isinstance(head_channels, int) or head_channels < 1:
            raise JNDPlugValueError(f"head_channels must be a positive integer, got {head_channels!r:.60}")
        if isinstance(default_sur, bool) or not isinstance(default_sur, (int, float)) or not 0 <= default_sur <= 1:
            raise JNDPlugValueError(f"default_sur must be a ratio in [0, 1], got {default_sur!r:.60}")
        self.config = {
            "backbone": backbone,
            "decoder_channels": list(decoder_channels),
            "head_channels": head_channels,
            "sur_conditioning": bool(sur_conditioning),
            "default_sur": float(default_sur),
        }
        # recorded only when they differ from the defaults, so files written before these options
        # existed keep their exact config (and fingerprint)
        if not squeeze_excite:
            self.config["squeeze_excite"] = False
        if zero_mean:
            self.config["zero_mean"] = True
        self.zero_mean = bool(zero_mean)
        if encoder_weights is not None and not os.path.isfile(encoder_weights):
            raise FileNotFoundError(f"encoder_weights file not found: {encoder_weights}")
        try:
            # random initialisation here; weights come only from a local file (below), never from
            # timm's pretrained loader, which may fall back to a download
            self.encoder = timm.create_model(backbone, features_only=True, pretrained=False)
        except RuntimeError as exc:
            raise JNDPlugValueError(f"timm cannot build backbone {backbone!r} with features_only: {exc}") from exc
        for m in self.encoder.modules():
            se = getattr(m, "se", None)
            if not squeeze_excite and isinstance(se, nn.Module):
                m.se = nn.Identity()
            elif isinstance(se, SqueezeExcite):
                m.se = _SqueezeExcite(se)
        if encoder_weights is not None:
            _load_encoder_weights(self.encoder, encoder_weights)
        enc_channels = self.encoder.feature_info.channels()
        reductions = self.encoder.feature_info.reduction()
        if len(decoder_channels) != len(enc_channels):
            raise JNDPlugValueError(
                f"decoder_channels has {len(decoder_channels)} entries but backbone {backbone!r} "
                f"gives {len(enc_channels)} feature stages (channels {enc_channels})"
            )
        self.size_divisor = int(max(reductions))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        dec = list(decoder_channels)
        # decoder stage i fuses the upsampled stage i+1 with encoder stage i (deepest has no input from below)
        self.decoder = nn.ModuleList()
        for i in range(len(dec)):
            below = dec[i + 1] if i + 1 < len(dec) else 0
            self.decoder.append(_conv_block(enc_channels[i] + below, dec[i]))
        self.head = nn.Sequential(
            _conv_block(dec[0] + 3, head_channels),
            nn.Conv2d(head_channels, 3, 3, padding=1),
        )
        with torch.no_grad():  # small initial residual: an untrained model stays near the identity
            self.head[-1].weight.mul_(0.1)
            self.head[-1].bias.zero_()
        self.accepts_sur = bool(sur_conditioning)
        self.default_sur = float(default_sur)
        self.film = _FiLM(dec + [head_channels]) if sur_conditioning else None

    def forward(self, x: torch.Tensor, sur: torch.Tensor | float | None = None, center: bool = True) -> torch.Tensor:
        """JND image of ``x``. ``center=False`` skips the zero-mean step (for tiles, which
        :func:`jndplug.tiling.tiled_forward` centres together once they are assembled)."""
        if sur is not None and self.film is None:
            raise ValueError("this unet was not trained with satisfied-user-ratio conditioning; call it without sur")
        feats = self.encoder((x - self.mean) / self.std)
        mods = None
        if self.film is not None:
            if sur is None:
                sur = self.default_sur
            sur = torch.as_tensor(sur, dtype=x.dtype, device=x.device).expand(x.shape[0])
            mods = self.film(sur)
        d = None
        for i in reversed(range(len(self.decoder))):
            f = feats[i]
            if d is not None:
                d = F.interpolate(d, size=f.shape[-2:], mode="bilinear", align_corners=False)
                f = torch.cat([f, d], dim=1)
            d = self.decoder[i](f)
            if mods is not None:
                d = d * mods[i][0] + mods[i][1]
        d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
        h = self.head[0](torch.cat([d, x], dim=1))
        if mods is not None:
            h = h * mods[-1][0] + mods[-1][1]
        r = self.head[1](h)
        if self.zero_mean and center:
            r = r - r.mean(dim=(-2, -1), keepdim=True)
        return x + r


class _SqueezeExcite(GlobalPooling):
    """timm's squeeze-excitation (same parameters under the same names, same result) with its
    global mean open to tiled inference (:class:`~jndplug.models.base.GlobalPooling`)."""

    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.conv_reduce, self.act1, self.conv_expand, self.gate = se.conv_reduce, se.act1, se.conv_expand, se.gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(self.pooled(x)))))


def _load_encoder_weights(encoder: nn.Module, path) -> None:
    """Load a local timm checkpoint of the whole backbone into its ``features_only`` trunk.

    The trunk keeps the backbone's module names, so the classifier's keys are simply unused; a
    trunk key the file lacks means the file is for another backbone.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except SafetensorError as exc:
            raise CorruptFileError(f"{path}: not a readable safetensors file ({exc}); give encoder_weights the "
                                   "backbone's .pth or .safetensors file") from None
    else:
        state = load_torch_file(path, "timm backbone checkpoint", "give encoder_weights the backbone's .pth or "
                                ".safetensors file")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise JNDPlugValueError(f"{path}: not a state dict of tensors")
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise JNDPlugValueError(f"{path}: not a checkpoint of this backbone (lacks {', '.join(missing[:3])}"
                         f"{' ...' if len(missing) > 3 else ''})")
    encoder.load_state_dict({k: state[k] for k in own})
