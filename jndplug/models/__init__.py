"""Estimator architectures and their registry.

An estimator maps a batch of pristine images ``[B,3,H,W]`` in [0,1] to the JND image of each: the
same picture carrying the strongest CNN-style distortion that people do not notice. Every
architecture is registered by name with a config-driven builder, so a weights file only needs to
store ``(name, config)`` to be rebuilt (the same idea as timm's ``create_model``).
"""

from __future__ import annotations

from typing import Callable

from jndplug.models.base import Estimator, EstimatorInfo, estimator_info

__all__ = ["Estimator", "EstimatorInfo", "create_estimator", "estimator_info", "list_estimators", "register_estimator"]

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
    if name not in _REGISTRY:
        known = ", ".join(list_estimators())
        raise ValueError(f"unknown estimator architecture {name!r}; registered: {known}")
    cls = _REGISTRY[name]
    try:
        return cls(**config)
    except TypeError as exc:  # unknown config keys surface here
        raise ValueError(f"bad config for estimator {name!r}: {exc}") from exc


# Importing the modules registers the architectures.
from jndplug.models import resjnd, unet  # noqa: E402,F401
