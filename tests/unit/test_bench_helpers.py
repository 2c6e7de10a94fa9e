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

