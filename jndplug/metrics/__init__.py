"""Image quality metrics for judging restorers and codecs, all computed offline.

``evaluate_folders(outputs, references)`` scores a folder of outputs against a folder of
references (files matched by relative path without extension) and returns a table (a dict, the
JSON written by ``jndplug metrics``); ``to_markdown`` renders it. ``MetricSuite`` scores pairs of
arrays. See docs/metrics.md.

Fidelity: PSNR and SSIM on RGB and on the Y channel with BasicSR's conventions (images in
[0, 255], ``crop_border`` pixels removed at every edge, ITU-R BT.601 Y in [16, 235], SSIM with an
11x11 Gaussian window of sigma 1.5 over the valid region, averaged over channels), MS-SSIM.
Perception: NIQE (no reference; BasicSR's implementation and bundled parameters), ColorVideoVDP
JOD, SSIMULACRA 2, FLIP, ST-LPIPS (bundled weights), and LPIPS / DISTS when their ImageNet trunk
weights are given as local files. A metric whose package or weights are missing is reported as
skipped with the reason, never dropped silently. Nothing is downloaded.

The crop border is applied once, to both images, before every metric, so all metrics see the
same pixels (for PSNR, SSIM and NIQE this is exactly BasicSR's ``crop_border``).
"""

from __future__ import annotations

from jndplug import lazy_exports

# the names the command line reads are torch-free; the rest is imported on first use, so that
# `jndplug metrics --help` and the benchmarks' flags do not pay for torch
from jndplug.metrics.names import DEFAULT_METRICS, FIDELITY, METRICS, MetricInfo, add_suite_arguments

# public name -> the module that defines it
_API = {
    **dict.fromkeys(["MetricsError", "psnr", "rgb_to_y", "ssim"], "jndplug.metrics.basic"),
    **dict.fromkeys(["MetricSuite", "MetricUnavailable"], "jndplug.metrics.suite"),
    **dict.fromkeys(["FORMAT", "evaluate_folders", "fmt", "match_files", "mean_of", "skipped_lines", "to_markdown",
                     "write_table"], "jndplug.metrics.tables"),
}

__all__ = ["DEFAULT_METRICS", "FIDELITY", "FORMAT", "METRICS", "MetricInfo", "MetricSuite", "MetricUnavailable",
           "MetricsError", "add_suite_arguments", "evaluate_folders", "fmt", "match_files", "mean_of", "psnr",
           "rgb_to_y", "skipped_lines", "ssim", "to_markdown", "write_table"]

__getattr__, __dir__ = lazy_exports(globals(), _API)
