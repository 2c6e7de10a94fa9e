"""A better message for the one import failure jndplug users meet most: BasicSR on new torchvision.

``basicsr==1.4.2`` imports ``torchvision.transforms.functional_tensor``, which torchvision 0.17
removed (BasicSR issue #663). ``jndplug.integrations.basicsr`` provides it, but only when imported
before basicsr. If jndplug itself was imported, a basicsr import that fails on the missing module
says so and names the fix instead of ending in torchvision's bare ModuleNotFoundError. Nothing is
imported or changed for anyone else: the finder sits last on ``sys.meta_path``, so it is asked
only about modules no other finder has, and it answers only this module, only for basicsr.
"""

from __future__ import annotations

import sys

FUNCTIONAL_TENSOR = "torchvision.transforms.functional_tensor"
HINT = ("basicsr 1.4.2 imports torchvision.transforms.functional_tensor, which torchvision 0.17 removed "
        "(BasicSR issue #663). Put `import jndplug.integrations.basicsr` before anything that imports basicsr "
        "(your package too, e.g. realesrgan): it provides that module and reads the jnd_target block; "
        "see docs/basicsr.md")


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


def install() -> None:
    if not any(isinstance(f, _BasicSRHint) for f in sys.meta_path):
        sys.meta_path.append(_BasicSRHint())
