"""Reproduce the simulated-observer validation in the study README.

    python -m jndplug.study.validate OUT_DIR --src DIR [DIR ...] [--images N] [--observers 20] [--seed 0]

Builds two small nine-level datasets from photographs of the ``--src`` folders, taken from them in
turn (read in place, written under OUT_DIR; the published run used the BSDS500 and Urban100
training photos): JPEG at decreasing quality, and additive Gaussian noise at three
overall strengths. Runs the simulated observers (ColorVideoVDP) through the real protocol,
aggregates, fits the FLIP mapping against ColorVideoVDP on the JPEG set, and writes
``validation.json`` and ``jnd_vs_strength.png``. Nothing here is tuned to the results.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from jndplug.data.layout import N_LEVELS, level_file, original_file
from jndplug.imageio import atomic_write, read_image, to_8bit, write_image
from jndplug.viz import save_figure

JPEG_QF = (95, 90, 85, 80, 70, 60, 50, 40, 30)  # level 1..9
NOISE_STEP = 1.4  # level k has noise sd base * 1.4**(k-1) (8-bit steps)
NOISE_BASES = (0.5, 1.0, 2.0)
def _pick_images(sources: list[Path], n: int) -> list[Path]:
    from jndplug.errors import JNDPlugValueError
    from jndplug.imageio import list_images

    per = [list_images(s) for s in sources]
    if not all(per):
        raise JNDPlugValueError("--src: every folder must hold photographs; "
                                f"{', '.join(str(s) for s, p in zip(sources, per) if not p)} has none")
    out = []
    for i in range(n):
        src = per[i % len(per)]
        out.append(src[i // len(per)])
    return out


def _jpeg(a: np.ndarray, qf: int) -> np.ndarray:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=qf)
    return np.asarray(Image.open(b).convert("RGB"))


def _build(root: Path, photos: list[Path], make_level) -> None:
    for p in photos:
        img = read_image(p)
        img = to_8bit(img)
        iid = p.stem
        write_image(original_file(root, iid), img)
        for lvl in range(1, N_LEVELS + 1):
            out = level_file(root, iid, lvl)
            if not out.is_file():
                write_image(out, make_level(img, lvl, iid))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("out", type=Path)
    ap.add_argument("--src", type=Path, nargs="+", metavar="DIR", help="folders of photographs, used in turn")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--observers", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aic3-metrics", type=Path, default=None, metavar="CSV",
                    help="JPEG-AIC_metric_scores.csv of github.com/jpeg-aic/JPEG-AIC-4-datasets: compare "
                         "its ColorVideoVDP column with its human JND-scale scores")
    args = ap.parse_args(argv)
    if args.aic3_metrics:
        report = aic3_comparison(args.aic3_metrics)
        with atomic_write(args.out / "aic3_comparison.json", "w") as f:
            json.dump(report, f, indent=1)
        print(json.dumps(report, indent=1))
        return 0

    from jndplug.study import JNDDataset, aggregate
    from jndplug.study.observers import PredictionCache, simulate
    from jndplug.study.visibility import CVVDP, FLIP

    if not args.src:
        ap.error("--src DIR [DIR ...] is required (the photographs to build the two datasets from)")
    photos = _pick_images(args.src, args.images)
    cvvdp = CVVDP()
    report: dict = {"images": [str(p) for p in photos], "observers": args.observers, "seed": args.seed,
                    "model": cvvdp.key, "ppd": cvvdp.ppd}

    # JPEG: JND in quality-factor terms
    jroot = args.out / "jpeg"
    _build(jroot, photos, lambda a, lvl, iid: _jpeg(a, JPEG_QF[lvl - 1]))
    ds = JNDDataset(jroot)
    t0 = time.time()
    cache = PredictionCache(ds, cvvdp)
    d = {i: [cache.distance(i, lvl) for lvl in range(1, 10)] for i in ds.ids}
    n_eval = cache.computed
    report["cvvdp_seconds_per_evaluation"] = (time.time() - t0) / max(1, n_eval) if n_eval else None
    labels = aggregate(simulate(ds, cvvdp, args.observers, args.seed, progress=False))
    report["jpeg"] = {
        "levels_qf": JPEG_QF,
        "per_image": {i: {"jod_distance": [round(x, 4) for x in d[i]],
                          "jnd_level": e["jnd_level"], "jnd_mean": e["jnd_mean"],
                          "qf_at_jnd": JPEG_QF[e["jnd_level"] - 1] if e["jnd_level"] else None,
                          "sur": e["sur"], "flags": e["flags"]}
                      for i, e in labels["images"].items()},
        "rejected": labels["screening"]["rejected"],
    }

    # FLIP against ColorVideoVDP on the same JPEG levels: least squares of log d on log e
    flip = FLIP()
    e = np.array([[flip.mean_error(read_image(ds.original_path(i)), read_image(ds.level_path(i, lvl)))
                   for lvl in range(1, 10)] for i in ds.ids])
    dv = np.array([d[i] for i in ds.ids])
    ok = dv > 0.02
    gamma, c = np.polyfit(np.log(e[ok]), np.log(dv[ok]), 1)
    report["flip_fit"] = {"gamma": float(gamma), "e50": float(np.exp(-c / gamma)),
                          "spearman_flip_vs_cvvdp": float(_spearman(e.ravel(), dv.ravel())),
                          "used": {"e50": flip.e50, "gamma": flip.gamma}}

    # noise at three overall strengths: JND should move by log(2)/log(1.4) = 2.06 levels per doubling
    noise = {}
    for base in NOISE_BASES:
        root = args.out / f"noise_{base:g}"

        def make(a, lvl, iid, base=base):
            rng = np.random.default_rng(zlib.crc32(iid.encode()))
            sd = base * NOISE_STEP ** (lvl - 1)
            return np.clip(np.rint(a + sd * rng.standard_normal(a.shape)), 0, 255).astype(np.uint8)

        _build(root, photos[: max(2, args.images // 2)], make)
        lab = aggregate(simulate(JNDDataset(root), cvvdp, args.observers, args.seed, progress=False))
        noise[f"{base:g}"] = {i: e["jnd_mean"] for i, e in lab["images"].items()}
    report["noise"] = {"step": NOISE_STEP, "bases": NOISE_BASES, "jnd_mean": noise}

    with atomic_write(args.out / "validation.json", "w") as f:
        json.dump(report, f, indent=1)
    _plot(report, args.out / "jnd_vs_strength.png")
    print(json.dumps({k: report[k] for k in ("cvvdp_seconds_per_evaluation", "flip_fit")}, indent=1))
    return 0


def aic3_comparison(path: Path) -> dict:
    """Human JND-scale distortion (AIC-3 boosted triplet comparisons) against ColorVideoVDP's JOD.

    Uses only that file's own columns: ``distortion`` (human, JND units) and ``CVVDP`` (JOD,
    computed by the dataset's authors with their display settings).
    """
    import csv

    from scipy.stats import pearsonr

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    h = np.array([float(r["distortion"]) for r in rows])
    d = 10 - np.array([float(r["CVVDP"]) for r in rows])
    codec = np.array([int(r["codec"]) for r in rows])
    near = h <= 1.5
    at1 = (h > 0.8) & (h < 1.2)
    return {
        "n_stimuli": len(rows), "n_sources": len({r["img_num"] for r in rows}),
        "spearman": float(_spearman(h, d)), "pearson": float(pearsonr(h, d).statistic),
        "spearman_per_codec": {int(c): float(_spearman(h[codec == c], d[codec == c])) for c in np.unique(codec)},
        "human_jnd_per_cvvdp_jod_near_threshold": float(np.sum(h[near] * d[near]) / np.sum(d[near] ** 2)),
        "cvvdp_jod_at_human_1jnd": {"median": float(np.median(d[at1])),
                                    "iqr": [float(x) for x in np.percentile(d[at1], [25, 75])],
                                    "n": int(at1.sum())},
    }


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return spearmanr(a, b).statistic


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for base, per in report["noise"]["jnd_mean"].items():
        ax.scatter([float(base)] * len(per), list(per.values()), alpha=0.6)
        ax.plot([float(base)], [np.mean(list(per.values()))], "k_", ms=25)
    ax.set(xscale="log", xlabel="noise base sd (8-bit steps; level k: base x 1.4^(k-1))",
           ylabel="mean simulated JND level", title="JND vs distortion strength (noise)")
    ax.grid(alpha=0.3)
    ax = axes[1]
    qf = report["jpeg"]["levels_qf"]
    for i, e in report["jpeg"]["per_image"].items():
        ax.plot(qf, e["sur"], alpha=0.6)
    ax.set(xlabel="JPEG quality factor", ylabel="satisfied-user ratio", xlim=(97, 28),
           title="simulated SUR curves, JPEG")
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    raise SystemExit(main())
