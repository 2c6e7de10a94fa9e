"""CompressAI integration: real compressai models, real entropy coding, tiny images, a few steps on CPU."""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PYTHON, make_image
from PIL import Image

pytest.importorskip("compressai")

from compressai.losses import RateDistortionLoss  # noqa: E402
from compressai.models import FactorizedPrior  # noqa: E402

import jndplug  # noqa: E402
from jndplug.cli import build_parser as cli_parser  # noqa: E402
from jndplug.imageio import array_to_tensor, read_image, tensor_to_array  # noqa: E402
from jndplug.integrations.compressai import (CodecError, build_model, load_codec, load_weights,  # noqa: E402
                                            state_dict_of)
from jndplug.integrations.compressai.cli import evaluate_settings, train_settings  # noqa: E402
from jndplug.integrations.compressai.evaluate import decode, encode, evaluate, metrics, unpack_bitstream  # noqa: E402
from jndplug.integrations.compressai.steps import make_optimizers, train_step  # noqa: E402
from jndplug.integrations.compressai.train import TrainSettings, train  # noqa: E402
from jndplug.precompute import precompute, settings_of  # noqa: E402
from jndplug.spec import TargetSpec, TargetSpecError  # noqa: E402


PATCH = 32  # training crops: the smallest multiple of bmshj2018-factorized's downsampling factor, x2


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """CompressAI's layout: three 80x96 training images and one 72x64 test image."""
    root = tmp_path_factory.mktemp("data")
    for i in range(3):
        _save(root / "train" / f"img{i}.png", make_image(80, 96, seed=10 + i))
    _save(root / "test" / "t.png", make_image(72, 64, seed=20))
    return root


def _train(tmp, data, *extra, steps=2):
    return train(train_settings(
        ["--model", "bmshj2018-factorized", "--quality", "1", "--dataset", str(data), "--patch", str(PATCH),
         "--batch", "2", "--test-batch", "2", "--workers", "0", "--device", "cpu",
         "--max-steps", str(steps), "--out", str(tmp), *map(str, extra)]))


class _Spy:
    """Records what the model sees and what the rate-distortion loss compares its output with."""

    def __init__(self, mp):
        self.calls = []
        forward, loss = FactorizedPrior.forward, RateDistortionLoss.forward

        def spy_forward(model, x):
            self.calls.append({"input": x.detach().clone(), "training": model.training})
            return forward(model, x)

        def spy_loss(criterion, output, target):
            self.calls[-1]["target"] = target.detach().clone()
            return loss(criterion, output, target)

        mp.setattr(FactorizedPrior, "forward", spy_forward)
        mp.setattr(RateDistortionLoss, "forward", spy_loss)


@pytest.fixture(scope="module")
def online_run(tmp_path_factory, data, estimator_file):
    save_dir = tmp_path_factory.mktemp("online")
    with pytest.MonkeyPatch.context() as mp:
        spy = _Spy(mp)
        # 2 steps = one epoch of 3 images in batches of 2, so the test pass runs too
        _train(save_dir, data, "--jnd-target", "--jnd-estimator", estimator_file)
    return save_dir, spy.calls


