"""The directed target's own distortion as a datagen family, with the shipped estimator."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from jndplug.datagen import build_dataset
from jndplug.datagen.directed_family import GAIN, STRENGTHS, make_levels
from jndplug.imageio import to_tensor


@pytest.fixture(scope="module")
def photo():
    from skimage.data import astronaut

    img = Image.fromarray(astronaut()).resize((96, 96), Image.LANCZOS)
    return to_tensor(np.asarray(img))


@pytest.fixture(scope="module")
def levels():
    return make_levels()


def test_ladder_straddles_the_default_and_is_monotone(photo, levels):
    assert STRENGTHS[0] < 1 < STRENGTHS[-1] and all(b > a for a, b in zip(STRENGTHS, STRENGTHS[1:]))
    assert levels.gain == GAIN
    rms = [float((levels(photo, k) - photo).pow(2).mean().sqrt()) for k in range(1, len(STRENGTHS) + 1)]
    assert all(b > a for a, b in zip(rms, rms[1:])), rms


def test_levels_are_zero_mean_luma_changes(photo, levels):
    for k in (1, 5, 9):
        d = levels(photo, k) - photo
        assert float(d.abs().max()) > 1 / 255  # it does something
        # one change added to R, G and B alike (luma only; the photo is away from 0 and 1 here or
        # clamped identically) and zero mean over the image
        inside = ((photo > 0.02) & (photo < 0.98)).all(0)
        assert float((d[0] - d[1])[inside].abs().max()) < 1e-5 and float((d[0] - d[2])[inside].abs().max()) < 1e-5
        assert abs(float(d[0].mean())) < 1e-4


def test_levels_refuse_bad_input(levels, photo):
    with pytest.raises(ValueError, match="level must be 1..9"):
        levels(photo, 10)
    with pytest.raises(ValueError, match="strengths must increase"):
        make_levels(strengths=[1.0, 0.5])


def test_datagen_builds_the_family_uncalibrated(tmp_path, photo):
    src = tmp_path / "src"
    src.mkdir()
    for i, seed in enumerate((0, 1)):
        arr = (np.clip(photo.permute(1, 2, 0).numpy(), 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(np.roll(arr, 17 * seed, axis=1)).save(src / f"p{i}.png")
    summary = build_dataset([src], tmp_path / "ds", level_fn="jndplug.datagen.directed_family:levels",
                            calibrate=False, masking=0.0, chroma=1.0, size=(96, 96), min_side=32, progress=False)
    assert not summary["not_monotonic"]
    for record in (tmp_path / "ds" / "records").glob("*.json"):
        levels = json.loads(record.read_text())["levels"]
        assert [lv["level_fn_level"] for lv in levels] == list(range(1, 10))
        psnrs = [lv["psnr"] for lv in levels]
        assert all(b < a for a, b in zip(psnrs, psnrs[1:])), psnrs
        assert all(lv["blend"] == 1.0 for lv in levels)  # uncalibrated: each level is the target itself
        d = torch.from_numpy(np.asarray(Image.open(tmp_path / "ds" / levels[4]["file"]), dtype=np.float32)) - \
            torch.from_numpy(np.asarray(Image.open(tmp_path / "ds" / "originals" / f"{record.stem}.png"),
                                        dtype=np.float32))
        assert float(d.mean()) == pytest.approx(0, abs=0.05)  # zero mean, to 8-bit rounding


def test_threshold_strength_reads_the_sur_curve():
    from jndplug.datagen.directed_family import summarize_thresholds, threshold_strength

    s = [1.0, 2.0, 4.0]
    assert threshold_strength([1.0, 0.9, 0.8], 0.75, s) == float("inf")  # never falls below
    assert threshold_strength([0.7, 0.5, 0.1], 0.75, s) == 1.0  # already below at the first level
    assert threshold_strength([1.0, 0.75, 0.25], 0.75, s) == pytest.approx(2.0)  # exactly at level 2
    # halfway between 0.9 and 0.6 in SUR is halfway between 2 and 4 in log strength
    assert threshold_strength([1.0, 0.9, 0.6], 0.75, s) == pytest.approx(2 * 2 ** 0.5)
    summary = summarize_thresholds({"a": {"sur": [1.0, 0.9, 0.6]}, "b": {"sur": [0.5, 0.2, 0.1]},
                                    "c": {"sur": None}, "d": {"sur": [1, 1, 1]}}, 0.75, s)
    assert summary["images"] == 3 and summary["below_ladder"] == 1 and summary["above_ladder"] == 1
    assert summary["median"] == pytest.approx(2 * 2 ** 0.5)


def test_allocation_family_gives_each_photo_one_bound_at_its_calibrated_ladder(photo):
    from jndplug.datagen.directed_family import ALLOCATIONS, allocation_of, make_allocation_levels
    from jndplug.spec import TargetSpec
    from jndplug.target import JNDTarget

    levels = make_allocation_levels()
    # the same photo always gets the same bound; shifted copies spread over several
    assert allocation_of(photo) == allocation_of(photo.clone())
    assert len({allocation_of(torch.roll(photo, k, dims=2)) for k in range(12)}) >= 3
    bound = allocation_of(photo)
    middle = JNDTarget.from_spec(TargetSpec(bound=bound, strength=ALLOCATIONS[bound]))(photo)
    assert torch.equal(levels(photo, 5), middle)  # the middle level is the calibrated strength
    rms = [float((levels(photo, k) - photo).pow(2).mean().sqrt()) for k in range(1, 10)]
    assert all(b > a for a, b in zip(rms, rms[1:])), rms
    with pytest.raises(ValueError, match="factors must increase"):
        make_allocation_levels(factors=[1.0, 0.5])
