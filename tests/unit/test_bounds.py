"""The bounds of the directed image (jndplug.spec.BOUNDS): each through the spec and JNDTarget."""

import argparse
import shlex

import numpy as np
import pytest
import torch

from jndplug.directed import directed_distortion, highpass
from jndplug.pixels import luma
from jndplug.spec import BOUNDS, TargetSpec, TargetSpecError
from jndplug.target import JNDTarget


def _image(seed=0, side=40):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 3, side, side, generator=g), 5, 1, 2)
    return 0.3 + 0.4 * smooth  # mid-range: no clipping at 0 or 1 for small changes


def test_localstd_is_the_7x7_standard_deviation_of_the_luma(estimator_file):
    x = _image(1)
    target = JNDTarget.from_spec(TargetSpec(estimator=estimator_file, bound="localstd", strength=0.5))
    m = target.jnd_map(x)[0, 0].numpy()
    y = luma(x)[0, 0].numpy().astype(np.float64)
    for i, j in [(3, 3), (10, 20), (36, 36), (20, 5)]:
        assert m[i, j] == pytest.approx(0.5 * y[i - 3:i + 4, j - 3:j + 4].std(), abs=1e-5)


def test_flat_bound_is_strength_levels_everywhere(estimator_file):
    x = _image(2)
    target = JNDTarget.from_spec(TargetSpec(estimator=estimator_file, bound="flat", strength=3.0))
    assert torch.allclose(target.jnd_map(x), torch.full_like(x[:, :1], 3 / 255))
    d = target.distortion(x)
    assert float(d.abs().max()) <= 3 / 255 + 1e-6 and float(d.abs().max()) > 2.9 / 255


def test_no_bound_is_a_plain_zero_mean_sharpening_scaled_by_strength(estimator_file):
    x = _image(3)
    v = highpass(x)
    for s in (0.1, 0.3):
        target = JNDTarget.from_spec(TargetSpec(estimator=estimator_file, bound="none", strength=s, gain=2.0))
        expected = s * 2.0 * (v - v.mean())
        assert torch.allclose(target.distortion(x)[:, :1], expected, atol=1e-6)
        assert torch.allclose(target(x), x + directed_distortion(x, torch.full_like(v, float("inf")), 2 * s),
                              atol=1e-6)


def test_bounds_other_than_the_estimator_need_no_estimator_and_no_sur():
    for name, row in BOUNDS.items():
        spec = TargetSpec(bound=name, strength=1.0)
        assert spec.uses_estimator == row.uses_estimator
        assert ("estimator" in spec.applies()) == (name == "estimator")


def test_sur_is_refused_where_the_estimator_takes_no_part():
    for name, row in BOUNDS.items():
        if row.uses_estimator:
            assert TargetSpec(bound=name, strength=1.0, sur=0.9).sur == 0.9
        else:
            with pytest.raises(TargetSpecError, match=f"sur: applies where the estimator takes part.*bound {name}"):
                TargetSpec(bound=name, strength=1.0, sur=0.9)


def test_uncalibrated_bounds_ask_for_a_strength():
    for name in ("localstd", "flat", "none"):
        with pytest.raises(TargetSpecError, match=f"strength: bound {name} has no calibrated default"):
            TargetSpec(bound=name)
    assert TargetSpec(bound="estimator").strength == 2.0
    # the default bound is the analytic profile, at its calibrated strength
    assert (TargetSpec().bound, TargetSpec().strength) == ("profile", 0.591)
    assert TargetSpec(bound="profile").strength == 0.591 == TargetSpec().strength


@pytest.mark.parametrize("spec", [TargetSpec(bound="localstd", strength=0.19), TargetSpec(bound="flat", strength=4.0),
                                  TargetSpec(bound="none", strength=0.28, sigma=2.0)])
