"""JNDTolerantLoss: zero inside the JND band, plain L1/L2 shrunk by the band outside, any provider."""

import pytest
import torch
import torch.nn.functional as F

from jndplug.models.jnd_profile import JNDProfile, save_profile
from jndplug.losses import JNDTolerantLoss
from jndplug.spec import TargetSpec
from jndplug.target import JNDTarget


class ConstantMap:
    """A JND map provider answering a fixed magnitude everywhere."""

    def __init__(self, value):
        self.value = value

    def jnd_map(self, x):
        return torch.full_like(x[:, :1], self.value)


def _pair(offset, shape=(2, 3, 16, 16)):
    gt = torch.full(shape, 0.5)
    pred = (gt + offset).requires_grad_(True)
    return pred, gt


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_no_loss_and_no_gradient_inside_the_band(kind):
    loss = JNDTolerantLoss(ConstantMap(0.1), kind=kind)
    pred, gt = _pair(torch.linspace(-0.09, 0.09, 16))
    value = loss(pred, gt)
    value.backward()
    assert value.item() == 0 and not pred.grad.any()


def test_penalty_and_gradient_outside_the_band():
    pred, gt = _pair(0.25)
    value = JNDTolerantLoss(ConstantMap(0.1), kind="l1")(pred, gt)
    value.backward()
    assert value.item() == pytest.approx(0.15)
    assert torch.allclose(pred.grad, torch.full_like(pred, 1 / pred.numel()))  # d mean(e - 0.1) / d pred
    pred, gt = _pair(-0.25)
    value = JNDTolerantLoss(ConstantMap(0.1), kind="l2")(pred, gt)
    value.backward()
    assert value.item() == pytest.approx(0.15 ** 2)
    assert torch.allclose(pred.grad, torch.full_like(pred, -2 * 0.15 / pred.numel()))


def test_per_pixel_band_and_reductions():
    gt = torch.full((1, 3, 16, 16), 0.5)
    band = torch.zeros(1, 1, 16, 16)
    band[..., :8] = 0.3  # the left half tolerates 0.3, the right half nothing
    pred = (gt + 0.2).requires_grad_(True)
    loss = JNDTolerantLoss(kind="l1", reduction="none")
    per_pixel = loss(pred, gt, jnd_map=band)
    assert per_pixel.shape == pred.shape
    assert not per_pixel[..., :8].any() and torch.allclose(per_pixel[..., 8:], torch.tensor(0.2))
    per_pixel.sum().backward()
    assert not pred.grad[..., :8].any() and (pred.grad[..., 8:] == 1).all()
    total = JNDTolerantLoss(kind="l1", reduction="sum", loss_weight=2.0)(pred, gt, jnd_map=band)
    assert total.item() == pytest.approx(2 * 0.2 * 3 * 16 * 8)
    # scale 0 is the plain loss
    assert torch.allclose(JNDTolerantLoss(kind="l2", scale=0)(pred, gt, jnd_map=band), F.mse_loss(pred, gt))
    half = JNDTolerantLoss(kind="l1", scale=0.5)(pred, gt, jnd_map=band)
    assert half.item() == pytest.approx((0.05 + 0.2) / 2)


def test_estimator_and_profile_providers(tmp_path):
    class Brighter(torch.nn.Module):
        def forward(self, t):
            return t + 4 / 255

    gt = torch.rand(2, 3, 20, 20) * 0.9
    pred = gt + 6 / 255
    # an estimator module becomes a JNDTarget: its map is 4/255 everywhere, so 2/255 remains
    from_module = JNDTolerantLoss(Brighter())(pred, gt)
    assert from_module.item() == pytest.approx(2 / 255, abs=1e-6)
    assert JNDTolerantLoss(JNDTarget(Brighter(), kind="jnd"))(pred, gt).item() == pytest.approx(from_module.item())
    # a target's map is its estimator's JND magnitude times the strength whatever the kind: the directed
    # target's too where the estimator bounds it (its default strength 2 doubles the map: 8/255 covers
    # the 6/255 error)
    def bounded_by_the_estimator(**settings):
        return JNDTarget.from_spec(TargetSpec(estimator=Brighter(), bound="estimator", **settings))

    assert JNDTolerantLoss(bounded_by_the_estimator(strength=1))(pred, gt).item() == pytest.approx(from_module.item())
    assert JNDTolerantLoss(bounded_by_the_estimator())(pred, gt).item() == 0
    # a profile, as an object or as a file, gives the same loss; the loss holds no weights of its own
    profile = JNDProfile()
    path = save_profile(profile, tmp_path / "p.safetensors")
    expected = torch.relu((pred - gt).abs() - profile.jnd_map(gt)).mean()
    # the default directed target is bounded by the analytic profile at 0.591, whatever its estimator
    by_default = torch.relu((pred - gt).abs() - 0.591 * profile.jnd_map(gt)).mean()
    assert JNDTolerantLoss(JNDTarget(Brighter()))(pred, gt).item() == pytest.approx(by_default.item())
    assert by_default.item() > 0  # the smaller bound leaves part of the error: the comparison is not 0 == 0
    assert JNDTolerantLoss(profile)(pred, gt).item() == pytest.approx(expected.item())
    from_file = JNDTolerantLoss(str(path))
    assert from_file(pred, gt).item() == pytest.approx(expected.item())
    assert len(from_file.state_dict()) == 0 and not list(from_file.parameters())


def test_errors():
    with pytest.raises(ValueError, match="kind"):
        JNDTolerantLoss(kind="huber")
    with pytest.raises(ValueError, match="reduction"):
        JNDTolerantLoss(reduction="avg")
    with pytest.raises(TypeError, match="JND map provider"):
        JNDTolerantLoss(3.0)
    pred, gt = _pair(0.1)
    with pytest.raises(ValueError, match="no JND map"):
        JNDTolerantLoss()(pred, gt)
    with pytest.raises(ValueError, match="does not broadcast"):
        JNDTolerantLoss()(pred, gt, jnd_map=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="shapes differ"):
        JNDTolerantLoss(ConstantMap(0.1))(pred, gt[:1])
