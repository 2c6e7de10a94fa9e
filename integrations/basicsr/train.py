"""``python -m jndplug.integrations.basicsr.train -opt FILE.yml`` : BasicSR training with jndplug.

Takes the flags of BasicSR's ``basicsr/train.py`` (``--launcher pytorch``, ``--auto_resume``,
``--debug``, ``--force_yml``). ``experiments/`` and ``tb_logger/`` are written under the working
directory, which is also where BasicSR's ``--auto_resume`` looks for them.
"""

import os
import sys

from jndplug.integrations.basicsr import JNDOptionError
from basicsr.train import train_pipeline  # after the line above, which makes basicsr importable


def main() -> None:
    try:
        train_pipeline(os.getcwd())
    except JNDOptionError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
