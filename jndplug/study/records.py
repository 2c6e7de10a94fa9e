"""Judgement records: the schema every judgement takes, in CSV and JSON, and an importer.

One record is one answered trial. Fields, in CSV column order:

===================  =====================================================================
``participant``      participant id (any non-empty text)
``session``          session id (a participant may take several sessions)
``image``            image id (the dataset's ``originals/<id>.png`` stem)
``trial_index``      0-based position of the trial in its session
``trial_kind``       ``search``, ``catch_identical`` (identical pair) or ``catch_strongest``
``level``            distortion level shown, 1..9 (0 for an identical pair)
``response``         ``noticeable`` or ``not_noticeable``
``response_time_ms`` milliseconds from showing the pair to the answer; empty if unknown
``shown_at``         ISO 8601 time the pair was shown; empty if unknown
``answered_at``      ISO 8601 time of the answer; empty if unknown
``observer_kind``    ``human`` or ``simulated``
``observer_model``   for simulated observers the model and its parameters; empty for humans
===================  =====================================================================

JSON files hold ``{"schema": "jndplug-judgements-v1", "judgements": [ {field: value, ...}, ... ]}``
with the same fields (numbers as numbers, unknowns as null).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import atomic_write
from jndplug.study.engine import N_LEVELS, SEARCH, TRIAL_KINDS

SCHEMA = "jndplug-judgements-v1"
RESPONSES = ("noticeable", "not_noticeable")
OBSERVER_KINDS = ("human", "simulated")


@dataclass(frozen=True)
class Judgement:
    participant: str
    session: str
    image: str
    trial_index: int
    trial_kind: str
    level: int
    response: str
    response_time_ms: float | None = None
    shown_at: str | None = None
    answered_at: str | None = None
    observer_kind: str = "human"
    observer_model: str = ""

    @property
    def noticeable(self) -> bool:
        return self.response == "noticeable"

    def __post_init__(self):
        for name in ("participant", "session", "image"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise JNDPlugValueError(f"{name} must be non-empty text, got {getattr(self, name)!r}")
        if self.trial_kind not in TRIAL_KINDS:
            raise JNDPlugValueError(f"trial_kind must be one of {', '.join(TRIAL_KINDS)}; got {self.trial_kind!r}")
        if not isinstance(self.level, int) or not 0 <= self.level <= N_LEVELS:
            raise JNDPlugValueError(f"level must be an integer 0..{N_LEVELS}, got {self.level!r}")
        if self.level == 0 and self.trial_kind == SEARCH:
            raise JNDPlugValueError("level 0 (identical pair) is only valid for catch_identical trials")
        if self.response not in RESPONSES:
            raise JNDPlugValueError(f"response must be one of {', '.join(RESPONSES)}; got {self.response!r}")
        if not isinstance(self.trial_index, int) or self.trial_index < 0:
            raise JNDPlugValueError(f"trial_index must be a non-negative integer, got {self.trial_index!r}")
        if self.response_time_ms is not None and not (math.isfinite(self.response_time_ms) and self.response_time_ms >= 0):
            raise JNDPlugValueError(f"response_time_ms must be a non-negative number, got {self.response_time_ms!r}")
        if self.observer_kind not in OBSERVER_KINDS:
            raise JNDPlugValueError(f"observer_kind must be one of {', '.join(OBSERVER_KINDS)}; got "
                                    f"{self.observer_kind!r}")


FIELDS = tuple(f.name for f in fields(Judgement))
_INT_FIELDS = ("trial_index", "level")


def _from_strings(row: dict[str, str], where: str) -> Judgement:
    """A record from text values (a CSV row); empty optional fields become None."""
    missing = [f for f in ("participant", "session", "image", "trial_index", "trial_kind", "level", "response")
               if f not in row]
    if missing:
        raise JNDPlugValueError(f"{where}: missing column(s) {', '.join(missing)}")
    kw: dict = {}
    for name in FIELDS:
        v = row.get(name)
        v = v.strip() if isinstance(v, str) else v
        if name in _INT_FIELDS:
            try:
                kw[name] = int(v)
            except (TypeError, ValueError):
                raise JNDPlugValueError(f"{where}: {name} must be an integer, got {v!r}") from None
        elif name == "response_time_ms":
            try:
                kw[name] = float(v) if v not in (None, "") else None
            except ValueError:
                raise JNDPlugValueError(f"{where}: response_time_ms must be a number, got {v!r}") from None
        elif name in ("shown_at", "answered_at"):
            kw[name] = v or None
        elif name == "observer_kind":
            kw[name] = v or "human"
        else:
            kw[name] = "" if v is None else v
    try:
        return Judgement(**kw)
    except ValueError as exc:
        raise JNDPlugValueError(f"{where}: {exc}") from None


def to_csv_text(judgements: list[Judgement]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for j in judgements:
        w.writerow({k: ("" if v is None else v) for k, v in asdict(j).items()})
    return buf.getvalue()


def write_judgements(path: str | Path, judgements: list[Judgement]) -> None:
    """Write records atomically; ``.json`` files as JSON, anything else as CSV."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps({"schema": SCHEMA, "judgements": [asdict(j) for j in judgements]}, indent=1)
    else:
        text = to_csv_text(judgements)
    with atomic_write(path, "w") as f:
        f.write(text)


