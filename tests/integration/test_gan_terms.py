"""Which loss terms of a BasicSR model see the JND image (``jnd_target.terms``): the real
``train_pipeline`` with SRGANModel and ESRGANModel at toy size, ``wrap_model`` on a stand-in model,
and the block's checks."""


import pytest
import torch
from torch.nn import functional as F

import jndplug
from jndplug.errors import JNDPlugValueError
from jndplug.integrations.basicsr import TERMS, JNDOptionError, check_options, default_terms, wrap_model
from basicsr.utils.registry import LOSS_REGISTRY
from test_integration_basicsr import (Spy, data, differs_from_all, is_batch_of, jnd_folder,  # noqa: F401 (fixtures)
                                      jnd_truth, make_opt, run_pipeline)

pytestmark = pytest.mark.usefixtures("one_thread")


class SpyPerceptualLoss(torch.nn.Module):
    """A stand-in for BasicSR's PerceptualLoss (whose VGG19 weights would be downloaded): the same
    call, ``(output, gt) -> (perceptual, style)``, recording the target it is given."""

    targets: list[torch.Tensor] = []

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, x, gt):
        SpyPerceptualLoss.targets.append(gt.detach().clone())
        return self.loss_weight * F.l1_loss(x, gt), None


if "SpyPerceptualLoss" not in LOSS_REGISTRY:
    LOSS_REGISTRY.register(SpyPerceptualLoss)


# per iteration, the discriminator's calls on the real batch (the rest are on the generator's output)
REAL_CALLS = {"SRGANModel": 1, "ESRGANModel": 2}


def gan_run(tmp_path, monkeypatch, data, jnd_truth, estimator_file, model_type, terms=None):
    """A two-step run; the spy, and the discriminator's inputs that are real batches (true or JND)."""
    import jndplug.integrations.basicsr as integration

    monkeypatch.setattr(integration, "REPORT_STEPS", 2)  # the two steps of these runs
    SpyPerceptualLoss.targets.clear()
    spy = Spy(monkeypatch)
    block = {"estimator": str(estimator_file)} if terms is None else {"estimator": str(estimator_file), "terms": terms}
    opt = make_opt(data, f"{model_type}_{terms}", block, gan=True, total_iter=2, val=False)
    opt["model_type"] = model_type
    opt["train"]["perceptual_opt"] = {"type": "SpyPerceptualLoss", "loss_weight": 1.0}
    run_pipeline(monkeypatch, tmp_path, opt)
    return spy, [x for x in spy.d_inputs if is_batch_of(x, torch.cat(jnd_truth))]


@pytest.mark.parametrize("model_type", list(REAL_CALLS))
def test_gan_default_pixel_and_perceptual_on_jnd_discriminator_on_gt(model_type, tmp_path, monkeypatch, data,
                                                                     jnd_truth, estimator_file, basicsr_log):
    spy, real = gan_run(tmp_path, monkeypatch, data, jnd_truth, estimator_file, model_type)
    gts, jnds = jnd_truth
    assert len(spy.loss_targets) == 2 and len(SpyPerceptualLoss.targets) == 2
    for batch in spy.loss_targets + SpyPerceptualLoss.targets:
        assert is_batch_of(batch, jnds) and differs_from_all(batch, gts)
    # Real-ESRGAN's convention: the discriminator's real samples are the true ground truth, exactly
    assert len(real) == 2 * REAL_CALLS[model_type]
    assert all(is_batch_of(x, gts, tol=0) for x in real)
    log = [r.getMessage() for r in basicsr_log]
    terms = "the JND image for pixel, perceptual; the true ground truth for adversarial"
    assert any(line.startswith(f"jndplug: online JND targets for {model_type}: ") and line.endswith(terms)
               for line in log)
    assert any(line.startswith("jndplug: JND targets over the first 2 steps") and line.endswith(f"{terms})")
               for line in log)


@pytest.mark.parametrize("model_type", list(REAL_CALLS))
def test_gan_terms_all_puts_the_real_samples_on_jnd(model_type, tmp_path, monkeypatch, data, jnd_truth,
                                                    estimator_file, basicsr_log):
    spy, real = gan_run(tmp_path, monkeypatch, data, jnd_truth, estimator_file, model_type, terms="all")
    gts, jnds = jnd_truth
    for batch in spy.loss_targets + SpyPerceptualLoss.targets + real:
        assert is_batch_of(batch, jnds) and differs_from_all(batch, gts)
    assert len(real) == 2 * REAL_CALLS[model_type]
    assert any(r.getMessage().endswith("the JND image for all terms") for r in basicsr_log)


def test_gan_adversarial_only_keeps_the_losses_on_gt(tmp_path, monkeypatch, data, jnd_truth, estimator_file):
    spy, real = gan_run(tmp_path, monkeypatch, data, jnd_truth, estimator_file, "ESRGANModel", terms=["adversarial"])
    gts, jnds = jnd_truth
    for batch in spy.loss_targets + SpyPerceptualLoss.targets:
        assert is_batch_of(batch, gts, tol=0)
    assert len(real) == 4 and all(is_batch_of(x, jnds) and differs_from_all(x, gts) for x in real)


