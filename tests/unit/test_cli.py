"""The ``jndplug`` command line itself: lazy imports, pipeline order, earlier spellings."""

import argparse
import subprocess
import sys

from jndplug.cli import COMMANDS, build_parser


def test_help_imports_neither_torch_nor_timm():
    code = ("import sys\nfrom jndplug.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('heavy', [m for m in ('torch', 'timm', 'numpy') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "heavy []"
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("    ") and line.split()]
    assert [name for name in listed if name in COMMANDS] == list(COMMANDS)  # pipeline order


def test_every_command_registers_under_its_listed_name():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)
    for name, parser in sub.choices.items():
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        assert parser.get_default("func") is not None or groups, f"{name} runs nothing"
        for group in groups:  # a group of one step is that step
            assert len(group.choices) > 1, f"{name} has a group of one: {list(group.choices)}"


def test_earlier_spellings_still_parse(tmp_path):
    from jndplug.cli import _canonical

    assert _canonical(["--debug", "datagen", "build", "--src", "x"]) == (["--debug", "datagen", "--src", "x"],
                                                                        "datagen")
    assert _canonical(["convert-resjnd", "a.pth", "b.safetensors"])[0] == ["convert", "a.pth", "b.safetensors"]
    assert _canonical(["jnd-profile", "train", "d", "p"])[0] == ["jnd-profile", "d", "p"]
    args = build_parser("bench").parse_args(["bench", "sr", "--train", "t", "--test", "s", "--iters", "3",
                                              "--pretrain-iters", "2"])
    assert (args.iters, args.pretrain_iters) == (3, 2)
    args = build_parser("bench").parse_args(["bench", "sr", "--train", "t", "--test", "s", "--steps", "4"])
    assert (args.iters, args.pretrain_iters) == (4, 0)
