"""Converged super-resolution restorers fine-tuned against JND targets, scored against the true ground truth.

The question (docs/directed.md): once a restorer trained against the ground truth has converged,
does fine-tuning it against a JND target make it look better to people, and at what fidelity cost?
For every architecture this script

1. pretrains one network against the ground truth (x4, L1), recording a validation PSNR-Y curve on
   training photos held back from training (``pretrain_ARCH/curve.png``);
2. fine-tunes that one checkpoint per target and seed, the same number of steps and the same
   schedule for each: ``gt`` (the baseline's own continuation), ``usm`` (BasicSR's unsharp-masked
   ground truth, Real-ESRGAN's ``gt_usm``), ``jnd`` (the seed paper's estimated JND image),
   ``directed:gain=G`` (the perception-directed JND image) and ``tolerant`` (``JNDTolerantLoss``
   against the ground truth with the estimator's map); the targets are the ``jndplug bench screen``
   transforms applied to the ground-truth photos, rounded to 8 bits as ``jndplug precompute`` does;
3. scores every fine-tune on the central crops of the test sets with ``jndplug.metrics``;
4. runs ``jndplug bench screen`` on the pretrained network's own test outputs and reports how often
   its predicted sign of each metric change agrees with the fine-tunes' measured one.

Writes ``report.md``, ``report.json``, ``pd_plane.png`` and ``crops_ARCH.png`` under ``--out``.
Resumable: pretraining checkpoints at every validation and finished fine-tunes are skipped.

    python benchmarks/converged_sr.py --train ../shared/data/train --test ../shared/data/test \\
        --test-sets CSet5 CSet14 --out /tmp/converged
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from jndplug.basicsr_compat import install_torchvision_shim
from jndplug.bench.common import BenchError, machine, resolve_estimator, spread, summarize, write_json, write_text
from jndplug.bench.screen import Transforms, parse_transform
from jndplug.imageio import list_images, read_image, write_image
from jndplug.losses import JNDTolerantLoss
from jndplug.metrics import MetricSuite, rgb_to_y

SCALE = 4
PD = ("psnr_y", "stlpips")  # the perception-distortion plane: fidelity against a perceptual distance
LOWER_BETTER = {"niqe", "flip", "stlpips", "lpips", "dists"}


def build(arch: str, blocks: int, features: int) -> torch.nn.Module:
    install_torchvision_shim()  # basicsr 1.4.2 imports a torchvision module that no longer exists
    from basicsr.archs.edsr_arch import EDSR
    from basicsr.archs.srresnet_arch import MSRResNet

    if arch == "edsr":  # EDSR-baseline
        return EDSR(3, 3, num_feat=features, num_block=blocks, upscale=SCALE, res_scale=1.0)
    if arch == "srresnet":
        return MSRResNet(3, 3, num_feat=features, num_block=blocks, upscale=SCALE)
    raise BenchError(f"unknown arch {arch!r}: edsr or srresnet")


def downscale(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(GT mod-cropped to the scale, its MATLAB-style bicubic x1/4), uint8, as BasicSR's data are made."""
    install_torchvision_shim()
    from basicsr.utils.matlab_functions import imresize

    h, w = (s // SCALE * SCALE for s in gt.shape[:2])
    gt = gt[:h, :w]
    lq = np.clip(np.round(imresize(gt.astype(np.float64) / 255.0, 1 / SCALE) * 255), 0, 255).astype(np.uint8)
    return gt, lq


def centre(a: np.ndarray, side: int) -> np.ndarray:
    h, w = a.shape[:2]
    ch, cw = min(side, h) // SCALE * SCALE, min(side, w) // SCALE * SCALE
    top, left = (h - ch) // 2, (w - cw) // 2
    return a[top:top + ch, left:left + cw]


def eight_bit(a: np.ndarray) -> np.ndarray:
    a = a if a.dtype == np.uint8 else np.round(a / 257.0).astype(np.uint8)
    return np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a


def to_t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0


def load_training(args) -> dict:
    """Training photos and their LQ; every k-th chosen photo is held back for the validation curve."""
    files = sorted(list_images(args.train))
    if len(files) < args.train_images + args.val_images:
        raise BenchError(f"{args.train} holds {len(files)} images; --train-images {args.train_images} and "
                         f"--val-images {args.val_images} need {args.train_images + args.val_images}")
    chosen = spread(files, args.train_images + args.val_images)
    k = max(1, len(chosen) // max(1, args.val_images))
    val_files = chosen[::k][:args.val_images]
    train_files = [f for f in chosen if f not in set(val_files)]
    data = {"gt": [], "lq": [], "files": [str(f) for f in train_files], "val_files": [str(f) for f in val_files]}
    for f in tqdm(train_files, desc="training photos", unit="img"):
        gt, lq = downscale(eight_bit(read_image(f)))
        data["gt"].append(gt)
        data["lq"].append(lq)
    data["val"] = [downscale(centre(eight_bit(read_image(f)), args.val_side)) for f in val_files]
    return data


def add_targets(data: dict, specs, estimator: str, cache_dir: Path) -> None:
    """The target image of every transform and the estimator's JND map, per training photo.

    Kept in ``cache_dir`` under a name derived from the estimator file, the transforms and the
    photos, so the runs of several processes (one per architecture) and the final report share them.
    """
    import hashlib

    from jndplug.target import JNDTarget

    key = hashlib.sha256(Path(estimator).read_bytes()).hexdigest()[:16] + json.dumps(
        [[label, opts] for label, opts in specs] + data["files"], sort_keys=True)
    cache = cache_dir / f"targets_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            n = len(data["gt"])
            data["targets"] = {label: [z[f"{label}/{i}"] for i in range(n)] for label, _ in specs}
            data["map"] = [z[f"map/{i}"] for i in range(n)]
        return
    transforms, jnd = Transforms(specs, estimator), JNDTarget(estimator, kind="jnd")
    data["targets"] = {label: [] for label, _ in specs}
    data["map"] = []
    for gt in tqdm(data["gt"], desc="targets", unit="img"):
        for label, y in transforms(gt).items():
            data["targets"][label].append(y)
        data["map"].append(jnd.jnd_map(to_t(gt)[None])[0, 0].numpy().astype(np.float16))
    arrays = {f"{label}/{i}": a for label, ims in data["targets"].items() for i, a in enumerate(ims)}
    arrays.update({f"map/{i}": m for i, m in enumerate(data["map"])})
    tmp = cache.with_name(cache.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(cache)


def batch(data: dict, target: str, rng: np.random.Generator, args):
    """A batch of LQ/target/map patches: random image, position, flip and rotation."""
    p, lp = args.patch, args.patch // SCALE
    xs, ys, ms = [], [], []
    for _ in range(args.batch):
        i = int(rng.integers(len(data["lq"])))
        lq = data["lq"][i]
        top, left = int(rng.integers(lq.shape[0] - lp + 1)), int(rng.integers(lq.shape[1] - lp + 1))
        src = data["gt"][i] if target in ("gt", "tolerant") else data["targets"][target][i]
        x = lq[top:top + lp, left:left + lp]
        y = src[top * SCALE:top * SCALE + p, left * SCALE:left * SCALE + p]
        m = (data["map"][i] if "map" in data else np.zeros(src.shape[:2], np.float16))[
            top * SCALE:top * SCALE + p, left * SCALE:left * SCALE + p, None]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        for j, a in enumerate((x, y, m)):
            a = np.rot90(a, k)
            a = a[:, ::-1] if flip else a
            (xs, ys, ms)[j].append(np.ascontiguousarray(a))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(np.stack(ys)).permute(0, 3, 1, 2).float() / 255.0
    m = torch.from_numpy(np.stack(ms).astype(np.float32)).permute(0, 3, 1, 2)
    return x, y, m


@torch.no_grad()
def upscale(net, lq: np.ndarray) -> np.ndarray:
    out = net(to_t(lq)[None]).clamp(0, 1)[0]
    return (out.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    ya, yb = rgb_to_y(a)[SCALE:-SCALE, SCALE:-SCALE], rgb_to_y(b)[SCALE:-SCALE, SCALE:-SCALE]
    return float(10 * np.log10(255.0 ** 2 / np.mean((ya - yb) ** 2)))


def validate(net, data) -> float:
    net.eval()
    value = float(np.mean([psnr_y(upscale(net, lq), gt) for gt, lq in data["val"]]))
    net.train()
    return value


def pretrain(arch: str, data: dict, args) -> Path:
    """One network per architecture against the ground truth; checkpoint at every validation."""
    folder = Path(args.out) / f"pretrain_{arch}"
    final = folder / "final.pt"
    if final.is_file():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = build(arch, args.blocks, args.features)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.99))
    # halve twice near the end, as BasicSR's multistep recipes do
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.7 * args.pretrain_steps), int(0.9 * args.pretrain_steps)],
                                                 0.5)
    state = {"step": 0, "curve": []}
    ckpt = folder / "checkpoint.pt"
    if ckpt.is_file():
        c = torch.load(ckpt, weights_only=True)
        net.load_state_dict(c["net"])
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        state = c["state"]
    t0 = time.perf_counter()
    bar = tqdm(total=args.pretrain_steps, initial=state["step"], desc=f"pretrain {arch}", unit="step")
    while state["step"] < args.pretrain_steps:
        rng = np.random.default_rng((0, state["step"]))
        x, y, _ = batch(data, "gt", rng, args)
        loss = F.l1_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        state["step"] += 1
        bar.update(1)
        if state["step"] % args.val_every == 0 or state["step"] == args.pretrain_steps:
            state["curve"].append({"step": state["step"], "val_psnr_y": validate(net, data),
                                   "seconds": time.perf_counter() - t0})
            bar.set_postfix(val=f"{state['curve'][-1]['val_psnr_y']:.3f}")
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "state": state}, tmp)
            tmp.replace(ckpt)
    bar.close()
    write_json(folder / "curve.json", state["curve"])
    plot_curve(folder / "curve.png", arch, state["curve"])
    tmp = final.with_suffix(".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(final)
    return final


def plot_curve(path: Path, arch: str, curve: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([c["step"] for c in curve], [c["val_psnr_y"] for c in curve], "o-", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("validation PSNR-Y (dB)")
    ax.set_title(f"{arch} x4 pretraining against the ground truth")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def finetune(arch: str, target: str, seed: int, init: Path, data: dict, tests: list, suite, args) -> dict:
    run = Path(args.out) / "runs" / f"{arch}_{target.replace(':', '_').replace('=', '')}_seed{seed}"
    if (run / "result.json").is_file():
        return json.loads((run / "result.json").read_text())
    torch.manual_seed(seed)
    net = build(arch, args.blocks, args.features)
    net.load_state_dict(torch.load(init, weights_only=True))
    opt = torch.optim.Adam(net.parameters(), lr=args.finetune_lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.8 * args.finetune_steps)], 0.5)
    tolerant = JNDTolerantLoss(None, kind="l1") if target == "tolerant" else None
    t0 = time.perf_counter()
    for step in tqdm(range(args.finetune_steps), desc=run.name, unit="step", leave=False):
        # seed and step fix the batch: every target of one seed sees the same patches in the same order
        x, y, m = batch(data, target, np.random.default_rng((1000 + seed, step)), args)
        pred = net(x)
        loss = tolerant(pred, y, jnd_map=m) if tolerant is not None else F.l1_loss(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_seconds = time.perf_counter() - t0
    net.eval()
    rows = []
    for name, gt, lq in tests:
        out = upscale(net, lq)
        write_image(run / "outputs" / f"{name}.png", out)
        values, _ = suite(out, gt)
        rows.append({"file": name, **values})
    result = {"arch": arch, "target": target, "seed": seed, "train_seconds": train_seconds,
              "steps": args.finetune_steps, "mean": {m: float(np.mean([r[m] for r in rows if r.get(m) is not None]))
                                                     for m in suite.names},
              "per_image": rows}
    write_json(run / "result.json", result)
    return result


def load_tests(args) -> list[tuple[str, np.ndarray, np.ndarray]]:
    tests = []
    for s in args.test_sets:
        folder = Path(args.test) / s
        for f in sorted(list_images(folder)):
            gt, lq = downscale(centre(eight_bit(read_image(f)), args.crop))
            tests.append((f"{s}/{f.stem}", gt, lq))
    if not tests:
        raise BenchError(f"no test images under {args.test} {args.test_sets}")
    return tests


def screen(arch: str, init: Path, tests: list, specs: list[str], args) -> dict:
    """``jndplug bench screen`` on the pretrained network's test outputs (its own command, in-process)."""
    folder = Path(args.out) / f"screen_{arch}"
    if (folder / "screen.json").is_file():
        return json.loads((folder / "screen.json").read_text())
    net = build(arch, args.blocks, args.features)
    net.load_state_dict(torch.load(init, weights_only=True))
    net.eval()
    for name, gt, lq in tests:
        write_image(folder / "gt" / f"{name}.png", gt)
        write_image(folder / "outputs" / f"{name}.png", upscale(net, lq))
    from jndplug.bench import screen as screen_bench

    p = argparse.ArgumentParser()
    screen_bench.add_arguments(p)
    ns = p.parse_args(["--gt", str(folder / "gt"), "--outputs", str(folder / "outputs"), "--out", str(folder),
                       "--estimator", args.estimator, "--crop-border", str(SCALE), "--metrics", *args.metrics,
                       "--transforms", *specs])
    return screen_bench.run(ns)


def report(results: list[dict], screens: dict, curves: dict, suite_names: list[str], tests, args) -> dict:
    table, lines = {}, []
    lines.append(f"Converged x4 restorers fine-tuned per target ({args.finetune_steps} steps each, seeds "
                 f"{' '.join(map(str, args.seeds))}); test: central {args.crop}px crops of "
                 f"{' + '.join(args.test_sets)} ({len(tests)} images), scored against the true ground truth.\n")
    for arch in args.archs:
        curve = curves[arch]
        last = [c["val_psnr_y"] for c in curve]
        tail = last[-1] - last[max(0, int(0.8 * len(last)) - 1)]
        lines.append(f"### {arch}\n\nPretraining: {curve[-1]['step']} steps, validation PSNR-Y {last[-1]:.3f} dB; "
                     f"change over the last fifth of the curve {tail:+.3f} dB.\n")
        rs = [r for r in results if r["arch"] == arch]
        base = {r["seed"]: r["mean"] for r in rs if r["target"] == "gt"}
        head = "| target | " + " | ".join(suite_names) + " | better than gt on every seed |"
        lines += [head, "|" + "---|" * (len(suite_names) + 2)]
        table[arch] = {}
        for target in args.targets:
            sub = [r for r in rs if r["target"] == target]
            cells, wins, entry = [], [], {}
            for m in suite_names:
                s = summarize([r["mean"][m] for r in sub])
                d = summarize([r["mean"][m] - base[r["seed"]][m] for r in sub])
                entry[m] = {"value": s, "delta": d}
                cells.append(f"{s['mean']:.4f} ({d['mean']:+.4f})" if target != "gt" else f"{s['mean']:.4f}")
                sign = -1 if m in LOWER_BETTER else 1
                if target != "gt" and all(sign * (r["mean"][m] - base[r["seed"]][m]) > 0 for r in sub):
                    wins.append(m)
            table[arch][target] = entry
            lines.append(f"| {target} | " + " | ".join(cells) + f" | {', '.join(wins) if target != 'gt' else ''} |")
        scr = screens.get(arch)
        if scr is not None:
            agree, total, detail = 0, 0, []
            for target in args.targets:
                if target in ("gt", "tolerant"):
                    continue
                pred = next((e for e in scr["summary"] if e["transform"] == target), None)
                if pred is None:
                    continue
                for m in suite_names:
                    p = pred["delta"].get(m)
                    f = table[arch][target][m]["delta"]["mean"]
                    if p is None or f is None:
                        continue
                    total += 1
                    agree += int(np.sign(p) == np.sign(f))
                    detail.append(f"{target} {m}: screen {p:+.4f}, fine-tune {f:+.4f}")
            lines.append(f"\nScreen on the pretrained network's outputs: predicted sign agrees with the fine-tunes' "
                         f"mean change in {agree} of {total} (target, metric) cases.\n")
            table[arch]["screen_agreement"] = {"agree": agree, "total": total, "detail": detail}
    text = "\n".join(lines) + "\n"
    return {"table": table, "markdown": text}


def pd_plane(path: Path, results: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.archs), figsize=(5.5 * len(args.archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], args.archs):
        for target in args.targets:
            sub = [r for r in results if r["arch"] == arch and r["target"] == target]
            xs, ys = [r["mean"][PD[0]] for r in sub], [r["mean"][PD[1]] for r in sub]
            ax.scatter(xs, ys, s=14, alpha=0.5)
            ax.scatter([np.mean(xs)], [np.mean(ys)], s=60, marker="x", color=ax.collections[-1].get_facecolor()[0],
                       label=target)
        ax.set_xlabel("PSNR-Y (dB), higher is better")
        ax.set_ylabel("ST-LPIPS, lower is better")
        ax.set_title(f"{arch}: seeds (dots) and means (crosses)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def crops(path: Path, arch: str, tests: list, args, side: int = 64) -> None:
    """GT and every target's seed-0 output, the same centre crop of the first few test images, at 3x."""
    from PIL import Image

    rows = []
    for name, gt, _ in tests[:3]:
        tiles = [gt]
        for target in args.targets:
            run = Path(args.out) / "runs" / f"{arch}_{target.replace(':', '_').replace('=', '')}_seed{args.seeds[0]}"
            tiles.append(np.asarray(Image.open(run / "outputs" / f"{name}.png").convert("RGB")))
        h, w = tiles[0].shape[:2]
        top, left = (h - side) // 2, (w - side) // 2
        rows.append(np.concatenate([t[top:top + side, left:left + side] for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="training photos (searched recursively)")
    p.add_argument("--test", required=True, help="folder whose sub-folders are the test sets")
    p.add_argument("--test-sets", nargs="+", default=["CSet5", "CSet14"])
    p.add_argument("--out", required=True, help="results folder (rerun to resume)")
    p.add_argument("--archs", nargs="+", default=["edsr", "srresnet"], choices=["edsr", "srresnet"])
    p.add_argument("--targets", nargs="+",
                   default=["gt", "usm", "jnd", "directed:gain=0.5", "directed:gain=1", "directed:gain=2", "tolerant"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--estimator", default="default", help="JND estimator: pretrained name or .safetensors path")
    p.add_argument("--train-images", type=int, default=200)
    p.add_argument("--val-images", type=int, default=10, help="training photos held back for the pretraining curve")
    p.add_argument("--val-side", type=int, default=192, help="central crop of the validation photos (GT pixels)")
    p.add_argument("--crop", type=int, default=256, help="central crop of the test images (GT pixels)")
    p.add_argument("--patch", type=int, default=64, help="GT patch side (LQ: a quarter)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--pretrain-steps", type=int, default=10000)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--finetune-steps", type=int, default=1000)
    p.add_argument("--finetune-lr", type=float, default=5e-5)
    p.add_argument("--metrics", nargs="+", default=["psnr_y", "ssim_y", "niqe", "flip", "stlpips", "ssimulacra2"])
    p.add_argument("--pretrain-only", action="store_true",
                   help="stop after pretraining (a rerun without it fine-tunes from the same checkpoints)")
    args = p.parse_args(argv)
    if args.patch % SCALE:
        raise SystemExit(f"--patch {args.patch} must be a multiple of {SCALE}")
    if "gt" not in args.targets:
        raise SystemExit("--targets must include gt: every other target is compared with it seed by seed")
    for t in args.targets:
        if t not in ("gt", "tolerant"):
            parse_transform(t)  # a bad spec fails before hours of training
    specs = [parse_transform(t) for t in args.targets if t not in ("gt", "tolerant")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_training(args)
    tests = load_tests(args)
    inits = {arch: pretrain(arch, data, args) for arch in args.archs}
    if args.pretrain_only:
        return 0
    add_targets(data, specs, resolve_estimator(args.estimator), out)
    suite = MetricSuite(args.metrics, crop_border=SCALE)
    results, screens, curves = [], {}, {}
    for arch, init in inits.items():
        curves[arch] = json.loads((init.parent / "curve.json").read_text())
        screens[arch] = screen(arch, init, tests, [t for t in args.targets if t not in ("gt", "tolerant")], args)
        for seed in args.seeds:
            for target in args.targets:
                results.append(finetune(arch, target, seed, init, data, tests, suite, args))
        crops(out / f"crops_{arch}.png", arch, tests, args)
    rep = report(results, screens, curves, suite.names, tests, args)
    if set(PD) <= set(suite.names):
        pd_plane(out / "pd_plane.png", results, args)
    else:
        print(f"no pd_plane.png: it needs the metrics {' and '.join(PD)}", file=sys.stderr)
    import hashlib

    estimator = resolve_estimator(args.estimator)
    write_json(out / "report.json", {"args": vars(args), "machine": machine(), "curves": curves, **rep,
                                     "estimator": estimator,
                                     "estimator_sha256": hashlib.sha256(Path(estimator).read_bytes()).hexdigest(),
                                     "train_files": data["files"], "val_files": data["val_files"]})
    write_text(out / "report.md", rep["markdown"])
    print(rep["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
