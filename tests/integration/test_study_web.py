"""The web study's server (``jndplug study serve``) through Flask's test client and the store.

Participants here are black-box observers: they identify what they are shown by comparing the
served image bytes with the dataset's files, as a person compares what they see, and answer by
their own threshold. The browser itself is exercised in ``test_study_web_e2e.py``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import make_dataset
from jndplug.cli import main as cli_main
from jndplug.study.engine import ProtocolError
from jndplug.study.labels import load_labels
from jndplug.study.records import read_judgements
from jndplug.study.web import StudySettings, StudyStore, create_app

ROOT = Path(__file__).resolve().parents[2]


class Observer:
    """A participant in a test-client browser who notices every level above ``threshold``."""

    def __init__(self, app, dataset: Path, pid: str, threshold: int, fail_catch: bool = False):
        self.client = app.test_client()
        self.pid, self.threshold, self.fail_catch = pid, threshold, fail_catch
        self.files = {}
        for png in dataset.glob("originals/*.png"):
            self.files[hashlib.sha256(png.read_bytes()).hexdigest()] = (png.stem, 0)
        for png in dataset.glob("distorted/*/*.png"):
            self.files[hashlib.sha256(png.read_bytes()).hexdigest()] = (png.parent.name, int(png.stem))

    def register(self, **kw):
        body = {"participant": self.pid, "vision": "normal", **kw}
        return self.client.post("/api/register", json=body)

    def look(self, index: int) -> tuple[str, int]:
        """(image, level) of the pair on screen, from the served bytes."""
        ref = self.client.get(f"/api/trial/{index}/reference")
        test = self.client.get(f"/api/trial/{index}/test")
        assert ref.status_code == test.status_code == 200
        image, level0 = self.files[hashlib.sha256(ref.data).hexdigest()]
        image_t, level = self.files[hashlib.sha256(test.data).hexdigest()]
        assert level0 == 0 and image_t == image
        return image, level

    def answer_for(self, level: int) -> bool:
        noticed = level > self.threshold
        return (not noticed) if self.fail_catch and level in (0, 9) else noticed

    def run(self, max_trials: int | None = None) -> dict:
        """Answer trials until the study ends (or ``max_trials``); returns the last state."""
        st = self.client.get("/api/state").get_json()
        if st["stage"] == "instructions":
            st = self.client.post("/api/training-done").get_json()
        n = 0
        while st["stage"] == "study" and (max_trials is None or n < max_trials):
            index = st["trial"]["index"]
            _, level = self.look(index)
            r = self.client.post("/api/answer", json={"trial_index": index, "noticeable": self.answer_for(level),
                                                       "response_time_ms": 800 + n})
            assert r.status_code == 200, r.get_json()
            st = r.get_json()
            n += 1
        return st


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "ds")


def _app(dataset, **settings):
    return create_app(dataset, settings=StudySettings(**{"catch_every": 2, "training": 2, **settings}),
                      operator_token="operator-secret")


def test_full_study_stores_every_answer_and_aggregates_like_simulated_ones(dataset, tmp_path, run_cli):
    app = _app(dataset)
    db = dataset / "study" / "web.sqlite3"
    thresholds = {"alice": 3, "bob": 6, "carol": 5}
    for pid, thr in thresholds.items():
        obs = Observer(app, dataset, pid, thr)
        assert obs.register(age_range="25-34").status_code == 200
        st = obs.client.get("/api/state").get_json()
        assert st["stage"] == "instructions" and [t["noticeable"] for t in st["training"]] == [True, False]
        for i in range(2):  # practice pairs: strongest level, then an identical pair
            ref, test = (obs.client.get(f"/api/training/{i}/{side}").data for side in ("reference", "test"))
            assert (ref == test) == (i == 1)
        st = obs.run(max_trials=4)
        # each answer is on disk once its reply is back, visible to any other connection
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM judgements WHERE participant=?", (pid,)).fetchone()[0] == 4
        st = obs.run()
        assert st["stage"] == "done" and st["progress"]["images_done"] == 3

    out = tmp_path / "human.csv"
    assert cli_main(["study", "export", str(dataset), "--out", str(out)]) == 0
    judgements = read_judgements(out)
    assert {j.participant for j in judgements} == set(thresholds)
    assert all(j.observer_kind == "human" and j.session == "web-side-by-side" for j in judgements)
    assert all(j.response_time_ms >= 800 and j.shown_at < j.answered_at for j in judgements)
    kinds = [j.trial_kind for j in judgements if j.participant == "alice"]
    assert sum(k != "search" for k in kinds) == 1  # one catch trial, after the second of three images

    labels_dir = tmp_path / "labels"
    res = run_cli("study", "aggregate", dataset, "--judgements", out, "--out", labels_dir, "--no-plots")
    assert res.returncode == 0, res.stderr
    labels = load_labels(labels_dir / "labels.json")
    assert labels["observer_kind"] == "human"
    for img, e in labels["images"].items():
        assert e["histogram"][3] == e["histogram"][5] == e["histogram"][6] == 1  # each JND found exactly
        assert e["jnd_level"] == 4  # mean-floor of 3, 5, 6
    assert (labels_dir / "pairs" / "jnd" / "im0.png").is_file()


def test_answers_for_trials_not_asked_are_refused(dataset):
    app = _app(dataset, training=0)
    obs = Observer(app, dataset, "p1", 4)
    c = obs.client
    assert c.post("/api/answer", json={"trial_index": 0, "noticeable": True}).status_code == 401
    assert obs.register().status_code == 200
    st = c.get("/api/state").get_json()
    assert st["stage"] == "instructions" and st["training"] == []  # no practice configured
    st = c.post("/api/training-done").get_json()
    assert st["stage"] == "study" and st["trial"] == {"index": 0}
    assert "level" not in json.dumps(st) and "image" not in st["trial"]  # nothing hints at the answer

    r = c.post("/api/answer", json={"trial_index": 3, "noticeable": True})
    assert r.status_code == 409 and "awaiting an answer is 0, not 3" in r.get_json()["error"]
    assert r.get_json()["state"]["trial"] == {"index": 0}  # the page can resynchronise
    for bad in ({"trial_index": 0, "noticeable": "yes"}, {"trial_index": "0", "noticeable": True},
                {"trial_index": True, "noticeable": True},
                {"trial_index": 0, "noticeable": True, "response_time_ms": -5},
                {"trial_index": 0, "noticeable": True, "response_time_ms": "fast"}):
        assert c.post("/api/answer", json=bad).status_code == 400, bad
    assert c.post("/api/answer", data="trial_index=0", content_type="text/plain").status_code == 400
    assert c.post("/api/answer", json={"x": "y" * 20000}).status_code == 413
    assert not app.config["STUDY_STORE"].judgements()

    assert c.post("/api/answer", json={"trial_index": 0, "noticeable": True}).status_code == 200
    # a retried answer (the reply was lost) is refused, not stored twice
    r = c.post("/api/answer", json={"trial_index": 0, "noticeable": True})
    assert r.status_code == 409 and r.get_json()["state"]["trial"] == {"index": 1}
    assert len(app.config["STUDY_STORE"].judgements()) == 1
    # images of other trials than the one shown are not served
    assert c.get("/api/trial/0/test").status_code == 404
    assert c.get("/api/trial/2/test").status_code == 404
    assert c.get("/api/trial/1/test").status_code == 200


def test_concurrent_answers_to_one_trial_store_one(dataset):
    store = StudyStore(dataset / "study" / "web.sqlite3")
    store.register("p", images=["im0", "im1"], catch_every=0, presentation="side-by-side", vision="normal")
    store.finish_training("p")
    assert store.progress("p").trial.index == 0
    outcomes = []

    def answer():
        try:
            store.answer("p", 0, True)
            outcomes.append("stored")
        except ProtocolError:
            outcomes.append("refused")

    threads = [threading.Thread(target=answer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["stored"]
    assert len(store.judgements()) == 1 and store.progress("p").trial.index == 1


def test_images_are_served_by_trial_never_by_path(dataset):
    app = _app(dataset)
    obs = Observer(app, dataset, "p1", 4)
    c = obs.client
    assert c.get("/api/trial/0/test").status_code == 401  # not registered
    assert c.get("/api/training/0/test").status_code == 401
    obs.register()
    for url in ("/api/training/2/test", "/api/training/0/original", "/api/training/-1/test",
                "/api/training/0/../../originals/im0.png", "/api/trial/0/..%2F..%2Foriginals%2Fim0.png",
                "/static/../app.py", "/static/..%2Fapp.py", "/static/%2e%2e/store.py",
                "/originals/im0.png", "/api/image/im0/3"):
        r = c.get(url)
        assert r.status_code == 404 and b"sqlite3" not in r.data and b"import" not in r.data, url
    assert c.get("/static/study.js").status_code == 200
    r = c.get("/")
    assert r.status_code == 200 and b'<script src="/static/study.js">' in r.data
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and r.headers["X-Content-Type-Options"] == "nosniff"


def test_a_relative_dataset_path_serves_its_images(dataset, monkeypatch):
    # `jndplug study serve ds` from the folder holding ds: Flask alone would look for the files
    # beside the package, and every image request would fail
    monkeypatch.chdir(dataset.parent)
    app = _app(Path(dataset.name))
    obs = Observer(app, dataset, "p1", 4)
    obs.register()
    assert obs.client.get("/api/training/0/test").status_code == 200
    obs.client.post("/api/training-done")
    image, level = obs.look(0)
    assert image in {"im0", "im1", "im2"} and level > 0


def test_registration_is_validated_and_ids_are_not_shared(dataset):
    app = _app(dataset)
    c = app.test_client()
    for body, status, text in [
        ({"participant": "../p", "vision": "normal"}, 400, "participant id"),
        ({"participant": "", "vision": "normal"}, 400, "participant id"),
        ({"participant": "p" * 65, "vision": "normal"}, 400, "participant id"),
        ({"participant": 7, "vision": "normal"}, 400, "participant id"),
        ({"participant": "p1", "vision": "other"}, 400, "normal or corrected-to-normal vision"),
        ({"participant": "p1"}, 400, "normal or corrected-to-normal vision"),
        ({"participant": "p1", "vision": "normal", "age_range": "7"}, 400, "age range"),
        ({"participant": "p1", "vision": "normal", "display": "big"}, 400, "display"),
    ]:
        r = c.post("/api/register", json=body)
        assert r.status_code == status and text in r.get_json()["error"], body
    r = c.post("/api/register", json={"participant": "p1", "vision": "corrected", "age_range": "65+",
                                      "display": {"dpr": 2, "screen_w": 2560, "screen_h": 1440, "evil": "x"}})
    assert r.status_code == 200
    row = app.config["STUDY_STORE"].participant("p1")
    assert row["vision"] == "corrected" and row["age_range"] == "65+"
    assert row["display"] == {"dpr": 2.0, "screen_w": 2560.0, "screen_h": 1440.0}
    # someone else typing the same id does not continue p1's session
    r = app.test_client().post("/api/register", json={"participant": "p1", "vision": "normal"})
    assert r.status_code == 409 and "already registered" in r.get_json()["error"]
    # a forged or stale cookie is no registration
    other = app.test_client()
    name = "jndplug_p_" + app.config["STUDY_STORE"].study_id
    assert c.get_cookie(name).value.startswith("p1:")
    other.set_cookie(name, "p1:not-the-key")
    assert other.get("/api/state").get_json()["registered"] is False


def test_oversized_numbers_and_deep_json_are_refused_not_crashing(dataset):
    c = _app(dataset).test_client()
    r = c.post("/api/register", json={"participant": "p1", "vision": "normal", "display": {"screen_w": 10 ** 400}})
    assert r.status_code == 400 and "display values" in r.get_json()["error"]
    r = c.post("/api/register", data="[" * 5000 + "]" * 5000, content_type="application/json")
    assert r.status_code == 400 and "nested too deeply" in r.get_json()["error"]
    assert c.post("/api/register", json={"participant": "p1", "vision": "normal"}).status_code == 200
    r = c.post("/api/answer", json={"trial_index": 10 ** 400, "noticeable": True})
    assert r.status_code in (400, 409)


def test_requests_for_another_host_are_refused(dataset):
    # DNS rebinding: evil.example made to resolve to 127.0.0.1 still sends Host: evil.example
    app = create_app(dataset, settings=StudySettings(training=0), operator_token="tok", host="127.0.0.1", port=8123)
    c = app.test_client()
    for host in ("127.0.0.1:8123", "localhost:8123", "[::1]:8123"):
        assert c.get("/api/state", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example:8123", "evil.example", "127.0.0.1:9999", "127.0.0.1", "127.0.0.1:x"):
        r = c.get("/api/state", headers={"Host": host})
        assert r.status_code == 400 and "http://127.0.0.1:8123 only" in r.get_json()["error"], host
    # a named host accepts its own name only
    named = create_app(dataset, settings=StudySettings(training=0), host="study.lab", port=80).test_client()
    assert named.get("/api/state", headers={"Host": "study.lab"}).status_code == 200
    assert named.get("/api/state", headers={"Host": "localhost"}).status_code == 400


def test_resume_links_use_the_configured_address_not_the_host_header(dataset):
    app = create_app(dataset, settings=StudySettings(training=0), operator_token="tok", host="127.0.0.1", port=8123)
    Observer(app, dataset, "p1", 5).client.post("/api/register", json={"participant": "p1", "vision": "normal"},
                                                headers={"Host": "127.0.0.1:8123"})
    op = app.test_client()
    headers = {"Host": "localhost:8123"}
    op.get("/operator?token=tok", headers=headers)
    page = op.post("/operator/participants/p1/resume", headers=headers).get_data(as_text=True)
    link = page.split('<code id="resume-link">')[1].split("</code>")[0]
    assert link.startswith("http://127.0.0.1:8123/resume/p1/")


def test_restart_and_new_tab_resume_where_the_participant_left_off(dataset):
    obs = Observer(_app(dataset), dataset, "p1", 4)
    obs.register()
    st = obs.run(max_trials=5)
    shown = st["trial"]["index"]
    cookie = obs.client.get_cookie("jndplug_p_" + StudyStore(dataset / "study" / "web.sqlite3").study_id)

    # a new server process on the same database (restart), and a new tab (a fresh client with the cookie)
    app2 = _app(dataset)
    tab = app2.test_client()
    tab.set_cookie(cookie.key, cookie.value)
    st2 = tab.get("/api/state").get_json()
    assert st2["stage"] == "study" and st2["trial"]["index"] == shown == 5
    assert st2["progress"]["trials_answered"] == 5
    obs.client = tab
    assert obs.run()["stage"] == "done"
    judgements = app2.config["STUDY_STORE"].judgements()
    assert [j.trial_index for j in judgements] == list(range(len(judgements)))
    assert {j.image for j in judgements} == {"im0", "im1", "im2"}


def test_breaks_flicker_and_leaving(dataset):
    app = _app(dataset, break_every=3, flicker=True, flicker_ms=50, training=0)
    obs = Observer(app, dataset, "p1", 9)
    obs.register()
    st = obs.run(max_trials=3)
    assert st["break_due"] is True and st["presentation"] == "flicker" and st["flicker_ms"] == 50
    st = obs.run(max_trials=1)
    assert st["break_due"] is False
    assert app.config["STUDY_STORE"].judgements()[0].session == "web-flicker"
    r = obs.client.post("/api/leave")
    assert r.get_json()["registered"] is False and obs.client.get("/api/state").get_json()["registered"] is False
    # settings apply to new participants; a participant keeps the presentation they started with
    app2 = _app(dataset, flicker=False)
    assert app2.config["STUDY_STORE"].participant("p1")["presentation"] == "flicker"
    with pytest.raises(ValueError, match="flicker-ms"):
        StudySettings(flicker_ms=5)
    with pytest.raises(ValueError, match="catch-every"):
        StudySettings(catch_every=-1)


def test_operator_pages_need_the_token_and_export_atomically(dataset, tmp_path):
    export = tmp_path / "exports" / "human.csv"
    app = create_app(dataset, settings=StudySettings(catch_every=1, training=0), operator_token="operator-secret",
                     export_path=export)
    good = Observer(app, dataset, "good", 5)
    good.register(age_range="18-24")
    good.run()
    sloppy = Observer(app, dataset, "sloppy", 5, fail_catch=True)
    sloppy.register()
    sloppy.run(max_trials=6)

    op = app.test_client()
    for url in ("/operator", "/operator/participants.json", "/operator/judgements.csv", "/operator/judgements.json"):
        assert op.get(url).status_code == 403, url
    assert op.get("/operator?token=wrong").status_code == 403
    assert op.post("/operator/export").status_code == 403
    assert op.get("/operator/judgements.csv", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert good.client.get("/operator").status_code == 403  # a participant's cookie is not the operator's

    r = op.get("/operator?token=operator-secret")
    assert r.status_code == 302 and r.headers["Location"] == "/operator"  # token leaves the address bar
    page = op.get("/operator").get_data(as_text=True)
    assert 'data-participant="good"' in page and 'data-participant="sloppy"' in page
    summary = {p["id"]: p for p in op.get("/operator/participants.json").get_json()["participants"]}
    assert summary["good"]["status"] == "finished" and summary["good"]["completion"] == 1
    assert summary["good"]["retained"] is True and summary["good"]["age_range"] == "18-24"
    assert summary["sloppy"]["status"] == "in progress" and summary["sloppy"]["images_done"] < 3
    assert summary["sloppy"]["retained"] is False and "inattentive" in summary["sloppy"]["screening"]

    csv_text = op.get("/operator/judgements.csv").get_data(as_text=True)
    doc = op.get("/operator/judgements.json", headers={"Authorization": "Bearer operator-secret"}).get_json()
    assert doc["schema"] == "jndplug-judgements-v1" and len(doc["judgements"]) == csv_text.count("\n") - 1
    assert op.post("/operator/export", headers={"Origin": "http://evil.example"}).status_code == 403
    r = op.post("/operator/export")
    assert r.status_code == 200 and f"to {export}" in r.get_data(as_text=True)
    assert export.read_text() == csv_text
    assert [p.name for p in export.parent.iterdir()] == ["human.csv"]  # no temporary file left behind

    # a resume link moves a participant to another browser and retires the old cookie
    page = op.post("/operator/participants/good/resume").get_data(as_text=True)
    link = page.split('<code id="resume-link">')[1].split("</code>")[0]
    assert link.startswith("http://localhost/resume/good/")
    other = app.test_client()
    assert other.get(link.replace("http://localhost", "")).status_code == 302
    assert other.get("/api/state").get_json()["participant"] == "good"
    assert good.client.get("/api/state").get_json()["registered"] is False
    assert app.test_client().get("/resume/good/forged").status_code == 403
    assert op.post("/operator/participants/nobody/resume").status_code == 404


def test_cli_errors_are_clear(dataset, tmp_path, capsys):
    assert cli_main(["study", "serve", str(tmp_path / "nowhere")]) == 1
    assert "no such dataset folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["study", "serve", str(tmp_path / "empty")]) == 1
    assert "has no originals/ folder" in capsys.readouterr().err
    assert cli_main(["study", "serve", str(dataset), "--port", "70000"]) == 1
    assert "--port" in capsys.readouterr().err
    assert cli_main(["study", "serve", str(dataset), "--flicker-ms", "1"]) == 1
    assert "--flicker-ms" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert cli_main(["study", "serve", str(dataset), "--port", str(port)]) == 1
        err = capsys.readouterr().err
        assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err
    assert cli_main(["study", "export", str(dataset), "--db", str(tmp_path / "none.sqlite3")]) == 1
    assert "no study database" in capsys.readouterr().err
    store = StudyStore(dataset / "study" / "web.sqlite3")
    assert cli_main(["study", "export", str(dataset)]) == 1
    assert "no answers yet" in capsys.readouterr().err
    store.register("p", images=["im0", "gone"], catch_every=0, presentation="side-by-side", vision="normal")
    assert cli_main(["study", "export", str(dataset)]) == 1
    assert "images are not in" in capsys.readouterr().err
    (tmp_path / "junk.sqlite3").write_text("not a database at all, just text that is long enough " * 20)
    assert cli_main(["study", "serve", str(dataset), "--db", str(tmp_path / "junk.sqlite3")]) == 1
    assert "not a jndplug study database" in capsys.readouterr().err


def test_serve_prints_addresses_and_token(dataset):
    proc = subprocess.Popen([sys.executable, "-m", "jndplug", "study", "serve", dataset.name, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=dataset.parent)
    watchdog = threading.Timer(120, proc.kill)  # a server that hangs before printing ends the reads
    watchdog.start()
    try:
        lines = [proc.stdout.readline() for _ in range(5)]
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert lines[2].startswith("participant page: http://127.0.0.1:")
    assert not lines[2].rstrip().endswith(":0/")  # the port actually bound
    assert lines[3].startswith("operator page:") and "?token=" in lines[3]
    assert str(dataset / "study" / "web.sqlite3") in lines[1]  # the relative path, resolved at start-up


def test_wheel_ships_the_web_pages(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                             "jndplug-demo", "runs", "tests", "benchmarks"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    names = set(zipfile.ZipFile(next(tmp_path.glob("jndplug-*.whl"))).namelist())
    web = ROOT / "jndplug" / "study" / "web"
    for sub in ("static", "templates"):
        files = [p for p in (web / sub).iterdir() if p.is_file()]
        assert files
        for f in files:
            assert f"jndplug/study/web/{sub}/{f.name}" in names
