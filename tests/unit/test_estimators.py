"""Registry, architectures, MAC counting and the weights file format."""

import json
import struct

import pytest
import torch
import torch.nn.functional as F

import jndplug
from jndplug.models.cost import count_parameters, macs_per_pixel
from jndplug.errors import CorruptFileError
from jndplug.weights import read_metadata


def test_registry_lists_and_builds():
    assert {"unet", "resjnd"} <= set(jndplug.list_estimators())
    m = jndplug.create_estimator("resjnd", channels=8, recursions=2)
    assert m.config == {"channels": 8, "recursions": 2}
    with pytest.raises(ValueError, match="unknown estimator architecture 'nope'"):
        jndplug.create_estimator("nope")
    with pytest.raises(ValueError, match="bad config for estimator 'resjnd'"):
        jndplug.create_estimator("resjnd", width=3)


def test_unet_default_budget(unet):
    # the default config's budget: under 25k MACs per pixel and 2M parameters
    assert macs_per_pixel(unet, (128, 128)) < 25_000
    assert count_parameters(unet) < 2_000_000
    assert unet.size_divisor == 32


def test_resjnd_structure_and_macs():
    m = jndplug.create_estimator("resjnd", channels=16, recursions=3)
    keys = set(m.state_dict())
    assert keys == {"input.weight", "conv1.weight", "conv2.weight", "output.weight"}  # the authors' keys, no biases
    # input 3->16, 3 x (two 16->16), output 16->3, all 3x3
    expected = 9 * (3 * 16 + 3 * 2 * 16 * 16 + 16 * 3)
    assert macs_per_pixel(m, (32, 32)) == pytest.approx(expected)
    x = torch.rand(2, 3, 20, 24)
    assert m(x).shape == x.shape


def test_macs_counts_linear_and_grouped_convs():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1, groups=3), torch.nn.Flatten(),
                              torch.nn.Linear(6 * 8 * 8, 10))
    assert macs_per_pixel(net, (8, 8)) == pytest.approx((6 * 1 * 9 * 64 + 384 * 10) / 64)


def test_macs_are_the_published_ones(unet):
    # BENCHMARKS.md "Estimator cost" (jndplug bench estimator --parts speed counts at 64x64)
    assert round(macs_per_pixel(unet, (64, 64))) == 10_665


def test_macs_count_what_runs_outside_modules():
    # matrix products and convolutions called as functions inside forward (attention, a projection
    # applied with F.conv2d) cost as much as those of nn.Linear and nn.Conv2d layers
    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(6, 3, 3, 3))
            self.p = torch.nn.Parameter(torch.ones(6 * 8 * 8, 10))

        def forward(self, x):
            return F.conv2d(x, self.w, padding=1).flatten(1) @ self.p

    assert macs_per_pixel(Functional(), (8, 8)) == pytest.approx((6 * 3 * 9 * 64 + 384 * 10) / 64)


def test_unet_sur_conditioning():
    m = jndplug.create_estimator("unet", sur_conditioning=True).eval()
    assert m.accepts_sur
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = m(x, sur=0.5), m(x, sur=0.9)
    assert a.shape == x.shape
    assert torch.allclose(a, b)  # FiLM starts as identity; training makes them differ
    plain = jndplug.create_estimator("unet")
    with pytest.raises(ValueError, match="not trained with satisfied-user-ratio"):
        plain(x, sur=0.5)


def test_unet_encoder_weights_from_local_file_only(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder_weights file not found"):
        jndplug.create_estimator("unet", encoder_weights=tmp_path / "missing.safetensors")
    # a timm checkpoint of the backbone, written locally, loads without any download
    import timm
    from safetensors.torch import save_file

    full = timm.create_model("mobilenetv3_small_100")
    path = tmp_path / "mnv3.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, path)
    m = jndplug.create_estimator("unet", encoder_weights=path)
    assert torch.equal(m.encoder.conv_stem.weight, full.conv_stem.weight)
    assert "encoder_weights" not in m.config  # a path is not part of the architecture
    save_file({"conv_stem.weight": full.conv_stem.weight.contiguous()}, tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match="not a checkpoint of this backbone"):
        jndplug.create_estimator("unet", encoder_weights=tmp_path / "partial.safetensors")


def test_save_load_roundtrip(tmp_path, unet):
    path = jndplug.save_estimator(unet, tmp_path / "m.safetensors", {"data": "unit test", "n": 3})
    meta = read_metadata(path)
    assert meta["format"] == "jndplug-estimator/1" and meta["arch"] == "unet"
    assert json.loads(meta["config"]) == unet.config
    assert meta["jndplug_version"] == jndplug.__version__
    assert len(meta["tensors_sha256"]) == 64
    loaded = jndplug.load_estimator(path)
    assert loaded.provenance == {"data": "unit test", "n": 3}
    assert not loaded.training
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), unet(x))


