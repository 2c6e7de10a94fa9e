"""A folder of outputs against a folder of references: file matching, the table, its Markdown."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from jndplug.imageio import atomic_write, list_images, read_image
from jndplug.metrics.basic import MetricsError
from jndplug.metrics.names import DEFAULT_METRICS, METRICS
from jndplug.metrics.suite import MetricSuite

FORMAT = "jndplug-metrics/1"


def match_files(outputs: str | os.PathLike, references: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """(name, output, reference) for every reference, matched by relative path without extension.

    Two files are simply paired.
    """
    out_root, ref_root = Path(outputs), Path(references)
    if out_root.is_file() and ref_root.is_file():
        return [(ref_root.stem, out_root, ref_root)]
    refs = list_images(ref_root)
    if not refs:
        raise MetricsError(f"no reference images under {ref_root}")
    outs = {p.relative_to(out_root).with_suffix("").as_posix(): p for p in list_images(out_root)} \
        if out_root.is_dir() else {}
    pairs, missing = [], []
    for ref in refs:
        key = ref.relative_to(ref_root).with_suffix("").as_posix() if ref_root.is_dir() else ref.stem
        if key in outs:
            pairs.append((key, outs[key], ref))
        else:
            missing.append(key)
    if missing:
        raise MetricsError(f"{len(missing)} reference image(s) have no output in {out_root} "
                           f"(e.g. {', '.join(missing[:3])}); outputs are matched by relative path without extension")
    return pairs


def evaluate_folders(outputs, references, metrics=DEFAULT_METRICS, crop_border: int = 0,
                     suite: MetricSuite | None = None, progress: bool = False, **suite_kwargs) -> dict:
    """Score every reference's output; returns the table (per image, means, skipped metrics)."""
    suite = suite or MetricSuite(metrics, crop_border=crop_border, **suite_kwargs)
    pairs = match_files(outputs, references)
    rows, notes = [], {}
    iterator = pairs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pairs, desc="metrics", unit="img")
    for name, out_path, ref_path in iterator:
        values, why = suite(read_image(out_path), read_image(ref_path))
        rows.append({"file": name, **values})
        for metric, reason in why.items():
            notes.setdefault(metric, f"{reason} (e.g. {name})")
    return {"format": FORMAT, "outputs": str(outputs), "references": str(references),
            "crop_border": suite.crop_border, "metrics": suite.names,
            "higher_is_better": {m: METRICS[m].higher_is_better for m in suite.names},
            "mean": mean_of(rows, suite.names), "skipped": dict(suite.skipped), "notes": notes, "images": rows}


def mean_of(rows: list[dict], names) -> dict:
    """Mean per metric; None when any image lacks it (a mean over some images would be biased)."""
    means = {}
    for name in names:
        values = [r.get(name) for r in rows]
        means[name] = None if not values or any(v is None for v in values) else float(np.mean(values))
    return means


def fmt(value, name: str | None = None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    digits = 2 if name in ("psnr", "psnr_y", "cvvdp", "ssimulacra2", "niqe") else 4
    return f"{value:.{digits}f}"


def to_markdown(table: dict) -> str:
    names = table["metrics"]
    head = "| image | " + " | ".join(f"{METRICS[n].label} {'↑' if METRICS[n].higher_is_better else '↓'}"
                                      for n in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for row in table["images"]:
        lines.append(f"| {row['file']} | " + " | ".join(fmt(row.get(n), n) for n in names) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{fmt(table['mean'].get(n), n)}**" for n in names) + " |")
    lines += [""] + skipped_lines(table)
    return "\n".join(lines).rstrip() + "\n"


def skipped_lines(table: dict) -> list[str]:
    lines = [f"- {n}: skipped: {reason}" for n, reason in table.get("skipped", {}).items()]
    lines += [f"- {n}: n/a for some images: {reason}" for n, reason in table.get("notes", {}).items()]
    return lines


def write_table(table: dict, json_path=None, md_path=None) -> None:
    if json_path:
        with atomic_write(json_path, "w") as f:
            json.dump(table, f, indent=1)
    if md_path:
        with atomic_write(md_path, "w") as f:
            f.write(to_markdown(table))