def test_online_training_uses_the_jnd_image_as_target(online_run, estimator_file):
    save_dir, calls = online_run
    target = jndplug.JNDTarget(estimator_file)
    assert [c["training"] for c in calls] == [True, True, False]  # 2 training steps, 1 test batch
    for c in calls:
        assert c["input"].shape[-2:] == (PATCH, PATCH)
        torch.testing.assert_close(c["target"], target(c["input"]), rtol=0, atol=1e-6)
        assert (c["target"] - c["input"]).abs().max() > 1e-3  # the JND image, not the original
    history = json.loads((save_dir / "history.json").read_text())
    assert len(history) == 1 and history[0]["step"] == 2 and "test_loss" in history[0]
    ckpt = torch.load(save_dir / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["jnd"] == {**settings_of(target), "mode": "online"}
    assert ckpt["lmbda"] == 0.0018 and ckpt["progress"]["step"] == 2
    assert {"optimizer", "aux_optimizer", "lr_scheduler", "rng"} <= set(ckpt)
    assert (save_dir / "checkpoint_best_loss.pth.tar").is_file() and (save_dir / "model.pth.tar").is_file()


def test_baseline_without_jnd_target_uses_the_original(tmp_path, data, monkeypatch):
    spy = _Spy(monkeypatch)
    _train(tmp_path, data, steps=1)
    assert spy.calls and all(torch.equal(c["target"], c["input"]) for c in spy.calls)


def _locate(crop, originals):
    """Which original image holds ``crop``, and where (exact match)."""
    for path, img in originals.items():
        h, w = img.shape[-2:]
        for top in range(h - PATCH + 1):
            for left in range(w - PATCH + 1):
                if torch.equal(img[:, top:top + PATCH, left:left + PATCH], crop):
                    return path, top, left
    raise AssertionError("crop not found in any original")


def test_offline_training_uses_the_same_crop_of_the_precomputed_jnd(tmp_path, data, estimator_file, monkeypatch):
    jnd_dir = tmp_path / "jnd"
    # the seed paper's image: the random test estimator changes every crop measurably
    report = precompute(data, jnd_dir, jndplug.JNDTarget(estimator_file, kind="jnd"), progress=False)
    assert len(report.written) == 4
    spy = _Spy(monkeypatch)
    _train(tmp_path / "run", data, "--jnd-target", "--jnd-estimator", estimator_file, "--jnd-kind", "jnd",
           "--jnd-mode", "offline", "--jnd-offline-dir", jnd_dir, steps=1)
    originals = {p: array_to_tensor(read_image(p)) for p in sorted((data / "train").glob("*.png"))}
    training = [c for c in spy.calls if c["training"]]
    assert len(training) == 1
    for x, y in zip(training[0]["input"], training[0]["target"]):
        path, top, left = _locate(x, originals)
        jnd = array_to_tensor(read_image(jnd_dir / path.relative_to(data)))
        assert torch.equal(y, jnd[:, top:top + PATCH, left:left + PATCH])
        assert not torch.equal(y, x)

    # a folder precomputed with other settings is refused, naming only the differing values, and the
    # precompute command that makes a matching folder
    with pytest.raises(CodecError, match=r"\(--jnd-strength: folder 1, this run 0\.5\)") as err:
        _train(tmp_path / "run2", data, "--jnd-target", "--jnd-estimator", estimator_file, "--jnd-strength", "0.5",
               "--jnd-kind", "jnd", "--jnd-mode", "offline", "--jnd-offline-dir", jnd_dir, steps=1)
    command = str(err.value).split("`jndplug ")[1].split("`")[0]
    args = cli_parser("precompute").parse_args(shlex.split(command))
    assert (args.src, args.out, args.overwrite) == (str(data), str(jnd_dir), True)
    assert TargetSpec.from_args(args) == TargetSpec(str(estimator_file), strength=0.5, kind="jnd")
    # the default kind on a folder made with kind jnd: the kind's resolved defaults (the default bound,
    # the analytic profile, at 0.591) are named, a setting kind jnd does not use (gain) is not
    with pytest.raises(CodecError, match=r"\(--jnd-strength: folder 1, this run 0\.591; --jnd-kind: folder jnd, "
                                         r"this run directed\)") as err:
        _train(tmp_path / "run2", data, "--jnd-target", "--jnd-estimator", estimator_file,
               "--jnd-mode", "offline", "--jnd-offline-dir", jnd_dir, steps=1)
    assert "--strength 0.591 --kind directed --gain 1 --bound profile" in str(err.value)
    (jnd_dir / "train" / "img1.png").unlink()
    with pytest.raises(CodecError, match="lacks the JND image of 1 image.*train/img1.png"):
        _train(tmp_path / "run3", data, "--jnd-target", "--jnd-estimator", estimator_file, "--jnd-kind", "jnd",
               "--jnd-mode", "offline", "--jnd-offline-dir", jnd_dir, steps=1)


def test_resume_continues_exactly(tmp_path, data):
    # 3 steps stop mid-way through epoch 1 (2 steps per epoch); resuming to 4 must equal 4 straight
    straight = torch.load(_train(tmp_path / "straight", data, steps=4) / "checkpoint.pth.tar", weights_only=True)
    _train(tmp_path / "split", data, steps=3)
    first = torch.load(tmp_path / "split" / "checkpoint.pth.tar", weights_only=True)
    assert first["progress"]["step"] == 3 and first["progress"]["epoch"] == 1
    _train(tmp_path / "split", data, "--resume", steps=4)
    resumed = torch.load(tmp_path / "split" / "checkpoint.pth.tar", weights_only=True)
    assert resumed["progress"]["step"] == 4 and resumed["progress"]["epoch"] == 2
    for k, v in straight["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    torch.testing.assert_close(resumed["optimizer"]["state"], straight["optimizer"]["state"], rtol=0, atol=0)
    assert (json.loads((tmp_path / "split" / "history.json").read_text())
            == json.loads((tmp_path / "straight" / "history.json").read_text()))

    with pytest.raises(CodecError, match=r"other settings \(lmbda: 0.0018 there, 0.01 now\)"):
        _train(tmp_path / "split", data, "--resume", "--lmbda", "0.01", steps=5)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        _train(tmp_path / "nothing", data, "--resume")


def test_fine_tune_from_checkpoint_and_formats(tmp_path, data, online_run):
    save_dir, _ = online_run
    trained = torch.load(save_dir / "model.pth.tar", weights_only=True)["state_dict"]
    # CompressAI's files: a raw state dict, possibly saved from DataParallel
    raw = tmp_path / "raw.pth.tar"
    torch.save({f"module.{k}": v for k, v in trained.items()}, raw)
    out = _train(tmp_path / "ft", data, "--checkpoint", raw, steps=1)
    tuned = torch.load(out / "checkpoint.pth.tar", weights_only=True)
    assert tuned["progress"]["step"] == 1
    assert not torch.equal(tuned["state_dict"]["g_a.0.weight"], trained["g_a.0.weight"])  # it trained from there
    # or {"state_dict": ...}, as CompressAI's example training saves them
    model = build_model("bmshj2018-factorized", 1)
    load_weights(model, state_dict_of({"state_dict": trained}), "bmshj2018-factorized", 1)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018",
                                  "cheng2020-anchor"])
