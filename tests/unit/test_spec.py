"""TargetSpec: the one description of a JND target's settings (validation, YAML, flags, manifest)."""

import argparse
import dataclasses
import math
import shlex

import pytest

from jndplug.errors import JNDPlugValueError
from jndplug.spec import DEFAULT_GAIN, DEFAULT_KIND, DEFAULT_STRENGTH, KINDS, TargetSpec, TargetSpecError


def test_defaults_resolve_once():
    spec = TargetSpec()
    assert (spec.estimator, spec.strength, spec.sur, spec.kind, spec.gain) == (
        "default", DEFAULT_STRENGTH[DEFAULT_KIND], None, DEFAULT_KIND, DEFAULT_GAIN)
    assert DEFAULT_KIND in KINDS and TargetSpec(kind="jnd").gain is None
    # the strength default is the kind's: the directed image at its default bound's (the analytic profile's)
    # calibrated strength, the JND image at the estimator's threshold
    assert set(DEFAULT_STRENGTH) == set(KINDS)
    assert TargetSpec(kind="jnd").strength == DEFAULT_STRENGTH["jnd"] == 1.0
    assert TargetSpec(kind="directed").strength == DEFAULT_STRENGTH["directed"] == 0.591
    assert TargetSpec.parse("directed").text() == "directed:strength=0.591"
    assert TargetSpec.parse("jnd:strength=2").strength == 2.0
    assert TargetSpec(strength=1, sur=1, bound="estimator").sur == 1.0
    assert isinstance(TargetSpec(strength=1).strength, float)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'strength'"):
        spec.strength = 2.0


@pytest.mark.parametrize("values,key", [
    ({"strength": -0.1}, "strength"), ({"strength": math.inf}, "strength"), ({"strength": "strong"}, "strength"),
    ({"strength": True}, "strength"), ({"sur": 0.0}, "sur"), ({"sur": 1.5}, "sur"), ({"kind": "sharp"}, "kind"),
    ({"gain": -1.0}, "gain"), ({"gain": math.nan}, "gain"), ({"kind": "jnd", "gain": 1.0}, "gain"),
    ({"estimator": 42}, "estimator"), ({"strength": "2"}, "strength"), ({"gain": "1.0"}, "gain"),
    ({"bound": "box"}, "bound"), ({"sigma": 0.0}, "sigma"), ({"kind": "jnd", "bound": "profile"}, "bound"),
    ({"kind": "jnd", "sigma": 2.0}, "sigma"), ({"kind": None}, "kind"),
])
def test_bad_settings_name_their_key(values, key):
    with pytest.raises(TargetSpecError) as err:
        TargetSpec(**values)
    assert err.value.key == key and str(err.value).startswith(f"{key}: ")
    assert isinstance(err.value, JNDPlugValueError) and isinstance(err.value, ValueError)


def test_from_mapping_names_the_yaml_key():
    assert TargetSpec.from_mapping(None) == TargetSpec()
    assert TargetSpec.from_mapping({"strength": 0.5, "kind": "jnd"}) == TargetSpec(strength=0.5, kind="jnd")
    for block, key in [({"strenght": 0.5}, "jnd_target.strenght"), ({"gain": "two"}, "jnd_target.gain"),
                       ({"sur": True}, "jnd_target.sur"), ({"estimator": 3}, "jnd_target.estimator"),
                       ({"strength": -1}, "jnd_target.strength"), ({"kind": "jnd", "gain": 2}, "jnd_target.gain")]:
        with pytest.raises(TargetSpecError) as err:
            TargetSpec.from_mapping(block, where="jnd_target.")
        assert err.value.key == key and str(err.value).startswith(f"{key}: "), block


def _parser(prefix=""):
    p = argparse.ArgumentParser(exit_on_error=False)
    TargetSpec.add_arguments(p, prefix)
    return p


