"""A narrow fix that lets the official ``basicsr==1.4.2`` resume training on CPU.

It leaves BasicSR untouched where it already works. The torchvision fix that makes
``import basicsr`` work at all is :mod:`jndplug.basicsr_compat`, which needs no hooks.
"""

from __future__ import annotations

import collections
from os import path as osp


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
