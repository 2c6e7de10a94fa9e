"""The ``jndplug`` command line (also ``python -m jndplug``): one command per pipeline stage.

Each command's module exposes ``register(subparsers)``, which adds its sub-parser (through
:func:`add_command`) with a ``func`` default that runs the command. Only the module of the
command being run is imported: ``jndplug --help`` lists the commands from :data:`COMMANDS`
alone, so it needs neither torch nor timm. Adding a command is one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

# name: (module that registers it, one-line help), in pipeline order
COMMANDS = {
    "datagen": ("jndplug.cli.datagen", "distortion generation: build, resume or extend a CNN-oriented JND dataset"),
    "study": ("jndplug.cli.study", "the JND study: run it with people or simulated observers, "
                                   "aggregate judgements into labels"),
    "train": ("jndplug.cli.train", "train a JND estimator on labelled datasets (KIND:PATH)"),
    "infer": ("jndplug.cli.infer", "write JND images (and optionally maps and comparisons) for a file or folder"),
    "precompute": ("jndplug.cli.infer", "JND pseudo-ground-truth for a whole folder tree (resumable)"),
    "demo": ("jndplug.cli.infer", "run the default estimator on scikit-image's sample photographs"),
    "convert": ("jndplug.cli.convert", "import the ResJND authors' .pth checkpoint as jndplug weights"),
    "patches": ("jndplug.cli.patches", "patch pairs and a patch-level visibility regressor"),
    "jnd-profile": ("jndplug.cli.jnd_profile", "fit the patch-level JND profile (structural visibility "
                                               "learning) to a patch-pair dataset"),
    "metrics": ("jndplug.cli.metrics", "score a folder of outputs against a folder of references"),
    "bench": ("jndplug.cli.bench", "benchmarks: does training against JND images help?"),
}

# earlier spellings, still accepted but not listed: the words they start with -> today's
ALIASES = {
    ("convert-resjnd",): ("convert",),
    ("datagen", "build"): ("datagen",),
    ("jnd-profile", "train"): ("jnd-profile",),
}


DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda if available)"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that refuses, with the corrected command, an output given where it used to be.

    Before every command took its output as ``--out``, some took it as their last positional. An old
    invocation is neither parsed as something else nor answered with argparse's "required: --out":
    it exits 2 with one line naming the new form (see :func:`add_out_argument`).
    """

    out_was_positional = False

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        if self.out_was_positional and not {"-h", "--help"} & set(args):  # help shows --out required
            self._refuse_positional_out(args)
        return super().parse_known_args(args, namespace)

    def _refuse_positional_out(self, args: list[str]) -> None:
        out = self._option_string_actions["--out"]
        required, out.required = out.required, False  # a first look, before "required: --out" is said
        try:
            seen, extra = super().parse_known_args(args, None)
        finally:
            out.required = required
        stray = [a for a in extra if not a.startswith("-")]
        if seen.out is None and len(stray) == 1:
            at = len(args) - 1 - args[::-1].index(stray[0])
            fix = shlex.join([*args[:at], "--out", *args[at:]])
            self.exit(2, f"{self.prog}: error: the output is now given with --out: {self.prog} {fix}\n")


def add_command(sub: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    """The sub-parser of command ``name``, with its help line from :data:`COMMANDS`."""
    return sub.add_parser(name, help=COMMANDS[name][1], **kwargs)


def add_out_argument(p: argparse.ArgumentParser, help: str, metavar: str = "PATH") -> None:
    """The required ``--out`` of a command whose output used to be its last positional argument:
    that spelling now fails with the corrected command (exit 2)."""
    p.add_argument("--out", required=True, metavar=metavar, help=help)
    p.out_was_positional = True


class _Renamed(argparse.Action):
    def __init__(self, *args, new: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        given = "" if values is None else f" {shlex.quote(values)}"
        parser.exit(2, f"{parser.prog}: error: {option_string} is now {self.new}: "
                       f"{parser.prog} ... {self.new}{given}\n")


def add_renamed_flag(p: argparse.ArgumentParser, old: str, new: str) -> None:
    """Refuse ``old``, an earlier name of option ``new`` of ``p``, naming ``new`` (exit 2): taking
    it silently would keep two spellings alive, ignoring it would run with the wrong setting."""
    p.add_argument(old, nargs="?", action=_Renamed, new=new, help=argparse.SUPPRESS)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command's arguments, or, given ``command``, with that command's only."""
    from jndplug import __version__

    parser = _Parser(prog="jndplug", description="JND targets for image restoration and compression.")
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


def _canonical(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` with an earlier spelling of its command replaced, and the command's name."""
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if at is None:
        return argv, None
    for old, new in ALIASES.items():
        if tuple(argv[at:at + len(old)]) == old:
            argv = [*argv[:at], *new, *argv[at + len(old):]]
            break
    return argv, argv[at]


def main(argv: list[str] | None = None) -> int:
    from jndplug.errors import user_error_message

    argv, command = _canonical(list(sys.argv[1:] if argv is None else argv))
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
        print("interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
