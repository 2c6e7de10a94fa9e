"""The ``jndplug`` command line (also ``python -m jndplug``): one command per pipeline stage.

Each command's module exposes ``register(subparsers)``, which adds its sub-parser (through
:func:`add_command`) with a ``func`` default that runs the command. Only the module of the
command being run is imported: ``jndplug --help`` lists the commands from :data:`COMMANDS`
alone, so it needs neither torch nor timm. Adding a command is one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name: (module that registers it, one-line help), in pipeline order
COMMANDS = {
    "datagen": ("jndplug.cli.datagen", "distortion generation: build, resume or extend a CNN-oriented JND dataset"),
    "study": ("jndplug.cli.study", "the JND study: run it with people or simulated observers, "
                                   "aggregate judgements into labels"),
    "train": ("jndplug.cli.train", "train a JND estimator on labelled datasets (KIND:PATH)"),
    "infer": ("jndplug.cli.infer", "write JND images (and optionally maps and comparisons) for a file or folder"),
    "precompute": ("jndplug.cli.infer", "JND pseudo-ground-truth for a whole folder tree (resumable)"),
    "demo": ("jndplug.cli.infer", "run the default target on scikit-image's sample photographs"),
    "convert": ("jndplug.cli.convert", "import the ResJND authors' .pth checkpoint as jndplug weights"),
    "patches": ("jndplug.cli.patches", "patch pairs and a patch-level visibility regressor"),
    "jnd-profile": ("jndplug.cli.patches", "fit the patch-level JND profile (structural visibility "
                                           "learning) to a patch-pair dataset"),
    "metrics": ("jndplug.cli.metrics", "score a folder of outputs against a folder of references"),
    "bench": ("jndplug.cli.bench", "benchmarks: does training against JND images help?"),
}

DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda if available)"


def add_command(sub: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    """The sub-parser of command ``name``, with its help line from :data:`COMMANDS`."""
    return sub.add_parser(name, help=COMMANDS[name][1], **kwargs)


def add_out_argument(p: argparse.ArgumentParser, help: str, metavar: str = "PATH") -> None:
    """The required ``--out`` option, the one spelling of a command's output."""
    p.add_argument("--out", required=True, metavar=metavar, help=help)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command's arguments, or, given ``command``, with that command's only."""
    from jndplug import __version__

    parser = argparse.ArgumentParser(prog="jndplug", description="JND targets for image restoration and compression.")
    parser.add_argument("--version", action="version", version=f"jndplug {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of errors that are otherwise reported in one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = {m for m, _ in COMMANDS.values()} if command is None else {m for n, (m, _) in COMMANDS.items()
                                                                           if n == command}
    for name, (module, summary) in COMMANDS.items():
        if module not in wanted:
            sub.add_parser(name, help=summary)  # listed in --help; never parsed
        elif name not in sub.choices:  # one module may register several commands
            importlib.import_module(module).register(sub)
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
    from jndplug.errors import interrupted_message, user_error_message

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.argv = argv  # what the run was asked for, for the provenance a command records
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
        print(interrupted_message(), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
