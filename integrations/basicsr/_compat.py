"""Two narrow fixes that let the official ``basicsr==1.4.2`` run with current torch/torchvision.

Both leave BasicSR untouched where it already works.
"""

from __future__ import annotations

import collections
import importlib.util
import sys
import types
from os import path as osp

FUNCTIONAL_TENSOR = "torchvision.transforms.functional_tensor"


def install_torchvision_shim() -> None:
    """Make ``import basicsr`` work with torchvision >= 0.17.

    ``basicsr/data/degradations.py`` (1.4.2) does ``from torchvision.transforms.functional_tensor
    import rgb_to_grayscale``; torchvision 0.17 removed that private module, so importing basicsr
    fails (upstream issue https://github.com/XPixelGroup/BasicSR/issues/663; the released 1.4.2
    still has that import). Only when the real module is missing, we register an alias module
    providing the one name BasicSR uses, taken from the public ``torchvision.transforms.functional``
    (same signature; it dispatches to the tensor implementation for tensors). Must run before
    basicsr is imported.
    """
    if FUNCTIONAL_TENSOR in sys.modules or importlib.util.find_spec(FUNCTIONAL_TENSOR) is not None:
        return
    from torchvision.transforms import functional

    alias = types.ModuleType(FUNCTIONAL_TENSOR,
                             "Alias registered by jndplug.integrations.basicsr for basicsr 1.4.2 "
                             "(BasicSR issue #663): only rgb_to_grayscale.")
    alias.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[FUNCTIONAL_TENSOR] = alias


def cpu_resume(upstream):
    """Wrap ``basicsr.train.load_resume_state`` so that resuming works when training on CPU.

    BasicSR 1.4.2 always loads the resume state with ``storage.cuda(torch.cuda.current_device())``,
    which raises on a machine without CUDA, so ``--auto_resume`` and ``path.resume_state`` only
    work on GPU. With ``num_gpu: 0`` this does the same lookup and checks but loads to CPU; with
    GPUs the upstream function runs unchanged.
    """

    def load_resume_state(opt):
        if opt["num_gpu"] != 0:
            return upstream(opt)
        import torch
        from basicsr.utils import check_resume, scandir

        path = None
        if opt["auto_resume"]:
            # relative to the working directory, as upstream does
            state_dir = osp.join("experiments", opt["name"], "training_states")
            if osp.isdir(state_dir):
                states = [float(v.split(".state")[0]) for v in scandir(state_dir, suffix="state")]
                if states:
                    path = osp.join(state_dir, f"{max(states):.0f}.state")
                    opt["path"]["resume_state"] = path
        else:
            path = opt["path"].get("resume_state")
        if not path:
            return None
        # BasicSR's training states hold tensors, numbers and MultiStepLR's Counter of milestones:
        # nothing that needs unpickling arbitrary objects
        with torch.serialization.safe_globals([collections.Counter]):
            state = torch.load(path, map_location="cpu", weights_only=True)
        check_resume(opt, state["iter"])
        return state

    return load_resume_state
