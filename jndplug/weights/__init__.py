"""Estimator weights files: safetensors plus the metadata needed to rebuild and trust them.

A weights file stores the tensors and, as safetensors string metadata:
``format`` (``jndplug-estimator/1``), ``arch`` (registry name), ``config`` (JSON), ``jndplug_version``,
``tensors_sha256`` (hash of every tensor's name, dtype, shape and bytes) and ``provenance``
(free-form JSON: training data, label source, command). Loading verifies all of it. Nothing here
unpickles: foreign ``.pth`` checkpoints are converted by dedicated importers that use
``torch.load(weights_only=True)``.

Pretrained estimators shipped with the package live beside this module; ``PRETRAINED`` holds one
record per name (:class:`Pretrained`, in the manner of timm's pretrained configs): its file and that
file's sha256, architecture, default SUR, label source and model card. It is the one place a
pretrained name is described; loading by name checks the file against it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from jndplug.artifacts import (check_format, json_field, load_artifact, module_tensors, read_metadata,  # noqa: F401
                               save_artifact, tensors_sha256)
from jndplug.errors import CorruptFileError, JNDPlugValueError

FORMAT = "jndplug-estimator/1"
WEIGHTS_DIR = Path(__file__).resolve().parent



@dataclass(frozen=True)
class Pretrained:
    """What a pretrained name stands for, known without opening its file."""

    file: str  # inside jndplug/weights
    sha256: str  # of the whole file: a replaced or damaged file is refused under this name
    architecture: str  # registry name (jndplug.models.list_estimators)
    default_sur: float | None  # the satisfied-user ratio it runs at by default; None: not SUR-conditioned
    label_source: tuple[str, ...]  # where its training labels came from (the file's provenance)
    model_card: str  # where it is documented, from the repository root
    description: str


PRETRAINED: dict[str, Pretrained] = {
    "default": Pretrained(
        file="jnd-default.safetensors",
        sha256="2fdb0560fdea9b4f6bd39247ebc2cb2eb174105d7c8034ed65d5b8ae99f55b15",
        architecture="unet", default_sur=0.75, label_source=("generated",), model_card="MODEL_CARD.md",
        description="the shipped JND inference model"),
}


def list_pretrained() -> dict[str, bool]:
    """Pretrained names and whether each one's file is installed."""
    return {name: (WEIGHTS_DIR / record.file).is_file() for name, record in PRETRAINED.items()}


def estimator_fingerprint(model: nn.Module) -> str:
    """Identity of an estimator's behaviour: architecture, config and weights."""
    from jndplug.models import estimator_info

    info = estimator_info(model)
    arch = info.arch_name or type(model).__qualname__
    config = json.dumps(info.config or {}, sort_keys=True)
    return hashlib.sha256(f"{arch}\n{config}\n{tensors_sha256(module_tensors(model))}".encode()).hexdigest()