@pytest.mark.parametrize("prefix", ["", "jnd-"])
def test_from_args_names_the_flag(prefix):
    args = _parser(prefix).parse_args([f"--{prefix}kind", "jnd", f"--{prefix}strength", "0.5"])
    assert TargetSpec.from_args(args, prefix) == TargetSpec(kind="jnd", strength=0.5)
    assert TargetSpec.given_arguments(args, prefix) == [f"--{prefix}strength", f"--{prefix}kind"]
    assert TargetSpec.from_args(_parser(prefix).parse_args([]), prefix) == TargetSpec()
    for argv, flag in [([f"--{prefix}strength", "-1"], f"--{prefix}strength"),
                       ([f"--{prefix}kind", "jnd", f"--{prefix}gain", "1"], f"--{prefix}gain"),
                       ([f"--{prefix}sur", "2"], f"--{prefix}sur")]:
        with pytest.raises(TargetSpecError) as err:
            TargetSpec.from_args(_parser(prefix).parse_args(argv), prefix)
        assert err.value.key == flag and str(err.value).startswith(f"{flag}: ")


@pytest.mark.parametrize("spec", [TargetSpec(), TargetSpec(estimator="my weights/a.safetensors", strength=0.25,
                                                                         sur=0.9, kind="jnd"),
                                  TargetSpec(kind="directed", gain=2.5, strength=0)])
@pytest.mark.parametrize("prefix", ["", "jnd-"])
def test_flags_rebuild_an_equal_spec(spec, prefix):
    flags = spec.flags(prefix)
    args = _parser(prefix).parse_args(shlex.split(flags))
    assert TargetSpec.from_args(args, prefix) == spec
    assert f"--{prefix}kind {spec.kind}" in flags  # spelled out: a command's own default cannot differ


def test_manifest_round_trip():
    for spec in (TargetSpec(strength=0.5, sur=0.8, bound="estimator"), TargetSpec(kind="jnd"), TargetSpec(gain=0.0),
                 TargetSpec()):
        settings = {"estimator_fingerprint": "f" * 64, "arch": "unet", **spec.manifest_settings()}
        back = TargetSpec.from_manifest(settings)
        assert back.differences(spec, compare_estimator=False) == []
        assert back.estimator == "unet" and "estimator" not in spec.manifest_settings()
    # a manifest written before kind and gain existed was made with the estimated JND image
    old = TargetSpec.from_manifest({"arch": "unet", "strength": 1.0, "sur": None})
    assert old.kind == "jnd" and old.gain is None
    # a directed one written before bounds existed (or while the estimator's map was the default bound)
    # was bounded by the estimator's map, not by today's default
    before_bounds = TargetSpec.from_manifest({"arch": "unet", "strength": 2.0, "sur": None, "kind": "directed",
                                              "gain": 1.0})
    assert (before_bounds.bound, before_bounds.strength) == ("estimator", 2.0) and before_bounds.uses_estimator
    assert TargetSpec.from_manifest({"arch": "unet", **TargetSpec().manifest_settings()}).bound == "profile"


def test_differences_list_each_differing_setting():
    # both use the estimator
    a, b = TargetSpec(strength=1.0, bound="estimator"), TargetSpec(estimator="x.safetensors", strength=0.5, kind="jnd")
    assert a.differences(a) == []
    # gain, bound and sigma do not apply to a jnd target: the kind differs, they are not named
    assert a.differences(b) == [("estimator", "default", "x.safetensors"), ("strength", 1.0, 0.5),
                                ("kind", "directed", "jnd")]
    assert [name for name, *_ in a.differences(b, compare_estimator=False)] == ["strength", "kind"]
    # a profile-bounded target uses no estimator: another estimator is the same target (a SUR is refused)
    profile = TargetSpec(bound="profile")
    assert profile.differences(TargetSpec(bound="profile", estimator="x.safetensors")) == []
    assert profile.differences(TargetSpec()) == []  # the default bound
    assert TargetSpec(bound="profile", strength=2.0).differences(TargetSpec(bound="estimator")) == [
        ("bound", "profile", "estimator")]
    assert profile.differences(TargetSpec(bound="estimator")) == [("strength", 0.591, 2.0),
                                                                  ("bound", "profile", "estimator")]


def test_describe_names_kind_gain_and_sur():
    # the default bound (the analytic profile) is not named, and it uses no estimator and no SUR
    assert TargetSpec().describe() == "directed JND image (gain 1), strength 0.591"
    assert TargetSpec(bound="estimator").describe() == \
        "directed JND image (gain 1, bound estimator), estimator default, strength 2, SUR estimator default"
    assert TargetSpec(bound="estimator", sur=0.9).describe() == \
        "directed JND image (gain 1, bound estimator), estimator default, strength 2, SUR 0.9"
    assert TargetSpec(kind="jnd", sur=0.9).describe() == "estimated JND image, estimator default, strength 1, SUR 0.9"


