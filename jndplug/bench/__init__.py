"""Benchmarks that test the claim end to end: ``python -m jndplug.bench sr|codec|estimator|screen``.

- ``sr``: converged super-resolution restorers (BasicSR's EDSR and MSRResNet) fine-tuned per target:
  the ground truth, the JND images, the perception-directed JND image, USM ...;
- ``codec``: a CompressAI codec trained to a working rate-distortion point, fine-tuned per target;
- ``estimator``: cost and accuracy of JND estimators, and the online overhead of ``JNDTarget``;
- ``screen``: without training, a target transform applied to a restorer's outputs, which predicts
  the sign of a fine-tune's effect on every metric.

Each writes JSON, a Markdown table and figures under ``--out``, resumes when rerun, and is callable
from Python: ``jndplug.bench.sr.run(jndplug.bench.sr.Settings(train=..., test=...))``; see docs/bench.md.
"""
