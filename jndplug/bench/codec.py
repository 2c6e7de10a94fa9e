"""``jndplug bench codec``: a learned codec trained to a working rate-distortion point, then fine-tuned per target.

The codec half of the question in docs/directed.md: does fine-tuning a trained codec against a
JND target (the distortion term compares the reconstruction with the target; rate term, model and
input unchanged) give a better rate-perception curve, and at what cost in PSNR? This command

1. pretrains one bmshj2018-hyperprior against the originals at ``--pretrain-lambda``, recording a
   validation curve (PSNR and estimated bpp on training photos held back from training);
2. adapts that codec to each of ``--lambdas`` (against the originals), the usual way to get a
   family of rate points from one long run; the validation points of the adapted codecs show
   whether bpp falls and PSNR rises monotonically with lambda (a working RD point);
3. fine-tunes each adapted codec per target and seed with seed-paired crops: ``gt`` (the
   baseline's own continuation), ``jnd`` (the seed paper's JND image), ``directed:gain=G``;
   targets are the ``jndplug bench screen`` transforms of the whole training photos, 8-bit;
   the step is the CompressAI integration's (``jndplug.integrations.compressai.steps``);
4. codes ``--eval`` for real (bpp from the bitstreams' bytes), scores the decoded images with
   ``jndplug.metrics`` against the originals and reports BD-rates of every target against ``gt``.

Layout of ``--out``::

    pretrain/, adapt_lLAMBDA/   checkpoint.pt (every --val-every steps), final.pt, train.json
    runs/NAME/                  the fine-tune's checkpoints, decoded/*.png, result.json (NAME: lLAMBDA_TARGET_seedS)
    targets_*.npz               the target images of the training photos
    codec_results.json, codec_results.md, curve.png, rd.png, crops.png

Resumable: training continues from its last checkpoint, finished runs are skipped, and a run
finished with other settings is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from jndplug.bench.common import (BenchError, finished_run, machine, resolve_estimator, spread, summarize, write_json,
                                  write_text)
from jndplug.bench.recipe import add_targets, run_name, save_atomic, to_tensor, training_files, transform_specs
from jndplug.imageio import list_images, read_image, to_8bit, write_image
from jndplug.metrics import METRICS, MetricSuite
from jndplug.pixels import centre_crop, psnr

FORMAT = "jndplug-bench-codec/2"
MODEL = "bmshj2018-hyperprior"
RD_PLOTS = ("psnr_y", "stlpips", "ssimulacra2")
FACTOR = 64  # the model's downsampling factor
# what a fine-tune's result depends on: a finished run with other values is not mixed in
RUN_KEYS = ("channels", "lambdas", "pretrain_lambda", "train_images", "val_images", "eval_images", "patch", "batch",
            "lr", "pretrain_steps", "adapt_steps", "adapt_lr", "steps", "finetune_lr", "metrics")


@dataclass
class Settings:
    """One ``bench codec`` run; the field names are the command's flags."""

    train: str
    eval: str
    out: str = "bench-codec"
    targets: list[str] = field(default_factory=lambda: ["gt", "jnd", "directed:gain=1", "directed:gain=2"])
    seeds: list[int] = field(default_factory=lambda: [0])
    estimator: str = "default"
    channels: list[int] = field(default_factory=lambda: [128, 192])
    lambdas: list[float] = field(default_factory=lambda: [0.0035, 0.0067, 0.013])
    pretrain_lambda: float | None = None
    train_images: int = 300
    val_images: int = 8
    val_side: int = 256
    eval_images: int | None = None
    patch: int = 128
    batch: int = 8
    lr: float = 3e-4
    pretrain_steps: int = 20000
    adapt_steps: int = 2000
    adapt_lr: float = 1e-4
    steps: int = 500
    finetune_lr: float = 5e-5
    val_every: int = 250
    metrics: list[str] = field(default_factory=lambda: ["psnr_y", "ssim_y", "ms_ssim", "stlpips", "ssimulacra2",
                                                        "flip"])
    pretrain_only: bool = False
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Settings("", "")
    p.add_argument("--train", required=True, help="training photos (searched recursively)")
    p.add_argument("--eval", required=True, help="evaluation photos, e.g. Kodak24")
    p.add_argument("--out", default=d.out, help="results folder (rerun to resume)")
    p.add_argument("--targets", nargs="+", default=d.targets, help="gt (required) and screen transforms: jnd, "
                                                                  "directed:gain=G, usm ...")
    p.add_argument("--seeds", nargs="+", type=int, default=d.seeds)
    p.add_argument("--estimator", default=d.estimator, help="JND estimator: pretrained name or .safetensors path")
    p.add_argument("--channels", nargs=2, type=int, default=d.channels, metavar=("N", "M"),
                   help="widths of the transforms (default: CompressAI's quality 1-5)")
    p.add_argument("--lambdas", nargs="+", type=float, default=d.lambdas)
    p.add_argument("--pretrain-lambda", type=float, help="default: the middle of --lambdas")
    p.add_argument("--train-images", type=int, default=d.train_images)
    p.add_argument("--val-images", type=int, default=d.val_images, help="training photos held back for the curves")
    p.add_argument("--val-side", type=int, default=d.val_side, help="central crop of the validation photos")
    p.add_argument("--eval-images", type=int, help="use this many evaluation images, spread over the sorted list")
    p.add_argument("--patch", type=int, default=d.patch, help=f"training crop side (a multiple of {FACTOR})")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr, help="pretraining learning rate")
    p.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps)
    p.add_argument("--adapt-steps", type=int, default=d.adapt_steps)
    p.add_argument("--adapt-lr", type=float, default=d.adapt_lr)
    p.add_argument("--steps", type=int, default=d.steps, help="fine-tuning steps per target")
    p.add_argument("--finetune-lr", type=float, default=d.finetune_lr)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--metrics", nargs="+", default=d.metrics, choices=list(METRICS), metavar="METRIC")
    p.add_argument("--pretrain-only", action="store_true", help="stop after pretraining and adaptation")
    p.add_argument("--device", default=d.device, help="training device: cpu, cuda, cuda:1 ... (default: cuda if "
                                                      "available); entropy coding and metrics run on the CPU")


