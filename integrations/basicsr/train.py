"""``python -m jndplug.integrations.basicsr.train -opt FILE.yml`` : BasicSR training with jndplug.

Takes the flags of BasicSR's ``basicsr/train.py`` (``--launcher pytorch``, ``--auto_resume``,
``--debug``, ``--force_yml``). ``experiments/`` and ``tb_logger/`` are written under the working
directory, which is also where BasicSR's ``--auto_resume`` looks for them. Unlike a train.py of
one's own, it refuses options whose ``jnd_target`` block is misspelt or misplaced (BasicSR would
ignore it and train the plain baseline).
"""

import os
import sys

import jndplug.integrations.basicsr as integration
from jndplug.integrations.basicsr import JNDOptionError
from basicsr.train import train_pipeline  # after the lines above, which make basicsr importable


def main() -> None:
    # a block BasicSR would ignore stops the run: it would train the plain baseline
    previous, integration.on_misplaced_block = integration.on_misplaced_block, "error"
    try:
        train_pipeline(os.getcwd())
    except JNDOptionError as exc:
        sys.exit(f"error: {exc}")
    finally:
        integration.on_misplaced_block = previous


if __name__ == "__main__":
    main()