def save_estimator(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None,
                   dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` as a jndplug weights file; ``metadata`` is the free-form provenance.

    ``model`` must come from the registry (``create_estimator`` / ``load_estimator``), which
    gives it ``arch_name`` and ``config``. ``dtype`` (e.g. ``torch.float16``) stores the floating
    tensors in that precision, halving a shipped file; loading casts them back to the model's
    float32. The write is atomic.
    """
    from jndplug.models import estimator_info

    info = estimator_info(model)
    arch = info.arch_name
    if arch is None or info.config is None:
        raise TypeError(
            f"{type(model).__name__} is not a registered jndplug estimator (no arch_name/config); "
            "build it with jndplug.create_estimator"
        )
    tensors = module_tensors(model)
    if dtype is not None:
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    fields = {"arch": arch, "config": json.dumps(model.config, sort_keys=True), "provenance": dict(metadata or {})}
    return save_artifact(path, tensors, FORMAT, fields, "estimator weights")


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Map a pretrained name or a file path to an existing weights file, or explain why not."""
    key = os.fspath(name_or_path)
    if key in PRETRAINED:
        path = WEIGHTS_DIR / PRETRAINED[key].file
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained estimator {key!r} is not installed ({path} is missing). It is produced by "
                "`jndplug train` (see MODEL_CARD.md); pass the path of a "
                ".safetensors file you trained, or an nn.Module, instead."
            )
        return path
    path = Path(key).expanduser()
    if path.is_file():
        return path
    if path.suffix or os.sep in key:
        raise FileNotFoundError(f"estimator weights file not found: {path}")
    raise JNDPlugValueError(f"unknown pretrained estimator {key!r}; known names: {', '.join(PRETRAINED)} "
                            "(or give the path of a .safetensors file)")


def _checked_config(path: Path, arch: str, text: str) -> dict:
    """The architecture config stored in a weights file, refused unless it is plain options.

    Options that name a local file (``file_options`` of the architecture, e.g. unet's
    ``encoder_weights``) are never taken from a file's metadata: loading a downloaded weights file
    must not make jndplug read, let alone unpickle, another file on this machine.
    """
    from jndplug.models import architecture

    try:
        config = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CorruptFileError(f"{path}: metadata 'config' is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise CorruptFileError(f"{path}: metadata 'config' must be a JSON object, got {type(config).__name__}")
    cls = architecture(arch)
    forbidden = sorted(set(config) & set(getattr(cls, "file_options", ())))
    if forbidden:
        raise CorruptFileError(f"{path}: metadata config names a local file ({', '.join(forbidden)}); weights "
                               "files never do, so this one was edited: refused")
    allowed = set(inspect.signature(cls).parameters)
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise CorruptFileError(f"{path}: metadata config has unknown {arch!r} options {unknown[:5]} "
                               "(a newer jndplug may be needed)")
    return config


def load_estimator(name_or_path: str | os.PathLike, map_location=None) -> nn.Module:
    """Rebuild an estimator from a pretrained name or a jndplug ``.safetensors`` file, verified.

    Refuses, with a message naming the problem, a truncated or corrupt file, a file that is not a
    jndplug estimator, a tensor-hash mismatch, an unknown architecture and a shape mismatch.
    The model is returned in eval mode with ``provenance`` and ``weights_path`` attributes.
    """
    from jndplug.models import create_estimator, list_estimators

    path = resolve(name_or_path)
    record = PRETRAINED.get(os.fspath(name_or_path))
    if record is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != record.sha256:
            raise CorruptFileError(f"{path} does not match the record of pretrained {os.fspath(name_or_path)!r} "
                                   f"(sha256 {digest[:12]}..., recorded {record.sha256[:12]}...); reinstall "
                                   "jndplug, or load your own file by its path")
    if path.suffix in (".pth", ".pt", ".ckpt", ".bin"):
        raise JNDPlugValueError(
            f"{path}: jndplug loads only .safetensors weights; convert foreign checkpoints first "
            "(for the authors' ResJND checkpoint: `jndplug convert IN.pth --out OUT.safetensors`)"
        )
    meta = read_metadata(path)
    check_format(path, meta, FORMAT, "jndplug estimator")
    for key in ("arch", "config", "tensors_sha256"):
        if key not in meta:
            raise CorruptFileError(f"{path}: metadata lacks {key!r}")
    arch = meta["arch"]
    if arch not in list_estimators():
        raise JNDPlugValueError(f"{path}: unknown estimator architecture {arch!r}; this jndplug knows "
                                f"{', '.join(list_estimators())} (a newer version may be needed)")
    config = _checked_config(path, arch, meta["config"])
    tensors, _ = load_artifact(path, FORMAT, "jndplug estimator", meta)
    provenance = json_field(path, meta, "provenance", {})
    # The config is checked against the stored tensors on the meta device (shapes, no memory)
    # before anything is allocated: a crafted config cannot make loading build a huge network.
    try:
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in create_estimator(arch, **config).state_dict().items()}
    except (TypeError, ValueError, RuntimeError, AttributeError, KeyError, IndexError, OverflowError) as exc:
        raise CorruptFileError(f"{path}: metadata config does not build a {arch!r} estimator ({exc})") from None
    missing = sorted(set(shapes) - set(tensors))
    unexpected = sorted(set(tensors) - set(shapes))
    if missing or unexpected:
        raise CorruptFileError(f"{path}: weights do not match architecture {arch!r} "
                               f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    for k, v in tensors.items():
        if shapes[k] != v.shape:
            raise CorruptFileError(f"{path}: shape mismatch for {k}: file {tuple(v.shape)}, "
                                   f"architecture {tuple(shapes[k])}")
    model = create_estimator(arch, **config)
    model.load_state_dict(tensors)
    model.provenance = provenance
    model.weights_path = str(path)
    model.eval()
    if map_location is not None:
        model.to(map_location)
    return model
