"""jndplug: train restorers and learned codecs against just-noticeable-difference targets.

The public API is deliberately small::

    from jndplug import JNDTarget
    target = JNDTarget()            # the shipped default estimator
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


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'jndplug' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
