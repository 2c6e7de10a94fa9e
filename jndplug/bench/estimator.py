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
  (``jndplug.bench.truth_report``, measures in ``jndplug.bench.truth``; docs/bench.md defines every column). Each estimator's results land in
  ``truth/LABEL/result.json``; a rerun skips those already done;
- ``sur``: whether the satisfied-user ratio steers each SUR-conditioned ``--weights`` estimator on
  labelled data (``--data``, optionally only the validation ids of ``--split``) the way it moves
  the labels, at every p of ``--sur-values`` (``jndplug.bench.sur``).

Writes ``estimator_results.json`` and ``estimator_results.md`` under ``--out`` (and, with
``truth``, ``truth_bands.png``).
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

import jndplug
from jndplug.bench import figures
from jndplug.bench.common import BenchError, machine, resolve_estimator, write_json, write_text
from jndplug.bench.settings import DTYPE_NAMES, EstimatorSettings as Settings
from jndplug.bench.truth_report import truth, truth_images, truth_markdown
from jndplug.models.cost import count_parameters, macs_per_pixel

FORMAT = "jndplug-bench-estimator/1"
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def run(settings: Settings) -> dict:
    device = torch.device(settings.device)
    run_truth = "truth" in settings.parts and bool(settings.images) and bool(settings.weights)
    if run_truth:
        images = truth_images(settings)  # before any part runs: a wrong folder should not surface after the others
    weights = [Path(resolve_estimator(w)) for w in settings.weights]
    estimator = resolve_estimator(settings.estimator) if "overhead" in settings.parts else None
    results: dict = {"format": FORMAT, "machine": machine(), "device": str(device), "notes": []}
    if "speed" in settings.parts:
        results["speed"] = speed(settings.archs, weights, settings.sizes, device, settings.budget,
                                  DTYPES[settings.dtype])
    if "accuracy" in settings.parts:
        if settings.data and weights:
            results["accuracy"] = accuracy(weights, settings.data, device, settings.val_crop)
        else:
            results["notes"].append("accuracy: not run; it needs --weights FILE... and --data generated:DATASET")
    if "sur" in settings.parts:
        conditioned = [w for w in weights if jndplug.JNDTarget(w, kind="jnd").accepts_sur]
        if settings.data and conditioned:
            from jndplug.bench.sur import sur_steering

            results["sur"] = [row for w in conditioned
                              for row in sur_steering(w, settings.data, settings.split, settings.sur_values, device)]
            if len(conditioned) < len(weights):
                results["notes"].append("sur: skipped the estimators without SUR conditioning: "
                                        + ", ".join(w.name for w in weights if w not in conditioned))
        else:
            results["notes"].append("sur: not run; it needs --weights FILE... (SUR-conditioned) and --data "
                                    "generated:DATASET")
    if "overhead" in settings.parts:
        results["overhead"] = overhead(estimator, device, settings.patch, settings.batch, settings.steps,
                                        settings.repeats)
    out = Path(settings.out)
    if run_truth:
        results["truth"] = truth(settings.weights, weights, images, settings, device, out)
        figures.band_ratios(results["truth"], out / "truth_bands.png")
        if settings.sur is not None and any(r["sur_effective"] is None for r in results["truth"]):
            results["notes"].append(f"truth: --sur {settings.sur:g} applies only to SUR-conditioned estimators; those "
                                    "with SUR n/a ran as they are")
    elif "truth" in settings.parts:
        results["notes"].append("truth: not run; it needs --weights NAME|FILE... and --images DIR")
    write_json(out / "estimator_results.json", results)
    text = markdown(results)
    write_text(out / "estimator_results.md", text)
    print(text)
    return results


def time_forward(model, size, device, budget_s: float, dtype=torch.float32) -> tuple[float, int]:
    x = torch.rand(1, 3, *size, device=device, dtype=dtype)
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


def speed(archs: list[str], weights: list[Path], sizes: list[str], device, budget: float,
          dtype=torch.float32) -> list[dict]:
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
        macs = macs_per_pixel(model.eval(), (64, 64))
        params = count_parameters(model)
        model = model.to(device=device, dtype=dtype)
        for h, w in hw:
            seconds, runs = time_forward(model, (h, w), device, budget, dtype)
            rows.append({"model": label, "arch": arch, "size": f"{w}x{h}", "dtype": str(dtype).removeprefix("torch."),
                         "macs_per_pixel": round(macs), "params": params, "seconds_per_image": seconds,
                         "images_per_second": 1 / seconds, "runs": runs})
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


def markdown(results: dict) -> str:
    lines = [f"Device: {results['device']}; {results['machine']['cpu']} ({results['machine']['cpus']} CPUs, "
             f"{results['machine']['threads']} torch threads), GPU {results['machine']['gpu']}; "
             f"torch {results['machine']['torch']}; {results['machine']['date']}.", ""]
    if "speed" in results:
        lines += ["| model | arch | size | dtype | MACs/pixel | parameters | ms/image | images/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in results["speed"]:
            lines.append(f"| {r['model']} | {r['arch']} | {r['size']} | {r.get('dtype', 'float32')} | "
                         f"{r['macs_per_pixel']:,} | {r['params']:,} | "
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
