"""BasicSR on current torchvision, without the BasicSR adapter's hooks.

``basicsr==1.4.2`` imports ``torchvision.transforms.functional_tensor``, which torchvision 0.17
removed (BasicSR issue #663). Two things here, both free of side effects on ``basicsr`` itself:

- :func:`install_torchvision_shim` provides that module, so that ``import basicsr`` works. Code
  that only needs BasicSR's functions (NIQE in ``jndplug.metrics``, its MATLAB-style ``imresize``
  in the benchmarks) calls it; ``jndplug.integrations.basicsr``, which also hooks
  ``basicsr.train``, calls it first thing.
- :func:`install_import_hint`, run by ``import jndplug``: a basicsr import that fails on the
  missing module says so and names the fix instead of ending in torchvision's bare
  ModuleNotFoundError. Nothing is imported or changed for anyone else: the finder sits last on
  ``sys.meta_path``, so it is asked only about modules no other finder has, and it answers only
  this module, only for basicsr.
"""

from __future__ import annotations

import importlib.util
import sys
import types

FUNCTIONAL_TENSOR = "torchvision.transforms.functional_tensor"
HINT = ("basicsr 1.4.2 imports torchvision.transforms.functional_tensor, which torchvision 0.17 removed "
        "(BasicSR issue #663). Put `import jndplug.integrations.basicsr` before anything that imports basicsr "
        "(your package too, e.g. realesrgan): it provides that module and reads the jnd_target block; "
        "see docs/basicsr.md")


def install_torchvision_shim() -> None:
    """Make ``import basicsr`` work with torchvision >= 0.17.

    ``basicsr/data/degradations.py`` (1.4.2) does ``from torchvision.transforms.functional_tensor
    import rgb_to_grayscale`` (upstream issue https://github.com/XPixelGroup/BasicSR/issues/663;
    the released 1.4.2 still has that import). Only when the real module is missing, an alias
    module is registered providing the one name BasicSR uses, taken from the public
    ``torchvision.transforms.functional`` (same signature; it dispatches to the tensor
    implementation for tensors). Must run before basicsr is imported.
    """
    if FUNCTIONAL_TENSOR in sys.modules or importlib.util.find_spec(FUNCTIONAL_TENSOR) is not None:
        return
    from torchvision.transforms import functional

    alias = types.ModuleType(FUNCTIONAL_TENSOR,
                             "Alias registered by jndplug.basicsr_compat for basicsr 1.4.2 "
                             "(BasicSR issue #663): only rgb_to_grayscale.")
    alias.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[FUNCTIONAL_TENSOR] = alias


def _importer() -> str | None:
    """The basicsr module asking for the import, if any (walks up the import machinery's frames)."""
    frame = sys._getframe(2)
    for _ in range(64):
        if frame is None:
            return None
        name = frame.f_globals.get("__name__", "")
        if name == "basicsr" or name.startswith("basicsr."):
            return name
        frame = frame.f_back
    return None


class _BasicSRHint:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != FUNCTIONAL_TENSOR:
            return None
        importer = _importer()
        if importer is None:
            return None
        raise ModuleNotFoundError(f"No module named {FUNCTIONAL_TENSOR!r} (imported by {importer}): {HINT}",
                                  name=FUNCTIONAL_TENSOR)


def install_import_hint() -> None:
    if not any(isinstance(f, _BasicSRHint) for f in sys.meta_path):
        sys.meta_path.append(_BasicSRHint())
