"""``jndplug bench estimator``: what a JND estimator costs and how close it gets to labelled JND images.

Five parts (``--parts``):

- ``speed``: multiply-accumulates per pixel, parameters and images per second of each
  architecture (random weights: speed does not depend on their values) and of each ``--weights``
  file, all timed in one run so their ratios are meaningful on any machine;
- ``accuracy``: each ``--weights`` file on a labelled dataset (``--data generated:DATASET``, made
  by ``jndplug datagen`` and labelled by ``jndplug study aggregate``, or any other
  ``jndplug train`` source): PSNR and SSIM against the labelled JND images and, for
  generated data, level agreement (exact and within one), as the estimator training validates;
- ``overhead``: one BasicSR training step (SRModel, EDSR-baseline x4) with and without online
  ``JNDTarget`` (``--estimator``), as a ratio;
- ``truth``: whether each ``--weights`` estimator's JND images on a folder of photos
  (``--images``) are below visibility and what their distortion is made of: SSIMULACRA 2, FLIP
  and ColorVideoVDP against the originals, per-channel mean shift, chroma and mean-shift shares
  of the distortion energy, luma band power ratios, and how the JND map follows local contrast
  (``jndplug.bench.truth``; docs/bench.md defines every column). Each estimator's results land in
  ``truth/LABEL/result.json``; a rerun skips those already done;
- ``sur``: whether the satisfied-user ratio steers each SUR-conditioned ``--weights`` estimator on
  labelled data (``--data``, optionally only the validation ids of ``--split``) the way it moves
  the labels, at every p of ``--sur-values`` (``jndplug.bench.sur``).

Writes ``estimator_results.json`` and ``estimator_results.md`` under ``--out`` (and, with
``truth``, ``truth_bands.png``).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import jndplug
from jndplug.bench import figures
from jndplug.bench import truth as measures
from jndplug.bench.common import (RESULT, BenchError, machine, notes_lines, read_result, resolve_estimator, spread,
                                  write_json, write_text)
from jndplug.imageio import array_to_tensor, list_images, read_image, tensor_to_array
from jndplug.metrics import METRICS, fmt, mean_of, psnr
from jndplug.models.cost import count_parameters, macs_per_pixel

FORMAT = "jndplug-bench-estimator/1"
PARTS = ("speed", "accuracy", "overhead", "truth", "sur")
TRUTH_METRICS = ("ssimulacra2", "flip", "cvvdp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--out", default="bench-estimator", help="results folder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--archs", nargs="+", default=["unet", "resjnd"], help="architectures timed with random weights")
    p.add_argument("--weights", nargs="+", default=[],
                   help="estimators: pretrained names or .safetensors files (speed, accuracy, truth)")
    p.add_argument("--sizes", nargs="+", default=["512x512", "1920x1080"], help="speed: image sizes WxH")
    p.add_argument("--budget", type=float, default=10.0, help="speed: seconds of timed runs per case (at least one)")
    p.add_argument("--data", nargs="+", default=[], help="accuracy, sur: labelled data, e.g. generated:DATASET")
    p.add_argument("--split", help="sur: split.json of the training run: its validation ids only, and its training "
                                   "ids for the most-common-level baseline")
    p.add_argument("--sur-values", nargs="+", type=float, default=[0.5, 0.75, 0.95],
                   help="sur: satisfied-user ratios to compare")
    p.add_argument("--val-crop", type=int, default=512, help="accuracy: central crop side, as in training validation")
    p.add_argument("--estimator", default="default", help="overhead: the JND estimator (name or path)")
    p.add_argument("--patch", type=int, default=96, help="overhead: GT patch side of the training batch")
    p.add_argument("--batch", type=int, default=16, help="overhead: batch size")
    p.add_argument("--steps", type=int, default=5, help="overhead: timed steps per block")
    p.add_argument("--repeats", type=int, default=3, help="overhead: alternating blocks with and without JNDTarget")
    p.add_argument("--images", help="truth: folder of photos (searched recursively), e.g. Kodak24")
    p.add_argument("--limit", type=int, help="truth: use this many images, spread over the sorted list")
    p.add_argument("--max-side", type=int, help="truth: downscale (Lanczos) images whose longer side exceeds this")
    p.add_argument("--sur", type=float, help="truth: satisfied-user ratio for SUR-conditioned estimators (default: "
                                             "each one's own; estimators without SUR conditioning ignore it)")
    p.add_argument("--strength", type=float, default=1.0, help="truth: JNDTarget strength (default 1)")
    p.add_argument("--metrics", nargs="+", choices=list(METRICS), default=list(TRUTH_METRICS), metavar="METRIC",
                   help=f"truth: visibility metrics of the JND images (default {' '.join(TRUTH_METRICS)})")


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    run_truth = "truth" in args.parts and bool(args.images) and bool(args.weights)
    if run_truth:
        images = truth_images(args)  # before any part runs: a wrong folder should not surface after the others
    weights = [Path(resolve_estimator(w)) for w in args.weights]
    estimator = resolve_estimator(args.estimator) if "overhead" in args.parts else None
    results: dict = {"format": FORMAT, "machine": machine(), "device": str(device), "notes": []}
    if "speed" in args.parts:
        results["speed"] = speed(args.archs, weights, args.sizes, device, args.budget)
    if "accuracy" in args.parts:
        if args.data and weights:
            results["accuracy"] = accuracy(weights, args.data, device, args.val_crop)
        else:
            results["notes"].append("accuracy: not run; it needs --weights FILE... and --data generated:DATASET")
    if "sur" in args.parts:
        conditioned = [w for w in weights if jndplug.JNDTarget(w, kind="jnd").accepts_sur]
        if args.data and conditioned:
            from jndplug.bench.sur import sur_steering

            results["sur"] = [row for w in conditioned
                              for row in sur_steering(w, args.data, args.split, args.sur_values, device)]
            if len(conditioned) < len(weights):
                results["notes"].append("sur: skipped the estimators without SUR conditioning: "
                                        + ", ".join(w.name for w in weights if w not in conditioned))
        else:
            results["notes"].append("sur: not run; it needs --weights FILE... (SUR-conditioned) and --data "
                                    "generated:DATASET")
    if "overhead" in args.parts:
        results["overhead"] = overhead(estimator, device, args.patch, args.batch, args.steps, args.repeats)
    out = Path(args.out)
    if run_truth:
        results["truth"] = truth(args.weights, weights, images, args, device, out)
        figures.band_ratios(results["truth"], out / "truth_bands.png")
        if args.sur is not None and any(r["sur_effective"] is None for r in results["truth"]):
            results["notes"].append(f"truth: --sur {args.sur:g} applies only to SUR-conditioned estimators; those "
                                    "with SUR n/a ran as they are")
    elif "truth" in args.parts:
        results["notes"].append("truth: not run; it needs --weights NAME|FILE... and --images DIR")
    write_json(out / "estimator_results.json", results)
    text = markdown(results)
    write_text(out / "estimator_results.md", text)
    print(text)
    return results


def time_forward(model, size, device, budget_s: float) -> tuple[float, int]:
    x = torch.rand(1, 3, *size, device=device)
    with torch.no_grad():
        model(x)  # warm-up (allocations, cuDNN algorithm choice)
        _sync(device)
        runs, start = 0, time.perf_counter()
        while runs == 0 or (time.perf_counter() - start < budget_s and runs < 50):
            model(x)
            runs += 1
        _sync(device)
    return (time.perf_counter() - start) / runs, runs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed(archs: list[str], weights: list[Path], sizes: list[str], device, budget: float) -> list[dict]:
    try:
        hw = [tuple(int(v) for v in s.lower().split("x"))[::-1] for s in sizes]  # WxH -> (H, W)
    except ValueError:
        raise BenchError(f"--sizes takes WxH, e.g. 512x512; got {' '.join(sizes)}") from None
    models = []
    for arch in archs:
        torch.manual_seed(0)
        models.append((arch, arch, jndplug.create_estimator(arch)))
    for path in weights:
        model = jndplug.load_estimator(path)
        models.append((path.name, model.arch_name, model))
    rows = []
    for label, arch, model in models:
        model = model.eval().to(device)
        macs = macs_per_pixel(model, (64, 64))
        params = count_parameters(model)
        for h, w in hw:
            seconds, runs = time_forward(model, (h, w), device, budget)
            rows.append({"model": label, "arch": arch, "size": f"{w}x{h}", "macs_per_pixel": round(macs),
                         "params": params, "seconds_per_image": seconds, "images_per_second": 1 / seconds,
                         "runs": runs})
            print(f"{label:12s} {w}x{h}: {macs:,.0f} MACs/px, {params:,} params, {seconds * 1000:,.1f} ms/image "
                  f"({runs} runs)", file=sys.stderr, flush=True)
    return rows


def accuracy(weights: list[Path], data: list[str], device, val_crop: int) -> list[dict]:
    """The training loop's validation, on every record of ``data``: use data the estimator did not train on."""
    from jndplug.training.batches import ImageCache
    from jndplug.training.config import resolve_config
    from jndplug.training.validation import default_measure, validate
    from jndplug.training.datasets import read_source

    records = []
    for i, spec in enumerate(data):
        for r in read_source(spec):
            if len(data) > 1:
                r.id = f"{i}:{r.id}"
            records.append(r)
    measure = default_measure if any(r.levels for r in records) else None
    cache = ImageCache()
    rows = []
    for path in weights:
        model = jndplug.load_estimator(path, map_location=device)
        cfg = resolve_config({"val_crop": val_crop, "sur_conditioning": model.accepts_sur})
        t0 = time.perf_counter()
        res = validate(model, records, cache, cfg, device, measure)
        rows.append({"weights": str(path), "arch": model.arch_name, "images": len(records), "data": list(data),
                     "seconds": time.perf_counter() - t0, **res["summary"]})
    return rows