def build(channels) -> torch.nn.Module:
    try:
        import jndplug.integrations.compressai  # noqa: F401  (imports compressai without its import-time warning)
        from compressai.registry import MODELS
    except ImportError as exc:
        raise BenchError(f"the codec benchmark needs CompressAI: pip install 'jndplug[compressai]' ({exc})") from None
    return MODELS[MODEL](*channels)


def _fits(side: int):
    from PIL import Image

    def fits(path: Path) -> bool:
        with Image.open(path) as im:
            return min(im.size) >= side

    return fits


def load_training(s: Settings) -> dict:
    train_files, val_files = training_files(s.train, s.train_images, s.val_images, _fits(s.patch),
                                            f" of at least {s.patch} px")
    data = {"gt": [to_8bit(read_image(f)) for f in tqdm(train_files, desc="training photos", unit="img")],
            "files": [str(f) for f in train_files], "val_files": [str(f) for f in val_files]}
    data["val"] = torch.stack([to_tensor(centre_crop(to_8bit(read_image(f)), s.val_side, FACTOR, square=True))
                               for f in val_files])
    return data


def batch(data: dict, target: str, rng: np.random.Generator, s: Settings):
    """Input crops and the same crops of the target image: random photo, position, flip and rotation."""
    p, xs, ys = s.patch, [], []
    for _ in range(s.batch):
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
    val = data["val"].to(next(net.parameters()).device)
    out = net(val)
    net.train()
    n, _, h, w = val.shape
    bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / (n * h * w)
    x_hat = out["x_hat"].clamp(0, 1)
    return {"psnr": float(np.mean([psnr(a, b) for a, b in zip(x_hat, val)])), "bpp": float(bpp)}


@dataclass
class Stage:
    """One training stage: where, from what, at which lambda, against which target, how long."""

    folder: Path
    init: Path | None
    lmbda: float
    target: str
    seed: int
    steps: int
    lr: float
    curve: bool  # record validation points (pretraining and adaptation)


