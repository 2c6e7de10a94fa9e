"""``python -m jndplug.bench sr|codec|estimator|screen ...``: the same as ``jndplug bench ...``."""

import sys

from jndplug.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