def _edsr_options(device: torch.device) -> dict:
    import yaml  # BasicSR's dependency

    spec = importlib.util.find_spec("jndplug.integrations.basicsr")
    path = Path(list(spec.submodule_search_locations)[0]) / "options" / "train_EDSR_Mx4_baseline.yml"
    recipe = yaml.safe_load(path.read_text())
    return {"name": "overhead", "model_type": "SRModel", "scale": 4, "is_train": True, "dist": False, "rank": 0,
            "world_size": 1, "num_gpu": 1 if device.type == "cuda" else 0, "network_g": recipe["network_g"],
            "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
            "train": {"ema_decay": 0, "optim_g": copy.deepcopy(recipe["train"]["optim_g"]),
                      "scheduler": {"type": "MultiStepLR", "milestones": [10**9], "gamma": 0.5},
                      "pixel_opt": recipe["train"]["pixel_opt"]},
            "logger": {"use_tb_logger": False}}


def overhead(estimator: str, device, patch: int, batch: int, steps: int, repeats: int) -> dict:
    """Seconds per BasicSR training step with and without online JND targets, in alternating blocks."""
    if patch % 4:
        raise BenchError(f"--patch {patch} must be a multiple of 4 (x4 super-resolution)")
    from jndplug.integrations.basicsr import wrap_model  # makes basicsr importable first
    from basicsr.models.sr_model import SRModel

    torch.manual_seed(0)
    model = SRModel(_edsr_options(device))
    gt = torch.rand(batch, 3, patch, patch, device=device)
    lq = torch.nn.functional.interpolate(gt, scale_factor=0.25, mode="bicubic", align_corners=False).clamp(0, 1)
    model.feed_data({"lq": lq, "gt": gt})
    target = jndplug.JNDTarget(estimator, kind="jnd")
    plain = model.optimize_parameters
    with_jnd = wrap_model(model, target).optimize_parameters

    def block(step_fn) -> float:
        _sync(device)
        start = time.perf_counter()
        for i in range(steps):
            step_fn(i + 1)
        _sync(device)
        return (time.perf_counter() - start) / steps

    block(plain), block(with_jnd)  # warm-up: allocations, estimator on the device
    times = {"without": [], "with": []}
    for _ in range(repeats):
        times["without"].append(block(plain))
        times["with"].append(block(with_jnd))
    without, with_ = float(np.median(times["without"])), float(np.median(times["with"]))
    return {"estimator": estimator, "arch": target.arch_name, "network": "EDSR-baseline x4",
            "batch": batch, "gt_patch": patch, "steps_per_block": steps, "repeats": repeats,
            "seconds_per_step_without": without, "seconds_per_step_with": with_, "ratio": with_ / without,
            "blocks": times}


