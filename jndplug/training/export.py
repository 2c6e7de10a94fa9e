"""What a training run leaves behind: logs and curves while it runs, metrics and the estimator file at the end."""

from __future__ import annotations

import csv
import datetime
import importlib.util
import json
from pathlib import Path

import torch

from jndplug.imageio import atomic_write
from jndplug.training.validation import detection_rates, validate
from jndplug.weights import save_estimator


def write_logs(out: Path, history: list[dict]) -> None:
    keys = sorted({k for h in history for k in h}, key=lambda k: (k != "step", k))
    with atomic_write(out / "log.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    with atomic_write(out / "log.json", "w") as f:
        json.dump(history, f, indent=1)
    if importlib.util.find_spec("matplotlib") is not None:  # the viz extra; log.csv holds the same numbers
        plot_curves(out / "curves.png", history)


def plot_curves(path: Path, history: list[dict]) -> None:
    from jndplug.viz import _pyplot, save_figure

    plt = _pyplot()
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(steps, [h["train_loss"] for h in history], marker=".")
    axes[0].set(xlabel="step", ylabel="training loss", title="training loss")
    if any("val_psnr" in h for h in history):
        vs = [h for h in history if "val_psnr" in h]
        axes[1].plot([h["step"] for h in vs], [h["val_psnr"] for h in vs], marker=".", label="PSNR vs JND label")
        axes[1].set(xlabel="step", ylabel="dB", title="validation")
        if any("val_level_within1" in h for h in vs):
            ax2 = axes[1].twinx()
            ax2.plot([h["step"] for h in vs], [h["val_level_exact"] for h in vs], "g--", label="level exact")
            ax2.plot([h["step"] for h in vs], [h["val_level_within1"] for h in vs], "r--", label="level within one")
            ax2.set_ylim(0, 1)
            ax2.set_ylabel("accuracy")
            ax2.legend(loc="lower right")
        axes[1].legend(loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)


def finish(model, out, cfg, data, train_recs, val_recs, cache, dev, measure, command, export,
            steps_run: int, stopped_early: bool, observer_model: str | None = None,
            export_dtype: torch.dtype | None = None) -> dict:
    from jndplug.weights import load_estimator

    best_path = out / "best.safetensors"
    final = model
    if best_path.is_file():
        final = load_estimator(best_path, map_location=dev)
    metrics = validate(final, val_recs, cache, cfg, dev, measure) if val_recs else {"summary": {}, "rows": []}
    detection = None
    if observer_model and val_recs:
        detection = detection_rates(final, val_recs, cache, cfg, dev, observer_model, seed=cfg["seed"])
        metrics["summary"].update({k: v for k, v in detection["summary"].items()})
    sizes = sorted({tuple(cache.get(r.original).shape[-2:]) for r in train_recs + val_recs})
    provenance = {
        "data": list(data),
        "label_source": sorted({r.source.split(":", 1)[0] for r in train_recs}),
        "train_images": len(train_recs),
        "val_images": len(val_recs),
        "image_sizes": [f"{w}x{h}" for h, w in sizes[:3]] + (["..."] if len(sizes) > 3 else []),
        "config": cfg,
        "steps_run": steps_run,
        "stopped_early": stopped_early,
        "validation": metrics["summary"],
        "command": command,
        "date": datetime.date.today().isoformat(),
    }
    with atomic_write(out / "metrics.json", "w") as f:
        json.dump({"validation": metrics["summary"], "per_image": metrics["rows"],
                   "detection_per_image": detection["rows"] if detection else [], "provenance": provenance}, f, indent=1)
    if export:
        save_estimator(final, export, provenance, dtype=export_dtype)
    return {"validation": metrics["summary"], "export": export}
