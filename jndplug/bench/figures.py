"""Figures of the benchmarks: perception-distortion plane, rate-distortion curves, side-by-side crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jndplug.metrics import METRICS
from jndplug.viz import save_figure

MARKERS = "osD^vP*X"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    save_figure(fig, path, dpi=120)
    return path


def perception_distortion(points: list[dict], path: Path, x: str = "niqe", y: str = "psnr_y") -> Path:
    """One point per run: ``x`` (perceptual index) against ``y`` (fidelity); colour = target, marker = group.

    ``points``: dicts with ``group`` (architecture or model), ``target`` and the metric values.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    groups = sorted({p["group"] for p in points})
    targets = list(dict.fromkeys(p["target"] for p in points))
    fixed = {"gt": "black", "bicubic": "grey"}  # the baseline and a no-training reference point
    colours = {t: fixed.get(t, plt.cm.viridis(i / max(1, len(targets) - 1))) for i, t in enumerate(targets)}
    for gi, g in enumerate(groups):
        for t in targets:
            sel = [p for p in points if p["group"] == g and p["target"] == t and p.get(x) is not None
                   and p.get(y) is not None]
            if sel:
                ax.scatter([p[x] for p in sel], [p[y] for p in sel], marker=MARKERS[gi % len(MARKERS)],
                           color=colours[t], label=g if g == t else f"{g} / {t}", alpha=0.8)
    ax.set(xlabel=f"{METRICS[x].label} ({'higher' if METRICS[x].higher_is_better else 'lower'} is better)",
           ylabel=f"{METRICS[y].label} ({'higher' if METRICS[y].higher_is_better else 'lower'} is better)",
           title="perception-distortion plane (one point per run)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def rd_curves(curves: dict[str, list[dict]], metrics: list[str], path: Path) -> Path:
    """Bits per pixel against each metric; ``curves``: label -> points with ``bpp`` and metric values."""
    plt = _plt()
    n = len(metrics)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for i, (label, points) in enumerate(curves.items()):
            pts = sorted((p for p in points if p.get(metric) is not None), key=lambda p: p["bpp"])
            if pts:
                ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], marker=MARKERS[i % len(MARKERS)],
                        linestyle="--" if "jnd" in label else "-", label=label)
        info = METRICS[metric]
        ax.set(xlabel="bits per pixel (real bitstreams)",
               ylabel=f"{info.label} ({'higher' if info.higher_is_better else 'lower'} is better)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no values (see the table's notes)", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def detail_window(gt: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` window with the most gradient energy in the ground truth.

    Chosen from the ground truth alone, before looking at any output, so the crop cannot be
    picked to flatter one method.
    """
    g = gt.astype(np.float64).mean(axis=2)
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    h, w = energy.shape
    size = min(size, h, w)
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    top, left = np.unravel_index(np.argmax(sums), sums.shape)
    return int(top), int(left)


def crops(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], size: int, path: Path) -> Path:
    """Side-by-side crops of the same region: one row per image, ``(title, array)`` per column.

    The region comes from the first column (the ground truth) through :func:`detail_window`.
    """
    plt = _plt()
    cols = max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.4 * len(rows)), squeeze=False)
    for r, (name, panels) in enumerate(rows):
        top, left = detail_window(panels[0][1], size)
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(panels):
                title, img = panels[c]
                ax.imshow(img[top:top + size, left:left + size], interpolation="nearest")
                ax.set_title(f"{name}\n{title}" if c == 0 else title, fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def band_ratios(rows: list[dict], path: Path) -> Path:
    """Luma band power ratios (JND image / original) per estimator, from the truth report's rows."""
    from jndplug.bench.truth import BAND_NAMES

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.axhline(1.0, color="grey", linewidth=1)
    for i, r in enumerate(rows):
        pts = [(k, v) for k, v in enumerate(r["summary"]["band_ratios"]) if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker=MARKERS[i % len(MARKERS)], label=r["label"])
    ax.set_xticks(range(len(BAND_NAMES)), BAND_NAMES)
    ax.set(xlabel="radial frequency band (cycles per pixel)", ylabel="luma power, JND image / original",
           title="below 1: the JND image removes detail; above 1: it adds detail")
    ax.grid(alpha=0.3)
    if ax.lines[1:]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