def test_half_precision_file_is_half_the_size_and_loads_as_float32(tmp_path, unet):
    full = jndplug.save_estimator(unet, tmp_path / "f32.safetensors")
    half = jndplug.save_estimator(unet, tmp_path / "f16.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = jndplug.load_estimator(half)  # verifies the hash of the stored float16 tensors
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert (loaded(x) - unet(x)).abs().max() < 1 / 255
    with pytest.raises(TypeError, match="floating torch.dtype"):
        jndplug.save_estimator(unet, tmp_path / "x.safetensors", dtype=torch.int8)


def test_save_refuses_unregistered_models_and_bad_metadata(tmp_path, unet):
    with pytest.raises(TypeError, match="not a registered jndplug estimator"):
        jndplug.save_estimator(torch.nn.Conv2d(3, 3, 1), tmp_path / "x.safetensors", {})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        jndplug.save_estimator(unet, tmp_path / "x.safetensors", {"bad": object()})
    assert not (tmp_path / "x.safetensors").exists()


@pytest.fixture
def small_file(tmp_path):
    m = jndplug.create_estimator("resjnd", channels=4, recursions=2)
    return jndplug.save_estimator(m, tmp_path / "small.safetensors", {})


def test_load_refuses_truncated_file(small_file):
    data = small_file.read_bytes()
    small_file.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        jndplug.load_estimator(small_file)
    small_file.write_bytes(data[:5])
    with pytest.raises(ValueError, match="truncated"):
        jndplug.load_estimator(small_file)


def test_load_refuses_modified_tensors(small_file):
    data = bytearray(small_file.read_bytes())
    data[-3] ^= 0xFF
    small_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="tensor hash mismatch"):
        jndplug.load_estimator(small_file)


def _rewrite_metadata(path, **changes):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["__metadata__"].update(changes)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def test_load_refuses_unknown_arch_and_shape_mismatch(small_file, tmp_path):
    _rewrite_metadata(small_file, arch="vit_jnd")
    with pytest.raises(ValueError, match="unknown estimator architecture 'vit_jnd'"):
        jndplug.load_estimator(small_file)
    _rewrite_metadata(small_file, arch="resjnd", config=json.dumps({"channels": 5, "recursions": 2}))
    with pytest.raises(ValueError, match="shape mismatch for"):
        jndplug.load_estimator(small_file)


def test_load_checks_config_against_tensors_before_building(small_file, monkeypatch):
    # 4096 channels would be about 600 MB of weights; the file holds a 4-channel network
    import jndplug.models

    devices = []
    build = jndplug.models.create_estimator

    def spy(name, **config):
        devices.append(torch.empty(0).device.type)
        return build(name, **config)

    monkeypatch.setattr(jndplug.models, "create_estimator", spy)
    _rewrite_metadata(small_file, config=json.dumps({"channels": 4096, "recursions": 2}))
    with pytest.raises(ValueError, match="shape mismatch for"):
        jndplug.load_estimator(small_file)
    assert devices == ["meta"]  # shapes only: nothing was allocated


def test_load_never_takes_a_file_path_from_metadata(tmp_path, monkeypatch):
    m = jndplug.create_estimator("unet", decoder_channels=[4, 4, 4, 4, 4], head_channels=4)
    path = jndplug.save_estimator(m, tmp_path / "u.safetensors", {})
    enc = tmp_path / "encoder.pth"
    torch.save(m.encoder.state_dict(), enc)
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or {})
    config = {**m.config, "encoder_weights": str(enc)}
    _rewrite_metadata(path, config=json.dumps(config))
    with pytest.raises(ValueError, match="names a local file .encoder_weights."):
        jndplug.load_estimator(path)
    assert loads == []


