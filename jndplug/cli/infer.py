"""``jndplug infer``, ``precompute`` and ``demo``: JND images from an estimator."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path

from jndplug.cli import DEVICE_HELP, add_command, add_out_argument
from jndplug.errors import JNDPlugValueError
from jndplug.spec import TargetSpec

MAP_HELP = ("a heat map of the JND bound: the estimator's JND magnitude (RMS over channels, times --strength), "
            "the most the image may change unnoticed; the target's own change (the difference panel of "
            "--compare) stays within it")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "infer", description="Write the JND image of each input, at the input's bit depth.")
    p.add_argument("input", help="an image file or a folder (searched recursively)")
    add_out_argument(p, "output image file (for a file input) or folder (a folder input, or a path ending in /)")
    _target_args(p)
    p.add_argument("--map", action="store_true", help=f"also write <name>_jndmap.png, {MAP_HELP}")
    p.add_argument("--compare", action="store_true", help="also write <name>_compare.png: original, JND image, "
                                                          "their difference x10 and the JND bound")
    p.set_defaults(func=_infer)

    p = add_command(sub, "precompute", description="Mirror SRC into --out DST with every image replaced by its JND "
                                                   "image. Resumable; under torchrun each rank takes its share.")
    p.add_argument("src", metavar="SRC", help="folder of images (searched recursively)")
    add_out_argument(p, "folder to write the JND images to, mirroring SRC (a rerun resumes it)", metavar="DST")
    _target_args(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the images DST holds from a run with other settings (without it, such a rerun "
                        "is refused)")
    p.set_defaults(func=_precompute)

    p = add_command(sub, "demo", description="Run the default target on scikit-image's sample photographs.")
    p.add_argument("--out", default="jndplug-demo", help="output folder (default ./jndplug-demo)")
    _target_args(p)
    p.set_defaults(func=_demo)


class _WeightsFlag(argparse.Action):
    """``--weights``, the flag other tools take for a weights file: refused with the name jndplug uses."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"unrecognized arguments: {option_string}; the estimator's weights are given with "
                     f"--estimator NAME|PATH (e.g. --estimator {values})")


def _target_args(p: argparse.ArgumentParser) -> None:
    TargetSpec.add_arguments(p)  # --estimator, --strength, --sur, --kind, --gain
    p.add_argument("--weights", action=_WeightsFlag, help=argparse.SUPPRESS)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--tile", type=int, nargs=2, metavar=("SIZE", "OVERLAP"), default=None,
                   help="process in tiles to bound memory (default: automatic for very large images)")


def _device(args: argparse.Namespace) -> str:
    import torch  # here and below, not at the top: building the parsers (--help) must not import torch

    if args.device is not None:
        return args.device
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"


def _tile(args: argparse.Namespace) -> tuple[int, int] | None:
    return tuple(args.tile) if args.tile else None


def _target(args: argparse.Namespace):
    from jndplug.target import JNDTarget

    return JNDTarget.from_spec(TargetSpec.from_args(args), device=_device(args), tile=_tile(args))


