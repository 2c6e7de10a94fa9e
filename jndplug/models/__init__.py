"""Estimator architectures and their registry.

An estimator maps a batch of pristine images ``[B,3,H,W]`` in [0,1] to the JND image of each: the
same picture carrying the strongest CNN-style distortion that people do not notice. Every
architecture is registered by name (``registry.py``), so a weights file only needs to store
``(name, config)`` to be rebuilt. The registry is where code asks which architectures exist
(``list_estimators``) and what input sides each one needs (``size_divisor``): nothing else names them.
"""

from __future__ import annotations

from jndplug.models.base import Estimator, EstimatorInfo, estimator_info
from jndplug.models.registry import architecture, create_estimator, list_estimators, register_estimator, size_divisor

__all__ = ["Estimator", "EstimatorInfo", "architecture", "create_estimator", "estimator_info", "list_estimators",
           "register_estimator", "size_divisor"]

# Importing the modules registers the architectures.
from jndplug.models import resjnd, unet  # noqa: E402,F401
