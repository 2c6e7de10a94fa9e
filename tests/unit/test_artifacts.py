"""The one file format of everything jndplug saves: format check, tensor hash, atomic write."""

import pytest
import torch

from jndplug.artifacts import format_of, load_artifact, read_metadata, save_artifact
from jndplug.datagen import AutoencoderSpec, DistortionAutoencoder, load_autoencoder, save_autoencoder
from jndplug.errors import CorruptFileError
from jndplug.models.jnd_profile import JNDProfile, is_profile_file, load_profile, save_profile
from jndplug.patches import TinyPatchRegressor, load_regressor
from jndplug.patches.regressor import save_regressor


def test_round_trip_and_header(tmp_path):
    t = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor([1, 2], dtype=torch.int64)}
    path = save_artifact(tmp_path / "a.safetensors", t, "x/1", {"config": {"k": 1}, "note": "plain"}, "test")
    meta = read_metadata(path)
    assert meta["format"] == "x/1" and meta["config"] == '{"k": 1}' and meta["note"] == "plain"
    assert {"jndplug_version", "tensors_sha256"} <= set(meta)
    loaded, _ = load_artifact(path, "x/1", "test")
    assert set(loaded) == {"w", "n"} and torch.equal(loaded["w"], t["w"]) and torch.equal(loaded["n"], t["n"])
    assert format_of(path) == "x/1" and format_of(tmp_path / "missing.safetensors") is None


def test_refuses_wrong_kind_edited_tensors_and_bad_names(tmp_path):
    path = save_artifact(tmp_path / "a.safetensors", {"w": torch.ones(4)}, "x/1", {}, "test")
    with pytest.raises(CorruptFileError, match="not a thing file.*'x/1'"):
        load_artifact(path, "y/1", "thing")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor byte: same size, valid header
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="tensor hash mismatch"):
        load_artifact(path, "x/1", "test")
    with pytest.raises(ValueError, match=r"written as \.safetensors"):
        save_artifact(tmp_path / "a.pt", {"w": torch.ones(1)}, "x/1", {}, "test")
    with pytest.raises(FileNotFoundError, match="test file not found"):
        load_artifact(tmp_path / "none.safetensors", "x/1", "test")


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_artifact(tmp_path / "a.safetensors", {"w": torch.ones(2)}, "x/1", {}, "test")
    before = path.read_bytes()
    import jndplug.artifacts as artifacts

    def fail(*a, **k):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(artifacts, "_st_save", fail)
    with pytest.raises(RuntimeError, match="disk gone"):
        save_artifact(path, {"w": torch.zeros(2)}, "x/1", {}, "test")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


def test_each_kind_is_written_and_refused_as_the_others(tmp_path):
    profile = JNDProfile()
    save_profile(profile, tmp_path / "p.safetensors", {"who": "test"})
    regressor = TinyPatchRegressor()
    save_regressor(regressor, tmp_path / "r.safetensors", {"score_range": [0, 1]})
    ae = DistortionAutoencoder(AutoencoderSpec("tiny", width=4, depth=2))
    save_autoencoder(ae, tmp_path / "a.safetensors", {"steps": 3})
    assert load_profile(tmp_path / "p.safetensors").provenance == {"who": "test"}
    assert load_regressor(tmp_path / "r.safetensors").info == {"score_range": [0, 1]}
    model, info = load_autoencoder(tmp_path / "a.safetensors")
    assert info == {"steps": 3} and model.spec == ae.spec
    assert is_profile_file(tmp_path / "p.safetensors") and not is_profile_file(tmp_path / "r.safetensors")
    with pytest.raises(CorruptFileError, match="not a JND profile file"):
        load_profile(tmp_path / "r.safetensors")
    with pytest.raises(CorruptFileError, match="not a distortion autoencoder file"):
        load_autoencoder(tmp_path / "p.safetensors")
    with pytest.raises(CorruptFileError, match="not a patch regressor file"):
        load_regressor(tmp_path / "a.safetensors")


def test_refuses_a_tensor_that_is_not_finite(tmp_path):
    # every kind of file is loaded here: a NaN in a profile or a regressor is refused like one in an estimator
    t = {"a": torch.ones(3), "b": torch.tensor([1.0, float("nan")], dtype=torch.float16), "n": torch.arange(3)}
    path = save_artifact(tmp_path / "a.safetensors", t, "x/1", {}, "test")
    with pytest.raises(CorruptFileError, match=r"a\.safetensors: tensor 'b' holds NaN or Inf"):
        load_artifact(path, "x/1", "test")
    profile = JNDProfile()
    name, tensor = next((k, v) for k, v in profile.state_dict().items() if v.is_floating_point())
    tensor.view(-1)[0] = float("-inf")
    save_profile(profile, tmp_path / "p.safetensors", {})
    with pytest.raises(CorruptFileError, match=f"tensor '{name}' holds NaN or Inf"):
        load_profile(tmp_path / "p.safetensors")
