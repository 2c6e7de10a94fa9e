"""The estimator training loop.

Determinism: every random choice of a step (which images, where to crop, flips, rotations, the
SUR target) comes from a generator seeded by ``(seed, step, rank)``. A resumed run therefore draws
exactly what the uninterrupted run would have, and on CPU it continues bit for bit.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_msssim import ms_ssim, ssim
from tqdm import tqdm

from jndplug.errors import CorruptFileError, JNDPlugValueError, load_torch_file
from jndplug.imageio import array_to_tensor, atomic_write, read_image
from jndplug.models import create_estimator
from jndplug.pixels import MS_SSIM_MIN_SIDE, psnr
from jndplug.training.datasets import Record, read_source
from jndplug.weights import save_estimator

DEFAULTS: dict = {
    "arch": "unet",
    "model": {},  # architecture config (see jndplug.create_estimator)
    "patch": 256,
    "batch": 8,
    "steps": 3000,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "warmup": 100,
    "clip": 1.0,
    # Zhao et al. (2017): a mix of MS-SSIM and L1 trains image-to-image networks better than either
    "loss": {"l1": 0.16, "ms_ssim": 0.84},
    "val_fraction": 0.1,
    "val_every": 250,
    "val_crop": 512,
    "patience": 6,
    "seed": 0,
    "sur_conditioning": False,
    "sur_range": [0.5, 0.95],
    "val_sur": [0.5, 0.75, 0.95],
    "checkpoint_every": 250,
    "amp": True,
    "layouts": {},
    # start from an estimator file (path or pretrained name) of the same architecture and config
    "init": None,
    # which validation round "best" is: highest PSNR against the labels, or the smallest level error
    # (the prediction's distortion placed among the labelled levels); an energy-matched prediction
    # is worse in PSNR than a shrunken one by construction, so it is chosen by level
    "select": "psnr",
}
SELECT = ("psnr", "level")
LOSS_TERMS = ("l1", "l2", "ssim", "ms_ssim", "energy")
ENERGY_WINDOW = 8  # pixels: about the size of the texture patches the JND varies over
PSNR_CAP_DB = 99.0


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def resolve_config(overrides: dict) -> dict:
    if not isinstance(overrides, dict):
        raise JNDPlugValueError(f"the training config must be a mapping of config keys to values, got "
                                f"{type(overrides).__name__} {overrides!r:.60}")
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training config keys: {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(DEFAULTS))})")
    cfg = {**DEFAULTS, **overrides}
    for key in ("patch", "batch", "steps", "lr", "weight_decay", "warmup", "clip", "val_fraction", "val_every",
                "val_crop", "patience", "seed", "checkpoint_every"):
        # YAML reads 5e-4 as a string (it wants 5.0e-4): say so here rather than deep in the optimiser
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], (int, float)):
            raise ValueError(f"config {key} must be a number, got {cfg[key]!r}"
                             + (" (YAML needs a decimal point in 5.0e-4)" if isinstance(cfg[key], str) else ""))
    # a wrong type here would otherwise surface as a TypeError deep inside training
    for key in ("model", "loss", "layouts"):
        if not isinstance(cfg[key], dict):
            raise JNDPlugValueError(f"config {key} must be a mapping (key: value lines), got {cfg[key]!r:.60}")
    for kind, layout in cfg["layouts"].items():
        if not isinstance(layout, dict):
            raise JNDPlugValueError(f"config layouts.{kind} must be a mapping of folder roles to name lists, "
                                    f"got {layout!r:.60}")
    if not isinstance(cfg["arch"], str):
        raise JNDPlugValueError(f"config arch must be an architecture name, got {cfg['arch']!r:.60}")
    for key in ("sur_conditioning", "amp"):
        if not isinstance(cfg[key], bool):
            raise JNDPlugValueError(f"config {key} must be true or false, got {cfg[key]!r:.60}")
    if not all(_is_number(w) for w in cfg["loss"].values()):
        raise JNDPlugValueError(f"config loss weights must be numbers, got {cfg['loss']!r:.60}")
    if not (isinstance(cfg["sur_range"], list) and len(cfg["sur_range"]) == 2 and all(map(_is_number, cfg["sur_range"]))):
        raise JNDPlugValueError(f"config sur_range must be a pair [lo, hi] of numbers, got {cfg['sur_range']!r:.60}")
    if not (isinstance(cfg["val_sur"], list) and all(_is_number(v) and 0 < v <= 1 for v in cfg["val_sur"])):
        raise JNDPlugValueError(f"config val_sur must be a list of ratios in (0, 1], got {cfg['val_sur']!r:.60}")
    if cfg["select"] not in SELECT:
        raise JNDPlugValueError(f"config select must be one of {', '.join(SELECT)}, got {cfg['select']!r:.60}")
    if cfg["init"] is not None and not isinstance(cfg["init"], str):
        raise JNDPlugValueError(f"config init must be an estimator file path or pretrained name, got {cfg['init']!r:.60}")
    bad = set(cfg["loss"]) - set(LOSS_TERMS)
    if bad:
        raise ValueError(f"unknown loss terms {sorted(bad)}; use {', '.join(LOSS_TERMS)}")
    if "ms_ssim" in cfg["loss"] and cfg["patch"] < MS_SSIM_MIN_SIDE:
        raise ValueError(f"loss ms_ssim needs patch >= {MS_SSIM_MIN_SIDE}, got {cfg['patch']}; use ssim")
    if cfg["patch"] % 32:
        raise ValueError(f"patch must be a multiple of 32 (the encoder's stride), got {cfg['patch']}")
    for key in ("batch", "steps", "val_every", "checkpoint_every"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1")
    lo, hi = cfg["sur_range"]
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"sur_range must satisfy 0 < lo <= hi <= 1, got {cfg['sur_range']}")
    if cfg["sur_conditioning"]:
        cfg["model"] = {**cfg["model"], "sur_conditioning": True}
    return cfg


def _init_from(model: nn.Module, cfg: dict) -> None:
    """Load the weights of an estimator file into ``model``; architecture and config must agree."""
    from jndplug.weights import load_estimator

    src = load_estimator(cfg["init"])
    if src.arch_name != cfg["arch"] or src.config != model.config:
        raise JNDPlugValueError(
            f"config init {cfg['init']}: its model is {src.arch_name} {src.config}, but this run builds "
            f"{cfg['arch']} {model.config}; set arch and model to match the file")
    model.load_state_dict({k: v.float() for k, v in src.state_dict().items()})


def split_records(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Split by image, never by patch, reproducibly."""
    ids = sorted({r.id for r in records})
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    n_val = 0 if len(ids) < 2 else max(1, round(fraction * len(ids)))
    val_ids = set(ids[:n_val])
    return [r for r in records if r.id not in val_ids], [r for r in records if r.id in val_ids]


