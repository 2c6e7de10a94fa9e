"""``jndplug patches build | train | calibrate``: patch pairs and a patch-level visibility regressor;
``jndplug jnd-profile``: the JND profile's structural visibility network fitted to the same pairs.

See docs/other-systems.md.
"""

from __future__ import annotations

import argparse
import json

from jndplug.cli import add_command, add_out_argument
from jndplug.errors import JNDPlugValueError


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "patches", description="Build patch-pair datasets, train TinyPatchRegressor, calibrate its bins.")
    ps = p.add_subparsers(dest="patches_command", metavar="STEP", required=True)
    b = ps.add_parser("build", help="cut a (reference, distorted, score) collection into fused patch pairs")
    b.add_argument("source", help="generated:DATASET[,LABELS], kadid:PATH, tid2013:PATH or csv:FILE")
    add_out_argument(b, "folder to write the patch-pair dataset to", metavar="DIR")
    b.add_argument("--fusion", nargs="+", default=["copy", "blend"], choices=["copy", "blend"])
    b.add_argument("--alpha", type=float, default=0.5, help="weight of the clean RoI in blend fusion (default 0.5)")
    b.add_argument("--max-levels", type=int, default=None,
                   help="leave out (image, distortion) groups with more levels (the Jianjin008 recipe used 3)")
    b.add_argument("--stride", type=int, default=20, help="grid step between patches (default 20: no overlap)")
    b.add_argument("--max-patches-per-image", type=int, default=None, help="seeded random subset of positions")
    b.add_argument("--invisible-at", type=float, default=None,
                   help="score at or above which a distortion is not visible (needed without a category column; "
                        "KADID-10k default 4.5)")
    b.add_argument("--score-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="ends of the score scale (defaults: generated 0 1, kadid 1 5, tid2013 0 9, csv 0 1)")
    b.add_argument("--seed", type=int, default=0, help="random seed of --max-patches-per-image (default 0)")
    b.set_defaults(func=_patches_build)

    t = ps.add_parser("train", help="train TinyPatchRegressor on a patch-pair dataset")
    training_args(t, "run folder to write (regressor.safetensors, split.json, log.json)", "DIR",
                  buckets_default=["slight_flicker"])
    t.add_argument("--patience", type=int, default=10)
    t.add_argument("--min-delta", type=float, default=1e-5)
    t.set_defaults(func=_patches_train)

    c = ps.add_parser("calibrate", help="fit Green/Orange/Red thresholds; report on held-out images")
    c.add_argument("run", help="folder written by `jndplug patches train`")
    c.add_argument("dataset")
    c.add_argument("--buckets", nargs="+", default=None, help="buckets to calibrate on (default: all)")
    c.set_defaults(func=_patches_calibrate)

    p = add_command(sub, "jnd-profile", description="Fit the structural visibility network of the JND profile to "
                                                    "the judgements of a patch-pair dataset.")
    training_args(p, "profile file to write (.safetensors)", "FILE", buckets_default=None,
                  dataset_help="a dataset written by `jndplug patches build`, or generated:DATASET[,LABELS] (a "
                               "`jndplug datagen` dataset labelled by the study) to fit whole images' judgements")
    p.add_argument("--pooling", type=float, default=None,
                   help="generated: Minkowski exponent pooling the change over the image (default 4)")
    p.add_argument("--no-structure", dest="structure", action="store_false", default=None,
                   help="generated: fit only the overall scale and the slope (the analytic profile's baseline)")
    p.set_defaults(func=_profile_train)


def training_args(p: argparse.ArgumentParser, out_help: str, out_metavar: str, buckets_default,
                  dataset_help: str = "a dataset written by `jndplug patches build`") -> None:
    """What a model trained on a patch-pair dataset takes: the dataset, its --out and the training."""
    p.add_argument("dataset", help=dataset_help)
    add_out_argument(p, out_help, metavar=out_metavar)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="random seed of the split and the training (default 0)")
    p.add_argument("--buckets", nargs="+", default=buckets_default,
                   help=f"buckets to train on (default: {' '.join(buckets_default or ['all'])})")


def config_of(args: argparse.Namespace, keys: tuple[str, ...]) -> dict:
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _patches_build(args: argparse.Namespace) -> int:
    from jndplug.patches import build_patch_dataset, read_collection

    collection = read_collection(args.source, args.invisible_at, args.score_range)
    summary = build_patch_dataset(collection, args.out, tuple(args.fusion), args.alpha, args.max_levels,
                                  args.stride, args.max_patches_per_image, args.seed)
    for bucket, c in summary["buckets"].items():
        print(f"{bucket}: {c['images']} distorted images, {c['patches']} patch pairs")
    print(f"excluded groups: {json.dumps(summary['excluded_groups'])} -> {args.out}")
    return 0


def _patches_train(args: argparse.Namespace) -> int:
    from jndplug.patches import train_regressor

    result = train_regressor(args.dataset, args.out,
                             config_of(args, ("epochs", "batch", "lr", "seed", "buckets", "patience", "min_delta")))
    print(f"best epoch {result['best_epoch']} (validation loss {result['best_val_loss']:.5f}), "
          f"{len(result['history'])} epochs run -> {args.out}")
    return 0


def _patches_calibrate(args: argparse.Namespace) -> int:
    from jndplug.patches import calibrate

    report = calibrate(args.run, args.dataset, args.buckets)
    th, test = report["thresholds"], report["test"]
    print(f"green if score >= {th['green_at']:.4f}, red if score < {th['red_below']:.4f}")
    print(f"test ({test['n']} patches): accuracy {test['accuracy']:.3f}, "
          f"balanced accuracy {test['balanced_accuracy']:.3f}")
    print("confusion (rows true green/orange/red, columns predicted):")
    for row in test["confusion"]:
        print("  " + " ".join(f"{v:7d}" for v in row))
    return 0


def _profile_train(args: argparse.Namespace) -> int:
    from jndplug.models.jnd_profile import save_profile
    from jndplug.patches.profile import train_on_study, train_structural_visibility

    if args.dataset.startswith("generated:"):
        if args.buckets is not None:
            raise JNDPlugValueError("--buckets: applies to a patch-pair dataset, not to generated:DATASET")
        profile, info = train_on_study(args.dataset, config_of(args, ("epochs", "batch", "lr", "seed", "pooling",
                                                                       "structure")))
        save_profile(profile, args.out, info)
        last = info["history"][info["best_epoch"] - 1]
        print(f"best epoch {info['best_epoch']}: validation loss {last['val_loss']:.4f}, noticed fraction off by "
              f"{last['val_mae']:.3f}; test {info['test_loss']:.4f}, {info['test_mae']:.3f} -> {args.out}")
        return 0
    if args.pooling is not None or args.structure is not None:
        raise JNDPlugValueError("--pooling and --no-structure: apply to generated:DATASET only, not to a "
                                "patch-pair dataset")
    config = config_of(args, ("epochs", "batch", "lr", "seed", "buckets"))
    profile, info = train_structural_visibility(args.dataset, config)
    save_profile(profile, args.out, info)
    last = info["history"][info["best_epoch"] - 1]
    print(f"best epoch {info['best_epoch']}: validation loss {last['val_loss']:.4f}, "
          f"accuracy {last['val_accuracy']:.3f} -> {args.out}")
    return 0
