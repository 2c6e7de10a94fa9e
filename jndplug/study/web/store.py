"""Participants, protocol state and judgements of the web study, in one SQLite file.

Every answer is one ``BEGIN IMMEDIATE`` transaction that reads the participant's engine state,
applies the answer with :class:`jndplug.study.engine.Session` (which refuses trials it did not ask),
stores the judgement and the new state, and commits. The write lock taken at ``BEGIN`` serialises
concurrent answers of one participant (a double click, a retried request), so no answer is applied
twice and none is lost; once the HTTP reply has gone out, the answer is on disk, and killing the
server or closing the tab loses nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import random
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from jndplug.errors import JNDPlugValueError
from jndplug.study.engine import ProtocolError, Session, Trial
from jndplug.study.records import Judgement

SCHEMA_VERSION = "1"
PARTICIPANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
AGE_RANGES = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
VISION = ("normal", "corrected")

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS participants (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL,
    age_range TEXT,
    vision TEXT NOT NULL,
    display TEXT NOT NULL,
    session TEXT NOT NULL,
    presentation TEXT NOT NULL,
    state TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    training_done_at TEXT,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS judgements (
    participant TEXT NOT NULL REFERENCES participants(id),
    session TEXT NOT NULL,
    image TEXT NOT NULL,
    trial_index INTEGER NOT NULL,
    trial_kind TEXT NOT NULL,
    level INTEGER NOT NULL,
    response TEXT NOT NULL,
    response_time_ms REAL,
    shown_at TEXT,
    answered_at TEXT NOT NULL,
    PRIMARY KEY (participant, session, trial_index)
);
"""


class RegistrationError(JNDPlugValueError):
    """Registration data the study cannot accept (bad id, id taken, vision requirement)."""


class ParticipantExists(RegistrationError):
    """The id is taken: continuing a session needs that participant's key, not just the id."""


