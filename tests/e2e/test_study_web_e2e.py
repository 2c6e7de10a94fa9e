"""The web study in a real headless Chromium: a participant does a short study with the keyboard
while the server is killed and restarted, the tab is closed and reopened, and the exported
judgements become labels through ``jndplug study aggregate``.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (``.ci/run``
installs them); skipped with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, make_dataset
from jndplug.study.engine import Session
from jndplug.study.labels import load_labels
from jndplug.study.records import read_judgements
from jndplug.study.web.store import StudyStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HAS_SELENIUM = importlib.util.find_spec("selenium") is not None

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                              "chromium-driver; .ci/run does it)"),
    pytest.mark.skipif(not HAS_SELENIUM, reason="needs selenium (in the dev extra)"),
]

THRESHOLD = 4  # the participant notices levels above 4 on every image
N_IMAGES = 3


class Server:
    """``jndplug study serve`` in a subprocess, on a fixed port so the open page can reconnect."""

    def __init__(self, dataset: Path, port: int, *extra: str):
        # the dataset as a relative path, the way people type it
        self.cwd = dataset.parent
        self.args = [sys.executable, "-m", "jndplug", "study", "serve", dataset.name, "--port", str(port), *extra]
        self.proc = None
        self.token = None

    def start(self) -> "Server":
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                     cwd=self.cwd)
        watchdog = threading.Timer(120, self.proc.kill)  # a hung start-up ends as an exit
        watchdog.start()
        lines = []
        try:
            while not any(line.startswith("stop with Ctrl-C") for line in lines):
                line = self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"server exited during start-up: {lines}")
                lines.append(line)
        finally:
            watchdog.cancel()
        operator = next(line for line in lines if line.startswith("operator page:"))
        self.token = operator.rsplit("token=", 1)[1].strip()
        self.base = next(line for line in lines if line.startswith("participant page:")).split()[-1].rstrip("/")
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # no clean shutdown: nothing may depend on one
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1000,700", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _wait(driver, condition, what: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: condition(d), message=f"timed out waiting for {what}")


def _screen(driver) -> str:
    return driver.execute_script("return document.body.dataset.screen")


def _answerable_trial(driver, kind: str):
    """The trial index once a pair of ``kind`` is fully shown and answers are accepted."""
    def ready(d):
        info = d.execute_script(
            "const t = document.getElementById('trial');"
            "return [document.body.dataset.screen, t.dataset.kind, t.dataset.answerable, t.dataset.trialIndex];")
        return info if info[0] == "trial" and info[1] == kind and info[2] == "1" else None
    return _wait(driver, ready, f"an answerable {kind} pair")[3]


def _press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def _image_check(driver) -> list:
    """Natural and displayed sizes of the two images: one image pixel per screen pixel."""
    return driver.execute_script(
        "return ['img-ref', 'img-test'].map(id => { const i = document.getElementById(id);"
        " const r = i.getBoundingClientRect(); return [i.naturalWidth, i.naturalHeight, r.width, r.height]; });")


def test_keyboard_study_survives_server_kill_and_tab_close(tmp_path, browser, run_cli):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ds = make_dataset(tmp_path / "ds", n_images=N_IMAGES, size=(96, 64))
    port = free_port()
    server = Server(ds, port, "--catch-every", "2", "--training", "2", "--break-every", "5").start()
    driver = browser
    try:
        driver.get(server.base + "/")
        _wait(driver, lambda d: _screen(d) == "register", "the registration form")
        driver.find_element(By.ID, "vision-corrected").click()
        field = driver.find_element(By.ID, "participant")
        field.send_keys("e2e-01")
        field.send_keys(Keys.ENTER)
        _wait(driver, lambda d: _screen(d) == "instructions", "the instructions")
        _press(driver, Keys.SPACE)

        # practice: the strongest level, then an identical pair; feedback, nothing recorded
        _answerable_trial(driver, "training")
        _press(driver, "d")
        _wait(driver, lambda d: "differ" in d.find_element(By.ID, "feedback").text, "practice feedback")
        _answerable_trial(driver, "training")
        _press(driver, "s")
        _wait(driver, lambda d: _screen(d) == "message", "the end of the practice")
        _press(driver, Keys.SPACE)

        # the study: the shadow engine says which trial comes (kinds and levels do not depend on
        # which image the server drew), and this participant answers as a threshold observer
        shadow = Session([f"x{i}" for i in range(N_IMAGES)], catch_every=2)
        pressed, messages, sizes = [], [], None
        killed = reopened = False
        while True:
            _wait(driver, lambda d: _screen(d) in ("message", "done") or
                  d.execute_script("return document.getElementById('trial').dataset.answerable") == "1",
                  "the next screen")
            if _screen(driver) == "done":
                break
            if _screen(driver) == "message":
                messages.append(driver.find_element(By.ID, "message-title").text)
                _press(driver, Keys.SPACE)
                _wait(driver, lambda d: _screen(d) != "message", "the message to go")
                continue
            index = int(_answerable_trial(driver, "trial"))
            expected = shadow.next_trial()
            assert index == expected.index
            sizes = sizes or _image_check(driver)
            noticeable = expected.level > THRESHOLD
            if len(pressed) == 5 and not killed:
                # kill the server while a pair is on screen; the answer given now must not be lost
                server.kill()
                killed = True
                assert len(StudyStore(ds / "study" / "web.sqlite3").judgements()) == 5
                _press(driver, "d" if noticeable else "s")
                _wait(driver, lambda d: d.find_element(By.ID, "banner").is_displayed(), "the connection banner")
                server.start()  # the page retries the answer by itself
                _wait(driver, lambda d: not d.find_element(By.ID, "banner").is_displayed(), "reconnection")
            elif len(pressed) == 8 and not reopened:
                # close the tab; a new one resumes at the trial awaiting an answer
                old = driver.current_window_handle
                driver.switch_to.new_window("tab")
                driver.switch_to.window(old)
                driver.close()
                driver.switch_to.window(driver.window_handles[0])
                driver.get(server.base + "/")
                reopened = True
                _wait(driver, lambda d: _screen(d) == "message", "the welcome-back screen")
                messages.append(driver.find_element(By.ID, "message-title").text)
                _press(driver, Keys.SPACE)
                assert int(_answerable_trial(driver, "trial")) == index
                _press(driver, "d" if noticeable else "s")
            else:
                _press(driver, "d" if noticeable else "s")
            shadow.answer(index, noticeable)
            pressed.append(noticeable)
            # wait for the page to take the answer before looking for the next pair
            _wait(driver, lambda d: _screen(d) != "trial" or
                  d.execute_script("return document.getElementById('trial').dataset.trialIndex") != str(index),
                  "the answer to be taken")
        assert shadow.done and killed and reopened
        assert "Welcome back" in messages and "Time for a break" in messages
        for natural_w, natural_h, shown_w, shown_h in sizes:
            assert (natural_w, natural_h) == (96, 64) and (shown_w, shown_h) == (96, 64)

        # operator: the token from start-up; the page lists the participant as finished
        driver.get(f"{server.base}/operator?token={server.token}")
        row = driver.find_element(By.CSS_SELECTOR, 'tr[data-participant="e2e-01"]').text
        assert "finished" in row and f"{N_IMAGES} / {N_IMAGES}" in row and "corrected" in row
        req = urllib.request.Request(f"{server.base}/operator/judgements.csv",
                                     headers={"Authorization": f"Bearer {server.token}"})
        export = tmp_path / "human.csv"
        export.write_bytes(urllib.request.urlopen(req, timeout=30).read())
    finally:
        if server.proc.poll() is None:
            server.kill()

    judgements = read_judgements(export)
    assert [j.noticeable for j in judgements] == pressed  # every answer, once, in order
    assert [j.trial_index for j in judgements] == list(range(len(pressed)))
    assert [(j.trial_kind, j.level) for j in judgements] == [
        (r[0], r[1]) for r in _shadow_kinds_levels(N_IMAGES, pressed)]
    assert {j.image for j in judgements} == {f"im{i}" for i in range(N_IMAGES)}
    assert all(j.observer_kind == "human" and j.participant == "e2e-01" for j in judgements)
    assert all(j.response_time_ms is not None and j.response_time_ms > 0 for j in judgements)

    out = tmp_path / "labels"
    res = run_cli("study", "aggregate", ds, "--judgements", export, "--out", out, "--no-plots")
    assert res.returncode == 0, res.stderr
    labels = load_labels(out / "labels.json")
    assert labels["observer_kind"] == "human"
    assert {img: e["jnd_level"] for img, e in labels["images"].items()} == {
        f"im{i}": THRESHOLD for i in range(N_IMAGES)}
    assert labels["screening"]["participants"]["e2e-01"]["retained"]


def _shadow_kinds_levels(n_images: int, answers: list[bool]):
    s = Session([f"x{i}" for i in range(n_images)], catch_every=2)
    for a in answers:
        t = s.next_trial()
        yield t.kind, t.level
        s.answer(t.index, a)


@pytest.fixture
def inprocess_server(tmp_path):
    """Start an app in a thread: enough where nothing is killed."""
    from werkzeug.serving import make_server

    from jndplug.study.web import StudySettings, create_app

    servers = []

    def start(dataset: Path, **settings) -> tuple[str, object]:
        # the app answers only requests addressed to its own host and port (DNS-rebinding check)
        port = free_port()
        app = create_app(dataset, settings=StudySettings(training=0, **settings), host="127.0.0.1", port=port)
        server = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}", app

    yield start
    for s in servers:
        s.shutdown()


def _register_and_start(driver, base: str, pid: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(base + "/")
    _wait(driver, lambda d: _screen(d) == "register", "the registration form")
    driver.find_element(By.ID, "vision-normal").click()
    driver.find_element(By.ID, "participant").send_keys(pid, Keys.ENTER)
    _wait(driver, lambda d: _screen(d) == "instructions", "the instructions")
    _press(driver, Keys.SPACE)
    _answerable_trial(driver, "trial")


def test_large_images_stay_at_native_size_and_scroll_together(tmp_path, browser, inprocess_server):
    base, _ = inprocess_server(make_dataset(tmp_path / "ds", n_images=1, size=(700, 200)))
    _register_and_start(browser, base, "wide")
    for natural_w, natural_h, shown_w, shown_h in _image_check(browser):
        assert (natural_w, natural_h) == (shown_w, shown_h) == (700, 200)  # never scaled to fit
    panes = browser.execute_script(
        "const a = document.getElementById('pane-ref'), b = document.getElementById('pane-test');"
        "const before = [a.clientWidth, a.scrollWidth, b.clientWidth];"
        "a.scrollLeft = 150; return before;")
    assert panes[0] < 700 and panes[1] >= 700 and panes[2] < 700  # two 700 px images do not fit in 1000 px
    _wait(browser, lambda d: d.execute_script("return document.getElementById('pane-test').scrollLeft") == 150,
          "the other pane to follow the scroll")


def test_flicker_alternates_in_one_place(tmp_path, browser, inprocess_server):
    base, app = inprocess_server(make_dataset(tmp_path / "ds", n_images=1), flicker=True, flicker_ms=100)
    _register_and_start(browser, base, "flick")
    toggles = browser.execute_async_script(
        "const done = arguments[0], ref = document.getElementById('img-flicker-ref'), times = [];"
        "new MutationObserver(() => times.push(performance.now())).observe(ref, {attributes: true});"
        "setTimeout(() => done(times), 1000);")
    assert len(toggles) >= 4  # 100 ms per image: about 10 changes a second, fewer on a busy machine
    gaps = [b - a for a, b in zip(toggles, toggles[1:])]
    assert min(gaps) >= 80  # never faster than asked (less one frame of slack)
    assert not browser.find_element("id", "img-ref").is_displayed()  # no second, side-by-side image
    _press(browser, "s")
    _wait(browser, lambda d: app.config["STUDY_STORE"].judgements(), "the answer to be stored")
    (j,) = app.config["STUDY_STORE"].judgements()
    assert j.session == "web-flicker" and j.response == "not_noticeable" and j.level == 5