class GANStep:
    """The calls of BasicSR's GAN models: pixel and perceptual losses on a target, the discriminator on
    ``self.gt``; with clips, the perceptual loss on frames, as VideoRecurrentGANModel passes them."""

    def __init__(self, shape, usm=False):
        rng = torch.Generator().manual_seed(0)
        self.gt = torch.rand(shape, generator=rng)
        self.gt_usm = torch.rand(shape, generator=rng) if usm else None
        self.net_d = object()
        self.calls = {}
        self.cri_pix = lambda out, target: self.calls.setdefault("pixel", target)
        self.cri_perceptual = lambda out, target: self.calls.setdefault("perceptual", target)

    def optimize_parameters(self, current_iter):
        self.calls.clear()
        # Real-ESRGAN: pixel and perceptual on gt_usm (l1_gt_usm, percep_gt_usm), the discriminator on gt
        target = self.gt if self.gt_usm is None else self.gt_usm
        self.cri_pix(None, target)
        self.cri_perceptual(None, target.view(-1, *target.shape[-3:]))
        self.calls["adversarial"] = self.gt


def jnd_image(target, x):
    return torch.stack([target(f[None])[0] for f in x.reshape(-1, *x.shape[-3:])]).view(x.shape)


@pytest.mark.parametrize("terms", [None, ["pixel"], ["perceptual", "adversarial"], ["adversarial"], list(TERMS)])
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 2, 3, 32, 32)], ids=["image", "video"])
@pytest.mark.parametrize("usm", [False, True], ids=["gt", "gt_usm"])
def test_wrap_model_gives_each_term_its_tensor(terms, shape, usm, estimator_file, monkeypatch):
    target = jndplug.JNDTarget(estimator_file, kind="jnd")
    model = GANStep(shape, usm)
    gt, gt_usm = model.gt, model.gt_usm
    losses = (model.cri_pix, model.cri_perceptual)
    made = []
    counted = jndplug.JNDTarget.__call__
    monkeypatch.setattr(jndplug.JNDTarget, "__call__", lambda self, x: made.append(x) or counted(self, x))
    wrap_model(model, target, terms=terms)
    model.optimize_parameters(1)
    wanted = ("pixel", "perceptual") if terms is None else terms  # the default: GANStep has a discriminator
    # one JND image per tensor a term needs, however many terms read it; with adversarial, every
    # target attribute is swapped
    assert len(made) == (1 + usm if "adversarial" in wanted else 1)
    loss_source = gt if gt_usm is None else gt_usm
    for term, seen in model.calls.items():
        source = gt if term == "adversarial" else loss_source
        jnd = jnd_image(target, source)
        assert not torch.allclose(jnd, source, atol=1e-4)  # so that the two can be told apart
        assert torch.allclose(seen.reshape(shape), jnd if term in wanted else source, atol=1e-5), term
    assert model.gt is gt and model.gt_usm is gt_usm and (model.cri_pix, model.cri_perceptual) == losses


@pytest.mark.parametrize("terms", [[], ["pixel", "pixl"], "all"])
def test_wrap_model_refuses_terms_it_does_not_know(terms, estimator_file):
    with pytest.raises(JNDPlugValueError, match="^wrap_model: terms must be a non-empty list of pixel, perceptual, "
                                                "adversarial \\(TERMS for all\\), got "):
        wrap_model(GANStep((1, 3, 8, 8)), jndplug.JNDTarget(estimator_file), terms=terms)


def test_models_without_discriminator_default_to_all_terms():
    class SRStep:
        cri_pix, cri_perceptual = None, None

    class GANLossOnly(SRStep):
        cri_gan = object()

    assert default_terms(SRStep()) == TERMS
    assert default_terms(GANLossOnly()) == ("pixel", "perceptual")


def test_terms_through_the_block(data, estimator_file):
    def terms_of(value):
        return check_options(make_opt(data, "x", {"estimator": str(estimator_file), "terms": value}))["terms"]

    assert check_options(make_opt(data, "x", {"estimator": str(estimator_file)}))["terms"] is None
    assert terms_of("all") == list(TERMS)
    assert terms_of(["perceptual", "pixel", "pixel"]) == ["pixel", "perceptual"]  # in TERMS order, once


@pytest.mark.parametrize("value, message", [
    (["pixel", "perceptul"], "unknown term 'perceptul'; did you mean perceptual\\? known terms: pixel, perceptual, "
                             "adversarial \\(a list\\), or all$"),
    (["discriminator"], "unknown term 'discriminator'; known terms: "),
    ([], "must be all or a list of terms such as \\[pixel, perceptual\\], got \\[\\]; known terms: "),
    ("pixel", "must be all or a list of terms .*got 'pixel'"),
])
def test_bad_terms_name_the_key_and_the_known_terms(value, message, estimator_file):
    with pytest.raises(JNDOptionError, match=f"^jnd_target.terms: {message}"):
        check_options({"jnd_target": {"estimator": str(estimator_file), "terms": value}})


def test_offline_takes_only_all_terms(data, jnd_folder, estimator_file):
    block = {"estimator": str(estimator_file), "mode": "offline", "source_gt": str(data / "train" / "hr")}

    def offline(gan, **changes):
        opt = make_opt(data, "x", {**block, **changes}, gan=gan)
        opt["datasets"]["train"]["dataroot_gt"] = str(jnd_folder)
        return check_options(opt)

    with pytest.raises(JNDOptionError, match="^jnd_target.terms: mode: offline reads only the JND images, so every "
                                             "term sees them, and terms: \\[pixel\\] cannot be honoured; use mode: "
                                             "online, or set terms: all$"):
        offline(False, terms=["pixel"])
    with pytest.raises(JNDOptionError, match="^jnd_target.terms: .*the default of a model with a discriminator, "
                                             "terms: \\[pixel, perceptual\\], cannot be honoured; use mode: online"):
        offline(True)
    assert offline(True, terms="all")["terms"] == list(TERMS)
    assert offline(False)["terms"] is None  # a model without a discriminator: all terms by default
