"""The ``jndplug`` command line itself: lazy imports, pipeline order, earlier spellings."""

import argparse
import shlex
import subprocess
import sys

import pytest

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
    assert _canonical(["convert-resjnd", "a.pth", "--out", "b.safetensors"])[0] == ["convert", "a.pth", "--out",
                                                                              "b.safetensors"]
    assert _canonical(["jnd-profile", "train", "d", "--out", "p"])[0] == ["jnd-profile", "d", "--out", "p"]
    args = build_parser("bench").parse_args(["bench", "sr", "--train", "t", "--test", "s", "--steps", "3",
                                              "--pretrain-steps", "2"])
    assert (args.iters, args.pretrain_iters) == (3, 2)
    args = build_parser("bench").parse_args(["bench", "sr", "--train", "t", "--test", "s", "--steps", "4"])
    assert (args.iters, args.pretrain_iters) == (4, 0)


# commands whose output used to be their last positional argument: (command, inputs, options)
OUTPUT_WAS_POSITIONAL = [
    (["infer"], ["IMAGE"], ["--estimator", "ESTIMATOR", "--map"]),
    (["precompute"], ["FOLDER"], ["--estimator", "ESTIMATOR"]),
    (["convert"], ["authors.pth"], ["--recursions", "3"]),
    (["jnd-profile"], ["patches"], ["--epochs", "1"]),
    (["patches", "build"], ["kadid:k"], ["--stride", "10"]),
    (["patches", "train"], ["patches"], ["--epochs", "1"]),
]


@pytest.mark.parametrize("command, inputs, options", OUTPUT_WAS_POSITIONAL, ids=lambda v: "-".join(v))
def test_an_output_given_where_it_used_to_be_is_refused_with_the_fix(command, inputs, options, tmp_path,
                                                                    image_folder, estimator_file, run_cli):
    real = {"IMAGE": str(image_folder / "a.png"), "FOLDER": str(image_folder), "ESTIMATOR": str(estimator_file)}
    inputs, options = [real.get(a, a) for a in inputs], [real.get(a, a) for a in options]
    out = tmp_path / "the out"
    res = run_cli(*command, *inputs, out, *options)
    prog = "jndplug " + " ".join(command)
    fix = shlex.join([*prog.split(), *inputs, "--out", str(out), *options])
    assert (res.returncode, res.stderr) == (2, f"{prog}: error: the output is now given with --out: {fix}\n")
    assert not out.exists() and not list(tmp_path.glob("the out*"))
    # the same after the options; and with no output at all, argparse's own "required" error
    res = run_cli(*command, *inputs, *options, out)
    assert res.returncode == 2 and res.stderr.startswith(f"{prog}: error: the output is now given with --out: ")
    res = run_cli(*command, *inputs, *options)
    assert res.returncode == 2 and "the following arguments are required: --out" in res.stderr
    usage = run_cli(*command, "--help").stdout
    assert " --out " in usage.split("\n\n")[0] and "[--out" not in usage  # shown as required
    assert not out.exists()


def test_the_suggested_command_runs(tmp_path, image_folder, estimator_file, run_cli):
    out = tmp_path / "jnd.png"
    res = run_cli("infer", image_folder / "a.png", out, "--estimator", estimator_file)
    fix = res.stderr.strip().rsplit(": ", 1)[1]
    res = run_cli(*shlex.split(fix)[1:])
    assert res.returncode == 0, res.stderr
    assert out.is_file()


def test_an_earlier_spelling_of_a_command_gets_the_new_output_form(tmp_path, run_cli):
    res = run_cli("convert-resjnd", tmp_path / "a.pth", tmp_path / "b.safetensors")
    assert res.returncode == 2
    assert res.stderr.endswith(f": jndplug convert {tmp_path / 'a.pth'} --out {tmp_path / 'b.safetensors'}\n")
    res = run_cli("jnd-profile", "train", "d", "p")
    assert (res.returncode, res.stderr.split(": ")[-1]) == (2, "jndplug jnd-profile d --out p\n")


@pytest.mark.parametrize("argv,old,new", [
    (["study", "simulate", "DATASET", "--model", "flip"], "--model", "--observer-model"),
    (["bench", "sr", "--train", "t", "--test", "s", "--iters", "3"], "--iters", "--steps"),
    (["bench", "sr", "--train", "t", "--test", "s", "--pretrain-iters", "3"], "--pretrain-iters", "--pretrain-steps"),
    (["bench", "screen", "--gt", "g", "--bicubic", "4", "--max-side", "48"], "--max-side", "--crop"),
])
def test_earlier_flag_names_are_refused_with_the_new_one(argv, old, new, run_cli, tmp_path):
    # one spelling per flag across commands; an old one must neither run nor be silently ignored
    res = run_cli(*argv)
    assert res.returncode == 2
    assert f"error: {old} is now {new}: " in res.stderr and res.stderr.endswith(f"{new} {argv[-1]}\n")
