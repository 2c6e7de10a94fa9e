"""A user's BasicSR ``train.py`` with the one jndplug import line, for ``torchrun`` in the tests.

    torchrun --nproc_per_node N tests/basicsr_torchrun_train.py -opt FILE.yml --launcher pytorch

With CUDA, BasicSR's distributed mode runs unchanged (NCCL, one GPU per rank). Without CUDA,
``JNDPLUG_TEST_CPU_DDP=1`` replaces the two CUDA-only calls of BasicSR 1.4.2's distributed set-up
(``init_dist``: NCCL and ``torch.cuda.set_device``; ``model_to_device``: DDP with a CUDA device id)
by their CPU equivalents (gloo, DDP without device ids), so that the rest — BasicSR's option
parsing, distributed sampler, ``train_pipeline``, gradient averaging, rank-0 validation and saving,
and jndplug's hooks in every rank — runs for real on a CPU-only machine. This replacement is test
scaffolding, not part of jndplug.

Each rank writes the targets its pixel loss saw and its final generator weights to
``$JNDPLUG_TEST_SPY_DIR/rank{R}.pt``, for the test to check.
"""

import os

import jndplug.integrations.basicsr  # noqa: F401  (the one line a user adds)

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import basicsr.models.base_model
import basicsr.train
import basicsr.utils.options
from basicsr.losses.basic_loss import L1Loss

if os.environ.get("JNDPLUG_TEST_CPU_DDP") == "1":
    def init_dist(launcher, **kwargs):
        dist.init_process_group(backend="gloo")

    def model_to_device(self, net):
        net = net.to(self.device)
        return DistributedDataParallel(net) if self.opt["dist"] else net

    basicsr.utils.options.init_dist = init_dist
    basicsr.models.base_model.BaseModel.model_to_device = model_to_device

targets = []
l1_forward = L1Loss.forward


def spy_forward(module, pred, target, *args, **kwargs):
    targets.append(target.detach().cpu().clone())
    return l1_forward(module, pred, target, *args, **kwargs)


L1Loss.forward = spy_forward

models = []
build_model = basicsr.train.build_model  # already hooked by jndplug


def spy_build_model(opt):
    models.append(build_model(opt))
    return models[-1]


basicsr.train.build_model = spy_build_model

if __name__ == "__main__":
    basicsr.train.train_pipeline(os.getcwd())
    net = models[0].get_bare_model(models[0].net_g)
    torch.save({"targets": targets, "net_g": {k: v.cpu() for k, v in net.state_dict().items()}},
               os.path.join(os.environ["JNDPLUG_TEST_SPY_DIR"], f"rank{os.environ['RANK']}.pt"))
    dist.destroy_process_group()
