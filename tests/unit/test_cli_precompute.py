"""The command line and folder pre-computation: resume, atomicity, sharding."""

import json

import numpy as np
import pytest
from PIL import Image

import jndplug
from conftest import make_image
from jndplug.imageio import read_image
from jndplug.precompute import LOG_DIR, MANIFEST, precompute, read_manifest, shard


def test_infer_file_folder_map_compare(tmp_path, image_folder, estimator_file, run_cli):
    r = run_cli("infer", image_folder / "a.png", "--out", tmp_path / "one.png", "--estimator", estimator_file,
                "--map", "--compare")
    assert r.returncode == 0, r.stderr
    out = read_image(tmp_path / "one.png")
    assert out.shape == read_image(image_folder / "a.png").shape
    assert (tmp_path / "one_jndmap.png").is_file() and (tmp_path / "one_compare.png").is_file()

    r = run_cli("infer", image_folder, "--out", tmp_path / "all", "--estimator", estimator_file, "--strength", "0.5")
    assert r.returncode == 0, r.stderr
    written = sorted(p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all").rglob("*.*"))
    assert written == ["a.png", "c.png", "sub/b.png"]  # the JPEG's JND image as PNG: lossless


def test_infer_keeps_16_bit(tmp_path, estimator_file, run_cli):
    from jndplug.imageio import write_image

    src = tmp_path / "deep.png"
    deep = make_image(40, 40, dtype=np.uint16)
    write_image(src, deep)
    assert np.array_equal(read_image(src), deep)
    r = run_cli("infer", src, "--out", tmp_path / "out.png", "--estimator", estimator_file)
    assert r.returncode == 0, r.stderr
    out = read_image(tmp_path / "out.png")
    assert out.dtype == np.uint16 and out.shape == (40, 40, 3)


def test_infer_bad_files_are_reported_and_write_nothing(tmp_path, image_folder, estimator_file, run_cli):
    (image_folder / "broken.png").write_bytes(b"not an image at all")
    Image.fromarray(make_image(10, 40)).save(image_folder / "tiny.png")
    Image.fromarray(make_image(40, 40)[..., 0]).save(image_folder / "gray.png")
    r = run_cli("infer", image_folder, "--out", tmp_path / "out", "--estimator", estimator_file)
    assert r.returncode == 1
    assert "broken.png: not a readable image file" in r.stderr
    assert "tiny.png" in r.stderr and "at least 16x16" in r.stderr
    assert "grayscale (L) converted to RGB" in r.stderr
    assert not (tmp_path / "out" / "broken.png").exists() and not (tmp_path / "out" / "tiny.png").exists()
    assert read_image(tmp_path / "out" / "gray.png").shape == (40, 40, 3)
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_cli_errors_are_one_clear_line(tmp_path, run_cli):
    r = run_cli("infer", tmp_path / "missing.png", "--out", tmp_path / "o.png",
                "--estimator", tmp_path / "w.safetensors")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("jndplug infer: error:") and "Traceback" not in r.stderr


def test_demo_writes_images_and_figure(tmp_path, estimator_file, run_cli):
    r = run_cli("demo", "--estimator", estimator_file, "--out", tmp_path / "demo")
    assert r.returncode == 0, r.stderr
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        assert read_image(tmp_path / "demo" / f"{name}_jnd.png").shape[2] == 3
        assert (tmp_path / "demo" / f"{name}_jndmap.png").is_file()
    assert (tmp_path / "demo" / "comparison.png").is_file()
    assert "comparison figure" in r.stdout


def test_precompute_resume_and_change_detection(tmp_path, image_folder, unet):
    dst = tmp_path / "dst"
    target = jndplug.JNDTarget(unet, strength=1.0)
    first = precompute(image_folder, dst, target, progress=False)
    assert sorted(first.written) == ["a.png", "c.jpg", "sub/b.png"] and not first.failed
    manifest = read_manifest(dst)
    assert manifest["settings"]["arch"] == "unet" and manifest["settings"]["strength"] == 1.0
    assert set(manifest["files"]) == {"a.png", "c.jpg", "sub/b.png"}
    again = precompute(image_folder, dst, target, progress=False)
    assert again.written == [] and sorted(again.skipped) == ["a.png", "c.jpg", "sub/b.png"]
    # an edited input and a new setting are redone
    Image.fromarray(make_image(40, 56, 99)).save(image_folder / "a.png")
    assert precompute(image_folder, dst, target, progress=False).written == ["a.png"]
    # other settings would replace the folder's images: refused, until asked for
    with pytest.raises(ValueError, match=r"strength: folder 1, this run 2\); add --overwrite"):
        precompute(image_folder, dst, jndplug.JNDTarget(unet, strength=2.0), progress=False)
    assert read_manifest(dst)["settings"]["strength"] == 1.0
    stronger = precompute(image_folder, dst, jndplug.JNDTarget(unet, strength=2.0), progress=False, overwrite=True)
    assert len(stronger.written) == 3
    assert read_manifest(dst)["settings"]["strength"] == 2.0


def test_precompute_says_it_resumes_before_working(tmp_path, image_folder, unet, capsys):
    dst = tmp_path / "dst"
    target = jndplug.JNDTarget(unet)
    precompute(image_folder, dst, target, progress=False)
    Image.fromarray(make_image(40, 56, 99)).save(image_folder / "new.png")
    capsys.readouterr()
    said_before_work = []

    class Watching(jndplug.JNDTarget):
        def __call__(self, x):
            said_before_work.append(capsys.readouterr().err)
            return super().__call__(x)

    report = precompute(image_folder, dst, Watching(unet), progress=True)
    assert report.written == ["new.png"]
    assert f"resuming {dst}: 3 of 4 image(s) were done with these settings" in said_before_work[0]


def test_precompute_interrupted_leaves_no_partial_file_and_resumes(tmp_path, image_folder, unet, monkeypatch):
    import jndplug.precompute as pc

    dst = tmp_path / "dst"
    target = jndplug.JNDTarget(unet)
    real_write = pc.write_image
    calls = {"n": 0}

    def dying_write(path, array):
        calls["n"] += 1
        if calls["n"] == 2:  # killed in the middle of writing the second file
            with open(str(path) + ".partial", "wb"):
                pass
            raise KeyboardInterrupt
        real_write(path, array)

    monkeypatch.setattr(pc, "write_image", dying_write)
    monkeypatch.setattr(pc, "_write_like_input", lambda out, a: dying_write(out, a))
    with pytest.raises(KeyboardInterrupt):
        precompute(image_folder, dst, target, progress=False)
    monkeypatch.undo()
    done = {p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file() and p.suffix in (".png", ".jpg")}
    assert done == {"a.png"}  # the interrupted file was never renamed into place
    resumed = precompute(image_folder, dst, target, progress=False)
    assert resumed.skipped == ["a.png"] and sorted(resumed.written) == ["c.jpg", "sub/b.png"]


def test_precompute_torn_log_line_is_ignored(tmp_path, image_folder, unet):
    dst = tmp_path / "dst"
    precompute(image_folder, dst, jndplug.JNDTarget(unet), progress=False)
    log = dst / LOG_DIR / "rank0.jsonl"
    log.write_text(log.read_text() + '{"file": "sub/b.p')  # killed mid-append
    assert set(read_manifest(dst)["files"]) == {"a.png", "c.jpg", "sub/b.png"}


def test_sharding_splits_files_between_ranks():
    files = list(range(10))
    parts = [shard(files, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == files and all(parts)
    assert not set(parts[0]) & set(parts[1])
    with pytest.raises(ValueError, match="outside world size"):
        shard(files, 3, 3)


def test_precompute_cli_under_torchrun_environment(tmp_path, image_folder, estimator_file, run_cli):
    dst = tmp_path / "dst"
    for rank in (0, 1):
        r = run_cli("precompute", image_folder, "--out", dst, "--estimator", estimator_file,
                    env={"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})
        assert r.returncode == 0, r.stderr
    logs = {p.name: [json.loads(line)["file"] for line in p.read_text().splitlines()]
            for p in (dst / LOG_DIR).glob("*.jsonl")}
    assert set(logs) == {"rank0.jsonl", "rank1.jsonl"}
    assert sorted(logs["rank0.jsonl"] + logs["rank1.jsonl"]) == ["a.png", "c.jpg", "sub/b.png"]
    assert (dst / MANIFEST).is_file()
    r = run_cli("precompute", image_folder, "--out", dst, "--estimator", estimator_file)
    assert "0 written, 3 already done" in r.stdout


def test_precompute_refuses_destination_inside_source(image_folder, unet):
    with pytest.raises(ValueError, match="must not be inside the source"):
        precompute(image_folder, image_folder / "out", jndplug.JNDTarget(unet), progress=False)


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from jndplug.imageio import atomic_write

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    # not mkstemp's private 0600: a shared weights file or dataset must be readable by others
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o644


def test_precompute_rerun_with_other_settings_is_refused_and_overwrite_replaces(tmp_path, image_folder,
                                                                              estimator_file, run_cli):
    dst = tmp_path / "dst"
    assert run_cli("precompute", image_folder, "--out", dst, "--estimator", estimator_file).returncode == 0
    before = {p: p.read_bytes() for p in dst.rglob("*.png")}
    r = run_cli("precompute", image_folder, "--out", dst, "--estimator", estimator_file, "--strength", "0.5",
                "--kind", "jnd")
    assert r.returncode == 1
    message = r.stderr.strip()
    assert message.startswith(f"jndplug precompute: error: {dst} holds JND images made with other settings")
    # the folder holds the default target: directed, bound profile at strength 0.591
    assert "strength: folder 0.591, this run 0.5" in message and "kind: folder directed, this run jnd" in message
    assert "--overwrite" in message and "another --out" in message and "Traceback" not in r.stderr
    assert {p: p.read_bytes() for p in dst.rglob("*.png")} == before  # nothing rewritten
    r = run_cli("precompute", image_folder, "--out", dst, "--estimator", estimator_file, "--strength", "0.5",
                "--kind", "jnd", "--overwrite")
    assert r.returncode == 0 and "3 written" in r.stdout
    assert read_manifest(dst)["settings"]["strength"] == 0.5


def test_precompute_library_takes_a_spec(tmp_path, image_folder, estimator_file):
    from jndplug.spec import TargetSpec

    spec = TargetSpec(estimator=str(estimator_file), strength=0.5, kind="jnd")
    report = precompute(image_folder, tmp_path / "dst", spec, device="cpu", progress=False)
    assert len(report.written) == 3
    assert TargetSpec.from_manifest(read_manifest(tmp_path / "dst")["settings"]).differences(
        spec, compare_estimator=False) == []
    with pytest.raises(TypeError, match="device and tile are for a TargetSpec"):
        precompute(image_folder, tmp_path / "d2", jndplug.JNDTarget(estimator_file), device="cpu")


def test_precompute_of_a_file_points_to_infer(tmp_path, image_folder, estimator_file, run_cli):
    r = run_cli("precompute", image_folder / "a.png", "--out", tmp_path / "d", "--estimator", estimator_file)
    assert r.returncode == 1
    assert "precompute takes a folder; for one file use `jndplug infer" in r.stderr
    assert "not found" not in r.stderr and not (tmp_path / "d").exists()


def test_precompute_progress_names_the_rank_only_under_torchrun(tmp_path, image_folder, unet, capsys):
    precompute(image_folder, tmp_path / "one", jndplug.JNDTarget(unet), progress=True)
    err = capsys.readouterr().err
    assert "precompute:" in err and "rank" not in err
    precompute(image_folder, tmp_path / "two", jndplug.JNDTarget(unet), progress=True, rank=1, world_size=2)
    assert "precompute (rank 1/2)" in capsys.readouterr().err


def test_infer_into_a_folder_given_with_a_slash(tmp_path, image_folder, estimator_file, run_cli):
    out = tmp_path / "inf2"
    r = run_cli("infer", image_folder / "a.png", "--out", f"{out}/", "--estimator", estimator_file)
    assert r.returncode == 0, r.stderr
    assert read_image(out / "a.png").shape == read_image(image_folder / "a.png").shape
    r = run_cli("infer", image_folder / "a.png", "--out", tmp_path / "noext", "--estimator", estimator_file)
    assert r.returncode == 1 and "--out" in r.stderr and "image file name (.png" in r.stderr
    assert "a folder ending in /" in r.stderr and not (tmp_path / "noext").exists()


def test_infer_map_draws_the_jnd_bound(tmp_path, image_folder, estimator_file, run_cli):
    from jndplug.viz import heatmap_array

    r = run_cli("infer", image_folder / "a.png", "--out", tmp_path / "one.png", "--estimator", estimator_file, "--map")
    assert r.returncode == 0, r.stderr
    assert "JND bound map" in r.stdout
    x = jndplug.to_tensor(read_image(image_folder / "a.png"))
    bound = jndplug.JNDTarget(estimator_file).jnd_map(x)
    assert np.array_equal(read_image(tmp_path / "one_jndmap.png"), heatmap_array(bound))
    assert "JND bound" in run_cli("infer", "--help").stdout


def test_infer_warnings_are_one_line_each(tmp_path, estimator_file, run_cli):
    Image.fromarray(make_image(40, 40)[..., 0]).save(tmp_path / "gray.png")
    r = run_cli("infer", tmp_path / "gray.png", "--out", tmp_path / "o.png", "--estimator", estimator_file)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == f"warning: {tmp_path / 'gray.png'}: grayscale (L) converted to RGB"
