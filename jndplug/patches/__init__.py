"""Patch pairs and a patch-level visibility regressor (after the Jianjin008 patch method).

From a (reference, distorted, score/category) collection -- our study output, KADID-10k or
TID2013 score files, or any CSV -- :func:`read_collection` reads the pairs and their visibility
categories, :func:`build_patch_dataset` buckets them by (image, distortion) and cuts them into
20x20 patch pairs with a fused 12x12 region of interest, :func:`train_regressor` fits a
:class:`TinyPatchRegressor` and :func:`calibrate` bins its scores into Green / Orange / Red.
See docs/other-systems.md.
"""

from jndplug.patches.calibrate import calibrate, classify, evaluate, fit_thresholds
from jndplug.patches.extract import (PATCH_FIELDS, PATCH_SIZE, ROI_SIZE, build_patch_dataset, fuse, patch_grid,
                                     psnr, roi_bounds)
from jndplug.patches.regressor import (TinyPatchRegressor, load_patch_pairs, load_regressor, pair_input, predict,
                                       split_images, train_regressor)
from jndplug.patches.collection import BUCKETS, CATEGORIES, PairCollection, PairItem, bucket_items, read_collection

__all__ = [
    "BUCKETS", "CATEGORIES", "PATCH_FIELDS", "PATCH_SIZE", "ROI_SIZE", "PairCollection", "PairItem",
    "TinyPatchRegressor", "bucket_items", "build_patch_dataset", "calibrate", "classify", "evaluate",
    "fit_thresholds", "fuse", "load_patch_pairs", "load_regressor", "pair_input", "patch_grid", "predict",
    "psnr", "read_collection", "roi_bounds", "split_images", "train_regressor",
]
