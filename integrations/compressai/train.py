"""Train or fine-tune a CompressAI codec against JND images: ``train(TrainSettings(...))``.

The method is CompressAI's example training (``examples/train.py``): rate-distortion loss
``lmbda * 255^2 * MSE + bpp`` (CompressAI's ``RateDistortionLoss``), a second optimiser for the
entropy bottlenecks' auxiliary loss, gradient clipping, ``ReduceLROnPlateau`` on the test loss,
latest and best checkpoints. One change: with a JND target (``settings.jnd``, a
:class:`jndplug.spec.TargetSpec`) the MSE compares the reconstruction with the JND image of the
input crop instead of the crop itself; the rate term, the model and the input are unchanged.
Without one the run is the plain CompressAI baseline.

``dataset`` takes CompressAI's layout (``DIR/train`` and ``DIR/test``) or, without a ``train``
subfolder, a flat folder of training images and no test set. Outputs in ``out``:
``checkpoint.pth.tar`` (latest: weights, both optimisers, scheduler, progress, RNG),
``checkpoint_best_loss.pth.tar``, ``history.json`` (one entry per epoch) and ``model.pth.tar``
(final weights with updated entropy-coder tables, loadable by CompressAI and by ``evaluate``).

The command line is ``python -m jndplug.integrations.compressai.train`` (``cli.py`` maps its flags
to :class:`TrainSettings`; docs/compressai.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import torch
from compressai.losses import RateDistortionLoss
from torch.utils.data import DataLoader
from tqdm import tqdm

from jndplug.imageio import atomic_write
from jndplug.losses import JNDTolerantRateDistortionLoss
from jndplug.precompute import settings_of
from jndplug.settings import flag
from jndplug.spec import TargetSpec
from jndplug.target import JNDTarget

from jndplug.integrations.compressai.codec import (MODEL_NAMES, CodecError, build_model, check_model_name,
                                                   check_quality, default_lambda, downsampling_factor, load_weights,
                                                   read_checkpoint, state_dict_of)
from jndplug.integrations.compressai.data import (CropDataset, EpochSampler, check_images, check_offline,
                                                  split_folders)
from jndplug.integrations.compressai.steps import SUMS, make_optimizers, test_epoch, train_step

FORMAT = "jndplug-compressai-checkpoint/1"
LAST, BEST, FINAL, HISTORY = "checkpoint.pth.tar", "checkpoint_best_loss.pth.tar", "model.pth.tar", "history.json"
# a resumed run must train the same thing; everything else (epochs, steps, device...) may change
RESUME_KEYS = ("model", "quality", "lmbda", "patch_size", "batch_size", "seed", "dataset", "jnd")
MODES = ("online", "offline")


def _cuda_if_available() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class TrainSettings:
    """One training run. ``jnd``: the JND target (None: the CompressAI baseline, or the tolerant loss);
    ``jnd_mode`` offline reads its images from ``jnd_offline_dir`` (``jndplug precompute``);
    ``jnd_tolerant``: MSE that forgives error within the original's JND (``tolerance_estimator``,
    ``tolerance_scale``) instead of a moved target. ``out`` default: runs/MODEL-qQUALITY-(jnd|original).

    Each field is also the command line's flag (``jndplug.settings``, ``cli.py``); ``jnd`` and
    ``tolerance_estimator`` come from the target's ``--jnd-*`` flags, which ``TargetSpec`` owns."""

    model: str = flag(help=f"CompressAI model: {', '.join(MODEL_NAMES)}")
    quality: int = flag(help="zoo quality (1-8; 1-6 for cheng2020)")
    dataset: str = flag(help="DIR/train (+ DIR/test), or a flat folder of training images")
    # keyword-only from here, so that the flags' order (the --help listing) may differ from the positional one
    _: KW_ONLY
    checkpoint: str | None = flag(None, "start from these weights (a CompressAI .pth.tar or a checkpoint of this "
                                        "command); without it training starts from scratch; with --resume, the "
                                        "run's original --checkpoint may be given again")
    jnd: TargetSpec | None = flag(None, command_line=False)
    # omitted=None: the command refuses these flags without --jnd-target or --jnd-tolerant, so it must see them given
    jnd_mode: str = flag("online", "online (default): JND of each crop computed in the loop; offline: read from "
                                   "--jnd-offline-dir", choices=MODES, omitted=None)
    jnd_offline_dir: str | None = flag(None, "with --jnd-mode offline: the output of `jndplug precompute DATASET "
                                             "--out DIR` with the same target flags")
    jnd_tolerant: bool = flag(False, "instead of moving the target: MSE that ignores error within the per-pixel JND "
                                     "of the original (jndplug.losses.JNDTolerantLoss with --jnd-estimator)")
    tolerance_estimator: str = flag("default", command_line=False)
    tolerance_scale: float = flag(1.0, "scale of the tolerance band (default 1)", option="--jnd-tolerance-scale",
                                  omitted=None)
    lmbda: float | None = flag(None, "rate-distortion trade-off (default: CompressAI's for the quality)")
    epochs: int = 100
    max_steps: int | None = flag(None, "stop after this many optimiser steps in total")
    batch: int = flag(16, "batch size (default 16)")
    test_batch: int = flag(64, "test batch size (default 64)")
    patch: int = flag(256, "square training crop, a multiple of the model's downsampling factor (default 256)")
    lr: float = flag(1e-4, "learning rate (default 0.0001)")
    aux_lr: float = flag(1e-3, "auxiliary learning rate (default 0.001)")
    clip_max_norm: float = flag(1.0, "gradient clipping (0 disables)")
    workers: int = flag(2, "data-loading processes")
    seed: int = 0
    device: str = flag(help="cpu, cuda, cuda:1 ... (default: cuda if available)", factory=_cuda_if_available)
    out: str | None = flag(None, "output folder (default: runs/MODEL-qQUALITY-(jnd|original))")
    save_every: int = flag(1000, "also save the latest checkpoint every N steps")
    resume: bool = flag(False, "continue from OUT/checkpoint.pth.tar")
    overwrite: bool = flag(False, "replace the run already in --out")

    @property
    def save_dir(self) -> Path:
        return Path(self.out or f"runs/{self.model}-q{self.quality}-{'jnd' if self.jnd else 'original'}")


