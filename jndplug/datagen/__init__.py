"""Distortion generation: a CNN-oriented JND dataset from any folder of photographs.

Every photograph gets nine increasingly distorted versions made by a family of briefly trained
U-Net autoencoders (or by a user function), calibrated onto a PSNR ladder that straddles the
visibility threshold. See docs/datagen.md.

    from jndplug.datagen import build_dataset
    summary = build_dataset(["photos/"], "dataset/", max_side=1024)
"""

from __future__ import annotations

from jndplug import lazy_exports

# public name -> the module that defines it, imported on first use: `jndplug datagen --help`
# reads jndplug.datagen.settings, which must not pay for torch through this package
_API = {
    **dict.fromkeys(["AutoencoderSpec", "DistortionAutoencoder", "default_family", "load_autoencoder",
                     "save_autoencoder"], "jndplug.datagen.autoencoder"),
    "build_dataset": "jndplug.datagen.build",
    **dict.fromkeys(["distortion_measure", "psnr_ladder"], "jndplug.datagen.levels"),
    **dict.fromkeys(["BuildSettings", "load_level_fn"], "jndplug.datagen.settings"),
}

__all__ = sorted(_API)

__getattr__, __dir__ = lazy_exports(globals(), _API)
