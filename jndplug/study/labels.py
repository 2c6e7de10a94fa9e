"""From judgements to training labels: screening, per-image JND, SUR curves, ``labels.json``, pairs.

Per image, over the retained participants:

* ``sur[k-1]`` (k = 1..9), the satisfied-user ratio: the fraction of participants whose JND is at
  least ``k``, i.e. who do not notice level ``k``. It never rises with ``k``. ``sur_ci95`` gives
  the 95% Wilson score interval of each fraction (sensible even at 0 and 1, unlike the normal one).
* ``jnd_level``: by default ``floor(mean JND)`` -- rounding down so that most people do not notice
  it; other rules: ``mean-round``, ``median-floor``, ``sur:P`` (the strongest level with SUR >= P).
* flags: ``non_normal`` (kurtosis outside [2, 4]: the judgements do not look like one normal
  population, e.g. two camps), ``few_participants`` (fewer than ``min_participants`` retained),
  ``no_invisible_level`` (JND level 0: level 1 is already noticed; the JND image is the original).
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import stats as sps

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import atomic_write
from jndplug.data.layout import LABELS_SCHEMA, JNDDataset, read_labels
from jndplug.study.engine import N_LEVELS
from jndplug.study.records import Judgement
from jndplug.study.screening import bt500_screen, image_stats, participant_jnds



def level_for_sur(sur, p: float) -> int:
    """The strongest level whose satisfied-user ratio is at least ``p`` (0 if none is).

    ``sur`` is an image's SUR curve (levels 1..9) or its ``labels.json`` entry.
    """
    if isinstance(sur, dict):
        sur = sur["sur"]
    if not 0 <= p <= 1:
        raise JNDPlugValueError(f"p must be in [0, 1], got {p}")
    ok = [k for k, s in enumerate(sur, start=1) if s >= p - 1e-12]
    return max(ok) if ok else 0


def _jnd_rule(rule: str):
    if rule == "mean-floor":
        return lambda v, sur: int(math.floor(np.mean(v) + 1e-9))
    if rule == "mean-round":
        return lambda v, sur: int(math.floor(np.mean(v) + 0.5))
    if rule == "median-floor":
        return lambda v, sur: int(math.floor(np.median(v)))
    if rule.startswith("sur:"):
        try:
            p = float(rule[4:])
        except ValueError:
            p = -1.0
        if not 0 <= p <= 1:
            raise JNDPlugValueError(f"JND rule {rule!r}: give sur:P with P in [0, 1], e.g. sur:0.75")
        return lambda v, sur: level_for_sur(sur, p)
    raise JNDPlugValueError(f"unknown JND rule {rule!r}; use mean-floor, mean-round, median-floor or sur:P")


def _wilson(k: int, n: int, z: float = 1.959964) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    ph = k / n
    den = 1 + z * z / n
    c = (ph + z * z / (2 * n)) / den
    h = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / den
    return [round(max(0.0, c - h), 6), round(min(1.0, c + h), 6)]


def aggregate(judgements: list[Judgement], jnd_rule: str = "mean-floor", max_catch_fail_rate: float = 0.2,
              min_participants: int = 5, n_levels: int = N_LEVELS) -> dict:
    """Screen participants and build the ``labels.json`` document (see the module docstring)."""
    if not judgements:
        raise JNDPlugValueError("no judgements to aggregate")
    rule = _jnd_rule(jnd_rule)
    pj = participant_jnds(judgements, n_levels)
    if not pj.jnd:
        raise JNDPlugValueError("no participant finished a search on any image; nothing to aggregate")

    reasons: dict[str, list[str]] = {p: [] for p in pj.observer}
    for p, total in pj.catch_total.items():
        failed = pj.catch_failed.get(p, 0)
        if total and failed / total > max_catch_fail_rate:
            reasons[p].append(f"inattentive: failed {failed} of {total} catch trials "
                              f"(> {max_catch_fail_rate:.0%})")
    for p in reasons:
        if p not in pj.jnd:
            reasons[p].append("no finished search")
    attentive = {p: v for p, v in pj.jnd.items() if not reasons[p]}
    screen = bt500_screen(attentive)
    for p, why in screen.rejected.items():
        reasons[p].append(why)
    retained = {p: v for p, v in attentive.items() if p not in screen.rejected}

    images = sorted({img for v in pj.jnd.values() for img in v})
    entries = {}
    for img in images:
        vals = [v[img] for v in retained.values() if img in v]
        all_n = sum(1 for v in pj.jnd.values() if img in v)
        kinds = sorted({pj.observer[p][0] for p, v in retained.items() if img in v})
        entry: dict = {"n_participants": all_n, "n_retained": len(vals),
                       "observer_kind": "mixed" if len(kinds) > 1 else (kinds[0] if kinds else None)}
        entries[img] = _image_entry(entry, vals, rule, n_levels, min_participants)

    participants = {}
    for p in sorted(reasons):
        participants[p] = {
            "observer_kind": pj.observer[p][0], "observer_model": pj.observer[p][1],
            "retained": p in retained, "reasons": reasons[p],
            "n_images": len(pj.jnd.get(p, {})), "P": screen.P.get(p), "Q": screen.Q.get(p),
            "catch_total": pj.catch_total.get(p, 0), "catch_failed": pj.catch_failed.get(p, 0)}
    kinds = sorted({k for k, _ in pj.observer.values()})
    return {
        "schema": LABELS_SCHEMA, "n_levels": n_levels, "jnd_rule": jnd_rule,
        "observer_kind": "mixed" if len(kinds) > 1 else kinds[0],
        "observer_models": sorted({m for _, m in pj.observer.values() if m}),
        "screening": {
            "method": "ITU-R BT.500 observer screening on per-image JND values, after catch trials",
            "max_catch_fail_rate": max_catch_fail_rate,
            "n_participants": len(participants), "n_retained": len(retained),
            "rejected": {p: r for p, r in reasons.items() if r},
            "incomplete_searches": [list(k) for k in pj.incomplete],
            "inconsistent_searches": [list(k) for k in pj.inconsistent],
            "participants": participants},
        "images": entries,
    }


def _image_entry(entry: dict, vals: list[int], rule, n_levels: int, min_participants: int) -> dict:
    """One image's labels from its retained participants' JND levels ``vals``."""
    if not vals:
        entry.update(jnd_level=None, sur=None, flags=["no_retained_participants"])
        return entry
    n = len(vals)
    counts = [sum(1 for x in vals if x >= k) for k in range(1, n_levels + 1)]
    sur = [c / n for c in counts]
    st = image_stats(vals)
    level = rule(vals, sur)
    if n > 1 and st.std > 0:
        half = float(sps.t.ppf(0.975, n - 1) * st.std / math.sqrt(n))
        mean_ci = [st.mean - half, st.mean + half]
    else:
        mean_ci = [st.mean, st.mean]
    flags = []
    if n > 1 and st.std > 0 and not st.normal:
        flags.append("non_normal")
    if n < min_participants:
        flags.append("few_participants")
    if level == 0:
        flags.append("no_invisible_level")
    hist = Counter(vals)
    entry.update(
        jnd_level=int(level), jnd_mean=round(st.mean, 6), jnd_std=round(st.std, 6),
        jnd_mean_ci95=[round(x, 6) for x in mean_ci],
        kurtosis_beta2=None if math.isnan(st.beta2) else round(st.beta2, 6),
        normal=st.normal, sur=[round(s, 6) for s in sur],
        sur_ci95=[_wilson(c, n) for c in counts],
        histogram=[hist.get(k, 0) for k in range(n_levels + 1)], flags=flags)
    return entry


def load_labels(path: str | Path) -> dict:
    """Read a ``labels.json`` written by :func:`write_outputs`, its schema checked."""
    return read_labels(path)


def _copy_atomic(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, atomic_write(dst) as fo:
        shutil.copyfileobj(fi, fo)


def write_outputs(labels: dict, dataset: JNDDataset, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write ``labels.json``, ``pairs/original/<id>.png`` + ``pairs/jnd/<id>.png`` and plots.

    Images without a JND level (no retained participant) get no pair. The JND image of level 0
    is the original itself.
    """
    from jndplug.imageio import read_image, write_image

    out = Path(out_dir)
    written = []
    for img, e in labels["images"].items():
        if e.get("jnd_level") is None:
            continue
        for kind, level in (("original", 0), ("jnd", e["jnd_level"])):
            src = dataset.level_path(img, level)
            dst = out / "pairs" / kind / f"{img}.png"
            if src.suffix.lower() == ".png":
                _copy_atomic(src, dst)
            else:
                write_image(dst, read_image(src))
            written.append(dst)
    if plots:
        written += plot_labels(labels, out)
    # labels.json last: its presence says the pairs beside it are complete
    with atomic_write(out / "labels.json", "w") as f:
        json.dump(labels, f, indent=1)
    written.append(out / "labels.json")
    return written


