"""``jndplug convert``: the ResJND authors' checkpoint as a verified jndplug weights file.

See docs/other-systems.md.
"""

from __future__ import annotations

import argparse

from jndplug.cli import add_command, add_out_argument
from jndplug.errors import JNDPlugValueError


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "convert", description="Convert the ResJND authors' released PyTorch state dict (read with "
                                                "torch.load(weights_only=True)) into a verified .safetensors estimator.")
    p.add_argument("input", help="the authors' checkpoint (.pth)")
    add_out_argument(p, "the jndplug weights file to write (.safetensors)", metavar="FILE")
    p.add_argument("--recursions", type=int, default=25,
                   help="recursions of the shared block (not stored in the weights; ResJND uses 25)")
    p.set_defaults(func=_convert_resjnd)


def _convert_resjnd(args: argparse.Namespace) -> int:
    from jndplug.models.resjnd_convert import convert_resjnd

    if args.recursions < 1:
        raise JNDPlugValueError(f"--recursions must be >= 1, got {args.recursions}")
    path = convert_resjnd(args.input, args.out, recursions=args.recursions)
    print(f"wrote {path}")
    return 0