@pytest.mark.parametrize("text,canonical", [
    ("directed", "directed:strength=0.591"), ("jnd", "jnd:strength=1"), ("directed:strength=2,gain=4", None),
    ("directed:gain=4,strength=1", "directed:strength=1,gain=4"), ("jnd:strength=0.5", None),
    ("directed:bound=estimator", "directed:strength=2,bound=estimator"),
    ("directed:bound=estimator,sur=0.9", "directed:strength=2,sur=0.9,bound=estimator"),
    ("jnd:estimator=my.safetensors", "jnd:estimator=my.safetensors,strength=1"),
])
def test_compact_form_round_trips(text, canonical):
    spec = TargetSpec.parse(text)
    assert TargetSpec.parse(spec.text()) == spec and spec.text() == (canonical or text)


@pytest.mark.parametrize("value", [1.2345678, 2.0000001, 0.1, 1 / 3, 1e-9, 123456.5])
def test_compact_form_and_flags_are_exact(value):
    # six-digit rounding made strength=1.2345678 come back as 1.23457: advice that was refused again, forever
    spec = TargetSpec(strength=value, gain=value, sigma=value)
    assert TargetSpec.parse(spec.text()) == spec
    assert TargetSpec.from_args(_parser().parse_args(shlex.split(spec.flags())), "") == spec
    assert TargetSpec.parse("directed:strength=2").text() == "directed:strength=2"  # short where exact


def test_kind_table_owns_each_kinds_defaults_and_settings():
    from jndplug.spec import BOUNDS, DEFAULT_BOUND, DEFAULT_SIGMA, KIND_TABLE

    assert KINDS == tuple(KIND_TABLE) and DEFAULT_STRENGTH == {k: r.default_strength for k, r in KIND_TABLE.items()}
    directed = TargetSpec()
    assert (directed.bound, directed.sigma) == (DEFAULT_BOUND, DEFAULT_SIGMA) and DEFAULT_BOUND in BOUNDS
    jnd = TargetSpec(kind="jnd")
    assert (jnd.gain, jnd.bound, jnd.sigma) == (None, None, None)
    assert jnd.applies() == ("estimator", "strength", "sur", "kind")
    assert TargetSpec(bound="profile").applies() == ("strength", "kind", "gain", "bound", "sigma")
    assert TargetSpec.parse("directed:bound=profile,sigma=2") == TargetSpec(bound="profile", sigma=2.0)
    # the default bound is not spelled out; another is
    assert TargetSpec.parse("directed:bound=profile,sigma=2").text() == "directed:strength=0.591,sigma=2"
    assert TargetSpec.parse("directed:bound=estimator,sigma=2").text() == "directed:strength=2,bound=estimator,sigma=2"
    with pytest.raises(TargetSpecError, match="bound: applies to kind directed only"):
        TargetSpec.parse("jnd:bound=profile")
    assert TargetSpec.from_mapping({"bound": "profile"}, "jnd_target.").bound == "profile"
    with pytest.raises(TargetSpecError, match=r"jnd_target\.bound: must be one of estimator, profile"):
        TargetSpec.from_mapping({"bound": "flatt"}, "jnd_target.")
    assert TargetSpec(bound="profile", sigma=2).describe() == "directed JND image (gain 1, sigma 2), strength 0.591"
    assert TargetSpec(bound="localstd", strength=0.2, sigma=2).describe() == \
        "directed JND image (gain 1, bound localstd, sigma 2), strength 0.2"


def test_compact_form_names_the_bad_part():
    assert TargetSpec.parse("directed:gain=1") == TargetSpec()  # the default gain is not spelled out
    for text, message in [("sharp", "kind: must be directed or jnd"), ("directed:gain", "is not key=value"),
                          ("directed:foo=1", "foo: unknown key"), ("jnd:gain=2", "gain: applies to kind directed"),
                          ("directed:gain=x", "gain: must be a number"),
                          ("directed:sur=0.9", "sur: applies where the estimator takes part.*bound profile")]:
        with pytest.raises(TargetSpecError, match=message):
            TargetSpec.parse(text)
