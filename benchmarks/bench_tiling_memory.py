"""Peak memory of what jndplug keeps around a JND target of large images.

    python benchmarks/bench_tiling_memory.py 12000                  # the default (directed) target
    python benchmarks/bench_tiling_memory.py 12000 --kind jnd       # the estimated JND image
    python benchmarks/bench_tiling_memory.py 1080x1920 --batch 16   # a batch

Runs what ``jndplug infer`` does between reading and writing a file (uint8 array -> tensor ->
JNDTarget with the automatic tiles -> uint8 array) with a one-convolution stand-in for the
estimator, so that the figure is the memory jndplug itself adds, not the estimator's activations
(those are per tile, and per chunk of a batch; measure them with ``--estimator default``). Prints
the peak resident set size of the process (one measurement per process), which includes the uint8
arrays and the input tensor.
"""

import argparse
import resource

import numpy as np
import torch
import torch.nn as nn

import jndplug
import jndplug.tiling as tiling


class StandIn(nn.Module):
    """A one-convolution estimator (tests/unit/test_tiling.py measures the tiler's buffers with it too)."""

    size_divisor = 32

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + 0.01 * self.conv(x)


def measure(h: int, w: int, kind: str, batch: int, estimator: str | None) -> str:
    target = jndplug.JNDTarget(StandIn() if estimator is None else estimator, tile=tiling.AUTO_TILE, kind=kind)
    arrays = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    x = torch.stack([jndplug.to_tensor(a) for a in arrays]) if batch > 1 else jndplug.to_tensor(arrays[0])
    out = target(x)
    out = [jndplug.to_array(o) for o in out] if batch > 1 else jndplug.to_array(out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pixels = batch * h * w
    return (f"{kind}, {batch} x {h}x{w}, {estimator or 'stand-in'}: peak RSS {peak / 2**30:.2f} GiB, "
            f"{peak / pixels:.1f} bytes per pixel (the uint8 images are {arrays.nbytes / 2**30:.2f} GiB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("size", help="N for NxN, or HxW")
    p.add_argument("--kind", default="directed", choices=["directed", "jnd"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--estimator", default=None, help="a pretrained name or file instead of the stand-in")
    args = p.parse_args()
    h, _, w = args.size.partition("x")
    print(measure(int(h), int(w or h), args.kind, args.batch, args.estimator), flush=True)


if __name__ == "__main__":
    main()
