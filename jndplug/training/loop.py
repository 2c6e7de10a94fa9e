"""The estimator training loop.

Determinism: every random choice of a step (which images, where to crop, flips, rotations, the
SUR target) comes from a generator seeded by ``(seed, step, rank)``. A resumed run therefore draws
exactly what the uninterrupted run would have, and on CPU it continues bit for bit.

The parts live beside it: the config (``config``), the loss terms (``terms``), records to batches
(``batches``), validation and the choice of the best round (``validation``), the checkpoint
(``checkpoint``) and what a run writes at the end (``export``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import atomic_write
from jndplug.models import create_estimator
from jndplug.training.batches import ImageCache, check_sizes, sample_batch, split_records
from jndplug.training.checkpoint import load_checkpoint, save_checkpoint
from jndplug.training.config import resolve_config
from jndplug.training.datasets import Record, read_source
from jndplug.training.export import finish, write_logs
from jndplug.training.terms import compute_loss
from jndplug.training.validation import default_measure, selection_score, validate
from jndplug.weights import save_estimator


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


def _init_from(model: nn.Module, cfg: dict) -> None:
    """Load the weights of an estimator file into ``model``; architecture and config must agree."""
    from jndplug.weights import load_estimator

    src = load_estimator(cfg["init"])
    if src.arch_name != cfg["arch"] or src.config != model.config:
        raise JNDPlugValueError(
            f"config init {cfg['init']}: its model is {src.arch_name} {src.config}, but this run builds "
            f"{cfg['arch']} {model.config}; set arch and model to match the file")
    model.load_state_dict({k: v.float() for k, v in src.state_dict().items()})


def read_records(data: list[str], cfg: dict) -> list[Record]:
    """The records of every ``--data`` source; with several, ids are prefixed by the source's index."""
    records = []
    for i, spec in enumerate(data):
        for r in read_source(spec, cfg["layouts"]):
            if len(data) > 1:
                r.id = f"{i}:{r.id}"
            records.append(r)
    if cfg["sur_conditioning"] and any(r.sur is None for r in records):
        raise JNDPlugValueError("sur_conditioning needs SUR curves for every image: use --data generated:... "
                                "sources only")
    return records


