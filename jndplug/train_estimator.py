"""``python -m jndplug.train_estimator``: the same as ``jndplug train``."""

import sys

from jndplug.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
