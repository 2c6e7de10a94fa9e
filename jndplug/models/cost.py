"""Compute cost of an estimator, counted rather than estimated."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def macs_per_pixel(model: nn.Module, size: tuple[int, int] = (256, 256)) -> float:
    """Multiply-accumulates per input pixel for one forward pass at ``size`` (H, W).

    Counted by torch's ``FlopCounterMode`` on the operations that actually run (convolutions of any
    kind and matrix products, whether called through a layer or as a function), the encoder
    included; it counts two FLOPs per multiply-accumulate. Elementwise work (activations,
    normalisation, interpolation) is not counted, as usual for MAC figures.
    """
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        with FlopCounterMode(display=False) as counter:
            model(torch.rand(1, 3, *size, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / (size[0] * size[1])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
