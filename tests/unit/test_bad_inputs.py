"""Bad inputs and faults: files that must be refused one by one, and outputs that must never hit inputs.

Each case is a row of docs/reliability.md.
"""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

import jndplug
from conftest import make_image
from jndplug.cli import main as cli_main
from jndplug.imageio import ImageReadError, read_image, write_image
from jndplug.precompute import precompute


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _with_exif(png: bytes, orientation: int) -> bytes:
    """A PNG file's bytes with an eXIf chunk (before IDAT, where OpenCV and Pillow look)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw = exif.tobytes().removeprefix(b"Exif\x00\x00")  # the chunk holds the bare TIFF structure
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + _png_chunk(b"eXIf", raw) + png[ihdr_end:]


def _header_only_png(width: int, height: int, bit_depth: int) -> bytes:
    """A PNG whose header claims width x height and whose pixel data is a few bytes: a bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def _wide_image():
    return make_image(24, 40, seed=5)  # not square, so a quarter turn shows in the shape


# ---- 1: outputs that are, or contain, the inputs ----------------------------------------------

def test_infer_refuses_outputs_that_are_or_contain_the_inputs(tmp_path, image_folder, estimator_file, capsys):
    before = {p: p.read_bytes() for p in image_folder.rglob("*") if p.is_file()}
    w = ["--estimator", str(estimator_file)]
    assert cli_main(["infer", str(image_folder), "--out", str(image_folder), *w]) == 1
    assert "is the input" in capsys.readouterr().err
    assert cli_main(["infer", str(image_folder / "a.png"), "--out", str(image_folder / "a.png"), *w]) == 1
    assert "is the input" in capsys.readouterr().err
    # a folder as output: the file would land on itself
    assert cli_main(["infer", str(image_folder / "a.png"), "--out", str(image_folder), *w]) == 1
    assert "is the input" in capsys.readouterr().err
    # the output folder holds the input folder: sub/sub/x.png would become sub/x.png
    assert cli_main(["infer", str(image_folder / "sub"), "--out", str(image_folder), *w]) == 1
    assert "contains the input" in capsys.readouterr().err
    # a side output on the input: the map of a.png is a_jndmap.png
    Image.fromarray(make_image(32, 32)).save(image_folder / "a_jndmap.png")
    before[image_folder / "a_jndmap.png"] = (image_folder / "a_jndmap.png").read_bytes()
    assert cli_main(["infer", str(image_folder / "a_jndmap.png"), "--out", str(image_folder / "a.png"), "--map",
                     *w]) == 1
    assert "is the input" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in image_folder.rglob("*") if p.is_file()} == before


def test_infer_into_a_subfolder_of_its_input_does_not_take_its_outputs_as_inputs(image_folder, estimator_file,
                                                                                  capsys):
    out = image_folder / "jnd"
    for _ in range(2):
        assert cli_main(["infer", str(image_folder), "--out", str(out), "--estimator", str(estimator_file)]) == 0
        assert capsys.readouterr().out.count("wrote ") == 3
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["a.png", "c.png", "sub/b.png"]


def test_precompute_refuses_a_destination_that_holds_its_source(image_folder, unet):
    with pytest.raises(ValueError, match="contains the input"):
        precompute(image_folder / "sub", image_folder, jndplug.JNDTarget(unet), progress=False)


