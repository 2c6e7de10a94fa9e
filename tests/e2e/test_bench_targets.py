"""``jndplug bench targets``: the truth report of training targets, on small photographs."""

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycvvdp")
pytest.importorskip("flip_evaluator")
pytest.importorskip("ssimulacra2")

from jndplug.bench import targets  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two of scikit-image's sample photographs, small enough for every metric to be quick."""
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea"):
        img = Image.fromarray(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]))
        img.resize((128, 96), Image.LANCZOS).save(root / f"{name}.png")
    return root


def test_report_scores_each_target_and_resumes(photos, tmp_path, run_cli):
    out = tmp_path / "bt"
    args = ["bench", "targets", "--images", photos, "--out", out, "--observers", "8",
            "--targets", "directed:strength=0", "directed", "directed:strength=3,gain=4"]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    rows = {r["target"]: r for r in json.loads((out / "targets.json").read_text())["rows"]}
    # each row is named by the target's compact form, its strength spelled out (the default's: 0.591,
    # the analytic profile's, the default bound, not spelled out)
    assert list(rows) == ["directed:strength=0", "directed:strength=0.591", "directed:strength=3,gain=4"]
    for r in rows.values():
        assert [i["file"] for i in r["per_image"]] == ["astronaut.png", "chelsea.png"]
        s = r["summary"]
        noticed = [i["noticed"] for i in r["per_image"]]
        assert s["noticed_mean"] == pytest.approx(np.mean(noticed)) and s["noticed_max"] == max(noticed)
        assert s["at_the_line"] == (0.10 <= s["noticed_mean"] <= 0.25 and s["noticed_max"] <= 0.25)
        for i in r["per_image"]:
            # the conservative distance is the largest model's, and the report names that model
            assert i["distance"] == max(i["distances"].values()) == i["distances"][i["decided_by"]]
    # no change: nothing to notice, SSIMULACRA 2 at its top, every model at distance zero
    zero = rows["directed:strength=0"]["per_image"]
    assert all(i["rms_255"] == 0 and i["noticed"] == 0 and i["ssimulacra2"] == 100 for i in zero)
    # a larger budget spent at a higher gain changes the photos more, and is seen more
    big, default = rows["directed:strength=3,gain=4"]["summary"], rows["directed:strength=0.591"]["summary"]
    assert big["rms_255_mean"] > default["rms_255_mean"] > 0
    assert big["ssimulacra2_mean"] < default["ssimulacra2_mean"] < 100
    assert big["noticed_mean"] > default["noticed_mean"]
    assert (out / "targets.md").read_text().count("| directed") >= 3 and (out / "targets.png").is_file()
    # a rerun reads finished targets back instead of scoring them again
    again = run_cli(*args)
    assert again.returncode == 0 and again.stderr.count("done earlier, skipped") == 3


def test_bad_target_and_folder_are_one_line_errors(photos, tmp_path, run_cli):
    res = run_cli("bench", "targets", "--images", photos, "--out", tmp_path / "o", "--targets", "directed:gian=2")
    assert res.returncode == 1 and "gian: unknown key" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("bench", "targets", "--images", tmp_path / "absent", "--out", tmp_path / "o")
    assert res.returncode == 1 and "no such folder" in res.stderr and not (tmp_path / "o").exists()


def test_detection_follows_the_panel():
    """The panel's mean detection is zero at no distance and rises with the distance."""
    s = targets.panel_sensitivities(20, 0)
    assert len(s) == 20 and targets.noticed(0.0, s) == 0
    assert 0 < targets.noticed(0.5, s) < targets.noticed(1.0, s) < targets.noticed(2.0, s) < 1