class ImageCache:
    """Decoded images kept in memory as uint8/uint16 tensors: decoding PNGs would dominate a CPU step."""

    def __init__(self):
        self._store: dict[Path, torch.Tensor] = {}

    def get(self, path: Path) -> torch.Tensor:
        t = self._store.get(path)
        if t is None:
            a = read_image(path)
            t = torch.from_numpy(a).permute(2, 0, 1).contiguous()
            self._store[path] = t
        return t

    @staticmethod
    def as_float(t: torch.Tensor) -> torch.Tensor:
        return t.float() / (65535.0 if t.dtype == torch.uint16 else 255.0) if t.dtype != torch.float32 else t


def _target_path(rec: Record, p: float | None) -> Path:
    if p is not None:
        return rec.image_at(rec.level_for_sur(p))
    return rec.target or rec.original


def sample_batch(records: list[Record], cache: ImageCache, cfg: dict, step: int, rank: int = 0):
    """The batch of ``step``: a pure function of (seed, step, rank), so resumes are exact."""
    g = torch.Generator().manual_seed(int(cfg["seed"]) * 1_000_003 + step * 7919 + rank * 104_729)
    size = cfg["patch"]
    xs, ys, ps = [], [], []
    lo, hi = cfg["sur_range"]
    for _ in range(cfg["batch"]):
        rec = records[int(torch.randint(len(records), (1,), generator=g))]
        p = lo + (hi - lo) * float(torch.rand((), generator=g)) if cfg["sur_conditioning"] else None
        x, y = cache.get(rec.original), cache.get(_target_path(rec, p))
        h, w = x.shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=g))
        left = int(torch.randint(w - size + 1, (1,), generator=g))
        x, y = x[:, top:top + size, left:left + size], y[:, top:top + size, left:left + size]
        flips = torch.rand(2, generator=g) < 0.5
        k = int(torch.randint(4, (1,), generator=g))
        for axis, flip in zip((-1, -2), flips.tolist()):
            if flip:
                x, y = x.flip(axis), y.flip(axis)
        x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
        xs.append(ImageCache.as_float(x))
        ys.append(ImageCache.as_float(y))
        ps.append(p)
    sur = torch.tensor(ps, dtype=torch.float32) if cfg["sur_conditioning"] else None
    return torch.stack(xs), torch.stack(ys), sur


