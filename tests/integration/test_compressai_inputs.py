"""CompressAI commands check every input before working, and never mix a new evaluation with an old one."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image

pytest.importorskip("compressai")

from jndplug.integrations.compressai import CodecError, build_model, load_codec  # noqa: E402
from jndplug.integrations.compressai.cli import evaluate_settings, train_settings  # noqa: E402
from jndplug.integrations.compressai.evaluate import decode_bitstream, evaluate, evaluate_image  # noqa: E402
from jndplug.integrations.compressai.train import train  # noqa: E402

MODEL = ["--model", "bmshj2018-factorized", "--quality", "1"]


def _save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def _truncated_jpeg(path, h=64, w=64):
    buf = io.BytesIO()
    Image.fromarray(make_image(h, w, seed=7)).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # the header says 64x64; the data stops


@pytest.fixture(scope="module")
def codec_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("codec") / "zoo-like.pth.tar"
    torch.save(build_model("bmshj2018-factorized", 1).state_dict(), path)  # CompressAI's own layout
    return path


def test_train_reports_every_bad_image_before_training(tmp_path):
    data = tmp_path / "data"
    for i in range(2):
        _save(data / f"good{i}.png", make_image(64, 64, seed=i))
    _truncated_jpeg(data / "cut.jpg")
    _save(data / "tiny.png", make_image(20, 64))
    (data / "text.png").write_text("not an image")
    with pytest.raises(CodecError, match=r"3 of 5 image\(s\) cannot be used") as err:
        train(train_settings([*MODEL, "--dataset", str(data), "--patch", "32", "--workers", "0", "--device", "cpu",
                              "--out", str(tmp_path / "run")]))
    for name in ("cut.jpg: not a readable image file", "tiny.png is 20x64", "text.png: not a readable"):
        assert name in str(err.value)
    assert not (tmp_path / "run").exists()


def _evaluate(data, out, codec_file, *extra):
    return evaluate(evaluate_settings([str(data), "--checkpoint", str(codec_file), *MODEL, "--out", str(out),
                                       *map(str, extra)]))


def test_evaluate_checks_every_image_before_coding(tmp_path, codec_file):
    data = tmp_path / "data"
    _save(data / "a.png", make_image(48, 48))
    _save(data / "b_tiny.png", make_image(12, 40))
    _truncated_jpeg(data / "c_cut.jpg")
    with pytest.raises(CodecError, match=r"2 of 3 image\(s\) cannot be used: .*b_tiny.png is 12x40, smaller than "
                                         r"16x16.*c_cut.jpg: not a readable image file"):
        _evaluate(data, tmp_path / "out", codec_file, "--save-bitstreams")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.*"))


def test_evaluate_into_earlier_results_needs_overwrite_and_clears_stale_files(tmp_path, codec_file):
    data = tmp_path / "data"
    _save(data / "a.png", make_image(48, 48, seed=1))
    _save(data / "b.png", make_image(48, 32, seed=2))
    out = tmp_path / "out"
    _evaluate(data, out, codec_file, "--save-bitstreams")
    run = out / "bitstreams" / "bmshj2018-factorized-q1"
    assert sorted(p.name for p in run.iterdir()) == ["a.jndc", "b.jndc"]
    (data / "b.png").unlink()
    with pytest.raises(CodecError, match=r"already holds results of bmshj2018-factorized-q1 .*add --overwrite"):
        _evaluate(data, out, codec_file, "--save-bitstreams")
    _evaluate(data, out, codec_file, "--save-bitstreams", "--overwrite")
    assert sorted(p.name for p in run.iterdir()) == ["a.jndc"]  # b's bitstream belonged to the earlier run
    assert not list(out.glob(".*"))
    # another label is another curve in the same folder, not an overwrite
    _evaluate(data, out, codec_file, "--label", "other")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_jndc_file_decodes_to_the_scored_reconstruction(codec_file, dtype):
    coder, *_ = load_codec(codec_file, "bmshj2018-factorized", 1)
    decoder, *_ = load_codec(codec_file, "bmshj2018-factorized", 1)
    array = make_image(40, 56, seed=3, dtype=dtype)
    record, data, reconstruction = evaluate_image(coder, array)
    decoded = decode_bitstream(decoder, data)
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, reconstruction)
    with pytest.raises(CodecError, match="truncated or corrupt .jndc file"):
        decode_bitstream(decoder, data[:-3])
    with pytest.raises(CodecError, match=r"not a jndplug CompressAI bitstream \(\.jndc\) file"):
        decode_bitstream(decoder, b"PK\x03\x04 something else")


def _train(data, out, *extra):
    return train(train_settings([*MODEL, "--dataset", str(data), "--patch", "32", "--batch", "2", "--workers", "0",
                                 "--device", "cpu", "--out", str(out), *map(str, extra)]))


def test_resume_takes_the_original_checkpoint_and_says_it_resumes(tmp_path, codec_file, capsys):
    data = tmp_path / "data"
    for i in range(2):
        _save(data / f"im{i}.png", make_image(48, 48, seed=i))
    out = tmp_path / "run"
    _train(data, out, "--checkpoint", codec_file, "--max-steps", "1")
    capsys.readouterr()
    _train(data, out, "--checkpoint", codec_file, "--resume", "--max-steps", "2")
    assert f"resuming {out / 'checkpoint.pth.tar'} at step 1" in capsys.readouterr().err
    _train(data, out, "--resume", "--max-steps", "3")  # without it too; the original stays on record
    other = tmp_path / "other.pth.tar"
    torch.save(build_model("bmshj2018-factorized", 1).state_dict(), other)
    with pytest.raises(CodecError, match=r"--checkpoint .*other.pth.tar is not what .* started from "
                                         r"\(--checkpoint .*zoo-like.pth.tar\)"):
        _train(data, out, "--checkpoint", other, "--resume", "--max-steps", "4")


def test_ctrl_c_in_training_prints_the_one_line_rerun_message(tmp_path, monkeypatch, capsys):
    from jndplug.integrations.compressai import cli

    def interrupted(settings):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train", interrupted)
    with pytest.raises(SystemExit) as exit_:
        cli.train_main([*MODEL, "--dataset", str(tmp_path), "--out", str(tmp_path / "run")])
    assert exit_.value.code == 130
    err = capsys.readouterr().err.strip()
    assert err == "interrupted; finished work is kept and the same command with --resume resumes"


# -- the command lines are their Settings' flags ----------------------------------------------------------------

def _hand_written_train_parser():
    """``train_parser`` as cli.py wrote it by hand before its flags came from ``TrainSettings``: the reference."""
    import argparse

    from jndplug.integrations.compressai import train as train_module
    from jndplug.integrations.compressai.codec import MODEL_NAMES
    from jndplug.integrations.compressai.train import MODES, TrainSettings
    from jndplug.spec import TargetSpec

    p = argparse.ArgumentParser(prog="python -m jndplug.integrations.compressai.train",
                                description=train_module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainSettings("", 0, "")
    p.add_argument("--model", required=True, help=f"CompressAI model: {', '.join(MODEL_NAMES)}")
    p.add_argument("--quality", type=int, required=True, help="zoo quality (1-8; 1-6 for cheng2020)")
    p.add_argument("--checkpoint", help="start from these weights (a CompressAI .pth.tar or a checkpoint of this "
                                        "command); without it training starts from scratch; with --resume, "
                                        "the run's original --checkpoint may be given again")
    p.add_argument("--pretrained", action="store_true", help="refused: the zoo download is not reachable")
    p.add_argument("--dataset", required=True, help="DIR/train (+ DIR/test), or a flat folder of training images")
    p.add_argument("--jnd-target", action="store_true", help="distortion against the JND image (else the original)")
    TargetSpec.add_arguments(p, prefix="jnd-")
    p.add_argument("--jnd-mode", choices=MODES, help="online (default): JND of each crop computed in the loop; "
                                                     "offline: read from --jnd-offline-dir")
    p.add_argument("--jnd-offline-dir", help="with --jnd-mode offline: the output of "
                                             "`jndplug precompute DATASET --out DIR` with the same target flags")
    p.add_argument("--jnd-tolerant", action="store_true",
                   help="instead of moving the target: MSE that ignores error within the per-pixel JND of the "
                        "original (jndplug.losses.JNDTolerantLoss with --jnd-estimator)")
    p.add_argument("--jnd-tolerance-scale", type=float, help="scale of the tolerance band (default 1)")
    p.add_argument("--lmbda", type=float, help="rate-distortion trade-off (default: CompressAI's for the quality)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps in total")
    p.add_argument("--batch", type=int, default=d.batch, help=f"batch size (default {d.batch})")
    p.add_argument("--test-batch", type=int, default=d.test_batch, help=f"test batch size (default {d.test_batch})")
    p.add_argument("--patch", type=int, default=d.patch, help="square training crop, a multiple of the model's "
                                                              f"downsampling factor (default {d.patch})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr:g})")
    p.add_argument("--aux-lr", type=float, default=d.aux_lr, help=f"auxiliary learning rate (default {d.aux_lr:g})")
    p.add_argument("--clip-max-norm", type=float, default=d.clip_max_norm, help="gradient clipping (0 disables)")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loading processes")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=argparse.SUPPRESS,  # was d.device: now computed with the settings, not the parser
                   help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--out", help="output folder (default: runs/MODEL-qQUALITY-(jnd|original))")
    p.add_argument("--save-every", type=int, default=d.save_every, help="also save the latest checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pth.tar")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    return p


def _hand_written_evaluate_parser():
    """``evaluate_parser`` as cli.py wrote it by hand before its flags came from ``EvalSettings``."""
    import argparse

    from jndplug.integrations.compressai import evaluate as evaluate_module
    from jndplug.integrations.compressai.codec import MODEL_NAMES

    p = argparse.ArgumentParser(prog="python -m jndplug.integrations.compressai.evaluate",
                                description=evaluate_module.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="folder of images (searched recursively) or one image file")
    p.add_argument("--checkpoint", required=True, help="a checkpoint of the train command or a CompressAI .pth.tar")
    p.add_argument("--model", help=f"needed for CompressAI's own files: {', '.join(MODEL_NAMES)}")
    p.add_argument("--quality", type=int, help="needed for CompressAI's own files")
    p.add_argument("--pretrained", action="store_true", help="refused: the zoo download is not reachable")
    p.add_argument("--out", required=True, help="folder for the JSON results and the RD plot")
    p.add_argument("--label", help="curve name in the RD plot (default: MODEL-jnd / MODEL-original / MODEL)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu; entropy coding itself "
                                                   "always runs on the CPU)")
    p.add_argument("--save-bitstreams", action="store_true", help="write OUT/bitstreams/LABEL-qQ/*.jndc")
    p.add_argument("--save-reconstructions", action="store_true", help="write OUT/reconstructions/LABEL-qQ/*.png")
    p.add_argument("--overwrite", action="store_true", help="replace the results of this label and quality that "
                                                            "OUT holds (its JSON, bitstreams and reconstructions)")
    return p


def _flags(p):
    from unit.test_bench_flags import _flags as flags  # the comparison every Settings-made command is held to

    return flags(p)


def _own_flags(settings_class):
    import argparse

    from jndplug.settings import add_settings_arguments

    p = argparse.ArgumentParser()
    add_settings_arguments(p, settings_class)
    return _flags(p)


def test_train_flags_are_unchanged_and_are_train_settings_fields():
    import argparse

    from jndplug.integrations.compressai.cli import train_parser
    from jndplug.integrations.compressai.train import TrainSettings
    from jndplug.spec import TargetSpec

    command = _flags(train_parser())
    assert command == _flags(_hand_written_train_parser())
    target = argparse.ArgumentParser()
    TargetSpec.add_arguments(target, prefix="jnd-")
    own = _own_flags(TrainSettings)
    assert all(f in command for f in own)
    # everything else is the command's two switches and the target's flags, which TargetSpec owns
    others = [f for f in command if f not in own]
    assert [f[0] for f in others[:2]] == [("--pretrained",), ("--jnd-target",)] and others[2:] == _flags(target)


def test_evaluate_flags_are_unchanged_and_are_eval_settings_fields():
    from jndplug.integrations.compressai.cli import evaluate_parser
    from jndplug.integrations.compressai.evaluate import EvalSettings

    command = _flags(evaluate_parser())
    assert command == _flags(_hand_written_evaluate_parser())
    own = _own_flags(EvalSettings)
    assert [f[0] for f in command if f not in own] == [("--pretrained",)] and all(f in command for f in own)


def test_omitted_flags_leave_the_python_defaults():
    from jndplug.integrations.compressai.evaluate import EvalSettings
    from jndplug.integrations.compressai.train import TrainSettings

    assert train_settings(["--model", "m", "--quality", "2", "--dataset", "d"]) == TrainSettings("m", 2, "d")
    assert train_settings(["--model", "m", "--quality", "2", "--dataset", "d", "--jnd-tolerant", "--jnd-estimator",
                           "e", "--jnd-tolerance-scale", "2"]) == \
        TrainSettings("m", 2, "d", jnd_tolerant=True, tolerance_estimator="e", tolerance_scale=2.0)
    assert evaluate_settings(["d", "--checkpoint", "c", "--out", "o"]) == EvalSettings("d", "c", "o")
