"""The registry of estimator architectures: one name builds one architecture from keyword config.

A weights file stores ``(name, config)``, so ``create_estimator(name, **config)`` is all it takes
to rebuild the network before loading its tensors (timm's ``create_model`` idea).
"""

from __future__ import annotations

from typing import Callable

import torch

from jndplug.errors import JNDPlugValueError
from jndplug.models.base import Estimator

_REGISTRY: dict[str, Callable[..., Estimator]] = {}


def register_estimator(name: str):
    """Class decorator adding an architecture to the registry under ``name``."""

    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"estimator architecture {name!r} is already registered")
        _REGISTRY[name] = cls
        cls.arch_name = name
        return cls

    return wrap


def list_estimators() -> list[str]:
    """Names of the registered architectures (see also ``jndplug.list_pretrained``)."""
    return sorted(_REGISTRY)


def create_estimator(name: str, **config) -> Estimator:
    """Build a randomly initialised estimator of architecture ``name`` from keyword config.

    The resolved config (defaults filled in) is kept on the module as ``model.config`` so that
    ``save_estimator`` can store it next to the weights.
    """
    cls = architecture(name)
    try:
        return cls(**config)
    except TypeError as exc:  # unknown config keys surface here
        raise JNDPlugValueError(f"bad config for estimator {name!r}: {exc}") from exc


def architecture(name: str) -> Callable[..., Estimator]:
    """The registered class of ``name`` (its signature lists the config options a file may hold)."""
    if name not in _REGISTRY:
        raise JNDPlugValueError(f"unknown estimator architecture {name!r}; registered: {', '.join(list_estimators())}")
    return _REGISTRY[name]


def size_divisor(name: str, **config) -> int:
    """The number the input sides of architecture ``name`` (with ``config``) must be a multiple of:
    read from the network built on the meta device (no memory, no weights; options naming a local
    file are left out, so none is opened)."""
    cls = architecture(name)
    config = {k: v for k, v in config.items() if k not in getattr(cls, "file_options", ())}
    with torch.device("meta"):
        return int(create_estimator(name, **config).size_divisor)