# ---- 3: EXIF orientation ----------------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_opencv_and_pillow_apply_it(tmp_path, orientation):
    cv2 = pytest.importorskip("cv2")
    img = _wide_image()
    plain = tmp_path / "plain.png"
    Image.fromarray(img).save(plain)
    p8 = tmp_path / "eight.png"
    p8.write_bytes(_with_exif(plain.read_bytes(), orientation))
    with Image.open(p8) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    opencv = cv2.imread(str(p8), cv2.IMREAD_COLOR)[..., ::-1]  # what BasicSR's loader sees, as RGB
    assert np.array_equal(opencv, upright)
    assert np.array_equal(read_image(p8), upright)

    deep = img.astype(np.uint16) * 257
    plain16 = tmp_path / "plain16.png"
    write_image(plain16, deep)
    p16 = tmp_path / "sixteen.png"
    p16.write_bytes(_with_exif(plain16.read_bytes(), orientation))
    opencv16 = cv2.imread(str(p16), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)[..., ::-1]
    assert np.array_equal(read_image(p16), opencv16)
    assert np.array_equal(read_image(p16), upright.astype(np.uint16) * 257)

    tifffile = pytest.importorskip("tifffile")
    tif = tmp_path / "sixteen.tif"
    tifffile.imwrite(tif, deep, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    assert np.array_equal(read_image(tif), upright.astype(np.uint16) * 257)


def test_rotated_jpeg_gives_an_upright_jnd_image(tmp_path, unet):
    cv2 = pytest.importorskip("cv2")
    src = tmp_path / "src"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held upright: stored sideways, shown turned 90 degrees clockwise
    Image.fromarray(_wide_image()).save(src / "photo.jpg", quality=95, exif=exif.tobytes())
    truth = cv2.imread(str(src / "photo.jpg"), cv2.IMREAD_COLOR)
    assert truth.shape[:2] == (40, 24)
    report = precompute(src, tmp_path / "dst", jndplug.JNDTarget(unet), progress=False)
    assert report.written == ["photo.jpg"]
    out = tmp_path / "dst" / "photo.jpg"
    assert cv2.imread(str(out), cv2.IMREAD_COLOR).shape == truth.shape  # lines up with the ground truth
    with Image.open(out) as im:
        assert im.getexif().get(0x0112) is None  # written upright, nothing left to turn


# ---- 4: float and 32-bit integer TIFFs, 16-bit TIFFs in a mirror --------------------------------

def test_deep_tiffs_are_read_exactly_or_refused_clearly(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    gray = (np.arange(32 * 40).reshape(32, 40) * 50).astype(np.int32)  # up to 63950: fits 16 bits
    Image.fromarray(gray).save(tmp_path / "int32.tif")
    with Image.open(tmp_path / "int32.tif") as im:
        assert im.mode == "I"
    with pytest.warns(UserWarning, match="grayscale"):
        got = read_image(tmp_path / "int32.tif")
    assert got.dtype == np.uint16 and np.array_equal(got[..., 0], gray) and np.array_equal(got[..., 2], gray)

    Image.fromarray(gray * 4).save(tmp_path / "wide.tif")
    with pytest.raises(ImageReadError, match="do not fit 16 bits"):
        read_image(tmp_path / "wide.tif")

    Image.fromarray((gray / 64000).astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ImageReadError, match="floating-point"):
        read_image(tmp_path / "float.tif")
    tifffile.imwrite(tmp_path / "rgbfloat.tif", np.zeros((32, 40, 3), np.float32), photometric="rgb")
    with pytest.raises(ImageReadError, match="floating-point"):
        read_image(tmp_path / "rgbfloat.tif")

    tifffile.imwrite(tmp_path / "inverted.tif", gray.astype(np.uint16), photometric="miniswhite")
    with pytest.raises(ImageReadError, match="MINISWHITE"):
        read_image(tmp_path / "inverted.tif")  # white would be read as black

    rgb = make_image(32, 40, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb, photometric="rgb")
    assert np.array_equal(read_image(tmp_path / "rgb16.tif"), rgb)  # Pillow alone gives 8 bits
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_image(tmp_path / "planar.tif"), rgb)


def test_precompute_mirrors_16_bit_tiffs_file_for_file_and_a_rerun_skips_them(tmp_path, unet):
    tifffile = pytest.importorskip("tifffile")
    src = tmp_path / "src"
    src.mkdir()
    rgb = make_image(32, 40, dtype=np.uint16)
    tifffile.imwrite(src / "deep.tif", rgb, photometric="rgb")
    Image.fromarray((np.arange(32 * 40).reshape(32, 40) * 50).astype(np.int32)).save(src / "int32.tif")
    Image.fromarray(np.zeros((32, 40), np.float32)).save(src / "float.tif")
    target = jndplug.JNDTarget(unet)
    first = precompute(src, tmp_path / "dst", target, progress=False)
    assert sorted(first.written) == ["deep.tif", "int32.tif"]
    assert list(first.failed) == ["float.tif"] and "floating-point" in first.failed["float.tif"]
    files = sorted(p.name for p in (tmp_path / "dst").iterdir() if not p.name.startswith("."))
    assert files == ["deep.tif", "int32.tif"]
    out = read_image(tmp_path / "dst" / "deep.tif")
    assert out.dtype == np.uint16 and out.shape == rgb.shape
    again = precompute(src, tmp_path / "dst", target, progress=False)
    assert again.written == [] and sorted(again.skipped) == ["deep.tif", "int32.tif"]
    assert list(again.failed) == ["float.tif"]


# ---- 6 and 7: decompression bombs and corrupt files are per-file errors -----------------------

def test_pixel_limit_applies_to_every_read_path(tmp_path, monkeypatch):
    Image.fromarray(make_image(40, 50)).save(tmp_path / "eight.png")
    Image.fromarray(make_image(40, 50)).save(tmp_path / "eight.jpg")
    write_image(tmp_path / "sixteen.png", make_image(40, 50, dtype=np.uint16))
    monkeypatch.setenv("JNDPLUG_MAX_PIXELS", "1999")
    for name in ("eight.png", "eight.jpg", "sixteen.png"):
        with pytest.raises(ImageReadError, match=r"50x40 is 2,000 pixels, over the limit of 1,999.*JNDPLUG_MAX_PIXELS"):
            read_image(tmp_path / name)
    monkeypatch.setenv("JNDPLUG_MAX_PIXELS", "2000")
    assert read_image(tmp_path / "sixteen.png").shape == (40, 50, 3)
    monkeypatch.setenv("JNDPLUG_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="JNDPLUG_MAX_PIXELS='lots'"):
        read_image(tmp_path / "eight.png")


def test_bombs_are_refused_before_decoding(tmp_path, monkeypatch):
    # what the fault probe fed in: 20000x20000 in a file of a few hundred bytes
    (tmp_path / "bomb16.png").write_bytes(_header_only_png(20000, 20000, 16))
    (tmp_path / "bomb8.png").write_bytes(_header_only_png(20000, 20000, 8))
    for name in ("bomb16.png", "bomb8.png"):
        with pytest.raises(ImageReadError, match="400,000,000 pixels, over the limit"):
            read_image(tmp_path / name)
    # a larger limit lifts Pillow's own refusal too (then the broken pixel data is what fails)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    monkeypatch.setenv("JNDPLUG_MAX_PIXELS", str(10 ** 9))
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "bomb8.png")
    assert "over the limit" not in str(err.value) and "DecompressionBomb" not in str(err.value)


def _corrupt_16_bit_pngs(folder):
    good = folder / "good16.png"
    write_image(good, make_image(32, 32, dtype=np.uint16))
    data = good.read_bytes()
    idat = data.index(b"IDAT")
    flipped = bytearray(data)
    flipped[idat + 10] ^= 0xFF  # CRC no longer matches: png.ChunkError
    (folder / "crc16.png").write_bytes(bytes(flipped))
    (folder / "cut16.png").write_bytes(data[: idat + 20])  # truncated inside IDAT
    (folder / "noend16.png").write_bytes(data[:33])  # header only: png.FormatError
    return ["crc16.png", "cut16.png", "noend16.png"]


def test_corrupt_16_bit_pngs_are_read_errors(tmp_path):
    for name in _corrupt_16_bit_pngs(tmp_path):
        with pytest.raises(ImageReadError, match=f"{name}: not a readable image file"):
            read_image(tmp_path / name)


def test_folder_runs_skip_bombs_and_corrupt_files_and_finish(tmp_path, unet, estimator_file, capsys):
    src = tmp_path / "src"
    src.mkdir()
    bad = _corrupt_16_bit_pngs(src) + ["bomb16.png", "bomb8.png"]
    (src / "bomb16.png").write_bytes(_header_only_png(20000, 20000, 16))
    (src / "bomb8.png").write_bytes(_header_only_png(20000, 20000, 8))
    report = precompute(src, tmp_path / "dst", jndplug.JNDTarget(unet), progress=False)
    assert report.written == ["good16.png"] and sorted(report.failed) == sorted(bad)

    assert cli_main(["infer", str(src), "--out", str(tmp_path / "inferred"), "--estimator",
                     str(estimator_file)]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("wrote ") == 1
    assert all(f"{name}:" in captured.err for name in bad)


# ---- 10: temporaries of a killed run ----------------------------------------------------------

def test_precompute_sweeps_temporaries_a_killed_run_left(tmp_path, image_folder, unet):
    dst = tmp_path / "dst"
    (dst / "sub").mkdir(parents=True)
    own = [dst / ".a.png.k1ll3d_x.tmp", dst / "sub" / ".b.png.abcd1234.tmp"]
    old_other = dst / ".gone.png.zzzz9999.tmp"  # its source was deleted since; an hour old
    fresh_other = dst / ".gone.png.live0000.tmp"  # could be another rank's write in progress
    unrelated = dst / "notes.tmp"
    for p in own + [old_other, fresh_other, unrelated]:
        p.write_bytes(b"half an image")
    os.utime(old_other, (0, os.path.getmtime(old_other) - 3600))
    precompute(image_folder, dst, jndplug.JNDTarget(unet), progress=False)
    assert not any(p.exists() for p in own + [old_other])
    assert fresh_other.exists() and unrelated.exists()


def test_datagen_sweeps_temporaries_a_killed_run_left(tmp_path):
    from jndplug.datagen import build_dataset

    src = tmp_path / "photos"
    write_image(src / "a.png", make_image(54, 96, seed=1))
    out = tmp_path / "ds"
    (out / "distorted" / "photos_a").mkdir(parents=True)
    left = [out / ".manifest.json.q1w2e3r4.tmp", out / "distorted" / "photos_a" / ".3.png.zx12cv34.tmp"]
    for p in left:
        p.write_bytes(b"half")
    build_dataset(src, out, level_fn=lambda x, k: x * (1 - 0.02 * k), progress=False, min_side=32)
    assert not any(p.exists() for p in left)
    assert not list(out.rglob("*.tmp"))
