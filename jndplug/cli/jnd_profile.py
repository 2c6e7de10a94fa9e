"""``jndplug jnd-profile``: fit the patch-level JND profile to a patch-pair dataset's judgements.

See docs/other-systems.md.
"""

from __future__ import annotations

import argparse

from jndplug.cli import add_command, add_out_argument
from jndplug.cli.patches import config_of, training_args


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "jnd-profile", description="Fit the structural visibility network of the JND profile to "
                                                    "the judgements of a patch-pair dataset.")
    p.add_argument("dataset", help="a dataset written by `jndplug patches build`")
    add_out_argument(p, "profile file to write (.safetensors)", metavar="FILE")
    training_args(p, buckets_default=None)
    p.set_defaults(func=_profile_train)


def _profile_train(args: argparse.Namespace) -> int:
    from jndplug.models.jnd_profile import save_profile
    from jndplug.patches.profile import train_structural_visibility

    config = config_of(args, ("epochs", "batch", "lr", "seed", "buckets"))
    profile, info = train_structural_visibility(args.dataset, config)
    save_profile(profile, args.out, info)
    last = info["history"][info["best_epoch"] - 1]
    print(f"best epoch {info['best_epoch']}: validation loss {last['val_loss']:.4f}, "
          f"accuracy {last['val_accuracy']:.3f} -> {args.out}")
    return 0
