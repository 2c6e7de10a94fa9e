"""Benchmarks that test the claim end to end: ``python -m jndplug.bench sr|codec|estimator|screen``.

- ``sr``: BasicSR super-resolution trained against the ground truth vs against JND images;
- ``codec``: CompressAI codecs trained against the originals vs against JND images;
- ``estimator``: cost and accuracy of JND estimators, and the online overhead of ``JNDTarget``;
- ``screen``: without training, a target transform applied to a restorer's outputs, which predicts
  the sign of a fine-tune's effect on every metric.

Each writes JSON, a Markdown table and figures under ``--out``; see docs/bench.md.
"""
