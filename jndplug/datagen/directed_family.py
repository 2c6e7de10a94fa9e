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
    targets = [JNDTarget(spec=TargetSpec(estimator=model, bound="estimator", strength=s, gain=gain)) for s in strengths]

    def levels(x: torch.Tensor, level: int) -> torch.Tensor:
        if not 1 <= level <= len(targets):
            raise ValueError(f"level must be 1..{len(targets)}, got {level}")
        return targets[level - 1](x)

    levels.strengths, levels.gain = strengths, gain
    return levels


def _made_once(make, doc: str):
    """A level function for ``--level-fn`` that builds ``make()`` (loading the estimator) on first use."""
    made = []

    def level_fn(x: torch.Tensor, level: int) -> torch.Tensor:
        if not made:
            made.append(make())
        return made[0](x, level)

    level_fn.__doc__ = doc
    return level_fn


levels = _made_once(make_levels, "Level ``level`` of :data:`STRENGTHS` at :data:`GAIN` with the shipped estimator.")


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


# The directed change under each bound at equal visibility on CBSD68 (BENCHMARKS.md, "Where the
# budget goes"): the ladders of :func:`allocation_levels` are centred there, so every allocation
# crosses the threshold near its middle level and the study's labels say, per allocation, where
# the same sharpening starts to show.
ALLOCATIONS = {"estimator": 2.0, "profile": 0.591, "localstd": 0.221, "flat": 4.61, "none": 0.305}
# a quarter to four times the calibrated strength, sqrt(2) apart
ALLOCATION_FACTORS = tuple(round(2 ** ((k - 4) / 2), 4) for k in range(9))


def allocation_of(x: torch.Tensor, allocations=tuple(ALLOCATIONS)) -> str:
    """The allocation an image gets in :func:`allocation_levels`: picked by a hash of its 8-bit
    pixels, so every photo has one ladder, the same on every machine, and the allocations are
    about equally common over many photos."""
    import hashlib

    pixels = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy().tobytes()
    return allocations[int(hashlib.sha256(pixels).hexdigest(), 16) % len(allocations)]


def make_allocation_levels(allocations: dict | None = None, factors=ALLOCATION_FACTORS, estimator="default"):
    """A level function for the directed change at gain 1 (the target's own) whose spatial
    allocation differs from photo to photo: level k of a photo is ``directed:bound=B,strength=s_B *
    factors[k-1]`` with B = :func:`allocation_of` the photo and s_B its calibrated strength. The
    study then labels where each allocation becomes visible, which is what a bound learned for the
    directed distortion is trained on (docs/directed.md)."""
    from jndplug.spec import TargetSpec
    from jndplug.target import JNDTarget
    from jndplug.weights import load_estimator

    allocations = dict(ALLOCATIONS if allocations is None else allocations)
    factors = [float(f) for f in factors]
    if any(b <= a for a, b in zip(factors, factors[1:])):
        raise ValueError(f"factors must increase, got {factors}")
    model = load_estimator(estimator) if not isinstance(estimator, torch.nn.Module) else estimator
    targets = {b: [JNDTarget(spec=TargetSpec(estimator=model, bound=b, strength=round(s * f, 6))) for f in factors]
               for b, s in allocations.items()}

    def levels(x: torch.Tensor, level: int) -> torch.Tensor:
        if not 1 <= level <= len(factors):
            raise ValueError(f"level must be 1..{len(factors)}, got {level}")
        return targets[allocation_of(x, tuple(allocations))][level - 1](x)

    levels.allocations, levels.factors = allocations, factors
    return levels


allocation_levels = _made_once(make_allocation_levels,
                               "Level ``level`` of :func:`make_allocation_levels` with the shipped estimator.")
