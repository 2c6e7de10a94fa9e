"""ResJND: critical-perceptual-lossless (CPL) image prediction by residual learning.

A DRRN-style network (Tai et al., CVPR 2017) as used by ResJND: one 3->C convolution, one
recursive block of two 3x3 CxC convolutions whose weights are shared across ``recursions``
applications (each adding the block input back), a C->3 convolution and a global residual.
Pre-activation ReLUs and no biases, matching the authors' released checkpoint (keys ``input.*``,
``conv1.*``, ``conv2.*``, ``output.*``), so that checkpoint loads without renaming, and the same
function as the authors' network, including the rectified skip their in-place ReLU produces
(see ``forward``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from jndplug.errors import JNDPlugValueError
from jndplug.models.registry import register_estimator
from jndplug.models.base import Estimator


@register_estimator("resjnd")
class ResJND(Estimator):

    def __init__(self, channels: int = 128, recursions: int = 25):
        super().__init__()
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (channels, recursions)) \
                or channels < 1 or recursions < 1:
            raise JNDPlugValueError(f"resjnd needs integer channels >= 1 and recursions >= 1, got {channels!r:.20}, {recursions!r:.20}")
        self.config = {"channels": channels, "recursions": recursions}
        self.recursions = recursions
        self.input = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.output = nn.Conv2d(channels, 3, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        for conv in (self.input, self.conv1, self.conv2, self.output):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        # 25 shared applications of a Kaiming-initialised block explode; scale the block so an
        # untrained network starts near the identity and training is stable.
        with torch.no_grad():
            self.conv2.weight.mul_(1.0 / recursions)
            self.output.weight.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The skip is the *rectified* block input. The authors' CPL_Net applies an in-place ReLU
        # to ``out`` on the first recursion while ``out`` is still the very tensor that every
        # recursion adds back, so their released network (trained and tested that way) adds
        # relu(input(relu(x))). Adding input(relu(x)) instead runs their weights as a different
        # network: a near-identity that barely changes the image. (Their in-place ReLU on x, which
        # their global residual aliases, is a no-op for images in [0,1], all they feed and all
        # JNDTarget accepts, so the residual stays x.)
        block_in = self.relu(self.input(self.relu(x)))
        out = block_in
        for _ in range(self.recursions):
            out = self.conv2(self.relu(self.conv1(self.relu(out)))) + block_in
        return x + self.output(self.relu(out))
