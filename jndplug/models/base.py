"""The estimator interface: what jndplug reads from an estimator besides calling it.

Registered architectures derive from :class:`Estimator`. ``JNDTarget`` also takes a plain
``nn.Module``; :func:`estimator_info` and :func:`global_pools` read any module through the
interface, with the base class's values where the module does not set its own, so the defaults
live here alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn


class GlobalPooling(nn.Module):
    """A layer that pools over its whole input (e.g. squeeze-excitation), open to tiled inference.

    A tile does not have the whole image's mean, so the tiler (:mod:`jndplug.tiling`) first
    measures it: it sets ``observer`` to a callable that each forward calls with the layer's
    input (to sum it over the part of the image the tile stands for), then sets ``global_mean``
    (``[B,C,1,1]``) to the image's mean, which ``forward`` must use instead of its input's own.
    Both are ``None`` outside a tiled pass, and the layer behaves as usual.
    """

    def __init__(self):
        super().__init__()
        self.global_mean: torch.Tensor | None = None
        self.observer: Callable[[torch.Tensor], None] | None = None

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """What the layer pools ``x`` to: its mean over H and W, or ``global_mean`` when set."""
        if self.observer is not None:
            self.observer(x)
        return x.mean((2, 3), keepdim=True) if self.global_mean is None else self.global_mean.to(x.dtype)


class Estimator(nn.Module):
    """Base class of the estimator architectures: ``forward(x[, sur])`` maps images in [0, 1] to JND images.

    Attributes (class-level defaults; architectures and ``load_estimator`` set their own):

    - ``arch_name``: the registry name (set by ``register_estimator``);
    - ``config``: the keyword config that rebuilds the architecture (``create_estimator(arch_name, **config)``);
    - ``accepts_sur``: ``forward`` takes a ``sur`` (target satisfied-user ratio) argument;
    - ``default_sur``: the ratio a SUR-conditioned ``forward`` uses when called without one;
    - ``size_divisor``: input sides must be a multiple of it (inputs are padded to one);
    - ``zero_mean``: ``forward`` removes each image's per-channel mean from its residual; such a
      ``forward`` must take ``center=False`` to skip that step, so that tiles can be centred
      together once assembled;
    - ``provenance``, ``weights_path``: the free-form provenance and the path of the weights file
      it was loaded from (``load_estimator``).

    Layers that pool over the whole input derive from :class:`GlobalPooling`; :meth:`global_pools`
    lists them.
    """

    arch_name: str | None = None
    config: dict | None = None
    accepts_sur: bool = False
    default_sur: float | None = None
    size_divisor: int = 1
    zero_mean: bool = False
    provenance: dict | None = None
    weights_path: str | None = None

    def global_pools(self) -> list[GlobalPooling]:
        """The layers whose output depends on the mean of the whole input (tiled inference measures it)."""
        return [m for m in self.modules() if isinstance(m, GlobalPooling)]


@dataclass(frozen=True)
class EstimatorInfo:
    arch_name: str | None
    config: dict | None
    accepts_sur: bool
    default_sur: float | None
    size_divisor: int
    zero_mean: bool
    provenance: dict | None
    weights_path: str | None


def estimator_info(model: nn.Module) -> EstimatorInfo:
    """The interface attributes of ``model``, an :class:`Estimator` or any ``nn.Module``."""
    values = {name: getattr(model, name, getattr(Estimator, name)) for name in EstimatorInfo.__dataclass_fields__}
    values["accepts_sur"] = bool(values["accepts_sur"])
    values["zero_mean"] = bool(values["zero_mean"])
    values["size_divisor"] = int(values["size_divisor"])
    if not values["accepts_sur"]:
        values["default_sur"] = None  # a ratio the network does not take is not in effect
    elif values["default_sur"] is not None:
        values["default_sur"] = float(values["default_sur"])
    return EstimatorInfo(**values)


def global_pools(model: nn.Module) -> list[GlobalPooling]:
    """:meth:`Estimator.global_pools` of ``model``; for a plain ``nn.Module``, its :class:`GlobalPooling` layers."""
    return model.global_pools() if isinstance(model, Estimator) else Estimator.global_pools(model)
