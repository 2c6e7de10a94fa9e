"""A learned codec trained to a working rate-distortion point, then fine-tuned against JND targets.

The codec half of the question in docs/directed.md: does fine-tuning a trained codec against a
JND target (the distortion term compares the reconstruction with the target; rate term, model and
input unchanged) give a better rate-perception curve, and at what cost in PSNR? This script

1. pretrains one bmshj2018-hyperprior against the originals at ``--pretrain-lambda``, recording a
   validation curve (PSNR and estimated bpp on training photos held back from training);
2. adapts that codec to each of ``--lambdas`` (against the originals), the usual way to get a
   family of rate points from one long run; the validation points of the adapted codecs show
   whether bpp falls and PSNR rises monotonically with lambda (a working RD point);
3. fine-tunes each adapted codec per target and seed with seed-paired crops: ``gt`` (the
   baseline's own continuation), ``jnd`` (the seed paper's JND image), ``directed:gain=G``;
   targets are the ``jndplug bench screen`` transforms of the whole training photos, 8-bit;
4. codes ``--eval`` for real (bpp from the bitstreams' bytes), scores the decoded images with
   ``jndplug.metrics`` against the originals and reports BD-rates of every target against ``gt``.

Writes ``report.md``, ``report.json``, ``curve.png``, ``rd.png`` and ``crops.png`` under ``--out``.
Resumable: training checkpoints every ``--val-every`` steps; finished runs are skipped.

    python benchmarks/converged_codec.py --train ../shared/data/train \\
        --eval ../shared/data/test/Kodak24 --out /tmp/converged-codec
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from jndplug.bench.codec import bd_rate
from jndplug.bench.common import BenchError, machine, resolve_estimator, spread, summarize, write_json, write_text
from jndplug.bench.screen import parse_transform
from jndplug.imageio import list_images, read_image, write_image
from jndplug.metrics import MetricSuite

sys.path.insert(0, str(Path(__file__).resolve().parent))
from converged_sr import add_targets, eight_bit, to_t  # noqa: E402  (the same target cache)

MODEL = "bmshj2018-hyperprior"
LOWER_BETTER = {"niqe", "flip", "stlpips", "lpips", "dists"}
RD_PLOTS = ("psnr_y", "stlpips", "ssimulacra2")


def build(channels: tuple[int, int]) -> torch.nn.Module:
    from compressai.registry import MODELS

    return MODELS[MODEL](*channels)


def load_training(args) -> dict:
    files = sorted(list_images(args.train))
    chosen = spread([f for f in files if _fits(f, args.patch)], args.train_images + args.val_images)
    if len(chosen) < args.train_images + args.val_images:
        raise BenchError(f"{args.train} holds {len(chosen)} images of at least {args.patch} px; --train-images "
                         f"{args.train_images} and --val-images {args.val_images} need more")
    k = max(1, len(chosen) // max(1, args.val_images))
    val_files = chosen[::k][:args.val_images]
    train_files = [f for f in chosen if f not in set(val_files)]
    data = {"gt": [eight_bit(read_image(f)) for f in tqdm(train_files, desc="training photos", unit="img")],
            "files": [str(f) for f in train_files], "val_files": [str(f) for f in val_files]}
    data["val"] = torch.stack([to_t(_centre(eight_bit(read_image(f)), args.val_side)) for f in val_files])
    return data


def _fits(path: Path, side: int) -> bool:
    from PIL import Image

    with Image.open(path) as im:
        return min(im.size) >= side


def _centre(a: np.ndarray, side: int) -> np.ndarray:
    h, w = a.shape[:2]
    side = min(side, h, w) // 64 * 64
    top, left = (h - side) // 2, (w - side) // 2
    return a[top:top + side, left:left + side]


def batch(data: dict, target: str, rng: np.random.Generator, args):
    """Input crops and the same crops of the target image: random photo, position, flip and rotation."""
    p, xs, ys = args.patch, [], []
    for _ in range(args.batch):
        i = int(rng.integers(len(data["gt"])))
        gt = data["gt"][i]
        src = gt if target == "gt" else data["targets"][target][i]
        top, left = int(rng.integers(gt.shape[0] - p + 1)), int(rng.integers(gt.shape[1] - p + 1))
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        for a, dest in ((gt, xs), (src, ys)):
            a = np.rot90(a[top:top + p, left:left + p], k)
            dest.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    as_t = lambda b: torch.from_numpy(np.stack(b)).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    return as_t(xs), as_t(ys)


@torch.no_grad()
def validate(net, data) -> dict:
    """PSNR of the reconstruction and the rate the likelihoods estimate, on the held-back photos."""
    net.eval()
    out = net(data["val"])
    net.train()
    n, _, h, w = data["val"].shape
    bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / (n * h * w)
    mse = (out["x_hat"].clamp(0, 1) - data["val"]).pow(2).mean(dim=(1, 2, 3))
    return {"psnr": float((10 * torch.log10(1 / mse)).mean()), "bpp": float(bpp)}


def train(folder: Path, init: Path | None, lmbda: float, target: str, seed: int, steps: int, lr: float, data: dict,
          args, curve: bool) -> Path:
    """Train (resumably) and return ``folder/final.pt``; with ``curve`` record validation points."""
    from compressai.losses import RateDistortionLoss

    from jndplug.integrations.compressai.steps import make_optimizers, train_step

    final = folder / "final.pt"
    if final.is_file():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = build(args.channels)
    if init is not None:
        net.load_state_dict(torch.load(init, weights_only=True))
    opts = make_optimizers(net, lr, 1e-3)
    # halve twice near the end, as in the SR script, so every run ends at the same small step size
    sched = torch.optim.lr_scheduler.MultiStepLR(opts["net"], [int(0.7 * steps), int(0.9 * steps)], 0.5)
    crit = RateDistortionLoss(lmbda=lmbda)
    state = {"step": 0, "curve": [], "seconds": 0.0}
    ckpt = folder / "checkpoint.pt"
    if ckpt.is_file():
        c = torch.load(ckpt, weights_only=True)
        net.load_state_dict(c["net"])
        opts["net"].load_state_dict(c["opt"])
        opts["aux"].load_state_dict(c["aux"])
        sched.load_state_dict(c["sched"])
        state = c["state"]
    t0 = time.perf_counter() - state["seconds"]
    bar = tqdm(total=steps, initial=state["step"], desc=folder.name, unit="step")
    while state["step"] < steps:
        # seed and step fix the crops: every target of one seed sees the same crops in the same order
        x, y = batch(data, target, np.random.default_rng((seed, state["step"])), args)
        values = train_step(net, crit, opts, x, y, 1.0)
        sched.step()
        state["step"] += 1
        bar.update(1)
        if state["step"] % args.val_every == 0 or state["step"] == steps:
            state["seconds"] = time.perf_counter() - t0
            if curve:
                state["curve"].append({"step": state["step"], **validate(net, data), "seconds": state["seconds"]})
                bar.set_postfix(psnr=f"{state['curve'][-1]['psnr']:.2f}", bpp=f"{state['curve'][-1]['bpp']:.3f}")
            else:
                bar.set_postfix(loss=f"{values['loss']:.3f}")
            _save(ckpt, {"net": net.state_dict(), "opt": opts["net"].state_dict(), "aux": opts["aux"].state_dict(),
                         "sched": sched.state_dict(), "state": state})
    bar.close()
    write_json(folder / "train.json", {"lmbda": lmbda, "target": target, "seed": seed, "steps": steps, "lr": lr,
                                       "curve": state["curve"], "seconds": state["seconds"]})
    _save(final, net.state_dict())
    return final


def _save(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def evaluate(name: str, weights: Path, evals: list, suite, args) -> dict:
    """Real entropy coding of every evaluation image; metrics of the decoded images."""
    from jndplug.integrations.compressai.evaluate import evaluate_image

    run = Path(args.out) / "runs" / name
    if (run / "result.json").is_file():
        return json.loads((run / "result.json").read_text())
    net = build(args.channels)
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.eval()
    net.update(force=True)
    rows = []
    for file, gt in tqdm(evals, desc=f"coding {name}", unit="img", leave=False):
        record, _, decoded = evaluate_image(net, gt, file)
        write_image(run / "decoded" / f"{file}.png", decoded)
        values, _ = suite(decoded, gt)
        rows.append({"file": file, "bpp": record["bpp"], **values})
    keys = ["bpp", *suite.names]
    result = {"run": name, "mean": {k: float(np.mean([r[k] for r in rows if r.get(k) is not None])) for k in keys},
              "per_image": rows}
    write_json(run / "result.json", result)
    return result


def report(results: dict, curves: dict, adapted: dict, names: list[str], args) -> dict:
    lines = [f"{MODEL} with {args.channels[0]}/{args.channels[1]} channels; pretrained {args.pretrain_steps} steps at "
             f"lambda {args.pretrain_lambda}, adapted {args.adapt_steps} steps per lambda, fine-tuned "
             f"{args.steps} steps per target (seeds {' '.join(map(str, args.seeds))}); evaluated with real entropy "
             f"coding on {len(next(iter(results.values()))['per_image'])} images of {args.eval}.\n"]
    pre = curves["pretrain"]
    lines.append(f"Pretraining: validation PSNR {pre[-1]['psnr']:.2f} dB at {pre[-1]['bpp']:.3f} bpp (estimated) "
                 f"after {pre[-1]['step']} steps; over the last fifth of the curve PSNR changed "
                 f"{pre[-1]['psnr'] - pre[max(0, int(0.8 * len(pre)) - 1)]['psnr']:+.2f} dB and bpp "
                 f"{pre[-1]['bpp'] - pre[max(0, int(0.8 * len(pre)) - 1)]['bpp']:+.3f}.\n")
    pts = [(lm, adapted[lm][-1]) for lm in sorted(args.lambdas)]
    mono = all(b["bpp"] > a["bpp"] and b["psnr"] > a["psnr"] for (_, a), (_, b) in zip(pts, pts[1:]))
    lines.append("Adapted codecs (validation): " + "; ".join(f"lambda {lm}: {v['psnr']:.2f} dB at {v['bpp']:.3f} bpp"
                                                            for lm, v in pts)
                 + f". bpp and PSNR rise monotonically with lambda: {'yes' if mono else 'NO'}.\n")
    head = "| lambda | target | bpp | " + " | ".join(names) + " |"
    lines += [head, "|" + "---|" * (len(names) + 3)]
    table = {}
    for lm in sorted(args.lambdas):
        for target in args.targets:
            rs = [results[(lm, target, s)]["mean"] for s in args.seeds]
            entry = {k: summarize([r[k] for r in rs]) for k in ["bpp", *names]}
            table[f"{lm}/{target}"] = entry
            lines.append(f"| {lm} | {target} | {entry['bpp']['mean']:.4f} | "
                         + " | ".join(f"{entry[k]['mean']:.4f}" for k in names) + " |")
    lines += ["", "BD-rate against `gt` (%, negative: fewer bits for the same score; log-rate interpolated "
                  "piecewise-linearly over the shared range):", "",
              "| target | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    bd = {}
    for target in args.targets:
        if target == "gt":
            continue
        bd[target] = {}
        for k in names:
            base = [(table[f"{lm}/gt"]["bpp"]["mean"], table[f"{lm}/gt"][k]["mean"]) for lm in args.lambdas]
            test = [(table[f"{lm}/{target}"]["bpp"]["mean"], table[f"{lm}/{target}"][k]["mean"]) for lm in args.lambdas]
            value, why = bd_rate(base, test, higher_is_better=k not in LOWER_BETTER)
            bd[target][k] = {"bd_rate": value, "why_not": why}
        lines.append(f"| {target} | " + " | ".join(f"{bd[target][k]['bd_rate']:+.1f}" if bd[target][k]["bd_rate"]
                                                  is not None else "n/a" for k in names) + " |")
    notes = sorted({f"{t} {k}: {v['why_not']}" for t, d in bd.items() for k, v in d.items() if v["why_not"]})
    if notes:
        lines += ["", "n/a: " + "; ".join(notes)]
    return {"table": table, "bd_rate": bd, "monotone": mono, "markdown": "\n".join(lines) + "\n"}


def plots(out: Path, curves: dict, table: dict, names: list[str], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for label, c in curves.items():
        steps = [p["step"] for p in c]
        axes[0].plot(steps, [p["psnr"] for p in c], "o-", ms=2, label=label)
        axes[1].plot(steps, [p["bpp"] for p in c], "o-", ms=2, label=label)
    axes[0].set_ylabel("validation PSNR (dB)")
    axes[1].set_ylabel("validation bpp (estimated)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{MODEL} training against the originals")
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    plt.close(fig)
    shown = [k for k in RD_PLOTS if k in names]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 3.6), squeeze=False)
    for ax, k in zip(axes[0], shown):
        for target in args.targets:
            pts = sorted((table[f"{lm}/{target}"]["bpp"]["mean"], table[f"{lm}/{target}"][k]["mean"])
                         for lm in args.lambdas)
            ax.plot(*zip(*pts), "o-", ms=3, label=target)
        ax.set_xlabel("bpp")
        ax.set_ylabel(k + (" (lower is better)" if k in LOWER_BETTER else " (higher is better)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rd.png", dpi=120)
    plt.close(fig)


def crops(path: Path, evals: list, args, side: int = 96) -> None:
    """Original and every target's decoded image (seed 0) at the middle lambda, centre crops at 2x."""
    from PIL import Image

    lm = sorted(args.lambdas)[len(args.lambdas) // 2]
    rows = []
    for file, gt in evals[:3]:
        tiles = [gt] + [np.asarray(Image.open(Path(args.out) / "runs" / _name(lm, t, args.seeds[0]) / "decoded"
                                              / f"{file}.png").convert("RGB")) for t in args.targets]
        h, w = gt.shape[:2]
        top, left = (h - side) // 2, (w - side) // 2
        rows.append(np.concatenate([t[top:top + side, left:left + side] for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def _name(lmbda: float, target: str, seed: int) -> str:
    return f"l{lmbda:g}_{target.replace(':', '_').replace('=', '')}_seed{seed}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="training photos (searched recursively)")
    p.add_argument("--eval", required=True, help="evaluation photos, e.g. Kodak24")
    p.add_argument("--out", required=True, help="results folder (rerun to resume)")
    p.add_argument("--targets", nargs="+", default=["gt", "jnd", "directed:gain=1", "directed:gain=2"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--estimator", default="default", help="JND estimator: pretrained name or .safetensors path")
    p.add_argument("--channels", nargs=2, type=int, default=[128, 192], metavar=("N", "M"),
                   help="widths of the transforms (default: CompressAI's quality 1-5)")
    p.add_argument("--lambdas", nargs="+", type=float, default=[0.0035, 0.0067, 0.013])
    p.add_argument("--pretrain-lambda", type=float, help="default: the middle of --lambdas")
    p.add_argument("--train-images", type=int, default=300)
    p.add_argument("--val-images", type=int, default=8, help="training photos held back for the curves")
    p.add_argument("--val-side", type=int, default=256, help="central crop of the validation photos")
    p.add_argument("--eval-images", type=int, help="use this many evaluation images, spread over the sorted list")
    p.add_argument("--patch", type=int, default=128, help="training crop side (a multiple of 64)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4, help="pretraining learning rate")
    p.add_argument("--pretrain-steps", type=int, default=20000)
    p.add_argument("--adapt-steps", type=int, default=2000)
    p.add_argument("--adapt-lr", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=500, help="fine-tuning steps per target")
    p.add_argument("--finetune-lr", type=float, default=5e-5)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--metrics", nargs="+", default=["psnr_y", "ssim_y", "ms_ssim", "stlpips", "ssimulacra2", "flip"])
    p.add_argument("--pretrain-only", action="store_true", help="stop after pretraining and adaptation")
    args = p.parse_args(argv)
    args.channels = tuple(args.channels)
    if args.patch % 64:
        raise SystemExit(f"--patch {args.patch} must be a multiple of 64 (the codec's downsampling factor)")
    if "gt" not in args.targets:
        raise SystemExit("--targets must include gt: every other target is compared with it")
    if len(args.lambdas) < 2:
        raise SystemExit("--lambdas needs at least two rate points for a BD-rate")
    specs = [parse_transform(t) for t in args.targets if t != "gt"]  # a bad spec fails before hours of training
    args.pretrain_lambda = args.pretrain_lambda or sorted(args.lambdas)[len(args.lambdas) // 2]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_training(args)
    pre = train(out / "pretrain", None, args.pretrain_lambda, "gt", 0, args.pretrain_steps, args.lr, data, args, True)
    adapted = {lm: train(out / f"adapt_l{lm:g}", pre, lm, "gt", 0, args.adapt_steps, args.adapt_lr, data, args, True)
               for lm in args.lambdas}
    curves = {"pretrain": json.loads((out / "pretrain" / "train.json").read_text())["curve"]}
    adapt_curves = {lm: json.loads((adapted[lm].parent / "train.json").read_text())["curve"] for lm in args.lambdas}
    curves.update({f"lambda {lm:g}": [{**c, "step": c["step"] + args.pretrain_steps} for c in adapt_curves[lm]]
                   for lm in args.lambdas})
    if args.pretrain_only:
        return 0
    estimator = resolve_estimator(args.estimator)
    add_targets(data, specs, estimator, out)
    suite = MetricSuite(args.metrics)
    evals = [(f.stem, eight_bit(read_image(f))) for f in spread(sorted(list_images(args.eval)), args.eval_images)]
    if not evals:
        raise BenchError(f"no evaluation images under {args.eval}")
    results = {}
    for lm in args.lambdas:
        for seed in args.seeds:
            for target in args.targets:
                name = _name(lm, target, seed)
                weights = train(out / "runs" / name, adapted[lm], lm, target, seed, args.steps, args.finetune_lr,
                                data, args, False)
                results[(lm, target, seed)] = evaluate(name, weights, evals, suite, args)
    rep = report(results, curves, adapt_curves, suite.names, args)
    plots(out, curves, rep["table"], suite.names, args)
    crops(out / "crops.png", evals, args)
    write_json(out / "report.json", {"args": {k: v for k, v in vars(args).items()}, "machine": machine(),
                                     "curves": curves, "estimator": estimator,
                                     "estimator_sha256": hashlib.sha256(Path(estimator).read_bytes()).hexdigest(),
                                     "train_files": data["files"], "val_files": data["val_files"],
                                     **{k: v for k, v in rep.items() if k != "markdown"}})
    write_text(out / "report.md", rep["markdown"])
    print(rep["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
