"""``python -m jndplug.integrations.basicsr.train -opt FILE.yml`` : BasicSR training with jndplug.

Takes the flags of BasicSR's ``basicsr/train.py`` (``--launcher pytorch``, ``--auto_resume``,
``--debug``, ``--force_yml``). ``experiments/`` and ``tb_logger/`` are written under the working
directory, which is also where BasicSR's ``--auto_resume`` looks for them.
"""

import os

import jndplug.integrations.basicsr  # noqa: F401  (hooks basicsr.train; first, as it makes basicsr importable)
from basicsr.train import train_pipeline


def main() -> None:
    # a bad jnd_target block stops the run in the hooked parse_options, with one line
    train_pipeline(os.getcwd())


if __name__ == "__main__":
    main()
