"""``jndplug bench codec``: CompressAI codecs trained against the originals and against JND images.

For every model, quality (CompressAI's lambda for it), target and seed, the CompressAI
integration trains the codec (from scratch; or fine-tuning local zoo files in ``--init-dir``; or,
with ``--pretrain-steps``, fine-tuning a baseline this command trains first); it is then
evaluated with real entropy coding on ``--eval`` (bits per pixel from the actual bitstreams), and
its decoded images are scored with ``jndplug.metrics`` against the originals. Layout of ``--out``::

    data/train, data/eval   links to the chosen training and evaluation images
    runs/NAME/              train/ (CompressAI checkpoints), eval/ (bitstream results, decoded PNGs), result.json
    runs/MODEL_qQ_pretrain_seedS/train/   the shared starting point of --pretrain-steps
    codec_results.json, codec_results.md, rd.png, crops_MODEL.png

Finished runs are skipped on a rerun; an interrupted training resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jndplug.bench import figures
from jndplug.bench.common import (BenchError, finished_run, link_or_copy, machine, mean_std, notes_lines,
                                  resolve_estimator, spread, summarize, write_json, write_text)
from jndplug.imageio import list_images, read_image
from jndplug.metrics import METRICS, MetricSuite, add_suite_arguments, evaluate_folders

FORMAT = "jndplug-bench-codec/1"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="training images (searched recursively)")
    p.add_argument("--eval", required=True, help="evaluation images, e.g. Kodak24")
    p.add_argument("--out", default="bench-codec", help="results folder (rerun to resume)")
    p.add_argument("--estimator", default="default", help="JND estimator: pretrained name or .safetensors path")
    p.add_argument("--models", nargs="+", default=["bmshj2018-factorized", "bmshj2018-hyperprior"])
    p.add_argument("--qualities", nargs="+", type=int, default=[1, 3],
                   help="CompressAI qualities; each trains with that quality's MSE lambda")
    p.add_argument("--strengths", nargs="+", type=float, default=[1.0], help="JND strengths (besides the baseline)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--init-dir", help="folder of CompressAI zoo checkpoints (MODEL-QUALITY-*.pth.tar) to fine-tune "
                                      "from; without it every codec trains from scratch")
    p.add_argument("--pretrain-steps", type=int, default=0,
                   help="first train each model, quality and seed this long against the originals; every target "
                        "run then fine-tunes that codec for --steps (0: no shared pre-training)")
    p.add_argument("--steps", type=int, default=20000, help="optimiser steps per run")
    p.add_argument("--patch", type=int, default=256, help="training crop side (a multiple of 64)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, help="learning rate (default 1e-4, and 1e-5 when fine-tuning zoo weights)")
    p.add_argument("--train-images", type=int, help="use this many training images, spread over the sorted list")
    p.add_argument("--eval-images", type=int, help="use this many evaluation images, spread over the sorted list")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                   help="training device: cpu or cuda (default: cuda if available)")
    p.add_argument("--crop-size", type=int, default=128, help="side of the side-by-side crops (pixels)")
    p.add_argument("--crop-images", type=int, default=3, help="evaluation images shown in the crop figures")
    add_suite_arguments(p)


def run(args: argparse.Namespace) -> dict:
    try:
        from jndplug.integrations.compressai import MODEL_NAMES, qualities
    except ImportError as exc:
        raise BenchError(f"the codec benchmark needs CompressAI: pip install 'jndplug[compressai]' ({exc})") from None
    for model in args.models:
        if model not in MODEL_NAMES:
            raise BenchError(f"unknown CompressAI model {model!r}; choose from {', '.join(MODEL_NAMES)}")
        bad = [q for q in args.qualities if q not in qualities(model)]
        if bad:
            raise BenchError(f"quality {bad[0]} is out of range for {model}")
    if any(s <= 0 for s in args.strengths):
        raise BenchError("--strengths must be > 0 (the baseline trains against the originals, always run)")
    if args.patch % 64:
        raise BenchError(f"--patch {args.patch} must be a multiple of 64 (the models' downsampling factor)")
    if args.pretrain_steps < 0:
        raise BenchError(f"--pretrain-steps {args.pretrain_steps} must be >= 0")
    if args.pretrain_steps and args.init_dir:
        raise BenchError("--pretrain-steps and --init-dir both give the starting point; choose one")
    estimator = resolve_estimator(args.estimator)
    out = Path(args.out)
    train_dir, eval_dir = prepare_data(out / "data", args)
    suite = MetricSuite(args.metrics, lpips_trunk=args.lpips_trunk, dists_trunk=args.dists_trunk,
                        device=args.metrics_device)
    settings = {k: getattr(args, k) for k in ("steps", "pretrain_steps", "patch", "batch", "lr", "train_images",
                                              "eval_images", "init_dir", "device")}
    settings["estimator"] = estimator
    targets = [("gt", 0.0)] + [(f"jnd{s:g}", s) for s in args.strengths]
    plan = [(m, q, t, s, seed) for m in args.models for q in args.qualities for t, s in targets for seed in args.seeds]
    results = []
    for i, (model, quality, target, strength, seed) in enumerate(plan, 1):
        name = f"{model}_q{quality}_{target}_seed{seed}"
        run_dir = out / "runs" / name
        result = finished_run(run_dir, settings)
        if result is not None:
            print(f"[{i}/{len(plan)}] {name}: done earlier, skipped", file=sys.stderr)
        else:
            init = _init_checkpoint(args.init_dir, model, quality)
            if args.pretrain_steps:
                pre = f"{model}_q{quality}_pretrain_seed{seed}"
                print(f"[{i}/{len(plan)}] {pre}: {args.pretrain_steps} steps against the originals (shared by "
                      "every target of this model, quality and seed; skipped when done)", file=sys.stderr)
                init = str(train_codec(out / "runs" / pre / "train", model, quality, 0.0, seed, train_dir, settings,
                                       args, args.pretrain_steps, None))
            print(f"[{i}/{len(plan)}] {name}: training {args.steps} steps", file=sys.stderr)
            result = run_one(run_dir, name, model, quality, target, strength, seed, train_dir, eval_dir, settings,
                             suite, args, init)
        results.append(result)
    return report(out, results, suite, eval_dir, args)


def prepare_data(root: Path, args) -> tuple[Path, Path]:
    """Links to the chosen training images (those at least one crop large) and evaluation images."""
    train = []
    for path in list_images(args.train):
        with Image.open(path) as im:
            if min(im.size) >= args.patch:
                train.append(path)
    train = spread(train, args.train_images)
    if not train:
        raise BenchError(f"no training image under {args.train} is at least {args.patch}x{args.patch}")
    evals = spread(list_images(args.eval), args.eval_images)
    if not evals:
        raise BenchError(f"no evaluation images under {args.eval}")
    wanted = {"train": {f"{i:05d}_{p.stem}{p.suffix}": p for i, p in enumerate(train)},
              "eval": {p.name: p for p in evals}}
    for split, files in wanted.items():
        # a rerun with other --train-images / --eval-images must not mix in files linked before
        if (root / split).is_dir() and {p.name for p in (root / split).iterdir()} != set(files):
            raise BenchError(f"{root / split} holds another selection of images; use another --out")
    for split, files in wanted.items():
        for name, path in files.items():
            link_or_copy(path, root / split / name)
    return root / "train", root / "eval"


def _init_checkpoint(init_dir: str | None, model: str, quality: int) -> str | None:
    if not init_dir:
        return None
    found = sorted(Path(init_dir).glob(f"{model}-{quality}-*.pth.tar"))
    if not found:
        raise BenchError(f"--init-dir {init_dir}: no {model}-{quality}-*.pth.tar (CompressAI's zoo file name)")
    return str(found[0])


def train_codec(save_dir: Path, model, quality, strength, seed, train_dir, settings, args, steps: int,
                init: str | None) -> Path:
    """CompressAI training through the integration (resumes an interrupted run); returns the final weights."""
    from jndplug.integrations.compressai import train as ca_train

    lr = args.lr or (1e-5 if args.init_dir else 1e-4)
    argv = ["--model", model, "--quality", str(quality), "--dataset", str(train_dir), "--epochs", "1000000",
            "--max-steps", str(steps), "--batch-size", str(args.batch), "--patch-size", str(args.patch),
            "--learning-rate", str(lr), "--seed", str(seed), "--device", args.device, "--save-dir", str(save_dir),
            "--num-workers", str(args.workers), "--save-every", "500"]
    if strength > 0:
        argv += ["--jnd-target", "--jnd-estimator", settings["estimator"], "--jnd-strength", str(strength)]
    if not (save_dir / "model.pth.tar").is_file():
        if (save_dir / "checkpoint.pth.tar").is_file():
            argv.append("--resume")
        elif init:
            argv += ["--checkpoint", init]
        ca_train.train(ca_train.build_parser().parse_args(argv))
    return save_dir / "model.pth.tar"


def run_one(run_dir, name, model, quality, target, strength, seed, train_dir, eval_dir, settings, suite, args,
            init) -> dict:
    from jndplug.integrations.compressai import evaluate as ca_eval

    save_dir = run_dir / "train"
    t0 = time.perf_counter()
    train_codec(save_dir, model, quality, strength, seed, train_dir, settings, args, args.steps, init)
    train_seconds = time.perf_counter() - t0
    label = f"{model}-{target}"
    json_path = ca_eval.evaluate(ca_eval.build_parser().parse_args(
        [str(eval_dir), "--checkpoint", str(save_dir / "model.pth.tar"), "--out", str(run_dir / "eval"),
         "--label", label, "--device", args.device, "--save-reconstructions"]))
    coded = json.loads(Path(json_path).read_text())
    table = evaluate_folders(run_dir / "eval" / "reconstructions" / f"{label}-q{quality}", eval_dir, suite=suite)
    result = {"format": FORMAT, "run": name, "model": model, "quality": quality, "lmbda": coded["lmbda"],
              "target": target, "strength": strength, "seed": seed, "init": init, "settings": settings,
              "train_seconds": train_seconds, "bpp": coded["mean"]["bpp"],
              "mean": {**table["mean"], "bpp": coded["mean"]["bpp"]}, "metrics_table": table,
              "bitstreams": coded, "machine": machine()}
    write_json(run_dir / "result.json", result)
    return result


def bd_rate(base: list[tuple[float, float]], test: list[tuple[float, float]], higher_is_better: bool = True):
    """Average bitrate difference (%) of ``test`` against ``base`` at equal quality, or (None, reason).

    Points are (bpp, quality). Log-rate is interpolated piecewise-linearly in quality over the
    range both curves cover: with two points per curve this is what the data allow (Bjøntegaard's
    cubic fit needs four). Negative: ``test`` needs fewer bits for the same quality.
    """
    curves = []
    for pts in (base, test):
        pts = [(r, q if higher_is_better else -q) for r, q in pts if r and q is not None and math.isfinite(q)]
        if len(pts) < 2:
            return None, "fewer than two rate points"
        pts.sort(key=lambda p: p[1])
        rates = [p[0] for p in pts]
        qs = [p[1] for p in pts]
        if any(b <= a for a, b in zip(qs, qs[1:])) or any(b <= a for a, b in zip(rates, rates[1:])):
            return None, "quality does not rise with rate on one of the curves"
        curves.append((np.array(qs), np.log(rates)))
    lo = max(c[0][0] for c in curves)
    hi = min(c[0][-1] for c in curves)
    if hi <= lo:
        return None, "the curves share no quality range"
    grid = np.linspace(lo, hi, 201)
    diff = np.interp(grid, *curves[1]) - np.interp(grid, *curves[0])
    mean_log_ratio = float((diff[:-1] + diff[1:]).mean() / 2)  # trapezoid rule on the uniform grid
    return (math.exp(mean_log_ratio) - 1) * 100, None


def report(out: Path, results: list[dict], suite: MetricSuite, eval_dir: Path, args) -> dict:
    names = suite.names
    points: dict[tuple, list[dict]] = {}
    for r in results:
        points.setdefault((r["model"], r["target"], r["quality"]), []).append(r)
    summary = []
    for (model, target, quality), runs in points.items():
        summary.append({"model": model, "target": target, "quality": quality, "lmbda": runs[0]["lmbda"],
                        "seeds": [r["seed"] for r in runs], "bpp": summarize([r["bpp"] for r in runs]),
                        "metrics": {m: summarize([r["mean"][m] for r in runs]) for m in names}})
    curves: dict[str, list[dict]] = {}
    for e in summary:
        curves.setdefault(f"{e['model']} / {e['target']}", []).append(
            {"bpp": e["bpp"]["mean"], **{m: e["metrics"][m]["mean"] for m in names}})
    bd = []
    for model in dict.fromkeys(e["model"] for e in summary):
        base = curves.get(f"{model} / gt", [])
        for label, pts in curves.items():
            if not label.startswith(f"{model} / ") or label == f"{model} / gt":
                continue
            row = {"model": model, "target": label.split(" / ", 1)[1], "bd_rate_percent": {}, "why_not": {}}
            for m in names:
                value, why = bd_rate([(p["bpp"], p[m]) for p in base], [(p["bpp"], p[m]) for p in pts],
                                     METRICS[m].higher_is_better)
                row["bd_rate_percent"][m] = value
                if why:
                    row["why_not"][m] = why
            bd.append(row)
    table = {"format": FORMAT, "notes": notes_lines(suite.skipped, [r["metrics_table"] for r in results]),
             "summary": summary, "bd_rate": bd,
             "runs": [{k: r[k] for k in ("run", "model", "quality", "target", "seed", "train_seconds", "bpp", "mean")}
                      for r in results], "machine": machine()}
    write_json(out / "codec_results.json", table)
    write_text(out / "codec_results.md", markdown(table, names))
    figures.rd_curves(curves, names, out / "rd.png")
    crop_figures(out, results, eval_dir, args)
    print(markdown(table, names))
    return table


def crop_figures(out: Path, results: list[dict], eval_dir: Path, args) -> None:
    """Per model: the original beside every target's decoded image, one row per image and quality (first seed)."""
    seed = min(r["seed"] for r in results)
    chosen = spread(list_images(eval_dir), args.crop_images)
    for model in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == model and r["seed"] == seed]
        rows = []
        for path in chosen:
            original, rel = read_image(path), path.relative_to(eval_dir)
            for quality in sorted({r["quality"] for r in runs}):
                panels = [("original", original)]
                for r in (r for r in runs if r["quality"] == quality):
                    decoded = (out / "runs" / r["run"] / "eval" / "reconstructions"
                               / f"{model}-{r['target']}-q{quality}" / rel.with_suffix(".png"))
                    bpp = next(im["bpp"] for im in r["bitstreams"]["images"] if im["file"] == str(rel))
                    panels.append((f"{r['target']}, {bpp:.3f} bpp", read_image(decoded)))
                rows.append((f"{path.stem} q{quality}", panels))
        figures.crops(rows, args.crop_size, out / f"crops_{model}.png")


