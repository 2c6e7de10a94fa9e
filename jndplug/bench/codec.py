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

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from jndplug.bench.codec_report import MODEL, crops, plots, report
from jndplug.bench.common import BenchError, finished_run, machine, resolve_estimator, spread, write_json, write_text
from jndplug.bench.recipe import add_targets, run_name, save_atomic, to_tensor, training_files, transform_specs
from jndplug.bench.settings import CODEC_FACTOR as FACTOR, CodecSettings as Settings
from jndplug.imageio import list_images, read_image, to_8bit, write_image
from jndplug.metrics import MetricSuite
from jndplug.pixels import centre_crop, psnr

FORMAT = "jndplug-bench-codec/2"
# what a fine-tune's result depends on: a finished run with other values is not mixed in
RUN_KEYS = ("channels", "lambdas", "pretrain_lambda", "train_images", "val_images", "eval_images", "patch", "batch",
            "lr", "pretrain_steps", "adapt_steps", "adapt_lr", "steps", "finetune_lr", "metrics")


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
