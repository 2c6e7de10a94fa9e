"""jndplug for BasicSR: one ``jnd_target`` block in the option file turns training JND-adapted.

Importing this module (first, before ``basicsr`` or a BasicSR-based package such as
``realesrgan``)

1. makes ``basicsr==1.4.2`` importable with current torchvision (see :mod:`jndplug.basicsr_compat`);
2. hooks three names in ``basicsr.train``, which ``train_pipeline`` looks up at call time:
   ``parse_options`` (the ``jnd_target`` block is checked at start-up, a block BasicSR would ignore
   is refused, and missing VGG weights of a perceptual loss are named before anything is written;
   each problem stops the run with one line, as a bad command-line flag does),
   ``build_model`` (in online mode the model's ``optimize_parameters`` is wrapped by
   :func:`wrap_model`; in offline mode it is only watched for the first steps' log line)
   and ``load_resume_state`` (resuming also works on CPU).

Any ``model_type`` works because every BasicSR model computes its training losses inside
``optimize_parameters`` from ``self.gt`` set by ``feed_data``, and validation never calls it.
See docs/basicsr.md.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from jndplug.basicsr_compat import install_torchvision_shim
from jndplug.errors import JNDPlugValueError
from jndplug.imageio import ImageReadError, array_to_tensor, read_image
from jndplug.integrations.basicsr._compat import cpu_resume

install_torchvision_shim()

import basicsr.train  # noqa: E402
from basicsr.utils import get_root_logger  # noqa: E402

from basicsr.utils.registry import LOSS_REGISTRY  # noqa: E402

from jndplug.integrations.basicsr.options import (TERMS, JNDOptionError, check_options,  # noqa: E402
                                                  check_vgg_weights, make_target, misplaced_blocks,
                                                  misplaced_message)
from jndplug.losses import JNDTolerantLoss  # noqa: E402
from jndplug.target import JNDTarget  # noqa: E402

# Option files can then use it like any BasicSR loss:
#   pixel_opt: {type: JNDTolerantLoss, jnd: default, kind: l1, loss_weight: 1.0}
LOSS_REGISTRY.register(JNDTolerantLoss)

__all__ = ["JNDOptionError", "TARGET_ATTRIBUTES", "TERMS", "check_options", "default_terms", "wrap_model"]

# the log line on the targets' PSNR comes after this many training steps, in both modes
REPORT_STEPS = 10

# Model attributes holding training targets: `gt`, and the unsharp-masked copy that Real-ESRGAN
# style models compute in feed_data and use for their pixel, perceptual and GAN losses.
TARGET_ATTRIBUTES = ("gt", "gt_usm")
# the losses BasicSR's models call as loss(output, target), by the term they are; every other use of a
# target attribute in the step (the discriminator, Real-ESRGAN's LDL loss) reads the attribute itself
LOSS_ATTRIBUTES = {"pixel": "cri_pix", "perceptual": "cri_perceptual"}


def default_terms(model) -> tuple[str, ...]:
    """Real-ESRGAN's convention for a model with a discriminator (pixel and perceptual losses on the
    target, the discriminator's real samples the true ground truth); every term for one without,
    where nothing but those losses reads the ground truth."""
    has_d = getattr(model, "net_d", None) is not None or getattr(model, "cri_gan", None) is not None
    return ("pixel", "perceptual") if has_d else TERMS


def describe_terms(terms) -> str:
    """Which terms see the JND image, for the log lines."""
    others = [t for t in TERMS if t not in terms]
    return ("the JND image for all terms" if not others else
            f"the JND image for {', '.join(terms)}; the true ground truth for {', '.join(others)}")


def wrap_model(model, target: JNDTarget, report_steps: int = 10, terms=None):
    """Make ``model.optimize_parameters`` train the loss terms in ``terms`` against ``target(gt)``.

    ``terms`` is a subset of :data:`TERMS` (default :func:`default_terms`). With ``adversarial``,
    every tensor in :data:`TARGET_ATTRIBUTES` is replaced by its JND image during each call, so the
    discriminator's real samples and everything else reading ``model.gt`` see it; without, those
    attributes stay true. A pixel or perceptual loss (``model.cri_pix``, ``model.cri_perceptual``)
    whose term is listed the other way is wrapped during the call: its target argument (an attribute,
    or a reshaped view of one, as video models pass it) is swapped for its JND image, or back for the
    true tensor; a target that is neither is passed on as it is. JND images are made
    once per tensor and step (batched, no autograd, on the tensor's device; video clips frame by
    frame), and everything is restored afterwards, so code reading ``model.gt`` between steps sees
    the true ground truth.

    After the first ``report_steps`` steps, one log line gives the mean PSNR of the JND targets
    against the ground truth, so a run whose targets are far off (or identical) shows it early.
    """
    if terms is not None and (isinstance(terms, str) or not terms or set(terms) - set(TERMS)):
        raise JNDPlugValueError(f"wrap_model: terms must be a non-empty list of {', '.join(TERMS)} (TERMS for all), "
                                f"got {terms!r}")
    terms = default_terms(model) if terms is None else tuple(t for t in TERMS if t in terms)
    upstream = model.optimize_parameters
    psnrs: list[torch.Tensor] = []  # per JND image of the first steps, on the device: read once, at the report
    steps = 0

    @functools.wraps(upstream)
    def optimize_parameters(*args, **kwargs):
        nonlocal steps
        steps += 1
        true = {name: getattr(model, name) for name in TARGET_ATTRIBUTES
                if isinstance(getattr(model, name, None), torch.Tensor)}
        jnds: dict[str, torch.Tensor] = {}

        def jnd_of(name: str) -> torch.Tensor:
            if name not in jnds:
                tensor = true[name]
                # video models hold [B, T, 3, H, W] clips: JND images frame by frame
                jnds[name] = target(tensor.flatten(0, -4)).view_as(tensor)
                if steps <= report_steps:
                    psnrs.append(_mean_psnr(jnds[name], tensor))
            return jnds[name]

        def route(value, want_jnd: bool):
            # the loss was given what the attribute holds: the true tensor, or (with adversarial) its JND image
            for name, tensor in true.items():
                if _same_data(value, tensor if want_jnd else jnds[name]):
                    return (jnd_of(name) if want_jnd else tensor).view_as(value)
            return value

        adversarial = "adversarial" in terms
        if adversarial:
            for name in true:
                setattr(model, name, jnd_of(name))
        losses = {attr: getattr(model, attr) for term, attr in LOSS_ATTRIBUTES.items()
                  if (term in terms) != adversarial and getattr(model, attr, None) is not None}
        for attr, loss in losses.items():
            setattr(model, attr, _routed(loss, route, want_jnd=not adversarial))
        try:
            result = upstream(*args, **kwargs)
        finally:
            for name, tensor in true.items():
                setattr(model, name, tensor)
            for attr, loss in losses.items():
                setattr(model, attr, loss)
        if steps == report_steps and psnrs:
            get_root_logger().info(
                f"jndplug: JND targets over the first {report_steps} steps: mean PSNR "
                f"{torch.stack(psnrs).mean().item():.2f} dB against the ground truth "
                f"({target.describe()}; {describe_terms(terms)})")
        return result

    model.optimize_parameters = optimize_parameters
    return model


def _routed(loss, route, want_jnd: bool):
    def routed(output, target, *args, **kwargs):
        return loss(output, route(target, want_jnd), *args, **kwargs)

    return routed


def _same_data(a, b: torch.Tensor) -> bool:
    """Whether ``a`` is ``b`` or a reshaped view of it (``gt.view(-1, c, h, w)``)."""
    return a is b or (isinstance(a, torch.Tensor) and a.data_ptr() == b.data_ptr() and a.numel() == b.numel()
                      and a.is_contiguous() and b.is_contiguous())


def _report_offline_targets(model, jnd_root: str, source_root: str, description: str,
                           report_steps: int = 10):
    """Offline mode's counterpart of :func:`wrap_model`'s log line, the model otherwise untouched.

    The training batches are random crops of the files under ``jnd_root`` (the ``jndplug
    precompute`` folder) and the crop positions are not kept, so after ``report_steps`` steps the
    line gives the mean PSNR of the whole files those crops came from (``gt_path`` of each batch
    ``feed_data`` received) against their originals under ``source_root``, at the same relative
    paths. A dataset whose ``gt_path`` is not a file (an LMDB key) gets no line.
    """
    feed, step = model.feed_data, model.optimize_parameters
    batch: list[str] = []
    seen: dict[str, None] = {}  # the files of the steps so far, in order, each once
    steps = 0

    @functools.wraps(feed)
    def feed_data(data, *args, **kwargs):
        paths = data.get("gt_path") if isinstance(data, dict) else None
        batch[:] = [paths] if isinstance(paths, str) else [p for p in paths or () if isinstance(p, str)]
        return feed(data, *args, **kwargs)

    @functools.wraps(step)
    def optimize_parameters(*args, **kwargs):
        nonlocal steps
        # validation calls feed_data too, but never this: the last batch fed is a training batch
        seen.update(dict.fromkeys(batch))
        steps += 1
        if steps == report_steps:
            model.feed_data, model.optimize_parameters = feed, step  # nothing more to watch
            _log_file_psnr(list(seen), jnd_root, source_root, report_steps, description)
        return step(*args, **kwargs)

    model.feed_data, model.optimize_parameters = feed_data, optimize_parameters
    return model


def _log_file_psnr(files: list[str], jnd_root: str, source_root: str, steps: int, description: str) -> None:
    logger = get_root_logger()
    if not logger.isEnabledFor(logging.INFO):  # ranks other than 0 under torchrun: no line, no reading
        return
    psnrs = []
    for path in files:
        original = os.path.join(source_root, os.path.relpath(path, jnd_root))
        try:
            psnrs.append(_mean_psnr(array_to_tensor(read_image(path))[None],
                                    array_to_tensor(read_image(original))[None]))
        except (OSError, ImageReadError):
            continue  # a check for the log must never stop the training it reports on
    if psnrs:
        logger.info(
            f"jndplug: JND targets over the first {steps} steps: mean PSNR {torch.stack(psnrs).mean().item():.2f} "
            f"dB against the ground truth (whole images of the {len(psnrs)} files they were cropped from; "
            f"{description})")


def _mean_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the images (frames) of the PSNR of ``a`` against ``b``, both in [0, 1].

    A tensor on the training device, unlike ``jndplug.pixels.psnr``'s float: reading a float back
    would synchronise the GPU in every one of the first steps, and the log needs one mean only."""
    mse = (a.float() - b.float()).pow(2).flatten(0, -4).mean(dim=(-3, -2, -1))
    return (-10 * torch.log10(mse.clamp_min(1e-10))).mean()