def test_each_model_trains_and_codes(name, estimator_file):
    # the training step and the entropy coding of train.py / evaluate.py, without their file output
    torch.manual_seed(0)
    model = build_model(name, 1)
    x = array_to_tensor(make_image(64, 64, seed=30))[None]
    optimizers = make_optimizers(model, 1e-4, 1e-3)
    values = train_step(model, RateDistortionLoss(lmbda=0.0018), optimizers, x,
                        jndplug.JNDTarget(estimator_file)(x), clip_max_norm=1.0)
    assert all(np.isfinite(v) for v in values.values()) and values["bpp_loss"] > 0
    model.eval()
    model.update(force=True)
    with torch.no_grad():
        z = array_to_tensor(make_image(64, 80, seed=31))[None]  # padded to 64x128 (or 64x96), cropped back
        strings, shape = encode(model, z)
        y = decode(model, strings, shape, 64, 80)
    assert y.shape == z.shape and sum(len(s) for g in strings for s in g) > 0


@pytest.fixture(scope="module")
def eval_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("kodak-like")
    _save(root / "big.png", make_image(176, 200, seed=40))  # large enough for MS-SSIM
    _save(root / "sub" / "odd.png", make_image(40, 56, seed=41))  # not a multiple of 16: padded
    return root


def test_evaluate_reports_real_bitstreams(tmp_path, online_run, eval_images):
    save_dir, _ = online_run
    out = tmp_path / "results"
    settings = evaluate_settings([str(eval_images), "--checkpoint", str(save_dir / "model.pth.tar"),
                                  "--out", str(out), "--save-bitstreams", "--save-reconstructions"])
    result = json.loads(evaluate(settings).read_text())
    assert result["label"] == "bmshj2018-factorized-jnd" and result["quality"] == 1
    records = {r["file"]: r for r in result["images"]}
    assert set(records) == {"big.png", "sub/odd.png"}

    # decode the written bitstreams with a separately loaded model: they must give exactly the
    # reconstruction whose metrics were reported, and their size must be the reported bpp
    decoder, *_ = load_codec(save_dir / "model.pth.tar")
    for rel, rec in records.items():
        stem = rel.rsplit(".", 1)[0]
        data = (out / "bitstreams" / "bmshj2018-factorized-jnd-q1" / f"{stem}.jndc").read_bytes()
        strings, shape, h, w = unpack_bitstream(data)
        assert (h, w) == (rec["height"], rec["width"])
        assert sum(len(s) for g in strings for s in g) == rec["bytes"]
        assert rec["bpp"] == pytest.approx(rec["bytes"] * 8 / (h * w))
        with torch.no_grad():
            decoded = tensor_to_array(decode(decoder, strings, shape, h, w)[0])
        saved = read_image(out / "reconstructions" / "bmshj2018-factorized-jnd-q1" / f"{stem}.png")
        np.testing.assert_array_equal(decoded, saved)
        original = read_image(eval_images / rel)
        m = metrics(array_to_tensor(original), array_to_tensor(decoded))
        assert rec["psnr"] == pytest.approx(m["psnr"], abs=1e-9)
        assert rec["psnr"] == pytest.approx(10 * np.log10(255**2 / np.mean((original / 1.0 - decoded) ** 2)))
    assert records["big.png"]["ms_ssim"] is not None and records["sub/odd.png"]["ms_ssim"] is None
    assert result["mean"]["bpp"] == pytest.approx(np.mean([r["bpp"] for r in records.values()]))
    assert result["mean"]["ms_ssim"] is None  # undefined when one image is too small for it

    # a second curve in the same folder: the RD plot is redrawn from both results
    evaluate(evaluate_settings([str(eval_images / "big.png"), "--checkpoint", str(save_dir / "model.pth.tar"),
                                "--out", str(out), "--label", "again"]))
    assert sorted(p.name for p in out.glob("*.json")) == ["again-q1.json", "bmshj2018-factorized-jnd-q1.json"]
    with Image.open(out / "rd.png") as im:
        assert im.format == "PNG" and im.width > 300