def test_every_entry_point_takes_a_bound(spec):
    # compact form (benchmarks), YAML block (BasicSR), flags (CompressAI), precompute manifest
    assert TargetSpec.parse(spec.text()) == spec
    assert TargetSpec.from_mapping({"bound": spec.bound, "strength": spec.strength, "sigma": spec.sigma},
                                   "jnd_target.") == spec
    p = argparse.ArgumentParser()
    TargetSpec.add_arguments(p, "jnd-")
    assert TargetSpec.from_args(p.parse_args(shlex.split(spec.flags("jnd-"))), "jnd-") == spec
    back = TargetSpec.from_manifest({"arch": "unet", **spec.manifest_settings()})
    assert back.differences(spec, compare_estimator=False) == []
    # a folder made with another bound is named as such in a mismatch, against the default (profile)
    # and against the estimator's map
    assert ("bound", spec.bound, "profile") in spec.differences(TargetSpec())
    assert ("bound", spec.bound, "estimator") in spec.differences(TargetSpec(bound="estimator"))


def test_infer_names_the_bound_it_draws_and_refuses_a_map_of_no_bound(tmp_path, run_cli):
    from PIL import Image

    Image.fromarray((_image(5, 64)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "a.png")
    res = run_cli("infer", tmp_path / "a.png", "--out", tmp_path / "b.png", "--bound", "none", "--strength", "0.3",
                  "--map")
    assert res.returncode == 1 and "--map: --bound none bounds nothing" in res.stderr
    assert not (tmp_path / "b.png").exists()  # refused before any work
    assert JNDTarget.from_spec(TargetSpec(bound="estimator")).bound_label == BOUNDS["estimator"].label
    assert JNDTarget().bound_label == BOUNDS["profile"].label  # the default bound


def test_no_bound_has_no_map_to_normalise(estimator_file):
    from jndplug.errors import JNDPlugValueError

    target = JNDTarget.from_spec(TargetSpec(estimator=estimator_file, bound="none", strength=0.3))
    assert bool(torch.isinf(target.jnd_map(_image(6))).all())
    with pytest.raises(JNDPlugValueError, match="bound none bounds nothing"):
        target.jnd_map(_image(6), normalize=True)


def test_a_trained_profile_file_is_a_bound_through_every_entry_point(tmp_path, estimator_file, monkeypatch):
    from jndplug.models.jnd_profile import JNDProfile, save_profile

    profile = JNDProfile()
    with torch.no_grad():  # a structural factor that is not 1: the file, not NAMM, must decide
        profile.structure_net[-1].bias.fill_(0.5)
    save_profile(profile, tmp_path / "p.safetensors")
    monkeypatch.chdir(tmp_path)  # a relative path, as users type it
    with pytest.raises(TargetSpecError, match="strength: bound p.safetensors has no calibrated default"):
        TargetSpec(bound="p.safetensors")
    spec = TargetSpec(bound="p.safetensors", strength=0.5)
    assert not spec.uses_estimator and "estimator" not in spec.applies()
    x = _image(7)
    learned = JNDTarget.from_spec(spec)
    namm = JNDTarget.from_spec(TargetSpec(bound="profile", strength=0.5))
    # exp(0.5) times the analytic profile everywhere (the first layers feed a zero last weight)
    assert torch.allclose(learned.jnd_map(x), namm.jnd_map(x) * np.exp(0.5), rtol=1e-5)
    assert float((learned(x) - namm(x)).abs().max()) > 0
    assert "p.safetensors" in learned.bound_label
    # compact form, YAML block, flags, precompute manifest
    assert TargetSpec.parse(spec.text()) == spec
    assert TargetSpec.from_mapping({"bound": "p.safetensors", "strength": 0.5}, "jnd_target.") == spec
    p = argparse.ArgumentParser()
    TargetSpec.add_arguments(p, "jnd-")
    assert TargetSpec.from_args(p.parse_args(shlex.split(spec.flags("jnd-"))), "jnd-") == spec
    back = TargetSpec.from_manifest({"arch": "unet", **spec.manifest_settings()})
    assert back.differences(spec, compare_estimator=False) == []


def test_a_bound_file_that_is_not_a_profile_is_refused_with_the_fix(tmp_path, estimator_file):
    with pytest.raises(TargetSpecError, match="holds an estimator's weights: give it as estimator=PATH"):
        TargetSpec(bound=str(estimator_file), strength=1.0)
    with pytest.raises(TargetSpecError, match="missing.safetensors does not exist"):
        TargetSpec(bound=str(tmp_path / "missing.safetensors"), strength=1.0)
    with pytest.raises(TargetSpecError, match="bound: must be one of estimator, profile, localstd, flat, none"):
        TargetSpec(bound="flatt", strength=1.0)
