"""The helpers the benchmarks share with the rest of jndplug: 16-to-8-bit rounding, central crops,
bicubic low-resolution pairs, and the settings a finished run is checked against."""

import importlib.util

import numpy as np
import pytest

from jndplug.bench.common import BenchError, finished_run, write_json
from jndplug.bench.recipe import split_photos, transform_specs
from jndplug.imageio import to_8bit
from jndplug.pixels import bicubic_lq, centre_crop


def test_sixteen_bits_round_to_eight():
    a = np.array([[[0, 65535, 128 * 257], [128 * 257 + 128, 128 * 257 + 129, 200]]], np.uint16)
    # 257 = 65535 / 255; a value half way up a step rounds up (flooring, // 257, would give 128 for both)
    assert to_8bit(a).tolist() == [[[0, 255, 128], [128, 129, 1]]]
    u8 = np.zeros((2, 2, 3), np.uint8)
    assert to_8bit(u8) is u8
    with pytest.raises(TypeError, match="uint8 or uint16"):
        to_8bit(np.zeros((2, 2, 3), np.float32))


def test_centre_crop_floors_to_a_multiple_and_can_be_square():
    a = np.arange(10 * 13).reshape(10, 13)
    assert centre_crop(a, None) is a
    assert centre_crop(a, 8).shape == (8, 8) and centre_crop(a, 8)[0, 0] == a[1, 2]
    assert centre_crop(a, 12, multiple=4).shape == (8, 12)
    assert centre_crop(a, 12, multiple=4, square=True).shape == (8, 8)


@pytest.mark.skipif(importlib.util.find_spec("basicsr") is None, reason="needs basicsr")
def test_bicubic_pairs_are_mod_cropped():
    gt = np.random.default_rng(0).integers(0, 256, (30, 43, 3), dtype=np.uint8)
    cropped, lq = bicubic_lq(gt, 4)
    assert cropped.shape == (28, 40, 3) and lq.shape == (7, 10, 3) and lq.dtype == np.uint8
    assert np.array_equal(cropped, gt[:28, :40])


def test_held_back_photos_are_not_trained_on():
    files = [f"f{i}" for i in range(20)]
    train, val = split_photos(files, 8, 2)
    assert len(train) == 8 and len(val) == 2 and not set(train) & set(val)


def test_targets_need_the_ground_truth_and_known_transforms():
    assert [label for label, _ in transform_specs(["gt", "jnd", "directed:gain=2", "tolerant"])] == [
        "jnd", "directed:gain=2"]
    with pytest.raises(BenchError, match="must include gt"):
        transform_specs(["jnd"])
    with pytest.raises(BenchError, match="unknown transform"):
        transform_specs(["gt", "blur"])


def test_a_run_finished_with_other_settings_is_refused(tmp_path):
    write_json(tmp_path / "result.json", {"settings": {"steps": 2, "lr": 1e-4}, "mean": {}})
    assert finished_run(tmp_path, {"steps": 2, "lr": 1e-4})["mean"] == {}
    with pytest.raises(BenchError, match=r"other settings \(steps: 2 there, 3 now\)"):
        finished_run(tmp_path, {"steps": 3, "lr": 1e-4})
    assert finished_run(tmp_path / "not-run", {"steps": 3}) is None


def test_no_bench_module_is_over_the_house_limit():
    from pathlib import Path

    import jndplug.bench

    long = {p.name: n for p in Path(jndplug.bench.__file__).parent.glob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"split these by role (450 lines at most): {long}"


def _row(target, noticed, ssimulacra2):
    return {"target": target, "per_image": [{"noticed": n, "ssimulacra2": s} for n, s in zip(noticed, ssimulacra2)]}


def test_the_targets_figure_keeps_its_legends_off_the_points():
    pytest.importorskip("matplotlib")
    from jndplug.bench.targets import figure

    # points in every corner of both panels, where a legend inside the axes would sit
    fig = figure([_row("directed", [0.0, 0.3], [20.0, 95.0]), _row("jnd", [0.3, 0.0], [95.0, 20.0])])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend() or next(iter(fig.legends), None)
        assert legend is not None
        box, inside = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not box.overlaps(inside), f"the legend of '{ax.get_xlabel()}' lies on its axes"


def test_codec_crops_name_their_columns(tmp_path):
    from PIL import Image

    from jndplug.bench.codec_report import crops
    from jndplug.bench.settings import CodecSettings
    from jndplug.imageio import write_image

    s = CodecSettings(train="t", eval="e", out=str(tmp_path), targets=["gt", "jnd"], seeds=[0], lambdas=[0.01, 0.02])
    grey = np.full((32, 32, 3), 128, np.uint8)
    for target in s.targets:
        write_image(tmp_path / "runs" / f"l0.02_{target}_seed0" / "decoded" / "a.png", grey)
    crops(tmp_path / "crops.png", [("a", grey)], s, side=32)
    grid = np.asarray(Image.open(tmp_path / "crops.png").convert("L"))
    header = grid[: grid.shape[0] - 64]  # the tiles at 2x: 64 px of one image row
    assert header.shape[0] > 0, "no title band above the columns"
    columns = np.split(header, 3, axis=1)  # original, gt, jnd
    assert all((c < 100).any() for c in columns), "a column has no title"
    assert (grid[-64:] == 128).all()  # the tiles themselves are untouched
