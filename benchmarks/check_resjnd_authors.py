"""Does a converted ResJND checkpoint reproduce the authors' own JND maps?

    jndplug convert RESJND/checkpoint/model_epoch_250_44.9119873046875.pth --out resjnd-authors.safetensors
    python benchmarks/check_resjnd_authors.py RESJND --weights resjnd-authors.safetensors [--json OUT.json]

RESJND is a local copy of the authors' repository (Knife646/ResJND); nothing of it is part of
jndplug. Every photo in ``RESJND/example/`` is run through the converted network the way the
authors' ``test.py`` does: read with PIL as RGB and scaled to [0,1] (torchvision's ``ToTensor``),
CPL prediction without clamping, JND = |CPL - image| * 255, RMS over the three channels, divided
by its maximum, times 255 and rounded to 8 bits (what ``cv2.imwrite`` does with a float map; a
single-channel map has no BGR/RGB order to mind). That map is compared with ``RESJND/result/``
of the same name: Pearson correlation, largest difference and share of identical pixels.

A second map comes the library's way, ``JNDTarget(weights, kind="jnd").jnd_map(x, normalize=True)``, whose
CPL image is clamped to [0,1]. ``mean |change|`` is the mean over pixels and channels of
|CPL - image| in /255 (unclamped), how far the network moves the photo.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import jndplug
from jndplug.bench.common import write_json


def _to_8bit_map(jnd: np.ndarray) -> np.ndarray:
    """A [H,W] JND magnitude as the authors save it: divided by its maximum, times 255, 8 bits."""
    peak = float(jnd.max())
    norm = jnd / peak if peak > 0 else jnd
    return np.clip(np.rint(norm * 255), 0, 255).astype(np.uint8)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path, help="local copy of the authors' repository (with example/ and result/)")
    ap.add_argument("--weights", required=True, type=Path, help="the output of jndplug convert")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--images", nargs="+", help="only these photos of example/ (e.g. 99.bmp; default: all)")
    args = ap.parse_args(argv)

    examples = sorted((args.repo / "example").glob("*.bmp"), key=lambda p: p.stem)
    if args.images:
        unknown = sorted(set(args.images) - {p.name for p in examples})
        if unknown:
            print(f"error: {', '.join(unknown)} not in {args.repo / 'example'}", file=sys.stderr)
            return 1
        examples = [p for p in examples if p.name in set(args.images)]
    if not examples:
        print(f"error: no example/*.bmp under {args.repo}; pass a copy of the ResJND repository", file=sys.stderr)
        return 1
    missing = [p.name for p in examples if not (args.repo / "result" / p.name).is_file()]
    if missing:
        print(f"error: {args.repo / 'result'} lacks the authors' maps for {', '.join(missing)}", file=sys.stderr)
        return 1

    model = jndplug.load_estimator(args.weights).eval()
    target = jndplug.JNDTarget(args.weights, kind="jnd")
    rows = []
    print(f"{'image':>8} {'size':>9} {'pearson':>8} {'max|d|':>6} {'equal':>6} "
          f"{'pearson (JNDTarget)':>19} {'mean |change| /255':>18}")
    for path in examples:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()
        with torch.no_grad():
            cpl = model(x)[0].numpy()
        img = x[0].numpy()
        jnd = np.abs(cpl - img) * 255
        ours = _to_8bit_map(np.sqrt((jnd ** 2).sum(axis=0) / 3))
        theirs = np.asarray(Image.open(args.repo / "result" / path.name).convert("L"))
        if theirs.shape != ours.shape:
            print(f"error: result/{path.name} is {theirs.shape}, the photo {ours.shape}", file=sys.stderr)
            return 1
        library = _to_8bit_map(target.jnd_map(x, normalize=True)[0, 0].numpy())
        row = {"image": path.name, "height": int(ours.shape[0]), "width": int(ours.shape[1]),
               "pearson": _pearson(ours, theirs),
               "max_abs_diff": int(np.abs(ours.astype(int) - theirs).max()),
               "equal_share": float(np.mean(ours == theirs)),
               "pearson_jndtarget": _pearson(library, theirs),
               "mean_abs_change_255": float(jnd.mean())}
        rows.append(row)
        print(f"{path.stem:>8} {row['width']:>4}x{row['height']:<4} {row['pearson']:8.5f} {row['max_abs_diff']:6d} "
              f"{row['equal_share']:6.1%} {row['pearson_jndtarget']:19.5f} {row['mean_abs_change_255']:18.3f}")
    summary = {k: float(np.mean([r[k] for r in rows]))
               for k in ("pearson", "equal_share", "pearson_jndtarget", "mean_abs_change_255")}
    summary["pearson_min"] = min(r["pearson"] for r in rows)
    print(f"{'mean':>8} {'':9} {summary['pearson']:8.5f} {'':6} {summary['equal_share']:6.1%} "
          f"{summary['pearson_jndtarget']:19.5f} {summary['mean_abs_change_255']:18.3f}")
    if args.json:
        write_json(args.json, {"weights": str(args.weights), "images": rows, "mean": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
