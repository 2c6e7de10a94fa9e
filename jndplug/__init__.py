"""jndplug: train restorers and learned codecs against just-noticeable-difference targets.

The public API is deliberately small::

    from jndplug import JNDTarget
    target = JNDTarget()            # the shipped default estimator
    jnd_gt = target(gt)             # [B,3,H,W] in [0,1] -> JND images, same shape/dtype/device
"""

__version__ = "0.1.0"

from jndplug import basicsr_compat  # noqa: E402

basicsr_compat.install_import_hint()  # a failing `import basicsr` after `import jndplug` names the fix

from jndplug.imageio import to_array, to_pil, to_tensor  # noqa: E402
from jndplug.models import create_estimator, list_estimators  # noqa: E402
from jndplug.target import JNDTarget  # noqa: E402
from jndplug.weights import list_pretrained, load_estimator, save_estimator  # noqa: E402

__all__ = [
    "JNDTarget",
    "create_estimator",
    "list_estimators",
    "list_pretrained",
    "load_estimator",
    "save_estimator",
    "to_array",
    "to_pil",
    "to_tensor",
]
