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
from jndplug.settings import add_settings_arguments, settings_from_args
from jndplug.spec import TargetSpec

from jndplug.integrations.compressai import evaluate as evaluate_module
from jndplug.integrations.compressai import train as train_module
from jndplug.integrations.compressai.codec import ZOO_UNREACHABLE, CodecError
from jndplug.integrations.compressai.evaluate import EvalSettings, evaluate
from jndplug.integrations.compressai.train import TrainSettings, train

PREFIX = "jnd-"  # the target's flags: --jnd-estimator, --jnd-strength, --jnd-sur, --jnd-kind, --jnd-gain
PRETRAINED_HELP = "refused: the zoo download is not reachable"


def train_parser() -> argparse.ArgumentParser:
    """``TrainSettings``' flags, with the command's own ``--pretrained``, ``--jnd-target`` and the target's
    flags placed among them as --help has always listed them."""
    p = argparse.ArgumentParser(prog="python -m jndplug.integrations.compressai.train",
                                description=train_module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_arguments(p, TrainSettings, ["model", "quality", "checkpoint"])
    p.add_argument("--pretrained", action="store_true", help=PRETRAINED_HELP)
    add_settings_arguments(p, TrainSettings, ["dataset"])
    p.add_argument("--jnd-target", action="store_true", help="distortion against the JND image (else the original)")
    TargetSpec.add_arguments(p, prefix=PREFIX)
    add_settings_arguments(p, TrainSettings)
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
    return settings_from_args(TrainSettings, args, jnd=spec, tolerance_estimator=args.jnd_estimator or "default")


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jndplug.integrations.compressai.evaluate",
                                description=evaluate_module.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_arguments(p, EvalSettings, ["dataset", "checkpoint", "model", "quality"])
    p.add_argument("--pretrained", action="store_true", help=PRETRAINED_HELP)
    add_settings_arguments(p, EvalSettings)
    return p


def evaluate_settings(argv: list[str] | None = None) -> EvalSettings:
    args = evaluate_parser().parse_args(argv)
    if args.pretrained:
        raise CodecError(ZOO_UNREACHABLE)
    return settings_from_args(EvalSettings, args)


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