class NotRegistered(LookupError):
    """No participant with that id and key."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Progress:
    """What the participant page needs to show next."""

    trial: Trial | None
    images_done: int
    images_total: int
    trials_answered: int
    finished: bool


def progress_of(session: Session) -> Progress:
    trial = session.next_trial()
    return Progress(trial=trial, images_done=session.position, images_total=len(session.images),
                    trials_answered=session.trial_count, finished=trial is None)


class StudyStore:
    """One SQLite database per study; a fresh connection per operation, so any thread may call."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as conn:
                # WAL lets the operator page read while a participant writes; FULL sync makes a
                # committed answer survive a power cut too, not only a killed process.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_TABLES)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('study_id', ?)", (secrets.token_hex(4),))
                version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise JNDPlugValueError(f"{self.path}: not a jndplug study database ({exc})") from None
        if version != SCHEMA_VERSION:
            raise JNDPlugValueError(f"{self.path}: study database schema {version}, this jndplug reads "
                                    f"{SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _connect(self):
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self):
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @property
    def study_id(self) -> str:
        """Random per database: keeps cookies of two studies on one host apart."""
        with self._connect() as conn:
            return conn.execute("SELECT value FROM meta WHERE key='study_id'").fetchone()[0]

    # ------------------------------------------------------------ participants

    def register(self, participant: str, *, images: list[str], catch_every: int, presentation: str,
                 vision: str, age_range: str | None = None, display: dict | None = None) -> str:
        """Create a participant with a freshly shuffled image order; returns their secret key."""
        if not isinstance(participant, str) or not PARTICIPANT_ID.fullmatch(participant):
            raise RegistrationError("participant id: 1 to 64 letters, digits, '.', '_' or '-', "
                                    "starting with a letter or digit")
        if vision not in VISION:
            raise RegistrationError("this study needs participants with normal or corrected-to-normal vision")
        if age_range not in (None, "", *AGE_RANGES):
            raise RegistrationError(f"age range must be one of {', '.join(AGE_RANGES)} (or left out)")
        order = list(images)
        random.SystemRandom().shuffle(order)  # per-participant order; it is stored in the state
        session = Session(order, catch_every=catch_every)
        key = secrets.token_urlsafe(24)
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM participants WHERE id=?", (participant,)).fetchone():
                raise ParticipantExists(f"participant id {participant!r} is already registered; to continue "
                                        "that session use the same browser or ask the operator for a resume link")
            conn.execute(
                "INSERT INTO participants (id, key_hash, age_range, vision, display, session, presentation,"
                " state, registered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (participant, _hash_key(key), age_range or None, vision, json.dumps(display or {}),
                 f"web-{presentation}", presentation, json.dumps(session.to_dict()), now_iso()))
        return key

    def authenticate(self, participant: str, key: str) -> dict:
        """The participant's row, if ``key`` is theirs; else :class:`NotRegistered`."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM participants WHERE id=?", (participant,)).fetchone()
        if row is None or not hmac.compare_digest(row["key_hash"], _hash_key(key)):
            raise NotRegistered(participant)
        return self._public(row)

    def new_key(self, participant: str) -> str:
        """Replace a participant's key (the operator's resume link); the old one stops working."""
        key = secrets.token_urlsafe(24)
        with self._transaction() as conn:
            if conn.execute("UPDATE participants SET key_hash=? WHERE id=?",
                            (_hash_key(key), participant)).rowcount != 1:
                raise NotRegistered(participant)
        return key

    def finish_training(self, participant: str) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE participants SET training_done_at=COALESCE(training_done_at, ?) WHERE id=?",
                         (now_iso(), participant))

    def participants(self) -> list[dict]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM participants ORDER BY registered_at, id").fetchall()
        return [self._public(r) for r in rows]

    def participant(self, participant: str) -> dict:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM participants WHERE id=?", (participant,)).fetchone()
        if row is None:
            raise NotRegistered(participant)
        return self._public(row)

    @staticmethod
    def _public(row: sqlite3.Row) -> dict:
        d = dict(row)
        del d["key_hash"]
        d["display"] = json.loads(d["display"])
        d["state"] = json.loads(d["state"])
        return d

    def image_ids_in_use(self) -> set[str]:
        return {img for p in self.participants() for img in p["state"]["images"]}

    # ------------------------------------------------------------ the protocol

    def progress(self, participant: str) -> Progress:
        """The trial to show now; asking for it marks it as asked (the engine then expects its answer)."""
        with self._transaction() as conn:
            session = self._session(conn, participant)
            prog = progress_of(session)
            self._save(conn, participant, session, prog.finished)
        return prog

    def current_trial(self, participant: str) -> Trial | None:
        """The trial shown and awaiting an answer, if any (read only)."""
        with self._connect() as conn:
            asked = self._session(conn, participant).asked
        return Trial(**asked) if asked else None

    def answer(self, participant: str, trial_index, noticeable, response_time_ms: float | None = None) -> Progress:
        """Apply and store one answer, atomically; returns what comes next.

        Raises :class:`ProtocolError` for an answer to any trial but the one awaiting an answer
        (the engine's check); nothing is stored then.
        """
        if not isinstance(trial_index, int) or isinstance(trial_index, bool):
            raise ProtocolError(f"trial_index must be an integer, got {trial_index!r}")
        answered = datetime.now(timezone.utc)
        shown = answered - timedelta(milliseconds=response_time_ms) if response_time_ms is not None else None
        with self._transaction() as conn:
            session = self._session(conn, participant)
            trial = session.answer(trial_index, noticeable)
            row = conn.execute("SELECT session FROM participants WHERE id=?", (participant,)).fetchone()
            conn.execute(
                "INSERT INTO judgements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (participant, row["session"], trial.image, trial.index, trial.kind, trial.level,
                 "noticeable" if noticeable else "not_noticeable", response_time_ms,
                 shown.isoformat(timespec="milliseconds") if shown else None,
                 answered.isoformat(timespec="milliseconds")))
            prog = progress_of(session)
            self._save(conn, participant, session, prog.finished)
        return prog

    def _session(self, conn, participant: str) -> Session:
        row = conn.execute("SELECT state FROM participants WHERE id=?", (participant,)).fetchone()
        if row is None:
            raise NotRegistered(participant)
        return Session.from_dict(json.loads(row["state"]))

    def _save(self, conn, participant: str, session: Session, finished: bool) -> None:
        conn.execute("UPDATE participants SET state=?, finished_at=CASE WHEN ? THEN COALESCE(finished_at, ?) END "
                     "WHERE id=?", (json.dumps(session.to_dict()), finished, now_iso(), participant))

    # ------------------------------------------------------------ export

    def judgements(self) -> list[Judgement]:
        """Every stored answer as study records (``observer_kind`` human), in answer order per participant."""
        with self._connect() as conn:
            rows = conn.execute("SELECT j.* FROM judgements j JOIN participants p ON p.id = j.participant "
                                "ORDER BY p.registered_at, j.participant, j.trial_index").fetchall()
        return [Judgement(participant=r["participant"], session=r["session"], image=r["image"],
                          trial_index=r["trial_index"], trial_kind=r["trial_kind"], level=r["level"],
                          response=r["response"], response_time_ms=r["response_time_ms"],
                          shown_at=r["shown_at"], answered_at=r["answered_at"], observer_kind="human")
                for r in rows]