def train(stage: Stage, data: dict, s: Settings) -> Path:
    """Train (resumably) and return ``folder/final.pt``."""
    from compressai.losses import RateDistortionLoss

    from jndplug.integrations.compressai.steps import make_optimizers, train_step

    final = stage.folder / "final.pt"
    if final.is_file():
        return final
    stage.folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(stage.seed)
    net = build(s.channels).to(s.device)
    if stage.init is not None:
        net.load_state_dict(torch.load(stage.init, weights_only=True, map_location=s.device))
    opts = make_optimizers(net, stage.lr, 1e-3)
    # halve twice near the end, as in bench sr, so every run ends at the same small step size
    steps = stage.steps
    sched = torch.optim.lr_scheduler.MultiStepLR(opts["net"], [int(0.7 * steps), int(0.9 * steps)], 0.5)
    crit = RateDistortionLoss(lmbda=stage.lmbda)
    state = {"step": 0, "curve": [], "seconds": 0.0}
    ckpt = stage.folder / "checkpoint.pt"
    if ckpt.is_file():
        c = torch.load(ckpt, weights_only=True, map_location=s.device)
        net.load_state_dict(c["net"])
        opts["net"].load_state_dict(c["opt"])
        opts["aux"].load_state_dict(c["aux"])
        sched.load_state_dict(c["sched"])
        state = c["state"]
    t0 = time.perf_counter() - state["seconds"]
    bar = tqdm(total=steps, initial=state["step"], desc=stage.folder.name, unit="step")
    while state["step"] < steps:
        # seed and step fix the crops: every target of one seed sees the same crops in the same order
        rng = np.random.default_rng((stage.seed, state["step"]))
        x, y = (t.to(s.device) for t in batch(data, stage.target, rng, s))
        values = train_step(net, crit, opts, x, y, 1.0)
        sched.step()
        state["step"] += 1
        bar.update(1)
        if state["step"] % s.val_every == 0 or state["step"] == steps:
            state["seconds"] = time.perf_counter() - t0
            if stage.curve:
                state["curve"].append({"step": state["step"], **validate(net, data), "seconds": state["seconds"]})
                bar.set_postfix(psnr=f"{state['curve'][-1]['psnr']:.2f}", bpp=f"{state['curve'][-1]['bpp']:.3f}")
            else:
                bar.set_postfix(loss=f"{values['loss']:.3f}")
            save_atomic(ckpt, {"net": net.state_dict(), "opt": opts["net"].state_dict(),
                               "aux": opts["aux"].state_dict(), "sched": sched.state_dict(), "state": state})
    bar.close()
    write_json(stage.folder / "train.json", {"lmbda": stage.lmbda, "target": stage.target, "seed": stage.seed,
                                             "steps": steps, "lr": stage.lr, "curve": state["curve"],
                                             "seconds": state["seconds"]})
    save_atomic(final, net.state_dict())
    return final


def evaluate(name: str, weights: Path, evals: list, suite, s: Settings, settings: dict) -> dict:
    """Real entropy coding of every evaluation image; metrics of the decoded images."""
    from jndplug.integrations.compressai.evaluate import evaluate_image

    run = Path(s.out) / "runs" / name
    done = finished_run(run, settings)
    if done is not None:
        return done
    net = build(s.channels)
    net.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
    net.eval()
    net.update(force=True)
    rows = []
    for file, gt in tqdm(evals, desc=f"coding {name}", unit="img", leave=False):
        record, _, decoded = evaluate_image(net, gt, file)
        write_image(run / "decoded" / f"{file}.png", decoded)
        values, _ = suite(decoded, gt)
        rows.append({"file": file, "bpp": record["bpp"], **values})
    keys = ["bpp", *suite.names]
    result = {"format": FORMAT, "run": name, "settings": settings,
              "mean": {k: float(np.mean([r[k] for r in rows if r.get(k) is not None])) for k in keys},
              "per_image": rows}
    write_json(run / "result.json", result)
    return result


