"""The command lines of the CompressAI integration: they parse flags and map them to
:class:`~jndplug.integrations.compressai.train.TrainSettings` and
:class:`~jndplug.integrations.compressai.evaluate.EvalSettings`; the work is done by ``train()`` and
``evaluate()``, which Python callers use directly.

    python -m jndplug.integrations.compressai.train --model M --quality Q --dataset DIR [--jnd-target ...]
    python -m jndplug.integrations.compressai.evaluate DIR --checkpoint FILE --out OUT
"""

from __future__ import annotations

import argparse
import sys


from jndplug.errors import JNDPlugError, interrupted_message
from jndplug.imageio import ImageReadError
from jndplug.spec import TargetSpec

from jndplug.integrations.compressai import evaluate as evaluate_module
from jndplug.integrations.compressai import train as train_module
from jndplug.integrations.compressai.codec import MODEL_NAMES, ZOO_UNREACHABLE, CodecError
from jndplug.integrations.compressai.evaluate import EvalSettings, evaluate
from jndplug.integrations.compressai.train import MODES, TrainSettings, train

DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda if available)"
PREFIX = "jnd-"  # the target's flags: --jnd-estimator, --jnd-strength, --jnd-sur, --jnd-kind, --jnd-gain


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jndplug.integrations.compressai.train",
                                description=train_module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainSettings("", 0, "")
    p.add_argument("--model", required=True, help=f"CompressAI model: {', '.join(MODEL_NAMES)}")
    p.add_argument("--quality", type=int, required=True, help="zoo quality (1-8; 1-6 for cheng2020)")
    p.add_argument("--checkpoint", help="start from these weights (a CompressAI .pth.tar or a checkpoint of this "
                                        "command); without it training starts from scratch; with --resume, "
                                        "the run's original --checkpoint may be given again")
    p.add_argument("--pretrained", action="store_true", help="refused: the zoo download is not reachable")
    p.add_argument("--dataset", required=True, help="DIR/train (+ DIR/test), or a flat folder of training images")
    p.add_argument("--jnd-target", action="store_true", help="distortion against the JND image (else the original)")
    TargetSpec.add_arguments(p, prefix=PREFIX)
    p.add_argument("--jnd-mode", choices=MODES, help="online (default): JND of each crop computed in the loop; "
                                                     "offline: read from --jnd-offline-dir")
    p.add_argument("--jnd-offline-dir", help="with --jnd-mode offline: the output of "
                                             "`jndplug precompute DATASET --out DIR` with the same target flags")
    p.add_argument("--jnd-tolerant", action="store_true",
                   help="instead of moving the target: MSE that ignores error within the per-pixel JND of the "
                        "original (jndplug.losses.JNDTolerantLoss with --jnd-estimator)")
    p.add_argument("--jnd-tolerance-scale", type=float, help="scale of the tolerance band (default 1)")
    p.add_argument("--lmbda", type=float, help="rate-distortion trade-off (default: CompressAI's for the quality)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps in total")
    p.add_argument("--batch", type=int, default=d.batch, help=f"batch size (default {d.batch})")
    p.add_argument("--test-batch", type=int, default=d.test_batch, help=f"test batch size (default {d.test_batch})")
    p.add_argument("--patch", type=int, default=d.patch, help="square training crop, a multiple of the model's "
                                                              f"downsampling factor (default {d.patch})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr:g})")
    p.add_argument("--aux-lr", type=float, default=d.aux_lr, help=f"auxiliary learning rate (default {d.aux_lr:g})")
    p.add_argument("--clip-max-norm", type=float, default=d.clip_max_norm, help="gradient clipping (0 disables)")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loading processes")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help=DEVICE_HELP)
    p.add_argument("--out", help="output folder (default: runs/MODEL-qQUALITY-(jnd|original))")
    p.add_argument("--save-every", type=int, default=d.save_every, help="also save the latest checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pth.tar")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    return p


def _flags(names: list[str]) -> str:
    return ", ".join(names)


