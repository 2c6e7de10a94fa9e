"""The Flask application of the web study: participant page, JSON API, operator page.

:func:`create_app` checks the dataset against the study database, guards every request (the
address it is sent to, cross-site posts, security headers, error bodies) and registers the two
blueprints: the participant's page and API (:mod:`.participant`) and the operator's pages
(:mod:`.operator`), which share the study through :mod:`.context`.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, request

from jndplug.data.layout import JNDDataset
from jndplug.errors import JNDPlugValueError
from jndplug.study.engine import N_LEVELS
from jndplug.study.web.context import WILDCARD_HOSTS, Study
from jndplug.study.web.operator import bp as operator_bp
from jndplug.study.web.participant import bp as participant_bp
from jndplug.study.web.store import StudyStore

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
    if host in WILDCARD_HOSTS:
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
                raise JNDPlugValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise JNDPlugValueError(f"--limit must be >= 1, got {self.limit}")
        if not 16 <= self.flicker_ms <= 2000:
            raise JNDPlugValueError(f"--flicker-ms must be between 16 and 2000, got {self.flicker_ms}")

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
        raise JNDPlugValueError(f"{store.path} has participants whose images are not in {ds.root}: "
                                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                                "(a different dataset? give a new study database with --db)")
    return ds, store


def create_app(dataset: str | Path | JNDDataset, db_path: str | Path | None = None, *,
               settings: StudySettings | None = None, operator_token: str | None = None,
               export_path: str | Path | None = None, host: str = "localhost", port: int = 80) -> Flask:
    """The study application, answering only requests addressed to ``host:port`` (see
    ``host_allowed``); the links it makes (resume links) are built from that address."""
    settings = settings or StudySettings()
    ds, store = open_study(dataset, db_path)
    shown_host = f"[{host}]" if ":" in host else host
    study = Study(
        dataset=ds, store=store, settings=settings,
        images=ds.ids[: settings.limit] if settings.limit else list(ds.ids),
        # Training pairs have a known answer, like catch trials: the strongest level, then an identical pair.
        training=[(ds.ids[i % len(ds.ids)], N_LEVELS if i % 2 == 0 else 0) for i in range(settings.training)],
        token=operator_token or secrets.token_urlsafe(18),
        export_path=Path(export_path) if export_path else default_export_path(ds),
        host=host, base_url=f"http://{shown_host}" + ("" if port == 80 else f":{port}"))

    app = Flask(__name__, static_folder="static", static_url_path="/static", template_folder="templates")
    app.config.update(MAX_CONTENT_LENGTH=16 * 1024, OPERATOR_TOKEN=study.token, STUDY_STORE=store,
                      STUDY_DATASET=ds, EXPORT_PATH=study.export_path, STUDY_SETTINGS=settings)
    study.install(app)
    _install_guards(app, host, port, study.base_url)
    app.register_blueprint(participant_bp)
    app.register_blueprint(operator_bp)
    return app


def _install_guards(app: Flask, host: str, port: int, base_url: str) -> None:
    """What every request and response goes through, whichever blueprint answers it."""

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self'; object-src 'none'; frame-ancestors 'none'")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.path.startswith("/static/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

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
