"""The shipped estimator: present, verified, small, documented, and it changes images plausibly."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata

import jndplug
from jndplug.models.cost import macs_per_pixel
from jndplug.pixels import psnr
from jndplug.spec import TargetSpec
from jndplug.weights import PRETRAINED, WEIGHTS_DIR, read_metadata

SHIPPED = WEIGHTS_DIR / PRETRAINED["default"].file
MODEL_CARD = Path(__file__).resolve().parents[2] / "MODEL_CARD.md"


@pytest.fixture(scope="module")
def photo():
    # a real photograph at the scale the model was trained on (its dataset's images are <= 640 px)
    return jndplug.to_tensor(skdata.astronaut()[::2, ::2].copy())


def test_shipped_file_is_registered_small_and_verified():
    assert jndplug.list_pretrained() == {"default": True}
    assert SHIPPED.stat().st_size <= 5 * 2**20
    model = jndplug.load_estimator("default")  # checks the tensor hash and the architecture
    assert model.arch_name == "unet" and model.accepts_sur
    assert macs_per_pixel(model) <= 25_000
    assert sum(p.numel() for p in model.parameters()) <= 2_000_000
    prov = model.provenance
    assert prov["command"].startswith("python -m jndplug.train_estimator")
    assert prov["label_source"] == ["generated"] and prov["train_images"] > 0 and prov["val_images"] > 0
    assert {"psnr", "ssim", "level_exact", "level_within1"} <= set(prov["validation"])
    assert json.loads(read_metadata(SHIPPED)["config"]) == model.config


def test_the_shipped_file_matches_its_record():
    # the record says what the file is without opening it; here it is checked against the file itself
    record = PRETRAINED["default"]
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == record.sha256
    model = jndplug.load_estimator("default")
    assert record.architecture == read_metadata(SHIPPED)["arch"] == model.arch_name
    assert record.default_sur == model.default_sur
    assert list(record.label_source) == model.provenance["label_source"]
    card, _, section = record.model_card.partition("#")
    text = (MODEL_CARD.parent / card).read_text()
    assert SHIPPED.stem in text.splitlines()[0]  # the card's title names the file
    assert not section or any(line.startswith("#") and section in line.lower().replace(" ", "-")
                              for line in text.splitlines())


def test_model_card_quotes_the_shipped_files_own_record():
    card = MODEL_CARD.read_text()
    prov = jndplug.load_estimator("default").provenance
    assert prov["command"] in card.replace("\\\n    ", "")
    assert f"{prov['validation']['psnr']:.2f}" in card


# the shipped default target (directed, bounded by the analytic profile at 0.591), and the directed
# target bounded by the shipped weights' map at its strength 2 (the default until 2026-12-07)
@pytest.mark.parametrize("bound,measured_db", [(None, 36.716), ("estimator", 35.607)], ids=["default", "estimator"])
def test_default_target_changes_a_photograph_by_a_plausible_amount(photo, bound, measured_db):
    spec = TargetSpec(bound=bound)
    assert (spec.bound, spec.strength) == (("profile", 0.591) if bound is None else ("estimator", 2.0))
    out = jndplug.JNDTarget.from_spec(spec)(photo)
    assert out.shape == photo.shape and out.dtype == photo.dtype
    # measured 35.607 dB (2026-12-07, shipped weights, directed strength 2, bound estimator) and 36.716 dB
    # (2026-12-07, the default: bound profile at strength 0.591, `psnr(JNDTarget()(photo), photo)` =
    # 36.7159): pinned to 0.1 dB, a 1 % change of the distortion's amplitude; float rounding across
    # machines moves it by about 1e-4 dB. The old bound (25 to 50 dB, the labelled levels' range) let
    # the strength-1 target (41.1 dB) pass
    assert psnr(out, photo) == pytest.approx(measured_db, abs=0.1)
    # a distortion spread over the image, not a few changed pixels
    changed = (out - photo).abs().amax(dim=0) > 1 / 255
    assert changed.float().mean() > 0.2
    assert torch.equal(jndplug.JNDTarget.from_spec(TargetSpec(bound=bound, strength=0.0))(photo), photo)


def test_stricter_satisfied_user_ratio_gives_weaker_distortion(photo):
    # the SUR conditions the estimator: the directed target bounded by its map (the default bound,
    # the analytic profile, has no SUR)
    psnrs = [psnr(jndplug.JNDTarget.from_spec(TargetSpec(bound="estimator", sur=p))(photo), photo)
             for p in (0.5, 0.75, 0.95)]
    assert psnrs[0] < psnrs[1] < psnrs[2], psnrs
    # measured 32.691, 35.607 (the estimator's default ratio) and 37.678 dB on 2026-12-07: each ratio
    # still gives a distortion (the strictest is weaker, not gone), pinned to 0.1 dB as above
    assert psnrs == pytest.approx([32.691, 35.607, 37.678], abs=0.1)


@pytest.fixture(scope="module")
def photos():
    # three photographs of different kinds (portrait, street scene, coffee cup), halved as above
    return [jndplug.to_tensor(img[::2, ::2].copy()) for img in (skdata.astronaut(), skdata.chelsea(), skdata.coffee())]


@pytest.mark.parametrize("bound", [None, "estimator"], ids=["default", "estimator"])
def test_shipped_jnd_images_carry_no_colour_cast(photos, bound):
    target = jndplug.JNDTarget.from_spec(TargetSpec(bound=bound))
    for x in photos:
        y = (target(x) * 255).round() / 255  # as a user writes it: 8 bits
        shift = (y - x).mean(dim=(-2, -1)).abs().max() * 255
        assert shift <= 1.0, float(shift)


def test_shipped_jnd_map_follows_local_contrast(photos):
    from jndplug.bench.truth import masking

    target = jndplug.JNDTarget.from_spec(TargetSpec(bound="estimator"))  # the shipped weights' map
    rhos = []
    for x in photos:
        m = masking(jndplug.to_array(x), target.jnd_map(x)[0].numpy())
        rhos.append(m["spearman"])
        assert m["textured"] > m["flat"]  # more tolerance in texture than in flat regions
    assert np.mean(rhos) >= 0.3, rhos


@pytest.mark.parametrize("bound", [None, "estimator"], ids=["default", "estimator"])
def test_shipped_default_target_sits_near_the_visibility_line(photos, bound):
    """The default (directed, bounded by the analytic profile at 0.591) spends the budget people would
    not notice: SSIMULACRA 2 of its 8-bit target against the photo is near the side-by-side line of
    80 (Kodak24: 83.8 on average, 80.9 at worst, BENCHMARKS.md "Where the budget goes"; these three
    photos: 85.4 at worst, 90.0 on average, measured 2026-12-07), not at the 93 of the strength-1
    target of the estimator's map. So does the previous default, the directed target bounded by the
    shipped weights' map at strength 2 (Kodak24: 86.1 on average, 80.5 at worst)."""
    from jndplug.metrics.perceptual import ssimulacra2_score

    target = jndplug.JNDTarget() if bound is None else jndplug.JNDTarget.from_spec(TargetSpec(bound=bound))
    assert (target.kind, target.spec.bound, target.strength) == (
        ("directed", "profile", 0.591) if bound is None else ("directed", "estimator", 2.0))
    scores = []
    for x in photos:
        original = jndplug.to_array(x)
        scores.append(ssimulacra2_score(original, jndplug.to_array(target(x))))
    assert 75.0 <= min(scores) and float(np.mean(scores)) <= 92.0, scores
