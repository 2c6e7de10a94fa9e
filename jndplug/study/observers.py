"""Simulated observers: participants that answer the engine's questions from a visibility model.

They stand in for people when none are available, and every record they produce says so
(``observer_kind = "simulated"``, ``observer_model`` = the model and the observer's parameters).
Each participant scales the visibility model's distance (``visibility.py``, which documents
the psychometric function and every model's mapping) by a lognormal sensitivity and lapses
with a small probability; see :func:`make_observers`.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import atomic_write, read_image
from jndplug.data.layout import JNDDataset
from jndplug.study.engine import SEARCH, Session
from jndplug.study.records import Judgement
from jndplug.study.visibility import Conservative, VisibilityModel, detection_probability


def deciding_models(cache: "PredictionCache") -> dict:
    """How often each component of a conservative model gave the largest distance.

    Counted over the (image, level) predictions in the cache: all of them, and those whose
    distance lies between 0.5 and 2 JOD (detection 26-82% for the median observer), where the
    decision between noticed and not noticed is made.
    """
    counts, near = {}, {}
    for path in sorted(cache.dir.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for hit in entry.get("levels", {}).values():
            if len(hit) < 3 or not hit[2]:
                continue
            winner = max(hit[2], key=hit[2].get)
            counts[winner] = counts.get(winner, 0) + 1
            if 0.5 <= hit[0] <= 2.0:
                near[winner] = near.get(winner, 0) + 1
    return {"all": counts, "near_threshold": near}


class PredictionCache:
    """The model's distance per (image, level), computed once and kept on disk.

    One small JSON file per image under ``cache_dir``; an entry is recomputed when the image files
    it came from change (size or modification time), so a regenerated dataset is not served stale
    numbers. Interrupting loses at most the level being computed.
    """

    def __init__(self, dataset: JNDDataset, model: VisibilityModel, cache_dir: str | Path | None = None):
        self.dataset, self.model = dataset, model
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model.key)
        self.dir = Path(cache_dir) if cache_dir else dataset.study_dir / "cache" / safe
        self._mem: dict[str, dict] = {}
        self._ref: tuple[str, np.ndarray] | None = None
        self.computed = 0  # model evaluations made by this instance (cache misses)

    def _stamp(self, p: Path) -> list[int]:
        s = p.stat()
        return [s.st_size, s.st_mtime_ns]

    def _entry(self, image: str) -> dict:
        if image not in self._mem:
            path = self.dir / f"{image}.json"
            entry = None
            if path.is_file():
                try:
                    entry = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    entry = None  # a damaged cache file is recomputed, not trusted
            orig = self._stamp(self.dataset.original_path(image))
            if not entry or entry.get("model") != self.model.key or entry.get("original") != orig:
                entry = {"model": self.model.key, "original": orig, "levels": {}}
            self._mem[image] = entry
        return self._mem[image]

    def distance(self, image: str, level: int) -> float:
        if level == 0:
            return 0.0
        entry = self._entry(image)
        path = self.dataset.level_path(image, level)
        stamp = self._stamp(path)
        hit = entry["levels"].get(str(level))
        if hit and hit[1] == stamp:
            return float(hit[0])
        if self._ref is None or self._ref[0] != image:
            self._ref = (image, read_image(self.dataset.original_path(image)))
        ref, test = self._ref[1], read_image(path)
        if ref.shape != test.shape:
            raise JNDPlugValueError(f"{path}: size {test.shape[1]}x{test.shape[0]} differs from its original "
                                    f"({ref.shape[1]}x{ref.shape[0]})")
        if isinstance(self.model, Conservative):
            parts = self.model.components(ref, test)
            d = max(parts.values())
            entry["levels"][str(level)] = [d, stamp, parts]
        else:
            d = float(self.model.distance(ref, test))
            entry["levels"][str(level)] = [d, stamp]
        self.computed += 1
        with atomic_write(self.dir / f"{image}.json", "w") as f:
            json.dump(entry, f)
        return d


class SimulatedObserver:
    """One simulated participant: a sensitivity, a lapse rate and a seeded answer stream."""

    def __init__(self, participant: str, sensitivity: float, lapse_rate: float, seed: int, index: int,
                 model_key: str):
        self.participant, self.sensitivity, self.lapse_rate = participant, sensitivity, lapse_rate
        self.seed, self.index = seed, index
        self.description = (f"{model_key};sensitivity={sensitivity:.4f};lapse={lapse_rate:g};"
                            f"seed={seed};observer={index}")
        self._streams: dict[str, np.random.Generator] = {}

    def p_noticeable(self, d: float) -> float:
        return float((1 - self.lapse_rate) * detection_probability(d, self.sensitivity) + self.lapse_rate / 2)

    def respond(self, image: str, d: float) -> bool:
        # one random stream per image, so answers do not depend on the order images are shown in
        if image not in self._streams:
            self._streams[image] = np.random.default_rng([self.seed, self.index, zlib.crc32(image.encode())])
        return bool(self._streams[image].random() < self.p_noticeable(d))


def make_observers(n: int, seed: int, model_key: str, sensitivity_sd: float = 0.3,
                   lapse_rate: float = 0.02, sensitivity_median: float = 1.0) -> list[SimulatedObserver]:
    if n < 1:
        raise JNDPlugValueError(f"need at least one observer, got {n}")
    if sensitivity_sd < 0 or sensitivity_median <= 0 or not 0 <= lapse_rate <= 1:
        raise JNDPlugValueError("sensitivity_sd must be >= 0, sensitivity_median > 0 and lapse_rate in [0, 1]")
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 0x5e45])
        s = float(sensitivity_median * np.exp(sensitivity_sd * rng.standard_normal()))
        out.append(SimulatedObserver(f"sim{seed}-{i:03d}", s, lapse_rate, seed, i, model_key))
    return out


def simulate(dataset: JNDDataset, model: VisibilityModel, n_observers: int = 20, seed: int = 0,
             sensitivity_sd: float = 0.3, lapse_rate: float = 0.02, catch_every: int = 10,
             images: list[str] | None = None, progress: bool = True, sensitivity_median: float = 1.0,
             cache_dir: str | Path | None = None) -> list[Judgement]:
    """Run ``n_observers`` simulated participants through the protocol engine on ``dataset``.

    Each observer gets its own seeded image order and, every ``catch_every`` images, a catch
    trial. Model predictions come from (and go to) the on-disk cache, so an interrupted run
    resumes where the model evaluations stopped. ``sensitivity_median`` scales every observer's
    sensitivity (1: the model's own calibration; see the README's validation for why one might
    raise it).
    """
    from tqdm import tqdm

    images = list(images) if images is not None else list(dataset.ids)
    unknown = sorted(set(images) - set(dataset.ids))
    if unknown:
        raise JNDPlugValueError(f"image(s) not in the dataset: {', '.join(unknown[:5])}")
    cache = PredictionCache(dataset, model, cache_dir)
    observers = make_observers(n_observers, seed, model.key, sensitivity_sd, lapse_rate, sensitivity_median)
    judgements: list[Judgement] = []
    bar = tqdm(total=n_observers * len(images), desc=f"simulating ({model.name})", unit="search",
               disable=not progress)
    try:
        for obs in observers:
            order = list(images)
            np.random.default_rng([seed, obs.index, 0x0DE7]).shuffle(order)
            session = Session(order, dataset.n_levels, catch_every=catch_every)
            while (trial := session.next_trial()) is not None:
                answer = obs.respond(trial.image, cache.distance(trial.image, trial.level))
                session.answer(trial.index, answer)
                judgements.append(Judgement(
                    participant=obs.participant, session=f"sim{seed}", image=trial.image,
                    trial_index=trial.index, trial_kind=trial.kind, level=trial.level,
                    response="noticeable" if answer else "not_noticeable",
                    observer_kind="simulated", observer_model=obs.description))
                if trial.kind == SEARCH and session.search.history == []:
                    bar.update(1)
                    bar.set_postfix(model_evaluations=cache.computed, refresh=False)
    finally:
        bar.close()
    return judgements
