"""``jndplug metrics``: score a folder of outputs against a folder of references."""

from __future__ import annotations

import argparse

from jndplug.cli import add_command
from jndplug.metrics import add_suite_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "metrics",
                    description="PSNR/SSIM (RGB and Y), MS-SSIM, NIQE, CVVDP, SSIMULACRA 2, FLIP, ST-LPIPS, "
                                "LPIPS, DISTS of every output against its reference (matched by relative path "
                                "without extension). Writes JSON and Markdown; prints the Markdown table.")
    p.add_argument("outputs", help="folder of outputs (or one file)")
    p.add_argument("references", help="folder of references (or one file)")
    p.add_argument("--crop-border", type=int, default=0, help="pixels removed at every edge (BasicSR: the SR scale)")
    add_suite_arguments(p, device_flag="--device")
    p.add_argument("--json", help="write the table here")
    p.add_argument("--md", help="write the Markdown table here")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from jndplug.metrics import evaluate_folders, to_markdown, write_table

    table = evaluate_folders(args.outputs, args.references, args.metrics, crop_border=args.crop_border,
                             device=args.device, progress=True)
    write_table(table, args.json, args.md)
    print(to_markdown(table))
    return 0
