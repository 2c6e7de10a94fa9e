"""The ``jndplug`` command line (also ``python -m jndplug``).

Each command lives in its own module exposing ``register(subparsers)``, which adds a sub-parser
whose ``func`` default runs the command. Adding a command is one line in ``_COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jndplug.errors import user_error_message

_COMMAND_MODULES = (
    "jndplug.cli.infer",
    "jndplug.cli.study",
    "jndplug.cli.datagen",
    "jndplug.cli.patches",
    "jndplug.metrics",
    "jndplug.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    from jndplug import __version__

    parser = argparse.ArgumentParser(prog="jndplug", description="JND targets for image restoration and compression.")
    parser.add_argument("--version", action="version", version=f"jndplug {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of errors that are otherwise reported in one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _add_debug_flag(sub)
    return parser


def _add_debug_flag(sub: argparse._SubParsersAction) -> None:
    # also accepted after the command (`jndplug infer ... --debug`), where people type it; SUPPRESS
    # keeps a sub-command from resetting a --debug given before it
    for p in sub.choices.values():
        if "--debug" not in p._option_string_actions:
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug_flag(action)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        # errors the user can fix: one line naming the file and the fix; bugs keep their traceback
        message = user_error_message(exc)
        if message is None or args.debug:
            raise
        print(f"jndplug {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
