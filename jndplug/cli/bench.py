"""``jndplug bench sr|codec|estimator|screen`` (also ``python -m jndplug.bench ...``)."""

from __future__ import annotations

import argparse
import importlib

import jndplug.bench
from jndplug.cli import add_command, add_renamed_flag

KINDS = {
    "sr": ("jndplug.bench.sr", "super-resolution (BasicSR): ground-truth target vs JND targets"),
    "codec": ("jndplug.bench.codec", "learned compression (CompressAI): baseline vs JND target, RD curves, BD-rate"),
    "estimator": ("jndplug.bench.estimator", "estimator speed and accuracy, online overhead of JNDTarget, "
                  "truth report of its JND images"),
    "screen": ("jndplug.bench.screen", "zero-training screen: a target transform applied to a restorer's outputs "
               "predicts whether fine-tuning on it helps"),
}
# earlier spellings, refused with the new one (jndplug.cli.add_renamed_flag)
RENAMED = {"sr": {"--iters": "--steps", "--pretrain-iters": "--pretrain-steps"}, "screen": {"--max-side": "--crop"}}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "bench", description=jndplug.bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="bench_kind", metavar="KIND", required=True)
    for name, (module, summary) in KINDS.items():
        mod = importlib.import_module(module)
        k = kinds.add_parser(name, help=summary, description=mod.__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(k)
        for old, new in RENAMED.get(name, {}).items():
            add_renamed_flag(k, old, new)
        # BenchError is a ValueError: `jndplug` prints it as one line, without a traceback
        k.set_defaults(func=lambda args, mod=mod: mod.run(args) and 0)
