"""``bench sr`` and ``bench codec`` take their flags from their Settings' fields (bench.common.flag)."""

import argparse

import pytest

from jndplug.bench import codec, sr


@pytest.mark.parametrize("mod, required", [(sr, {"train": "t", "test": "s"}), (codec, {"train": "t", "eval": "e"})])
def test_flags_default_to_the_settings_defaults(mod, required):
    p = argparse.ArgumentParser()
    mod.add_arguments(p)
    given = [a for name, value in required.items() for a in (f"--{name}", value)]
    assert mod.Settings(**vars(p.parse_args(given))) == mod.Settings(**required)
    with pytest.raises(SystemExit):
        p.parse_args(given[:2])  # a field without a default is a required flag


def test_flags_are_typed_from_the_annotations():
    p = argparse.ArgumentParser()
    codec.add_arguments(p)
    args = p.parse_args(["--train", "t", "--eval", "e", "--seeds", "1", "2", "--channels", "8", "16", "--lambdas",
                         "0.01", "--eval-images", "3", "--pretrain-only"])
    assert (args.seeds, args.channels, args.lambdas, args.eval_images, args.pretrain_only, args.pretrain_lambda) == \
        ([1, 2], [8, 16], [0.01], 3, True, None)
    with pytest.raises(SystemExit):
        p.parse_args(["--train", "t", "--eval", "e", "--metrics", "nonsense"])  # choices kept
