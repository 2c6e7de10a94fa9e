"""What `infer` and `precompute` read and write: every input accounted for, outputs lossless and distinct."""

import gc
import warnings

import numpy as np
import pytest
from PIL import Image

import jndplug
from conftest import make_image
from jndplug.errors import CorruptFileError, JNDPlugValueError
from jndplug.imageio import read_image, write_image
from jndplug.precompute import precompute


# ---- readers and weights files -------------------------------------------------------------------

def test_16_bit_png_reader_closes_its_file(tmp_path):
    path = tmp_path / "deep.png"
    write_image(path, make_image(20, 24, dtype=np.uint16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        read_image(path)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_foreign_file_named_safetensors_is_a_one_line_error_for_encoder_weights(tmp_path):
    junk = tmp_path / "backbone.safetensors"
    junk.write_bytes(b"this is plain text, not a safetensors file")
    with pytest.raises(CorruptFileError, match=r"backbone.safetensors: not a readable safetensors file"):
        jndplug.create_estimator("unet", encoder_weights=junk)


# ---- infer's flags and summary -------------------------------------------------------------------

def test_infer_weights_flag_points_to_estimator(tmp_path, image_folder, run_cli):
    r = run_cli("infer", image_folder / "a.png", "--out", tmp_path / "o.png", "--weights", "w.safetensors")
    assert r.returncode == 2
    assert "--weights" in r.stderr and "--estimator" in r.stderr


def test_infer_summary_names_the_comparison_file(tmp_path, image_folder, estimator_file, run_cli):
    r = run_cli("infer", image_folder / "a.png", "--out", tmp_path / "one.png", "--estimator", estimator_file,
                "--compare")
    assert r.returncode == 0, r.stderr
    assert str(tmp_path / "one_compare.png") in r.stdout


# ---- precompute: every input accounted for -------------------------------------------------------

def test_precompute_unreadable_file_is_a_per_file_error(tmp_path, image_folder, unet, monkeypatch):
    from pathlib import Path

    real = Path.read_bytes

    def denied(self):
        if self.name == "a.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    report = precompute(image_folder, tmp_path / "dst", jndplug.JNDTarget(unet), progress=False)
    assert sorted(report.written) == ["c.jpg", "sub/b.png"]
    assert list(report.failed) == ["a.png"] and "permission denied" in report.failed["a.png"].lower()


def test_precompute_reports_an_unreadable_sub_folder(tmp_path, image_folder, unet, monkeypatch):
    import os

    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = precompute(image_folder, tmp_path / "dst", jndplug.JNDTarget(unet), progress=False)
    assert sorted(report.written) == ["a.png", "c.jpg"]
    assert list(report.failed) == ["sub/"] and "permission denied" in report.failed["sub/"].lower()


def test_precompute_of_an_empty_folder_is_an_error(tmp_path, unet):
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    with pytest.raises(JNDPlugValueError, match=r"no images found under .*empty"):
        precompute(tmp_path / "empty", tmp_path / "dst", jndplug.JNDTarget(unet), progress=False)
    assert not (tmp_path / "dst").exists()


# ---- the offline-folder check both training adapters make ----------------------------------------

def _check(src, dst, target):
    from jndplug.precompute import PrecomputedFolderError, check_precomputed

    with pytest.raises(PrecomputedFolderError) as err:
        check_precomputed(src, dst, target)
    return str(err.value)


def test_offline_check_refuses_a_folder_partly_made_with_other_settings(tmp_path, image_folder, unet):
    import shlex
    import shutil

    from jndplug.cli import build_parser

    dst = tmp_path / "dst"
    precompute(image_folder, dst, jndplug.JNDTarget(unet, strength=1.0), progress=False)
    # a rerun with strength 2 that redid one image only (as an interrupted --overwrite run leaves it)
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(image_folder / "a.png", part / "a.png")
    precompute(part, dst, jndplug.JNDTarget(unet, strength=2.0), progress=False, overwrite=True)
    message = _check(image_folder, dst, jndplug.JNDTarget(unet, strength=2.0))
    assert "lacks the JND image of 2 image(s)" in message and "c.jpg, sub/b.png" in message
    command = message.split("`jndplug ")[1].split("`")[0]
    args = build_parser("precompute").parse_args(shlex.split(command))
    assert (args.src, args.out, args.strength, args.kind) == (str(image_folder), str(dst), 2.0, "directed")


def test_offline_check_notices_a_source_edited_after_precompute(tmp_path, image_folder, unet):
    from jndplug.precompute import check_precomputed

    dst = tmp_path / "dst"
    target = jndplug.JNDTarget(unet)
    precompute(image_folder, dst, target, progress=False)
    check_precomputed(image_folder, dst, target)  # complete and current
    Image.fromarray(make_image(40, 56, 99)).save(image_folder / "a.png")
    assert "outdated JND image (the source changed since) of 1 image(s)" in _check(image_folder, dst, target)


def test_sur_equal_to_the_default_is_the_same_setting_as_none(tmp_path, image_folder):
    from jndplug.precompute import check_precomputed
    from jndplug.spec import TargetSpec

    conditioned = jndplug.create_estimator("unet", sur_conditioning=True, default_sur=0.75).eval()

    def bounded_by_the_estimator(sur=None):  # the SUR applies where the estimator's map is the bound
        return jndplug.JNDTarget.from_spec(TargetSpec(estimator=conditioned, bound="estimator", sur=sur))

    dst = tmp_path / "dst"
    precompute(image_folder, dst, bounded_by_the_estimator(), progress=False)
    explicit = bounded_by_the_estimator(0.75)
    check_precomputed(image_folder, dst, explicit)
    again = precompute(image_folder, dst, explicit, progress=False)
    assert again.written == [] and len(again.skipped) == 3
    assert "sur: folder the estimator's default, this run 0.5" in _check(
        image_folder, dst, bounded_by_the_estimator(0.5))


def test_a_setting_the_kind_does_not_use_is_never_named(tmp_path, image_folder, unet):
    dst = tmp_path / "dst"
    precompute(image_folder, dst, jndplug.JNDTarget(unet, kind="directed", gain=3.0), progress=False)
    message = _check(image_folder, dst, jndplug.JNDTarget(unet, kind="jnd"))
    # the folder's strength is the default bound's (profile, 0.591)
    assert "kind: folder directed, this run jnd" in message and "strength: folder 0.591, this run 1" in message
    assert "gain" not in message.split("`")[0]


# ---- outputs: lossless and distinct --------------------------------------------------------------

def test_infer_refuses_a_jpeg_output_and_writes_a_jpegs_jnd_image_as_png(tmp_path, image_folder, estimator_file,
                                                                         run_cli):
    r = run_cli("infer", image_folder / "c.jpg", "--out", tmp_path / "c_jnd.jpg", "--estimator", estimator_file)
    assert r.returncode == 1 and "JPEG is lossy" in r.stderr and "c_jnd.png" in r.stderr
    assert not (tmp_path / "c_jnd.jpg").exists()
    r = run_cli("infer", image_folder / "c.jpg", "--out", f"{tmp_path}/into/", "--estimator", estimator_file)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "into").iterdir()] == ["c.png"]


