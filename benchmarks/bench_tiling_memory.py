"""Peak memory of what jndplug keeps around tiled inference of one large image.

    python benchmarks/bench_tiling_memory.py 12000

Runs what ``jndplug infer`` does between reading and writing a file (uint8 array -> tensor ->
JNDTarget with the automatic tiles -> uint8 array) with a one-convolution stand-in for the
estimator, so that the figure is the memory jndplug itself adds, not the estimator's activations
(those are per tile; measure them with a forward pass of one tile). Prints the peak resident set
size of the process.
"""

import resource
import sys

import numpy as np
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


def main() -> None:
    n = int(sys.argv[1])
    target = jndplug.JNDTarget(StandIn(), tile=tiling.AUTO_TILE, kind="jnd")
    array = np.random.default_rng(0).integers(0, 256, (n, n, 3), dtype=np.uint8)
    out = jndplug.to_array(target(jndplug.to_tensor(array)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{n}x{n}: peak RSS {peak / 2**30:.2f} GiB, {peak / n / n:.1f} bytes per pixel "
          f"(the uint8 image is {array.nbytes / 2**30:.2f} GiB; output {out.shape})")


if __name__ == "__main__":
    main()