def local_rms(residual: torch.Tensor, window: int = ENERGY_WINDOW) -> torch.Tensor:
    """Root-mean-square of a residual over ``window`` x ``window`` blocks, all channels together."""
    energy = F.avg_pool2d(residual.pow(2).mean(1, keepdim=True), window, stride=window // 2, ceil_mode=True)
    return (energy + 1e-10).sqrt()


def compute_loss(pred: torch.Tensor, target: torch.Tensor, weights: dict,
                 source: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of the configured loss terms.

    ``energy`` compares the local size of the predicted distortion (``pred - source``) with the
    labelled one's, not its pattern. Where the labelled distortion is not predictable from the
    photograph, L1 and SSIM learn its conditional mean, which is far smaller than any one sample;
    the energy term keeps the prediction as large as the label says is still invisible.
    """
    pred, target = pred.float(), target.float()
    total = pred.new_zeros(())
    if "energy" in weights and source is None:
        raise ValueError("the energy loss term needs the source image (compute_loss(..., source=x))")
    for term, w in weights.items():
        if term == "l1":
            total = total + w * F.l1_loss(pred, target)
        elif term == "l2":
            total = total + w * F.mse_loss(pred, target)
        elif term == "ssim":
            total = total + w * (1 - ssim(pred.clamp(0, 1), target, data_range=1.0))
        elif term == "ms_ssim":
            total = total + w * (1 - ms_ssim(pred.clamp(0, 1), target, data_range=1.0))
        elif term == "energy":
            source = source.float()
            total = total + w * F.l1_loss(local_rms(pred - source), local_rms(target - source))
    return total


def default_measure(img: torch.Tensor, ref: torch.Tensor) -> float:
    """Distortion of ``img`` relative to ``ref`` used to place a prediction among the levels."""
    from jndplug.datagen import distortion_measure  # the measure the levels were ordered by

    return float(distortion_measure(img, ref))


def _center_crop(t: torch.Tensor, size: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    ch, cw = min(size, h) // 32 * 32 or h, min(size, w) // 32 * 32 or w
    top, left = (h - ch) // 2, (w - cw) // 2
    return t[..., top:top + ch, left:left + cw]


@torch.no_grad()
def validate(model: nn.Module, records: list[Record], cache: ImageCache, cfg: dict, device: torch.device,
             measure=None) -> dict:
    """PSNR/SSIM of predictions against labelled JND images, and level agreement where levels exist."""
    model.eval()
    ps = cfg["val_sur"] if cfg["sur_conditioning"] else [None]
    rows = []
    for rec in records:
        x = _center_crop(ImageCache.as_float(cache.get(rec.original)), cfg["val_crop"])[None].to(device)
        for p in ps:
            y = _center_crop(ImageCache.as_float(cache.get(_target_path(rec, p))), cfg["val_crop"])[None].to(device)
            pred = (model(x, sur=p) if p is not None else model(x)).clamp(0, 1)
            # capped: a prediction equal to its label must not make the mean over images infinite
            row = {"id": rec.id, "sur": p, "psnr": min(psnr(pred, y), PSNR_CAP_DB),
                   "ssim": float(ssim(pred.float(), y.float(), data_range=1.0))}
            if rec.levels and measure is not None:
                label = rec.level_for_sur(p) if p is not None else rec.label_level
                level_measures = [0.0] + [
                    measure(_center_crop(ImageCache.as_float(cache.get(path)), cfg["val_crop"]), x[0].cpu())
                    for path in rec.levels]
                m = measure(pred[0].cpu(), x[0].cpu())
                nearest = int(np.argmin([abs(m - lm) for lm in level_measures]))
                row.update(level_pred=nearest, level_label=label, level_exact=float(nearest == label),
                           level_error=float(abs(nearest - label)),
                           level_within1=float(abs(nearest - label) <= 1))
            rows.append(row)
    summary = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim")}
    if rows and "level_exact" in rows[0]:
        summary.update(level_exact=float(np.mean([r["level_exact"] for r in rows])),
                       level_error=float(np.mean([r["level_error"] for r in rows])),
                       level_within1=float(np.mean([r["level_within1"] for r in rows])))
    if cfg["sur_conditioning"]:
        for p in ps:
            sub = [r for r in rows if r["sur"] == p]
            summary[f"psnr@sur{p}"] = float(np.mean([r["psnr"] for r in sub]))
    model.train()
    return {"summary": summary, "rows": rows}


@torch.no_grad()
def detection_rates(model: nn.Module, records: list[Record], cache: ImageCache, cfg: dict, device: torch.device,
                    observer_model: str, n_observers: int = 20, seed: int = 0) -> dict:
    """How often the study's simulated observers would notice the predicted JND images.

    A good JND image sits just under the threshold: rarely noticed, yet not much less noticed than
    the labelled one. For every validation image (whole image, as observers see it) and SUR target
    this averages the simulated panel's probability of answering "noticeable" (same psychometric
    function, sensitivities and lapse rate as ``jndplug study simulate``) for the prediction and
    for the labelled JND image.
    """
    from jndplug.study.observers import make_model, make_observers

    vis = make_model(observer_model)
    panel = make_observers(n_observers, seed, vis.key)
    ps = cfg["val_sur"] if cfg["sur_conditioning"] else [None]
    from jndplug.target import JNDTarget

    # the predictions users get: JNDTarget pads any size, so observers judge whole images
    targets = {p: JNDTarget(model, sur=p, device=device, kind="jnd") for p in ps}
    rows = []
    for rec in tqdm(records, desc=f"detection ({vis.name})", unit="image", leave=False):
        ref = cache.get(rec.original)
        x = ImageCache.as_float(ref)
        ref_u8 = _as_u8(ref)
        for p in ps:
            pred = targets[p](x)
            pred_u8 = (pred.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            label_u8 = _as_u8(cache.get(_target_path(rec, p)))
            d_pred, d_label = vis.distance(ref_u8, pred_u8), vis.distance(ref_u8, label_u8)
            rows.append({"id": rec.id, "sur": p, "jod_distance_pred": d_pred, "jod_distance_label": d_label,
                         "detect_pred": float(np.mean([o.p_noticeable(d_pred) for o in panel])),
                         "detect_label": float(np.mean([o.p_noticeable(d_label) for o in panel]))})
    summary = {"observer_model": vis.key, "observers": n_observers}
    for p in ps:
        sub = [r for r in rows if r["sur"] == p]
        tag = "" if p is None else f"@sur{p}"
        summary[f"detect_pred{tag}"] = float(np.mean([r["detect_pred"] for r in sub]))
        summary[f"detect_label{tag}"] = float(np.mean([r["detect_label"] for r in sub]))
    return {"summary": summary, "rows": rows}


def _as_u8(t: torch.Tensor) -> np.ndarray:
    """An image from the cache as HxWx3 uint8, the form the visibility models take."""
    a = ImageCache.as_float(t).permute(1, 2, 0).numpy()
    return (a * 255.0).round().astype(np.uint8)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    else:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local)


def _lr_lambda(cfg: dict):
    warm, total = int(cfg["warmup"]), int(cfg["steps"])

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return f


def train(data: list[str], out: str | os.PathLike, config: dict | None = None, export: str | None = None,
          device: str | None = None, command: str | None = None, progress: bool = True,
          measure=default_measure, max_steps_this_run: int | None = None,
          observer_model: str | None = None, export_dtype: torch.dtype | None = None) -> dict:
    """Train an estimator; returns the final metrics. Resumes from ``out/checkpoint.pt`` if present.

    ``max_steps_this_run`` stops early (with a checkpoint) after that many steps, as an
    interruption would; used to test resume. ``observer_model`` ("cvvdp" or "flip") adds the
    simulated observers' detection rate on the validation predictions to the final metrics.
    ``export_dtype`` stores the exported file's floating tensors in that precision.
    """
    cfg = resolve_config(config or {})
    dist = init_distributed()
    out = Path(out)
    dev = torch.device(device or (f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg["seed"])

    records = []
    for i, spec in enumerate(data):
        for r in read_source(spec, cfg["layouts"]):
            if len(data) > 1:
                r.id = f"{i}:{r.id}"
            records.append(r)
    if cfg["sur_conditioning"] and any(r.sur is None for r in records):
        raise ValueError("sur_conditioning needs SUR curves for every image: use --data generated:... sources only")
    train_recs, val_recs = split_records(records, cfg["val_fraction"], cfg["seed"])
    cache = ImageCache()
    _check_sizes(train_recs, cache, cfg)

    model = create_estimator(cfg["arch"], **cfg["model"]).to(dev)
    if cfg["init"] is not None:
        _init_from(model, cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    state = {"step": 0, "best": -math.inf, "bad_rounds": 0, "history": [], "stopped_early": False}
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file():
        ckpt = load_torch_file(ckpt_path, "training checkpoint",
                               "delete it to restart the run from step 0, or use another --out")
        if not (isinstance(ckpt, dict) and {"model", "optimizer", "scheduler", "state", "config", "data"} <= set(ckpt)):
            raise CorruptFileError(f"{ckpt_path}: not a jndplug training checkpoint (keys missing); delete it to "
                                   "restart the run from step 0, or use another --out")
        if ckpt["config"] != json.loads(json.dumps(cfg)) or ckpt["data"] != list(data):
            raise ValueError(f"{ckpt_path} belongs to a run with other data or config; use another --out "
                             "or delete the checkpoint to start over")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        if dist.main:
            print(f"resuming {out} at step {state['step']}", file=sys.stderr)
    elif dist.main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "split.json", "w") as f:
            json.dump({"seed": cfg["seed"], "train": sorted(r.id for r in train_recs),
                       "validation": sorted(r.id for r in val_recs)}, f, indent=1)
        with atomic_write(out / "config.json", "w") as f:
            json.dump({"data": list(data), "config": cfg, "command": command}, f, indent=1)

    net = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dist.local_rank] if dev.type == "cuda" else None)
    use_amp = cfg["amp"] and dev.type == "cuda"
    start_step = state["step"]
    end = cfg["steps"] if max_steps_this_run is None else min(cfg["steps"], start_step + max_steps_this_run)
    bar = tqdm(total=cfg["steps"], initial=start_step, desc="train", unit="step", disable=not (progress and dist.main))
    t0, running = time.time(), []
    step = start_step
    while step < end and not state["stopped_early"]:
        x, y, sur = sample_batch(train_recs, cache, cfg, step, dist.rank)
        x, y = x.to(dev), y.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = net(x, sur=sur.to(dev)) if sur is not None else net(x)
        loss = compute_loss(pred, y, cfg["loss"], source=x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        opt.step()
        sched.step()
        step += 1
        state["step"] = step
        running.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{running[-1]:.4f}")
        if step % cfg["val_every"] == 0 or step == cfg["steps"]:
            record = {"step": step, "train_loss": float(np.mean(running)), "lr": sched.get_last_lr()[0],
                      "seconds": time.time() - t0}
            running = []
            if val_recs:
                v = validate(model, val_recs, cache, cfg, dev, measure)["summary"]
                record.update({f"val_{k}": val for k, val in v.items()})
                if cfg["select"] == "level" and "level_error" not in v:
                    raise JNDPlugValueError("config select: level needs labelled levels (--data generated:...) "
                                            "and level metrics (drop --no-level-metrics)")
                # PSNR breaks ties between rounds at the same level error
                score = v["psnr"] if cfg["select"] == "psnr" else -v["level_error"] + 1e-3 * v["psnr"]
                if score > state["best"] + 1e-4:
                    state["best"], state["bad_rounds"] = score, 0
                    if dist.main:
                        save_estimator(model, out / "best.safetensors", {"step": step, "val": v})
                else:
                    state["bad_rounds"] += 1
                    state["stopped_early"] = state["bad_rounds"] >= cfg["patience"]
            state["history"].append(record)
            if dist.main:
                _write_logs(out, state["history"])
        if dist.main and (step % cfg["checkpoint_every"] == 0 or step == end or state["stopped_early"]):
            _save_checkpoint(ckpt_path, model, opt, sched, state, cfg, data)
    bar.close()
    if dist.world > 1:
        torch.distributed.barrier()
    finished = step >= cfg["steps"] or state["stopped_early"]
    result = {"step": step, "finished": finished, "stopped_early": state["stopped_early"],
              "history": state["history"], "train_images": len(train_recs), "val_images": len(val_recs)}
    if finished and dist.main:
        result.update(_finish(model, out, cfg, data, train_recs, val_recs, cache, dev, measure, command, export,
                              step, state["stopped_early"], observer_model, export_dtype))
    if dist.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result


def _check_sizes(records: list[Record], cache: ImageCache, cfg: dict) -> None:
    for rec in records:
        x = cache.get(rec.original)
        for path in ([rec.target] if rec.target else []) + rec.levels:
            y = cache.get(path)
            if y.shape != x.shape:
                raise ValueError(f"{path}: size {tuple(y.shape[1:])} differs from its original "
                                 f"{rec.original} {tuple(x.shape[1:])}")
        if min(x.shape[-2:]) < cfg["patch"]:
            raise ValueError(f"{rec.original} is {x.shape[-2]}x{x.shape[-1]}, smaller than patch {cfg['patch']}; "
                             "lower the patch size in the config")


def _save_checkpoint(path, model, opt, sched, state, cfg, data) -> None:
    blob = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "state": state, "config": json.loads(json.dumps(cfg)), "data": list(data)}
    with atomic_write(path) as f:
        torch.save(blob, f)


def _write_logs(out: Path, history: list[dict]) -> None:
    keys = sorted({k for h in history for k in h}, key=lambda k: (k != "step", k))
    with atomic_write(out / "log.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    with atomic_write(out / "log.json", "w") as f:
        json.dump(history, f, indent=1)
    _plot_curves(out / "curves.png", history)


def _plot_curves(path: Path, history: list[dict]) -> None:
    from jndplug.viz import _pyplot, save_figure

    plt = _pyplot()
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(steps, [h["train_loss"] for h in history], marker=".")
    axes[0].set(xlabel="step", ylabel="training loss", title="training loss")
    if any("val_psnr" in h for h in history):
        vs = [h for h in history if "val_psnr" in h]
        axes[1].plot([h["step"] for h in vs], [h["val_psnr"] for h in vs], marker=".", label="PSNR vs JND label")
        axes[1].set(xlabel="step", ylabel="dB", title="validation")
        if any("val_level_within1" in h for h in vs):
            ax2 = axes[1].twinx()
            ax2.plot([h["step"] for h in vs], [h["val_level_exact"] for h in vs], "g--", label="level exact")
            ax2.plot([h["step"] for h in vs], [h["val_level_within1"] for h in vs], "r--", label="level within one")
            ax2.set_ylim(0, 1)
            ax2.set_ylabel("accuracy")
            ax2.legend(loc="lower right")
        axes[1].legend(loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)


def _finish(model, out, cfg, data, train_recs, val_recs, cache, dev, measure, command, export,
            steps_run: int, stopped_early: bool, observer_model: str | None = None,
            export_dtype: torch.dtype | None = None) -> dict:
    from jndplug.weights import load_estimator

    best_path = out / "best.safetensors"
    final = model
    if best_path.is_file():
        final = load_estimator(best_path, map_location=dev)
    metrics = validate(final, val_recs, cache, cfg, dev, measure) if val_recs else {"summary": {}, "rows": []}
    detection = None
    if observer_model and val_recs:
        detection = detection_rates(final, val_recs, cache, cfg, dev, observer_model, seed=cfg["seed"])
        metrics["summary"].update({k: v for k, v in detection["summary"].items()})
    sizes = sorted({tuple(cache.get(r.original).shape[-2:]) for r in train_recs + val_recs})
    provenance = {
        "data": list(data),
        "label_source": sorted({r.source.split(":", 1)[0] for r in train_recs}),
        "train_images": len(train_recs),
        "val_images": len(val_recs),
        "image_sizes": [f"{w}x{h}" for h, w in sizes[:3]] + (["..."] if len(sizes) > 3 else []),
        "config": cfg,
        "steps_run": steps_run,
        "stopped_early": stopped_early,
        "validation": metrics["summary"],
        "command": command,
        "date": datetime.date.today().isoformat(),
    }
    with atomic_write(out / "metrics.json", "w") as f:
        json.dump({"validation": metrics["summary"], "per_image": metrics["rows"],
                   "detection_per_image": detection["rows"] if detection else [], "provenance": provenance}, f, indent=1)
    if export:
        save_estimator(final, export, provenance, dtype=export_dtype)
    return {"validation": metrics["summary"], "export": export}
