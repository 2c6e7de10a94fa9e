"""One target path: the benchmarks' ``jnd`` and ``directed...`` transforms are ``TargetSpec.parse`` +
``JNDTarget``, and only the bench-only arms (``identity``, ``usm``) have a grammar of their own."""

import dataclasses

import numpy as np
import pytest

from conftest import make_image
from jndplug.bench.common import BenchError
from jndplug.bench.screen import Transforms, parse_transform
from jndplug.imageio import array_to_tensor
from jndplug.spec import TargetSpec
from jndplug.target import JNDTarget

pytestmark = pytest.mark.usefixtures("one_thread")

# "directed" is bounded by the default bound, the analytic profile; "directed:bound=estimator" by the
# map of the estimator the screen is given
LABELS = ["jnd", "jnd:strength=0.5", "directed", "directed:strength=2,gain=4", "directed:gain=1,bound=profile,sigma=2",
          "directed:strength=1,gain=0", "directed:bound=estimator", "directed:bound=estimator,strength=1,gain=2"]


def _eight_bits(t) -> np.ndarray:
    # as a restorer's saved outputs are: round half to even of the float image, clipped
    return np.clip(np.round(t[0].permute(1, 2, 0).numpy().astype(np.float64) * 255), 0, 255).astype(np.uint8)


def test_the_jnd_transforms_are_exactly_the_targets(estimator_file):
    out = make_image(48, 64, 3)
    specs = [parse_transform(label) for label in LABELS]
    got = Transforms(specs, str(estimator_file))(out)
    for label, spec in specs:
        assert spec == TargetSpec.parse(label)
        target = JNDTarget.from_spec(dataclasses.replace(TargetSpec.parse(label), estimator=str(estimator_file)))
        assert np.array_equal(got[label], _eight_bits(target(array_to_tensor(out)[None]))), label
    assert not np.array_equal(got["directed:strength=2,gain=4"], out)
    assert not np.array_equal(got["directed:bound=estimator"], got["directed"])  # the bound decides
    assert np.array_equal(got["directed:strength=1,gain=0"], out)


def test_bench_only_transforms_keep_their_own_options():
    assert parse_transform("identity") == ("identity", {"name": "identity"})
    assert parse_transform("usm:weight=1") == ("usm:weight=1", {"name": "usm", "weight": 1.0, "radius": 50,
                                                                "threshold": 10})


@pytest.mark.parametrize("text, message", [
    ("blur", "unknown transform 'blur'; known: identity, usm, directed, jnd"),
    ("directed:gian=2", "directed:gian=2: gian: unknown key"),
    ("directed:gain=-1", "gain: must be a finite number >= 0"),
    ("directed:bound=nowhere", "bound: must be one of estimator, profile"),
    ("jnd:gain=2", "gain: applies to kind directed only"),
    ("directed:estimator=x.safetensors", "give the estimator with --estimator"),
    ("usm:weight=x", "weight must be a number"),
    ("usm:sigma=1", "KEY one of weight, radius, threshold"),
    ("identity:gain=1", "identity takes no options"),
])
def test_bad_transforms_name_the_problem(text, message):
    with pytest.raises(BenchError, match=f"^--transforms {message}" if message.startswith(text) else message):
        parse_transform(text)
