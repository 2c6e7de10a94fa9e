"""The participant's page and its JSON API: register, train, judge trial after trial, leave, resume.

Participants are identified by an HttpOnly cookie holding their id and a secret key (only its hash
is stored), so a closed tab or a restarted server resumes where they left off. Images are sent by
trial index or training-trial number: the server looks the file up from the engine's state or its
own training list, so no request ever names a path or even an image id.
"""

from __future__ import annotations

import math

from flask import Blueprint, Response, abort, current_app, jsonify, redirect, request, send_file

from jndplug.study.engine import ProtocolError
from jndplug.study.web.context import study
from jndplug.study.web.store import AGE_RANGES, NotRegistered, ParticipantExists, Progress, RegistrationError

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp",
         ".tif": "image/tiff", ".tiff": "image/tiff", ".webp": "image/webp"}
_COOKIE_AGE = 60 * 60 * 24 * 60  # a participant may come back within two months
_DISPLAY_KEYS = ("dpr", "screen_w", "screen_h", "window_w", "window_h")
_MAX_RESPONSE_MS = 3_600_000.0
_MAX_DISPLAY_VALUE = 100_000.0  # pixels or a pixel ratio; anything larger is not a display

bp = Blueprint("participant", __name__)


def participant() -> str | None:
    s = study()
    pid, _, key = request.cookies.get(s.participant_cookie, "").rpartition(":")
    if not pid:
        return None
    try:
        return s.store.authenticate(pid, key)["id"]
    except NotRegistered:
        return None


def require_participant() -> str:
    pid = participant()
    if pid is None:
        abort(401, "not registered on this browser (or the cookie was cleared): register first")
    return pid


def json_body() -> dict:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser's recursion limit
        abort(400, "JSON nested too deeply")
    if not isinstance(body, dict):
        abort(400, "expected a JSON object (Content-Type: application/json)")
    return body


def set_participant_cookie(resp: Response, pid: str, key: str) -> Response:
    resp.set_cookie(study().participant_cookie, f"{pid}:{key}", max_age=_COOKIE_AGE, httponly=True,
                    samesite="Strict")
    return resp


def send_level(image: str, level: int) -> Response:
    path = study().dataset.level_path(image, level)
    return send_file(path, mimetype=_MIME.get(path.suffix.lower(), "application/octet-stream"), max_age=0)


def public_config() -> dict:
    s = study()
    return {"break_every": s.settings.break_every, "flicker_ms": s.settings.flicker_ms,
            "age_ranges": list(AGE_RANGES), "images_total": len(s.images)}


def state(pid: str, prog: Progress | None = None) -> dict:
    s = study()
    row = s.store.participant(pid)
    out = {"registered": True, "participant": pid, "presentation": row["presentation"], **public_config()}
    if row["training_done_at"] is None:
        out.update(stage="instructions", training=[{"index": i, "noticeable": lvl > 0}
                                               for i, (_, lvl) in enumerate(s.training)])
        return out
    prog = prog or s.store.progress(pid)
    out.update(stage="done" if prog.finished else "study",
               trial=None if prog.trial is None else {"index": prog.trial.index},
               progress={"images_done": prog.images_done, "images_total": prog.images_total,
                         "trials_answered": prog.trials_answered})
    every = s.settings.break_every
    out["break_due"] = bool(every and not prog.finished and prog.trials_answered
                            and prog.trials_answered % every == 0)
    return out


def _display(body: dict) -> dict:
    """The display the browser reported, as numbers; anything else is refused."""
    display = body.get("display") or {}
    if not isinstance(display, dict):
        abort(400, "display must be an object")
    numbers = {k: display[k] for k in _DISPLAY_KEYS
               if isinstance(display.get(k), (int, float)) and not isinstance(display[k], bool)}
    numbers = {k: v for k, v in numbers.items() if isinstance(v, int) or math.isfinite(v)}
    # compared before float(): a 400-digit integer is valid JSON but overflows it
    if not all(0 <= v <= _MAX_DISPLAY_VALUE for v in numbers.values()):
        abort(400, f"display values must be numbers from 0 to {_MAX_DISPLAY_VALUE:.0f}")
    return {k: float(v) for k, v in numbers.items()}


@bp.get("/")
def index():
    return current_app.send_static_file("participant.html")


@bp.get("/api/state")
def api_state():
    pid = participant()
    return jsonify(state(pid) if pid else {"registered": False, **public_config()})


@bp.post("/api/register")
def api_register():
    s = study()
    body = json_body()
    display = _display(body)
    try:
        key = s.store.register(body.get("participant"), images=s.images, catch_every=s.settings.catch_every,
                               presentation=s.settings.presentation, vision=body.get("vision"),
                               age_range=body.get("age_range"), display=display)
    except ParticipantExists as exc:
        abort(409, str(exc))
    except RegistrationError as exc:
        abort(400, str(exc))
    pid = body["participant"]
    return set_participant_cookie(jsonify(state(pid)), pid, key)


@bp.post("/api/training-done")
def api_training_done():
    pid = require_participant()
    study().store.finish_training(pid)
    return jsonify(state(pid))


@bp.get("/api/training/<int:n>/<side>")
def api_training_image(n: int, side: str):
    require_participant()
    training = study().training
    if n >= len(training) or side not in ("reference", "test"):
        abort(404, "no such training image")
    image, level = training[n]
    return send_level(image, level if side == "test" else 0)


@bp.get("/api/trial/<int:index>/<side>")
def api_trial_image(index: int, side: str):
    pid = require_participant()
    trial = study().store.current_trial(pid)
    if trial is None or trial.index != index or side not in ("reference", "test"):
        abort(404, f"trial {index} is not the trial being shown")
    return send_level(trial.image, trial.level if side == "test" else 0)


@bp.post("/api/answer")
def api_answer():
    pid = require_participant()
    body = json_body()
    index, noticeable, rt = body.get("trial_index"), body.get("noticeable"), body.get("response_time_ms")
    if not isinstance(index, int) or isinstance(index, bool):
        abort(400, "trial_index must be an integer")
    if not isinstance(noticeable, bool):
        abort(400, "noticeable must be true or false")
    if rt is not None and (isinstance(rt, bool) or not isinstance(rt, (int, float))
                           or not 0 <= rt <= _MAX_RESPONSE_MS):
        abort(400, f"response_time_ms must be a number of milliseconds from 0 to {_MAX_RESPONSE_MS:.0f}")
    try:
        prog = study().store.answer(pid, index, noticeable, None if rt is None else float(rt))
    except ProtocolError as exc:
        # the page resynchronises from "state"; typical cause: a retried answer that had arrived
        return jsonify(error=str(exc), state=state(pid)), 409
    return jsonify(state(pid, prog))


@bp.post("/api/leave")
def api_leave():
    resp = jsonify({"registered": False, **public_config()})
    resp.delete_cookie(study().participant_cookie, httponly=True, samesite="Strict")
    return resp


@bp.get("/resume/<pid>/<key>")
def resume(pid: str, key: str):
    try:
        study().store.authenticate(pid, key)
    except NotRegistered:
        abort(403, "this resume link is not valid (it is replaced whenever the operator makes a new one)")
    return set_participant_cookie(redirect("/"), pid, key)
