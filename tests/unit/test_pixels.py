"""jndplug.pixels: the one PSNR and the BT.601 constants every layer uses."""

import math

import numpy as np
import pytest
import torch

from jndplug import pixels


def test_psnr_is_one_formula_for_tensors_and_arrays():
    a = np.zeros((4, 4, 3))
    b = np.full((4, 4, 3), 0.1)
    assert pixels.psnr(a, b) == pytest.approx(20.0)  # mse 0.01 at peak 1
    assert pixels.psnr(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(20.0, abs=1e-5)
    assert pixels.psnr(a * 255, b * 255, peak=255.0) == pytest.approx(20.0)
    assert pixels.psnr(a, a) == math.inf and pixels.psnr(torch.ones(3), torch.ones(3)) == math.inf


def test_identical_images_read_the_same_everywhere_their_callers_allow():
    from jndplug.metrics import psnr as metric_psnr
    from jndplug.patches.extract import psnr as patch_psnr

    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    assert metric_psnr(img, img) == math.inf
    assert patch_psnr(img, img) is None  # written to JSON, which has no infinity


def test_ycbcr_rows_are_bt601():
    y, cb, cr = pixels.YCBCR
    assert tuple(y) == pixels.BT601
    # white has no colour difference; pure blue and red have the full-scale Cb and Cr of 0.5
    assert cb.sum() == pytest.approx(0) and cr.sum() == pytest.approx(0)
    assert cb[2] == pytest.approx(0.5) and cr[0] == pytest.approx(0.5)
    rgb = torch.rand(2, 3, 5, 5)
    assert torch.allclose(pixels.luma(rgb)[:, 0], torch.einsum("c,bchw->bhw", torch.tensor(pixels.BT601), rgb))
