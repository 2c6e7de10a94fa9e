"""ResJND: checkpoint import round trip, errors, training through cplset, normalised JND maps."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

import jndplug
from conftest import make_image
from jndplug.cli import main
from jndplug.models.resjnd_convert import convert_resjnd
from jndplug.spec import TargetSpec
from jndplug.training.loop import train
from jndplug.weights import read_metadata


pytestmark = pytest.mark.usefixtures("one_thread")


def _authors_checkpoint(path, channels=8, seed=0, **extra):
    """A checkpoint laid out as the authors release it: a plain, bias-free state dict."""
    g = torch.Generator().manual_seed(seed)
    state = {"input.weight": torch.randn(channels, 3, 3, 3, generator=g) * 0.1,
             "conv1.weight": torch.randn(channels, channels, 3, 3, generator=g) * 0.05,
             "conv2.weight": torch.randn(channels, channels, 3, 3, generator=g) * 0.05,
             "output.weight": torch.randn(3, channels, 3, 3, generator=g) * 0.05, **extra}
    torch.save(state, path)
    return state


class _AuthorsStyleDRRN(torch.nn.Module):
    """The recursion written the way the authors' CPL_Net is, independently of jndplug.models.resjnd:
    one ReLU module used everywhere, in place, and the block input kept by reference, so the first
    recursion's ReLU also rectifies the skip that every recursion adds back. ``inplace=False``
    gives the same code without that side effect, to show the reference depends on it."""

    def __init__(self, state, recursions, inplace=True):
        super().__init__()
        self.state, self.recursions = state, recursions
        self.act = torch.nn.ReLU(inplace=inplace)

    def _conv(self, t, key):
        return torch.nn.functional.conv2d(t, self.state[key], padding=1)

    def forward(self, x):
        keep = x
        skip = self._conv(self.act(x), "input.weight")
        h = skip
        for _ in range(self.recursions):
            h = self._conv(self.act(self._conv(self.act(h), "conv1.weight")), "conv2.weight") + skip
        return self._conv(self.act(h), "output.weight") + keep


def _reference_forward(state, x, recursions, inplace=True):
    with torch.no_grad():
        return _AuthorsStyleDRRN(state, recursions, inplace)(x.clone())  # the in-place ReLU may write to x


def test_convert_round_trip_through_cli(tmp_path, capsys):
    src, dst = tmp_path / "resjnd.pth", tmp_path / "resjnd.safetensors"
    state = _authors_checkpoint(src)
    assert main(["convert", str(src), "--out", str(dst), "--recursions", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    model = jndplug.load_estimator(dst)
    assert model.arch_name == "resjnd" and model.config == {"channels": 8, "recursions": 3}
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v)
    meta = read_metadata(dst)
    prov = json.loads(meta["provenance"])
    assert prov["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert prov["source_file"] == "resjnd.pth" and prov["recursions"] == 3
    assert prov["command"] == "jndplug convert resjnd.pth --out resjnd.safetensors --recursions 3"
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.allclose(model(x), _reference_forward(state, x, 3), atol=1e-5)
    # and the converted file is an ordinary estimator for JNDTarget (bounding the directed image by its map)
    out = jndplug.JNDTarget.from_spec(TargetSpec(estimator=dst, bound="estimator"))(torch.rand(3, 32, 32))
    assert out.shape == (3, 32, 32)


def test_converted_model_is_the_authors_network(tmp_path):
    """The authors' in-place ReLU rectifies the recursive block's skip; the import must too."""
    src = tmp_path / "resjnd.pth"
    state = _authors_checkpoint(src, channels=16, seed=3)
    model = jndplug.load_estimator(convert_resjnd(src, tmp_path / "resjnd.safetensors", recursions=25))
    x = torch.rand(2, 3, 24, 20)
    reference = _reference_forward(state, x, 25)
    without_side_effect = _reference_forward(state, x, 25, inplace=False)
    # the in-place semantics change the function, so matching the reference is a real check
    assert float((reference - without_side_effect).abs().max()) > 1e-2
    with torch.no_grad():
        out = model(x)
    assert float((out - reference).abs().max()) < 1e-5


def test_data_parallel_prefix_is_removed(tmp_path):
    src = tmp_path / "dp.pth"
    state = _authors_checkpoint(tmp_path / "plain.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, src)
    model = jndplug.load_estimator(convert_resjnd(src, tmp_path / "dp.safetensors", recursions=2))
    assert torch.equal(model.state_dict()["conv2.weight"], state["conv2.weight"])


def test_conversion_errors(tmp_path, capsys):
    with_bias = tmp_path / "bias.pth"
    _authors_checkpoint(with_bias, **{"input.bias": torch.zeros(8)})
    with pytest.raises(ValueError, match="has biases"):
        convert_resjnd(with_bias, tmp_path / "o.safetensors")
    missing = tmp_path / "missing.pth"
    torch.save({"input.weight": torch.zeros(8, 3, 3, 3)}, missing)
    with pytest.raises(ValueError, match="missing"):
        convert_resjnd(missing, tmp_path / "o.safetensors")
    bad_shape = tmp_path / "shape.pth"
    _authors_checkpoint(bad_shape, **{"output.weight": torch.zeros(3, 4, 3, 3)})
    with pytest.raises(ValueError, match="output.weight has shape"):
        convert_resjnd(bad_shape, tmp_path / "o.safetensors")
    pickled_module = tmp_path / "module.pth"
    torch.save(torch.nn.Conv2d(3, 3, 3), pickled_module)  # a whole pickled module, not a state dict
    with pytest.raises(ValueError, match="weights_only"):
        convert_resjnd(pickled_module, tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()
    # on the command line: one line, exit status 1
    assert main(["convert", str(tmp_path / "absent.pth"), "--out", str(tmp_path / "o.safetensors")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_resjnd_trains_on_cplset_and_gives_normalised_maps(tmp_path):
    root = tmp_path / "cpl"
    (root / "pristine").mkdir(parents=True)
    (root / "CPL").mkdir()
    for i in range(4):
        a = make_image(48, 64, 20 + i)
        Image.fromarray(a).save(root / "pristine" / f"p{i}.png")
        Image.fromarray(np.clip(a.astype(int) + 5, 0, 255).astype(np.uint8)).save(root / "CPL" / f"p{i}.png")
    cfg = {"arch": "resjnd", "model": {"channels": 8, "recursions": 2}, "patch": 32, "batch": 2, "steps": 8,
           "val_every": 4, "checkpoint_every": 8, "loss": {"l1": 1.0}, "val_crop": 32, "warmup": 1, "lr": 1e-3}
    export = tmp_path / "resjnd.safetensors"
    result = train([f"cplset:{root}"], tmp_path / "run", cfg, export=str(export), progress=False, measure=None)
    assert result["finished"]
    model = jndplug.load_estimator(export)
    assert model.arch_name == "resjnd" and model.provenance["label_source"] == ["cplset"]
    target = jndplug.JNDTarget.from_spec(TargetSpec(estimator=export, bound="estimator"))  # the trained model's map
    x = jndplug.to_tensor(make_image(48, 64, 20))[None]
    m = target.jnd_map(x)
    n = target.jnd_map(x, normalize=True)
    assert m.shape == n.shape == (1, 1, 48, 64)
    assert float(n.max()) == pytest.approx(1.0)
    assert torch.allclose(n * m.max(), m, atol=1e-6)
    # an image whose map is zero everywhere stays zero rather than dividing by zero
    zero = jndplug.JNDTarget.from_spec(TargetSpec(estimator=export, bound="estimator", strength=0)).jnd_map(
        x, normalize=True)
    assert torch.count_nonzero(zero) == 0
