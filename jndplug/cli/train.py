"""Train the JND inference model.

    python -m jndplug.train_estimator --data KIND:PATH [--data ...] --arch unet|resjnd \\
        [--config FILE] --out RUN_DIR [--export FILE.safetensors]

KIND is ``generated`` (datagen + study output), ``cnnjnd`` (the public CNN-Oriented JND Dataset),
``cplset`` (ResJND's CPL-Set) or ``pairs`` (``pairs:ORIG_DIR,TARGET_DIR``). The config file (YAML
or JSON) overrides the defaults in ``jndplug.training.loop.DEFAULTS``; ``--set key=value`` does
the same from the command line. A rerun with the same ``--out`` resumes from its checkpoint.
Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m jndplug.train_estimator ...``.

RUN_DIR receives ``config.json``, ``split.json``, ``log.csv``/``log.json``, ``curves.png``,
``checkpoint.pt``, ``best.safetensors`` and, at the end, ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch
import yaml

from jndplug.errors import JNDPlugValueError, user_error_message


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    from jndplug.training.loop import DEFAULTS, train

    ap = argparse.ArgumentParser(prog="python -m jndplug.train_estimator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append", required=True, metavar="KIND:PATH", help="training data (repeatable)")
    ap.add_argument("--arch", choices=["unet", "resjnd"], default=None, help=f"architecture (default {DEFAULTS['arch']})")
    ap.add_argument("--config", help="YAML or JSON file overriding the training defaults")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    ap.add_argument("--out", required=True, help="run folder (a rerun resumes it)")
    ap.add_argument("--export", help="write the final (best-validation) model here as .safetensors")
    ap.add_argument("--export-dtype", choices=["float32", "float16"], default="float32",
                    help="precision of the exported tensors (float16 halves the file; default float32)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-level-metrics", action="store_true",
                    help="skip level agreement (it needs jndplug.datagen's distortion measure)")
    ap.add_argument("--observer-model", choices=["conservative", "cvvdp", "flip", "ssimulacra2", "colour", "none"], default="none",
                    help="after training, the simulated observers' detection rate on the validation predictions "
                         "with this visibility model (needs the study extra; default none)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of errors reported in one line")
    args = ap.parse_args(argv)
    try:
        config = {}
        if args.config:
            text = Path(args.config).read_text()
            try:
                config = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise JNDPlugValueError(f"{args.config}: not valid YAML or JSON ({' '.join(str(exc).split())})") from exc
            if not isinstance(config, dict):
                raise JNDPlugValueError(f"{args.config}: expected a mapping of config keys (key: value lines), "
                                        f"got a {type(config).__name__}")
        config.update(_parse_set(args.set))
        if args.arch:
            config["arch"] = args.arch
        if args.export and not args.export.endswith(".safetensors"):
            raise ValueError("--export must name a .safetensors file")
        command = "python -m jndplug.train_estimator " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        kwargs = {"measure": None} if args.no_level_metrics else {}
        if args.export_dtype != "float32":
            kwargs["export_dtype"] = getattr(torch, args.export_dtype)
        if args.observer_model != "none":
            kwargs["observer_model"] = args.observer_model
        result = train(args.data, args.out, config, export=args.export, device=args.device, command=command, **kwargs)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or args.debug:
            raise
        print(f"train_estimator: error: {message}", file=sys.stderr)
        return 1
    if result.get("validation") is not None:
        print(json.dumps({"validation": result["validation"], "export": result.get("export")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
