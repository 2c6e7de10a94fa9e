"""The ``jnd_target`` block of a BasicSR option file, checked when the options are parsed.

Every problem is a :class:`JNDOptionError` whose message starts with the offending key, raised
before BasicSR creates the experiment folder, datasets or networks.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from jndplug.imageio import list_images
from jndplug.precompute import MANIFEST, read_manifest, settings_of
from jndplug.target import KINDS, JNDTarget
from jndplug.weights import load_estimator

DEFAULTS = {
    "enable": True,        # the block's presence switches JND targets on; `enable: false` turns them off
    "estimator": "default",
    "strength": 1.0,
    "sur": None,
    "mode": "online",
    "source_gt": None,     # offline only: the original GT folder given to `jndplug precompute SRC --out DST`
    "kind": "directed",    # directed: the perception-directed JND image (docs/directed.md); jnd: the estimated one
    "gain": None,          # directed only: its sharpening gain (default jndplug.directed.DEFAULT_GAIN)
}
MODES = ("online", "offline")


class JNDOptionError(ValueError):
    """A bad ``jnd_target`` block, or options that do not fit it; ``key`` names the option."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def check_options(opt: dict) -> dict | None:
    """Validate ``opt['jnd_target']`` against the rest of the options.

    Returns the block with defaults filled in, or ``None`` when there is none; an empty block
    (``jnd_target:`` alone, which YAML reads as null) is present, so enabled with the defaults. When enabled, this
    loads the estimator (so a missing file or a ``sur`` it cannot honour stops here) and checks
    the datasets: validation must read the true ground truth, and in offline mode
    ``datasets.train.dataroot_gt`` must be a complete precompute output made with these settings.
    """
    if "jnd_target" not in opt:
        return None
    block = opt["jnd_target"]
    if block is None:  # `jnd_target:` with nothing under it: the documented "presence switches it on"
        block = {}
    if not isinstance(block, dict):
        raise JNDOptionError("jnd_target", f"must be a mapping such as {{enable: true, estimator: default}}, "
                                           f"got {block!r}")
    unknown = sorted(set(block) - set(DEFAULTS))
    if unknown:
        raise JNDOptionError(f"jnd_target.{unknown[0]}", f"unknown key; known keys: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **block}
    if not isinstance(cfg["enable"], bool):
        raise JNDOptionError("jnd_target.enable", f"must be true or false, got {cfg['enable']!r}")
    if cfg["mode"] not in MODES:
        raise JNDOptionError("jnd_target.mode", f"must be online or offline, got {cfg['mode']!r}")
    cfg["strength"] = _number(cfg["strength"], "jnd_target.strength")
    if not math.isfinite(cfg["strength"]) or cfg["strength"] < 0:
        raise JNDOptionError("jnd_target.strength", f"must be a finite number >= 0, got {cfg['strength']}")
    if cfg["sur"] is not None:
        cfg["sur"] = _number(cfg["sur"], "jnd_target.sur")
        if not 0.0 < cfg["sur"] <= 1.0:
            raise JNDOptionError("jnd_target.sur", f"must be in (0, 1] or null, got {cfg['sur']}")
    if not isinstance(cfg["estimator"], str):
        raise JNDOptionError("jnd_target.estimator", f"must be a pretrained name or a .safetensors path, "
                                                     f"got {cfg['estimator']!r}")
    if cfg["kind"] not in KINDS:
        raise JNDOptionError("jnd_target.kind", f"must be {' or '.join(KINDS)}, got {cfg['kind']!r}")
    if cfg["gain"] is not None:
        if cfg["kind"] != "directed":
            raise JNDOptionError("jnd_target.gain", "is only used with kind: directed")
        cfg["gain"] = _number(cfg["gain"], "jnd_target.gain")
        if not math.isfinite(cfg["gain"]) or cfg["gain"] < 0:
            raise JNDOptionError("jnd_target.gain", f"must be a finite number >= 0, got {cfg['gain']}")
    if cfg["source_gt"] is not None and cfg["mode"] != "offline":
        raise JNDOptionError("jnd_target.source_gt", "is only used with mode: offline")
    if not cfg["enable"]:
        return cfg

    target = make_target(cfg)
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


def make_target(cfg: dict) -> JNDTarget:
    """The JNDTarget described by a checked block; estimator errors name ``jnd_target.estimator``."""
    try:
        model = load_estimator(cfg["estimator"])
    except (FileNotFoundError, ValueError) as exc:
        raise JNDOptionError("jnd_target.estimator", str(exc)) from None
    if cfg["sur"] is not None and not model.accepts_sur:
        raise JNDOptionError("jnd_target.sur", f"estimator {cfg['estimator']!r} was not trained with SUR "
                                               "conditioning; use sur: null")
    return JNDTarget(model, strength=cfg["strength"], sur=cfg["sur"], kind=cfg["kind"], gain=cfg["gain"])


def describe_target(target: JNDTarget, estimator: str | None = None) -> str:
    """The settings a JND target really uses, for the training log: the estimator by the name it
    was given (``default``, a file) and its architecture, the strength, and the SUR in effect,
    the estimator's own default when ``sur`` is unset."""
    model, arch = target.model, target.arch_name
    name = f"{estimator} ({arch})" if estimator is not None and str(estimator) != arch else arch
    if not target.accepts_sur:
        sur = "none (the estimator is not SUR-conditioned)"
    elif target.sur is not None:
        sur = f"{target.sur:g}"
    else:
        sur = f"{float(getattr(model, 'default_sur', float('nan'))):g} (the estimator's default; jnd_target.sur sets it)"
    return f"estimator {name}, strength {target.strength:g}, SUR {sur}"


def _number(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JNDOptionError(key, f"must be a number, got {value!r}")
    return float(value)


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
        raise JNDOptionError("jnd_target.source_gt", "mode: offline needs the original GT folder (SRC of "
                                                     "`jndplug precompute SRC --out DST`) to check that DST is "
                                                     "complete")
    if not os.path.isdir(src):
        raise JNDOptionError("jnd_target.source_gt", f"not a folder: {src}")
    if not train.get("dataroot_lq"):
        # e.g. RealESRGANDataset: its inputs are degraded from the GT, which offline mode would replace
        raise JNDOptionError("datasets.train.dataroot_lq",
                             "offline mode needs a paired dataset; a dataset that synthesises its inputs from "
                             "the ground truth would degrade the JND image instead. Use mode: online")
    dst = train.get("dataroot_gt")
    sur = f" --sur {cfg['sur']}" if cfg["sur"] is not None else ""
    # the kind is always spelled out: precompute's default may differ from the one this folder needs
    sur += f" --kind {cfg['kind']}" + (f" --gain {cfg['gain']}" if cfg["gain"] is not None else "")

    def redo(folder):
        return f"run `jndplug precompute {src} --out {folder} --estimator {cfg['estimator']} " \
               f"--strength {cfg['strength']}{sur}`"

    if not dst or Path(dst).resolve() == Path(src).resolve():
        raise JNDOptionError("datasets.train.dataroot_gt",
                             f"{'is jnd_target.source_gt itself' if dst else 'is not set'}; in offline mode it must "
                             f"be the JND folder: {redo('JND_FOLDER')} and set dataroot_gt to JND_FOLDER")
    try:
        manifest = read_manifest(dst)
    except FileNotFoundError as exc:
        raise JNDOptionError("datasets.train.dataroot_gt",
                             f"{exc}. With mode: offline it must be the JND folder; {redo(dst)}") from None
    have, want = manifest["settings"], settings_of(target)
    details = []
    # the fingerprint (architecture, config, weights) identifies the estimator; its file name may differ
    if have.get("estimator_fingerprint") != want["estimator_fingerprint"]:
        configured = Path(str(cfg["estimator"])).name
        details.append(f"jnd_target.estimator is {_describe(configured, want)} but the folder was made with "
                       f"{_describe(manifest.get('weights_file'), have)}")
    for name in ("strength", "sur", "kind", "gain"):
        # a manifest without kind/gain was made with the estimated JND image
        default = "jnd" if name == "kind" else None
        if have.get(name, default) != want.get(name, default):
            details.append(f"jnd_target.{name} is {want.get(name, default)!r} but the folder was made with "
                           f"{have.get(name, default)!r}")
    if details:
        raise JNDOptionError("datasets.train.dataroot_gt",
                             f"{dst} was made with other settings: {'; '.join(details)}; {redo(dst)}")
    missing = []
    for path in list_images(src):
        rel = path.relative_to(src).as_posix()
        entry = manifest["files"].get(rel)
        if entry is None or entry["settings_key"] != manifest["settings_key"] or not (Path(dst) / rel).is_file():
            missing.append(rel)
    if missing:
        raise JNDOptionError("datasets.train.dataroot_gt",
                             f"{dst} lacks the JND image of {len(missing)} file(s) of jnd_target.source_gt "
                             f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); {redo(dst)} "
                             "(it only does what is missing)")


def _describe(name: str | None, settings: dict) -> str:
    name = name or settings.get("arch")
    return f"{name} (fingerprint {str(settings.get('estimator_fingerprint'))[:12]})"
