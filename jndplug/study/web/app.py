"""The Flask application of the web study: participant page, JSON API, operator page.

Participants are identified by an HttpOnly cookie holding their id and a secret key (only its hash
is stored), so a closed tab or a restarted server resumes where they left off. Images are sent by
trial index or training-trial number: the server looks the file up from the engine's state or its
own training list, so no request ever names a path or even an image id. The operator pages need
the token printed at start-up (``?token=`` once, which sets a cookie; or ``Authorization: Bearer``).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, send_file

from jndplug.data.layout import JNDDataset
from jndplug.study.engine import N_LEVELS, ProtocolError
from jndplug.study.records import SCHEMA as JUDGEMENTS_SCHEMA
from jndplug.study.records import to_csv_text, write_judgements
from jndplug.study.web.store import (
    AGE_RANGES, NotRegistered, ParticipantExists, Progress, RegistrationError, StudyStore,
)

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp",
         ".tif": "image/tiff", ".tiff": "image/tiff", ".webp": "image/webp"}
_COOKIE_AGE = 60 * 60 * 24 * 60  # a participant may come back within two months
_DISPLAY_KEYS = ("dpr", "screen_w", "screen_h", "window_w", "window_h")
_MAX_RESPONSE_MS = 3_600_000.0
_MAX_DISPLAY_VALUE = 100_000.0  # pixels or a pixel ratio; anything larger is not a display
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def host_allowed(header: str, host: str, port: int) -> bool:
    """Whether a request's ``Host`` header names the address the server was started on.

    Refusing every other name defeats DNS rebinding (a web page whose own domain is made to
    resolve to this machine, so that the visitor's browser can read the study's pages). Accepted:
    the configured host; for a loopback one, the other loopback names; for a wildcard bind
    (0.0.0.0, ::), any IP address and this machine's own name, which a rebinding domain is not.
    The port must be the server's.
    """
    try:
        parts = urlsplit("//" + header)
        given, given_port = parts.hostname, parts.port or 80
    except ValueError:
        return False
    if not given or given_port != port:
        return False
    if host in _WILDCARD_HOSTS:
        return _is_ip_literal(given) or given in {socket.gethostname().lower(), socket.getfqdn().lower()}
    names = {host.lower().strip("[]")}
    if _is_loopback(host):
        names.update(_LOOPBACK_NAMES)
    return given in names


@dataclass(frozen=True)
class StudySettings:
    catch_every: int = 10
    break_every: int = 60  # trials between breaks; 0: none
    training: int = 4  # training trials (with feedback, not recorded)
    limit: int | None = None  # only the first N images of the dataset
    flicker: bool = False
    flicker_ms: int = 100  # how long each image of a flicker pair stays on screen

    def __post_init__(self):
        for name in ("catch_every", "break_every", "training"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if not 16 <= self.flicker_ms <= 2000:
            raise ValueError(f"--flicker-ms must be between 16 and 2000, got {self.flicker_ms}")

    @property
    def presentation(self) -> str:
        return "flicker" if self.flicker else "side-by-side"


def default_db_path(dataset: JNDDataset) -> Path:
    return dataset.study_dir / "web.sqlite3"


def default_export_path(dataset: JNDDataset) -> Path:
    return dataset.study_dir / "judgements-human.csv"


def open_study(dataset: str | Path | JNDDataset,
               db_path: str | Path | None = None) -> tuple[JNDDataset, StudyStore]:
    """The dataset and its study database, checked against each other."""
    ds = dataset if isinstance(dataset, JNDDataset) else JNDDataset(dataset)
    store = StudyStore(db_path or default_db_path(ds))
    missing = sorted(store.image_ids_in_use() - set(ds.ids))
    if missing:
        raise ValueError(f"{store.path} has participants whose images are not in {ds.root}: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                         "(a different dataset? give a new study database with --db)")
    return ds, store


def _display_text(d: dict) -> str:
    parts = [f"{name} {int(d[k + '_w'])}x{int(d[k + '_h'])}" for name, k in (("screen", "screen"), ("window", "window"))
             if k + "_w" in d and k + "_h" in d]
    if "dpr" in d:
        parts.append(f"pixel ratio {d['dpr']:g}")
    return ", ".join(parts)


def operator_summary(store: StudyStore) -> dict:
    """Participants with completion and screening (the aggregate step's, on the answers so far)."""
    from jndplug.study.labels import aggregate

    judgements = store.judgements()
    screened, note = {}, None
    if judgements:
        try:
            screened = aggregate(judgements)["screening"]["participants"]
        except ValueError as exc:  # e.g. nobody has finished an image yet
            note = str(exc)
    rows = []
    for p in store.participants():
        st = p["state"]
        n_images = len(st["images"])
        if p["finished_at"]:
            status = "finished"
        elif p["training_done_at"]:
            status = "in progress"
        else:
            status = "instructions / training"
        scr = screened.get(p["id"])
        if scr is None:
            screening = "no finished image yet"
        elif scr["retained"]:
            screening = "retained" + ("" if p["finished_at"] else " (so far)")
        else:
            screening = "rejected: " + "; ".join(scr["reasons"])
        rows.append({
            "id": p["id"], "registered_at": p["registered_at"], "age_range": p["age_range"] or "",
            "vision": p["vision"], "display": p["display"],
            "display_text": _display_text(p["display"]), "presentation": p["presentation"],
            "status": status, "images_done": st["position"], "images_total": n_images,
            "completion": round(st["position"] / n_images, 4), "trials_answered": st["trial_count"],
            "catch_total": scr["catch_total"] if scr else len(st["catch_results"]),
            "catch_failed": scr["catch_failed"] if scr else sum(not c["passed"] for c in st["catch_results"]),
            "retained": scr["retained"] if scr else None, "screening": screening})
    return {"participants": rows, "n_judgements": len(judgements), "screening_note": note}


def create_app(dataset: str | Path | JNDDataset, db_path: str | Path | None = None, *,
               settings: StudySettings | None = None, operator_token: str | None = None,
               export_path: str | Path | None = None, host: str = "localhost", port: int = 80) -> Flask:
    """The study application, answering only requests addressed to ``host:port`` (see
    ``host_allowed``); the links it makes (resume links) are built from that address."""
    settings = settings or StudySettings()
    ds, store = open_study(dataset, db_path)
    study_images = ds.ids[: settings.limit] if settings.limit else list(ds.ids)
    # Training pairs have a known answer, like catch trials: the strongest level, then an identical pair.
    training = [(ds.ids[i % len(ds.ids)], N_LEVELS if i % 2 == 0 else 0) for i in range(settings.training)]
    token = operator_token or secrets.token_urlsafe(18)
    export_path = Path(export_path) if export_path else default_export_path(ds)
    study_id = store.study_id
    p_cookie, op_cookie = f"jndplug_p_{study_id}", f"jndplug_op_{study_id}"

    app = Flask(__name__, static_folder="static", static_url_path="/static", template_folder="templates")
    app.config.update(MAX_CONTENT_LENGTH=16 * 1024, OPERATOR_TOKEN=token, STUDY_STORE=store, STUDY_DATASET=ds,
                      EXPORT_PATH=export_path, STUDY_SETTINGS=settings)

    # ------------------------------------------------------------ guards and helpers

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self'; object-src 'none'; frame-ancestors 'none'")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.path.startswith("/static/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    shown_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{shown_host}" + ("" if port == 80 else f":{port}")

    @app.before_request
    def _expected_host():
        if not host_allowed(request.host, host, port):
            abort(400, f"this server answers requests for {base_url} only (Host {request.host[:100]!r} refused); "
                       "open the address it printed")

    @app.before_request
    def _same_origin_posts():
        # The cookies are SameSite=Strict already; this also refuses forms another site posts here.
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and urlsplit(origin).netloc != request.host:
            abort(403, "cross-origin request refused")

    @app.errorhandler(400)
    @app.errorhandler(401)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(409)
    @app.errorhandler(413)
    def _http_error(exc):
        if request.path.startswith("/api/") or request.path.endswith(".json"):
            return jsonify(error=exc.description), exc.code
        return Response(f"{exc.code} {exc.name}: {exc.description}\n", exc.code, mimetype="text/plain")

    def participant() -> str | None:
        pid, _, key = request.cookies.get(p_cookie, "").rpartition(":")
        if not pid:
            return None
        try:
            return store.authenticate(pid, key)["id"]
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
        resp.set_cookie(p_cookie, f"{pid}:{key}", max_age=_COOKIE_AGE, httponly=True, samesite="Strict")
        return resp

    def send_level(image: str, level: int) -> Response:
        path = ds.level_path(image, level)
        return send_file(path, mimetype=_MIME.get(path.suffix.lower(), "application/octet-stream"), max_age=0)

    def public_config() -> dict:
        return {"break_every": settings.break_every, "flicker_ms": settings.flicker_ms,
                "age_ranges": list(AGE_RANGES), "images_total": len(study_images)}

    def state(pid: str, prog: Progress | None = None) -> dict:
        row = store.participant(pid)
        out = {"registered": True, "participant": pid, "presentation": row["presentation"], **public_config()}
        if row["training_done_at"] is None:
            out.update(stage="instructions", training=[{"index": i, "noticeable": lvl > 0}
                                                   for i, (_, lvl) in enumerate(training)])
            return out
        prog = prog or store.progress(pid)
        out.update(stage="done" if prog.finished else "study",
                   trial=None if prog.trial is None else {"index": prog.trial.index},
                   progress={"images_done": prog.images_done, "images_total": prog.images_total,
                             "trials_answered": prog.trials_answered})
        out["break_due"] = bool(settings.break_every and not prog.finished and prog.trials_answered
                                and prog.trials_answered % settings.break_every == 0)
        return out

    # ------------------------------------------------------------ participant page and API

    @app.get("/")
    def index():
        return app.send_static_file("participant.html")

    @app.get("/api/state")
    def api_state():
        pid = participant()
        return jsonify(state(pid) if pid else {"registered": False, **public_config()})

    @app.post("/api/register")
    def api_register():
        body = json_body()
        display = body.get("display") or {}
        if not isinstance(display, dict):
            abort(400, "display must be an object")
        numbers = {k: display[k] for k in _DISPLAY_KEYS
                   if isinstance(display.get(k), (int, float)) and not isinstance(display[k], bool)}
        numbers = {k: v for k, v in numbers.items() if isinstance(v, int) or math.isfinite(v)}
        # compared before float(): a 400-digit integer is valid JSON but overflows it
        if not all(0 <= v <= _MAX_DISPLAY_VALUE for v in numbers.values()):
            abort(400, f"display values must be numbers from 0 to {_MAX_DISPLAY_VALUE:.0f}")
        display = {k: float(v) for k, v in numbers.items()}
        try:
            key = store.register(body.get("participant"), images=study_images, catch_every=settings.catch_every,
                                 presentation=settings.presentation, vision=body.get("vision"),
                                 age_range=body.get("age_range"), display=display)
        except ParticipantExists as exc:
            abort(409, str(exc))
        except RegistrationError as exc:
            abort(400, str(exc))
        pid = body["participant"]
        return set_participant_cookie(jsonify(state(pid)), pid, key)

    @app.post("/api/training-done")
    def api_training_done():
        pid = require_participant()
        store.finish_training(pid)
        return jsonify(state(pid))

    @app.get("/api/training/<int:n>/<side>")
    def api_training_image(n: int, side: str):
        require_participant()
        if n >= len(training) or side not in ("reference", "test"):
            abort(404, "no such training image")
        image, level = training[n]
        return send_level(image, level if side == "test" else 0)

    @app.get("/api/trial/<int:index>/<side>")
    def api_trial_image(index: int, side: str):
        pid = require_participant()
        trial = store.current_trial(pid)
        if trial is None or trial.index != index or side not in ("reference", "test"):
            abort(404, f"trial {index} is not the trial being shown")
        return send_level(trial.image, trial.level if side == "test" else 0)

    @app.post("/api/answer")
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
            prog = store.answer(pid, index, noticeable, None if rt is None else float(rt))
        except ProtocolError as exc:
            # the page resynchronises from "state"; typical cause: a retried answer that had arrived
            return jsonify(error=str(exc), state=state(pid)), 409
        return jsonify(state(pid, prog))

    @app.post("/api/leave")
    def api_leave():
        resp = jsonify({"registered": False, **public_config()})
        resp.delete_cookie(p_cookie, httponly=True, samesite="Strict")
        return resp

    @app.get("/resume/<pid>/<key>")
    def resume(pid: str, key: str):
        try:
            store.authenticate(pid, key)
        except NotRegistered:
            abort(403, "this resume link is not valid (it is replaced whenever the operator makes a new one)")
        return set_participant_cookie(redirect("/"), pid, key)

    # ------------------------------------------------------------ operator

    def operator_ok() -> bool:
        given = request.cookies.get(op_cookie, "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer "):]
        return hmac.compare_digest(given.encode(), token.encode())

    def require_operator() -> None:
        if not operator_ok():
            abort(403, "the operator pages need the token printed when the server started: "
                       "open the operator address it printed")

    def operator_page(message: str | None = None, resume_link: str | None = None):
        return render_template("operator.html", summary=operator_summary(store), dataset=ds.root,
                               db=store.path, export_path=export_path, settings=settings,
                               n_images=len(study_images), message=message, resume_link=resume_link)

    @app.get("/operator")
    def operator():
        given = request.args.get("token")
        if given is not None:
            if not hmac.compare_digest(given.encode(), token.encode()):
                abort(403, "wrong operator token (a new one is printed every time the server starts)")
            # the cookie carries the token from now on, so it leaves the address bar and history
            resp = redirect("/operator")
            resp.set_cookie(op_cookie, token, httponly=True, samesite="Strict")
            return resp
        require_operator()
        return operator_page()

    @app.get("/operator/participants.json")
    def operator_participants():
        require_operator()
        return jsonify(operator_summary(store))

    @app.get("/operator/judgements.<fmt>")
    def operator_judgements(fmt: str):
        require_operator()
        if fmt not in ("csv", "json"):
            abort(404, "judgements are exported as .csv or .json")
        judgements = store.judgements()
        if fmt == "csv":
            body = to_csv_text(judgements)
        else:
            body = json.dumps({"schema": JUDGEMENTS_SCHEMA, "judgements": [asdict(j) for j in judgements]}, indent=1)
        return Response(body, mimetype="text/csv" if fmt == "csv" else "application/json",
                        headers={"Content-Disposition": f"attachment; filename=judgements-human.{fmt}"})

    @app.post("/operator/export")
    def operator_export():
        require_operator()
        judgements = store.judgements()
        if not judgements:
            return operator_page("Nothing to export yet: no answers stored.")
        write_judgements(export_path, judgements)
        return operator_page(f"Wrote {len(judgements)} judgements to {export_path}.")

    @app.post("/operator/participants/<pid>/resume")
    def operator_resume(pid: str):
        require_operator()
        try:
            key = store.new_key(pid)
        except NotRegistered:
            abort(404, f"no participant {pid!r}")
        # from the configured address, never from a request header; a wildcard bind has no
        # address of its own, and there the Host header has been checked against this machine's
        origin = request.host_url.rstrip("/") if host in _WILDCARD_HOSTS else base_url
        link = f"{origin}/resume/{pid}/{key}"
        return operator_page(f"Resume link for {pid} (open it in the participant's browser; it replaces "
                             "any earlier link and logs out other browsers of that participant):", link)

    return app