def truth_images(args) -> list[tuple[str, Path]]:
    """(name relative to --images, path) of the chosen photos, with the truth options checked."""
    if args.limit is not None and args.limit <= 0:
        raise BenchError(f"--limit {args.limit} must be > 0")
    if args.max_side is not None and args.max_side < 16:
        raise BenchError(f"--max-side {args.max_side} must be >= 16 (JNDTarget's smallest image side)")
    if args.sur is not None and not 0 < args.sur <= 1:
        raise BenchError(f"--sur {args.sur} must be in (0, 1]")
    if not (math.isfinite(args.strength) and args.strength >= 0):
        raise BenchError(f"--strength {args.strength} must be a finite number >= 0")
    root = Path(args.images)
    if not root.exists():
        raise BenchError(f"--images {root}: no such folder")
    files = list_images(root)
    if not files:
        raise BenchError(f"--images {root}: no image files found (searched recursively)")
    files = spread(files, args.limit)
    return [(p.relative_to(root).as_posix() if root.is_dir() else p.name, p) for p in files]


def load_photo(path: Path, max_side: int | None) -> np.ndarray:
    """An 8-bit HxWx3 photo, downscaled to ``max_side`` if larger: what a user would feed and write."""
    from PIL import Image

    img = read_image(path)
    if img.dtype == np.uint16:
        img = np.round(img / 257.0).astype(np.uint8)
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


