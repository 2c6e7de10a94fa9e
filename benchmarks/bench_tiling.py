"""How far tiled inference is from the untiled pass, on skimage's astronaut resized.

    python benchmarks/bench_tiling.py --size 1100 900 --tile 512 128
    python benchmarks/bench_tiling.py --size 2080 2080            # the automatic tiles

Prints the largest difference in 1/255 steps and the fraction of values more than 1/255 apart.
"""

import argparse
import time

from PIL import Image
from skimage.data import astronaut

import jndplug
import jndplug.tiling as tiling


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(1100, 900))
    p.add_argument("--tile", type=int, nargs=2, metavar=("SIZE", "OVERLAP"), default=None,
                   help="default: the automatic tiles, forced on even below the automatic threshold")
    p.add_argument("--estimator", default="default")
    args = p.parse_args()
    x = jndplug.to_tensor(Image.fromarray(astronaut()).resize(tuple(args.size), Image.BICUBIC))[None]
    model = jndplug.load_estimator(args.estimator)
    tile = tuple(args.tile) if args.tile else tiling.AUTO_TILE
    t0 = time.perf_counter()
    whole = jndplug.JNDTarget(model, tile=False, kind="jnd")(x)
    t1 = time.perf_counter()
    tiled = jndplug.JNDTarget(model, tile=tile, kind="jnd")(x)
    t2 = time.perf_counter()
    d = (tiled - whole).abs()
    print(f"{args.size[0]}x{args.size[1]} tile {tile}: max {d.max().item() * 255:.3f}/255, "
          f"{(d > 1 / 255).float().mean().item():.2%} of values more than 1/255 apart; "
          f"untiled {t1 - t0:.1f} s, tiled {t2 - t1:.1f} s")


if __name__ == "__main__":
    main()
