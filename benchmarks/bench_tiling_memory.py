"""Peak memory of what jndplug keeps around a JND target of large images.

    python benchmarks/bench_tiling_memory.py 12000                  # the default (directed) target
    python benchmarks/bench_tiling_memory.py 12000 --kind jnd       # the estimated JND image
    python benchmarks/bench_tiling_memory.py 1080x1920 --batch 16   # a batch

Runs what ``jndplug infer`` does between reading and writing a file (uint8 array -> tensor ->
JNDTarget with the automatic tiles -> uint8 array) with a one-convolution stand-in for the
estimator, so that the figure is the memory jndplug itself adds, not the estimator's activations
(those are per tile, and per chunk of a batch; measure them with ``--estimator default``). Prints
the most bytes of tensors the target's call held at once beyond its input (counted per tensor by
:class:`LiveBytes`, the same on every run; tests/unit/test_target.py checks it), and the peak
resident set size of the process (one measurement per process) above the process before the
images were made, which adds the uint8 arrays, the input tensor and what the allocator keeps.
"""

import argparse
import resource

import numpy as np
import torch
import torch.nn as nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

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


class LiveBytes(TorchDispatchMode):
    """The most bytes of tensor storage alive at once among those made inside the block: each
    operation's outputs are counted until their storage is freed. Counted, not sampled from the
    allocator, so the figure is the same on every run and machine."""

    def __init__(self):
        super().__init__()
        self.live, self.peak = {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # freed storages first: a new one may take a freed one's address
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        inputs = {StorageWeakRef(t.untyped_storage()).cdata for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in inputs:  # a view allocates nothing
                    self.live.setdefault(ref.cdata, (ref, storage.nbytes()))
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def measure(h: int, w: int, kind: str, batch: int, estimator: str | None) -> str:
    target = jndplug.JNDTarget(StandIn() if estimator is None else estimator, tile=tiling.AUTO_TILE, kind=kind)
    target(torch.rand(1, 3, 64, 64))  # libraries loaded and warmed up: what follows is the images' memory
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    arrays = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    x = torch.stack([jndplug.to_tensor(a) for a in arrays]) if batch > 1 else jndplug.to_tensor(arrays[0])
    with LiveBytes() as meter:
        out = target(x)
    out = [jndplug.to_array(o) for o in out] if batch > 1 else jndplug.to_array(out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pixels = batch * h * w
    return (f"{kind}, {batch} x {h}x{w}, {estimator or 'stand-in'}: tensors made by the target "
            f"{meter.peak / pixels:.1f} bytes per pixel at most at once; peak RSS {peak / 2**30:.2f} GiB, "
            f"{(peak - base) / pixels:.1f} bytes per pixel above the process before the images")


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
