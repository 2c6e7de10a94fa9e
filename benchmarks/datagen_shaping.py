"""How datagen's shaping options change what a level's distortion looks like.

For a few photographs, the trained autoencoders of a datagen dataset make their candidates; each
shaping configuration is applied, the levels are put on the PSNR ladder as datagen does, and the
levels asked for are measured: SSIMULACRA 2 against the original, chroma share of the distortion
energy, largest per-channel mean shift (/255), Spearman of |d| with local 7x7 luma contrast, and
the luma band power ratios 1/8-1/4 and 1/4-1/2 cycles/pixel. Comparisons are at equal PSNR, so
they say which shape is least visible for the same error, not where the threshold lies.

    python benchmarks/datagen_shaping.py DATASET/autoencoders SRC_DIR [--every 60 --offset 7 --count 8]
        [--levels 3 4 5] [--max-side 480]

Pick photographs the autoencoders were not trained on (``--every``/``--offset`` walk the sorted
source list).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from jndplug.bench import truth
from jndplug.datagen.autoencoder import load_autoencoder
from jndplug.datagen.levels import form_levels, psnr_ladder
from jndplug.datagen.shaping import shape_distortion
from jndplug.datagen.photos import find_sources, prepare
from jndplug.imageio import to_tensor
from jndplug.study.visibility import SSIMULACRA2

CONFIGS = {
    "none (earlier datagen)": dict(remove_mean=False, masking=0, chroma=1),
    "mean removed": dict(remove_mean=True, masking=0, chroma=1),
    "mean, masking 1": dict(remove_mean=True, masking=1, chroma=1),
    "mean, masking 1, chroma 0.5 (default)": dict(remove_mean=True, masking=1, chroma=0.5),
    "mean, masking 2": dict(remove_mean=True, masking=2, chroma=1),
    "mean, masking 1, chroma 0": dict(remove_mean=True, masking=1, chroma=0),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("autoencoders", type=Path, help="a datagen dataset's autoencoders/ folder")
    ap.add_argument("src", type=Path, help="folder of photographs")
    ap.add_argument("--every", type=int, default=60)
    ap.add_argument("--offset", type=int, default=7)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--levels", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--max-side", type=int, default=480)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    files = sorted(args.autoencoders.glob("*.safetensors"))
    if not files:
        print(f"no autoencoders in {args.autoencoders}", file=sys.stderr)
        return 1
    aes = [load_autoencoder(p)[0].eval() for p in files]
    ladder = psnr_ladder(9, 44, 22)[: len(aes)]
    picked = find_sources([args.src])[args.offset:: args.every][: args.count]
    scorer = SSIMULACRA2()
    rows = {c: {k: [] for k in ("ssimulacra2", "chroma_share", "mean_shift", "spearman", "p_1/8-1/4", "p_1/4-1/2")}
            for c in CONFIGS}
    for source in picked:
        p = prepare(source, (1920, 1080), 160, args.max_side)
        x = to_tensor(p.image)
        with torch.inference_mode():
            cands = [ae(x[None])[0].clamp(0, 1) for ae in aes]
        for name, kw in CONFIGS.items():
            levels, _ = form_levels(p.image, [shape_distortion(x, c, **kw) for c in cands], ladder)
            for k in args.levels:
                y = levels[k - 1].image
                dmap = np.sqrt(((y.astype(float) - p.image.astype(float)) ** 2).mean(-1))
                bands = truth.band_power_ratios(p.image, y)
                r = rows[name]
                r["ssimulacra2"].append(scorer.score(p.image, y))
                r["chroma_share"].append(truth.chroma_share(p.image, y) or 0.0)
                r["mean_shift"].append(float(np.abs(truth.mean_shift(p.image, y)).max()))
                r["spearman"].append(truth.masking(p.image, dmap)["spearman"])
                r["p_1/8-1/4"].append(bands[2])
                r["p_1/4-1/2"].append(bands[3])
    print(f"{len(picked)} photographs ({', '.join(s.path.name for s in picked)}), levels {args.levels}\n")
    print("| shaping | SSIMULACRA 2 mean (min) | chroma share | max mean shift /255 | Spearman(|d|, 7x7 std) "
          "| P 1/8-1/4 | P 1/4-1/2 |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for name, r in rows.items():
        summary[name] = {k: float(np.mean(v)) for k, v in r.items()}
        summary[name]["ssimulacra2_min"] = float(np.min(r["ssimulacra2"]))
        s = summary[name]
        print(f"| {name} | {s['ssimulacra2']:.1f} ({s['ssimulacra2_min']:.1f}) | {s['chroma_share']:.1%} | "
              f"{s['mean_shift']:.3f} | {s['spearman']:.3f} | {s['p_1/8-1/4']:.3f} | {s['p_1/4-1/2']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
