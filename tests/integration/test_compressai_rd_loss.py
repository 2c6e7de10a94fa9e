"""jndplug.losses.JNDTolerantRateDistortionLoss, written without CompressAI, against CompressAI's own loss."""

import pytest
import torch

pytest.importorskip("compressai")

from compressai.losses import RateDistortionLoss  # noqa: E402
from compressai.models import ScaleHyperprior  # noqa: E402

from jndplug.losses import JNDTolerantLoss, JNDTolerantRateDistortionLoss  # noqa: E402


@pytest.fixture(scope="module")
def codec_output():
    torch.manual_seed(0)
    model = ScaleHyperprior(N=8, M=8).eval()  # random weights: likelihoods of two latents, y and z
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert set(out["likelihoods"]) == {"y", "z"}
    return out, x


def test_without_tolerance_it_is_compressai_rate_distortion_loss(codec_output, estimator_file):
    out, x = codec_output
    ours = JNDTolerantRateDistortionLoss(0.0130, str(estimator_file), scale=0.0)(out, x)
    theirs = RateDistortionLoss(lmbda=0.0130)(out, x)
    assert list(ours) == list(theirs) == ["bpp_loss", "mse_loss", "loss"]
    assert torch.equal(ours["bpp_loss"], theirs["bpp_loss"]) and float(ours["bpp_loss"]) > 0
    for key in ("mse_loss", "loss"):
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-6, atol=0)


def test_the_tolerance_changes_only_the_distortion(codec_output, estimator_file):
    out, x = codec_output
    ours = JNDTolerantRateDistortionLoss(0.0130, str(estimator_file), scale=1.0)(out, x)
    theirs = RateDistortionLoss(lmbda=0.0130)(out, x)
    assert torch.equal(ours["bpp_loss"], theirs["bpp_loss"])
    tolerant = JNDTolerantLoss(str(estimator_file), kind="l2")(out["x_hat"], x)
    assert torch.equal(ours["mse_loss"], tolerant) and 0 < float(tolerant) < float(theirs["mse_loss"])
    torch.testing.assert_close(ours["loss"], 0.0130 * 255**2 * tolerant + theirs["bpp_loss"])


def test_the_integration_still_offers_it_under_its_old_name():
    from jndplug.integrations.compressai.train import JNDTolerantRateDistortionLoss as old

    assert old is JNDTolerantRateDistortionLoss
