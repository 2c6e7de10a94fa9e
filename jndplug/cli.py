"""The ``jndplug`` command line (also ``python -m jndplug``).

Each command lives in its own module exposing ``register(subparsers)``, which adds a sub-parser
whose ``func`` default runs the command. Adding a command is one line in ``_COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMAND_MODULES = (
    "jndplug.commands",
    "jndplug.study.cli",
    "jndplug.datagen.cli",
    "jndplug.other_commands",
    "jndplug.metrics",
    "jndplug.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from jndplug import __version__

    parser = argparse.ArgumentParser(prog="jndplug", description="JND targets for image restoration and compression.")
    parser.add_argument("--version", action="version", version=f"jndplug {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # user errors: one clear line, no traceback
        print(f"jndplug {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
