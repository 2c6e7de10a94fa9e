"""The estimator interface: what jndplug reads from an estimator besides calling it.

Registered architectures derive from :class:`Estimator`. ``JNDTarget`` also takes a plain
``nn.Module``; :func:`estimator_info` reads any module through the interface, with the base
class's values where the module does not set its own, so the defaults live here alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


class Estimator(nn.Module):
    """Base class of the estimator architectures: ``forward(x[, sur])`` maps images in [0, 1] to JND images.

    Attributes (class-level defaults; architectures and ``load_estimator`` set their own):

    - ``arch_name``: the registry name (set by ``register_estimator``);
    - ``config``: the keyword config that rebuilds the architecture (``create_estimator(arch_name, **config)``);
    - ``accepts_sur``: ``forward`` takes a ``sur`` (target satisfied-user ratio) argument;
    - ``size_divisor``: input sides must be a multiple of it (inputs are padded to one);
    - ``provenance``, ``weights_path``: the free-form provenance and the path of the weights file
      it was loaded from (``load_estimator``).
    """

    arch_name: str | None = None
    config: dict | None = None
    accepts_sur: bool = False
    size_divisor: int = 1
    provenance: dict | None = None
    weights_path: str | None = None


@dataclass(frozen=True)
class EstimatorInfo:
    arch_name: str | None
    config: dict | None
    accepts_sur: bool
    size_divisor: int
    provenance: dict | None
    weights_path: str | None


def estimator_info(model: nn.Module) -> EstimatorInfo:
    """The interface attributes of ``model``, an :class:`Estimator` or any ``nn.Module``."""
    values = {name: getattr(model, name, getattr(Estimator, name)) for name in EstimatorInfo.__dataclass_fields__}
    values["accepts_sur"] = bool(values["accepts_sur"])
    values["size_divisor"] = int(values["size_divisor"])
    return EstimatorInfo(**values)
