"""Fixable errors end in one line naming the file and the fix; bugs keep their traceback."""

import errno

import numpy as np
import pytest
import torch
from PIL import Image

from jndplug.cli import main
from jndplug.errors import CorruptFileError, JNDPlugError, JNDPlugValueError, user_error_message


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("out", "ref"):
        (tmp_path / name).mkdir()
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / name / "a.png")
    return tmp_path


def test_a_file_in_the_way_of_an_output_folder(folders, capsys):
    (folders / "plain").write_text("x")
    assert main(["metrics", str(folders / "out"), str(folders / "ref"), "--metrics", "psnr",
                 "--json", str(folders / "plain" / "table.json")]) == 1
    line = _one_line(capsys)
    assert str(folders / "plain") in line and "fix the path" in line


def test_an_output_that_is_a_folder(folders, capsys):
    assert main(["metrics", str(folders / "out"), str(folders / "ref"), "--metrics", "psnr",
                 "--json", str(folders / "out")]) == 1
    line = _one_line(capsys)
    assert f"{folders / 'out'}: this is a folder; give a file name" in line


def test_permission_denied_names_the_file_and_the_fix(folders, capsys, monkeypatch):
    # as root, chmod does not deny anything: raise what the OS raises for a read-only folder
    import jndplug.metrics

    target = folders / "locked" / "table.json"

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(target))

    monkeypatch.setattr(jndplug.metrics, "write_table", denied)
    assert main(["metrics", str(folders / "out"), str(folders / "ref"), "--metrics", "psnr",
                 "--json", str(target)]) == 1
    line = _one_line(capsys)
    assert f"{target}: permission denied; check the file's and its folder's permissions" in line


@pytest.mark.parametrize("content, reason", [
    (b"", "empty or truncated"),
    (b"not a checkpoint\n", "not a PyTorch checkpoint"),
    ("pickle", "objects other than tensors"),
    ("truncated", "empty or truncated"),
])
def test_unreadable_metric_trunk(folders, capsys, torch_hub, content, reason):
    pytest.importorskip("lpips")
    trunk = torch_hub / "alexnet-owt-7be5be79.pth"
    torch_hub.mkdir(parents=True)
    if content == "pickle":
        torch.save({"features": torch.nn.Linear(1, 1)}, trunk)  # a module: refused by weights_only
    elif content == "truncated":
        torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, trunk)
        trunk.write_bytes(trunk.read_bytes()[:1000])
    else:
        trunk.write_bytes(content)
    assert main(["metrics", str(folders / "out"), str(folders / "ref"), "--metrics", "lpips"]) == 1
    line = _one_line(capsys)
    assert str(trunk) in line and reason in line and "alexnet-owt-7be5be79.pth from https://" in line