def train(s: TrainSettings) -> Path:
    """Run the training ``s`` describes; returns the output folder."""
    _check(s)
    lmbda = s.lmbda if s.lmbda is not None else default_lambda(s.quality)
    save_dir = s.save_dir
    device = torch.device(s.device)
    torch.manual_seed(s.seed)

    root = Path(s.dataset)
    train_files, test_files = split_folders(root)
    model = build_model(s.model, s.quality)
    factor = downsampling_factor(model)
    if s.patch < factor or s.patch % factor:
        raise CodecError(f"--patch {s.patch} must be a multiple of {factor}, the downsampling factor of {s.model}")
    check_images(train_files + test_files, s.patch, f"the {s.patch}x{s.patch} training crop (--patch)")
    target, jnd_root, jnd_settings = _jnd_source(s, root, train_files + test_files)
    config = {"model": s.model, "quality": s.quality, "lmbda": lmbda, "patch_size": s.patch,
              "batch_size": s.batch, "seed": s.seed, "dataset": str(root.resolve()), "jnd": jnd_settings}
    if s.jnd_tolerant:
        config["jnd"] = {"tolerant": settings_of(JNDTarget(s.tolerance_estimator, kind="jnd")),
                         "scale": s.tolerance_scale}

    resumed = _initial_weights(model, s, save_dir, config)
    if resumed is not None:  # the weights the run began with stay on record, through every resume
        s = dataclasses.replace(s, checkpoint=(resumed.get("settings") or {}).get("checkpoint"))
    model.to(device)
    run = _Run(s, model, config, save_dir, device, target, jnd_root)
    if resumed is not None:
        run.restore(resumed)
    criterion = (JNDTolerantRateDistortionLoss(lmbda, s.tolerance_estimator, s.tolerance_scale).to(device)
                 if s.jnd_tolerant else RateDistortionLoss(lmbda=lmbda))
    train_set = CropDataset(train_files, root, s.patch, seed=s.seed, jnd_root=jnd_root)
    test_set = CropDataset(test_files, root, s.patch, random=False, jnd_root=jnd_root) if test_files else None
    where = (f"resuming {save_dir / LAST} at step {run.progress['step']} (epoch {run.progress['epoch']})"
             if resumed is not None else f"saving to {save_dir}")
    print(f"{s.model} q{s.quality}, lambda {lmbda}, {len(train_files)} training / {len(test_files)} test "
          f"images, target: {describe(s)}, {where}", file=sys.stderr)
    steps_per_epoch = run.epochs(criterion, train_set, test_set)
    if run.saved_at != run.progress["step"]:
        run.save(LAST)
    # final weights with entropy-coder tables computed, as CompressAI's `update_model` would leave them
    print("computing the entropy-coder tables of the final model ...", file=sys.stderr)
    model.update(force=True)
    with atomic_write(save_dir / FINAL) as f:
        torch.save({"format": "jndplug-compressai-model/1", **config, "state_dict": model.state_dict()}, f)
    print(_summary(s, run.progress, steps_per_epoch, run.history, save_dir), file=sys.stderr)
    return save_dir


