"""ColorVideoVDP, FLIP and SSIMULACRA 2 on one display: the calls the metric suite and the study's
visibility models (``jndplug.study.visibility``) share, so the viewing conditions are set here once.

The display is the study's: a 24-inch 1920x1080 monitor seen from 0.6 m (about 38 pixels per
degree), ColorVideoVDP's ``standard_fhd`` photometry (200 cd/m^2 peak, contrast 1000:1, 250 lux).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Display:
    resolution: tuple[int, int] = (1920, 1080)
    diagonal_inches: float = 24.0
    viewing_distance_m: float = 0.6
    cvvdp_name: str = "standard_fhd"  # ColorVideoVDP's photometric model of the display

    @property
    def width_m(self) -> float:
        w, h = self.resolution
        return self.diagonal_inches * 0.0254 * w / math.hypot(w, h)

    def flip_parameters(self) -> dict:
        """FLIP's viewing conditions: distance, horizontal pixels and width of the display."""
        return {"vc": [self.viewing_distance_m, float(self.resolution[0]), self.width_m]}


STUDY_DISPLAY = Display()


def cvvdp_metric(display: Display = STUDY_DISPLAY, device="cpu"):
    """``(metric, geometry)``: a ColorVideoVDP metric for ``display``; pycvvdp needs no downloads."""
    import pycvvdp
    import torch

    geometry = pycvvdp.vvdp_display_geometry(tuple(display.resolution), distance_m=display.viewing_distance_m,
                                             diagonal_size_inches=display.diagonal_inches)
    metric = pycvvdp.cvvdp(display_name=display.cvvdp_name, display_geometry=geometry, device=torch.device(device),
                           quiet=True)
    return metric, geometry


def cvvdp_jod(metric, test: np.ndarray, reference: np.ndarray) -> float:
    """ColorVideoVDP quality in JOD (10 = identical) of HxWx3 uint8/uint16 ``test`` against ``reference``."""
    import torch

    with torch.no_grad():
        q, _ = metric.predict(test, reference, dim_order="HWC")
    return float(q)


def flip_error(reference: np.ndarray, test: np.ndarray, display: Display = STUDY_DISPLAY) -> float:
    """NVIDIA FLIP's mean error (LDR; 0 = identical) of HxWx3 float arrays in [0, 1]."""
    import flip_evaluator

    def f(a):
        return np.ascontiguousarray(a, dtype=np.float32)

    _, err, _ = flip_evaluator.evaluate(f(reference), f(test), "LDR", applyMagma=False,
                                        parameters=display.flip_parameters())
    return float(err)


def ssimulacra2_score(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIMULACRA 2 (100 = identical) of HxWx3 uint8 arrays; its API reads files, so lossless in-memory PNGs."""
    from PIL import Image
    from ssimulacra2 import compute_ssimulacra2

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        buf.seek(0)
        return buf

    return float(compute_ssimulacra2(png(reference), png(test)))
