"""The training checkpoint: everything a killed run needs to continue exactly where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from jndplug.errors import CorruptFileError, JNDPlugValueError, load_torch_file
from jndplug.imageio import atomic_write

_KEYS = {"model", "optimizer", "scheduler", "state", "config", "data"}


def save_checkpoint(path: Path, model, opt, sched, state: dict, cfg: dict, data: list[str]) -> None:
    blob = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "state": state, "config": json.loads(json.dumps(cfg)), "data": list(data)}
    with atomic_write(path) as f:
        torch.save(blob, f)


def load_checkpoint(path: Path, model, opt, sched, cfg: dict, data: list[str]) -> dict:
    """Restore model, optimiser and schedule from ``path``; returns the run's progress state."""
    ckpt = load_torch_file(path, "training checkpoint", "delete it to restart the run from step 0, or use another --out")
    if not (isinstance(ckpt, dict) and _KEYS <= set(ckpt)):
        raise CorruptFileError(f"{path}: not a jndplug training checkpoint (keys missing); delete it to "
                               "restart the run from step 0, or use another --out")
    saved, now = ckpt["config"], json.loads(json.dumps(cfg))
    # each difference named: "other config" alone leaves the user diffing config.json by hand
    differ = []
    if ckpt["data"] != list(data):
        differ.append(f"other data: checkpoint {ckpt['data']!r}, this run {list(data)!r}")
    changed = [f"{k} (checkpoint {saved.get(k)!r}, this run {now.get(k)!r})"
               for k in {**saved, **now} if saved.get(k) != now.get(k)]
    if changed:
        differ.append(f"other config: {', '.join(changed)}")
    if differ:
        raise JNDPlugValueError(f"{path} belongs to a run with {'; '.join(differ)}; use another --out "
                                "or delete the checkpoint to start over")
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    return ckpt["state"]
