"""jndplug: train restorers and learned codecs against just-noticeable-difference targets.

The public API is deliberately small::

    from jndplug import JNDTarget
    target = JNDTarget()            # the default target (directed, bounded by the JND profile)
    jnd_gt = target(gt)             # [B,3,H,W] in [0,1] -> JND images, same shape/dtype/device

Its names are imported on first use, so that ``import jndplug`` (and ``jndplug --help``) does not
pay for torch and timm.
"""

from __future__ import annotations

import importlib

from jndplug import basicsr_compat

__version__ = "0.1.0"

basicsr_compat.install_import_hint()  # a failing `import basicsr` after `import jndplug` names the fix

# public name -> the module that defines it
_API = {
    "JNDTarget": "jndplug.target",
    "create_estimator": "jndplug.models",
    "list_estimators": "jndplug.models",
    "list_pretrained": "jndplug.weights",
    "load_estimator": "jndplug.weights",
    "save_estimator": "jndplug.weights",
    "to_array": "jndplug.imageio",
    "to_pil": "jndplug.imageio",
    "to_tensor": "jndplug.imageio",
}

__all__ = sorted(_API)


def lazy_exports(namespace: dict, api: dict[str, str]):
    """The ``__getattr__`` and ``__dir__`` of a package whose public names (``api``: name -> the
    module that defines it) are imported on first use; ``namespace`` is the package's ``globals()``."""

    def __getattr__(name: str):
        if name not in api:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        namespace[name] = value = getattr(importlib.import_module(api[name]), name)
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *api])

    return __getattr__, __dir__


__getattr__, __dir__ = lazy_exports(globals(), _API)
