"""From candidate distortions to levels whose strength rises monotonically across the threshold.

The distortion measure is the mean squared error between the 8-bit level image and the 8-bit
original over all pixels and RGB channels, reported as PSNR in dB (peak 255). Level k is
``original + a_k * (candidate_k - original)`` with blend ``a_k = min(1, sqrt(T_k / MSE_k))``:
because MSE scales with ``a**2``, this puts every level whose candidate is strong enough exactly on
a PSNR ladder ``T_1 .. T_n`` (default 44 dB down to 22 dB, evenly spaced), from practically
invisible to clearly visible, whatever the image. A candidate too weak for its rung is used as is.

Order check, per image: (1) if some candidate cannot reach past the level below it (too weak for
its rung, or without calibration simply weaker than its predecessor), the candidates are re-sorted
by raw MSE; (2) after blending and rounding to 8 bits,
PSNR must fall strictly from level 1 to n; where it does not (ties, rounding, weak candidates),
the weaker level is blended further towards the original until it sits below its neighbour.
Both repairs are listed per image in the manifest; anything that could not be repaired too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from jndplug.errors import JNDPlugValueError
from jndplug.pixels import mse_to_psnr

# How far (in dB) a repaired level is put above the PSNR of the next stronger level.
_REPAIR_MARGIN_DB = 0.5


def psnr_ladder(n: int, high_db: float = 44.0, low_db: float = 22.0) -> list[float]:
    """Target PSNR of each level, evenly spaced in dB from ``high_db`` (level 1) to ``low_db``."""
    if n < 1:
        raise JNDPlugValueError(f"number of levels must be >= 1, got {n}")
    if not high_db > low_db > 0:
        raise JNDPlugValueError(f"PSNR range must be high > low > 0 dB, got {high_db} and {low_db}")
    if n == 1:
        return [high_db]
    return [high_db - (high_db - low_db) * k / (n - 1) for k in range(n)]


def distortion_measure(image: torch.Tensor, reference: torch.Tensor) -> float:
    """The measure levels are ordered by: mean squared error over pixels and channels, on [0,1] floats.

    Both arguments are ``[3,H,W]`` (or batched) tensors in [0,1]; larger means more distorted.
    """
    if image.shape != reference.shape:
        raise ValueError(f"distortion_measure needs equal shapes, got {tuple(image.shape)} and {tuple(reference.shape)}")
    return float(torch.mean((image.float() - reference.float()) ** 2))


@dataclass
class Level:
    image: np.ndarray  # HxWx3 uint8
    candidate: int  # index into the candidates it was made from
    blend: float
    psnr: float
    candidate_psnr: float


def _blend(original: torch.Tensor, candidate: torch.Tensor, a: float) -> np.ndarray:
    out = (original + a * (candidate - original)).clamp(0, 1)
    return (out.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def _mse(original_u8: np.ndarray, image_u8: np.ndarray) -> float:
    d = original_u8.astype(np.float64) - image_u8.astype(np.float64)
    return float(np.mean(d * d)) / 255.0 ** 2


def form_levels(original: np.ndarray, candidates: list[torch.Tensor], ladder: list[float] | None
                ) -> tuple[list[Level], dict]:
    """Order, calibrate and check one image's levels.

    ``original`` is HxWx3 uint8; ``candidates`` are float ``[3,H,W]`` tensors in [0,1], one per
    level in nominal order (weakest first); ``ladder`` gives each level's target PSNR, or None to
    keep the candidates' own strength (then only the order is checked and repaired).
    Returns the levels and a report: ``reordered``, ``repairs``, ``violations``, ``below_target``.
    """
    x = torch.from_numpy(original).permute(2, 0, 1).float() / 255.0
    cands = [c.detach().float().cpu().clamp(0, 1) for c in candidates]
    raw = [float(torch.mean((c - x) ** 2)) for c in cands]
    reach = [min(m, 10 ** (-t / 10)) for m, t in zip(raw, ladder)] if ladder is not None else raw
    order = list(range(len(cands)))
    if any(a >= b for a, b in zip(reach, reach[1:])):
        # a candidate too weak for its place: re-sort by raw MSE (stable, so ties keep nominal order)
        order = sorted(order, key=lambda i: raw[i])
    report = {"reordered": order != list(range(len(cands))), "candidate_order": order,
              "repairs": [], "violations": [], "below_target": []}
    levels = []
    for k, i in enumerate(order):
        a = 1.0
        if ladder is not None and raw[i] > 0:
            target = 10 ** (-ladder[k] / 10)
            a = min(1.0, math.sqrt(target / raw[i]))
            if a == 1.0 and mse_to_psnr(raw[i]) > ladder[k] + 0.05:
                report["below_target"].append(k + 1)
        img = _blend(x, cands[i], a)
        levels.append(Level(img, i, a, mse_to_psnr(_mse(original, img)), mse_to_psnr(raw[i])))
    # Strict decrease of PSNR, repaired from the strongest level down so each fix only weakens.
    for k in range(len(levels) - 2, -1, -1):
        lv, nxt = levels[k], levels[k + 1]
        if lv.psnr > nxt.psnr:
            continue
        if not math.isfinite(nxt.psnr):
            report["violations"].append({"level": k + 1, "psnr": lv.psnr, "next_psnr": nxt.psnr})
            continue
        a, before = lv.blend, lv.psnr
        for _ in range(8):  # rounding to 8 bits makes one analytic step not always enough
            want = nxt.psnr + _REPAIR_MARGIN_DB
            cur = _mse(original, lv.image)
            a *= math.sqrt(10 ** (-want / 10) / cur) if cur > 0 else 0.5
            lv.image = _blend(x, cands[lv.candidate], a)
            lv.blend, lv.psnr = a, mse_to_psnr(_mse(original, lv.image))
            if lv.psnr > nxt.psnr:
                break
        if lv.psnr > nxt.psnr:
            report["repairs"].append({"level": k + 1, "psnr_before": before, "psnr_after": lv.psnr,
                                      "blend_after": a})
        else:
            report["violations"].append({"level": k + 1, "psnr": lv.psnr, "next_psnr": nxt.psnr})
    return levels, report


def is_monotonic(psnrs: list[float]) -> bool:
    """True if PSNR falls strictly from each level to the next (distortion strictly rises)."""
    return all(a > b for a, b in zip(psnrs, psnrs[1:]))
