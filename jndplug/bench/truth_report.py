"""The ``truth`` part of ``jndplug bench estimator``: are an estimator's JND images below visibility?

For each estimator, on a folder of photos: visibility metrics of its 8-bit JND images against the
originals and what the distortion is made of (the measures of ``jndplug.bench.truth``), per image
and averaged; results land in ``truth/LABEL/result.json`` and a rerun skips those already done.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import jndplug
from jndplug.bench import truth as measures
from jndplug.bench.common import BenchError, notes_lines, resume_or_run, spread
from jndplug.bench.settings import EstimatorSettings as Settings
from jndplug.imageio import array_to_tensor, list_images, read_image, tensor_to_array, to_8bit
from jndplug.metrics import fmt, mean_of, psnr
from jndplug.spec import TargetSpec, TargetSpecError


def truth_images(s: Settings) -> list[tuple[str, Path]]:
    """(name relative to --images, path) of the chosen photos, with the truth options checked."""
    if s.limit is not None and s.limit <= 0:
        raise BenchError(f"--limit {s.limit} must be > 0")
    if s.max_side is not None and s.max_side < 16:
        raise BenchError(f"--max-side {s.max_side} must be >= 16 (JNDTarget's smallest image side)")
    try:  # the target settings are TargetSpec's to check
        TargetSpec(strength=s.strength, sur=s.sur, kind="jnd")
    except TargetSpecError as exc:
        raise BenchError(f"--{exc}") from None
    root = Path(s.images)
    if not root.exists():
        raise BenchError(f"--images {root}: no such folder")
    files = list_images(root)
    if not files:
        raise BenchError(f"--images {root}: no image files found (searched recursively)")
    files = spread(files, s.limit)
    return [(p.relative_to(root).as_posix() if root.is_dir() else p.name, p) for p in files]


def load_photo(path: Path, max_side: int | None) -> np.ndarray:
    """An 8-bit HxWx3 photo, downscaled to ``max_side`` if larger: what a user would feed and write."""
    from PIL import Image

    img = to_8bit(read_image(path))
    h, w = img.shape[:2]
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = np.asarray(Image.fromarray(img).resize(size, Image.LANCZOS))
    return img


def image_truth(target, original: np.ndarray, suite) -> tuple[dict, dict]:
    """One photo's truth values (distortions in /255) and, per metric, why it is None if it is."""
    x = array_to_tensor(original)
    jnd = tensor_to_array(target(x))  # rounded to 8 bits, as a user would write it
    jnd_map = target.jnd_map(x)[0].numpy()
    values, why = suite(jnd, original)
    xf, yf = original / 255.0, jnd / 255.0
    shift = measures.mean_shift(xf, yf) * 255
    mask = measures.masking(xf, jnd_map)
    return {"width": original.shape[1], "height": original.shape[0], **values, "psnr": psnr(jnd, original),
            "mean_shift_rgb": [float(v) for v in shift], "max_mean_shift": float(np.abs(shift).max()),
            "chroma_share": measures.chroma_share(xf, yf), "mean_shift_share": measures.mean_shift_share(xf, yf),
            "band_ratios": measures.band_power_ratios(xf, yf), "spearman": mask["spearman"],
            "flat": mask["flat"] * 255, "textured": mask["textured"] * 255}, why


TRUTH_SCALARS = ("ssimulacra2", "flip", "cvvdp", "psnr", "max_mean_shift", "chroma_share", "mean_shift_share",
                 "spearman", "flat", "textured")


def _labels(specs: list[str]) -> list[str]:
    from jndplug.weights import PRETRAINED

    labels = []
    for spec in specs:
        base = spec if spec in PRETRAINED else Path(spec).stem
        base = re.sub(r"[^A-Za-z0-9._-]", "_", base) or "estimator"
        label, k = base, 2
        while label in labels:
            label, k = f"{base}-{k}", k + 1
        labels.append(label)
    return labels


