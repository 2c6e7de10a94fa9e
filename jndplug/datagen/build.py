"""The ``jndplug datagen`` pipeline: sources -> autoencoder family -> nine levels per image -> dataset.

Layout written under ``out``::

    originals/<id>.png              the 16:9, downscaled original
    distorted/<id>/<level>.png      levels 1..n, distortion increasing
    contact/<id>.png                original and all levels side by side, for people to inspect
    autoencoders/<name>.safetensors the trained family (reused by reruns and extensions)
    records/<id>.json               one image's manifest entry; written last, it marks the image done
    manifest.json                   settings, versions, autoencoders, every image, skipped sources

Resuming: an image whose record and files exist is not touched again; the manifest is rebuilt from
the records. A rerun must use the same output-defining settings (checked), but may add sources.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from jndplug.data.layout import level_file, original_file
from jndplug.datagen.autoencoder import AutoencoderSpec, default_family, load_autoencoder, save_autoencoder
from jndplug.datagen.levels import form_levels, is_monotonic, psnr_ladder
from jndplug.datagen.shaping import shape_distortion
from jndplug.datagen.recipes import FeatureNetwork, ms_ssim_score, ssim_score
from jndplug.datagen.photos import SkipImage, disambiguated_id, find_sources, image_id, prepare
from jndplug.datagen.training import train_autoencoder
from jndplug.imageio import atomic_write, sweep_stale_temps, to_tensor, write_image
from jndplug.pixels import mse_to_psnr

log = logging.getLogger("jndplug.datagen")

FORMAT = "jndplug-datagen/1"
LevelFn = Callable[[torch.Tensor, int], object]

# Settings that decide what the files contain: a rerun into the same folder must repeat them.
_FIXED_SETTINGS = ("size", "max_side", "min_side", "levels", "seed", "psnr_range", "calibrate",
                   "level_source", "patch", "batch", "train_images", "remove_mean", "masking", "chroma")
# what datasets built before shaping existed were made with, so they can still be resumed
_LEGACY = {"remove_mean": False, "masking": 0.0, "chroma": 1.0}


@dataclass
class BuildSettings:
    size: tuple[int, int] = (1920, 1080)
    max_side: int | None = None
    min_side: int = 160
    levels: int = 9
    seed: int = 0
    steps: int = 200
    feature_steps: int | None = None
    patch: int = 96
    batch: int = 8
    train_images: int = 64
    psnr_range: tuple[float, float] = (44.0, 22.0)
    calibrate: bool = True
    feature_weights: str | None = None
    use_stlpips: bool = True
    device: str = "cpu"
    limit: int | None = None
    level_source: str = "autoencoders"
    remove_mean: bool = True
    masking: float = 1.0
    chroma: float = 0.5

    def check(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be WIDTHxHEIGHT with positive sides, got {self.size}")
        if self.max_side is not None and self.max_side < 1:
            raise ValueError(f"max side must be positive, got {self.max_side}")
        if self.min_side < 1:
            raise ValueError(f"min side must be positive, got {self.min_side}")
        if not 1 <= self.levels <= 99:
            raise ValueError(f"levels must be 1..99, got {self.levels}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.masking < 0 or self.chroma < 0:
            raise ValueError(f"masking power and chroma factor must be >= 0, got {self.masking} and {self.chroma}")
        if self.steps < 0 or (self.feature_steps is not None and self.feature_steps < 0):
            raise ValueError("training steps must be >= 0")
        if self.patch < 8 or self.batch < 1 or self.train_images < 1:
            raise ValueError("patch must be >= 8, batch and train images >= 1")
        psnr_ladder(self.levels, *self.psnr_range)


def load_level_fn(spec: str) -> LevelFn:
    """Resolve ``module:function`` or ``path/to/file.py:function`` to the callable."""
    if ":" not in spec:
        raise ValueError(f"level function {spec!r}: expected module:function or file.py:function")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise FileNotFoundError(f"level function file not found: {path}")
            mod_spec = importlib.util.spec_from_file_location(f"jndplug_level_fn_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ImportError as exc:
        raise ValueError(f"level function {spec!r}: cannot import {where} ({exc})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"level function {spec!r}: {where} has no callable {name!r}")
    return fn


def _versions() -> dict:
    import PIL
    import pytorch_msssim
    import safetensors
    import timm

    import jndplug

    return {"jndplug": jndplug.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__, "pytorch_msssim": getattr(pytorch_msssim, "__version__", "unknown"),
            "numpy": np.__version__, "pillow": PIL.__version__, "safetensors": safetensors.__version__}


def _write_json(path: Path, doc) -> None:
    with atomic_write(path, "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False, default=_json_default)
        f.write("\n")


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(v: float | None, digits: int = 4):
    """JSON has no infinity: an identical level has PSNR null (documented)."""
    return None if v is None or not math.isfinite(v) else round(v, digits)


class _Family:
    """The trained autoencoders and the member behind each level."""

    def __init__(self, specs: list[AutoencoderSpec], out: Path, settings: BuildSettings, pool_fn, progress: bool):
        self.specs, self.models, self.entries = specs, [], []
        self.features_info = None
        features = None
        folder = out / "autoencoders"
        for spec in specs:
            path = folder / f"{spec.name}.safetensors"
            if path.is_file():
                model, info = load_autoencoder(path)
                if model.spec != spec:
                    raise ValueError(f"{path} was trained with a different spec ({model.spec.to_dict()}) "
                                     f"than this run asks for ({spec.to_dict()}); use a new output folder")
            else:
                if "feature" in spec.loss and features is None:
                    features = FeatureNetwork(settings.feature_weights, settings.use_stlpips).to(settings.device)
                    self.features_info = {"backbone": "timm vgg16 (relu1_2, relu2_2, relu3_3)", **features.source}
                pool = pool_fn()
                model, info = train_autoencoder(spec, pool, settings.seed, patch=settings.patch,
                                                batch=settings.batch, device=settings.device,
                                                features=features, progress=progress)
                info["feature_network"] = self.features_info if "feature" in spec.loss else None
                save_autoencoder(model, path, info)
            self.models.append(model.to(settings.device).eval())
            self.entries.append({"name": spec.name, "file": f"autoencoders/{spec.name}.safetensors",
                                 "spec": spec.to_dict(), "training": info})
        # which member makes which level: spread the family evenly over the levels
        self.member_of_level = [min(len(specs) - 1, (k * len(specs)) // settings.levels)
                                for k in range(settings.levels)]

    def candidates(self, x: torch.Tensor, device: str) -> list[torch.Tensor]:
        outs = {}
        with torch.inference_mode():
            xb = x.unsqueeze(0).to(device)
            for m in sorted(set(self.member_of_level)):
                outs[m] = self.models[m](xb)[0].clamp(0, 1).float().cpu()
        return [outs[m] for m in self.member_of_level]

    def describe(self, k: int) -> dict:
        spec = self.specs[self.member_of_level[k]]
        return {"autoencoder": spec.name, "loss_recipe": spec.loss}


def _callable_candidates(fn: LevelFn, name: str, x: torch.Tensor, n: int) -> list[torch.Tensor]:
    out = []
    for level in range(1, n + 1):
        y = fn(x.clone(), level)
        if not isinstance(y, torch.Tensor):
            try:
                y = to_tensor(y)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"level function {name} returned {type(y).__name__} for level {level}: {exc}") from None
        y = y.detach().float().cpu()
        if y.ndim == 4 and y.shape[0] == 1:
            y = y[0]
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(f"level function {name} returned shape {tuple(y.shape)} for level {level}; "
                             f"expected {tuple(x.shape)} like its input")
        if not torch.isfinite(y).all():
            raise ValueError(f"level function {name} returned NaN/Inf for level {level}")
        out.append(y.clamp(0, 1))
    return out


def contact_sheet(original: np.ndarray, levels: list[np.ndarray], psnrs: list[float], tile_width: int = 480) -> np.ndarray:
    """Original and levels in a grid of five columns, each labelled with its level and PSNR."""
    h, w = original.shape[:2]
    tw = min(tile_width, w)
    th = max(1, round(h * tw / w))
    label_h, cols = 16, 5
    tiles = [("original", original)] + [(f"level {k + 1}  {p:.1f} dB" if math.isfinite(p) else f"level {k + 1}", im)
                                        for k, (im, p) in enumerate(zip(levels, psnrs))]
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * tw, rows * (th + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (label, im) in enumerate(tiles):
        x0, y0 = (i % cols) * tw, (i // cols) * (th + label_h)
        sheet.paste(Image.fromarray(im).resize((tw, th), Image.LANCZOS), (x0, y0 + label_h))
        draw.text((x0 + 3, y0 + 2), label, fill=(0, 0, 0))
    return np.asarray(sheet)


def _subset(items: list, n: int | None) -> list:
    """``n`` items evenly spread over the list (every category keeps its share), or all."""
    if n is None or n >= len(items):
        return list(items)
    return [items[math.floor(i * len(items) / n)] for i in range(n)]


def build_dataset(src, out, *, settings: BuildSettings | None = None, family: list[AutoencoderSpec] | None = None,
                  level_fn: LevelFn | str | None = None, progress: bool = True, **overrides) -> dict:
    """Build (or resume, or extend) a CNN-oriented JND dataset; returns the end-of-run summary.

    ``src``: folder(s) of photographs. ``settings`` / keyword ``overrides``: see :class:`BuildSettings`.
    ``family``: autoencoder specs (default :func:`default_family`). ``level_fn``: instead of the
    autoencoders, a callable ``f(image, level) -> image`` (or ``"module:function"``) giving the
    candidate of each level from a float ``[3,H,W]`` tensor in [0,1]; see docs/datagen.md.
    """
    t0 = time.perf_counter()
    settings = dataclasses.replace(settings) if settings is not None else BuildSettings()
    for k, v in overrides.items():
        if not hasattr(settings, k):
            raise TypeError(f"build_dataset got an unknown setting {k!r}")
        setattr(settings, k, v)
    settings.size = tuple(settings.size)
    settings.psnr_range = tuple(settings.psnr_range)
    fn_name = None
    if level_fn is not None:
        fn_name = level_fn if isinstance(level_fn, str) else f"{level_fn.__module__}.{getattr(level_fn, '__qualname__', repr(level_fn))}"
        level_fn = load_level_fn(level_fn) if isinstance(level_fn, str) else level_fn
        settings.level_source = f"callable {fn_name}"
    settings.check()
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {settings.device!r} requested but CUDA is not available")
    roots = [src] if isinstance(src, (str, Path)) else list(src)
    if not roots:
        raise ValueError("no source folders given")
    out = Path(out)
    sources = _subset(find_sources(roots), settings.limit)
    if not sources:
        raise ValueError(f"no png/jpg/bmp/tif images under {', '.join(map(str, roots))}")
    specs = family if family is not None else default_family(settings.steps, settings.feature_steps)
    if level_fn is None and not specs:
        raise ValueError("the autoencoder family is empty")

    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    old_settings = None
    if manifest_path.is_file():
        try:
            old_settings = json.loads(manifest_path.read_text()).get("settings")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"{manifest_path}: not a datagen manifest ({exc}); use a new output folder") from None
    now = {k: _plain(getattr(settings, k)) for k in _FIXED_SETTINGS}
    records = _load_records(out)
    # the recorded settings bind a rerun only once something was made with them: a run that found
    # no usable source (or a level function that failed) must not block its corrected rerun
    made = bool(records) or any((out / "autoencoders").glob("*.safetensors"))
    if old_settings is not None and made:
        differ = [f"{k} (was {old_settings.get(k)!r}, now {now[k]!r})" for k in _FIXED_SETTINGS
                  if _plain(old_settings.get(k, _LEGACY.get(k))) != now[k]]
        if differ:
            raise ValueError(f"{out} was built with other settings: {'; '.join(differ)}. "
                             "Rerun with the same settings to resume or extend it, or use a new output folder")
    # a build is its folder's only writer (two at once are not supported), so any temporary file
    # here was left by a killed run
    sweep_stale_temps(out)

    ladder = psnr_ladder(settings.levels, *settings.psnr_range) if settings.calibrate else None
    base_doc = {"format": FORMAT, "settings": {**asdict(settings), **now}, "seed": settings.seed,
                "versions": _versions(), "distortion_measure": _MEASURE, "level_psnr_targets": ladder}
    _write_manifest(manifest_path, base_doc, records, [], None)

    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    skipped, built, done_before, summary = [], [], 0, None
    try:
        family_obj = None
        if level_fn is None:
            pool: list = []

            def pool_fn():  # prepared once, and only if some member needs training
                if not pool:
                    pool.extend(_training_pool(sources, settings))
                return pool

            family_obj = _Family(specs, out, settings, pool_fn, progress)
            base_doc["autoencoders"] = family_obj.entries
            base_doc["feature_network"] = (family_obj.features_info or
                                           next((e["training"].get("feature_network") for e in family_obj.entries
                                                 if e["training"].get("feature_network")), None))
        else:
            base_doc["autoencoders"] = []
            base_doc["feature_network"] = None
        _write_manifest(manifest_path, base_doc, records, [], None)

        by_source = {r["source"]: i for i, r in records.items()}
        taken = {i: r["source"] for i, r in records.items()}
        bar = tqdm(sources, desc="images", unit="img", disable=not progress)
        for source in bar:
            iid = by_source.get(str(source.path))
            if iid is not None and _complete(out, records[iid], settings.levels):
                done_before += 1
                continue
            if iid is None:
                iid = image_id(source)
                if iid in taken and taken[iid] != str(source.path):
                    iid = disambiguated_id(source)
            try:
                prepared = prepare(source, settings.size, settings.min_side, settings.max_side)
            except SkipImage as exc:
                skipped.append({"source": str(source.path), "reason": str(exc)})
                log.warning("skipped %s: %s", source.path, exc)
                continue
            for note in prepared.warnings:
                log.warning("%s", note)
            taken[iid] = str(source.path)
            records[iid] = _build_one(iid, prepared, out, settings, ladder, family_obj, level_fn, fn_name)
            built.append(iid)
        summary = _summary(out, records, built, done_before, skipped, time.perf_counter() - t0)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        _write_manifest(manifest_path, base_doc, records, skipped, summary)
    return summary


_MEASURE = ("MSE between the 8-bit level image and the 8-bit original over all pixels and RGB channels, "
            "reported as PSNR in dB (peak 255); levels are checked to have strictly decreasing PSNR")


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _training_pool(sources, settings: BuildSettings) -> list[np.ndarray]:
    pool = []
    for source in _subset(sources, settings.train_images):
        try:
            img = prepare(source, settings.size, settings.min_side, settings.max_side).image
        except SkipImage:
            continue  # reported when the image itself comes up for building
        if min(img.shape[:2]) >= settings.patch:
            pool.append(img)
    if not pool:
        raise ValueError(f"no usable source image has both sides >= the training patch size {settings.patch}")
    return pool


def _build_one(iid, prepared, out: Path, settings: BuildSettings, ladder, family_obj, level_fn, fn_name) -> dict:
    x = to_tensor(prepared.image)
    if family_obj is not None:
        cands = family_obj.candidates(x, settings.device)
    else:
        cands = _callable_candidates(level_fn, fn_name, x, settings.levels)
    raw = [_raw_stats(x, c) for c in cands]
    cands = [shape_distortion(x, c, remove_mean=settings.remove_mean, masking=settings.masking,
                              chroma=settings.chroma) for c in cands]
    levels, report = form_levels(prepared.image, cands, ladder)
    ref = x.unsqueeze(0)
    batch = torch.stack([to_tensor(lv.image) for lv in levels])
    ssims = ssim_score(batch, ref.expand_as(batch)).tolist()
    ms = ms_ssim_score(batch, ref.expand_as(batch))
    ms = ms.tolist() if ms is not None else [None] * len(levels)

    write_image(original_file(out, iid), prepared.image)
    entries = []
    for k, lv in enumerate(levels):
        write_image(level_file(out, iid, k + 1), lv.image)
        made_by = (family_obj.describe(lv.candidate) if family_obj is not None
                   else {"autoencoder": None, "loss_recipe": None, "level_fn": fn_name, "level_fn_level": lv.candidate + 1})
        entries.append({"level": k + 1, "file": f"distorted/{iid}/{k + 1}.png", "psnr": _finite(lv.psnr),
                        "ssim": _finite(ssims[k]), "ms_ssim": _finite(ms[k]), **made_by,
                        "blend": round(lv.blend, 6), "candidate_psnr": _finite(lv.candidate_psnr),
                        **raw[lv.candidate],
                        "target_psnr": _finite(ladder[k]) if ladder else None})
    psnrs = [lv.psnr for lv in levels]
    write_image(out / "contact" / f"{iid}.png", contact_sheet(prepared.image, [lv.image for lv in levels], psnrs))
    h, w = prepared.image.shape[:2]
    record = {"id": iid, "source": str(prepared.source.path), "category": prepared.source.category,
              "source_size": list(prepared.source_size), "crop_box": list(prepared.crop_box), "size": [w, h],
              "original": f"originals/{iid}.png", "contact_sheet": f"contact/{iid}.png",
              "levels": entries, "monotonic": is_monotonic(psnrs), "order": report,
              "warnings": prepared.warnings}
    _write_json(out / "records" / f"{iid}.json", record)
    return record


def _raw_stats(x: torch.Tensor, candidate: torch.Tensor) -> dict:
    """PSNR and largest per-channel mean shift (in 8-bit steps) of an unshaped candidate."""
    d = candidate.float() - x.float()
    mse = float(d.pow(2).mean())
    return {"raw_psnr": _finite(mse_to_psnr(mse)),
            "raw_mean_shift": round(float(d.mean(dim=(-2, -1)).abs().max()) * 255.0, 3)}


def _load_records(out: Path) -> dict:
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


def _complete(out: Path, record: dict, n_levels: int) -> bool:
    files = [record.get("original", ""), record.get("contact_sheet", "")] + [e.get("file", "") for e in record.get("levels", [])]
    return len(record.get("levels", [])) == n_levels and all(f and (out / f).is_file() for f in files)


def _write_manifest(path: Path, base: dict, records: dict, skipped: list, summary: dict | None) -> None:
    doc = {**base, "images": [records[i] for i in sorted(records)], "skipped": skipped, "summary": summary}
    _write_json(path, doc)


def _summary(out: Path, records: dict, built: list, done_before: int, skipped: list, seconds: float) -> dict:
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
