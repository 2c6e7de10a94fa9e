"""``jndplug bench sr``: the same super-resolution training against the ground truth and against JND images.

For every architecture, target (``gt``, then ``jnd`` at each strength) and seed, BasicSR trains
the network through ``jndplug.integrations.basicsr`` (the example option files with the sweep's
data, iterations, patch and batch; the JND runs differ only in the ``jnd_target`` block), then the
trained network upsamples every test image and ``jndplug.metrics`` scores it against the true
ground truth. Layout of ``--out``::

    data/           prepared pairs: GT mod-cropped to the scale, LQ by MATLAB-style bicubic (BasicSR's)
    runs/NAME/      option file, BasicSR's experiments/ (checkpoints, logs), outputs/SET/*.png, result.json
    reference/bicubic/  the LQ upsampled by bicubic interpolation, scored the same way (context, not a run)
    sr_results.json, sr_results.md, pd_plane.png, crops_ARCH.png

Finished runs (``result.json``) are skipped on a rerun; an interrupted training resumes from its
last BasicSR checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from jndplug.basicsr_compat import install_torchvision_shim
from jndplug.bench import figures
from jndplug.bench.common import (BenchError, finished_run, image_sets, machine, mean_std, notes_lines, read_result,
                                  resolve_estimator, settings_diff, signed, spread, summarize, write_json,
                                  write_text)
from jndplug.imageio import array_to_tensor, list_images, read_image, tensor_to_array, write_image
from jndplug.metrics import METRICS, MetricSuite, add_suite_arguments, evaluate_folders, mean_of

FORMAT = "jndplug-bench-sr/1"
SCALE = 4  # the example option files are all x4
ARCHS = {
    "edsr": "train_EDSR_Mx4_baseline.yml",          # EDSR-baseline: 16 blocks, 64 features
    "srresnet": "train_MSRResNet_x4_baseline.yml",  # BasicSR's MSRResNet
    "swinir": "train_SwinIR_light_x4_baseline.yml",
}
PD_X, PD_Y = "niqe", "psnr_y"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="training ground truth (searched recursively)")
    p.add_argument("--test", required=True, help="test folder: its sub-folders are the test sets")
    p.add_argument("--test-sets", nargs="+", help="sub-folders of --test to use (default: all)")
    p.add_argument("--out", default="bench-sr", help="results folder (rerun to resume)")
    p.add_argument("--estimator", default="default", help="JND estimator: pretrained name or .safetensors path")
    p.add_argument("--archs", nargs="+", default=["edsr", "srresnet"], choices=list(ARCHS))
    p.add_argument("--strengths", nargs="+", type=float, default=[0.5, 1.0, 1.5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    # dest: the names under which earlier results recorded these settings
    p.add_argument("--steps", dest="iters", type=int, default=20000, metavar="N", help="training iterations per run")
    p.add_argument("--pretrain-steps", dest="pretrain_iters", type=int, default=0, metavar="N",
                   help="first train each architecture and seed this long against the ground truth, then every "
                        "target run fine-tunes that network for --steps (0: every run starts from scratch)")
    p.add_argument("--patch", type=int, default=128, help="GT training patch side (a multiple of 4)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, help="learning rate (default: the architecture's BasicSR recipe)")
    p.add_argument("--blocks", type=int, help="residual blocks of edsr/srresnet (default 16)")
    p.add_argument("--features", type=int, help="feature channels of edsr/srresnet (default 64)")
    p.add_argument("--train-images", type=int, help="use this many training images, spread over the sorted list")
    p.add_argument("--crop", type=int, help="evaluate on the central CROPxCROP of each test image (GT pixels)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per run")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="BasicSR training-state interval (resume)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                   help="training device: cpu or cuda (default: cuda if available)")
    p.add_argument("--crop-size", type=int, default=96, help="side of the side-by-side crops (GT pixels)")
    p.add_argument("--crop-images", type=int, default=3, help="test images shown in the crop figures")
    add_suite_arguments(p)


def targets(strengths: list[float]) -> list[tuple[str, float]]:
    return [("gt", 0.0)] + [(f"jnd{s:g}", s) for s in strengths]


def run(args: argparse.Namespace) -> dict:
    if args.patch % SCALE or args.patch < 16:
        raise BenchError(f"--patch {args.patch} must be a multiple of {SCALE} and at least 16")
    if any(s <= 0 for s in args.strengths):
        raise BenchError("--strengths must be > 0 (strength 0 is the ground-truth baseline, always run)")
    if "swinir" in args.archs and (args.blocks or args.features):
        raise BenchError("--blocks/--features apply to edsr and srresnet; SwinIR-light keeps its recipe")
    estimator = resolve_estimator(args.estimator)
    out = Path(args.out)
    data = prepare_data(out / "data", args)
    suite = MetricSuite(args.metrics, crop_border=SCALE, lpips_trunk=args.lpips_trunk, dists_trunk=args.dists_trunk,
                        device=args.metrics_device)
    settings = {k: getattr(args, k) for k in ("iters", "pretrain_iters", "patch", "batch", "lr", "blocks", "features",
                                              "train_images", "crop", "device")}
    settings["estimator"] = estimator
    results = []
    plan = [(a, t, s, seed) for a in args.archs for t, s in targets(args.strengths) for seed in args.seeds]
    for i, (arch, target, strength, seed) in enumerate(plan, 1):
        name = f"{arch}_{target}_seed{seed}"
        run_dir = out / "runs" / name
        result = finished_run(run_dir, settings)
        if result is not None:
            print(f"[{i}/{len(plan)}] {name}: done earlier, skipped", file=sys.stderr)
        else:
            init = None
            if args.pretrain_iters:
                pre = f"{arch}_pretrain_seed{seed}"
                print(f"[{i}/{len(plan)}] {pre}: {args.pretrain_iters} iterations against the ground truth "
                      "(shared by every target of this seed; skipped when done)", file=sys.stderr)
                init = train(out / "runs" / pre, options(pre, arch, 0.0, seed, data, estimator, args,
                                                         args.pretrain_iters, None), settings)
            print(f"[{i}/{len(plan)}] {name}: training {args.iters} iterations", file=sys.stderr)
            result = run_one(run_dir, name, arch, target, strength, seed, data, settings, suite, args, init)
        results.append(result)
    return report(out, results, args, suite, data, bicubic_reference(out / "reference" / "bicubic", data, suite))


def bicubic_reference(ref_dir: Path, data: dict, suite: MetricSuite) -> dict:
    """Scores of plain bicubic upsampling (BasicSR's MATLAB-style ``imresize``) on the test sets.

    Not a target of the comparison: it shows whether the trained networks learned anything beyond
    interpolation in the sweep's budget. Computed once per ``--out`` and metric set.
    """
    from basicsr.utils.matlab_functions import imresize

    cached = read_result(ref_dir)
    if cached is not None and cached.get("metrics") == suite.names:
        return cached

    def bicubic(lq_dir: Path, out_dir: Path) -> None:
        for path in list_images(lq_dir):
            up = imresize(read_image(path).astype(np.float64) / 255.0, SCALE)
            write_image(out_dir / path.relative_to(lq_dir), np.clip(np.round(up * 255), 0, 255).astype(np.uint8))

    sets, mean = score(bicubic, ref_dir / "outputs", data, suite)
    result = {"format": FORMAT, "run": "bicubic", "metrics": suite.names, "mean": mean, "sets": sets}
    write_json(ref_dir / "result.json", result)
    return result


def prepare_data(root: Path, args) -> dict:
    """GT mod-cropped to the scale and its bicubic LQ, for training and for each test set (once)."""
    install_torchvision_shim()
    from basicsr.utils.matlab_functions import imresize

    train_files = spread(list_images(args.train), args.train_images)
    if not train_files:
        raise BenchError(f"no training images under {args.train}")
    sets = image_sets(args.test, args.test_sets)
    spec = {"train": str(Path(args.train).resolve()), "train_images": args.train_images,
            "test": {n: str(p.resolve()) for n, p in sets.items()}, "crop": args.crop, "scale": SCALE}
    marker = root / "data.json"
    if marker.is_file():
        have = json.loads(marker.read_text())
        have.pop("train_pairs", None)
        if have != spec:
            raise BenchError(f"{root} was prepared from other data ({settings_diff(have, spec)}); use another --out")
        return {"root": root, "sets": list(sets)}

    def pair(src: Path, gt_path: Path, lq_path: Path, training: bool) -> bool:
        gt = read_image(src)
        if gt.dtype != np.uint8:
            gt = np.round(gt / 257.0).astype(np.uint8)
        if args.crop and not training:
            h, w = gt.shape[:2]
            ch, cw = min(args.crop, h), min(args.crop, w)
            gt = gt[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
        h, w = (side // SCALE * SCALE for side in gt.shape[:2])
        gt = gt[:h, :w]
        if training and min(h, w) < args.patch:
            return False  # too small to cut a training patch from
        lq = np.clip(np.round(imresize(gt.astype(np.float64) / 255.0, 1 / SCALE) * 255), 0, 255).astype(np.uint8)
        write_image(gt_path, gt)
        write_image(lq_path, lq)
        return True

    skipped = 0
    for i, src in enumerate(tqdm(train_files, desc="preparing training pairs", unit="img")):
        name = f"{i:05d}_{src.stem}.png"
        skipped += not pair(src, root / "train" / "GT" / name, root / "train" / f"LQx{SCALE}" / name, True)
    if skipped == len(train_files):
        raise BenchError(f"every training image is smaller than the {args.patch}px patch")
    for set_name, folder in sets.items():
        for src in list_images(folder):
            rel = src.relative_to(folder).with_suffix(".png")
            pair(src, root / "test" / set_name / "GT" / rel, root / "test" / set_name / f"LQx{SCALE}" / rel, False)
    spec["train_pairs"] = len(train_files) - skipped
    write_json(marker, spec)
    return {"root": root, "sets": list(sets)}


def options(name: str, arch: str, strength: float, seed: int, data: dict, estimator: str, args, iters: int,
            init: Path | None) -> dict:
    """The example option file of ``arch`` with the sweep's settings; JND runs add only the jnd_target block."""
    import yaml  # BasicSR's dependency

    spec = importlib.util.find_spec("jndplug.integrations.basicsr")
    path = Path(list(spec.submodule_search_locations)[0]) / "options" / ARCHS[arch]
    if not path.is_file():
        raise BenchError(f"option file not found: {path}")
    opt = yaml.safe_load(path.read_text())
    opt["name"] = name
    opt["manual_seed"] = seed
    opt["num_gpu"] = 1 if args.device == "cuda" else 0
    n_train = len(list_images(data["root"] / "train" / "GT"))
    train = opt["datasets"]["train"]
    train.update(dataroot_gt=str((data["root"] / "train" / "GT").resolve()),
                 dataroot_lq=str((data["root"] / "train" / f"LQx{SCALE}").resolve()),
                 gt_size=args.patch, batch_size_per_gpu=args.batch, num_worker_per_gpu=args.workers,
                 # one epoch covers the whole run: no data-loader restarts on small training sets
                 dataset_enlarge_ratio=max(1, -(-iters * args.batch // n_train)))
    opt["datasets"] = {"train": train}
    opt.pop("val", None)  # evaluation happens afterwards, on the test sets, with jndplug.metrics
    net = opt["network_g"]
    if args.blocks:
        net["num_block"] = args.blocks
    if args.features:
        net["num_feat"] = args.features
    if args.lr:
        opt["train"]["optim_g"]["lr"] = args.lr
    # the same schedule for every architecture: halve the learning rate for the last fifth
    opt["train"]["scheduler"] = {"type": "MultiStepLR", "milestones": [max(1, int(0.8 * iters))], "gamma": 0.5}
    opt["train"]["total_iter"] = iters
    if init is not None:
        opt["path"]["pretrain_network_g"] = str(init.resolve())
    opt["logger"] = {"print_freq": max(1, iters // 20), "save_checkpoint_freq": min(args.checkpoint_every, iters),
                     "use_tb_logger": False, "wandb": {"project": None, "resume_id": None}}
    if strength > 0:
        opt["jnd_target"] = {"enable": True, "estimator": estimator, "strength": strength, "mode": "online"}
    return opt


def train(run_dir: Path, opt: dict, settings: dict) -> Path:
    """BasicSR training of ``opt`` in ``run_dir`` (a separate process; resumes); returns the final weights."""
    import yaml

    stamp = run_dir / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != settings:
        # resuming (or reusing) a network trained under other settings would mix two experiments
        raise BenchError(f"{run_dir} was trained with other settings ({settings_diff(json.loads(stamp.read_text()), settings)})"
                         "; use another --out or delete that run")
    write_json(stamp, settings)
    opt_path = run_dir / "options.yml"
    write_text(opt_path, yaml.safe_dump(opt, sort_keys=False))
    weights = run_dir / "experiments" / opt["name"] / "models" / "net_g_latest.pth"
    if not weights.is_file():
        with open(run_dir / "train.log", "a") as log:
            proc = subprocess.run([sys.executable, "-m", "jndplug.integrations.basicsr.train", "-opt", opt_path.name,
                                   "--auto_resume"], cwd=run_dir, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0 or not weights.is_file():
            tail = (run_dir / "train.log").read_text().strip().splitlines()[-15:]
            raise BenchError(f"training {opt['name']} failed (exit {proc.returncode}); end of "
                             f"{run_dir / 'train.log'}:\n" + "\n".join(tail))
    return weights


def run_one(run_dir: Path, name, arch, target, strength, seed, data, settings, suite, args, init) -> dict:
    opt = options(name, arch, strength, seed, data, settings["estimator"], args, args.iters, init)
    t0 = time.perf_counter()
    weights = train(run_dir, opt, settings)
    train_seconds = time.perf_counter() - t0
    net = load_network(opt, weights, args.device)
    t0 = time.perf_counter()
    sets, mean = score(lambda lq_dir, out_dir: upscale(net, lq_dir, out_dir, args.device), run_dir / "outputs",
                       data, suite)
    result = {"format": FORMAT, "run": name, "arch": arch, "target": target, "strength": strength, "seed": seed,
              "settings": settings, "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t0,
              "mean": mean, "sets": sets, "machine": machine()}
    write_json(run_dir / "result.json", result)
    return result


def score(upsample, outputs: Path, data: dict, suite: MetricSuite) -> tuple[dict, dict]:
    """``upsample(lq_dir, out_dir)`` on every test set, scored against the ground truth.

    Returns the per-set tables and the mean over all test images (not over sets).
    """
    sets, rows = {}, []
    for set_name in data["sets"]:
        upsample(data["root"] / "test" / set_name / f"LQx{SCALE}", outputs / set_name)
        table = evaluate_folders(outputs / set_name, data["root"] / "test" / set_name / "GT", suite=suite)
        sets[set_name] = table
        rows += [{**r, "file": f"{set_name}/{r['file']}"} for r in table["images"]]
    return sets, mean_of(rows, suite.names)


def load_network(opt: dict, weights: Path, device: str):
    from basicsr.archs import build_network

    net = build_network(copy.deepcopy(opt["network_g"]))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("params", state))
    return net.to(device).eval()


@torch.no_grad()
def upscale(net, lq_dir: Path, out_dir: Path, device: str) -> None:
    for path in list_images(lq_dir):
        x = array_to_tensor(read_image(path))[None].to(device)
        write_image(out_dir / path.relative_to(lq_dir).with_suffix(".png"), tensor_to_array(net(x)[0].cpu()))


def report(out: Path, results: list[dict], args, suite: MetricSuite, data: dict, bicubic: dict) -> dict:
    """Mean and spread over seeds per (architecture, target), seed-paired differences to the baseline."""
    names = suite.names
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["arch"], r["target"]), []).append(r)
    summary = []
    for (arch, target), runs in groups.items():
        base = {r["seed"]: r for r in groups.get((arch, "gt"), [])}
        entry = {"arch": arch, "target": target, "strength": runs[0]["strength"], "seeds": [r["seed"] for r in runs],
                 "metrics": {m: summarize([r["mean"][m] for r in runs]) for m in names},
                 "train_seconds": summarize([r["train_seconds"] for r in runs])}
        if target != "gt":
            entry["delta_vs_gt"] = {m: summarize([r["mean"][m] - base[r["seed"]]["mean"][m] for r in runs
                                                  if r["seed"] in base and r["mean"][m] is not None
                                                  and base[r["seed"]]["mean"][m] is not None]) for m in names}
            entry["seeds_improved"] = {m: sum(_better(r["mean"][m], base[r["seed"]]["mean"][m], m) for r in runs
                                              if r["seed"] in base) for m in names}
        summary.append(entry)
    tables = [t for r in results for t in r["sets"].values()]
    table = {"format": FORMAT, "settings": {k: v for k, v in vars(args).items() if k != "func"},
             "test_sets": data["sets"], "notes": notes_lines(suite.skipped, tables), "summary": summary,
             "bicubic": bicubic["mean"],
             "runs": [{k: r[k] for k in ("run", "arch", "target", "strength", "seed", "train_seconds", "mean")}
                      for r in results], "machine": machine()}
    write_json(out / "sr_results.json", table)
    write_text(out / "sr_results.md", markdown(table, names))
    points = [{"group": r["arch"], "target": r["target"], **r["mean"]} for r in results]
    points.append({"group": "bicubic", "target": "bicubic", **bicubic["mean"]})
    if PD_X in names and PD_Y in names:
        figures.perception_distortion(points, out / "pd_plane.png", PD_X, PD_Y)
    crop_figures(out, results, data, args)
    print(markdown(table, names))
    return table


def _better(value, base, metric) -> bool:
    if value is None or base is None:
        return False
    return value > base if METRICS[metric].higher_is_better else value < base


def markdown(table: dict, names: list[str]) -> str:
    arrows = {m: "↑" if METRICS[m].higher_is_better else "↓" for m in names}
    head = "| arch | target | runs | " + " | ".join(f"{METRICS[m].label} {arrows[m]}" for m in names) + " |"
    sep = "|" + "---|" * (len(names) + 3)
    lines = ["Mean ± sample standard deviation over seeds of each run's mean over all test images "
             f"({', '.join(table['test_sets'])}); fidelity and perceptual metrics against the true ground truth.", "",
             head, sep]
    for e in table["summary"]:
        lines.append(f"| {e['arch']} | {e['target']} | {len(e['seeds'])} | "
                     + " | ".join(mean_std(e["metrics"][m], m) for m in names) + " |")
    if table.get("bicubic"):
        lines.append("| bicubic (reference, no training) | – | – | "
                     + " | ".join(mean_std(summarize([table["bicubic"][m]]), m) for m in names) + " |")
    lines += ["", "JND target minus ground-truth target, paired by seed (mean ± std), and on how many seeds the JND "
                  "run scored better.", "", head, sep]
    for e in table["summary"]:
        if e["target"] == "gt":
            continue
        n = len(e["seeds"])
        lines.append(f"| {e['arch']} | {e['target']} | {n} | "
                     + " | ".join(f"{signed(e['delta_vs_gt'][m], m)} ({e['seeds_improved'][m]}/{n} better)"
                                  for m in names) + " |")
    if table["notes"]:
        lines += [""] + table["notes"]
    return "\n".join(lines) + "\n"


def crop_figures(out: Path, results: list[dict], data: dict, args) -> None:
    """GT beside every target's output for the first seed, on the same region of a few test images."""
    seed = min(r["seed"] for r in results)
    gts = [(s, p) for s in data["sets"] for p in list_images(data["root"] / "test" / s / "GT")]
    chosen = spread(gts, args.crop_images)
    for arch in dict.fromkeys(r["arch"] for r in results):
        runs = [r for r in results if r["arch"] == arch and r["seed"] == seed]
        rows = []
        for set_name, gt_path in chosen:
            rel = gt_path.relative_to(data["root"] / "test" / set_name / "GT")
            panels = [("GT", read_image(gt_path))]
            for r in runs:
                panels.append((f"{r['target']} (seed {seed})",
                               read_image(out / "runs" / r["run"] / "outputs" / set_name / rel)))
            rows.append((f"{set_name}/{rel.stem}", panels))
        figures.crops(rows, args.crop_size, out / f"crops_{arch}.png")
