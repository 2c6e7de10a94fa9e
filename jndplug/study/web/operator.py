"""The operator's pages: participants and their screening, exports, resume links.

They need the token printed at start-up (``?token=`` once, which sets a cookie; or
``Authorization: Bearer``).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import asdict

from flask import Blueprint, Response, abort, jsonify, redirect, render_template, request

from jndplug.study.records import SCHEMA as JUDGEMENTS_SCHEMA
from jndplug.study.records import to_csv_text, write_judgements
from jndplug.study.web.context import WILDCARD_HOSTS, study
from jndplug.study.web.store import NotRegistered, StudyStore

bp = Blueprint("operator", __name__)


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


def operator_ok() -> bool:
    s = study()
    given = request.cookies.get(s.operator_cookie, "")
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth[len("Bearer "):]
    return hmac.compare_digest(given.encode(), s.token.encode())


def require_operator() -> None:
    if not operator_ok():
        abort(403, "the operator pages need the token printed when the server started: "
                   "open the operator address it printed")


def operator_page(message: str | None = None, resume_link: str | None = None):
    s = study()
    return render_template("operator.html", summary=operator_summary(s.store), dataset=s.dataset.root,
                           db=s.store.path, export_path=s.export_path, settings=s.settings,
                           n_images=len(s.images), message=message, resume_link=resume_link)


@bp.get("/operator")
def operator():
    s = study()
    given = request.args.get("token")
    if given is not None:
        if not hmac.compare_digest(given.encode(), s.token.encode()):
            abort(403, "wrong operator token (a new one is printed every time the server starts)")
        # the cookie carries the token from now on, so it leaves the address bar and history
        resp = redirect("/operator")
        resp.set_cookie(s.operator_cookie, s.token, httponly=True, samesite="Strict")
        return resp
    require_operator()
    return operator_page()


@bp.get("/operator/participants.json")
def operator_participants():
    require_operator()
    return jsonify(operator_summary(study().store))


@bp.get("/operator/judgements.<fmt>")
def operator_judgements(fmt: str):
    require_operator()
    if fmt not in ("csv", "json"):
        abort(404, "judgements are exported as .csv or .json")
    judgements = study().store.judgements()
    if fmt == "csv":
        body = to_csv_text(judgements)
    else:
        body = json.dumps({"schema": JUDGEMENTS_SCHEMA, "judgements": [asdict(j) for j in judgements]}, indent=1)
    return Response(body, mimetype="text/csv" if fmt == "csv" else "application/json",
                    headers={"Content-Disposition": f"attachment; filename=judgements-human.{fmt}"})


@bp.post("/operator/export")
def operator_export():
    require_operator()
    s = study()
    judgements = s.store.judgements()
    if not judgements:
        return operator_page("Nothing to export yet: no answers stored.")
    write_judgements(s.export_path, judgements)
    return operator_page(f"Wrote {len(judgements)} judgements to {s.export_path}.")


@bp.post("/operator/participants/<pid>/resume")
def operator_resume(pid: str):
    require_operator()
    s = study()
    try:
        key = s.store.new_key(pid)
    except NotRegistered:
        abort(404, f"no participant {pid!r}")
    # from the configured address, never from a request header; a wildcard bind has no
    # address of its own, and there the Host header has been checked against this machine's
    origin = request.host_url.rstrip("/") if s.host in WILDCARD_HOSTS else s.base_url
    link = f"{origin}/resume/{pid}/{key}"
    return operator_page(f"Resume link for {pid} (open it in the participant's browser; it replaces "
                         "any earlier link and logs out other browsers of that participant):", link)