def _check(s: TrainSettings) -> None:
    """Refuse settings that contradict themselves, or a run that would overwrite another, before anything is read."""
    check_model_name(s.model)
    check_quality(s.model, s.quality)
    if s.jnd_tolerant and s.jnd is not None:
        raise CodecError("--jnd-tolerant and --jnd-target are alternatives: the tolerance band is measured on "
                         "the original, so choose one")
    if s.jnd_mode not in MODES:
        raise CodecError(f"--jnd-mode must be {' or '.join(MODES)}, got {s.jnd_mode!r}")
    if s.jnd_mode == "offline" and not s.jnd_offline_dir:
        raise CodecError("--jnd-mode offline needs --jnd-offline-dir "
                         "(made by `jndplug precompute DATASET --out DIR`)")
    if s.jnd_offline_dir and s.jnd_mode != "offline":
        raise CodecError(f"--jnd-offline-dir {s.jnd_offline_dir} is read only in offline mode: add --jnd-mode "
                         "offline to train on its JND images, or drop --jnd-offline-dir to compute them online")
    previous = [n for n in (LAST, HISTORY) if (s.save_dir / n).is_file()]
    if previous and not s.resume and not s.overwrite:
        raise CodecError(f"{s.save_dir} holds a previous run ({', '.join(previous)}): add --resume to continue "
                         "it, choose another --out, or add --overwrite to replace it")


def _jnd_source(s: TrainSettings, root: Path, files: list[Path]):
    """``(target, jnd_root, settings)``: where the distortion target comes from, and its settings for the checkpoint.

    Online, ``target`` computes the JND image of each crop; offline, the crops are read from
    ``jnd_root``; for the baseline (and the tolerant loss) all three are None.
    """
    if s.jnd is None:
        return None, None, None
    try:
        target = JNDTarget.from_spec(s.jnd)
    except (ValueError, TypeError) as exc:  # the estimator file, already explained
        raise CodecError(str(exc)) from exc
    jnd_settings = {**settings_of(target), "mode": s.jnd_mode}
    if s.jnd_mode != "offline":
        return target, None, jnd_settings
    jnd_root = Path(s.jnd_offline_dir)
    check_offline(root, jnd_root, files, target)
    return None, jnd_root, jnd_settings  # the JND images come from the folder


def _initial_weights(model, s: TrainSettings, save_dir: Path, config: dict) -> dict | None:
    """Load the weights the run starts from; returns the checkpoint being resumed, if any."""
    resumed = read_checkpoint(save_dir / LAST) if s.resume else None
    if resumed is not None:
        _check_resume(resumed, config, save_dir / LAST)
        _check_original_checkpoint(resumed, s.checkpoint, save_dir / LAST)
        load_weights(model, state_dict_of(resumed), s.model, s.quality, str(save_dir / LAST))
    elif s.checkpoint:
        load_weights(model, state_dict_of(read_checkpoint(s.checkpoint), s.checkpoint), s.model, s.quality,
                     s.checkpoint)
    else:
        print(f"note: no --checkpoint, so {s.model} starts from random weights: this trains a codec from "
              "scratch, which takes far longer than fine-tuning (this command's defaults, CompressAI's, are 100 "
              "epochs at learning rate 1e-4); to fine-tune, give --checkpoint with CompressAI's weights for this "
              "model and quality", file=sys.stderr)
    return resumed


