"""Figures of the benchmarks: the truth report's luma band power ratios, titled image grids."""

from __future__ import annotations

from pathlib import Path

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


def with_column_titles(grid, titles: list[str], height: int = 18):
    """The PIL image ``grid`` of equally wide columns, under a white band naming each column."""
    from PIL import Image, ImageDraw

    out = Image.new("RGB", (grid.width, grid.height + height), "white")
    out.paste(grid, (0, height))
    draw, width = ImageDraw.Draw(out), grid.width / len(titles)
    for i, title in enumerate(titles):
        draw.text(((i + 0.5) * width, height / 2), title, fill="black", anchor="mm")
    return out
