"""Directed JND images through the BasicSR ``jnd_target`` block and the CompressAI training flags."""

import pytest
import torch

import jndplug
from jndplug.precompute import precompute, settings_of
from jndplug.spec import DEFAULT_GAIN, TargetSpecError

pytest.importorskip("jndplug.integrations.basicsr")  # first: makes basicsr importable
pytest.importorskip("compressai")

# the existing integration tests' tiny data and runners (fixtures and helpers only, not their tests)
from test_integration_basicsr import Spy, data, is_batch_of, make_opt, read_gt, run_pipeline  # noqa: E402,F401
from test_integration_compressai import PATCH, _Spy, _train  # noqa: E402
from test_integration_compressai import data as codec_data  # noqa: E402,F401

from jndplug.integrations.basicsr import JNDOptionError, check_options  # noqa: E402
from jndplug.integrations.compressai import CodecError  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# BasicSR

def test_block_selects_the_directed_image(data, estimator_file):
    from jndplug.integrations.basicsr.options import make_target

    cfg = check_options(make_opt(data, "d", {"estimator": str(estimator_file), "kind": "directed", "gain": 0.5}))
    assert cfg["kind"] == "directed" and cfg["gain"] == 0.5
    target = make_target(cfg)
    assert target.kind == "directed" and target.gain == 0.5
    opt = make_opt(data, "p")
    opt["jnd_target"] = {"estimator": str(estimator_file)}  # no kind: the default
    plain = check_options(opt)
    # the block's default follows JNDTarget's: the directed image at the default gain, written back resolved
    assert plain["kind"] == "directed" and plain["gain"] == DEFAULT_GAIN and make_target(plain).kind == "directed"
    seed = check_options(make_opt(data, "s", {"estimator": str(estimator_file), "kind": "jnd"}))
    assert make_target(seed).kind == "jnd" and make_target(seed).gain is None


@pytest.mark.parametrize("block, key, message", [
    ({"kind": "sharp"}, "jnd_target.kind", "must be directed or jnd"),
    ({"kind": "jnd", "gain": 0.5}, "jnd_target.gain", "applies to kind directed only"),
    ({"kind": "directed", "gain": -1}, "jnd_target.gain", "finite number >= 0"),
    ({"kind": "directed", "gain": "big"}, "jnd_target.gain", "must be a number"),
])
def test_block_explains_bad_kind_and_gain(data, estimator_file, block, key, message):
    with pytest.raises(JNDOptionError, match=message) as info:
        check_options(make_opt(data, "bad", {"estimator": str(estimator_file), **block}))
    assert info.value.key == key


def test_offline_folder_of_another_kind_is_refused(data, estimator_file, tmp_path):
    src = data / "train" / "hr"
    plain = tmp_path / "plain"
    precompute(src, plain, jndplug.JNDTarget(estimator_file, kind="jnd"), progress=False)
    opt = make_opt(data, "off", {"estimator": str(estimator_file), "mode": "offline", "source_gt": str(src),
                                 "kind": "directed", "gain": 0.5})
    opt["datasets"]["train"]["dataroot_gt"] = str(plain)
    with pytest.raises(JNDOptionError, match="jnd_target.kind: folder jnd, this run directed.*"
                                             "--kind directed --gain 0.5"):
        check_options(opt)
    directed_dir = tmp_path / "directed"
    precompute(src, directed_dir, jndplug.JNDTarget(estimator_file, kind="directed", gain=0.5), progress=False)
    opt["datasets"]["train"]["dataroot_gt"] = str(directed_dir)
    assert check_options(opt)["kind"] == "directed"
    opt["jnd_target"]["gain"] = 1.0
    with pytest.raises(JNDOptionError, match="jnd_target.gain: folder 0.5, this run 1"):
        check_options(opt)


def test_online_step_trains_on_the_directed_image(tmp_path, monkeypatch, data, estimator_file):
    spy = Spy(monkeypatch)
    opt = make_opt(data, "edsr_directed", {"estimator": str(estimator_file), "kind": "directed", "gain": 2.0},
                   total_iter=1, val=False)
    run_pipeline(monkeypatch, tmp_path, opt)
    target = jndplug.JNDTarget(estimator_file, kind="directed", gain=2.0)
    gts = torch.stack([read_gt(p) for p in sorted((data / "train" / "hr").iterdir())])
    want = torch.stack([target(g[None])[0] for g in gts])
    assert len(spy.loss_targets) == 1
    assert is_batch_of(spy.loss_targets[0], want) and not is_batch_of(spy.loss_targets[0], gts, tol=1e-3)


# ---------------------------------------------------------------------------------------------
# CompressAI

def test_codec_flags_train_on_the_directed_image(tmp_path, codec_data, estimator_file, monkeypatch):
    spy = _Spy(monkeypatch)
    _train(tmp_path, codec_data, "--jnd-target", "--jnd-estimator", estimator_file, "--jnd-kind", "directed",
           "--jnd-gain", "2", steps=1)
    target = jndplug.JNDTarget(estimator_file, kind="directed", gain=2.0)
    training = [c for c in spy.calls if c["training"]]
    assert training and training[0]["input"].shape[-2:] == (PATCH, PATCH)
    for c in training:
        torch.testing.assert_close(c["target"], target(c["input"]), rtol=0, atol=1e-6)
        assert (c["target"] - c["input"]).abs().max() > 1e-3
    ckpt = torch.load(tmp_path / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["jnd"] == {**settings_of(target), "mode": "online"} and ckpt["jnd"]["kind"] == "directed"


def test_codec_flags_are_checked(tmp_path, codec_data, estimator_file):
    with pytest.raises(CodecError, match="--jnd-kind without --jnd-target would be ignored"):
        _train(tmp_path, codec_data, "--jnd-kind", "jnd")
    with pytest.raises(TargetSpecError, match="--jnd-gain: applies to kind directed only"):
        _train(tmp_path, codec_data, "--jnd-target", "--jnd-estimator", estimator_file, "--jnd-kind", "jnd",
               "--jnd-gain", "1")
    jnd_dir = tmp_path / "jnd"
    precompute(codec_data, jnd_dir, jndplug.JNDTarget(estimator_file, kind="jnd"), progress=False)
    with pytest.raises(CodecError, match="--jnd-kind: folder jnd, this run directed"):
        _train(tmp_path / "r", codec_data, "--jnd-target", "--jnd-estimator", estimator_file, "--jnd-kind",
               "directed", "--jnd-mode", "offline", "--jnd-offline-dir", jnd_dir, steps=1)
