"""Kept for old commands: ``python benchmarks/bench_estimator.py ARGS`` runs ``jndplug bench estimator --parts speed ARGS``.

The benchmark itself lives in ``jndplug/bench/estimator.py``; see docs/bench.md.
"""

import sys

from jndplug.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "estimator", "--parts", "speed", *sys.argv[1:]]))
