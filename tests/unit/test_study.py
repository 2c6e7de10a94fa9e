"""The JND study: protocol engine, records, importer, screening, aggregation, simulated observers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy.stats import norm

from conftest import make_dataset
from jndplug.cli import main as cli_main
from jndplug.study import (
    BinarySearch, Judgement, ProtocolError, Session, JNDDataset, aggregate, bt500_screen,
    detection_probability, import_judgements, level_for_sur, load_labels, participant_jnds,
    read_judgements, simulate, write_judgements,
)
from jndplug.study.observers import PredictionCache, SimulatedObserver
from jndplug.study.screening import kurtosis_beta2
from jndplug.study.visibility import FLIP, SSIMULACRA2, ColourDifference, VisibilityModel, make_model


# ---------------------------------------------------------------- engine


def _all_runs(search=None, answers=()):
    """Every possible sequence of answers to a binary search, with the finished search."""
    search = search or BinarySearch()
    if search.done:
        yield answers, search
        return
    for a in (False, True):
        s = BinarySearch.from_dict(search.to_dict())
        s.answer(s.next_level(), a)
        yield from _all_runs(s, answers + (a,))


def test_binary_search_every_answer_pattern():
    runs = list(_all_runs())
    assert len(runs) == 10  # one leaf per possible JND 0..9
    assert sorted(s.jnd for _, s in runs) == list(range(10))
    for answers, s in runs:
        assert 3 <= len(answers) <= 4
        assert s.history[0][0] == 5  # starts in the middle
        not_noticed = [lvl for lvl, a in s.history if not a]
        noticed = [lvl for lvl, a in s.history if a]
        assert s.jnd == max(not_noticed, default=0)  # strongest level judged not noticeable
        assert all(lvl > s.jnd for lvl in noticed)
        assert s.jnd == 9 or s.jnd + 1 in noticed  # the interval closed


@pytest.mark.parametrize("threshold", range(10))
def test_binary_search_finds_a_deterministic_observers_threshold(threshold):
    s = BinarySearch()
    while not s.done:
        lvl = s.next_level()
        s.answer(lvl, lvl > threshold)
    assert s.jnd == threshold


def test_binary_search_edges_and_refusals():
    s = BinarySearch()
    assert [s.next_level()] == [5]
    with pytest.raises(ProtocolError, match="level 5, not level 4"):
        s.answer(4, True)
    while not s.done:
        s.answer(s.next_level(), True)
    assert s.done and s.jnd == 0 and [lvl for lvl, _ in s.history] == [5, 2, 1]
    with pytest.raises(ProtocolError, match="ended"):
        s.answer(1, True)
    s = BinarySearch()
    while not s.done:
        s.answer(s.next_level(), False)
    assert s.jnd == 9 and [lvl for lvl, _ in s.history] == [5, 7, 8, 9]
    with pytest.raises(ProtocolError, match="inconsistent binary-search state lo=5 hi=3"):
        BinarySearch.from_dict({"n_levels": 9, "lo": 5, "hi": 3, "history": []})


def test_session_catch_trials_refusals_and_json_round_trip():
    images = [f"img{i}" for i in range(5)]
    thresholds = {"img0": 0, "img1": 9, "img2": 4, "img3": 6, "img4": 2}

    def run(interrupt_every=None):
        s = Session(images, catch_every=2)
        kinds, n = [], 0
        while (t := s.next_trial()) is not None:
            assert s.next_trial() == t  # the same trial until answered
            if t.kind == "search":
                ans = t.level > thresholds[t.image]
            else:
                ans = t.kind == "catch_strongest"
            kinds.append(t.kind)
            s.answer(t.index, ans)
            n += 1
            if interrupt_every and n % interrupt_every == 0:
                s = Session.from_dict(json.loads(json.dumps(s.to_dict())))
        return s, kinds

    s, kinds = run()
    assert s.results() == thresholds and s.done
    assert kinds.count("catch_strongest") == 1 and kinds.count("catch_identical") == 1
    assert all(c["passed"] for c in s.catch_results)
    s2, kinds2 = run(interrupt_every=1)
    assert s2.results() == thresholds and kinds2 == kinds and s2.to_dict() == s.to_dict()

    s = Session(["a", "b"])
    with pytest.raises(ProtocolError, match="no trial is awaiting"):
        s.answer(0, True)
    t = s.next_trial()
    with pytest.raises(ProtocolError, match="is 0, not 3"):
        s.answer(3, True)
    with pytest.raises(ProtocolError, match="True"):
        s.answer(t.index, "yes")
    restored = Session.from_dict(json.loads(json.dumps(s.to_dict())))
    with pytest.raises(ProtocolError, match="is 0, not 1"):
        restored.answer(1, True)
    restored.answer(0, True)
    with pytest.raises(ProtocolError, match="not a .+ session state"):
        Session.from_dict({"protocol": "other"})
    with pytest.raises(ValueError, match="more than once"):
        Session(["a", "a"])


# ---------------------------------------------------------------- records and importer


def _j(p, img, level, noticeable, idx=0, kind="search", observer_kind="human", model=""):
    return Judgement(participant=p, session="s1", image=img, trial_index=idx, trial_kind=kind, level=level,
                     response="noticeable" if noticeable else "not_noticeable", observer_kind=observer_kind,
                     observer_model=model)


def test_records_round_trip_csv_and_json(tmp_path):
    recs = [
        Judgement("p1", "s1", "img_a", 0, "search", 5, "noticeable", 812.5, "2024-05-01T10:00:00+00:00",
                  "2024-05-01T10:00:01+00:00", "human", ""),
        Judgement("p1", "s1", "img_a", 1, "catch_identical", 0, "not_noticeable"),
        _j("sim-1", "img,b", 3, False, 2, observer_kind="simulated", model="cvvdp;sensitivity=1.1"),
    ]
    for name in ("j.csv", "j.json"):
        write_judgements(tmp_path / name, recs)
        assert read_judgements(tmp_path / name) == recs
    (tmp_path / "bad.csv").write_text((tmp_path / "j.csv").read_text().replace("not_noticeable", "maybe", 1))
    with pytest.raises(ValueError, match=r"bad.csv: line 3: response must be one of"):
        read_judgements(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="level 0"):
        _j("p", "i", 0, False)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="study import"):
        read_judgements(tmp_path / "other.csv")


def test_importer_maps_columns_and_values(tmp_path):
    f = tmp_path / "third_party.csv"
    f.write_text("subject,src,step,answer,rt\n"
                 "S1,lena,4,Yes,900\nS1,lena,1,no,\nS2,lena,4,NO,1200\nS1,boat,4,yes,700\n")
    recs = import_judgements(f, {"participant": "subject", "image": "src", "level": "step",
                                 "response": "answer", "response_time_ms": "rt"}, level_offset=1)
    assert [(r.participant, r.image, r.level, r.response, r.trial_index) for r in recs] == [
        ("S1", "lena", 5, "noticeable", 0), ("S1", "lena", 2, "not_noticeable", 1),
        ("S2", "lena", 5, "not_noticeable", 0), ("S1", "boat", 5, "noticeable", 2)]
    assert recs[0].response_time_ms == 900 and recs[1].response_time_ms is None
    assert all(r.observer_kind == "human" and r.session == "imported" for r in recs)
    with pytest.raises(ValueError, match="no column 'participant'"):
        import_judgements(f)
    f.write_text("subject,src,step,answer\nS1,lena,4,perhaps\n")
    with pytest.raises(ValueError, match="line 2: response 'perhaps'"):
        import_judgements(f, {"participant": "subject", "image": "src", "level": "step", "response": "answer"})
    out = tmp_path / "imported.csv"
    f.write_text("who,pic,lvl,seen\nA,x,5,1\nA,x,2,0\n")
    assert cli_main(["study", "import", str(f), "--out", str(out), "--map", "participant=who", "image=pic",
                     "level=lvl", "response=seen"]) == 0
    assert [r.level for r in read_judgements(out)] == [5, 2]
    fj = tmp_path / "third_party.json"
    fj.write_text(json.dumps({"rows": [{"who": "A", "pic": "x", "lvl": 3, "seen": "visible", "session": "day1"}]}))
    (r,) = import_judgements(fj, {"participant": "who", "image": "pic", "level": "lvl", "response": "seen"})
    assert (r.participant, r.level, r.response, r.session) == ("A", 3, "noticeable", "day1")


# ---------------------------------------------------------------- screening and aggregation

NORMAL19 = [3, 3, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 7, 7, 5]


def _table(extra: dict[str, list[int]], n_images=20):
    """19 ordinary participants (values rotated across images) plus the given extra ones."""
    scores = {f"p{i:02d}": {} for i in range(19)}
    for j in range(n_images):
        for i in range(19):
            scores[f"p{i:02d}"][f"img{j}"] = NORMAL19[(i + j) % 19]
    for name, vals in extra.items():
        scores[name] = {f"img{j}": v for j, v in enumerate(vals)}
    return scores


def test_kurtosis():
    assert kurtosis_beta2([0, 0, 1, 1]) == pytest.approx(1.0)
    assert kurtosis_beta2(np.random.default_rng(0).standard_normal(200_000)) == pytest.approx(3.0, abs=0.05)
    assert math.isnan(kurtosis_beta2([4, 4, 4]))


def test_bt500_rejects_the_erratic_participant_and_keeps_the_biased_one():
    # premises of the table: with the outlier at 8 or 2 the image is normal and 8 / 2 fall outside 2 sigma
    x = np.array(NORMAL19 + [8], float)
    assert 2 <= kurtosis_beta2(x) <= 4 and 8 >= x.mean() + 2 * x.std(ddof=1) and 7 < x.mean() + 2 * x.std(ddof=1)
    erratic = [8 if j % 2 == 0 else 2 for j in range(20)]
    r = bt500_screen(_table({"erratic": erratic}))
    assert set(r.rejected) == {"erratic"}
    assert (r.P["erratic"], r.Q["erratic"]) == (10, 10)
    assert "P=10" in r.rejected["erratic"]
    assert all(r.P[p] == r.Q[p] == 0 for p in r.P if p != "erratic")
    assert all(st.normal for st in r.images.values())

    r = bt500_screen(_table({"strict": [8] * 20}))  # always above: consistent, so kept
    assert r.rejected == {} and (r.P["strict"], r.Q["strict"]) == (20, 0)

    # outliers at 9 / 1 make beta2 > 4: the sqrt(20)-sigma bounds apply and nobody is outside them
    r = bt500_screen(_table({"wild": [9 if j % 2 == 0 else 1 for j in range(20)]}))
    assert all(not st.normal for st in r.images.values())
    assert r.rejected == {} and r.P["wild"] == r.Q["wild"] == 0


def _judgements_from_jnds(jnds: dict[str, dict[str, int]], catch: dict[str, list[bool]] | None = None):
    """Run each participant through the real engine with the given JNDs as deterministic thresholds."""
    out = []
    for p, per_image in jnds.items():
        s = Session(sorted(per_image))
        while (t := s.next_trial()) is not None:
            ans = t.level > per_image[t.image]
            out.append(_j(p, t.image, t.level, ans, t.index))
            s.answer(t.index, ans)
        for k, passed in enumerate((catch or {}).get(p, [])):
            out.append(_j(p, "imgX", 9, passed, 100 + k, kind="catch_strongest"))
    return out


def test_aggregate_sur_levels_flags_and_screening():
    jnds = {f"p{i}": {"flat": 4, "spread": v, "split": w}
            for i, (v, w) in enumerate(zip([2, 3, 3, 4, 4, 4, 5, 5, 6, 7], [0, 0, 0, 0, 0, 9, 9, 9, 9, 9]))}
    jnds["lazy"] = {"flat": 4, "spread": 4, "split": 4}
    judgements = _judgements_from_jnds(jnds, catch={"lazy": [False, False, True], "p0": [True, True]})
    pj = participant_jnds(judgements)
    assert pj.jnd["p3"] == {"flat": 4, "spread": 4, "split": 0} and not pj.incomplete
    labels = aggregate(judgements, min_participants=11)
    scr = labels["screening"]
    assert "inattentive" in scr["rejected"]["lazy"][0] and scr["n_retained"] == 10
    assert scr["participants"]["p0"]["catch_total"] == 2 and scr["participants"]["p0"]["retained"]

    sp = labels["images"]["spread"]
    vals = [2, 3, 3, 4, 4, 4, 5, 5, 6, 7]
    assert sp["sur"] == pytest.approx([sum(v >= k for v in vals) / 10 for k in range(1, 10)])
    assert sp["jnd_level"] == math.floor(np.mean(vals)) == 4
    assert sp["histogram"] == [0, 0, 1, 2, 3, 2, 1, 1, 0, 0]
    assert sp["sur_ci95"][0][1] == 1.0 and sp["sur_ci95"][3][0] < 0.7 < sp["sur_ci95"][3][1]
    assert sp["jnd_mean_ci95"][0] < 4.3 < sp["jnd_mean_ci95"][1]
    assert "few_participants" in sp["flags"] and sp["observer_kind"] == "human"
    assert "non_normal" in labels["images"]["split"]["flags"]  # two camps: beta2 = 1
    assert labels["images"]["flat"]["sur"] == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert level_for_sur(sp, 0.75) == 3 and level_for_sur(sp, 0.7) == 4 and level_for_sur(sp, 1.0) == 2
    assert level_for_sur([0.4] * 9, 0.5) == 0
    assert aggregate(judgements, jnd_rule="sur:0.75")["images"]["spread"]["jnd_level"] == 3
    with pytest.raises(ValueError, match="unknown JND rule"):
        aggregate(judgements, jnd_rule="max")


def test_incomplete_and_inconsistent_searches_are_reported():
    j = [_j("a", "x", 5, True, 0), _j("a", "x", 2, False, 1),  # interval (2, 5): incomplete
         _j("b", "x", 5, True, 0), _j("b", "x", 6, False, 1)]  # noticed 5 but not 6
    pj = participant_jnds(j)
    assert pj.incomplete == [("a", "x")] and pj.inconsistent == [("b", "x")] and pj.jnd == {"b": {"x": 6}}


# ---------------------------------------------------------------- simulated observers


class _RMSModel(VisibilityModel):
    """A cheap stand-in: RMS difference in 8-bit steps / 6, so that RMS 6 is 1 'JOD'."""

    name = "rms"
    key = "rms-test"

    def distance(self, reference, test):
        return float(np.sqrt(np.mean((reference.astype(float) - test) ** 2)) / 6)


def test_psychometric_function():
    assert detection_probability(0.0) == 0
    assert detection_probability(1.0) == pytest.approx(0.5)
    assert detection_probability(2.0) == pytest.approx(2 * norm.cdf(2 * norm.ppf(0.75)) - 1)
    assert detection_probability(0.5, sensitivity=2.0) == pytest.approx(0.5)
    o = SimulatedObserver("x", 1.0, 0.0, seed=0, index=0, model_key="m")
    assert not any(o.respond("img", 0.0) for _ in range(200))
    o = SimulatedObserver("x", 1.0, 0.2, seed=0, index=0, model_key="m")
    assert o.p_noticeable(0.0) == pytest.approx(0.1) and o.p_noticeable(100.0) == pytest.approx(0.9)


def test_simulation_is_seeded_cached_and_tracks_distortion_strength(tmp_path):
    weak = JNDDataset(make_dataset(tmp_path / "weak", strength=0.4))
    strong = JNDDataset(make_dataset(tmp_path / "strong", strength=1.2))
    j1 = simulate(weak, _RMSModel(), n_observers=12, seed=3, progress=False, catch_every=1)
    cache = PredictionCache(weak, _RMSModel())
    j2 = simulate(weak, _RMSModel(), n_observers=12, seed=3, progress=False, catch_every=1)
    assert j1 == j2 and all(j.observer_kind == "simulated" for j in j1)
    assert {j.trial_kind for j in j1} == {"search", "catch_strongest", "catch_identical"}
    assert cache.distance("im0", 3) == pytest.approx(_RMSModel().distance(
        np.asarray(Image.open(tmp_path / "weak/originals/im0.png")),
        np.asarray(Image.open(tmp_path / "weak/distorted/im0/3.png"))))
    assert cache.computed == 0  # served from disk
    assert simulate(weak, _RMSModel(), n_observers=12, seed=4, progress=False) != j1
    lw = aggregate(j1)["images"]
    ls = aggregate(simulate(strong, _RMSModel(), n_observers=12, seed=3, progress=False))["images"]
    # three times the distortion: the JND should drop by about log(3)/log(1.6) = 2.3 levels
    shift = np.mean([lw[img]["jnd_mean"] - ls[img]["jnd_mean"] for img in lw])
    assert 1.5 <= shift <= 3.2, shift


def test_cli_simulate_and_aggregate_with_cvvdp(tmp_path):
    root = make_dataset(tmp_path / "ds", n_images=2, size=(40, 40))
    assert cli_main(["study", "simulate", str(root), "--observer-model", "cvvdp", "--observers", "4", "--seed", "1",
                     "--catch-every", "1"]) == 0
    judgements = read_judgements(root / "study" / "judgements.csv")
    assert judgements and all(j.observer_model.startswith("cvvdp-") for j in judgements)
    assert list((root / "study" / "cache").glob("cvvdp-*/im0.json"))
    assert cli_main(["study", "aggregate", str(root)]) == 0
    labels = load_labels(root / "study" / "labels.json")
    assert labels["observer_kind"] == "simulated" and set(labels["images"]) == {"im0", "im1"}
    for img, e in labels["images"].items():
        assert len(e["sur"]) == 9 and all(a >= b for a, b in zip(e["sur"], e["sur"][1:]))
        jnd_png = np.asarray(Image.open(root / "study" / "pairs" / "jnd" / f"{img}.png"))
        src = root / ("originals/" + img + ".png" if e["jnd_level"] == 0 else f"distorted/{img}/{e['jnd_level']}.png")
        assert np.array_equal(jnd_png, np.asarray(Image.open(src)))
        assert (root / "study" / "pairs" / "original" / f"{img}.png").is_file()
    assert (root / "study" / "sur_curves.png").is_file()


def test_cli_simulate_a_listed_subset(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", n_images=3, size=(32, 32))
    (tmp_path / "ids.txt").write_text("im2\n\nim0\n")
    out = tmp_path / "j.csv"
    assert cli_main(["study", "simulate", str(root), "--observer-model", "flip", "--observers", "2",
                     "--images", str(tmp_path / "ids.txt"), "--out", str(out)]) == 0
    assert {j.image for j in read_judgements(out)} == {"im0", "im2"}
    (tmp_path / "ids.txt").write_text("im0\nnope\n")
    assert cli_main(["study", "simulate", str(root), "--images", str(tmp_path / "ids.txt")]) == 1
    assert "1 id(s) not in" in capsys.readouterr().err


def test_flip_model_and_errors(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", n_images=1, size=(32, 32))
    ds = JNDDataset(root)
    flip = FLIP()
    c = PredictionCache(ds, flip)
    d = [c.distance("im0", lvl) for lvl in (1, 5, 9)]
    assert d[0] < d[1] < d[2]
    (root / "distorted" / "im0" / "4.png").unlink()
    assert cli_main(["study", "simulate", str(root)]) == 1
    assert "distorted images missing for im0 (levels 4)" in capsys.readouterr().err
    assert cli_main(["study", "aggregate", str(tmp_path / "nowhere")]) == 1
    assert "no such dataset folder" in capsys.readouterr().err


def _photo(h=128, w=192):
    from skimage import data, transform

    return transform.resize(data.astronaut(), (h, w), anti_aliasing=True)


def test_ssimulacra2_mapping_follows_its_published_scale():
    m = SSIMULACRA2()
    p = {s: float(detection_probability(m.score_to_distance(s))) for s in (100, 90, 85, 80, 75, 70, 60)}
    assert p[100] == 0 and p[75] == pytest.approx(0.5)
    assert p[90] < 0.05 and p[85] < 0.15 and 0.2 < p[80] < 0.3 and 0.75 < p[70] < 0.85 and p[60] > 0.95
    assert all(p[a] < p[b] for a, b in zip(p, list(p)[1:]))


def test_conservative_observer_notices_a_cast_and_not_a_rounding():
    img = _photo()
    u8 = (img * 255).round().astype(np.uint8)
    u16 = (img * 65535).round().astype(np.uint16)
    rounded = (np.round(u16 / 257.0) * 257).astype(np.uint16)
    cast = np.clip(u8.astype(int) + np.array([6, 0, 0]), 0, 255).astype(np.uint8)
    m = make_model("conservative")
    assert m.name == "conservative" and [c.name for c in m.models] == ["cvvdp", "flip", "ssimulacra2", "colour"]
    seen = m.components(u8, cast)
    assert detection_probability(max(seen.values())) > 0.5
    # ColorVideoVDP alone discounts the cast: that is why the colour test is there
    assert detection_probability(seen["cvvdp"]) < 0.5 and max(seen, key=seen.get) == "colour"
    assert detection_probability(m.distance(u16, rounded)) < 0.05
    assert m.distance(u8, u8) == 0


def test_colour_difference_measures_the_mean_and_local_casts():
    u8 = (_photo(64, 96) * 255).round().astype(np.uint8)
    m = ColourDifference()
    assert m.differences(u8, u8) == (0.0, 0.0)
    shifted = np.clip(u8.astype(int) + 4, 0, 255).astype(np.uint8)
    de_mean, de_local = m.differences(u8, shifted)
    assert de_mean > 0.5 and de_local > 0.5
    local = u8.copy()
    local[:20, :20, 2] = np.clip(local[:20, :20, 2].astype(int) + 25, 0, 255)  # a blue patch in a corner
    de_mean, de_local = m.differences(u8, local)
    assert de_local / m.local_de50 > de_mean / m.mean_de50  # the local test is what catches it
    with pytest.raises(ValueError, match="positive"):
        ColourDifference(mean_de50=0)


def test_cli_simulate_conservative_reports_the_deciding_models(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", n_images=2, size=(40, 40))
    assert cli_main(["study", "simulate", str(root), "--observers", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "deciding model (all):" in out
    judgements = read_judgements(root / "study" / "judgements.csv")
    assert all(j.observer_model.startswith("conservative[cvvdp-") for j in judgements)
    deciders = json.loads((root / "study" / "deciding_models.json").read_text())
    evaluated = sum(len(json.loads(p.read_text())["levels"]) for p in (root / "study" / "cache").glob("*/*.json"))
    assert sum(deciders["all"].values()) == evaluated > 0
    assert set(deciders["all"]) <= {"cvvdp", "flip", "ssimulacra2", "colour"}
