"""The arms of ``bench sr`` beside the plain targets, named by their prefix in ``--targets``
(``perceptual:``, ``gan:``, ``post:``): which arm a target is, the checks of its spelling (a ``gan:``
arm's ``terms=`` included), and the loss terms of the perceptual-loss and GAN fine-tunes
(``sr.finetune`` runs them, ``sr.post_sharpen`` the post-sharpening)."""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F

from jndplug.bench.common import BenchError
from jndplug.bench.recipe import UNTRANSFORMED, transform_specs

# targets that train against the ground truth itself (with their own loss), train nothing, or train a GAN
PERCEPTUAL, POST, GAN = "perceptual:", "post:", "gan:"
# SRGAN's balance (BasicSR's train_SRGAN_x4 recipe: pixel 1e-2, perceptual 1, GAN 5e-3), with our
# VGG16 trunk; the discriminator starts from scratch at GAN_D_LR, the generator uses --finetune-lr
GAN_WEIGHTS = {"pixel": 1e-2, "perceptual": 1.0, "adversarial": 5e-3}
GAN_D_LR = 1e-4
# the terms a gan: arm's image can replace the ground truth in (gan:TRANSFORM,terms=pixel+perceptual);
# adversarial: the discriminator's real samples
GAN_TERMS = tuple(GAN_WEIGHTS)
TERMS_OPTION = "terms="
# Real-ESRGAN's recipe for its USM ground truth (l1_gt_usm, percep_gt_usm, gan_gt_usm: True, True,
# False), gan:usm's default; every other gan: arm defaults to all terms, what its label meant before
# terms= existed
USM_TERMS = ("pixel", "perceptual")


def arm_of(target: str) -> str:
    """``gt``, ``tolerant``, ``perceptual``, ``post``, ``gan`` or ``transform`` (a screen transform of the GT)."""
    if target in UNTRANSFORMED:
        return target
    for prefix in (PERCEPTUAL, POST, GAN):
        if target.startswith(prefix):
            return prefix[:-1]
    return "transform"


def images_of(target: str) -> str:
    """The training images a target's fine-tune compares with: ``gt`` or a transform's label."""
    inner = gan_parts(target)[0] if arm_of(target) == "gan" else target
    return inner if arm_of(inner) == "transform" else "gt"


def gan_parts(target: str) -> tuple[str, tuple[str, ...]]:
    """``(TARGET, terms)`` of a ``gan:`` target: what it trains with (``terms=`` taken out of its
    options) and the terms in which that image replaces the ground truth, in ``GAN_TERMS`` order."""
    name, colon, rest = target[len(GAN):].partition(":")
    items = rest.split(",") if colon else []
    given = [item[len(TERMS_OPTION):] for item in items if item.startswith(TERMS_OPTION)]
    kept = [item for item in items if not item.startswith(TERMS_OPTION)]
    inner = name + (":" + ",".join(kept) if kept else "")
    if not given:
        return inner, USM_TERMS if name == "usm" else GAN_TERMS
    if len(given) > 1 or inner == "gt":
        raise BenchError(f"--targets {target}: give terms= once, to a gan:TRANSFORM (gan:gt trains every term on "
                         "the ground truth)")
    words = given[0].split("+")
    if words == ["all"]:
        return inner, GAN_TERMS
    for word in words:
        if word not in GAN_TERMS:
            near = difflib.get_close_matches(word, GAN_TERMS, n=1)
            raise BenchError(f"--targets {target}: unknown term {word!r}; {f'did you mean {near[0]}? ' if near else ''}"
                             f"write terms=all or terms=A+B... with terms of {', '.join(GAN_TERMS)}")
    return inner, tuple(t for t in GAN_TERMS if t in words)


def perceptual_weight(target: str) -> float:
    key, eq, value = target[len(PERCEPTUAL):].partition("=")
    try:
        weight = float(value) if key == "weight" and eq else float("nan")
    except ValueError:
        weight = float("nan")
    if not weight > 0 or weight == float("inf"):
        raise BenchError(f"--targets {target}: write perceptual:weight=W with W a number > 0")
    return weight


def check_arms(targets: list[str]) -> None:
    """Refuse a badly written arm of ``targets``."""
    for t in targets:
        if arm_of(t) == "perceptual":
            perceptual_weight(t)
        elif arm_of(t) == "post":
            transform_specs(["gt", t[len(POST):]])
        elif arm_of(t) == "gan" and arm_of(gan_parts(t)[0]) not in ("gt", "transform"):
            raise BenchError(f"--targets {t}: write gan:gt or gan:TRANSFORM (e.g. gan:directed:strength=2)")
        if arm_of(t) == "gan" and "gan:gt" not in targets:
            raise BenchError(f"--targets {t}: add gan:gt, the GAN baseline every gan: target is compared with")


def feature_network(target: str, device: str) -> torch.nn.Module:
    from jndplug.datagen.recipes import FeatureNetwork

    features = FeatureNetwork().to(device).eval()
    if "stlpips" not in features.source["weights"]:  # a random trunk is no perceptual loss a user would run
        raise BenchError(f"--targets {target}: the VGG16 weights bundled with stlpips-pytorch are missing "
                         "(pip install 'jndplug[perceptual]')")
    return features


class GANTerm:
    """A small spectral-norm patch discriminator and its non-saturating losses.

    Small on purpose: the fine-tune is a few hundred CPU steps from a converged generator, and
    spectral norm keeps a discriminator trained from scratch from overpowering it that early.
    """

    def __init__(self, device: str, features: int = 64):
        sn = torch.nn.utils.parametrizations.spectral_norm
        layers, width = [torch.nn.Conv2d(3, features, 3, 1, 1), torch.nn.LeakyReLU(0.2)], features
        for _ in range(3):  # three stride-2 stages: each logit sees about 46 px of a 48 px patch
            layers += [sn(torch.nn.Conv2d(width, 2 * width, 4, 2, 1)), torch.nn.LeakyReLU(0.2)]
            width *= 2
        layers.append(torch.nn.Conv2d(width, 1, 3, 1, 1))
        self.net = torch.nn.Sequential(*layers).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=GAN_D_LR, betas=(0.9, 0.99))

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        logits = self.net(fake)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        r, f = self.net(real), self.net(fake)
        loss = (F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
                + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
