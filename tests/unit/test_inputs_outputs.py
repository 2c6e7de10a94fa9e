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