def test_webp_is_written_losslessly(tmp_path):
    array = make_image(40, 56, seed=4)
    write_image(tmp_path / "x.webp", array)
    np.testing.assert_array_equal(read_image(tmp_path / "x.webp"), array)


def test_precompute_says_why_it_writes_jpeg(tmp_path, image_folder, unet):
    with pytest.warns(UserWarning, match=r"1 JPEG input\(s\): .*quality 100.*convert the source folder to PNG"):
        precompute(image_folder, tmp_path / "dst", jndplug.JNDTarget(unet), progress=False)


def test_infer_output_names_never_collide(tmp_path, image_folder, estimator_file, run_cli):
    Image.fromarray(make_image(40, 56, 8)).save(image_folder / "a_jndmap.png")
    before = {p: p.read_bytes() for p in image_folder.rglob("*") if p.is_file()}
    r = run_cli("infer", image_folder, "--out", tmp_path / "out", "--estimator", estimator_file, "--map")
    assert r.returncode == 1 and "would both write" in r.stderr and "a_jndmap.png" in r.stderr
    assert not (tmp_path / "out").exists()
    # a JPEG and a PNG of one name would both become <name>.png
    (image_folder / "a_jndmap.png").unlink()
    Image.fromarray(make_image(40, 56, 9)).save(image_folder / "a.jpg")
    r = run_cli("infer", image_folder, "--out", tmp_path / "out", "--estimator", estimator_file)
    assert r.returncode == 1 and "would both write" in r.stderr
    assert {p: p.read_bytes() for p in image_folder.rglob("*") if p.is_file() and p.name != "a.jpg"} == {
        p: b for p, b in before.items() if p.name != "a_jndmap.png"}


def test_infer_a_file_out_for_a_folder_input_is_an_error(tmp_path, image_folder, estimator_file, run_cli):
    r = run_cli("infer", image_folder, "--out", tmp_path / "single.png", "--estimator", estimator_file)
    assert r.returncode == 1 and "names a file" in r.stderr
    assert not (tmp_path / "single.png").exists()


def test_infer_rerun_removes_the_earlier_map_and_comparison(tmp_path, image_folder, estimator_file, unet, run_cli):
    r = run_cli("infer", image_folder / "a.png", "--out", tmp_path / "a.png", "--estimator", estimator_file,
                "--map", "--compare")
    assert r.returncode == 0, r.stderr
    other = tmp_path / "other.safetensors"
    jndplug.save_estimator(jndplug.create_estimator("unet"), other, {"training": "none: random, tests"})
    r = run_cli("infer", image_folder / "a.png", "--out", tmp_path / "a.png", "--estimator", other)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("a*.png")) == ["a.png"]
    assert "removed" in r.stdout