def test_bad_input_is_explained(tmp_path, data, online_run, estimator_file):
    save_dir, _ = online_run
    with pytest.raises(CodecError, match="unknown CompressAI model 'bmshj2018'.*bmshj2018-factorized"):
        _train(tmp_path, data, "--model", "bmshj2018")
    with pytest.raises(CodecError, match="variable-rate models are not supported"):
        _train(tmp_path, data, "--model", "mbt2018-vbr")
    with pytest.raises(CodecError, match="quality 7 is out of range for cheng2020-anchor: use 1..6"):
        _train(tmp_path, data, "--model", "cheng2020-anchor", "--quality", "7")
    with pytest.raises(CodecError, match="zoo.*not reachable.*--checkpoint FILE"):
        _train(tmp_path, data, "--pretrained")
    with pytest.raises(CodecError, match="--patch 40 must be a multiple of 16"):
        _train(tmp_path, data, "--patch", "40")
    with pytest.raises(CodecError, match=r"img0.png is 80x96, smaller than the 96x96 training crop \(--patch\)"):
        _train(tmp_path, data, "--patch", "96")
    with pytest.raises(TargetSpecError, match="--jnd-strength: must be a finite number >= 0"):
        _train(tmp_path, data, "--jnd-target", "--jnd-estimator", estimator_file, "--jnd-strength", "-1")
    with pytest.raises(CodecError, match="needs --jnd-offline-dir"):
        _train(tmp_path, data, "--jnd-target", "--jnd-mode", "offline")

    # weights of another architecture, or of another quality, are named
    hyper = tmp_path / "hyper.pth.tar"
    torch.save({"state_dict": build_model("bmshj2018-hyperprior", 2).state_dict()}, hyper)
    with pytest.raises(CodecError, match=r"not a bmshj2018-factorized checkpoint \(it looks like "
                                         r"bmshj2018-hyperprior quality 1/2/3/4/5\).*h_a"):
        _train(tmp_path, data, "--checkpoint", hyper)
    wide = tmp_path / "wide.pth.tar"
    torch.save(build_model("bmshj2018-factorized", 6).state_dict(), wide)
    with pytest.raises(CodecError, match="does not fit bmshj2018-factorized at quality 1; its channel widths are "
                                         "those of bmshj2018-factorized quality 6/7/8"):
        _train(tmp_path, data, "--checkpoint", wide)
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CodecError, match="garbage.pth.tar: not a readable PyTorch checkpoint"):
        _train(tmp_path, data, "--checkpoint", garbage)
    with pytest.raises(CodecError, match="does not record its model and quality"):
        load_codec(wide)
    with pytest.raises(CodecError, match="was trained as model 'bmshj2018-factorized', not 'mbt2018'"):
        load_codec(save_dir / "model.pth.tar", "mbt2018")

    # an image smaller than the downsampling factor, in evaluation
    _save(tmp_path / "tiny" / "tiny.png", make_image(12, 40, seed=50))
    with pytest.raises(CodecError, match="tiny.png is 12x40, smaller than 16x16"):
        evaluate(evaluate_settings([str(tmp_path / "tiny"), "--checkpoint", str(save_dir / "model.pth.tar"),
                                    "--out", str(tmp_path / "o")]))


