"""The distortion autoencoders: small U-Nets whose errors look like a CNN restorer's.

Capacity is set by three knobs, as in the CNN-Oriented JND Dataset: the bottleneck (depth and
width), and which skip connections survive. A U-Net with every skip reproduces fine detail and
mostly errs in colour; dropping the fine skips forces detail through the bottleneck, so edges and
object shapes drift; no skips at all and a narrow bottleneck give strong blur and shape change.
The loss recipe decides what kind of error survives a brief training: pixel losses leave smooth
colour/tone shifts, MS-SSIM keeps structure but lets tone drift, deep-feature losses keep texture
statistics but let exact positions and colours wander.
"""

from __future__ import annotations

import dataclasses

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from jndplug.artifacts import json_field, load_artifact, module_tensors, save_artifact
from jndplug.errors import CorruptFileError, JNDPlugValueError

AUTOENCODER_FORMAT = "jndplug-distortion-autoencoder/1"
LOSS_TERMS = ("l1", "l2", "ms_ssim", "feature")


@dataclass(frozen=True)
class AutoencoderSpec:
    """One member of the autoencoder family: architecture, loss recipe and training length.

    ``skips`` lists the scales (0 = full resolution, ``depth - 1`` = just above the bottleneck)
    whose encoder features are passed to the decoder; the others are dropped.
    """

    name: str
    width: int = 16
    depth: int = 2
    bottleneck: int = 32
    skips: tuple[int, ...] = (0, 1)
    loss: dict = field(default_factory=lambda: {"l1": 1.0})
    steps: int = 150

    def __post_init__(self):
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise JNDPlugValueError(f"autoencoder name {self.name!r}: use letters, digits, '-', '_', '.'")
        if self.width < 1 or self.depth < 1 or self.bottleneck < 1 or self.steps < 0:
            raise JNDPlugValueError(f"autoencoder {self.name}: width, depth and bottleneck must be >= 1, steps >= 0")
        bad = [s for s in self.skips if not 0 <= s < self.depth]
        if bad:
            raise JNDPlugValueError(f"autoencoder {self.name}: skip scales {bad} outside 0..{self.depth - 1}")
        unknown = set(self.loss) - set(LOSS_TERMS)
        if unknown or not self.loss or any(w <= 0 for w in self.loss.values()):
            raise JNDPlugValueError(f"autoencoder {self.name}: loss recipe {self.loss} must give positive weights "
                                    f"to terms among {', '.join(LOSS_TERMS)}")
        object.__setattr__(self, "skips", tuple(sorted(set(self.skips))))
        object.__setattr__(self, "loss", dict(self.loss))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skips"] = list(self.skips)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AutoencoderSpec":
        return cls(**{**d, "skips": tuple(d.get("skips", ()))})


def default_family(steps: int = 150, feature_steps: int | None = None) -> list[AutoencoderSpec]:
    """The nine autoencoders of the default recipe, nominally weakest (level 1) to strongest.

    Capacity falls down the list (skips dropped from the finest scale up, then the bottleneck
    narrows); the loss recipes alternate so neighbouring levels differ in kind, not only amount.
    ``feature_steps`` (default ``steps``) applies to the members with a deep-feature loss, whose
    steps cost about ten times those of the pixel-loss members on a CPU.
    """
    family = _default_family(steps)
    if feature_steps is None:
        return family
    return [dataclasses.replace(s, steps=feature_steps) if "feature" in s.loss else s for s in family]


def _default_family(steps: int) -> list[AutoencoderSpec]:
    return [
        AutoencoderSpec("ae1-skip-all-l1", 16, 2, 32, (0, 1), {"l1": 1.0}, steps),
        AutoencoderSpec("ae2-skip-all-l2-msssim", 16, 2, 32, (0, 1), {"l2": 1.0, "ms_ssim": 0.5}, steps),
        AutoencoderSpec("ae3-skip-coarse-l1-feature", 16, 2, 32, (1,), {"l1": 1.0, "feature": 0.05}, steps),
        AutoencoderSpec("ae4-skip-coarse-l2", 16, 2, 32, (1,), {"l2": 1.0}, steps),
        AutoencoderSpec("ae5-skip-deep-l1-msssim", 16, 3, 32, (2,), {"l1": 1.0, "ms_ssim": 0.5}, steps),
        AutoencoderSpec("ae6-skip-deep-feature", 16, 3, 16, (2,), {"l1": 0.5, "feature": 0.1}, steps),
        AutoencoderSpec("ae7-noskip-b16-l1", 16, 2, 16, (), {"l1": 1.0}, steps),
        AutoencoderSpec("ae8-noskip-b8-l2-msssim", 16, 3, 8, (), {"l2": 1.0, "ms_ssim": 0.5}, steps),
        AutoencoderSpec("ae9-noskip-b4-feature", 16, 3, 4, (), {"l1": 0.5, "feature": 0.1}, steps),
    ]


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


class DistortionAutoencoder(nn.Module):
    """U-Net-style autoencoder built from an :class:`AutoencoderSpec`; input/output in [0,1]."""

    def __init__(self, spec: AutoencoderSpec):
        super().__init__()
        self.spec = spec
        ch = [min(spec.width * 2 ** i, 64) for i in range(spec.depth + 1)]
        self.stem = _block(3, ch[0])
        self.down = nn.ModuleList(nn.Sequential(_block(ch[i], ch[i + 1], 2), _block(ch[i + 1], ch[i + 1]))
                                  for i in range(spec.depth))
        self.squeeze = nn.Conv2d(ch[-1], spec.bottleneck, 1)
        self.expand = _block(spec.bottleneck, ch[-1])
        self.up = nn.ModuleList(_block(ch[i + 1], ch[i]) for i in range(spec.depth))
        self.merge = nn.ModuleDict({str(i): _block(2 * ch[i], ch[i]) for i in spec.skips})
        self.head = nn.Conv2d(ch[0], 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2 ** self.spec.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:  # edge-pad to a multiple of the total stride, crop back at the end
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        feats = [self.stem(x)]
        for down in self.down:
            feats.append(down(feats[-1]))
        y = self.expand(self.squeeze(feats[-1]))
        for i in reversed(range(self.spec.depth)):
            y = self.up[i](F.interpolate(y, size=feats[i].shape[-2:], mode="bilinear", align_corners=False))
            if str(i) in self.merge:
                y = self.merge[str(i)](torch.cat([y, feats[i]], 1))
        return self.head(y)[..., :h, :w]


def save_autoencoder(model: DistortionAutoencoder, path: str | Path, info: dict | None = None) -> None:
    """Save weights and spec (and training info) as one safetensors file, atomically."""
    save_artifact(path, module_tensors(model), AUTOENCODER_FORMAT, {"spec": model.spec.to_dict(), "info": info or {}},
                  "distortion autoencoder")


def load_autoencoder(path: str | Path) -> tuple[DistortionAutoencoder, dict]:
    """Load a file written by :func:`save_autoencoder`; returns the model (eval mode) and its info."""
    path = Path(path)
    tensors, meta = load_artifact(path, AUTOENCODER_FORMAT, "distortion autoencoder")
    try:
        model = DistortionAutoencoder(AutoencoderSpec.from_dict(json_field(path, meta, "spec")))
        model.load_state_dict(tensors)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:  # a spec or weights that do not fit
        raise CorruptFileError(f"{path}: its spec does not build the stored autoencoder ({exc})") from None
    return model.eval(), json_field(path, meta, "info", {})