def truth(specs: list[str], paths: list[Path], images: list[tuple[str, Path]], s: Settings, device,
          out: Path) -> list[dict]:
    from tqdm import tqdm

    from jndplug.metrics import MetricSuite
    from jndplug.weights import estimator_fingerprint

    suites: list = []  # the metric suite, made once and only if some estimator needs scoring

    def score(label: str, spec: str, path: Path, model, sur, settings: dict) -> dict:
        if not suites:
            suites.append(MetricSuite(s.metrics, device=device))
        suite = suites[0]
        target = jndplug.JNDTarget(model, strength=s.strength, sur=sur, device=device, kind="jnd")
        per_image, notes = [], {}
        for name, file in tqdm(images, desc=f"truth {label}", unit="img"):
            try:
                values, why = image_truth(target, load_photo(file, s.max_side), suite)
            except ValueError as exc:
                raise BenchError(f"{file}: {exc}") from None
            per_image.append({"file": name, **values})
            for metric, reason in why.items():
                notes.setdefault(metric, f"{reason} (e.g. {name})")
        summary = mean_of(per_image, TRUTH_SCALARS)
        summary["ssimulacra2_min"] = _extreme(per_image, "ssimulacra2", min)
        summary["max_mean_shift_max"] = _extreme(per_image, "max_mean_shift", max)
        bands = list(zip(*[r["band_ratios"] for r in per_image]))
        summary["band_ratios"] = [None if any(v is None for v in b) else float(np.mean(b)) for b in bands]
        return {"label": label, "weights": spec, "file": str(path), "arch": model.arch_name, "settings": settings,
                "sur_effective": target.effective_sur, "images": len(per_image), "summary": summary,
                "skipped": dict(suite.skipped), "notes": notes, "per_image": per_image}

    rows = []
    for label, spec, path in zip(_labels(specs), specs, paths):
        model = jndplug.load_estimator(path)
        sur = s.sur if model.accepts_sur else None
        settings = {"fingerprint": estimator_fingerprint(model),
                    "images": str(Path(s.images).resolve()), "files": [n for n, _ in images],
                    "max_side": s.max_side, "sur": sur, "strength": s.strength, "metrics": list(s.metrics)}
        rows.append(resume_or_run(out / "truth" / label, settings, f"truth {label}",
                                  lambda: score(label, spec, path, model, sur, settings)))
    return rows


def _extreme(rows: list[dict], key: str, pick) -> float | None:
    values = [r.get(key) for r in rows]
    return None if not values or any(v is None for v in values) else float(pick(values))


def truth_markdown(rows: list[dict]) -> list[str]:
    bands = " | ".join(f"P {b}" for b in measures.BAND_NAMES)
    lines = ["JND images against the originals (8-bit; distortions in /255; P = luma power of the JND image over the "
             "original's in a band of cycles/pixel; docs/bench.md defines every column):", "",
             "| estimator | arch | SUR | strength | images | SSIMULACRA2 ↑ (min) | FLIP ↓ | CVVDP ↑ | PSNR | "
             f"max mean shift (worst) | chroma share | mean-shift share | {bands} | Spearman(map, 7x7 std) | "
             "mean d flat / textured |", "|" + "---|" * 17]
    for r in rows:
        s, st = r["summary"], r["settings"]
        sur = "n/a" if r["sur_effective"] is None else f"{r['sur_effective']:g}"
        lines.append(f"| {r['label']} | {r['arch']} | {sur} | {st['strength']:g} | {r['images']} | "
                     f"{fmt(s['ssimulacra2'], 'ssimulacra2')} ({fmt(s['ssimulacra2_min'], 'ssimulacra2')}) | "
                     f"{fmt(s['flip'], 'flip')} | {fmt(s['cvvdp'], 'cvvdp')} | {fmt(s['psnr'], 'psnr')} | "
                     f"{_num(s['max_mean_shift'], 2)} ({_num(s['max_mean_shift_max'], 2)}) | "
                     f"{_pct(s['chroma_share'])} | {_pct(s['mean_shift_share'])} | "
                     + " | ".join(_num(v, 3) for v in s["band_ratios"])
                     + f" | {_num(s['spearman'], 3)} | {_num(s['flat'], 2)} / {_num(s['textured'], 2)} |")
    lines.append("")
    for r in rows:
        lines += [f"{r['label']}, per image:", "",
                  "| image | SSIMULACRA2 | FLIP | CVVDP | mean shift R, G, B | chroma share | mean-shift share | "
                  f"{bands} | Spearman | d flat / textured |", "|" + "---|" * 13]
        for i in r["per_image"]:
            lines.append(f"| {i['file']} | {fmt(i.get('ssimulacra2'), 'ssimulacra2')} | {fmt(i.get('flip'), 'flip')} | "
                         f"{fmt(i.get('cvvdp'), 'cvvdp')} | {', '.join(f'{v:+.2f}' for v in i['mean_shift_rgb'])} | "
                         f"{_pct(i['chroma_share'])} | {_pct(i['mean_shift_share'])} | "
                         + " | ".join(_num(v, 3) for v in i["band_ratios"])
                         + f" | {_num(i['spearman'], 3)} | {_num(i['flat'], 2)} / {_num(i['textured'], 2)} |")
        lines += [""] + notes_lines(r["skipped"], [r]) + [""]
    return lines


def _num(v, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"
