"""The report of ``bench codec``: tables, BD-rates against ``gt``, the curves and crops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jndplug.bench.common import summarize
from jndplug.bench.recipe import run_name
from jndplug.bench.settings import CodecSettings as Settings
from jndplug.imageio import atomic_write, read_image
from jndplug.metrics import METRICS
from jndplug.pixels import centre_crop

MODEL = "bmshj2018-hyperprior"
RD_PLOTS = ("psnr_y", "stlpips", "ssimulacra2")


def bd_rate(base: list[tuple[float, float]], test: list[tuple[float, float]], higher_is_better: bool = True):
    """Average bitrate difference (%) of ``test`` against ``base`` at equal quality, or (None, reason).

    Points are (bpp, quality). Log-rate is interpolated piecewise-linearly in quality over the
    range both curves cover: with two points per curve this is what the data allow (Bjøntegaard's
    cubic fit needs four). Negative: ``test`` needs fewer bits for the same quality.
    """
    curves = []
    for pts in (base, test):
        pts = [(r, q if higher_is_better else -q) for r, q in pts if r and q is not None and math.isfinite(q)]
        if len(pts) < 2:
            return None, "fewer than two rate points"
        pts.sort(key=lambda p: p[1])
        rates = [p[0] for p in pts]
        qs = [p[1] for p in pts]
        if any(b <= a for a, b in zip(qs, qs[1:])) or any(b <= a for a, b in zip(rates, rates[1:])):
            return None, "quality does not rise with rate on one of the curves"
        curves.append((np.array(qs), np.log(rates)))
    lo = max(c[0][0] for c in curves)
    hi = min(c[0][-1] for c in curves)
    if hi <= lo:
        return None, "the curves share no quality range"
    grid = np.linspace(lo, hi, 201)
    diff = np.interp(grid, *curves[1]) - np.interp(grid, *curves[0])
    mean_log_ratio = float((diff[:-1] + diff[1:]).mean() / 2)  # trapezoid rule on the uniform grid
    return (math.exp(mean_log_ratio) - 1) * 100, None


def report(results: dict, curves: dict, adapted: dict, names: list[str], s: Settings) -> dict:
    lines = [f"{MODEL} with {s.channels[0]}/{s.channels[1]} channels; pretrained {s.pretrain_steps} steps at "
             f"lambda {s.pretrain_lambda}, adapted {s.adapt_steps} steps per lambda, fine-tuned "
             f"{s.steps} steps per target (seeds {' '.join(map(str, s.seeds))}); evaluated with real entropy "
             f"coding on {len(next(iter(results.values()))['per_image'])} images of {s.eval}.\n"]
    pre = curves["pretrain"]
    lines.append(f"Pretraining: validation PSNR {pre[-1]['psnr']:.2f} dB at {pre[-1]['bpp']:.3f} bpp (estimated) "
                 f"after {pre[-1]['step']} steps; over the last fifth of the curve PSNR changed "
                 f"{pre[-1]['psnr'] - pre[max(0, int(0.8 * len(pre)) - 1)]['psnr']:+.2f} dB and bpp "
                 f"{pre[-1]['bpp'] - pre[max(0, int(0.8 * len(pre)) - 1)]['bpp']:+.3f}.\n")
    pts = [(lm, adapted[lm][-1]) for lm in sorted(s.lambdas)]
    mono = all(b["bpp"] > a["bpp"] and b["psnr"] > a["psnr"] for (_, a), (_, b) in zip(pts, pts[1:]))
    lines.append("Adapted codecs (validation): " + "; ".join(f"lambda {lm}: {v['psnr']:.2f} dB at {v['bpp']:.3f} bpp"
                                                            for lm, v in pts)
                 + f". bpp and PSNR rise monotonically with lambda: {'yes' if mono else 'NO'}.\n")
    head = "| lambda | target | bpp | " + " | ".join(names) + " |"
    lines += [head, "|" + "---|" * (len(names) + 3)]
    table = {}
    for lm in sorted(s.lambdas):
        for target in s.targets:
            rs = [results[(lm, target, s)]["mean"] for s in s.seeds]
            entry = {k: summarize([r[k] for r in rs]) for k in ["bpp", *names]}
            table[f"{lm}/{target}"] = entry
            lines.append(f"| {lm} | {target} | {entry['bpp']['mean']:.4f} | "
                         + " | ".join(f"{entry[k]['mean']:.4f}" for k in names) + " |")
    lines += ["", "BD-rate against `gt` (%, negative: fewer bits for the same score; log-rate interpolated "
                  "piecewise-linearly over the shared range):", "",
              "| target | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    bd = {}
    for target in s.targets:
        if target == "gt":
            continue
        bd[target] = {}
        for k in names:
            base = [(table[f"{lm}/gt"]["bpp"]["mean"], table[f"{lm}/gt"][k]["mean"]) for lm in s.lambdas]
            test = [(table[f"{lm}/{target}"]["bpp"]["mean"], table[f"{lm}/{target}"][k]["mean"]) for lm in s.lambdas]
            value, why = bd_rate(base, test, higher_is_better=METRICS[k].higher_is_better)
            bd[target][k] = {"bd_rate": value, "why_not": why}
        lines.append(f"| {target} | " + " | ".join(f"{bd[target][k]['bd_rate']:+.1f}" if bd[target][k]["bd_rate"]
                                                  is not None else "n/a" for k in names) + " |")
    notes = sorted({f"{t} {k}: {v['why_not']}" for t, d in bd.items() for k, v in d.items() if v["why_not"]})
    if notes:
        lines += ["", "n/a: " + "; ".join(notes)]
    return {"table": table, "bd_rate": bd, "monotone": mono, "markdown": "\n".join(lines) + "\n"}


def plots(out: Path, curves: dict, table: dict, names: list[str], s: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for label, c in curves.items():
        steps = [p["step"] for p in c]
        axes[0].plot(steps, [p["psnr"] for p in c], "o-", ms=2, label=label)
        axes[1].plot(steps, [p["bpp"] for p in c], "o-", ms=2, label=label)
    axes[0].set_ylabel("validation PSNR (dB)")
    axes[1].set_ylabel("validation bpp (estimated)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{MODEL} training against the originals")
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    plt.close(fig)
    shown = [k for k in RD_PLOTS if k in names]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 3.6), squeeze=False)
    for ax, k in zip(axes[0], shown):
        for target in s.targets:
            pts = sorted((table[f"{lm}/{target}"]["bpp"]["mean"], table[f"{lm}/{target}"][k]["mean"])
                         for lm in s.lambdas)
            ax.plot(*zip(*pts), "o-", ms=3, label=target)
        ax.set_xlabel("bpp")
        ax.set_ylabel(k + (" (higher is better)" if METRICS[k].higher_is_better else " (lower is better)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rd.png", dpi=120)
    plt.close(fig)


def crops(path: Path, evals: list, s: Settings, side: int = 96) -> None:
    """Original and every target's decoded image (seed 0) at the middle lambda, centre crops at 2x."""
    from PIL import Image

    from jndplug.bench.figures import with_column_titles

    lm = sorted(s.lambdas)[len(s.lambdas) // 2]
    rows = []
    for file, gt in evals[:3]:
        runs = [Path(s.out) / "runs" / run_name(f"l{lm:g}", target=t, seed=s.seeds[0]) for t in s.targets]
        tiles = [gt] + [read_image(run / "decoded" / f"{file}.png") for run in runs]
        rows.append(np.concatenate([centre_crop(t, side) for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    grid = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST)
    with atomic_write(path) as f:
        with_column_titles(grid, ["original", *s.targets]).save(f, format="PNG")
