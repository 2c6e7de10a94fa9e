"""``jndplug bench visibility``: the equal-visibility search, with a stub panel."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from jndplug.bench import targets, visibility
from jndplug.bench.common import BenchError
from jndplug.spec import TargetSpec


def _psychometric(s50, slope=3.0):
    return lambda s: 1 - math.exp(-math.log(2) * (s / s50) ** slope)


@pytest.mark.parametrize("s50,start,level", [(2.0, 1.0, 0.25), (0.05, 1.0, 0.25), (40.0, 0.3, 0.1),
                                             (1.0, 1.0, 0.5)])
def test_search_finds_the_strength_at_the_level(s50, start, level):
    f = _psychometric(s50)
    strength, history = visibility.calibrate(f, level, start, tolerance=0.01, evaluations=12)
    assert abs(f(strength) - level) <= 0.01
    assert (strength, f(strength)) in history and len(history) <= 12
    # the exact answer, for comparison: f(s) = level
    exact = s50 * (math.log(1 / (1 - level)) / math.log(2)) ** (1 / 3)
    assert strength == pytest.approx(exact, rel=0.05)
    assert all(s == float(f"{s:.3g}") for s, _ in history)  # three digits: the spec named is the one measured


def test_search_stops_at_its_budget_and_returns_the_closest():
    f = _psychometric(1000.0)  # far away: doubling from 1 cannot bracket it in 4 steps
    strength, history = visibility.calibrate(f, 0.25, 1.0, tolerance=0.01, evaluations=4)
    assert len(history) == 4 and strength == max(s for s, _ in history)
    with pytest.raises(BenchError, match="first guess"):
        visibility.calibrate(f, 0.25, 0.0, 0.01, 4)


@pytest.fixture
def photos(tmp_path):
    g = np.random.default_rng(0)
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(2):
        smooth = np.kron(g.integers(40, 215, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
        Image.fromarray(smooth).save(root / f"p{i}.png")
    return root


def test_bench_visibility_calibrates_each_bound_end_to_end(photos, tmp_path, monkeypatch, estimator_file, run_cli):
    # a stub panel: noticed grows with the RMS of the change (the real models are tested in bench targets)
    class Stub:
        models = []

    monkeypatch.setattr("jndplug.study.visibility.make_model", lambda kind: Stub())

    def scores(model, reference, test):
        rms = float(np.sqrt(np.mean((test.astype(float) - reference) ** 2)))
        return {"stub": rms / 4}, {"cvvdp": 10.0, "flip": 0.0, "ssimulacra2": 100 - rms, "colour_distance": 0.0}

    monkeypatch.setattr(targets, "scores_of", scores)
    monkeypatch.setattr(targets, "noticed", lambda d, sens: 1 - math.exp(-d))
    out = tmp_path / "vis"
    result = visibility.run(visibility.Settings(
        images=str(photos), targets=[f"directed:estimator={estimator_file},bound=estimator", "directed:bound=flat",
                                     "directed:bound=localstd,strength=0.5", "directed"],  # the last: the default bound
        out=str(out), level=0.3, statistic="mean", tolerance=0.02, evaluations=8, observers=2))
    rows = {r["target"].split(",strength")[0]: r for r in result["results"]}
    assert len(rows) == 4
    assert {TargetSpec.parse(r["target"]).bound for r in result["results"]} == {"estimator", "flat", "localstd",
                                                                                 "profile"}
    for r in result["results"]:
        assert abs(r["value"] - 0.3) <= 0.02 and r["converged"]
        assert r["calibrated"].endswith(f"strength={r['strength']:g}") or f"strength={r['strength']:g}," in r["calibrated"]
        assert r["summary"]["noticed_mean"] == pytest.approx(r["value"])
    # the stub notices the RMS of the change: at equal visibility the four change the photos about
    # equally (1-exp(-rms/4) within 0.3 +- 0.02 bounds rms to [1.31, 1.54] levels), whatever the strengths
    rms = [r["summary"]["rms_255_mean"] for r in result["results"]]
    assert max(rms) / min(rms) < 1.3
    saved = json.loads((out / "visibility.json").read_text())
    assert saved["results"][1]["calibrated"] == result["results"][1]["calibrated"]
    assert all(f"| {r['calibrated']} |" in (out / "visibility.md").read_text() for r in result["results"])
    # a rerun evaluates nothing again
    again = visibility.run(visibility.Settings(
        images=str(photos), targets=["directed:bound=flat"], out=str(out), level=0.3, statistic="mean",
        tolerance=0.02, evaluations=8, observers=2))
    assert again["results"][0]["calibrated"] == result["results"][1]["calibrated"]


def test_bench_visibility_refuses_bad_settings(photos, tmp_path):
    for kw, message in [({"level": 1.5}, "--level"), ({"evaluations": 1}, "--evaluations"),
                        ({"targets": ["directed:bound=box"]}, "bound: must be one of")]:
        with pytest.raises(BenchError, match=message):
            visibility.run(visibility.Settings(images=str(photos), out=str(tmp_path / "v"), **kw))


def test_search_does_not_creep_on_a_steep_curve():
    # plain regula falsi kept the far end and crept in from below in small steps (0.209, 0.214, 0.217, ...)
    f = lambda s: min(1.0, (s / 0.42) ** 4)  # noqa: E731
    strength, history = visibility.calibrate(f, 0.21, 0.2, tolerance=0.005, evaluations=8)
    assert abs(f(strength) - 0.21) <= 0.005 and len(history) <= 7
