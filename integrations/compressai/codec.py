"""CompressAI models by name and quality, their lambdas, and loading local checkpoint files."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck
from compressai.models.utils import remap_old_keys
from compressai.registry import MODELS
from compressai.zoo import load_state_dict as rename_zoo_keys
from compressai.zoo.image import cfgs as ZOO_CONFIGS

from jndplug.errors import JNDPlugValueError

# Lagrange multipliers of CompressAI's MSE-optimised zoo models, per quality (its documentation,
# "Training" table); the rate-distortion loss is lmbda * 255^2 * MSE + bpp.
MSE_LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483, 7: 0.0932, 8: 0.1800}

# The fixed-rate image models of the zoo. Built from CompressAI's model registry with the zoo's
# channel widths rather than through compressai.zoo.image_models, whose
# "bmshj2018-factorized-relu" entry builds the GDN model in CompressAI 1.2.8. The variable-rate
# (-vbr) models are left out: they are trained over a range of lambdas, not one per quality.
MODEL_NAMES = tuple(ZOO_CONFIGS)

# Entropy-coder tables: sized by update(), empty in a freshly built model, so their shapes in a
# checkpoint say nothing about the architecture.
_CODER_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")

ZOO_UNREACHABLE = (
    "CompressAI's pretrained weights are downloaded from the internet by its zoo, which is not "
    "reachable here; download the .pth.tar file elsewhere (see CompressAI's model zoo page) and "
    "pass it with --checkpoint FILE"
)


class CodecError(JNDPlugValueError):
    """Bad input for the CompressAI integration (unknown model, quality, checkpoint, image...)."""


def qualities(name: str) -> list[int]:
    check_model_name(name)
    return sorted(ZOO_CONFIGS[name])


def check_model_name(name: str) -> None:
    if name not in ZOO_CONFIGS:
        hint = ""
        if name.endswith("-vbr"):
            hint = " (variable-rate models are not supported: they train over a range of lambdas)"
        raise CodecError(f"unknown CompressAI model {name!r}{hint}; choose one of {', '.join(MODEL_NAMES)}")


def check_quality(name: str, quality: int) -> None:
    allowed = qualities(name)
    if quality not in allowed:
        raise CodecError(f"quality {quality} is out of range for {name}: use {allowed[0]}..{allowed[-1]}")


def default_lambda(quality: int) -> float:
    return MSE_LAMBDAS[quality]


def build_model(name: str, quality: int) -> nn.Module:
    """A freshly initialised CompressAI model (never downloads anything)."""
    check_quality(name, quality)
    return MODELS[name](*ZOO_CONFIGS[name][quality])


def downsampling_factor(model: nn.Module) -> int:
    # every fixed-rate zoo model has the property; 64 covers hyperprior-style models otherwise
    return int(getattr(model, "downsampling_factor", 64))


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw contents of a checkpoint file, loaded without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt or foreign files
        raise CodecError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc


def state_dict_of(checkpoint: dict, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights in a CompressAI-style checkpoint: a raw state dict or ``{"state_dict": ...}``.

    Keys saved by older CompressAI versions and by DataParallel (``module.``) are renamed the way
    CompressAI's own zoo loader does.
    """
    if not isinstance(checkpoint, dict):
        raise CodecError(f"{source}: expected a state dict, found {type(checkpoint).__name__}")
    state = checkpoint.get("state_dict", checkpoint)
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CodecError(f"{source}: no model weights found (expected a state dict or {{'state_dict': ...}})")
    return rename_zoo_keys(dict(state))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], name: str, quality: int,
                 source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` (built as ``name`` at ``quality``), or explain the mismatch."""
    for module_name, module in model.named_modules():
        if isinstance(module, EntropyBottleneck):
            state = remap_old_keys(module_name, state)
    missing, unexpected, mismatched = _compare(model, state)
    if missing or unexpected:
        guess = _guess_architecture(state)
        raise CodecError(
            f"{source} is not a {name} checkpoint"
            + (f" (it looks like {guess})" if guess else "")
            + f": {len(missing)} weights missing ({_few(missing)}), {len(unexpected)} unexpected ({_few(unexpected)})")
    if mismatched:
        fits = [q for q in qualities(name) if q != quality and not _compare(build_model(name, q), state)[2]]
        hint = f"; its channel widths are those of {name} quality {_join(fits)}" if fits else ""
        details = ", ".join(f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched[:3])
        raise CodecError(f"{source} does not fit {name} at quality {quality}{hint} ({details})")
    # CompressAI's load_state_dict resizes the entropy-coder buffers to the checkpoint's first
    model.load_state_dict(state)


def _compare(model: nn.Module, state: dict[str, torch.Tensor]):
    own = model.state_dict()
    # learnt weights first: they name the architecture better than entropy-coder buffers do
    order = lambda k: (not k.endswith((".weight", ".bias")), k)  # noqa: E731
    missing = sorted(set(own) - set(state), key=order)
    unexpected = sorted(set(state) - set(own), key=order)
    mismatched = [(k, state[k].shape, own[k].shape) for k in sorted(set(own) & set(state))
                  if state[k].shape != own[k].shape and k.rsplit(".", 1)[-1] not in _CODER_BUFFERS]
    return missing, unexpected, mismatched


def _guess_architecture(state: dict[str, torch.Tensor]) -> str | None:
    """Which zoo model and quality the weights belong to (only on the error path: it builds models)."""
    for name in MODEL_NAMES:
        lowest = build_model(name, qualities(name)[0])
        for module_name, module in lowest.named_modules():
            if isinstance(module, EntropyBottleneck):
                state = remap_old_keys(module_name, state)
        if set(lowest.state_dict()) != set(state):
            continue
        fits = [q for q in qualities(name) if not _compare(build_model(name, q), state)[2]]
        return f"{name} quality {_join(fits)}" if fits else name
    return None


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") if keys else "none"


def _join(qs: list[int]) -> str:
    return "/".join(map(str, qs))


def load_codec(path: str | os.PathLike, name: str | None = None, quality: int | None = None):
    """A model ready for entropy coding from a checkpoint file, and ``(name, quality, checkpoint)``.

    Checkpoints written by this integration record their model and quality; CompressAI's own
    files do not, so ``name`` and ``quality`` are then required.
    """
    checkpoint = read_checkpoint(path)
    recorded = {k: checkpoint.get(k) for k in ("model", "quality")} if isinstance(checkpoint, dict) else {}
    for key, given in (("model", name), ("quality", quality)):
        if given is not None and recorded.get(key) is not None and given != recorded[key]:
            raise CodecError(f"{path} was trained as {key} {recorded[key]!r}, not {given!r}")
    name = name if name is not None else recorded.get("model")
    quality = quality if quality is not None else recorded.get("quality")
    if name is None or quality is None:
        raise CodecError(f"{path} does not record its model and quality (a CompressAI file?): "
                         "give --model and --quality")
    model = build_model(name, quality)
    load_weights(model, state_dict_of(checkpoint, str(path)), name, quality, str(path))
    model.eval()
    model.update(force=True)  # entropy-coder tables from the loaded weights, whatever the file held
    return model, name, quality, checkpoint
