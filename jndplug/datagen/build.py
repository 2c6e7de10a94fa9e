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
The settings are in ``settings``, the records and the manifest in ``manifest``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from jndplug.data.layout import level_file, original_file
from jndplug.datagen.autoencoder import AutoencoderSpec, default_family, load_autoencoder, save_autoencoder
from jndplug.datagen.levels import form_levels, is_monotonic, psnr_ladder
from jndplug.datagen.manifest import (FORMAT, MEASURE, complete, finite, load_records, log, read_settings,
                                      run_summary, versions, write_json, write_manifest)
from jndplug.datagen.recipes import FeatureNetwork, ms_ssim_score, ssim_score
from jndplug.datagen.photos import SkipImage, disambiguated_id, find_sources, image_id, prepare
from jndplug.datagen.settings import BuildSettings, LevelFn, check_rerun, fixed_settings, resolve_settings
from jndplug.datagen.shaping import shape_distortion
from jndplug.datagen.training import train_autoencoder
from jndplug.errors import JNDPlugValueError
from jndplug.imageio import sweep_stale_temps, to_tensor, write_image
from jndplug.pixels import mse_to_psnr

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
                    raise JNDPlugValueError(f"{path} was trained with a different spec ({model.spec.to_dict()}) "
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
                raise JNDPlugValueError(f"level function {name} returned {type(y).__name__} for level {level}: "
                                        f"{exc}") from None
        y = y.detach().float().cpu()
        if y.ndim == 4 and y.shape[0] == 1:
            y = y[0]
        if tuple(y.shape) != tuple(x.shape):
            raise JNDPlugValueError(f"level function {name} returned shape {tuple(y.shape)} for level {level}; "
                                    f"expected {tuple(x.shape)} like its input")
        if not torch.isfinite(y).all():
            raise JNDPlugValueError(f"level function {name} returned NaN/Inf for level {level}")
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
    settings, level_fn, fn_name = resolve_settings(settings, overrides, level_fn)
    roots = [src] if isinstance(src, (str, Path)) else list(src)
    if not roots:
        raise JNDPlugValueError("no source folders given")
    out = Path(out)
    sources = _subset(find_sources(roots), settings.limit)
    if not sources:
        raise JNDPlugValueError(f"no png/jpg/bmp/tif images under {', '.join(map(str, roots))}")
    specs = family if family is not None else default_family(settings.steps, settings.feature_steps)
    if level_fn is None and not specs:
        raise JNDPlugValueError("the autoencoder family is empty")

    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    old_settings = read_settings(manifest_path)
    records = load_records(out)
    check_rerun(out, old_settings, settings,
                made=bool(records) or any((out / "autoencoders").glob("*.safetensors")))
    # a build is its folder's only writer (two at once are not supported), so any temporary file
    # here was left by a killed run
    sweep_stale_temps(out)

    ladder = psnr_ladder(settings.levels, *settings.psnr_range) if settings.calibrate else None
    base_doc = {"format": FORMAT, "settings": {**asdict(settings), **fixed_settings(settings)}, "seed": settings.seed,
                "versions": versions(), "distortion_measure": MEASURE, "level_psnr_targets": ladder}
    write_manifest(manifest_path, base_doc, records, [], None)

    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    skipped, summary = [], None
    try:
        family_obj = None if level_fn is not None else _Family(specs, out, settings, _lazy_pool(sources, settings),
                                                               progress)
        base_doc.update(_family_doc(family_obj))
        write_manifest(manifest_path, base_doc, records, [], None)
        make = partial(_build_one, out=out, settings=settings, ladder=ladder, family_obj=family_obj,
                       level_fn=level_fn, fn_name=fn_name)
        built, done_before = _build_images(sources, out, settings, records, skipped, make, progress)
        summary = run_summary(out, records, built, done_before, skipped, time.perf_counter() - t0)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        write_manifest(manifest_path, base_doc, records, skipped, summary)
    return summary


def _lazy_pool(sources, settings: BuildSettings):
    pool: list = []

    def pool_fn():  # prepared once, and only if some member needs training
        if not pool:
            pool.extend(_training_pool(sources, settings))
        return pool

    return pool_fn


def _family_doc(family_obj: _Family | None) -> dict:
    """The manifest's account of the autoencoders (none for a level function)."""
    if family_obj is None:
        return {"autoencoders": [], "feature_network": None}
    return {"autoencoders": family_obj.entries,
            "feature_network": (family_obj.features_info or
                                next((e["training"].get("feature_network") for e in family_obj.entries
                                      if e["training"].get("feature_network")), None))}


def _build_images(sources, out: Path, settings: BuildSettings, records: dict, skipped: list, make,
                  progress: bool) -> tuple[list[str], int]:
    """Build every source not done yet, into ``records``; returns the ids built now and how many were done before."""
    built, done_before = [], 0
    by_source = {r["source"]: i for i, r in records.items()}
    taken = {i: r["source"] for i, r in records.items()}
    for source in tqdm(sources, desc="images", unit="img", disable=not progress):
        iid = by_source.get(str(source.path))
        if iid is not None and complete(out, records[iid], settings.levels):
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
        records[iid] = make(iid, prepared)
        built.append(iid)
    return built, done_before


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
        raise JNDPlugValueError(f"no usable source image has both sides >= the training patch size {settings.patch}")
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
        entries.append({"level": k + 1, "file": f"distorted/{iid}/{k + 1}.png", "psnr": finite(lv.psnr),
                        "ssim": finite(ssims[k]), "ms_ssim": finite(ms[k]), **made_by,
                        "blend": round(lv.blend, 6), "candidate_psnr": finite(lv.candidate_psnr),
                        **raw[lv.candidate],
                        "target_psnr": finite(ladder[k]) if ladder else None})
    psnrs = [lv.psnr for lv in levels]
    write_image(out / "contact" / f"{iid}.png", contact_sheet(prepared.image, [lv.image for lv in levels], psnrs))
    h, w = prepared.image.shape[:2]
    record = {"id": iid, "source": str(prepared.source.path), "category": prepared.source.category,
              "source_size": list(prepared.source_size), "crop_box": list(prepared.crop_box), "size": [w, h],
              "original": f"originals/{iid}.png", "contact_sheet": f"contact/{iid}.png",
              "levels": entries, "monotonic": is_monotonic(psnrs), "order": report,
              "warnings": prepared.warnings}
    write_json(out / "records" / f"{iid}.json", record)
    return record


def _raw_stats(x: torch.Tensor, candidate: torch.Tensor) -> dict:
    """PSNR and largest per-channel mean shift (in 8-bit steps) of an unshaped candidate."""
    d = candidate.float() - x.float()
    mse = float(d.pow(2).mean())
    return {"raw_psnr": finite(mse_to_psnr(mse)),
            "raw_mean_shift": round(float(d.mean(dim=(-2, -1)).abs().max()) * 255.0, 3)}
