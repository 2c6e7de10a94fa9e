"""``jndplug datagen``: the command line of the distortion generator."""

from __future__ import annotations

import argparse
import logging
import sys

from jndplug.cli import DEVICE_HELP, add_command


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1920x1080, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size sides must be positive, got {text!r}")
    return w, h


def register(subparsers) -> None:
    p = add_command(subparsers, "datagen",
                    description="Nine increasingly distorted versions of every photograph, made by a family "
                                "of briefly trained U-Net autoencoders (or by your own level function). "
                                "A rerun into the same --out resumes where it stopped. See docs/datagen.md.")
    add_build_arguments(p)
    p.set_defaults(func=_build)


def add_build_arguments(b: argparse.ArgumentParser) -> None:
    from jndplug.datagen.settings import BuildSettings

    d = BuildSettings()
    b.add_argument("--src", nargs="+", required=True, metavar="DIR",
                   help="folder(s) of photographs, searched recursively (png/jpg/bmp/tif); "
                        "category = first-level sub-folder")
    b.add_argument("--out", required=True, metavar="DATASET", help="dataset folder to create, resume or extend")
    b.add_argument("--size", type=_size, default=d.size, metavar="WxH",
                   help="largest output size after the 16:9 centre crop; never upscales (default 1920x1080)")
    b.add_argument("--max-side", type=int, default=None, metavar="N",
                   help="also cap the longer side at N pixels (e.g. 1024 for a quick CPU run)")
    b.add_argument("--min-side", type=int, default=d.min_side, metavar="N",
                   help=f"skip sources whose 16:9 crop has a side under N pixels (default {d.min_side}: "
                        "481x321 photographs, landscape or portrait, are kept)")
    b.add_argument("--levels", type=int, default=d.levels, help=f"distortion levels per image (default {d.levels})")
    b.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    b.add_argument("--steps", type=int, default=d.steps,
                   help=f"training steps per autoencoder (default {d.steps})")
    b.add_argument("--feature-steps", type=int, default=None, metavar="N",
                   help="training steps of the members with a deep-feature loss, about ten times as costly "
                        "per step on a CPU (default: --steps)")
    b.add_argument("--patch", type=int, default=d.patch, help=f"training patch size (default {d.patch})")
    b.add_argument("--batch", type=int, default=d.batch, help=f"training batch size (default {d.batch})")
    b.add_argument("--train-images", type=int, default=d.train_images, metavar="N",
                   help=f"source images the autoencoders train on, spread over all sources (default {d.train_images})")
    b.add_argument("--psnr-range", type=float, nargs=2, default=d.psnr_range, metavar=("HIGH", "LOW"),
                   help="target PSNR of level 1 and of the last level, in dB (default 44 22)")
    b.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="keep each level's raw candidate strength: only check and repair the order")
    b.add_argument("--keep-mean", dest="remove_mean", action="store_false",
                   help="keep each level's global per-channel mean shift (colour cast); removed by default")
    b.add_argument("--masking", type=float, default=d.masking, metavar="POWER",
                   help=f"weight the distortion by the NAMM visibility threshold of the original to this "
                        f"power, 0 for none (default {d.masking:g})")
    b.add_argument("--chroma", type=float, default=d.chroma, metavar="FACTOR",
                   help=f"scale the chroma part of the distortion (default {d.chroma:g})")
    b.add_argument("--level-fn", metavar="MODULE:FUNC",
                   help="make level k with your own f(image, k) -> image (e.g. your restorer at several "
                        "checkpoints) instead of the autoencoders; also path/to/file.py:func")
    b.add_argument("--feature-weights", metavar="FILE",
                   help="local VGG16 weights (.safetensors or .pth state dict) for the deep-feature loss "
                        "(default: the ST-LPIPS VGG16 bundled with stlpips-pytorch, else a fixed random network)")
    b.add_argument("--random-features", dest="use_stlpips", action="store_false",
                   help="use the fixed random feature network even if stlpips-pytorch is installed")
    b.add_argument("--device", default=None, help=DEVICE_HELP)
    b.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only N sources, spread evenly over the sorted list (a quick or benchmark subset)")
    b.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _build(args) -> int:
    import torch

    from jndplug.datagen import BuildSettings, build_dataset
    from jndplug.datagen.manifest import format_summary

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = BuildSettings(size=args.size, max_side=args.max_side, min_side=args.min_side, levels=args.levels,
                             seed=args.seed, steps=args.steps, feature_steps=args.feature_steps, patch=args.patch, batch=args.batch,
                             train_images=args.train_images, psnr_range=tuple(args.psnr_range),
                             calibrate=args.calibrate, feature_weights=args.feature_weights,
                             use_stlpips=args.use_stlpips, device=device, limit=args.limit,
                             remove_mean=args.remove_mean, masking=args.masking, chroma=args.chroma)
    summary = build_dataset(args.src, args.out, settings=settings, level_fn=args.level_fn, progress=args.progress)
    print(format_summary(summary))
    return 1 if summary["not_monotonic"] else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m jndplug.datagen``: the same as ``jndplug datagen``."""
    from jndplug.cli import main as jndplug_main

    return jndplug_main(["datagen", *(sys.argv[1:] if argv is None else argv)])
