"""Every bench command and ``jndplug train`` take their flags from one Settings dataclass each,
through the one helper of ``jndplug.settings``."""

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from jndplug.bench import codec, estimator, screen, sr, targets, visibility
from jndplug.cli import build_parser
from jndplug.cli import train as train_cli
from jndplug.settings import add_settings_arguments, flag, settings_from_args

ROOT = Path(__file__).resolve().parents[2]
BENCHES = {"sr": sr, "codec": codec, "screen": screen, "targets": targets, "estimator": estimator,
           "visibility": visibility}


def _command(*path: str) -> argparse.ArgumentParser:
    p = build_parser(path[0])
    for name in path:
        p = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return p.filled() if hasattr(p, "filled") else p  # a bench's flags are added when it is parsed


def _flags(p: argparse.ArgumentParser) -> list[tuple]:
    """What ``--help`` and parsing depend on, per flag (the hidden --debug of every command left out)."""
    return [(tuple(a.option_strings), a.dest, type(a).__name__, a.type, repr(a.default), a.help, a.nargs,
             a.choices and list(a.choices), a.metavar, a.required)
            for a in p._actions if a.dest not in ("help", "debug")] + [
        ([a.dest for a in g._group_actions], g.required) for g in p._mutually_exclusive_groups]


@pytest.mark.parametrize("path, settings", [*((("bench", n), m.Settings) for n, m in BENCHES.items()),
                                            (("train",), train_cli.Settings)])
def test_each_command_is_exactly_its_settings(path, settings):
    built = argparse.ArgumentParser()
    add_settings_arguments(built, settings)
    assert _flags(_command(*path)) == _flags(built)


@pytest.mark.parametrize("mod, required", [(sr, {"train": "t", "test": "s"}), (codec, {"train": "t", "eval": "e"}),
                                           (screen, {"gt": "g", "bicubic": 4}), (targets, {"images": "i"}),
                                           (estimator, {}), (visibility, {"images": "i"})])
def test_flags_default_to_the_settings_defaults(mod, required):
    p = argparse.ArgumentParser()
    add_settings_arguments(p, mod.Settings)
    given = [str(a) for name, value in required.items() for a in (f"--{name}", value)]
    assert settings_from_args(mod.Settings, p.parse_args(given)) == mod.Settings(**required)
    if mod in (sr, codec):
        with pytest.raises(SystemExit):
            p.parse_args(given[:2])  # a field without a default is a required flag


def test_flags_are_typed_from_the_annotations():
    p = argparse.ArgumentParser()
    add_settings_arguments(p, codec.Settings)
    args = p.parse_args(["--train", "t", "--eval", "e", "--seeds", "1", "2", "--channels", "8", "16", "--lambdas",
                         "0.01", "--eval-images", "3", "--pretrain-only"])
    assert (args.seeds, args.channels, args.lambdas, args.eval_images, args.pretrain_only, args.pretrain_lambda) == \
        ([1, 2], [8, 16], [0.01], 3, True, None)
    with pytest.raises(SystemExit):
        p.parse_args(["--train", "t", "--eval", "e", "--metrics", "nonsense"])  # choices kept


@dataclasses.dataclass
class _Example:
    data: list[str] = flag(help="repeatable", action="append")
    a: int | None = flag(None, "one source", exclusive="source")
    b: str | None = flag(None, "the other", exclusive="source")
    sizes: list[float] = flag([1.0])


def test_append_flags_and_exclusive_alternatives():
    p = argparse.ArgumentParser()
    add_settings_arguments(p, _Example)
    s = settings_from_args(_Example, p.parse_args(["--data", "x", "--data", "y", "--a", "3"]))
    assert s == _Example(data=["x", "y"], a=3, sizes=[1.0])
    for argv in (["--data", "x"], ["--data", "x", "--a", "1", "--b", "z"]):
        with pytest.raises(SystemExit):  # exactly one of the alternatives
            p.parse_args(argv)


@dataclasses.dataclass(frozen=True)
class _Renamed:
    source: str = flag(help="input", option="source")
    made: tuple | None = flag(None, command_line=False)
    mode: str = flag("fast", "fast (default) or slow", choices=("fast", "slow"), omitted=None)
    scale: float = flag(1.0, option="--scale-factor", omitted=None)
    level: int = 3


def test_positional_renamed_omitted_and_computed_fields_in_a_chosen_order():
    p = argparse.ArgumentParser()
    add_settings_arguments(p, _Renamed, ["level", "source"])
    p.add_argument("--own", action="store_true")
    add_settings_arguments(p, _Renamed)  # the rest, without those already there
    assert [a.option_strings or [a.dest] for a in p._actions[1:]] == \
        [["--level"], ["source"], ["--own"], ["--mode"], ["--scale-factor"]]
    args = p.parse_args(["x"])
    assert (args.mode, args.scale_factor) == (None, None)  # the command sees that neither was given
    assert settings_from_args(_Renamed, args, made=(1,)) == _Renamed("x", made=(1,))
    given = settings_from_args(_Renamed, p.parse_args(["x", "--mode", "fast", "--scale-factor", "2"]))
    assert (given.mode, given.scale) == ("fast", 2.0)
    with pytest.raises(SystemExit):
        p.parse_args([])  # the positional argument is required


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


@pytest.mark.parametrize("report, runner", [("sr_report", "sr"), ("codec_report", "codec"),
                                            ("truth_report", "estimator")])
def test_a_report_never_imports_its_runner(report, runner):
    # the runner imports its report; a report that reads the runner's Settings back is an import circle
    assert f"jndplug.bench.{runner}" not in _imports(ROOT / "jndplug" / "bench" / f"{report}.py")


def test_architectures_come_from_the_registry(monkeypatch):
    from jndplug.models import registry

    monkeypatch.setitem(registry._REGISTRY, "tiny", object)  # what @register_estimator("tiny") adds
    assert "registered architecture" in _command("train")._option_string_actions["--arch"].help
    assert "tiny" in estimator.Settings().archs
    # the flag's default is computed when the Settings are made, not when the parser is built
    parsed = settings_from_args(estimator.Settings, _command("bench", "estimator").parse_args([]))
    assert "tiny" in parsed.archs and parsed == estimator.Settings()


def test_train_checks_its_architecture_against_the_registry_before_any_work(tmp_path, run_cli):
    res = run_cli("train", "--data", f"generated:{tmp_path}", "--arch", "unett", "--out", tmp_path / "run")
    assert res.returncode != 0 and "--arch unett: unknown architecture; registered: resjnd, unet" in res.stderr
    assert not (tmp_path / "run").exists()
