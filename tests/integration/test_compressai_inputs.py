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