def _parse_options(upstream):
    @functools.wraps(upstream)
    def parse_options(root_path, is_train=True):
        opt, args = upstream(root_path, is_train)
        try:
            misplaced = misplaced_blocks(opt)
            if misplaced:
                raise JNDOptionError(misplaced[0], misplaced_message(misplaced, has_block="jnd_target" in opt))
            if is_train:
                check_vgg_weights(opt)
            cfg = check_options(opt)
        except JNDOptionError as exc:
            # one line, as argparse reports a bad flag in this same function: before BasicSR's log
            # file exists, so the console is the only place it can go, and the run must not go on
            raise SystemExit(f"error: {exc}") from exc
        if cfg is not None:
            opt["jnd_target"] = cfg  # resolved values, logged by BasicSR with the other options
        return opt, args

    return parse_options


def _build_model(upstream):
    @functools.wraps(upstream)
    def build_model(opt):
        model = upstream(opt)
        cfg = opt.get("jnd_target")
        if not (cfg and cfg["enable"]):
            return model
        logger = get_root_logger()
        target = make_target(cfg)  # from the spec parse_options validated, with the estimator it loaded
        if cfg["mode"] == "offline":
            jnd_root = opt["datasets"]["train"]["dataroot_gt"]
            logger.info(f"jndplug: offline JND targets, read from {jnd_root} ({target.describe()})")
            return _report_offline_targets(model, jnd_root, cfg["source_gt"], target.describe(), REPORT_STEPS)
        terms = default_terms(model) if cfg["terms"] is None else cfg["terms"]
        logger.info(f"jndplug: online JND targets for {type(model).__name__}: {target.describe()}; "
                    f"{describe_terms(terms)}")
        return wrap_model(model, target, REPORT_STEPS, terms)

    return build_model


# Run once per process: this package has one import path (see jndplug/integrations/__init__.py).
basicsr.train.parse_options = _parse_options(basicsr.train.parse_options)
basicsr.train.build_model = _build_model(basicsr.train.build_model)
basicsr.train.load_resume_state = cpu_resume(basicsr.train.load_resume_state)
