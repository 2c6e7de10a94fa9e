"""The dataset's own records: ``records/<id>.json``, ``manifest.json`` and the end-of-run summary.

The image and level files themselves are placed by :mod:`jndplug.data.layout`.
"""

from __future__ import annotations

import json
import logging
import math
import platform
from pathlib import Path

import numpy as np
import torch

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import atomic_write

log = logging.getLogger("jndplug.datagen")

FORMAT = "jndplug-datagen/1"
MEASURE = ("MSE between the 8-bit level image and the 8-bit original over all pixels and RGB channels, "
            "reported as PSNR in dB (peak 255); levels are checked to have strictly decreasing PSNR")



def versions() -> dict:
    import PIL
    import pytorch_msssim
    import safetensors
    import timm

    import jndplug

    return {"jndplug": jndplug.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__, "pytorch_msssim": getattr(pytorch_msssim, "__version__", "unknown"),
            "numpy": np.__version__, "pillow": PIL.__version__, "safetensors": safetensors.__version__}


def write_json(path: Path, doc) -> None:
    with atomic_write(path, "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False, default=_json_default)
        f.write("\n")


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def finite(v: float | None, digits: int = 4):
    """JSON has no infinity: an identical level has PSNR null (documented)."""
    return None if v is None or not math.isfinite(v) else round(v, digits)


def read_settings(path: Path) -> dict | None:
    """The settings recorded in the manifest at ``path``, or None if there is none yet."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("settings")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise JNDPlugValueError(f"{path}: not a datagen manifest ({exc}); use a new output folder") from None


def load_records(out: Path) -> dict:
    records = {}
    folder = out / "records"
    if folder.is_dir():
        for p in sorted(folder.glob("*.json")):
            try:
                r = json.loads(p.read_text())
                records[r["id"]] = r
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("ignoring damaged record %s; the image will be rebuilt", p)
    return records


def complete(out: Path, record: dict, n_levels: int) -> bool:
    files = [record.get("original", ""), record.get("contact_sheet", "")] + [e.get("file", "") for e in record.get("levels", [])]
    return len(record.get("levels", [])) == n_levels and all(f and (out / f).is_file() for f in files)


def write_manifest(path: Path, base: dict, records: dict, skipped: list, summary: dict | None) -> None:
    doc = {**base, "images": [records[i] for i in sorted(records)], "skipped": skipped, "summary": summary}
    write_json(path, doc)


def run_summary(out: Path, records: dict, built: list, done_before: int, skipped: list, seconds: float) -> dict:
    all_recs = list(records.values())
    n_levels = max((len(r["levels"]) for r in all_recs), default=0)
    per_level = []
    for k in range(n_levels):
        # raw_*: the unshaped autoencoder output (absent from datasets built before shaping)
        vals = {m: [r["levels"][k][m] for r in all_recs if r["levels"][k].get(m) is not None]
                for m in ("psnr", "ssim", "ms_ssim", "raw_psnr", "raw_mean_shift")}
        per_level.append({"level": k + 1, **{f"{m}_mean": (round(float(np.mean(v)), 4) if v else None) for m, v in vals.items()},
                          "psnr_min": round(float(np.min(vals["psnr"])), 4) if vals["psnr"] else None,
                          "psnr_max": round(float(np.max(vals["psnr"])), 4) if vals["psnr"] else None})
    return {"out": str(out), "images": len(all_recs), "built": len(built), "already_done": done_before,
            "skipped": skipped, "reordered": sum(r["order"]["reordered"] for r in all_recs),
            "repaired": sum(bool(r["order"]["repairs"]) for r in all_recs),
            "not_monotonic": sorted(r["id"] for r in all_recs if not r["monotonic"]),
            "per_level": per_level, "seconds": round(seconds, 1)}


def format_summary(summary: dict) -> str:
    """The end-of-run summary as text, for the command line."""
    skipped = summary["skipped"]
    lines = [f"dataset {summary['out']}: {summary['images']} images "
             f"({summary['built']} built now, {summary['already_done']} already done), "
             f"{len(skipped)} sources skipped, {summary['seconds']:.0f} s",
             f"order: {summary['reordered']} images re-sorted, {summary['repaired']} repaired, "
             f"{len(summary['not_monotonic'])} not monotonic" +
             (f" ({', '.join(summary['not_monotonic'][:5])})" if summary["not_monotonic"] else "")]
    if summary["per_level"]:
        lines.append("level  PSNR mean [min, max]   SSIM    MS-SSIM  raw AE PSNR  raw AE mean shift /255")
        for e in summary["per_level"]:
            f = lambda v, d=4: "   -  " if v is None else f"{v:.{d}f}"  # noqa: E731
            lines.append(f"{e['level']:>5}  {f(e['psnr_mean'], 2):>6} [{f(e['psnr_min'], 2)}, {f(e['psnr_max'], 2)}]"
                         f"  {f(e['ssim_mean'])}  {f(e['ms_ssim_mean'])}  {f(e.get('raw_psnr_mean'), 2):>11}"
                         f"  {f(e.get('raw_mean_shift_mean'), 2):>8}")
    for s in skipped[:20]:
        lines.append(f"skipped {s['source']}: {s['reason']}")
    if len(skipped) > 20:
        lines.append(f"... and {len(skipped) - 20} more skipped (see manifest.json)")
    return "\n".join(lines)