def plot_labels(labels: dict, out_dir: str | Path) -> list[Path]:
    """``sur_curves.png`` (every image's SUR curve and their mean) and ``jnd_histogram.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    n_levels = labels["n_levels"]
    entries = [e for e in labels["images"].values() if e.get("sur")]
    if not entries:
        return []
    levels = np.arange(1, n_levels + 1)
    curves = np.array([e["sur"] for e in entries])
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in curves:
        ax.plot(levels, c, color="tab:blue", alpha=max(0.03, min(0.4, 8 / len(curves))), lw=1)
    ax.plot(levels, curves.mean(0), color="black", lw=2, label="mean over images")
    ax.set(xlabel="distortion level", ylabel="satisfied-user ratio", ylim=(-0.02, 1.02), xticks=levels,
           title=f"SUR curves, {len(curves)} images ({labels['observer_kind']} observers)")
    ax.grid(alpha=0.3)
    ax.legend()
    paths = [out / "sur_curves.png", out / "jnd_histogram.png"]
    _savefig(fig, paths[0])
    fig, ax = plt.subplots(figsize=(6, 4))
    jl = [e["jnd_level"] for e in entries]
    ax.hist(jl, bins=np.arange(-0.5, n_levels + 1.5), color="tab:blue", rwidth=0.85)
    ax.set(xlabel=f"JND level ({labels['jnd_rule']})", ylabel="images", xticks=range(n_levels + 1),
           title="JND level per image")
    _savefig(fig, paths[1])
    return paths


def _savefig(fig, path: Path) -> None:
    from jndplug.viz import save_figure

    save_figure(fig, path, dpi=110, bbox_inches="tight")