def check(s: Settings) -> list[tuple[str, dict]]:
    """Refuse settings that cannot give a result, before any training; returns the target transforms."""
    if s.patch % FACTOR:
        raise BenchError(f"--patch {s.patch} must be a multiple of {FACTOR} (the codec's downsampling factor)")
    if len(s.lambdas) < 2:
        raise BenchError("--lambdas needs at least two rate points for a BD-rate")
    return transform_specs(s.targets, untransformed=("gt",))


def run(s: Settings) -> dict:
    """Pretrain, adapt per lambda, fine-tune per target and seed, code, score and report; returns the report."""
    specs = check(s)
    s = dataclasses.replace(s, channels=list(s.channels),
                            pretrain_lambda=s.pretrain_lambda or sorted(s.lambdas)[len(s.lambdas) // 2])
    # checked before anything starts: a missing estimator must not surface after hours of pretraining
    estimator = None if s.pretrain_only else resolve_estimator(s.estimator)
    out = Path(s.out)
    data = load_training(s)
    out.mkdir(parents=True, exist_ok=True)
    pre = train(Stage(out / "pretrain", None, s.pretrain_lambda, "gt", 0, s.pretrain_steps, s.lr, True), data, s)
    adapted = {lm: train(Stage(out / f"adapt_l{lm:g}", pre, lm, "gt", 0, s.adapt_steps, s.adapt_lr, True), data, s)
               for lm in s.lambdas}
    curves = {"pretrain": json.loads((out / "pretrain" / "train.json").read_text())["curve"]}
    adapt_curves = {lm: json.loads((adapted[lm].parent / "train.json").read_text())["curve"] for lm in s.lambdas}
    curves.update({f"lambda {lm:g}": [{**c, "step": c["step"] + s.pretrain_steps} for c in adapt_curves[lm]]
                   for lm in s.lambdas})
    if s.pretrain_only:
        return {}
    add_targets(data, specs, estimator, out)
    suite = MetricSuite(s.metrics)
    evals = [(f.stem, to_8bit(read_image(f))) for f in spread(sorted(list_images(s.eval)), s.eval_images)]
    if not evals:
        raise BenchError(f"no evaluation images under {s.eval}")
    settings = {k: getattr(s, k) for k in RUN_KEYS}
    settings["estimator_sha256"] = hashlib.sha256(Path(estimator).read_bytes()).hexdigest()
    results = {}
    for lm in s.lambdas:
        for seed in s.seeds:
            for target in s.targets:
                name = run_name(f"l{lm:g}", target=target, seed=seed)
                weights = train(Stage(out / "runs" / name, adapted[lm], lm, target, seed, s.steps, s.finetune_lr,
                                      False), data, s)
                results[(lm, target, seed)] = evaluate(name, weights, evals, suite, s, settings)
    rep = report(results, curves, adapt_curves, suite.names, s)
    plots(out, curves, rep["table"], suite.names, s)
    crops(out / "crops.png", evals, s)
    result = {"format": FORMAT, "settings": dataclasses.asdict(s), "machine": machine(), "curves": curves,
              "estimator": estimator, "estimator_sha256": settings["estimator_sha256"],
              "train_files": data["files"], "val_files": data["val_files"],
              **{k: v for k, v in rep.items() if k != "markdown"}}
    write_json(out / "codec_results.json", result)
    write_text(out / "codec_results.md", rep["markdown"])
    print(rep["markdown"])
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


def report(results: dict, curves: dict, adapted: dict, names: list[str], s: Settings) -> dict:
    lines = [f"{MODEL} with {s.channels[0]}/{s.channels[1]} channels; pretrained {s.pretrain_steps} steps at "
             f"lambda {s.pretrain_lambda}, adapted {s.adapt_steps} steps per lambda, fine-tuned "
             f"{s.steps} steps per target (seeds {' '.join(map(str, s.seeds))}); evaluated with real entropy "
             f"coding on {len(next(iter(results.values()))['per_image'])} images of {s.eval}.\n"]
    pre = curves["pretrain"]
    lines.append(f"Pretraining: validation PSNR {pre[-1]['psnr']:.2f} dB at {pre[-1]['bpp']:.3f} bpp (estimated) "
                 f"after {pre[-1]['step']} steps; over the last fifth of the curve PSNR changed "
                 f"{pre[-1]['psnr'] - pre[max(0, int(0.8 * len(pre)) - 1)]['psnr']:+.2f} dB and bpp "
                 f"{pre[-1]['bpp'] - pre[max(0, int(0.8 * len(pre)) - 1)]['bpp']:+.3f}.\n")
    pts = [(lm, adapted[lm][-1]) for lm in sorted(s.lambdas)]
    mono = all(b["bpp"] > a["bpp"] and b["psnr"] > a["psnr"] for (_, a), (_, b) in zip(pts, pts[1:]))
    lines.append("Adapted codecs (validation): " + "; ".join(f"lambda {lm}: {v['psnr']:.2f} dB at {v['bpp']:.3f} bpp"
                                                            for lm, v in pts)
                 + f". bpp and PSNR rise monotonically with lambda: {'yes' if mono else 'NO'}.\n")
    head = "| lambda | target | bpp | " + " | ".join(names) + " |"
    lines += [head, "|" + "---|" * (len(names) + 3)]
    table = {}
    for lm in sorted(s.lambdas):
        for target in s.targets:
            rs = [results[(lm, target, s)]["mean"] for s in s.seeds]
            entry = {k: summarize([r[k] for r in rs]) for k in ["bpp", *names]}
            table[f"{lm}/{target}"] = entry
            lines.append(f"| {lm} | {target} | {entry['bpp']['mean']:.4f} | "
                         + " | ".join(f"{entry[k]['mean']:.4f}" for k in names) + " |")
    lines += ["", "BD-rate against `gt` (%, negative: fewer bits for the same score; log-rate interpolated "
                  "piecewise-linearly over the shared range):", "",
              "| target | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    bd = {}
    for target in s.targets:
        if target == "gt":
            continue
        bd[target] = {}
        for k in names:
            base = [(table[f"{lm}/gt"]["bpp"]["mean"], table[f"{lm}/gt"][k]["mean"]) for lm in s.lambdas]
            test = [(table[f"{lm}/{target}"]["bpp"]["mean"], table[f"{lm}/{target}"][k]["mean"]) for lm in s.lambdas]
            value, why = bd_rate(base, test, higher_is_better=METRICS[k].higher_is_better)
            bd[target][k] = {"bd_rate": value, "why_not": why}
        lines.append(f"| {target} | " + " | ".join(f"{bd[target][k]['bd_rate']:+.1f}" if bd[target][k]["bd_rate"]
                                                  is not None else "n/a" for k in names) + " |")
    notes = sorted({f"{t} {k}: {v['why_not']}" for t, d in bd.items() for k, v in d.items() if v["why_not"]})
    if notes:
        lines += ["", "n/a: " + "; ".join(notes)]
    return {"table": table, "bd_rate": bd, "monotone": mono, "markdown": "\n".join(lines) + "\n"}


def plots(out: Path, curves: dict, table: dict, names: list[str], s: Settings) -> None:
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
        for target in s.targets:
            pts = sorted((table[f"{lm}/{target}"]["bpp"]["mean"], table[f"{lm}/{target}"][k]["mean"])
                         for lm in s.lambdas)
            ax.plot(*zip(*pts), "o-", ms=3, label=target)
        ax.set_xlabel("bpp")
        ax.set_ylabel(k + (" (higher is better)" if METRICS[k].higher_is_better else " (lower is better)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rd.png", dpi=120)
    plt.close(fig)


def crops(path: Path, evals: list, s: Settings, side: int = 96) -> None:
    """Original and every target's decoded image (seed 0) at the middle lambda, centre crops at 2x."""
    from PIL import Image

    lm = sorted(s.lambdas)[len(s.lambdas) // 2]
    rows = []
    for file, gt in evals[:3]:
        runs = [Path(s.out) / "runs" / run_name(f"l{lm:g}", target=t, seed=s.seeds[0]) for t in s.targets]
        tiles = [gt] + [read_image(run / "decoded" / f"{file}.png") for run in runs]
        rows.append(np.concatenate([centre_crop(t, side) for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)