def read_judgements(path: str | Path) -> list[Judgement]:
    """Read records written by :func:`write_judgements` (CSV or JSON), checking every field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such judgements file: {path}")
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise JNDPlugValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("judgements"), list):
            raise JNDPlugValueError(f"{path}: not a {SCHEMA} file (use 'jndplug study import' for other formats)")
        out = []
        for i, rec in enumerate(doc["judgements"]):
            if not isinstance(rec, dict):
                raise JNDPlugValueError(f"{path}: judgement {i} is not an object")
            out.append(_from_strings({k: (None if v is None else str(v)) for k, v in rec.items()},
                                     f"{path}: judgement {i}"))
        return out
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(("participant", "image", "level", "response")) <= set(reader.fieldnames):
            raise JNDPlugValueError(f"{path}: not a judgements CSV (header must include {', '.join(FIELDS)}); "
                                    "use 'jndplug study import' for other formats")
        return [_from_strings(row, f"{path}: line {reader.line_num}") for row in reader]


def import_judgements(path: str | Path, columns: dict[str, str] | None = None,
                      noticeable_values=("1", "yes", "y", "true", "noticeable", "visible", "different"),
                      not_noticeable_values=("0", "no", "n", "false", "not_noticeable", "invisible", "same"),
                      level_offset: int = 0, defaults: dict[str, str] | None = None) -> list[Judgement]:
    """Map a third-party judgement table (CSV, or JSON list of objects) into records.

    ``columns`` maps schema field -> column name in the file (unmapped fields are looked up under
    their own name). ``noticeable_values``/``not_noticeable_values`` say which response texts mean
    what (compared case-insensitively). ``level_offset`` is added to the file's levels (``1`` for
    0-based files). ``defaults`` gives values for fields the file lacks, e.g. ``{"observer_kind":
    "human"}``. Missing ``session`` becomes "imported"; missing ``trial_kind`` "search"; missing
    ``trial_index`` is the row order within each participant and session. Every row must give a
    participant, image, level and response.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    columns = dict(columns or {})
    unknown = set(columns) - set(FIELDS)
    if unknown:
        raise JNDPlugValueError(f"unknown schema field(s) in column mapping: {', '.join(sorted(unknown))}; "
                                f"fields are {', '.join(FIELDS)}")
    defaults = {"session": "imported", "trial_kind": SEARCH, "observer_kind": "human", **(defaults or {})}
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise JNDPlugValueError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(rows, dict):  # tolerate {"anything": [ ... ]} wrappers with a single list
            lists = [v for v in rows.values() if isinstance(v, list)]
            rows = lists[0] if len(lists) == 1 else None
        if not isinstance(rows, list):
            raise JNDPlugValueError(f"{path}: expected a JSON list of objects")
        rows = [{k: (None if v is None else str(v)) for k, v in r.items()} for r in rows]
        header = set().union(*(r.keys() for r in rows)) if rows else set()
        where = [f"{path}: item {i}" for i in range(len(rows))]
    else:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = set(reader.fieldnames or ())
        where = [f"{path}: line {i + 2}" for i in range(len(rows))]
    for field in ("participant", "image", "level", "response"):
        col = columns.get(field, field)
        if col not in header:
            raise JNDPlugValueError(f"{path}: no column {col!r} for {field}; columns are {', '.join(sorted(header))} "
                                    f"(map it with --map {field}=COLUMN)")
    yes = {v.lower() for v in noticeable_values}
    no = {v.lower() for v in not_noticeable_values}
    if yes & no:
        raise JNDPlugValueError(f"response values mean both noticeable and not: {', '.join(sorted(yes & no))}")
    counters: dict[tuple, int] = {}
    out = []
    for row, loc in zip(rows, where):
        rec = {}
        for field in FIELDS:
            col = columns.get(field, field)
            v = row.get(col)
            rec[field] = v if v not in (None, "") else defaults.get(field)
        resp = (rec["response"] or "").strip().lower()
        if resp in yes:
            rec["response"] = "noticeable"
        elif resp in no:
            rec["response"] = "not_noticeable"
        else:
            raise JNDPlugValueError(f"{loc}: response {rec['response']!r} is neither a noticeable value "
                                    f"({', '.join(sorted(yes))}) nor a not-noticeable one ({', '.join(sorted(no))})")
        try:
            rec["level"] = str(int(float(rec["level"])) + level_offset)
        except (TypeError, ValueError):
            raise JNDPlugValueError(f"{loc}: level must be a number, got {rec['level']!r}") from None
        if rec.get("trial_index") is None:
            key = (rec["participant"], rec["session"])
            rec["trial_index"] = str(counters.get(key, 0))
            counters[key] = counters.get(key, 0) + 1
        out.append(_from_strings(rec, loc))
    return out
