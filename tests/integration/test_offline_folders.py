"""Offline training in both adapters goes through one check of the precomputed folder."""

import shutil

import pytest
from PIL import Image

import jndplug
from conftest import make_image
from jndplug.precompute import precompute


@pytest.fixture
def pairs(tmp_path):
    for sub in ("hr", "lr"):
        (tmp_path / sub).mkdir()
    for i in range(4):
        hr = Image.fromarray(make_image(64, 64, seed=i))
        hr.save(tmp_path / "hr" / f"{i:03d}.png")
        hr.resize((16, 16)).save(tmp_path / "lr" / f"{i:03d}.png")
    return tmp_path


def _basicsr_opt(pairs, dst, estimator_file, **block):
    return {"jnd_target": {"estimator": str(estimator_file), "mode": "offline", "source_gt": str(pairs / "hr"),
                           **block},
            "datasets": {"train": {"dataroot_gt": str(dst), "dataroot_lq": str(pairs / "lr")}}}


def test_basicsr_offline_notices_a_source_edited_after_precompute(pairs, estimator_file):
    from jndplug.integrations.basicsr import JNDOptionError, check_options

    dst = pairs / "hr_jnd"
    precompute(pairs / "hr", dst, jndplug.JNDTarget(estimator_file), progress=False)
    check_options(_basicsr_opt(pairs, dst, estimator_file))
    Image.fromarray(make_image(64, 64, seed=99)).save(pairs / "hr" / "002.png")
    with pytest.raises(JNDOptionError, match=r"datasets\.train\.dataroot_gt: .*outdated JND image .*002\.png"):
        check_options(_basicsr_opt(pairs, dst, estimator_file))


def test_basicsr_loads_the_estimator_once(pairs, estimator_file, monkeypatch):
    import jndplug.target
    from jndplug.integrations.basicsr import JNDOptionError, check_options
    from jndplug.integrations.basicsr.options import make_target

    from jndplug.spec import TargetSpec

    # bounded by the estimator's map: the estimator takes part (the default bound, the analytic profile, does not)
    dst = pairs / "hr_jnd"
    precompute(pairs / "hr", dst, jndplug.JNDTarget.from_spec(TargetSpec(estimator=estimator_file, bound="estimator",
                                                                         strength=1.5)), progress=False)
    loads = []
    real = jndplug.target.load_estimator
    monkeypatch.setattr(jndplug.target, "load_estimator", lambda *a, **k: loads.append(a) or real(*a, **k))
    cfg = check_options(_basicsr_opt(pairs, dst, estimator_file, strength=1.5, bound="estimator"))
    target = make_target(cfg)  # what the model hook does next
    assert len(loads) == 1 and target.strength == 1.5
    # the target comes from the spec the check validated, not from the block's values: a copy was never checked
    with pytest.raises(JNDOptionError, match=r"^jnd_target: was not checked: import jndplug.integrations.basicsr "):
        make_target(dict(cfg))


def test_compressai_offline_refuses_a_folder_partly_made_with_other_settings(pairs, estimator_file, tmp_path):
    pytest.importorskip("compressai")
    from jndplug.integrations.compressai import CodecError
    from jndplug.integrations.compressai.data import check_offline

    root, dst = pairs / "hr", tmp_path / "hr_jnd"
    precompute(root, dst, jndplug.JNDTarget(estimator_file, strength=1.0), progress=False)
    # an --overwrite run with strength 2 that was stopped after one image
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(root / "000.png", part / "000.png")
    precompute(part, dst, jndplug.JNDTarget(estimator_file, strength=2.0), progress=False, overwrite=True)
    files = sorted(root.glob("*.png"))
    with pytest.raises(CodecError, match=r"lacks the JND image of 3 image\(s\) .*001\.png"):
        check_offline(root, dst, files, jndplug.JNDTarget(estimator_file, strength=2.0))