@pytest.mark.parametrize("extra, message", [
    (["--jnd-strength", "0.5"], "--jnd-strength without --jnd-target would be ignored"),
    (["--jnd-estimator", "x.safetensors", "--jnd-sur", "0.9"], "--jnd-estimator, --jnd-sur without --jnd-target"),
    (["--jnd-mode", "offline"], "--jnd-mode without --jnd-target"),
    (["--jnd-tolerant", "--jnd-strength", "0.5"], "--jnd-strength applies to --jnd-target only"),
    (["--jnd-tolerant", "--jnd-strength", "0.5", "--jnd-kind", "jnd"],
     "--jnd-strength, --jnd-kind apply to --jnd-target only"),
    (["--jnd-target", "--jnd-tolerance-scale", "2"], "--jnd-tolerance-scale applies to --jnd-tolerant only"),
])
def test_jnd_flags_that_would_be_ignored_are_refused(tmp_path, data, extra, message):
    with pytest.raises(CodecError, match=re.escape(message)):
        _train(tmp_path, data, *extra)
    assert not tmp_path.joinpath("checkpoint.pth.tar").exists()


def test_max_steps_mid_epoch_writes_history_and_a_summary(tmp_path, data, capsys):
    _train(tmp_path, data, steps=1)  # 1 of epoch 0's 2 steps
    err = capsys.readouterr().err
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 1 and history[0]["partial"] is True and history[0]["epoch_steps"] == 1
    assert history[0]["step"] == 1 and "test_loss" in history[0] and "train_loss" in history[0]
    assert "starts from random weights" in err  # no --checkpoint: said, not silent
    assert "stopped at --max-steps 1 (epoch 0, step 1 of 2)" in err
    assert f"wrote {tmp_path / 'model.pth.tar'}" in err
    assert "epoch 0:  50%" in err and "1/2" in err  # the bar counts the step the run stopped on


