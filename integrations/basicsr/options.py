"""The ``jnd_target`` block of a BasicSR option file, checked when the options are parsed.

The block holds the adapter's own keys (``enable``, ``mode``, ``source_gt``, ``terms``) and a
:class:`jndplug.spec.TargetSpec` (``estimator``, ``strength``, ``sur``, ``kind``, ``gain``), which
validates its settings itself. Every problem is a :class:`JNDOptionError` whose message starts
with the offending key, raised before BasicSR creates the experiment folder, datasets or networks.
"""

from __future__ import annotations

import difflib
import inspect
import os
from pathlib import Path

from jndplug.errors import JNDPlugValueError
from jndplug.losses import JNDTolerantLoss
from jndplug.precompute import MANIFEST, PrecomputedFolderError, check_precomputed
from jndplug.spec import TargetSpec, TargetSpecError
from jndplug.target import JNDTarget

# the adapter's keys; the target's settings are TargetSpec's fields
ADAPTER_DEFAULTS = {
    "enable": True,        # the block's presence switches JND targets on; `enable: false` turns them off
    "mode": "online",
    "source_gt": None,     # offline only: the original GT folder given to `jndplug precompute SRC --out DST`
    "terms": None,         # which loss terms see the JND image; None: the model's (basicsr.default_terms)
}
MODES = ("online", "offline")
# the loss terms of BasicSR's models that read the ground truth; `adversarial` is every other use of
# model.gt in the step: the discriminator's real samples (and ESRGAN's relativistic generator term)
TERMS = ("pixel", "perceptual", "adversarial")
BLOCK = "jnd_target"


