"""CompressAI's training step, optimisers and test pass (those of its ``examples/train.py``).

They take the distortion target as an argument: the original crop for the baseline, its JND
image otherwise. Custom loops import them from here (or from ``train``, which uses them).
"""

from __future__ import annotations

import torch
from compressai.optimizers import net_aux_optimizer
from torch.utils.data import DataLoader

# the running sums of a training epoch and the means of a test pass
SUMS = ("loss", "bpp_loss", "mse_loss", "aux_loss")


def train_step(model, criterion, optimizers: dict, x: torch.Tensor, y: torch.Tensor, clip_max_norm: float) -> dict:
    """CompressAI's training step, with ``y`` (the JND image, or ``x`` for the baseline) as the distortion target."""
    optimizers["net"].zero_grad()
    optimizers["aux"].zero_grad()
    losses = criterion(model(x), y)
    losses["loss"].backward()
    if clip_max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
    optimizers["net"].step()
    aux_loss = model.aux_loss()
    aux_loss.backward()
    optimizers["aux"].step()
    return {**{k: losses[k].item() for k in SUMS[:3]}, "aux_loss": aux_loss.item()}


def make_optimizers(model, lr: float, aux_lr: float) -> dict:
    """CompressAI's pair: Adam on the network, Adam on the entropy bottlenecks' quantiles (aux loss)."""
    return net_aux_optimizer(model, {"net": {"type": "Adam", "lr": lr}, "aux": {"type": "Adam", "lr": aux_lr}})


@torch.no_grad()
def test_epoch(model, criterion, test_set, batch_size, split) -> dict:
    model.eval()
    sums, n = dict.fromkeys(SUMS, 0.0), 0
    for batch in DataLoader(test_set, batch_size=batch_size, generator=torch.Generator()):
        x, y = split(batch)
        losses = criterion(model(x), y)
        values = {**{k: losses[k].item() for k in SUMS[:3]}, "aux_loss": model.aux_loss().item()}
        for k in SUMS:
            sums[k] += values[k] * len(x)
        n += len(x)
    model.train()
    return {f"test_{k}": v / n for k, v in sums.items()}
