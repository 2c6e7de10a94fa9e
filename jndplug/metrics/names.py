"""The metrics by name (:data:`METRICS`) and the flags that choose them, without torch: the
command line reads them to build its parsers, so ``--help`` answers without importing torch."""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    higher_is_better: bool
    label: str
    description: str


METRICS: dict[str, MetricInfo] = {
    "psnr": MetricInfo(True, "PSNR RGB (dB)", "PSNR over the R, G and B channels, BasicSR's calculate_psnr"),
    "psnr_y": MetricInfo(True, "PSNR Y (dB)", "PSNR of the BT.601 Y channel, BasicSR's test_y_channel"),
    "ssim": MetricInfo(True, "SSIM RGB", "SSIM averaged over R, G, B, BasicSR's calculate_ssim"),
    "ssim_y": MetricInfo(True, "SSIM Y", "SSIM of the Y channel, BasicSR's test_y_channel"),
    "ms_ssim": MetricInfo(True, "MS-SSIM", "multi-scale SSIM on RGB (pytorch-msssim); needs sides >= 161 px"),
    "niqe": MetricInfo(False, "NIQE", "no-reference naturalness, BasicSR's NIQE on Y with its bundled parameters"),
    "cvvdp": MetricInfo(True, "CVVDP (JOD)", "ColorVideoVDP just-objectionable-difference score, 10 = identical; "
                                             "24-inch full-HD display at 0.6 m (the study's display)"),
    "ssimulacra2": MetricInfo(True, "SSIMULACRA2", "SSIMULACRA 2 (ssimulacra2 package), 100 = identical"),
    "flip": MetricInfo(False, "FLIP", "NVIDIA FLIP mean error (LDR), 0 = identical; same display as CVVDP"),
    "stlpips": MetricInfo(False, "ST-LPIPS", "shift-tolerant LPIPS, AlexNet trunk, weights bundled with "
                                            "stlpips-pytorch"),
    "lpips": MetricInfo(False, "LPIPS", "LPIPS v0.1 AlexNet (lpips package); ImageNet trunk from torch's hub cache"),
    "dists": MetricInfo(False, "DISTS", "DISTS (DISTS_pytorch); ImageNet VGG16 trunk from torch's hub cache"),
}
DEFAULT_METRICS = tuple(METRICS)
FIDELITY = ("psnr", "psnr_y", "ssim", "ssim_y", "ms_ssim")


def add_suite_arguments(p: argparse.ArgumentParser, device_flag: str = "--metrics-device") -> None:
    """``--metrics`` and the metrics' device, as ``device_flag``: a command with no other
    device calls it ``--device``."""
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), choices=list(METRICS), metavar="METRIC",
                   help=f"default: all ({', '.join(METRICS)})")
    p.add_argument(device_flag, default="cpu", help="device of the network-based metrics: cpu, cuda, cuda:1 ... "
                                                    "(default cpu)")
