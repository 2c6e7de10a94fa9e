"""``jndplug infer``, ``precompute`` and ``demo``: JND images from an estimator."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from jndplug.cli import DEVICE_HELP, add_command, add_out_argument
from jndplug.imageio import (ImageReadError, array_to_tensor, check_output_path, list_images, read_image,
                             tensor_to_array, write_image)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "infer", description="Write the JND image of each input, at the input's bit depth.")
    p.add_argument("input", help="an image file or a folder (searched recursively)")
    add_out_argument(p, "output file (for a file input) or folder")
    _estimator_args(p)
    p.add_argument("--map", action="store_true", help="also write <name>_jndmap.png, a heat map of the JND magnitude")
    p.add_argument("--compare", action="store_true", help="also write <name>_compare.png, a side-by-side figure")
    p.set_defaults(func=_infer)

    p = add_command(sub, "precompute", description="Mirror SRC into --out DST with every image replaced by its JND "
                                                   "image. Resumable; under torchrun each rank takes its share.")
    p.add_argument("src", metavar="SRC", help="folder of images (searched recursively)")
    add_out_argument(p, "folder to write the JND images to, mirroring SRC (a rerun resumes it)", metavar="DST")
    _estimator_args(p)
    p.set_defaults(func=_precompute)

    p = add_command(sub, "demo", description="Run the default estimator on scikit-image's sample photographs.")
    p.add_argument("--out", default="jndplug-demo", help="output folder (default ./jndplug-demo)")
    _estimator_args(p)
    p.set_defaults(func=_demo)


def _estimator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--estimator", default="default", help="pretrained name or .safetensors path (default: default)")
    p.add_argument("--strength", type=float, default=1.0, help="scale of the predicted distortion (default 1.0)")
    p.add_argument("--sur", type=float, default=None, help="target satisfied-user ratio (SUR-conditioned estimators)")
    p.add_argument("--kind", choices=("jnd", "directed"), default="directed",
                   help="directed (default): the perception-directed JND image, a zero-mean luma sharpening "
                        "bounded by the JND map (docs/directed.md); jnd: the estimated JND image")
    p.add_argument("--gain", type=float, default=None, help="sharpening gain of --kind directed (default "
                                                            "jndplug.directed.DEFAULT_GAIN)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--tile", type=int, nargs=2, metavar=("SIZE", "OVERLAP"), default=None,
                   help="process in tiles to bound memory (default: automatic for very large images)")


def _target(args: argparse.Namespace):
    from jndplug.target import JNDTarget

    device = args.device
    if device is None:
        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        else:
            device = "cpu"
    if args.gain is not None and args.kind != "directed":
        raise ValueError("--gain applies to --kind directed only")
    return JNDTarget(args.estimator, strength=args.strength, sur=args.sur, device=device, tile=args.tile,
                     kind=args.kind, gain=args.gain)


def _infer(args: argparse.Namespace) -> int:
    from jndplug.viz import heatmap_array, save_comparison

    src, dst = Path(args.input), Path(args.out)
    if not src.exists():
        raise FileNotFoundError(f"input not found: {src}")
    if src.is_dir():
        check_output_path(src, dst, inside_ok=True)
        # an output folder inside the input: what an earlier run wrote there is not an input
        inside = dst.resolve()
        pairs = [(p, dst / p.relative_to(src)) for p in list_images(src) if inside not in p.resolve().parents]
        if not pairs:
            raise ValueError(f"no images found under {src}")
    else:
        if dst.is_dir():
            dst = dst / src.name
        check_output_path(src, dst)
        pairs = [(src, dst)]
    target = _target(args)
    failed = 0
    for inp, out in pairs:
        try:
            array = read_image(inp)
            if array.dtype == np.uint16 and out.suffix.lower() not in (".png", ".tif", ".tiff"):
                out = out.with_suffix(".png")  # 16-bit results are written as PNG (or TIFF)
            stem = out.with_suffix("")
            extra = {"map": Path(f"{stem}_jndmap.png"), "compare": Path(f"{stem}_compare.png")}
            for path in [out] + [extra[k] for k in extra if getattr(args, k)]:
                check_output_path(inp, path)  # e.g. `infer a_jndmap.png --out a.png --map`
            x = array_to_tensor(array)
            jnd = target(x)
        except (ImageReadError, ValueError) as exc:
            print(f"skipped {inp}: {exc}", file=sys.stderr)
            failed += 1
            continue
        write_image(out, tensor_to_array(jnd, array.dtype))
        if args.map or args.compare:
            m = (jnd - x).pow(2).mean(0, keepdim=True).sqrt()
            if args.map:
                write_image(extra["map"], heatmap_array(m))
            if args.compare:
                save_comparison(extra["compare"], x, jnd, m, title=inp.name)
        print(f"wrote {out}")
    return 1 if failed else 0


def _precompute(args: argparse.Namespace) -> int:
    from jndplug.precompute import precompute, torch_threads_for_rank

    torch_threads_for_rank()
    report = precompute(args.src, args.out, _target(args))
    print(f"{len(report.written)} written, {len(report.skipped)} already done, {len(report.failed)} failed "
          f"-> {args.out}")
    for rel, why in report.failed.items():
        print(f"  failed {rel}: {why}", file=sys.stderr)
    return 1 if report.failed else 0


# Colour photographs bundled inside scikit-image (no download needed).
DEMO_IMAGES = ("astronaut", "coffee", "chelsea", "rocket")


def _demo(args: argparse.Namespace) -> int:
    import skimage.data

    from jndplug.viz import heatmap_array, save_comparison

    target = _target(args)
    out = Path(args.out)
    mean_rms = []
    for i, name in enumerate(DEMO_IMAGES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = getattr(skimage.data, name)()
        x = array_to_tensor(np.ascontiguousarray(array[..., :3]))
        jnd = target(x)
        m = (jnd - x).pow(2).mean(0, keepdim=True).sqrt()
        mean_rms.append(float(m.mean()) * 255)
        write_image(out / f"{name}.png", tensor_to_array(x))
        write_image(out / f"{name}_jnd.png", tensor_to_array(jnd))
        write_image(out / f"{name}_jndmap.png", heatmap_array(m))
        if i == 0:
            save_comparison(out / "comparison.png", x, jnd, m,
                            title=f"{name}: estimator {args.estimator} ({target.arch_name}), strength {args.strength}")
    print(f"JND images, maps and a comparison figure are in {out.resolve()}/")
    for name, rms in zip(DEMO_IMAGES, mean_rms):
        print(f"  {name}: mean JND magnitude {rms:.2f}/255 -> {out / (name + '_jnd.png')}")
    print(f"  comparison figure: {out / 'comparison.png'}")
    return 0
