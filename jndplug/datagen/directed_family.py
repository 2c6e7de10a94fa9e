"""The directed target's own distortion as a distortion family for ``jndplug datagen``.

The shipped estimator learned the visibility threshold of shaped autoencoder distortions; the
directed target carries a luma sharpening instead, whose threshold nobody had measured. This family
makes that measurable with the study: level k of an image is its directed JND image
(``JNDTarget(kind="directed")``) at budget ``strength = STRENGTHS[k-1]`` times the estimator's JND
map, with a gain high enough (:data:`GAIN`) that the bound, not the sharpening, sets the size of the
change. Every level is therefore zero-mean, luma only and spent where the estimator says masking
hides it, exactly as a target at that strength would be, and the study's label of an image is the
strength at which people (or the simulated observers) start to notice::

    jndplug datagen --src PHOTOS --out DATASET --level-fn jndplug.datagen.directed_family:levels \\
        --no-calibrate --masking 0 --chroma 1

(``--no-calibrate`` keeps each level at its strength instead of blending it onto the PSNR ladder;
``--masking 0 --chroma 1`` leave the distortion as the target makes it.) docs/directed.md has the
design and the measurements.
"""

from __future__ import annotations

import torch

# sqrt(2) apart from half to eight times the estimator's map: the shipped default (strength 1, gain
# 1) was noticed by well under 25 % of the simulated panel, four times its bound by far more
# (docs/directed.md), so the ladder straddles the threshold with room on both sides
STRENGTHS = tuple(round(0.5 * 2 ** (k / 2), 4) for k in range(9))
# at gain 8 the projection onto the bound decides the change almost everywhere the image has detail
GAIN = 8.0


def make_levels(strengths=STRENGTHS, gain: float = GAIN, estimator="default"):
    """A level function ``f(x, level) -> image`` (level 1..len(strengths)) for ``build_dataset``."""
    from jndplug.spec import TargetSpec
    from jndplug.target import JNDTarget
    from jndplug.weights import load_estimator

    strengths = [float(s) for s in strengths]
    if any(b <= a for a, b in zip(strengths, strengths[1:])):
        raise ValueError(f"strengths must increase, got {strengths}")
    model = load_estimator(estimator) if not isinstance(estimator, torch.nn.Module) else estimator
    targets = [JNDTarget(spec=TargetSpec(estimator=model, strength=s, gain=gain)) for s in strengths]

    def levels(x: torch.Tensor, level: int) -> torch.Tensor:
        if not 1 <= level <= len(targets):
            raise ValueError(f"level must be 1..{len(targets)}, got {level}")
        return targets[level - 1](x)

    levels.strengths, levels.gain = strengths, gain
    return levels


_default = None


def levels(x: torch.Tensor, level: int) -> torch.Tensor:
    """Level ``level`` of :data:`STRENGTHS` at :data:`GAIN` with the shipped estimator (loaded once)."""
    global _default
    if _default is None:
        _default = make_levels()
    return _default(x, level)


def threshold_strength(sur: list[float], p: float, strengths=STRENGTHS) -> float:
    """The strength at which an image's satisfied-user ratio falls to ``p``: the study's SUR curve
    over the ladder (``labels.json``'s ``sur``, one ratio per level) interpolated linearly in log
    strength between the last level still at ``p`` or above and the first below it. Below the
    ladder's first level it is ``strengths[0]`` (a bound, said as such by :func:`summarize_thresholds`),
    and ``inf`` if no level falls below ``p``."""
    import math

    if len(sur) != len(strengths):
        raise ValueError(f"sur has {len(sur)} values for {len(strengths)} strengths")
    logs = [math.log(s) for s in strengths]
    if sur[0] < p:
        return float(strengths[0])
    for k in range(1, len(sur)):
        if sur[k] < p:
            a, b = sur[k - 1], sur[k]
            t = (a - p) / (a - b) if a > b else 0.0
            return float(math.exp(logs[k - 1] + t * (logs[k] - logs[k - 1])))
    return math.inf


def summarize_thresholds(labels: dict, p: float, strengths=STRENGTHS) -> dict:
    """Per image and over all images, the strength at which the SUR falls to ``p`` (``labels``: the
    ``images`` mapping of a ``labels.json`` written by ``jndplug study aggregate`` on this family)."""
    import numpy as np

    per = {iid: threshold_strength(e["sur"], p, strengths) for iid, e in sorted(labels.items()) if e.get("sur")}
    values = np.array(list(per.values()))
    finite = values[np.isfinite(values)]
    return {"p": p, "images": len(values), "below_ladder": int(np.sum(values <= strengths[0])),
            "above_ladder": int(np.sum(~np.isfinite(values))),
            "median": float(np.median(values)) if len(values) else None,
            "percentiles": {q: float(np.percentile(finite, q)) for q in (10, 25, 50)} if len(finite) else {},
            "per_image": per}
