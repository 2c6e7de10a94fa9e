"""The ``jndplug`` command line itself: lazy imports, pipeline order, one spelling per option."""

import argparse
import importlib

import pytest

from conftest import fresh_python
from jndplug.cli import COMMANDS, build_parser
from jndplug.cli.bench import KINDS as BENCH_KINDS
from jndplug.settings import settings_from_args

def test_help_imports_neither_torch_nor_timm():
    code = ("import sys\nfrom jndplug.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('heavy', [m for m in ('torch', 'timm', 'numpy') if m in sys.modules])")
    out = fresh_python(code, timeout=120)
    assert out.splitlines()[-1] == "heavy []"
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()]
    assert [name for name in listed if name in COMMANDS] == list(COMMANDS)  # pipeline order


# every command's parser is built from torch-free modules (datagen's defaults, the metric names,
# each benchmark's Settings and, read from its source, its description); bench sr, codec and
# estimator are left out: a default of theirs is computed with torch when their flags are added
LIGHT_HELP = [["datagen"], ["study", "simulate"], ["train"], ["infer"], ["precompute"], ["demo"], ["convert"],
              ["patches", "build"], ["jnd-profile"], ["metrics"], ["bench"], ["bench", "targets"],
              ["bench", "visibility"], ["bench", "screen"], ["bench", "sr"], ["bench", "codec"],
              ["bench", "estimator"]]


def test_subcommand_help_imports_neither_torch_nor_timm():
    # --help of a command that imported torch first took 4-10 s; the handlers import it when they run
    code = ("import contextlib, io, sys\nfrom jndplug.cli import main\n"
            f"for argv in {[[*argv, '--help'] for argv in LIGHT_HELP]!r}:\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "        try:\n            main(argv)\n        except SystemExit:\n            pass\n"
            "    assert 'usage: jndplug ' + ' '.join(argv[:-1]) in out.getvalue(), argv\n"
            "print('heavy', [m for m in ('torch', 'timm') if m in sys.modules])")
    assert fresh_python(code, timeout=120).splitlines()[-1] == "heavy []"


def test_python_m_jndplug_help_imports_neither_torch_nor_timm():
    code = ("import contextlib, io, runpy, sys\nsys.argv = ['jndplug', '--help']\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n        runpy.run_module('jndplug', run_name='__main__')\n    except SystemExit:\n        pass\n"
            "assert 'usage: jndplug' in out.getvalue()\n"
            "print('heavy', [m for m in ('torch', 'timm') if m in sys.modules])")
    assert fresh_python(code, timeout=120).splitlines()[-1] == "heavy []"


# the required flags of each bench command
REQUIRED = {"sr": ["--train", "t", "--test", "s"], "codec": ["--train", "t", "--eval", "e"],
            "estimator": [], "targets": ["--images", "i"], "visibility": ["--images", "i"],
            "screen": ["--gt", "g", "--bicubic", "4"]}


@pytest.mark.parametrize("kind", list(BENCH_KINDS))
def test_a_bench_kind_is_described_by_its_module_and_runs_it(kind, monkeypatch):
    module, _, _ = BENCH_KINDS[kind]
    mod = importlib.import_module(module)
    parser = _kind_parser(kind).filled()
    assert parser.description == mod.__doc__
    runs = []
    monkeypatch.setattr(mod, "run", runs.append)
    args = build_parser("bench").parse_args(["bench", kind, *REQUIRED[kind]])
    args.func(args)  # the benchmark is imported to run, with the Settings of the flags
    assert runs == [settings_from_args(mod.Settings, args)] and type(runs[0]) is mod.Settings


def _kind_parser(kind: str) -> argparse.ArgumentParser:
    bench = next(a for a in build_parser("bench")._actions if a.dest == "command").choices["bench"]
    return next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction)).choices[kind]


def test_a_bench_kind_is_filled_in_only_when_it_is_parsed():
    parser = build_parser("bench")
    kinds = next(a for a in next(a for a in parser._actions if a.dest == "command").choices["bench"]._actions
                 if isinstance(a, argparse._SubParsersAction))
    assert all(k.get_default("func") is None for k in kinds.choices.values())  # listed, not imported
    args = parser.parse_args(["bench", "targets", "--images", "photos", "--out", "x"])
    assert args.bench_kind == "targets" and callable(args.func) and (args.images, args.out) == ("photos", "x")


def test_every_command_registers_under_its_listed_name():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)
    for name, parser in sub.choices.items():
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        assert parser.get_default("func") is not None or groups, f"{name} runs nothing"
        for group in groups:  # a group of one step is that step
            assert len(group.choices) > 1, f"{name} has a group of one: {list(group.choices)}"


# commands that write one output: (command, inputs)
OUTPUT_COMMANDS = [
    (["infer"], ["IMAGE"]),
    (["precompute"], ["FOLDER"]),
    (["convert"], ["authors.pth"]),
    (["jnd-profile"], ["patches"]),
    (["patches", "build"], ["kadid:k"]),
    (["patches", "train"], ["patches"]),
]


@pytest.mark.parametrize("command, inputs", OUTPUT_COMMANDS, ids=lambda v: "-".join(v))
def test_the_output_is_the_required_out_option(command, inputs, tmp_path, image_folder, run_cli):
    # one spelling: an output given as a positional is argparse's own error, and nothing is written
    inputs = [{"IMAGE": str(image_folder / "a.png"), "FOLDER": str(image_folder)}.get(a, a) for a in inputs]
    out = tmp_path / "out"
    for argv in ([*inputs, out], inputs):
        res = run_cli(*command, *argv)
        assert res.returncode == 2 and "the following arguments are required: --out" in res.stderr
    usage = run_cli(*command, "--help").stdout
    assert " --out " in usage.split("\n\n")[0] and "[--out" not in usage  # shown as required
    assert not out.exists()


@pytest.mark.parametrize("argv", [
    ["convert-resjnd", "a.pth", "--out", "b.safetensors"],
    ["study", "simulate", "DATASET", "--model", "flip"],
    ["metrics", "OUT", "REF", "--metrics-device", "cpu"],
    ["bench", "sr", "--iters", "3"],
], ids=["command", "flag", "metrics-flag", "bench-flag"])
def test_a_name_that_is_not_the_current_one_is_argparses_error(argv, run_cli):
    # no alias table and no refusal messages: a name that is not today's is simply unknown
    res = run_cli(*argv)
    assert res.returncode == 2 and "error:" in res.stderr and "Traceback" not in res.stderr