def train_settings(argv: list[str] | None = None) -> TrainSettings:
    """The settings of a ``train`` command line; flags that the run would ignore are refused."""
    args = train_parser().parse_args(argv)
    if args.pretrained:
        raise CodecError(ZOO_UNREACHABLE)
    target_flags = TargetSpec.given_arguments(args, PREFIX)
    adapter = [f for f, v in (("--jnd-mode", args.jnd_mode), ("--jnd-offline-dir", args.jnd_offline_dir)) if v]
    scale = ["--jnd-tolerance-scale"] if args.jnd_tolerance_scale is not None else []
    given = target_flags + adapter + scale
    if not args.jnd_target and not args.jnd_tolerant and given:
        raise CodecError(f"{_flags(given)} without --jnd-target would be ignored and train the plain baseline; "
                         "add --jnd-target to train against JND images (or --jnd-tolerant), or drop "
                         f"{'it' if len(given) == 1 else 'them'}")
    if args.jnd_tolerant:
        ignored = [f for f in given if f not in ("--jnd-estimator", "--jnd-tolerance-scale")]
        if ignored:
            raise CodecError(f"{_flags(ignored)} {'applies' if len(ignored) == 1 else 'apply'} to --jnd-target "
                             "only; --jnd-tolerant takes --jnd-estimator and --jnd-tolerance-scale")
    if args.jnd_target and scale:
        raise CodecError("--jnd-tolerance-scale applies to --jnd-tolerant only; drop it with --jnd-target "
                         "(use --jnd-strength to scale the JND image)")
    spec = TargetSpec.from_args(args, PREFIX) if args.jnd_target else None
    return TrainSettings(
        model=args.model, quality=args.quality, dataset=args.dataset, out=args.out, checkpoint=args.checkpoint,
        jnd=spec, jnd_mode=args.jnd_mode or "online", jnd_offline_dir=args.jnd_offline_dir,
        jnd_tolerant=args.jnd_tolerant, tolerance_estimator=args.jnd_estimator or "default",
        tolerance_scale=1.0 if args.jnd_tolerance_scale is None else args.jnd_tolerance_scale,
        lmbda=args.lmbda, epochs=args.epochs, max_steps=args.max_steps, batch=args.batch, test_batch=args.test_batch,
        patch=args.patch, lr=args.lr, aux_lr=args.aux_lr, clip_max_norm=args.clip_max_norm, workers=args.workers,
        seed=args.seed, device=args.device, save_every=args.save_every, resume=args.resume, overwrite=args.overwrite)


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jndplug.integrations.compressai.evaluate",
                                description=evaluate_module.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="folder of images (searched recursively) or one image file")
    p.add_argument("--checkpoint", required=True, help="a checkpoint of the train command or a CompressAI .pth.tar")
    p.add_argument("--model", help=f"needed for CompressAI's own files: {', '.join(MODEL_NAMES)}")
    p.add_argument("--quality", type=int, help="needed for CompressAI's own files")
    p.add_argument("--pretrained", action="store_true", help="refused: the zoo download is not reachable")
    p.add_argument("--out", required=True, help="folder for the JSON results and the RD plot")
    p.add_argument("--label", help="curve name in the RD plot (default: MODEL-jnd / MODEL-original / MODEL)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu; entropy coding itself "
                                                   "always runs on the CPU)")
    p.add_argument("--save-bitstreams", action="store_true", help="write OUT/bitstreams/LABEL-qQ/*.jndc")
    p.add_argument("--save-reconstructions", action="store_true", help="write OUT/reconstructions/LABEL-qQ/*.png")
    p.add_argument("--overwrite", action="store_true", help="replace the results of this label and quality that "
                                                            "OUT holds (its JSON, bitstreams and reconstructions)")
    return p


def evaluate_settings(argv: list[str] | None = None) -> EvalSettings:
    args = evaluate_parser().parse_args(argv)
    if args.pretrained:
        raise CodecError(ZOO_UNREACHABLE)
    return EvalSettings(dataset=args.dataset, checkpoint=args.checkpoint, out=args.out, model=args.model,
                        quality=args.quality, label=args.label, device=args.device,
                        save_bitstreams=args.save_bitstreams, save_reconstructions=args.save_reconstructions,
                        overwrite=args.overwrite)


def _run(work, argv, rerun: str = "a rerun") -> None:
    try:
        work(argv)
    except (CodecError, FileNotFoundError, ImageReadError, JNDPlugError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        print(interrupted_message(rerun), file=sys.stderr)
        sys.exit(130)


def train_main(argv: list[str] | None = None) -> None:
    # the latest checkpoint is the finished work; a plain rerun into the same --out is refused
    _run(lambda a: train(train_settings(a)), argv, rerun="the same command with --resume")


def evaluate_main(argv: list[str] | None = None) -> None:
    _run(lambda a: evaluate(evaluate_settings(a)), argv)