@pytest.mark.parametrize("config, message", [
    ("{not json", "metadata 'config' is not valid JSON"),
    ("[4, 2]", "metadata 'config' must be a JSON object"),
    (json.dumps({"channels": "4", "recursions": 2}), "does not build a 'resjnd' estimator"),
    (json.dumps({"channels": 4, "recursions": 2, "depth": 9}), "unknown 'resjnd' options"),
])
def test_malformed_metadata_is_one_line_naming_the_file(small_file, capsys, config, message):
    from jndplug.cli import main

    _rewrite_metadata(small_file, config=config)
    img = small_file.parent / "a.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (90, 120, 150)).save(img)
    assert main(["infer", str(img), "--out", str(small_file.parent / "out.png"), "--estimator", str(small_file),
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(small_file) in err and message in err


def test_load_refuses_a_malformed_header(small_file):
    data = small_file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    for k in header:
        if k != "__metadata__":
            del header[k]["data_offsets"]
            break
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    small_file.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    with pytest.raises(ValueError, match="malformed safetensors header"):
        jndplug.load_estimator(small_file)


def test_load_refuses_foreign_files(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, plain)
    with pytest.raises(ValueError, match="not a jndplug estimator file"):
        jndplug.load_estimator(plain)
    pth = tmp_path / "ckpt.pth"
    torch.save({"w": torch.zeros(3)}, pth)
    with pytest.raises(ValueError, match="jndplug convert IN.pth --out OUT.safetensors"):
        jndplug.load_estimator(pth)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="corrupt"):
        jndplug.load_estimator(garbage)


def test_pretrained_names(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown pretrained estimator 'nonexistent'"):
        jndplug.load_estimator("nonexistent")
    with pytest.raises(FileNotFoundError, match="not found"):
        jndplug.load_estimator("missing/dir/file.safetensors")
    # an installation whose weights folder lost the file says so and how to get one
    from jndplug import weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    assert jndplug.list_pretrained() == {"default": False}
    with pytest.raises(FileNotFoundError, match="'default' is not installed.*jndplug train"):
        jndplug.load_estimator("default")


def test_a_pretrained_file_that_differs_from_its_record_is_refused(tmp_path, monkeypatch, small_file):
    # an installation whose shipped file was replaced (another training run, a bad copy) says so
    # instead of loading other weights under the pretrained name
    from jndplug import weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    small_file.rename(tmp_path / weights.PRETRAINED["default"].file)
    with pytest.raises(CorruptFileError, match=r"does not match the record of pretrained 'default' \(sha256"):
        jndplug.load_estimator("default")


def test_the_registry_gives_each_architectures_size_divisor(tmp_path):
    from jndplug.models import size_divisor

    assert size_divisor("unet") == 32 and size_divisor("resjnd") == 1
    assert size_divisor("unet", decoder_channels=[4] * 5) == 32
    # a file-naming option is not opened: the divisor is read from a network built on the meta device
    assert size_divisor("unet", encoder_weights=str(tmp_path / "absent.pth")) == 32
    with pytest.raises(ValueError, match="unknown estimator architecture 'nope'"):
        size_divisor("nope")


def test_every_architecture_implements_the_estimator_interface():
    from jndplug.models import Estimator, estimator_info

    for name in jndplug.list_estimators():
        model = jndplug.create_estimator(name, **({"channels": 4, "recursions": 1} if name == "resjnd" else {}))
        assert isinstance(model, Estimator)
        info = estimator_info(model)
        assert info.arch_name == name and info.config == model.config and info.weights_path is None

    class Plain(torch.nn.Module):  # a custom estimator: the interface's defaults, or its own values
        size_divisor = 8

        def forward(self, x):
            return x

    info = estimator_info(Plain())
    assert (info.arch_name, info.config, info.accepts_sur, info.size_divisor) == (None, None, False, 8)
    # the hooks tiled inference relies on, declared with their defaults
    assert (info.zero_mean, info.default_sur) == (False, None)
    from jndplug.models.base import global_pools

    assert global_pools(Plain()) == []
    unet = jndplug.create_estimator("unet", sur_conditioning=True, default_sur=0.6, zero_mean=True)
    assert (estimator_info(unet).zero_mean, estimator_info(unet).default_sur) == (True, 0.6)
    assert unet.global_pools() and all(m in list(unet.modules()) for m in unet.global_pools())
    assert estimator_info(jndplug.create_estimator("unet", default_sur=0.6)).default_sur is None  # not conditioned
    assert jndplug.create_estimator("unet", squeeze_excite=False).global_pools() == []
    target = jndplug.JNDTarget(Plain())
    assert target.arch_name == "Plain" and target.size_divisor == 8 and target.weights_path is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_load_refuses_weights_that_are_not_finite(tmp_path, capsys, bad):
    # such a file once made `jndplug infer` write an all-black image and exit 0
    m = jndplug.create_estimator("resjnd", channels=4, recursions=2)
    with torch.no_grad():
        m.output.weight[0, 0, 0, 0] = bad
    path = jndplug.save_estimator(m, tmp_path / "bad.safetensors", {})
    name = "output.weight"
    with pytest.raises(CorruptFileError, match=rf"bad\.safetensors: tensor '{name}' holds NaN or Inf.*retrain"):
        jndplug.load_estimator(path)
    from PIL import Image

    from jndplug.cli import main

    Image.new("RGB", (32, 32), (90, 120, 150)).save(tmp_path / "a.png")
    assert main(["infer", str(tmp_path / "a.png"), "--out", str(tmp_path / "out.png"), "--estimator", str(path),
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"tensor '{name}' holds NaN or Inf" in err
    assert not (tmp_path / "out.png").exists()
