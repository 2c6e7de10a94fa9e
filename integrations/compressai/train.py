"""``python -m jndplug.integrations.compressai.train``: train or fine-tune a CompressAI codec against JND images.

The method is CompressAI's example training (``examples/train.py``): rate-distortion loss
``lmbda * 255^2 * MSE + bpp`` (CompressAI's ``RateDistortionLoss``), a second optimiser for the
entropy bottlenecks' auxiliary loss, gradient clipping, ``ReduceLROnPlateau`` on the test loss,
latest and best checkpoints. One change: with ``--jnd-target`` the MSE compares the reconstruction
with the JND image of the input crop instead of the crop itself; the rate term, the model and the
input are unchanged. Without ``--jnd-target`` the run is the plain CompressAI baseline.

``--dataset DIR`` takes CompressAI's layout (``DIR/train`` and ``DIR/test``) or, without a
``train`` subfolder, a flat folder of training images and no test set. Outputs in ``--save-dir``:
``checkpoint.pth.tar`` (latest: weights, both optimisers, scheduler, progress, RNG),
``checkpoint_best_loss.pth.tar``, ``history.json`` (one entry per epoch) and ``model.pth.tar``
(final weights with updated entropy-coder tables, loadable by CompressAI and by ``evaluate``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from compressai.losses import RateDistortionLoss
from torch.utils.data import DataLoader
from tqdm import tqdm

from jndplug.errors import JNDPlugError
from jndplug.imageio import atomic_write
from jndplug.losses import JNDTolerantRateDistortionLoss
from jndplug.precompute import settings_of
from jndplug.target import JNDTarget

from jndplug.integrations.compressai.codec import (MODEL_NAMES, ZOO_UNREACHABLE, CodecError, build_model,
                                                   check_model_name, check_quality, default_lambda,
                                                   downsampling_factor, load_weights, read_checkpoint,
                                                   state_dict_of)
from jndplug.integrations.compressai.data import (CropDataset, EpochSampler, check_offline, check_sizes,
                                                  split_folders)
from jndplug.integrations.compressai.steps import SUMS, make_optimizers, test_epoch, train_step

FORMAT = "jndplug-compressai-checkpoint/1"
LAST, BEST, FINAL, HISTORY = "checkpoint.pth.tar", "checkpoint_best_loss.pth.tar", "model.pth.tar", "history.json"
# a resumed run must train the same thing; everything else (epochs, steps, device...) may change
RESUME_KEYS = ("model", "quality", "lmbda", "patch_size", "batch_size", "seed", "dataset", "jnd")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jndplug.integrations.compressai.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=f"CompressAI model: {', '.join(MODEL_NAMES)}")
    p.add_argument("--quality", type=int, required=True, help="zoo quality (1-8; 1-6 for cheng2020)")
    p.add_argument("--checkpoint", help="start from these weights (a CompressAI .pth.tar or a checkpoint of this "
                                        "command); without it training starts from scratch")
    p.add_argument("--pretrained", action="store_true", help="refused: the zoo download is not reachable")
    p.add_argument("--dataset", required=True, help="DIR/train (+ DIR/test), or a flat folder of training images")
    p.add_argument("--jnd-target", action="store_true", help="distortion against the JND image (else the original)")
    p.add_argument("--jnd-estimator", default="default", help="pretrained name or .safetensors path")
    p.add_argument("--jnd-strength", type=float, default=1.0)
    p.add_argument("--jnd-sur", type=float, help="satisfied-user ratio, for SUR-conditioned estimators")
    p.add_argument("--jnd-kind", choices=("jnd", "directed"), default="directed",
                   help="directed (default): the perception-directed JND image (docs/directed.md); jnd: the "
                        "estimated JND image")
    p.add_argument("--jnd-gain", type=float, help="sharpening gain of --jnd-kind directed")
    p.add_argument("--jnd-mode", choices=("online", "offline"), default="online",
                   help="online: JND of each crop computed in the loop; offline: read from --jnd-offline-dir")
    p.add_argument("--jnd-offline-dir", help="output of `jndplug precompute DATASET --out DIR`")
    p.add_argument("--jnd-tolerant", action="store_true",
                   help="instead of moving the target: MSE that ignores error within the per-pixel JND of the "
                        "original (jndplug.losses.JNDTolerantLoss with --jnd-estimator)")
    p.add_argument("--jnd-tolerance-scale", type=float, default=1.0, help="scale of the tolerance band")
    p.add_argument("--lmbda", type=float, help="rate-distortion trade-off (default: CompressAI's for the quality)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps in total")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--test-batch-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=256, help="square training crop, a multiple of the "
                                                               "model's downsampling factor")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--aux-learning-rate", type=float, default=1e-3)
    p.add_argument("--clip-max-norm", type=float, default=1.0, help="gradient clipping (0 disables)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--save-dir", help="default: runs/MODEL-qQUALITY-(jnd|original)")
    p.add_argument("--save-every", type=int, default=1000, help="also save the latest checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from SAVE_DIR/checkpoint.pth.tar")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except (CodecError, FileNotFoundError, JNDPlugError) as exc:
        sys.exit(f"error: {exc}")


# the flags that only mean something with --jnd-target, with --jnd-tolerant, or with either
_TARGET_FLAGS = ("jnd_strength", "jnd_sur", "jnd_mode", "jnd_offline_dir", "jnd_kind", "jnd_gain")
_TOLERANT_FLAGS = ("jnd_tolerance_scale",)
_SHARED_FLAGS = ("jnd_estimator",)


def _check_jnd_flags(args: argparse.Namespace) -> None:
    """Refuse ``--jnd-*`` flags that the run would ignore (a baseline trained by mistake)."""
    defaults = build_parser()
    given = [name for name in _TARGET_FLAGS + _TOLERANT_FLAGS + _SHARED_FLAGS
             if getattr(args, name) != defaults.get_default(name)]

    def flags(names):
        return ", ".join("--" + n.replace("_", "-") for n in names)

    if not args.jnd_target and not args.jnd_tolerant and given:
        raise CodecError(f"{flags(given)} without --jnd-target would be ignored and train the plain baseline; "
                         "add --jnd-target to train against JND images (or --jnd-tolerant), or drop "
                         f"{'it' if len(given) == 1 else 'them'}")
    if args.jnd_tolerant:
        ignored = [n for n in given if n in _TARGET_FLAGS]
        if ignored:
            raise CodecError(f"{flags(ignored)} only apply to --jnd-target; --jnd-tolerant takes --jnd-estimator "
                             "and --jnd-tolerance-scale")
    if args.jnd_target:
        ignored = [n for n in given if n in _TOLERANT_FLAGS]
        if ignored:
            raise CodecError(f"{flags(ignored)} only applies to --jnd-tolerant; drop it with --jnd-target "
                             "(use --jnd-strength to scale the JND image)")


def train(args: argparse.Namespace) -> Path:
    """Run the training described by ``args`` (the parsed command line); returns the save folder."""
    _check_args(args)
    lmbda = args.lmbda if args.lmbda is not None else default_lambda(args.quality)
    save_dir = Path(args.save_dir or f"runs/{args.model}-q{args.quality}-{'jnd' if args.jnd_target else 'original'}")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    root = Path(args.dataset)
    train_files, test_files = split_folders(root)
    model = build_model(args.model, args.quality)
    factor = downsampling_factor(model)
    if args.patch_size < factor or args.patch_size % factor:
        raise CodecError(f"--patch-size {args.patch_size} must be a multiple of {factor}, "
                         f"the downsampling factor of {args.model}")
    check_sizes(train_files + test_files, args.patch_size)
    target, jnd_root, jnd_settings = _jnd_source(args, root, train_files + test_files)
    config = {"model": args.model, "quality": args.quality, "lmbda": lmbda, "patch_size": args.patch_size,
              "batch_size": args.batch_size, "seed": args.seed, "dataset": str(root.resolve()), "jnd": jnd_settings}
    if args.jnd_tolerant:
        config["jnd"] = {"tolerant": settings_of(JNDTarget(args.jnd_estimator, kind="jnd")), "scale": args.jnd_tolerance_scale}

    resumed = _initial_weights(model, args, save_dir, config)
    model.to(device)
    run = _Run(args, model, config, save_dir, device, target, jnd_root)
    if resumed is not None:
        run.restore(resumed)
    criterion = (JNDTolerantRateDistortionLoss(lmbda, args.jnd_estimator, args.jnd_tolerance_scale).to(device)
                 if args.jnd_tolerant else RateDistortionLoss(lmbda=lmbda))
    train_set = CropDataset(train_files, root, args.patch_size, seed=args.seed, jnd_root=jnd_root)
    test_set = CropDataset(test_files, root, args.patch_size, random=False, jnd_root=jnd_root) if test_files else None
    print(f"{args.model} q{args.quality}, lambda {lmbda}, {len(train_files)} training / {len(test_files)} test "
          f"images, target: {_describe(args)}, saving to {save_dir}", file=sys.stderr)
    steps_per_epoch = run.epochs(criterion, train_set, test_set)
    if run.saved_at != run.progress["step"]:
        run.save(LAST)
    # final weights with entropy-coder tables computed, as CompressAI's `update_model` would leave them
    print("computing the entropy-coder tables of the final model ...", file=sys.stderr)
    model.update(force=True)
    with atomic_write(save_dir / FINAL) as f:
        torch.save({"format": "jndplug-compressai-model/1", **config, "state_dict": model.state_dict()}, f)
    print(_summary(args, run.progress, steps_per_epoch, run.history, save_dir), file=sys.stderr)
    return save_dir


def _check_args(args: argparse.Namespace) -> None:
    """Refuse a command line that contradicts itself before anything is read."""
    if args.pretrained:
        raise CodecError(ZOO_UNREACHABLE)
    check_model_name(args.model)
    check_quality(args.model, args.quality)
    if args.resume and args.checkpoint:
        raise CodecError("--resume continues SAVE_DIR/checkpoint.pth.tar; do not also give --checkpoint")
    if args.jnd_tolerant and args.jnd_target:
        raise CodecError("--jnd-tolerant and --jnd-target are alternatives: the tolerance band is measured on "
                         "the original, so choose one")
    _check_jnd_flags(args)
    if args.jnd_mode == "offline" and not args.jnd_offline_dir:
        raise CodecError("--jnd-mode offline needs --jnd-offline-dir "
                         "(made by `jndplug precompute DATASET --out DIR`)")


def _jnd_source(args: argparse.Namespace, root: Path, files: list[Path]):
    """``(target, jnd_root, settings)``: where the distortion target comes from, and its settings for the checkpoint.

    Online, ``target`` computes the JND image of each crop; offline, the crops are read from
    ``jnd_root``; for the baseline (and --jnd-tolerant) all three are None.
    """
    if not args.jnd_target:
        return None, None, None
    try:
        target = JNDTarget(args.jnd_estimator, strength=args.jnd_strength, sur=args.jnd_sur,
                           kind=args.jnd_kind, gain=args.jnd_gain)
    except (ValueError, TypeError) as exc:  # the estimator file or the strength, already explained
        raise CodecError(str(exc)) from exc
    jnd_settings = {**settings_of(target), "mode": args.jnd_mode}
    if args.jnd_mode != "offline":
        return target, None, jnd_settings
    jnd_root = Path(args.jnd_offline_dir)
    check_offline(root, jnd_root, files, target)
    return None, jnd_root, jnd_settings  # the JND images come from the folder


def _initial_weights(model, args: argparse.Namespace, save_dir: Path, config: dict) -> dict | None:
    """Load the weights the run starts from; returns the checkpoint being resumed, if any."""
    resumed = read_checkpoint(save_dir / LAST) if args.resume else None
    if resumed is not None:
        _check_resume(resumed, config, save_dir / LAST)
        load_weights(model, state_dict_of(resumed), args.model, args.quality, str(save_dir / LAST))
    elif args.checkpoint:
        load_weights(model, state_dict_of(read_checkpoint(args.checkpoint), args.checkpoint),
                     args.model, args.quality, args.checkpoint)
    else:
        print(f"note: no --checkpoint, so {args.model} starts from random weights: this trains a codec from "
              "scratch, which takes far longer than fine-tuning (this command's defaults, CompressAI's, are 100 "
              "epochs at learning rate 1e-4); to fine-tune, give --checkpoint with CompressAI's weights for this model and quality",
              file=sys.stderr)
    return resumed


class _Run:
    """The optimisers, schedule, progress and history of one run, and how they are saved."""

    def __init__(self, args, model, config: dict, save_dir: Path, device: torch.device, target, jnd_root):
        self.args, self.model, self.config, self.save_dir, self.device = args, model, config, save_dir, device
        self.target, self.jnd_root = target, jnd_root
        self.optimizers = make_optimizers(model, args.learning_rate, args.aux_learning_rate)
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
                "args": vars(self.args)}
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
        return self.args.max_steps is not None and self.progress["step"] >= self.args.max_steps

    def epochs(self, criterion, train_set, test_set) -> int:
        """Train epoch after epoch until --epochs or --max-steps; returns the steps of a whole epoch."""
        args, progress = self.args, self.progress
        steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
        sampler = EpochSampler(len(train_set), args.seed)
        done = self.max_steps_reached()
        while progress["epoch"] < args.epochs and not done:
            epoch = progress["epoch"]
            train_set.epoch = epoch
            sampler.set_epoch(epoch, skip=progress["epoch_step"] * args.batch_size)
            # a private generator: DataLoader otherwise draws its worker seed from the global RNG, which
            # the checkpoint restores, so a resumed run would diverge from an uninterrupted one
            loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
                                pin_memory=self.device.type == "cuda",
                                generator=torch.Generator().manual_seed(args.seed))
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
            values = train_step(self.model, criterion, self.optimizers, *self.split(batch), self.args.clip_max_norm)
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
            if self.args.save_every and progress["step"] % self.args.save_every == 0:
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
            entry.update(test_epoch(self.model, criterion, test_set, self.args.test_batch_size, self.split))
        self.history.append(entry)
        _write_history(self.save_dir, self.history)
        print(json.dumps(entry), file=sys.stderr)

    def _end_epoch(self, entry: dict, criterion, test_set) -> None:
        progress = self.progress
        if test_set is not None:
            entry.update(test_epoch(self.model, criterion, test_set, self.args.test_batch_size, self.split))
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


def _summary(args, progress: dict, steps_per_epoch: int, history: list[dict], save_dir: Path) -> str:
    """The closing lines of a run: where it stopped, its last losses and what it wrote."""
    if progress["epoch"] >= args.epochs:
        why = f"finished {args.epochs} epoch(s)"
    else:
        why = (f"stopped at --max-steps {args.max_steps} (epoch {progress['epoch']}, step "
               f"{progress['epoch_step']} of {steps_per_epoch}); --resume with a larger --max-steps continues")
    lines = [f"{why}: {progress['step']} steps in all"]
    if history:
        last = history[-1]
        parts = [f"{k[len('train_'):]} {last[k]:.4g}" for k in ("train_loss", "train_bpp_loss", "train_mse_loss")]
        test = [f"{k[len('test_'):]} {last[k]:.4g}" for k in ("test_loss", "test_bpp_loss", "test_mse_loss")
                if k in last]
        lines.append(f"last {'partial ' if last.get('partial') else ''}epoch {last['epoch']}: train "
                     + ", ".join(parts) + (f"; test " + ", ".join(test) if test else ""))
    lines.append(f"wrote {save_dir / FINAL}, {save_dir / LAST} and {save_dir / HISTORY}")
    return "\n".join(lines)


def _check_resume(ckpt: dict, config: dict, path: Path) -> None:
    if ckpt.get("format") != FORMAT:
        raise CodecError(f"{path} is not a checkpoint of this command; cannot resume from it")
    differ = [k for k in RESUME_KEYS if ckpt.get(k) != config[k]]
    if differ:
        raise CodecError(f"cannot resume from {path}: it was trained with other settings ("
                         + ", ".join(f"{k}: {ckpt.get(k)!r} vs now {config[k]!r}" for k in differ) + ")")


def _describe(args) -> str:
    if not args.jnd_target:
        return "original images (CompressAI baseline)"
    where = f"from {args.jnd_offline_dir}" if args.jnd_mode == "offline" else "computed online"
    kind = f", directed, gain {args.jnd_gain if args.jnd_gain is not None else 'default'}" \
        if args.jnd_kind == "directed" else ""
    return f"JND images ({args.jnd_estimator}, strength {args.jnd_strength}{kind}, {where})"


if __name__ == "__main__":
    main()
