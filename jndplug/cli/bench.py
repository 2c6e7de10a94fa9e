"""``jndplug bench KIND`` (also ``python -m jndplug.bench ...``)."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util

import jndplug.bench
from jndplug.bench import settings as bench_settings
from jndplug.cli import add_command
from jndplug.settings import add_settings_arguments, settings_from_args

# name: (module whose run() it is, its Settings in jndplug.bench.settings, one-line help)
KINDS = {
    "sr": ("jndplug.bench.sr", "SRSettings",
           "super-resolution: converged restorers fine-tuned per target (ground truth, JND images, USM ...), "
           "perception-distortion plane"),
    "codec": ("jndplug.bench.codec", "CodecSettings",
              "learned compression: a codec trained to a working RD point, fine-tuned per target, real bitstreams, "
              "BD-rates"),
    "estimator": ("jndplug.bench.estimator", "EstimatorSettings",
                  "estimator speed and accuracy, online overhead of JNDTarget, truth report of its JND images"),
    "targets": ("jndplug.bench.targets", "TargetsSettings",
                "truth report of training targets: how many simulated observers notice each target, its "
                "SSIMULACRA 2, ColorVideoVDP, FLIP, RMS and band gains"),
    "visibility": ("jndplug.bench.visibility", "VisibilitySettings",
                   "targets at equal visibility: the strength of each target (bound) at which the simulated panel "
                   "notices it at a given level"),
    "screen": ("jndplug.bench.screen", "ScreenSettings",
               "zero-training screen: a target transform applied to a restorer's outputs predicts whether "
               "fine-tuning on it helps"),
}


def _docstring(module: str) -> str | None:
    """``module.__doc__``, read from its source: importing a benchmark imports torch."""
    return ast.get_docstring(ast.parse(importlib.util.find_spec(module).loader.get_source(module)), clean=False)


class _KindParser(argparse.ArgumentParser):
    """A benchmark's parser, filled in when it is the one being parsed. Its flags come from the
    torch-free jndplug.bench.settings and its description from the module's source, so that
    `jndplug bench KIND --help` does not import the benchmark; the benchmark is imported to run."""

    kind: str | None = None

    def filled(self) -> _KindParser:
        """This parser with its benchmark's flags (added once, on first use)."""
        if self.kind is not None:
            (module, settings_name, _), self.kind = KINDS[self.kind], None
            settings = getattr(bench_settings, settings_name)
            self.description = _docstring(module)
            add_settings_arguments(self, settings)
            # BenchError is a JNDPlugValueError: `jndplug` prints it as one line, without a traceback
            self.set_defaults(func=lambda args: importlib.import_module(module).run(settings_from_args(settings, args))
                              and 0)
        return self

    def parse_known_args(self, args=None, namespace=None):
        return super(_KindParser, self.filled()).parse_known_args(args, namespace)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "bench", description=jndplug.bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="bench_kind", metavar="KIND", required=True, parser_class=_KindParser)
    for name, (_, _, summary) in KINDS.items():
        kinds.add_parser(name, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter).kind = name