def markdown(table: dict, names: list[str]) -> str:
    arrows = {m: "↑" if METRICS[m].higher_is_better else "↓" for m in names}
    lines = ["Means over the evaluation images (mean ± std over seeds where there are several); bpp from the real "
             "bitstreams; every metric against the original images.", "",
             "| model | quality (lambda) | target | bpp | "
             + " | ".join(f"{METRICS[m].label} {arrows[m]}" for m in names) + " |", "|" + "---|" * (len(names) + 4)]
    for e in sorted(table["summary"], key=lambda e: (e["model"], e["quality"], e["target"])):
        lines.append(f"| {e['model']} | {e['quality']} ({e['lmbda']}) | {e['target']} | {mean_std(e['bpp'], 'bpp')} | "
                     + " | ".join(mean_std(e["metrics"][m], m) for m in names) + " |")
    if table["bd_rate"]:
        lines += ["", "BD-rate of the JND-trained codec against the baseline, in % (negative: fewer bits for the same "
                      "score). Log-rate interpolated piecewise-linearly between the qualities run; n/a where the "
                      "curves do not allow it.", "",
                  "| model | target | " + " | ".join(METRICS[m].label for m in names) + " |",
                  "|" + "---|" * (len(names) + 2)]
        for row in table["bd_rate"]:
            cells = [("n/a" if v is None else f"{v:+.1f}") for v in (row["bd_rate_percent"][m] for m in names)]
            lines.append(f"| {row['model']} | {row['target']} | " + " | ".join(cells) + " |")
        reasons = {f"- BD-rate {METRICS[m].label} ({row['model']}, {row['target']}): {why}"
                   for row in table["bd_rate"] for m, why in row["why_not"].items()}
        lines += [""] + sorted(reasons)
    if table["notes"]:
        lines += [""] + table["notes"]
    return "\n".join(lines) + "\n"