class _Run:
    """The optimisers, schedule, progress and history of one run, and how they are saved."""

    def __init__(self, s: TrainSettings, model, config: dict, save_dir: Path, device: torch.device, target, jnd_root):
        self.s, self.model, self.config, self.save_dir, self.device = s, model, config, save_dir, device
        self.target, self.jnd_root = target, jnd_root
        self.optimizers = make_optimizers(model, s.lr, s.aux_lr)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizers["net"], "min")
        self.progress = {"epoch": 0, "epoch_step": 0, "step": 0, "best_loss": math.inf,
                         "sums": dict.fromkeys(SUMS, 0.0)}
        self.history: list[dict] = []
        self.saved_at = None  # the step of the latest checkpoint this run wrote

    def restore(self, resumed: dict) -> None:
        self.optimizers["net"].load_state_dict(resumed["optimizer"])
        self.optimizers["aux"].load_state_dict(resumed["aux_optimizer"])
        self.scheduler.load_state_dict(resumed["lr_scheduler"])
        self.progress = resumed["progress"]
        path = self.save_dir / HISTORY
        history = json.loads(path.read_text()) if path.is_file() else []
        # an epoch logged after the checkpoint was saved is redone, so it must not appear twice
        self.history = [e for e in history if e["epoch"] < self.progress["epoch"]]
        torch.set_rng_state(resumed["rng"]["torch"])
        if self.device.type == "cuda" and resumed["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"], self.device)

    def save(self, name: str) -> None:
        if name == LAST:
            self.saved_at = self.progress["step"]
        device = self.device
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        ckpt = {"format": FORMAT, **self.config, "state_dict": self.model.state_dict(),
                "optimizer": self.optimizers["net"].state_dict(), "aux_optimizer": self.optimizers["aux"].state_dict(),
                "lr_scheduler": self.scheduler.state_dict(), "progress": self.progress, "rng": rng,
                "settings": _plain(self.s)}
        with atomic_write(self.save_dir / name) as f:
            torch.save(ckpt, f)

    def split(self, batch):
        """``(input, distortion target)`` of a batch, on the device."""
        x, jnd = batch if self.jnd_root is not None else (batch, None)
        x = x.to(self.device, non_blocking=True)
        if jnd is not None:
            return x, jnd.to(self.device, non_blocking=True)
        return x, (self.target(x) if self.target is not None else x)

    def max_steps_reached(self) -> bool:
        return self.s.max_steps is not None and self.progress["step"] >= self.s.max_steps

    def epochs(self, criterion, train_set, test_set) -> int:
        """Train epoch after epoch until --epochs or --max-steps; returns the steps of a whole epoch."""
        s, progress = self.s, self.progress
        steps_per_epoch = math.ceil(len(train_set) / s.batch)
        sampler = EpochSampler(len(train_set), s.seed)
        done = self.max_steps_reached()
        while progress["epoch"] < s.epochs and not done:
            epoch = progress["epoch"]
            train_set.epoch = epoch
            sampler.set_epoch(epoch, skip=progress["epoch_step"] * s.batch)
            # a private generator: DataLoader otherwise draws its worker seed from the global RNG, which
            # the checkpoint restores, so a resumed run would diverge from an uninterrupted one
            loader = DataLoader(train_set, batch_size=s.batch, sampler=sampler, num_workers=s.workers,
                                pin_memory=self.device.type == "cuda",
                                generator=torch.Generator().manual_seed(s.seed))
            done = self._epoch_steps(criterion, loader, epoch, steps_per_epoch)
            del loader  # ends the loader's worker processes now
            entry = {"epoch": epoch, "step": progress["step"], "lr": self.optimizers["net"].param_groups[0]["lr"],
                     **{f"train_{k}": v / max(progress["epoch_step"], 1) for k, v in progress["sums"].items()}}
            if progress["epoch_step"] < steps_per_epoch:
                self._end_partial_epoch(entry, criterion, test_set)
                break
            self._end_epoch(entry, criterion, test_set)
        return steps_per_epoch

    def _epoch_steps(self, criterion, loader, epoch: int, steps_per_epoch: int) -> bool:
        """The training steps of one epoch; returns whether --max-steps ended it."""
        progress = self.progress
        self.model.train()
        # counted by hand: a bar wrapping the loader would not count the step a --max-steps break ends on
        bar = tqdm(desc=f"epoch {epoch}", initial=progress["epoch_step"], total=steps_per_epoch, unit="batch")
        done = False
        for batch in loader:
            values = train_step(self.model, criterion, self.optimizers, *self.split(batch), self.s.clip_max_norm)
            for k in SUMS:
                progress["sums"][k] += values[k]
            progress["step"] += 1
            progress["epoch_step"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4g}", bpp=f"{values['bpp_loss']:.3f}",
                            mse=f"{values['mse_loss']:.3g}", aux=f"{values['aux_loss']:.3g}")
            done = self.max_steps_reached()
            if done:
                break
            if self.s.save_every and progress["step"] % self.s.save_every == 0:
                self.save(LAST)
        bar.close()
        return done

    def _end_partial_epoch(self, entry: dict, criterion, test_set) -> None:
        # stopped mid-epoch by --max-steps: the checkpoint first (the test pass draws no random
        # numbers, but --resume must continue from exactly here), then the partial epoch's entry,
        # which a resumed run replaces by the whole epoch's
        self.save(LAST)
        entry.update(partial=True, epoch_steps=self.progress["epoch_step"])
        if test_set is not None:
            entry.update(test_epoch(self.model, criterion, test_set, self.s.test_batch, self.split))
        self.history.append(entry)
        _write_history(self.save_dir, self.history)
        print(json.dumps(entry), file=sys.stderr)

    def _end_epoch(self, entry: dict, criterion, test_set) -> None:
        progress = self.progress
        if test_set is not None:
            entry.update(test_epoch(self.model, criterion, test_set, self.s.test_batch, self.split))
        loss = entry.get("test_loss", entry["train_loss"])
        self.scheduler.step(loss)
        is_best = loss < progress["best_loss"]
        progress.update(epoch=entry["epoch"] + 1, epoch_step=0, sums=dict.fromkeys(SUMS, 0.0),
                        best_loss=min(loss, progress["best_loss"]))
        self.history.append(entry)
        print(json.dumps(entry), file=sys.stderr)
        _write_history(self.save_dir, self.history)
        self.save(LAST)
        if is_best:
            self.save(BEST)