def truth(specs: list[str], paths: list[Path], images: list[tuple[str, Path]], args, device, out: Path) -> list[dict]:
    from tqdm import tqdm

    from jndplug.metrics import MetricSuite
    from jndplug.weights import estimator_fingerprint

    suite = None
    rows = []
    for label, spec, path in zip(_labels(specs), specs, paths):
        model = jndplug.load_estimator(path)
        conditioned = model.accepts_sur
        sur = args.sur if conditioned else None
        settings = {"fingerprint": estimator_fingerprint(model),
                    "images": str(Path(args.images).resolve()), "files": [n for n, _ in images],
                    "max_side": args.max_side, "sur": sur, "strength": args.strength, "metrics": list(args.metrics)}
        run_dir = out / "truth" / label
        done = read_result(run_dir)
        if done is not None:
            if done["settings"] != settings:
                raise BenchError(f"{run_dir} was run with other settings (estimator, images or options); use another "
                                 "--out or delete that folder")
            print(f"truth {label}: done earlier, skipped", file=sys.stderr)
            rows.append(done)
            continue
        suite = suite or MetricSuite(args.metrics, device=device)
        target = jndplug.JNDTarget(model, strength=args.strength, sur=sur, device=device, kind="jnd")
        per_image, notes = [], {}
        for name, file in tqdm(images, desc=f"truth {label}", unit="img"):
            try:
                values, why = image_truth(target, load_photo(file, args.max_side), suite)
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
        row = {"label": label, "weights": spec, "file": str(path), "arch": model.arch_name, "settings": settings,
               "sur_effective": (args.sur if args.sur is not None else model.default_sur) if conditioned else None,
               "images": len(per_image), "summary": summary, "skipped": dict(suite.skipped), "notes": notes,
               "per_image": per_image}
        write_json(run_dir / RESULT, row)
        rows.append(row)
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


def markdown(results: dict) -> str:
    lines = [f"Device: {results['device']}; {results['machine']['cpu']} ({results['machine']['cpus']} CPUs, "
             f"{results['machine']['threads']} torch threads), GPU {results['machine']['gpu']}; "
             f"torch {results['machine']['torch']}; {results['machine']['date']}.", ""]
    if "speed" in results:
        lines += ["| model | arch | size | MACs/pixel | parameters | ms/image | images/s |",
                  "|---|---|---|---|---|---|---|"]
        for r in results["speed"]:
            lines.append(f"| {r['model']} | {r['arch']} | {r['size']} | {r['macs_per_pixel']:,} | {r['params']:,} | "
                         f"{r['seconds_per_image'] * 1000:,.1f} | {r['images_per_second']:.2f} |")
        lines.append("")
    if results.get("accuracy"):
        lines += ["| weights | arch | images | PSNR vs labelled JND (dB) | SSIM | level exact | level within 1 |",
                  "|---|---|---|---|---|---|---|"]
        for r in results["accuracy"]:
            lvl = [f"{r[k]:.3f}" if k in r else "n/a" for k in ("level_exact", "level_within1")]
            lines.append(f"| {Path(r['weights']).name} | {r['arch']} | {r['images']} | {r['psnr']:.2f} | "
                         f"{r['ssim']:.4f} | {lvl[0]} | {lvl[1]} |")
        lines.append("")
    if "overhead" in results:
        o = results["overhead"]
        lines += [f"BasicSR training step ({o['network']}, batch {o['batch']}, GT patch {o['gt_patch']}): "
                  f"{o['seconds_per_step_without'] * 1000:.1f} ms without, {o['seconds_per_step_with'] * 1000:.1f} ms "
                  f"with online JNDTarget ({o['arch']}): ratio **{o['ratio']:.3f}** (median of {o['repeats']} "
                  f"alternating blocks of {o['steps_per_block']} steps).", ""]
    if results.get("truth"):
        lines += truth_markdown(results["truth"])
    if results.get("sur"):
        from jndplug.bench.sur import sur_markdown

        lines += sur_markdown(results["sur"])
    lines += [f"- {n}" for n in results["notes"]]
    return "\n".join(lines).rstrip() + "\n"
