"""The settings of ``jndplug datagen`` and a user's level function, checked before any work starts.

Torch is imported only where a run needs it: ``jndplug datagen --help`` reads its defaults here.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from jndplug.errors import JNDPlugValueError

LevelFn = Callable[["torch.Tensor", int], object]

# Settings that decide what the files contain: a rerun into the same folder must repeat them.
FIXED_SETTINGS = ("size", "max_side", "min_side", "levels", "seed", "psnr_range", "calibrate",
                   "level_source", "patch", "batch", "train_images", "remove_mean", "masking", "chroma")
# what datasets built before shaping existed were made with, so they can still be resumed
_LEGACY = {"remove_mean": False, "masking": 0.0, "chroma": 1.0}



@dataclass
class BuildSettings:
    size: tuple[int, int] = (1920, 1080)
    max_side: int | None = None
    min_side: int = 160
    levels: int = 9
    seed: int = 0
    steps: int = 200
    feature_steps: int | None = None
    patch: int = 96
    batch: int = 8
    train_images: int = 64
    psnr_range: tuple[float, float] = (44.0, 22.0)
    calibrate: bool = True
    feature_weights: str | None = None
    use_stlpips: bool = True
    device: str = "cpu"
    limit: int | None = None
    level_source: str = "autoencoders"
    remove_mean: bool = True
    masking: float = 1.0
    chroma: float = 0.5

    def check(self) -> None:
        from jndplug.datagen.levels import psnr_ladder

        if len(self.size) != 2 or min(self.size) < 1:
            raise JNDPlugValueError(f"size must be WIDTHxHEIGHT with positive sides, got {self.size}")
        if self.max_side is not None and self.max_side < 1:
            raise JNDPlugValueError(f"max side must be positive, got {self.max_side}")
        if self.min_side < 1:
            raise JNDPlugValueError(f"min side must be positive, got {self.min_side}")
        if not 1 <= self.levels <= 99:
            raise JNDPlugValueError(f"levels must be 1..99, got {self.levels}")
        if self.limit is not None and self.limit < 1:
            raise JNDPlugValueError(f"limit must be >= 1, got {self.limit}")
        if self.masking < 0 or self.chroma < 0:
            raise JNDPlugValueError(f"masking power and chroma factor must be >= 0, got {self.masking} and "
                                    f"{self.chroma}")
        if self.steps < 0 or (self.feature_steps is not None and self.feature_steps < 0):
            raise JNDPlugValueError("training steps must be >= 0")
        if self.patch < 8 or self.batch < 1 or self.train_images < 1:
            raise JNDPlugValueError("patch must be >= 8, batch and train images >= 1")
        psnr_ladder(self.levels, *self.psnr_range)


def load_level_fn(spec: str) -> LevelFn:
    """Resolve ``module:function`` or ``path/to/file.py:function`` to the callable."""
    if ":" not in spec:
        raise JNDPlugValueError(f"level function {spec!r}: expected module:function or file.py:function")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise FileNotFoundError(f"level function file not found: {path}")
            mod_spec = importlib.util.spec_from_file_location(f"jndplug_level_fn_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ImportError as exc:
        raise JNDPlugValueError(f"level function {spec!r}: cannot import {where} ({exc})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise JNDPlugValueError(f"level function {spec!r}: {where} has no callable {name!r}")
    return fn


def resolve_settings(settings: BuildSettings | None, overrides: dict,
                     level_fn: LevelFn | str | None) -> tuple[BuildSettings, LevelFn | None, str | None]:
    """The run's settings (a copy, ``overrides`` applied, checked), its level function and that function's name."""
    import torch

    settings = dataclasses.replace(settings) if settings is not None else BuildSettings()
    for k, v in overrides.items():
        if not hasattr(settings, k):
            raise TypeError(f"build_dataset got an unknown setting {k!r}")
        setattr(settings, k, v)
    settings.size = tuple(settings.size)
    settings.psnr_range = tuple(settings.psnr_range)
    fn_name = None
    if level_fn is not None:
        fn_name = level_fn if isinstance(level_fn, str) else f"{level_fn.__module__}.{getattr(level_fn, '__qualname__', repr(level_fn))}"
        level_fn = load_level_fn(level_fn) if isinstance(level_fn, str) else level_fn
        settings.level_source = f"callable {fn_name}"
    settings.check()
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise JNDPlugValueError(f"device {settings.device!r} requested but CUDA is not available")
    return settings, level_fn, fn_name


def plain(v):
    return list(v) if isinstance(v, tuple) else v


def fixed_settings(settings: BuildSettings) -> dict:
    """The settings a rerun into the same folder must repeat, as JSON values."""
    return {k: plain(getattr(settings, k)) for k in FIXED_SETTINGS}


def check_rerun(out: Path, old_settings: dict | None, settings: BuildSettings, made: bool) -> None:
    """Refuse to resume or extend ``out`` with other output-defining settings than it was built with."""
    # the recorded settings bind a rerun only once something was made with them: a run that found
    # no usable source (or a level function that failed) must not block its corrected rerun
    if old_settings is None or not made:
        return
    now = fixed_settings(settings)
    differ = [f"{k} (was {old_settings.get(k)!r}, now {now[k]!r})" for k in FIXED_SETTINGS
              if plain(old_settings.get(k, _LEGACY.get(k))) != now[k]]
    if differ:
        raise JNDPlugValueError(f"{out} was built with other settings: {'; '.join(differ)}. "
                                "Rerun with the same settings to resume or extend it, or use a new output folder")