class JNDOptionError(JNDPlugValueError):
    """A bad ``jnd_target`` block, or options that do not fit it; ``key`` names the option."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def check_options(opt: dict) -> dict | None:
    """Validate ``opt['jnd_target']`` against the rest of the options.

    Returns the block with every setting resolved (defaults filled in, the directed image's gain
    included; plain values, which BasicSR logs with the other options; :func:`make_target` of it
    builds the target from the :class:`TargetSpec` validated here), or ``None`` when there is none;
    an empty block (``jnd_target:`` alone, which YAML reads as null) is present, so enabled with the
    defaults. When enabled, this loads the estimator (so a missing file or a ``sur`` it cannot honour
    stops here) and checks the datasets: validation must read the true ground truth, and in offline
    mode ``datasets.train.dataroot_gt`` must be a complete precompute output made with these settings.
    """
    if BLOCK not in opt:
        return None
    block = opt[BLOCK]
    if block is None:  # `jnd_target:` with nothing under it: the documented "presence switches it on"
        block = {}
    if not isinstance(block, dict):
        raise JNDOptionError(BLOCK, f"must be a mapping such as {{enable: true, estimator: default}}, got {block!r}")
    known = [*ADAPTER_DEFAULTS, *TargetSpec.names()]
    unknown = sorted(set(block) - set(known))
    if unknown:
        near = difflib.get_close_matches(unknown[0], known, n=1)
        raise JNDOptionError(f"{BLOCK}.{unknown[0]}", f"unknown key; {f'did you mean {near[0]}? ' if near else ''}"
                                                      f"known keys: {', '.join(known)}")
    cfg = {**ADAPTER_DEFAULTS, **{k: v for k, v in block.items() if k in ADAPTER_DEFAULTS}}
    if not isinstance(cfg["enable"], bool):
        raise JNDOptionError(f"{BLOCK}.enable", f"must be true or false, got {cfg['enable']!r}")
    if cfg["mode"] not in MODES:
        raise JNDOptionError(f"{BLOCK}.mode", f"must be online or offline, got {cfg['mode']!r}")
    if cfg["source_gt"] is not None and cfg["mode"] != "offline":
        raise JNDOptionError(f"{BLOCK}.source_gt", "is only used with mode: offline")
    cfg["terms"] = check_terms(cfg["terms"], cfg["mode"], has_discriminator="network_d" in opt)
    spec = spec_of(block)
    # resolved values, so that BasicSR's dump of the options shows what is trained on
    # the settings of the block's kind (the kind table's), not those of another (gain of kind jnd)
    cfg.update({k: v for k, v in spec.to_mapping().items() if spec.kind in spec.kinds_with(k)})
    _checked[id(cfg)] = (cfg, spec)
    if not cfg["enable"]:
        return cfg

    target = _target_of(spec)
    datasets = opt.get("datasets") or {}
    for phase, dataset in datasets.items():
        gt = dataset.get("dataroot_gt")
        if phase.split("_")[0] == "val" and gt and (Path(gt) / MANIFEST).is_file():
            raise JNDOptionError(f"datasets.{phase}.dataroot_gt",
                                 f"{gt} holds JND images (a `jndplug precompute` output); validation must "
                                 "read the true ground truth")
    train = datasets.get("train")
    if train is not None:
        if cfg["mode"] == "online":
            _check_online(train)
        else:
            _check_offline(cfg, train, target)
    return cfg


def spec_of(block: dict) -> TargetSpec:
    """The :class:`TargetSpec` of a ``jnd_target`` block (its adapter keys left out)."""
    try:
        return TargetSpec.from_mapping({k: v for k, v in block.items() if k not in ADAPTER_DEFAULTS},
                                       where=f"{BLOCK}.")
    except TargetSpecError as exc:
        raise JNDOptionError(exc.key, str(exc)[len(exc.key) + 2:]) from None


# The spec each block returned by check_options was made from, by the block's identity: the model hook
# trains with the spec the start-up check validated instead of parsing the dumped block again. The block
# is held too, so that its id cannot be reused by another dict.
_checked: dict[int, tuple[dict, TargetSpec]] = {}
_made: list[JNDTarget] = []  # the last target made: start-up checks it, the model hook then trains with it


def make_target(cfg: dict) -> JNDTarget:
    """The JNDTarget of a block :func:`check_options` returned, made from the :class:`TargetSpec` it
    validated; estimator errors name ``jnd_target.estimator``. The estimator is loaded once per
    process: a block with the same settings gets the same target."""
    checked = _checked.get(id(cfg))
    if checked is None:
        raise JNDOptionError(BLOCK, "was not checked: import jndplug.integrations.basicsr before BasicSR parses "
                                    "the options, or pass them to check_options(opt) and use the block it returns")
    return _target_of(checked[1])


def _target_of(spec: TargetSpec) -> JNDTarget:
    if _made and _made[0].spec == spec:
        return _made[0]
    try:
        # device=None: the estimator follows self.gt, i.e. this rank's GPU ('cuda:N') under torchrun
        _made[:] = [JNDTarget.from_spec(spec)]
        return _made[0]
    except TargetSpecError as exc:  # the one setting an estimator can refuse: a sur it was not trained for
        raise JNDOptionError(f"{BLOCK}.{exc.key}", f"estimator {spec.estimator!r} was not trained with SUR "
                                                   "conditioning; use sur: null") from None
    except (FileNotFoundError, ValueError) as exc:
        raise JNDOptionError(f"{BLOCK}.estimator", str(exc)) from None


def _check_online(train: dict) -> None:
    gt = train.get("dataroot_gt")
    if gt and (Path(gt) / MANIFEST).is_file():
        raise JNDOptionError("datasets.train.dataroot_gt",
                             f"{gt} already holds JND images (a `jndplug precompute` output); online mode would "
                             "apply the estimator twice. Use mode: offline, or point it at the original GT")
    # JNDTarget takes RGB in [0, 1]; say so now rather than at the first iteration
    for key in ("mean", "std"):
        if train.get(key) is not None:
            raise JNDOptionError(f"datasets.train.{key}", "online JND targets need the ground truth in [0, 1]; "
                                                          "normalise inside the network instead")
    if train.get("color") == "y":
        raise JNDOptionError("datasets.train.color", "JND estimators take RGB images, not the Y channel")


def _check_offline(cfg: dict, train: dict, target: JNDTarget) -> None:
    src = cfg["source_gt"]
    if src is None:
        raise JNDOptionError(f"{BLOCK}.source_gt", "mode: offline needs the original GT folder (SRC of "
                                                   "`jndplug precompute SRC --out DST`) to check that DST is "
                                                   "complete")
    if not os.path.isdir(src):
        raise JNDOptionError(f"{BLOCK}.source_gt", f"not a folder: {src}")
    if not train.get("dataroot_lq"):
        # e.g. RealESRGANDataset: its inputs are degraded from the GT, which offline mode would replace
        raise JNDOptionError("datasets.train.dataroot_lq",
                             "offline mode needs a paired dataset; a dataset that synthesises its inputs from "
                             "the ground truth would degrade the JND image instead. Use mode: online")
    dst = train.get("dataroot_gt")
    if not dst or Path(dst).resolve() == Path(src).resolve():
        redo = f"`jndplug precompute {src} --out JND_FOLDER {target.spec.flags()}`"
        raise JNDOptionError("datasets.train.dataroot_gt",
                             f"{'is jnd_target.source_gt itself' if dst else 'is not set'}; in offline mode it must "
                             f"be the JND folder: run {redo} and set dataroot_gt to JND_FOLDER")
    try:
        check_precomputed(src, dst, target, name=lambda setting: f"{BLOCK}.{setting}")
    except PrecomputedFolderError as exc:
        raise JNDOptionError("datasets.train.dataroot_gt", str(exc)) from None


def check_terms(value, mode: str, has_discriminator: bool) -> list[str] | None:
    """``jnd_target.terms`` as a list in :data:`TERMS` order, or ``None`` (unset: the model's default).

    Offline mode has only the JND images on disk, so every term trains on them: a block that asks
    for anything else, the default of a model with a discriminator (``network_d``) included, is refused.
    """
    key = f"{BLOCK}.terms"
    if value is None or value == "all":
        terms = None if value is None else list(TERMS)
    elif not isinstance(value, list) or not value:
        raise JNDOptionError(key, f"must be all or a list of terms such as [pixel, perceptual], got {value!r}; "
                                  f"known terms: {', '.join(TERMS)}")
    else:
        for term in value:
            if term not in TERMS:
                near = difflib.get_close_matches(str(term), TERMS, n=1)
                raise JNDOptionError(key, f"unknown term {term!r}; {f'did you mean {near[0]}? ' if near else ''}"
                                          f"known terms: {', '.join(TERMS)} (a list), or all")
        terms = [t for t in TERMS if t in value]
    if mode == "offline" and terms != list(TERMS) and (terms is not None or has_discriminator):
        asked = f"terms: [{', '.join(terms)}]" if terms else "the default of a model with a discriminator, " \
                                                               "terms: [pixel, perceptual],"
        raise JNDOptionError(key, f"mode: offline reads only the JND images, so every term sees them, and {asked} "
                                  "cannot be honoured; use mode: online, or set terms: all")
    return terms


# -- a block BasicSR would silently ignore ---------------------------------------------------------

def misplaced_blocks(opt: dict) -> list[str]:
    """Keys other than the top-level ``jnd_target`` that look like such a block (``jnd_targets``,
    ``jnd``, ``datasets.train.jnd_target`` ...), at any depth: BasicSR reads only the top-level one
    and ignores unknown keys, so such a block changes nothing, and without a top-level one the file
    trains the plain baseline."""
    found: list[str] = []

    def walk(node, path: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}.{i}")
        if not isinstance(node, dict):
            return
        # a JND-tolerant loss's own parameters (its `jnd` estimator) are not a block
        own = _LOSS_PARAMETERS if node.get("type") == JNDTolerantLoss.__name__ else ()
        for key, value in node.items():
            name = f"{path}.{key}" if path else str(key)
            if name == BLOCK:
                continue  # the block itself: check_options reports its unknown keys
            if key not in own and _looks_like_block(key):
                found.append(name)
            walk(value, name)

    walk(opt, "")
    return found


def misplaced_message(keys: list[str], has_block: bool = False) -> str:
    if has_block:
        return (f"looks like a {BLOCK} block, but only the top-level one is read and BasicSR ignores this one; "
                f"move its settings into the top-level {BLOCK} block, or remove it")
    return (f"no top-level {BLOCK} block, but {', '.join(keys)} looks like one: BasicSR ignores it and would train "
            f"the plain baseline. Put the block at the top level, spelt `{BLOCK}:`, or remove "
            f"{'it' if len(keys) == 1 else 'them'} to train without JND targets")


_LOSS_PARAMETERS = frozenset(inspect.signature(JNDTolerantLoss).parameters)


def _looks_like_block(key) -> bool:
    # "jnd" catches `jnd:` and `jnd_targets:`; the close match, typos in "jnd" itself (`jdn_target:`)
    return isinstance(key, str) and ("jnd" in key.lower()
                                     or bool(difflib.get_close_matches(key.lower(), [BLOCK], cutoff=0.8)))


# -- VGG weights of a perceptual loss, found before anything is written -----------------------------

def check_vgg_weights(opt: dict) -> None:
    """Make sure the VGG weights of BasicSR's ``PerceptualLoss`` are on disk before training starts.

    BasicSR 1.4.2 (``basicsr/archs/vgg_arch.py``) loads ``VGG_PRETRAIN_PATH`` relative to the
    working folder if it exists, else asks torchvision for the pretrained network, which downloads
    it into torch's hub cache; without network that ends in a long traceback after the experiment
    folder was made. jndplug never downloads: a missing file is one line naming both places and
    where the file comes from, said before anything is written.
    """
    for key, loss in (opt.get("train") or {}).items():
        if not (isinstance(loss, dict) and loss.get("type") == "PerceptualLoss"):
            continue
        basicsr_path, cache_path, url = _vgg_paths(loss.get("vgg_type", "vgg19"))
        if basicsr_path.is_file() or cache_path.is_file():
            continue
        raise JNDOptionError(
            f"train.{key}", f"the perceptual loss needs the VGG weights {cache_path.name}, which are neither at "
            f"{basicsr_path.resolve()} (BasicSR's path) nor at {cache_path} (torchvision's cache); "
            f"download {url} on a machine with network and copy it to one of them")


def _vgg_paths(vgg_type: str) -> tuple[Path, Path, str]:
    import torch
    import torchvision.models
    from basicsr.archs.vgg_arch import VGG_PRETRAIN_PATH

    # only the name and address of the file torchvision would want: nothing is fetched here, the caller
    # refuses to start without it
    url = torchvision.models.get_model_weights(vgg_type).IMAGENET1K_V1.url
    return Path(VGG_PRETRAIN_PATH), Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url
