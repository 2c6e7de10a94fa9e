"""Run the study application on a local socket, with clear errors for the usual mistakes."""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path

from werkzeug.serving import make_server

from jndplug.errors import JNDPlugValueError
from jndplug.study.web.app import StudySettings, _is_loopback, create_app


def _listen(host: str, port: int) -> socket.socket:
    # Werkzeug reports a busy port by printing and calling sys.exit; binding here first lets the
    # command line say what went wrong and what to do, the same way as for any other bad option.
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise JNDPlugValueError(f"cannot listen on {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise JNDPlugValueError(f"port {port} on {host} is already in use (is the study already running?); "
                                    "choose another with --port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise JNDPlugValueError(f"cannot listen on {host}: not an address of this machine (see --host)") from None
        if exc.errno == errno.EACCES:
            raise JNDPlugValueError(f"no permission to listen on port {port}; use a port above 1023") from None
        raise JNDPlugValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def serve(dataset: str | Path, *, host: str = "127.0.0.1", port: int = 8000, db_path: str | Path | None = None,
          settings: StudySettings | None = None, export_path: str | Path | None = None, out=None) -> int:
    """Serve the study until interrupted; prints the participant and operator addresses."""
    out = out or sys.stdout
    sock = _listen(host, port)
    try:
        # the application checks every request's Host against the address actually bound
        app = create_app(dataset, db_path, settings=settings, export_path=export_path, host=host,
                         port=sock.getsockname()[1])
        server = make_server(host, port, app, threaded=True, fd=sock.fileno())
    finally:
        sock.close()  # make_server holds its own duplicate of the socket
    shown_host = f"[{host}]" if ":" in host else host
    base = f"http://{shown_host}:{server.port}"
    cfg = app.config
    s = cfg["STUDY_SETTINGS"]
    print(f"JND study of {cfg['STUDY_DATASET'].root} ({s.presentation}, catch trial every {s.catch_every} images, "
          f"break every {s.break_every} trials)", file=out)
    print(f"answers are stored in {cfg['STUDY_STORE'].path}", file=out)
    print(f"participant page: {base}/", file=out)
    print(f"operator page:    {base}/operator?token={cfg['OPERATOR_TOKEN']}", file=out)
    if not _is_loopback(host):
        print(f"warning: listening on {host}, reachable from other machines; traffic is not encrypted",
              file=out)
    print("stop with Ctrl-C", file=out, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("server stopped; every answer given is stored", file=out)
    finally:
        server.server_close()
    return 0