@dataclass
class _Run:
    """One training run: what it trains on, what it trains, and where it stands."""

    cfg: dict
    data: list[str]
    out: Path
    dev: torch.device
    dist: Dist
    train_recs: list[Record]
    val_recs: list[Record]
    measure: object
    cache: ImageCache = field(default_factory=ImageCache)
    model: nn.Module | None = None
    opt: torch.optim.Optimizer | None = None
    sched: object = None
    state: dict = field(default_factory=lambda: {"step": 0, "best": -math.inf, "bad_rounds": 0, "history": [],
                                                 "stopped_early": False})

    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def build(self) -> None:
        cfg = self.cfg
        self.model = create_estimator(cfg["arch"], **cfg["model"]).to(self.dev)
        if cfg["init"] is not None:
            _init_from(self.model, cfg)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(cfg))

    def resume_or_start(self, command: str | None) -> None:
        if self.ckpt_path.is_file():
            self.state = load_checkpoint(self.ckpt_path, self.model, self.opt, self.sched, self.cfg, self.data)
            if self.dist.main:
                print(f"resuming {self.out} at step {self.state['step']}", file=sys.stderr)
        elif self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.out / "split.json", "w") as f:
                json.dump({"seed": self.cfg["seed"], "train": sorted(r.id for r in self.train_recs),
                           "validation": sorted(r.id for r in self.val_recs)}, f, indent=1)
            with atomic_write(self.out / "config.json", "w") as f:
                json.dump({"data": list(self.data), "config": self.cfg, "command": command}, f, indent=1)

    def step(self, net: nn.Module, step: int) -> float:
        """One optimiser step on the batch of ``step``; returns its loss."""
        x, y, sur = sample_batch(self.train_recs, self.cache, self.cfg, step, self.dist.rank)
        x, y = x.to(self.dev), y.to(self.dev)
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.cfg["amp"] and self.dev.type == "cuda"):
            pred = net(x, sur=sur.to(self.dev)) if sur is not None else net(x)
        loss = compute_loss(pred, y, self.cfg["loss"], source=x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["clip"])
        self.opt.step()
        self.sched.step()
        return loss.item()

    def validation_round(self, record: dict) -> None:
        """Validate, keep the best round's weights, count rounds without progress, log."""
        state = self.state
        if self.val_recs:
            v = validate(self.model, self.val_recs, self.cache, self.cfg, self.dev, self.measure)["summary"]
            record.update({f"val_{k}": val for k, val in v.items()})
            score = selection_score(v, self.cfg)
            if score > state["best"] + 1e-4:
                state["best"], state["bad_rounds"] = score, 0
                if self.dist.main:
                    save_estimator(self.model, self.out / "best.safetensors", {"step": record["step"], "val": v})
            else:
                state["bad_rounds"] += 1
                state["stopped_early"] = state["bad_rounds"] >= self.cfg["patience"]
        state["history"].append(record)
        if self.dist.main:
            write_logs(self.out, state["history"])

    def run_steps(self, net: nn.Module, progress: bool) -> int:
        cfg, state = self.cfg, self.state
        step = state["step"]
        bar = tqdm(total=cfg["steps"], initial=step, desc="train", unit="step",
                   disable=not (progress and self.dist.main))
        t0, running = time.time(), []
        while step < cfg["steps"] and not state["stopped_early"]:
            running.append(self.step(net, step))
            step += 1
            state["step"] = step
            bar.update(1)
            bar.set_postfix(loss=f"{running[-1]:.4f}")
            if step % cfg["val_every"] == 0 or step == cfg["steps"]:
                self.validation_round({"step": step, "train_loss": float(np.mean(running)),
                                       "lr": self.sched.get_last_lr()[0], "seconds": time.time() - t0})
                running = []
            if self.dist.main and (step % cfg["checkpoint_every"] == 0 or step == cfg["steps"]
                                   or state["stopped_early"]):
                save_checkpoint(self.ckpt_path, self.model, self.opt, self.sched, state, cfg, self.data)
        bar.close()
        return step


def train(data: list[str], out: str | os.PathLike, config: dict | None = None, export: str | None = None,
          device: str | None = None, command: str | None = None, progress: bool = True,
          measure=default_measure, observer_model: str | None = None,
          export_dtype: torch.dtype | None = None) -> dict:
    """Train an estimator; returns the final metrics. Resumes from ``out/checkpoint.pt`` if present.

    ``observer_model`` ("cvvdp" or "flip") adds the simulated observers' detection rate on the
    validation predictions to the final metrics. ``export_dtype`` stores the exported file's
    floating tensors in that precision.
    """
    cfg = resolve_config(config or {})
    dist = init_distributed()
    dev = torch.device(device or (f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg["seed"])
    train_recs, val_recs = split_records(read_records(data, cfg), cfg["val_fraction"], cfg["seed"])
    run = _Run(cfg, list(data), Path(out), dev, dist, train_recs, val_recs, measure)
    check_sizes(train_recs, run.cache, cfg)
    run.build()
    run.resume_or_start(command)
    net = run.model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(run.model, device_ids=[dist.local_rank] if dev.type == "cuda" else None)
    step = run.run_steps(net, progress)
    if dist.world > 1:
        torch.distributed.barrier()
    stopped_early = run.state["stopped_early"]
    finished = step >= cfg["steps"] or stopped_early
    result = {"step": step, "finished": finished, "stopped_early": stopped_early,
              "history": run.state["history"], "train_images": len(train_recs), "val_images": len(val_recs)}
    if finished and dist.main:
        result.update(finish(run.model, run.out, cfg, data, train_recs, val_recs, run.cache, dev, measure, command,
                             export, step, stopped_early, observer_model, export_dtype))
    if dist.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result
