"""Pictures for people: JND heat maps and side-by-side comparisons."""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from jndplug.imageio import atomic_write, tensor_to_array


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 100, **savefig_kwargs) -> None:
    """Write a matplotlib figure as PNG, atomically (no half-written file), and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **savefig_kwargs)
    _pyplot().close(fig)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def heatmap_array(jnd_map: torch.Tensor, vmax: float | None = None) -> np.ndarray:
    """A ``[1,H,W]`` JND map as an HxWx3 uint8 colour image (inferno; vmax = 99th percentile)."""
    from matplotlib import colormaps

    m = jnd_map.detach().float().cpu().reshape(jnd_map.shape[-2:]).numpy()
    vmax = vmax or float(np.percentile(m, 99)) or 1e-6
    rgba = colormaps["inferno"](np.clip(m / vmax, 0, 1))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def save_comparison(path: str | os.PathLike, original: torch.Tensor, jnd: torch.Tensor,
                    jnd_map: torch.Tensor, title: str = "", bound_label: str = "the estimator's JND map") -> None:
    """Original | JND image | their difference x10 | JND map, plus a 1:1 crop of the busiest region.

    ``jnd_map`` is drawn as the JND bound (``JNDTarget.jnd_map``, named by ``bound_label``: the most
    the image may change unnoticed); the difference panel is the change the JND image makes. An
    infinite map (``bound=none``) is no bound: the panel then draws the change's magnitude.
    """
    plt = _pyplot()
    o, j = original.detach().float().cpu(), jnd.detach().float().cpu()
    diff = ((j - o) * 10 + 0.5).clamp(0, 1)  # x10 so sub-threshold changes can be seen
    m = jnd_map.detach().float().cpu().reshape(o.shape[-2:])
    if not bool(torch.isfinite(m).all()):
        m, panel = (j - o).pow(2).mean(0).sqrt(), "no bound; the change itself"
    else:
        panel = f"JND bound: {bound_label}"
    h, w = o.shape[-2:]
    c = min(128, h, w)
    # crop where the bound is largest: where the JND image may change the most
    pooled = torch.nn.functional.avg_pool2d(m[None, None], c, stride=max(1, c // 4))[0, 0]
    iy, ix = divmod(int(pooled.argmax()), pooled.shape[1])
    y0, x0 = min(iy * max(1, c // 4), h - c), min(ix * max(1, c // 4), w - c)
    panels = [
        (o, "original"), (j, "JND image"), (diff, "difference x10"), (None, panel),
        (o[:, y0:y0 + c, x0:x0 + c], "original, 1:1 crop"), (j[:, y0:y0 + c, x0:x0 + c], "JND, 1:1 crop"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8 * h / max(w, 1) + 1.2))
    for ax, (img, label) in zip(axes.flat, panels):
        if img is None:
            shown = ax.imshow(m.numpy() * 255, cmap="inferno")
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="RMS over channels (/255)")
        else:
            ax.imshow(tensor_to_array(img))
        ax.set_title(label)
        ax.axis("off")
    axes.flat[0].add_patch(plt.Rectangle((x0, y0), c, c, fill=False, edgecolor="cyan", lw=1.5))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
