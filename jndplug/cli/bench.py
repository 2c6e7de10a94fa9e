"""``jndplug bench sr|codec|estimator|screen`` (also ``python -m jndplug.bench ...``)."""

from __future__ import annotations

import argparse
import importlib

import jndplug.bench
from jndplug.cli import add_command
from jndplug.settings import add_settings_arguments, settings_from_args

KINDS = {
    "sr": ("jndplug.bench.sr", "super-resolution: converged restorers fine-tuned per target (ground truth, JND "
                               "images, USM ...), perception-distortion plane"),
    "codec": ("jndplug.bench.codec", "learned compression: a codec trained to a working RD point, fine-tuned per "
                                     "target, real bitstreams, BD-rates"),
    "estimator": ("jndplug.bench.estimator", "estimator speed and accuracy, online overhead of JNDTarget, "
                  "truth report of its JND images"),
    "targets": ("jndplug.bench.targets", "truth report of training targets: how many simulated observers notice "
                                         "each target, its SSIMULACRA 2, ColorVideoVDP, FLIP, RMS and band gains"),
    "visibility": ("jndplug.bench.visibility", "targets at equal visibility: the strength of each target (bound) "
                                               "at which the simulated panel notices it at a given level"),
    "screen": ("jndplug.bench.screen", "zero-training screen: a target transform applied to a restorer's outputs "
               "predicts whether fine-tuning on it helps"),
}


class _KindParser(argparse.ArgumentParser):
    """A benchmark's parser, filled in from its module when it is the one being parsed: the bench
    modules import torch, so `jndplug bench --help` must not import them all to list them."""

    module: str | None = None

    def filled(self) -> _KindParser:
        """This parser with its benchmark's flags (imported once, on first use)."""
        if self.module is not None:
            mod, self.module = importlib.import_module(self.module), None
            self.description = mod.__doc__
            add_settings_arguments(self, mod.Settings)
            # BenchError is a JNDPlugValueError: `jndplug` prints it as one line, without a traceback
            self.set_defaults(func=lambda args: mod.run(settings_from_args(mod.Settings, args)) and 0)
        return self

    def parse_known_args(self, args=None, namespace=None):
        return super(_KindParser, self.filled()).parse_known_args(args, namespace)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "bench", description=jndplug.bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="bench_kind", metavar="KIND", required=True, parser_class=_KindParser)
    for name, (module, summary) in KINDS.items():
        kinds.add_parser(name, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter).module = module
