"""Distortion generation: a CNN-oriented JND dataset from any folder of photographs.

Every photograph gets nine increasingly distorted versions made by a family of briefly trained
U-Net autoencoders (or by a user function), calibrated onto a PSNR ladder that straddles the
visibility threshold. See docs/datagen.md.

    from jndplug.datagen import build_dataset
    summary = build_dataset(["photos/"], "dataset/", max_side=1024)
"""

from jndplug.datagen.autoencoder import (AutoencoderSpec, DistortionAutoencoder, default_family,
                                         load_autoencoder, save_autoencoder)
from jndplug.datagen.build import build_dataset
from jndplug.datagen.levels import distortion_measure, psnr_ladder
from jndplug.datagen.settings import BuildSettings, load_level_fn

__all__ = [
    "AutoencoderSpec",
    "BuildSettings",
    "DistortionAutoencoder",
    "build_dataset",
    "default_family",
    "distortion_measure",
    "load_autoencoder",
    "load_level_fn",
    "psnr_ladder",
    "save_autoencoder",
]
