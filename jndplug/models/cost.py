"""Compute cost of an estimator, counted rather than estimated."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def macs_per_pixel(model: nn.Module, size: tuple[int, int] = (256, 256)) -> float:
    """Multiply-accumulates per input pixel for one forward pass at ``size`` (H, W).

    Counted in forward hooks on every convolution (grouped and transposed included) and linear
    layer, so it measures what actually runs, including the encoder. Elementwise work
    (activations, normalisation, interpolation) is not counted, as usual for MAC figures.
    """
    total = 0

    def conv_hook(mod: nn.modules.conv._ConvNd, inp, out):
        nonlocal total
        kernel = 1
        for k in mod.kernel_size:
            kernel *= k
        if isinstance(mod, nn.modules.conv._ConvTransposeNd):
            # each input element is scattered through the kernel into the output channels
            total += inp[0].numel() * (mod.out_channels // mod.groups) * kernel
        else:
            total += out.numel() * (mod.in_channels // mod.groups) * kernel

    def linear_hook(mod: nn.Linear, inp, out):
        nonlocal total
        total += out.numel() * mod.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        model(torch.rand(1, 3, *size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total / (size[0] * size[1])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
