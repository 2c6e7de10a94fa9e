"""From judgement records to per-participant JNDs, and ITU-R BT.500 observer screening.

BT.500 screening (Recommendation ITU-R BT.500, Annex 2, section "screening of the observers"),
applied to the per-image JND values ``u_ij`` of participant ``i`` on image ``j``:

* per image: mean ``u_j``, standard deviation ``s_j`` (``N - 1`` in the denominator) and kurtosis
  ``beta2_j = m4 / m2**2`` (moments about the mean, ``N`` in the denominator);
* the distribution counts as normal when ``2 <= beta2_j <= 4``; then the bounds are
  ``u_j +- 2 s_j``, otherwise ``u_j +- sqrt(20) s_j``;
* ``P_i`` counts the images where ``u_ij >= upper``, ``Q_i`` those where ``u_ij <= lower``;
* participant ``i`` is rejected when ``(P_i + Q_i) / J_i > 0.05`` and
  ``|(P_i - Q_i) / (P_i + Q_i)| < 0.3`` (``J_i``: images the participant judged). The second test
  keeps observers who are merely consistently stricter or laxer; it rejects the erratic ones.

Images where every participant gave the same JND (``s_j = 0``) have no outliers and are skipped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from jndplug.errors import JNDPlugValueError
from jndplug.study.engine import EXPECTED_CATCH_RESPONSE, N_LEVELS, SEARCH
from jndplug.study.records import Judgement


@dataclass
class ParticipantJNDs:
    """Per (participant, image) JND, derived from the search trials, plus catch-trial tallies."""

    jnd: dict[str, dict[str, int]] = field(default_factory=dict)  # participant -> image -> JND
    incomplete: list[tuple[str, str]] = field(default_factory=list)  # search never closed
    inconsistent: list[tuple[str, str]] = field(default_factory=list)  # noticed a level below one not noticed
    catch_total: dict[str, int] = field(default_factory=dict)
    catch_failed: dict[str, int] = field(default_factory=dict)
    observer: dict[str, tuple[str, str]] = field(default_factory=dict)  # participant -> (kind, model)


def participant_jnds(judgements: list[Judgement], n_levels: int = N_LEVELS) -> ParticipantJNDs:
    """Each participant's JND per image: the strongest level judged not noticeable.

    The JND is known exactly only when the weakest noticed level is the next one up (or the
    answers reach level 1 / level ``n_levels``); otherwise the (participant, image) is reported
    as incomplete and left out. Answers that notice a level weaker than one not noticed (possible
    in imported data from other protocols) are kept with the definition above and reported.
    """
    out = ParticipantJNDs()
    lo: dict[tuple[str, str], int] = defaultdict(int)
    hi: dict[tuple[str, str], int] = defaultdict(lambda: n_levels + 1)
    for j in judgements:
        kind_model = (j.observer_kind, j.observer_model)
        prev = out.observer.setdefault(j.participant, kind_model)
        if prev != kind_model:
            raise JNDPlugValueError(f"participant {j.participant!r} appears both as {prev} and as {kind_model}")
        if j.trial_kind != SEARCH:
            out.catch_total[j.participant] = out.catch_total.get(j.participant, 0) + 1
            if j.noticeable != EXPECTED_CATCH_RESPONSE[j.trial_kind]:
                out.catch_failed[j.participant] = out.catch_failed.get(j.participant, 0) + 1
            continue
        key = (j.participant, j.image)
        if j.noticeable:
            hi[key] = min(hi[key], j.level)
        else:
            lo[key] = max(lo[key], j.level)
    for key in sorted(set(lo) | set(hi)):
        p, img = key
        a, b = lo[key], hi[key]
        if b <= a:
            out.inconsistent.append(key)
        elif b - a > 1:
            out.incomplete.append(key)
            continue
        out.jnd.setdefault(p, {})[img] = a
    return out


def kurtosis_beta2(values) -> float:
    """Pearson kurtosis m4 / m2^2 (3 for a normal distribution); nan when all values are equal."""
    x = np.asarray(values, dtype=float)
    m2 = np.mean((x - x.mean()) ** 2)
    if m2 == 0:
        return math.nan
    return float(np.mean((x - x.mean()) ** 4) / m2**2)


@dataclass
class ImageStats:
    n: int
    mean: float
    std: float
    beta2: float
    normal: bool  # 2 <= beta2 <= 4 (kurtosis-based normality test of BT.500)


def image_stats(values) -> ImageStats:
    x = np.asarray(values, dtype=float)
    n = len(x)
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    b2 = kurtosis_beta2(x) if n > 1 else math.nan
    return ImageStats(n=n, mean=float(x.mean()) if n else math.nan, std=std, beta2=b2,
                      normal=bool(not math.isnan(b2) and 2 <= b2 <= 4))


@dataclass
class ScreeningResult:
    rejected: dict[str, str]  # participant -> reason
    P: dict[str, int]
    Q: dict[str, int]
    n_images: dict[str, int]
    images: dict[str, ImageStats]


def bt500_screen(scores: dict[str, dict[str, float]]) -> ScreeningResult:
    """BT.500 observer screening of ``scores[participant][image]`` (see the module docstring)."""
    by_image: dict[str, dict[str, float]] = defaultdict(dict)
    for p, per_image in scores.items():
        for img, v in per_image.items():
            by_image[img][p] = float(v)
    P = {p: 0 for p in scores}
    Q = {p: 0 for p in scores}
    stats = {}
    for img, per_p in by_image.items():
        st = image_stats(list(per_p.values()))
        stats[img] = st
        if st.n < 2 or st.std == 0:
            continue
        k = 2.0 if st.normal else math.sqrt(20)
        upper, lower = st.mean + k * st.std, st.mean - k * st.std
        for p, v in per_p.items():
            if v >= upper:
                P[p] += 1
            if v <= lower:
                Q[p] += 1
    rejected = {}
    n_images = {p: len(v) for p, v in scores.items()}
    for p in scores:
        pq = P[p] + Q[p]
        if n_images[p] and pq / n_images[p] > 0.05 and abs((P[p] - Q[p]) / pq) < 0.3:
            rejected[p] = (f"BT.500: {pq} of {n_images[p]} image JNDs outside the bounds "
                           f"(P={P[p]} above, Q={Q[p]} below; (P+Q)/J={pq / n_images[p]:.2f} > 0.05 "
                           f"and |P-Q|/(P+Q)={abs(P[p] - Q[p]) / pq:.2f} < 0.3)")
    return ScreeningResult(rejected=rejected, P=P, Q=Q, n_images=n_images, images=stats)