def test_command_line_errors_are_one_line(tmp_path, data):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([PYTHON, "-m", "jndplug.integrations.compressai.train", "--model", "cheng2020-anchor",
                           "--quality", "8", "--dataset", str(data), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: quality 8 is out of range for cheng2020-anchor: use 1..6")


def test_example_runs(tmp_path, data, estimator_file):
    _save(tmp_path / "eval" / "e.png", make_image(64, 96, seed=60))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    example = Path(__file__).resolve().parents[2] / "examples" / "compressai_finetune.py"
    proc = subprocess.run([PYTHON, str(example), "--train", str(data / "train"), "--eval", str(tmp_path / "eval"),
                           "--estimator", str(estimator_file), "--steps", "1", "--batch", "1", "--patch", "64",
                           "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "step 0: loss" in proc.stdout and "e.png:" in proc.stdout and "bpp, PSNR" in proc.stdout
    assert "no --checkpoint, so bmshj2018-hyperprior starts from random weights" in proc.stderr


def test_jnd_tolerant_distortion(tmp_path, data, estimator_file):
    """--jnd-tolerant keeps CompressAI's rate term and forgives error inside the original's JND band."""
    from jndplug.integrations.compressai.train import JNDTolerantRateDistortionLoss
    from jndplug.losses import JNDTolerantLoss

    crit = JNDTolerantRateDistortionLoss(0.01, str(estimator_file))
    x = torch.rand(2, 3, 32, 32)
    likelihoods = {"y": torch.full((2, 8, 2, 2), 0.5)}
    exact = crit({"x_hat": x, "likelihoods": likelihoods}, x)
    assert float(exact["mse_loss"]) == 0.0
    assert float(exact["loss"]) == pytest.approx(float(exact["bpp_loss"]))
    off = crit({"x_hat": (x + 0.3).clamp(0, 1), "likelihoods": likelihoods}, x)
    expected = JNDTolerantLoss(str(estimator_file), kind="l2")((x + 0.3).clamp(0, 1), x)
    assert float(off["mse_loss"]) == pytest.approx(float(expected)) and float(off["mse_loss"]) > 0
    assert float(off["loss"]) == pytest.approx(0.01 * 255**2 * float(expected) + float(off["bpp_loss"]), rel=1e-5)
    _train(tmp_path / "tol", data, "--jnd-tolerant", "--jnd-estimator", estimator_file)
    assert (tmp_path / "tol" / "checkpoint.pth.tar").is_file()
    with pytest.raises(CodecError, match="alternatives"):
        _train(tmp_path / "both", data, "--jnd-tolerant", "--jnd-target", "--jnd-estimator", estimator_file)


@pytest.mark.parametrize("bound", [None, "estimator"])  # the default bound (the analytic profile), the estimator's map
def test_header_logs_the_resolved_target(tmp_path, data, estimator_file, capsys, bound):
    _train(tmp_path, data, "--jnd-target", "--jnd-estimator", estimator_file,
           *(["--jnd-bound", bound] if bound else []), steps=1)
    err = capsys.readouterr().err
    spec = TargetSpec(str(estimator_file), bound=bound)
    # the kind, the effective gain and the SUR (where the estimator takes part), as the spec resolves
    # them; never "gain default"
    assert f"target: {spec.describe()}, computed online" in err and "gain default" not in err
    if bound == "estimator":
        assert "directed JND image (gain 1, bound estimator)" in err and "strength 2, SUR " in err
    else:
        assert "target: directed JND image (gain 1), strength 0.591, computed online" in err


def test_a_rerun_into_a_previous_run_needs_resume_or_overwrite(tmp_path, data):
    _train(tmp_path, data, steps=1)
    before = (tmp_path / "checkpoint.pth.tar").read_bytes()
    with pytest.raises(CodecError, match=r"holds a previous run \(checkpoint.pth.tar, history.json\): add --resume "
                                         r"to continue it, choose another --out, or add --overwrite"):
        _train(tmp_path, data, steps=1)
    assert (tmp_path / "checkpoint.pth.tar").read_bytes() == before  # nothing replaced
    _train(tmp_path, data, "--overwrite", steps=1)


def test_offline_dir_and_mode_go_together(tmp_path, data, estimator_file):
    with pytest.raises(CodecError, match=r"--jnd-offline-dir .* is read only in offline mode: add --jnd-mode offline"):
        _train(tmp_path, data, "--jnd-target", "--jnd-estimator", estimator_file, "--jnd-offline-dir", tmp_path)
    with pytest.raises(CodecError, match="--jnd-mode offline needs --jnd-offline-dir"):
        _train(tmp_path, data, "--jnd-target", "--jnd-estimator", estimator_file, "--jnd-mode", "offline")


def test_dataset_that_is_a_file_is_named_as_such(tmp_path, data):
    with pytest.raises(CodecError, match="img0.png is a file; it must be a folder"):
        _train(tmp_path, data / "train" / "img0.png")


def test_resume_mismatch_names_only_the_differing_keys(tmp_path, data, estimator_file):
    _train(tmp_path, data, "--jnd-target", "--jnd-estimator", estimator_file, steps=1)
    # trained with the default target: bound profile at 0.591
    with pytest.raises(CodecError, match=r"other settings \(jnd\.strength: 0\.591 there, 0\.5 now\)") as err:
        _train(tmp_path, data, "--jnd-target", "--jnd-estimator", estimator_file, "--jnd-strength", "0.5",
               "--resume", steps=2)
    assert "fingerprint" not in str(err.value) and "{" not in str(err.value)


def test_training_is_callable_from_python(tmp_path, data, estimator_file):
    spec = TargetSpec(str(estimator_file), kind="jnd")
    out = train(TrainSettings("bmshj2018-factorized", 1, str(data), out=str(tmp_path), jnd=spec, patch=PATCH,
                              batch=2, test_batch=2, workers=0, device="cpu", max_steps=1))
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["jnd"]["kind"] == "jnd" and ckpt["settings"]["jnd"]["kind"] == "jnd"


def test_help_ends_without_a_warning():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([PYTHON, "-m", "jndplug.integrations.compressai.train", "--help"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "--jnd-kind" in proc.stdout and "--jnd-gain" in proc.stdout
    assert proc.stderr == ""
