"""Loss recipes for the distortion autoencoders, and the image-quality scores of the manifest.

The deep-feature term uses a timm VGG16 trunk (up to relu3_3). Its weights come, in order of
preference, from a local file the user names, from the ImageNet-trained shift-tolerant VGG16 that
the ``stlpips-pytorch`` wheel bundles, or from a fixed seeded random initialisation (random deep
features still penalise structure, just less like a trained network). Nothing is downloaded; the
manifest records which weights were used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_msssim import ms_ssim, ssim

from jndplug.errors import JNDPlugValueError

_MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_FEATURE_SEED = 20261122


def ms_ssim_window(smaller_side: int) -> int | None:
    """Largest odd Gaussian window (<= 11) pytorch-msssim accepts for this image size, or None.

    pytorch-msssim needs ``smaller_side > (win - 1) * 16`` (four downsamplings), so images under
    about 176 pixels get a smaller window rather than no score.
    """
    for win in (11, 9, 7, 5, 3):
        if smaller_side > (win - 1) * 16:
            return win
    return None


def ms_ssim_score(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """MS-SSIM per image of ``[B,3,H,W]`` batches in [0,1]; None for images under 33 pixels."""
    win = ms_ssim_window(min(x.shape[-2:]))
    if win is None:
        return None
    return ms_ssim(x, y, data_range=1.0, size_average=False, win_size=win, weights=list(_MSSSIM_WEIGHTS))


def ssim_score(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    win = min(11, (min(x.shape[-2:]) // 2) * 2 - 1)
    return ssim(x, y, data_range=1.0, size_average=False, win_size=max(win, 3))


class FeatureNetwork(nn.Module):
    """Frozen timm VGG16 trunk returning relu1_2, relu2_2 and relu3_3 for inputs in [0,1]."""

    def __init__(self, weights: str | Path | None = None, use_stlpips: bool = True):
        super().__init__()
        import timm

        with torch.random.fork_rng():  # the random fallback must be the same network every run
            torch.manual_seed(_FEATURE_SEED)
            self.trunk = timm.create_model("vgg16", pretrained=False, features_only=True, out_indices=(0, 1, 2))
        # LPIPS convention, which the bundled ST-LPIPS trunk was trained with: [-1,1], then shift/scale
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.source = self._load(weights, use_stlpips)
        self.requires_grad_(False)
        self.eval()

    def _load(self, weights, use_stlpips) -> dict:
        convs = [(k, v) for k, v in self.trunk.state_dict().items()]
        if weights is not None:
            path = Path(weights)
            state = _read_state_dict(path)
            self._assign(_conv_tensors(state), convs, str(path))
            return {"weights": "local file", "path": str(path.resolve()), "sha256": _sha256(path)}
        if use_stlpips:
            path = _stlpips_vgg_file()
            if path is not None:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if "scaling_layer.shift" in state:
                    self.shift.copy_(state["scaling_layer.shift"].view(1, 3, 1, 1))
                    self.scale.copy_(state["scaling_layer.scale"].view(1, 3, 1, 1))
                self._assign(_conv_tensors(state), convs, str(path))
                return {"weights": "stlpips-pytorch bundled shift-tolerant VGG16 (ImageNet-trained)",
                        "path": str(path), "sha256": _sha256(path)}
        return {"weights": f"random (fixed seed {_FEATURE_SEED})"}

    def _assign(self, tensors: list[torch.Tensor], own: list, origin: str) -> None:
        # Both VGG16 layouts list conv weight, bias in the same order; match by position and shape.
        if len(tensors) < len(own):
            raise JNDPlugValueError(f"{origin}: has {len(tensors) // 2} conv layers, the VGG16 trunk needs "
                                    f"{len(own) // 2}")
        new = {}
        for (k, v), t in zip(own, tensors):
            if tuple(t.shape) != tuple(v.shape):
                raise JNDPlugValueError(f"{origin}: tensor of shape {tuple(t.shape)} where VGG16 {k} needs "
                                        f"{tuple(v.shape)}")
            new[k] = t.float()
        self.trunk.load_state_dict(new)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk((x * 2 - 1 - self.shift) / self.scale)


def _stlpips_vgg_file() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("stlpips_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "vST0.0" / "vgg_shift_tolerant.pth"
    return path if path.is_file() else None


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"feature network weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise JNDPlugValueError(f"{path}: not a readable state dict of tensors ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise JNDPlugValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def _conv_tensors(state: dict) -> list[torch.Tensor]:
    """The weights and biases of the 3x3 conv layers, in file order (skips blur filters, heads)."""
    out = []
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        if v.ndim == 4 and v.shape[-1] == 3 and v.shape[1] > 1 and k.endswith("weight"):
            out.append(v)
            bias = state.get(k[: -len("weight")] + "bias")
            if bias is None:
                raise JNDPlugValueError(f"conv layer {k} has no bias")
            out.append(bias)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RecipeLoss(nn.Module):
    """Weighted sum of the loss terms named in an autoencoder's recipe."""

    def __init__(self, recipe: dict, features: FeatureNetwork | None = None):
        super().__init__()
        if "feature" in recipe and features is None:
            raise JNDPlugValueError("a recipe with a 'feature' term needs a feature network")
        self.recipe = dict(recipe)
        self.features = features if "feature" in recipe else None

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = pred.new_zeros(())
        for term, weight in self.recipe.items():
            if term == "l1":
                value = F.l1_loss(pred, target)
            elif term == "l2":
                value = F.mse_loss(pred, target)
            elif term == "ms_ssim":
                score = ms_ssim_score(pred.clamp(0, 1), target)
                if score is None:
                    raise JNDPlugValueError("training patches are too small for MS-SSIM; use a patch size >= 48")
                value = 1 - score.mean()
            else:  # feature
                with torch.no_grad():
                    ref = self.features(target)
                # channel-normalised as in LPIPS, so the weight means the same for random or trained trunks
                value = sum(F.mse_loss(_unit(a), _unit(b)) for a, b in zip(self.features(pred), ref)) / len(ref)
            total = total + weight * value
        return total


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
