"""The double-stimulus binary-search protocol as a plain, serialisable state machine.

One :class:`BinarySearch` finds one participant's JND for one image over the nine distortion levels;
a :class:`Session` runs a participant through a list of images, with optional catch trials. Both
refuse answers to trials they did not ask, and round-trip through ``to_dict``/``from_dict`` (plain
JSON types only) so a web server can keep per-participant state in a database between requests.

Search rule: the interval ``(lo, hi)`` holds the JND, where ``lo`` is the strongest level known not
to be noticed (0 before any answer) and ``hi`` the weakest level known to be noticed (10 before any
answer). Each trial shows ``(lo + hi) // 2`` -- level 5 first, the middle of the nine. "Noticeable"
sets ``hi`` (search moves to weaker levels), "not noticeable" sets ``lo`` (stronger levels). The
search ends when ``hi - lo == 1``; the JND is ``lo``: the strongest level judged not noticeable, 0
if level 1 is already noticed, 9 if even level 9 is not. It takes 3 or 4 trials.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from jndplug.data.layout import N_LEVELS
from jndplug.errors import JNDPlugValueError

PROTOCOL = "binary-search-v1"

# Catch trials, whose correct answer is known: an identical pair (level 0, never noticeable) and
# the strongest level (meant to be clearly noticeable). Failing them marks an inattentive participant.
CATCH_IDENTICAL = "catch_identical"
CATCH_STRONGEST = "catch_strongest"
SEARCH = "search"
TRIAL_KINDS = (SEARCH, CATCH_IDENTICAL, CATCH_STRONGEST)
EXPECTED_CATCH_RESPONSE = {CATCH_IDENTICAL: False, CATCH_STRONGEST: True}


class ProtocolError(JNDPlugValueError):
    """An answer the protocol did not ask for, or a state that cannot be restored."""


@dataclass(frozen=True)
class Trial:
    """One question: is the difference between the original and ``level`` of ``image`` noticeable?

    ``level`` 0 means the test image is the original itself (identical-pair catch trial).
    """

    index: int
    image: str
    level: int
    kind: str = SEARCH

    def to_dict(self) -> dict:
        return {"index": self.index, "image": self.image, "level": self.level, "kind": self.kind}


class BinarySearch:
    """Binary search for one participant's JND on one image (levels ``1..n_levels``)."""

    def __init__(self, n_levels: int = N_LEVELS):
        if not isinstance(n_levels, int) or n_levels < 1:
            raise JNDPlugValueError(f"n_levels must be a positive integer, got {n_levels!r}")
        self.n_levels = n_levels
        self.lo = 0
        self.hi = n_levels + 1
        self.history: list[tuple[int, bool]] = []

    @property
    def done(self) -> bool:
        return self.hi - self.lo <= 1

    @property
    def jnd(self) -> int | None:
        """The strongest level judged not noticeable once the search has ended, else None."""
        return self.lo if self.done else None

    def next_level(self) -> int | None:
        return None if self.done else (self.lo + self.hi) // 2

    def answer(self, level: int, noticeable: bool) -> None:
        expected = self.next_level()
        if expected is None:
            raise ProtocolError("the search has ended; no answer is expected")
        if level != expected:
            raise ProtocolError(f"the search asked about level {expected}, not level {level}")
        if not isinstance(noticeable, bool):
            raise ProtocolError(f"an answer must be True (noticeable) or False, got {noticeable!r}")
        self.history.append((level, noticeable))
        if noticeable:
            self.hi = level
        else:
            self.lo = level

    def to_dict(self) -> dict:
        return {"n_levels": self.n_levels, "lo": self.lo, "hi": self.hi,
                "history": [[lvl, ans] for lvl, ans in self.history]}

    @classmethod
    def from_dict(cls, d: dict) -> "BinarySearch":
        try:
            s = cls(int(d["n_levels"]))
            s.lo, s.hi = int(d["lo"]), int(d["hi"])
            s.history = [(int(lvl), bool(ans)) for lvl, ans in d["history"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"not a binary-search state: {exc}") from exc
        if not 0 <= s.lo < s.hi <= s.n_levels + 1:
            raise ProtocolError(f"inconsistent binary-search state lo={s.lo} hi={s.hi}")
        return s


class Session:
    """One participant's pass over a list of images, one binary search after another.

    ``catch_every`` > 0 inserts a catch trial after every that many finished images, alternating
    identical-pair and strongest-level trials on the image just finished, so a participant who
    clicks without looking is caught whatever the images. Order of images is the caller's to choose
    (shuffle them per participant before building the session).

    Use: ``t = s.next_trial()``; show it; ``s.answer(t.index, noticeable)``; repeat until
    ``next_trial()`` returns None. ``s.results()`` gives each image's JND.
    """

    def __init__(self, images: list[str], n_levels: int = N_LEVELS, catch_every: int = 0):
        images = [str(i) for i in images]
        if not images:
            raise JNDPlugValueError("a session needs at least one image")
        if len(set(images)) != len(images):
            raise JNDPlugValueError("a session lists an image more than once")
        if catch_every < 0:
            raise JNDPlugValueError(f"catch_every must be >= 0, got {catch_every}")
        self.images = images
        self.n_levels = n_levels
        self.catch_every = int(catch_every)
        self.position = 0  # index into images of the search in progress
        self.search = BinarySearch(n_levels)
        self.jnds: dict[str, int] = {}
        self.catch_results: list[dict] = []  # {"image", "kind", "response", "passed"}
        self.pending_catch: list[dict] = []  # catch trials queued, shown before the next search trial
        self.trial_count = 0  # trials answered so far == index of the next trial
        self.asked: dict | None = None  # the trial shown and awaiting an answer

    @property
    def done(self) -> bool:
        return self.asked is None and not self.pending_catch and self.position >= len(self.images)

    def next_trial(self) -> Trial | None:
        """The trial to show now (the same one again until it is answered); None when finished."""
        if self.asked is not None:
            return Trial(**self.asked)
        if self.pending_catch:
            c = self.pending_catch[0]
            trial = Trial(self.trial_count, c["image"], c["level"], c["kind"])
        elif self.position < len(self.images):
            trial = Trial(self.trial_count, self.images[self.position], self.search.next_level())
        else:
            return None
        self.asked = trial.to_dict()
        return trial

    def answer(self, trial_index: int, noticeable: bool) -> Trial:
        """Record the answer to the trial last shown; returns that trial."""
        if self.asked is None:
            raise ProtocolError(f"no trial is awaiting an answer (got an answer for trial {trial_index})")
        if trial_index != self.asked["index"]:
            raise ProtocolError(f"the trial awaiting an answer is {self.asked['index']}, not {trial_index}")
        if not isinstance(noticeable, bool):
            raise ProtocolError(f"an answer must be True (noticeable) or False, got {noticeable!r}")
        trial = Trial(**self.asked)
        if trial.kind == SEARCH:
            self.search.answer(trial.level, noticeable)
            if self.search.done:
                self.jnds[trial.image] = self.search.jnd
                self.position += 1
                self.search = BinarySearch(self.n_levels)
                self._queue_catch(trial.image)
        else:
            self.pending_catch.pop(0)
            self.catch_results.append({"image": trial.image, "kind": trial.kind, "response": noticeable,
                                       "passed": noticeable == EXPECTED_CATCH_RESPONSE[trial.kind]})
        self.asked = None
        self.trial_count += 1
        return trial

    def _queue_catch(self, image: str) -> None:
        if self.catch_every and self.position % self.catch_every == 0:
            n_done = self.position // self.catch_every
            kind = CATCH_IDENTICAL if n_done % 2 else CATCH_STRONGEST
            level = 0 if kind == CATCH_IDENTICAL else self.n_levels
            self.pending_catch.append({"image": image, "level": level, "kind": kind})

    def results(self) -> dict[str, int]:
        """JND per finished image."""
        return dict(self.jnds)

    def to_dict(self) -> dict:
        return {"protocol": PROTOCOL, "images": list(self.images), "n_levels": self.n_levels,
                "catch_every": self.catch_every, "position": self.position,
                "search": self.search.to_dict(), "jnds": dict(self.jnds),
                "catch_results": copy.deepcopy(self.catch_results),
                "pending_catch": copy.deepcopy(self.pending_catch),
                "trial_count": self.trial_count, "asked": dict(self.asked) if self.asked else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Session":
        if not isinstance(d, dict) or d.get("protocol") != PROTOCOL:
            raise ProtocolError(f"not a {PROTOCOL} session state")
        try:
            s = cls(d["images"], int(d["n_levels"]), int(d["catch_every"]))
            s.position = int(d["position"])
            s.search = BinarySearch.from_dict(d["search"])
            s.jnds = {str(k): int(v) for k, v in d["jnds"].items()}
            s.catch_results = [dict(c) for c in d["catch_results"]]
            s.pending_catch = [dict(c) for c in d["pending_catch"]]
            s.trial_count = int(d["trial_count"])
            s.asked = dict(d["asked"]) if d["asked"] else None
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ProtocolError):
                raise
            raise ProtocolError(f"not a valid session state: {exc}") from exc
        if not 0 <= s.position <= len(s.images) or (s.asked and s.asked.get("kind") not in TRIAL_KINDS):
            raise ProtocolError("session state is inconsistent")
        return s
