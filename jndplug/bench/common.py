"""What the benchmarks share: estimator lookup, resumable result files, statistics, tables."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import atomic_write, list_images
from jndplug.metrics import fmt

RESULT = "result.json"


class BenchError(JNDPlugValueError):
    """A benchmark cannot start as asked; the message says what to change."""


def resolve_estimator(spec: str) -> str:
    """The absolute path of ``--estimator NAME|PATH``, or a BenchError explaining what is missing.

    Checked before any run starts, so a missing estimator does not surface hours into a sweep.
    """
    from jndplug.weights import load_estimator, resolve

    try:
        path = resolve(spec)
        load_estimator(path)  # verifies the file, not just its presence
    except (FileNotFoundError, ValueError) as exc:
        raise BenchError(f"--estimator {spec}: {exc}") from None
    return str(Path(path).resolve())


def read_result(run_dir: Path) -> dict | None:
    """A finished run's results, or None: reruns skip finished runs and redo the rest."""
    path = run_dir / RESULT
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def finished_run(run_dir: Path, settings: dict) -> dict | None:
    """A finished run's results if it ran with ``settings``, None if it has not finished; a run
    finished with other settings is refused, since mixing it in would compare unlike runs."""
    result = read_result(run_dir)
    if result is not None and result.get("settings") != settings:
        raise BenchError(f"{run_dir} was run with other settings "
                         f"({settings_diff(result.get('settings') or {}, settings)}); "
                         "use another --out or delete that folder")
    return result


def resume_or_run(run_dir: Path, settings: dict, what: str, compute) -> dict:
    """A finished run's row (saying so) if ``run_dir`` holds one made with ``settings``; otherwise
    ``compute()``'s row, written to ``run_dir/result.json`` once it is complete."""
    done = finished_run(run_dir, settings)
    if done is not None:
        print(f"{what}: done earlier, skipped", file=sys.stderr)
        return done
    row = compute()
    write_json(run_dir / RESULT, row)
    return row


def settings_diff(have: dict, want: dict) -> str:
    """The first few keys whose values differ, as 'key: old there, new now'."""
    keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    return ", ".join(f"{k}: {have.get(k)!r} there, {want.get(k)!r} now" for k in keys[:4])


def write_json(path: Path, data) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=1)


def write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def spread(items: list, limit: int | None) -> list:
    """``limit`` items spread evenly over the (sorted) list, so a subset covers every source folder."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        raise BenchError(f"a limit of {limit} images leaves nothing to run")
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


def image_sets(root: str | os.PathLike, names: list[str] | None = None) -> dict[str, Path]:
    """Test sets: the sub-folders of ``root`` that hold images (all, or those named), else ``root`` itself."""
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"test folder not found: {root}")
    subs = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and list_images(p)}
    if not subs:
        if names:
            raise BenchError(f"{root} has no sub-folders of images, so --test-sets {' '.join(names)} cannot be chosen")
        return {root.name: root}
    if names:
        missing = [n for n in names if n not in subs]
        if missing:
            raise BenchError(f"test set(s) {', '.join(missing)} not found under {root}; there are {', '.join(subs)}")
        return {n: subs[n] for n in names}
    return subs


def summarize(values: list[float | None]) -> dict:
    """Mean, sample standard deviation, min, max and count over runs (seeds).

    None (a metric undefined for the run) and infinite values (PSNR of an exact copy) are left
    out, and ``n`` says how many remained.
    """
    vals = [float(v) for v in values if v is not None and not math.isinf(v)]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def mean_std(s: dict, metric: str) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{fmt(s['mean'], metric)} ± {fmt(s['std'], metric)}" if s["n"] > 1 else fmt(s["mean"], metric)


def signed(s: dict, metric: str) -> str:
    if s["mean"] is None:
        return "n/a"
    text = f"{'+' if s['mean'] >= 0 else ''}{fmt(s['mean'], metric)}"
    return f"{text} ± {fmt(s['std'], metric)}" if s["n"] > 1 else text


def notes_lines(skipped: dict, tables: list[dict]) -> list[str]:
    """Why metrics are missing: skipped everywhere, or n/a for some images (first reason of each)."""
    lines = [f"- {m}: skipped: {why}" for m, why in skipped.items()]
    seen = set()
    for table in tables:
        for m, why in table.get("notes", {}).items():
            if m not in seen:
                seen.add(m)
                lines.append(f"- {m}: n/a for some images, so its means are n/a: {why}")
    return lines


def machine() -> dict:
    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "platform": platform.platform(),
            "date": datetime.date.today().isoformat(), "command": " ".join(sys.argv)}


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copy2(src, dst)