def test_debug_shows_the_traceback(folders, torch_hub):
    pytest.importorskip("lpips")
    torch_hub.mkdir(parents=True)
    (torch_hub / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    argv = ["metrics", str(folders / "out"), str(folders / "ref"), "--metrics", "lpips"]
    with pytest.raises(CorruptFileError, match="empty or truncated"):
        main(argv + ["--debug"])
    with pytest.raises(CorruptFileError, match="empty or truncated"):
        main(["--debug"] + argv)


def test_bugs_keep_their_traceback(folders, monkeypatch):
    import jndplug.metrics

    def bug(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(jndplug.metrics, "evaluate_folders", bug)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(["metrics", str(folders / "out"), str(folders / "ref"), "--metrics", "psnr"])


@pytest.mark.parametrize("error, one_line", [
    (ValueError("a bug's message"), False),
    (JNDPlugValueError("config patch must be a multiple of 32"), True),
])
def test_only_jndplugs_own_errors_are_one_line(folders, monkeypatch, capsys, error, one_line):
    # a plain ValueError is raised by a bug (or by a library jndplug called wrongly): it keeps its
    # traceback; a user error is raised as JNDPlugValueError and printed as one line
    import jndplug.metrics

    def raising(*a, **k):
        raise error

    monkeypatch.setattr(jndplug.metrics, "evaluate_folders", raising)
    argv = ["metrics", str(folders / "out"), str(folders / "ref"), "--metrics", "psnr"]
    if one_line:
        assert main(argv) == 1
        assert _one_line(capsys) == f"jndplug metrics: error: {error}"
    else:
        with pytest.raises(ValueError, match="a bug's message"):
            main(argv)
    assert (user_error_message(error) is None) is not one_line


def test_error_classes_keep_the_builtin_ones():
    from jndplug.spec import TargetSpecError
    from jndplug.study.engine import ProtocolError
    from jndplug.study.web.store import RegistrationError

    for cls in (CorruptFileError, TargetSpecError, ProtocolError, RegistrationError):
        assert issubclass(cls, ValueError) and issubclass(cls, JNDPlugError), cls


@pytest.fixture
def pairs(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        for name, img in (("o", a), ("t", np.clip(a.astype(int) + 2, 0, 255).astype(np.uint8))):
            (tmp_path / name).mkdir(exist_ok=True)
            Image.fromarray(img).save(tmp_path / name / f"{i}.png")
    return f"pairs:{tmp_path / 'o'},{tmp_path / 't'}"


TRAIN = ["--set", "patch=64", "--set", "batch=1", "--set", "steps=1", "--set", "loss={l1: 1}"]


@pytest.mark.parametrize("checkpoint, reason", [
    ("truncated", "empty or truncated"),
    ("foreign", "not a jndplug training checkpoint"),
])
def test_training_resume_from_an_unreadable_checkpoint(tmp_path, pairs, capsys, checkpoint, reason):
    from jndplug.cli.train import main as train_main

    out = tmp_path / "run"
    out.mkdir()
    ckpt = out / "checkpoint.pt"
    torch.save({"model": {"w": torch.zeros(4096)}} if checkpoint == "truncated" else {"step": 3}, ckpt)
    if checkpoint == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:2000])
    assert train_main(["--data", pairs, "--out", str(out), *TRAIN]) == 1
    line = _one_line(capsys)
    assert str(ckpt) in line and reason in line and "delete it to restart the run" in line


@pytest.mark.parametrize("setting, message", [
    ("model=5", "config model must be a mapping"),
    ("loss=[l1]", "config loss must be a mapping"),
    ("sur_range=0.5", "config sur_range must be a pair"),
    ("layouts={pairs: 5}", "config layouts.pairs must be a mapping"),
    ("model={backbone: 5}", "backbone must be a timm model name"),
])
def test_training_config_of_the_wrong_type(tmp_path, pairs, capsys, setting, message):
    from jndplug.cli.train import main as train_main

    assert train_main(["--data", pairs, "--out", str(tmp_path / "run"), *TRAIN, "--set", setting]) == 1
    assert message in _one_line(capsys)


def test_training_config_file_that_is_not_a_mapping(tmp_path, pairs, capsys):
    from jndplug.cli.train import main as train_main

    for text, message in (("[1, 2]", "expected a mapping of config keys"), ("a: [", "not valid YAML or JSON")):
        config = tmp_path / "config.yaml"
        config.write_text(text)
        assert train_main(["--data", pairs, "--out", str(tmp_path / "run"), "--config", str(config)]) == 1
        line = _one_line(capsys)
        assert str(config) in line and message in line
    assert train_main(["--data", pairs, "--out", str(tmp_path / "run"), "--config", str(tmp_path)]) == 1
    assert f"{tmp_path}: this is a folder; give a file name" in _one_line(capsys)


def test_a_missing_optional_dependency_names_its_extra(tmp_path, estimator_file, capsys, monkeypatch):
    # matplotlib is the viz extra, not a core dependency: without it, --map says what to install
    import sys

    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without the extra sees
    assert main(["infer", str(image), "--out", str(tmp_path / "jnd.png"), "--estimator", str(estimator_file),
                 "--map"]) == 1
    assert _one_line(capsys).endswith("this needs matplotlib, which is not installed: pip install 'jndplug[viz]'")
    assert user_error_message(ModuleNotFoundError("No module named 'timm'", name="timm")) is None  # core: a bug