@contextlib.contextmanager
def _warnings_as_lines():
    """Warnings as one ``warning: ...`` line each (no source line)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


# JPEG at quality 75 (Pillow's default) adds 4-6 levels of RMS error to a change of about 2.5 levels,
# so the JND image of a JPEG is written as PNG
LOSSY = (".jpg", ".jpeg")


def _lossless(path: Path) -> Path:
    return path.with_suffix(".png") if path.suffix.lower() in LOSSY else path


def _extras(out: Path) -> dict[str, Path]:
    """The files ``--map`` and ``--compare`` write beside the JND image ``out``."""
    stem = out.with_suffix("")
    return {"map": Path(f"{stem}_jndmap.png"), "compare": Path(f"{stem}_compare.png")}


def _pairs(src: Path, out: str) -> list[tuple[Path, Path]]:
    """(input, output) for each image of ``src`` (a file or a folder) and ``--out``."""
    from jndplug.imageio import IMAGE_EXTENSIONS, check_output_path, list_images

    dst = Path(out)
    if src.is_dir():
        if dst.is_file() or (not dst.exists() and dst.suffix.lower() in IMAGE_EXTENSIONS):
            raise JNDPlugValueError(f"--out {out} names a file, but {src} is a folder: give a folder for its JND "
                                    "images")
        check_output_path(src, dst, inside_ok=True)
        # an output folder inside the input: what an earlier run wrote there is not an input
        inside = dst.resolve()
        pairs = [(p, _lossless(dst / p.relative_to(src))) for p in list_images(src)
                 if inside not in p.resolve().parents]
        if not pairs:
            raise JNDPlugValueError(f"no images found under {src}")
        return pairs
    if dst.is_dir() or out.endswith(("/", os.sep)):
        dst = _lossless(dst / src.name)  # into a folder, made if need be
    elif dst.suffix.lower() not in IMAGE_EXTENSIONS:
        raise JNDPlugValueError(f"--out {out}: give an image file name ({', '.join(IMAGE_EXTENSIONS)}) for the JND "
                                f"image of {src.name}, or a folder ending in / to write {src.name} into")
    elif dst.suffix.lower() in LOSSY:
        raise JNDPlugValueError(f"--out {out}: JPEG is lossy (at quality 75 it adds more error than the JND image "
                                f"changes); give a lossless name such as {dst.with_suffix('.png').name}")
    check_output_path(src, dst)
    return [(src, dst)]


def _check_names(pairs: list[tuple[Path, Path]], extras: list[str]) -> set[Path]:
    """Refuse two inputs that would write the same file; returns every file the run writes."""
    owner: dict[Path, Path] = {}
    for inp, out in pairs:
        for path in [out] + [_extras(out)[k] for k in extras]:
            other = owner.setdefault(path.resolve(), inp)
            if other != inp:
                raise JNDPlugValueError(f"{other} and {inp} would both write {path}; rename one of them"
                                        + (" or leave out --map/--compare" if extras else ""))
    return set(owner)


def _infer(args: argparse.Namespace) -> int:
    import numpy as np

    from jndplug.imageio import (ImageReadError, array_to_tensor, check_output_path, read_image, tensor_to_array,
                                 write_image)
    from jndplug.viz import heatmap_array, save_comparison

    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"input not found: {src}")
    pairs = _pairs(src, args.out)
    wanted = [k for k in ("map", "compare") if getattr(args, k)]
    planned = _check_names(pairs, wanted)
    inputs = {inp.resolve() for inp, _ in pairs}
    target = _target(args)
    if args.map and target.spec.bound == "none":
        raise JNDPlugValueError("--map: --bound none bounds nothing, so there is no map to draw; "
                                "--compare draws the change itself")
    failed = 0
    with _warnings_as_lines():
        for inp, out in pairs:
            try:
                array = read_image(inp)
                if array.dtype == np.uint16 and out.suffix.lower() not in (".png", ".tif", ".tiff"):
                    out = out.with_suffix(".png")  # 16-bit results are written as PNG (or TIFF)
                extra = _extras(out)
                for path in [out] + [extra[k] for k in wanted]:
                    check_output_path(inp, path)  # e.g. `infer a_jndmap.png --out a.png --map`
                x = array_to_tensor(array)
                jnd = target(x)
            except (ImageReadError, ValueError) as exc:
                print(f"skipped {inp}: {exc}", file=sys.stderr)
                failed += 1
                continue
            write_image(out, tensor_to_array(jnd, array.dtype))
            if wanted:
                bound = target.jnd_map(x)
                if args.map:
                    write_image(extra["map"], heatmap_array(bound))
                if args.compare:
                    save_comparison(extra["compare"], x, jnd, bound, title=inp.name, bound_label=target.bound_label)
            written = [f" and its {what} {extra[k]}" for k, what in (("map", "JND bound map"),
                                                                    ("compare", "comparison")) if k in wanted]
            # a map or comparison an earlier run left beside this image would describe another JND image
            stale = [p for k, p in extra.items()
                     if k not in wanted and p.is_file() and p.resolve() not in planned | inputs]
            for path in stale:
                path.unlink()
            print(f"wrote {out}" + "".join(written)
                  + (f" (removed {', '.join(map(str, stale))}, left by an earlier run)" if stale else ""))
    return 1 if failed else 0


def _precompute(args: argparse.Namespace) -> int:
    from jndplug.precompute import precompute, torch_threads_for_rank

    torch_threads_for_rank()
    with _warnings_as_lines():
        report = precompute(args.src, args.out, TargetSpec.from_args(args), overwrite=args.overwrite,
                            device=_device(args), tile=_tile(args))
    print(f"{len(report.written)} written, {len(report.skipped)} already done, {len(report.failed)} failed "
          f"-> {args.out}")
    for rel, why in report.failed.items():
        print(f"  failed {rel}: {why}", file=sys.stderr)
    return 1 if report.failed else 0


# Colour photographs bundled inside scikit-image (no download needed).
DEMO_IMAGES = ("astronaut", "coffee", "chelsea", "rocket")


def _demo(args: argparse.Namespace) -> int:
    import numpy as np
    import skimage.data

    from jndplug.imageio import array_to_tensor, tensor_to_array, write_image
    from jndplug.viz import heatmap_array, save_comparison

    target = _target(args)
    out = Path(args.out)
    means = []
    for i, name in enumerate(DEMO_IMAGES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = getattr(skimage.data, name)()
        x = array_to_tensor(np.ascontiguousarray(array[..., :3]))
        jnd = target(x)
        bound = target.jnd_map(x)
        change = target.distortion(x).pow(2).mean(0, keepdim=True).sqrt()
        means.append((float(bound.mean()) * 255, float(change.mean()) * 255))
        write_image(out / f"{name}.png", tensor_to_array(x))
        write_image(out / f"{name}_jnd.png", tensor_to_array(jnd))
        write_image(out / f"{name}_jndmap.png", heatmap_array(bound))
        if i == 0:
            save_comparison(out / "comparison.png", x, jnd, bound, title=f"{name}: {target.describe()}",
                            bound_label=target.bound_label)
    print(f"JND images ({target.describe()}), JND bound maps and a comparison figure are in {out.resolve()}/")
    print(f"  <name>_jndmap.png draws the JND bound ({target.bound_label}), not the change the JND image makes")
    for name, (bound, change) in zip(DEMO_IMAGES, means):
        print(f"  {name}: mean JND bound {bound:.2f}/255, mean change {change:.2f}/255 -> "
              f"{out / (name + '_jnd.png')}")
    print(f"  comparison figure: {out / 'comparison.png'}")
    return 0