def _write_history(save_dir: Path, history: list[dict]) -> None:
    with atomic_write(save_dir / HISTORY, "w") as f:
        json.dump(history, f, indent=1)


def _summary(s: TrainSettings, progress: dict, steps_per_epoch: int, history: list[dict], save_dir: Path) -> str:
    """The closing lines of a run: where it stopped, its last losses and what it wrote."""
    if progress["epoch"] >= s.epochs:
        why = f"finished {s.epochs} epoch(s)"
    else:
        why = (f"stopped at --max-steps {s.max_steps} (epoch {progress['epoch']}, step "
               f"{progress['epoch_step']} of {steps_per_epoch}); --resume with a larger --max-steps continues")
    lines = [f"{why}: {progress['step']} steps in all"]
    if history:
        last = history[-1]
        parts = [f"{k[len('train_'):]} {last[k]:.4g}" for k in ("train_loss", "train_bpp_loss", "train_mse_loss")]
        test = [f"{k[len('test_'):]} {last[k]:.4g}" for k in ("test_loss", "test_bpp_loss", "test_mse_loss")
                if k in last]
        lines.append(f"last {'partial ' if last.get('partial') else ''}epoch {last['epoch']}: train "
                     + ", ".join(parts) + ("; test " + ", ".join(test) if test else ""))
    lines.append(f"wrote {save_dir / FINAL}, {save_dir / LAST} and {save_dir / HISTORY}")
    return "\n".join(lines)


def _check_resume(ckpt: dict, config: dict, path: Path) -> None:
    if ckpt.get("format") != FORMAT:
        raise CodecError(f"{path} is not a checkpoint of this command; cannot resume from it")
    differ = []
    for key in RESUME_KEYS:
        have, want = ckpt.get(key), config[key]
        if isinstance(have, dict) and isinstance(want, dict):  # the JND settings: name the keys that differ
            differ += [(f"{key}.{k}", have.get(k), want.get(k)) for k in sorted(set(have) | set(want))
                       if have.get(k) != want.get(k)]
        elif have != want:
            differ.append((key, have, want))
    if differ:
        raise CodecError(f"cannot resume from {path}: it was trained with other settings ("
                         + ", ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in differ)
                         + "); train into another --out, or resume with the settings it was trained with")


def _check_original_checkpoint(ckpt: dict, given: str | None, path: Path) -> None:
    """``--checkpoint`` with ``--resume``: the command line of the first run, given again, is accepted
    only if it names the weights that run started from (the resumed weights replace them anyway)."""
    if given is None:
        return
    original = (ckpt.get("settings") or {}).get("checkpoint")
    if original is None or Path(original).resolve() != Path(given).resolve():
        began = f"--checkpoint {original}" if original else "random weights (no --checkpoint)"
        raise CodecError(f"--checkpoint {given} is not what {path} started from ({began}); with --resume give the "
                         "run's original --checkpoint or none")


def _plain(s: TrainSettings) -> dict:
    """The settings as plain values, for the checkpoint."""
    values = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
    values["jnd"] = s.jnd.to_mapping() if s.jnd is not None else None
    return values


def describe(s: TrainSettings) -> str:
    """The target of a run, resolved, for its log."""
    if s.jnd_tolerant:
        return (f"original images, MSE tolerant within the JND of estimator {s.tolerance_estimator} "
                f"(scale {s.tolerance_scale:g})")
    if s.jnd is None:
        return "original images (CompressAI baseline)"
    where = f"read from {s.jnd_offline_dir}" if s.jnd_mode == "offline" else "computed online"
    return f"{s.jnd.describe()}, {where}"


if __name__ == "__main__":
    from jndplug.integrations.compressai.cli import train_main

    train_main()
