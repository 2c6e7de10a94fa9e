"""``jndplug train`` (also ``python -m jndplug.train_estimator``): train a JND estimator."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from jndplug.cli import DEVICE_HELP, add_command
from jndplug.errors import JNDPlugValueError
from jndplug.settings import add_settings_arguments, flag

DESCRIPTION = """\
Train a JND estimator on one or more labelled datasets, each given as KIND:PATH.

KIND is ``generated`` (datagen + study output), ``cnnjnd`` (the public CNN-Oriented JND Dataset),
``cplset`` (ResJND's CPL-Set) or ``pairs`` (``pairs:ORIG_DIR,TARGET_DIR``). The config file (YAML
or JSON) overrides the defaults in ``jndplug.training.config.DEFAULTS``; ``--set key=value`` does
the same from the command line. A rerun with the same ``--out`` resumes from its checkpoint.
Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m jndplug train ...``.

The run folder receives ``config.json``, ``split.json``, ``log.csv``/``log.json``, ``curves.png`` (viz extra),
``checkpoint.pt``, ``best.safetensors`` and, at the end, ``metrics.json``.
"""


OBSERVER_MODELS = ["conservative", "cvvdp", "flip", "ssimulacra2", "colour", "none"]


def _arch_help() -> str:
    from jndplug.training.config import DEFAULTS

    return f"a registered architecture, jndplug.list_estimators() (default {DEFAULTS['arch']})"


@dataclass(kw_only=True)  # keyword-only: --out has no default but follows flags that do
class Settings:
    """The flags of ``jndplug train``; the training config itself is ``--config`` and ``--set``."""

    data: list[str] = flag(help="training data (repeatable)", action="append", metavar="KIND:PATH")
    # no argparse choices: --help would list them by importing the registry, and so torch
    arch: str | None = flag(None, _arch_help(), metavar="ARCH")
    config: str | None = flag(None, "YAML or JSON file overriding the training defaults")
    set: list[str] = flag([], "override one config key", action="append", metavar="KEY=VALUE")
    out: str = flag(help="run folder (a rerun resumes it)")
    export: str | None = flag(None, "write the final (best-validation) model here as .safetensors")
    export_dtype: str = flag("float32", "precision of the exported tensors (float16 halves the file; default float32)",
                             choices=["float32", "float16"])
    device: str | None = flag(None, DEVICE_HELP)
    no_level_metrics: bool = flag(False, "skip level agreement (it needs jndplug.datagen's distortion measure)")
    observer_model: str = flag("none", "after training, the simulated observers' detection rate on the validation "
                                       "predictions with this visibility model (needs the study extra; default none)",
                               choices=OBSERVER_MODELS)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "train", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_arguments(p, Settings)
    p.set_defaults(func=_train)


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise JNDPlugValueError(f"--set {item!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def _read_config(path: str) -> dict:
    text = Path(path).read_text()
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise JNDPlugValueError(f"{path}: not valid YAML or JSON ({' '.join(str(exc).split())})") from exc
    if not isinstance(config, dict):
        raise JNDPlugValueError(f"{path}: expected a mapping of config keys (key: value lines), "
                                f"got a {type(config).__name__}")
    return config


def _train(args: argparse.Namespace) -> int:
    import torch

    from jndplug.training.loop import train

    config = _read_config(args.config) if args.config else {}
    config.update(_parse_set(args.set))
    if args.arch:
        from jndplug.models import list_estimators

        if args.arch not in list_estimators():
            raise JNDPlugValueError(f"--arch {args.arch}: unknown architecture; registered: "
                                    f"{', '.join(list_estimators())}")
        config["arch"] = args.arch
    if args.export and not args.export.endswith(".safetensors"):
        raise JNDPlugValueError("--export must name a .safetensors file")
    kwargs = {"measure": None} if args.no_level_metrics else {}
    if args.export_dtype != "float32":
        kwargs["export_dtype"] = getattr(torch, args.export_dtype)
    if args.observer_model != "none":
        kwargs["observer_model"] = args.observer_model
    command = "jndplug " + shlex.join(args.argv)
    result = train(args.data, args.out, config, export=args.export, device=args.device, command=command, **kwargs)
    if result.get("validation") is not None:
        print(json.dumps({"validation": result["validation"], "export": result.get("export")}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m jndplug.train_estimator``: the same as ``jndplug train``."""
    from jndplug.cli import main as jndplug_main

    return jndplug_main(["train", *(sys.argv[1:] if argv is None else argv)])
