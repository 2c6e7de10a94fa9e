"""BasicSR integration, with the real basicsr 1.4.2 and its real ``train_pipeline`` on CPU.

A tiny generated paired dataset (8 train and 2 val pairs, 128x128 HR / 32x32 LR) and tiny
networks keep each run to a few seconds. Training crops are the whole image without flips, so
every target the loss sees can be matched to the JND image of one known ground-truth file.
"""

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import jndplug
from conftest import PYTHON, make_image
from jndplug.cli import build_parser
from jndplug.integrations.basicsr import JNDOptionError, check_options, wrap_model  # first: makes basicsr importable
import basicsr.models.sr_model
import basicsr.train
from basicsr.archs import build_network
from basicsr.archs.discriminator_arch import VGGStyleDiscriminator
from basicsr.losses.basic_loss import L1Loss
from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import MODEL_REGISTRY
from jndplug.precompute import precompute
from jndplug.spec import TargetSpec

OPTIONS_DIR = Path(jndplug.__file__).resolve().parent.parent / "integrations" / "basicsr" / "options"
N_TRAIN = 8


def read_gt(path) -> torch.Tensor:
    """A GT file as BasicSR's PairedImageDataset hands it to the model: RGB float32 in [0,1], CHW."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR).astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1)))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    for split, n, offset in (("train", N_TRAIN, 0), ("val", 2, 100)):
        for sub in ("hr", "lr"):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            hr = Image.fromarray(make_image(128, 128, seed=offset + i))
            hr.save(root / split / "hr" / f"{i:03d}.png")
            hr.resize((32, 32), Image.BICUBIC).save(root / split / "lr" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def jnd_truth(data, estimator_file):
    """The JND image of every training GT, one at a time (the runs below see them batched)."""
    target = jndplug.JNDTarget(estimator_file, kind="jnd")
    gts = [read_gt(p) for p in sorted((data / "train" / "hr").iterdir())]
    return torch.stack(gts), torch.stack([target(g[None])[0] for g in gts])


@pytest.fixture(scope="module")
def jnd_folder(data, estimator_file, tmp_path_factory):
    dst = tmp_path_factory.mktemp("offline") / "hr_jnd"
    report = precompute(data / "train" / "hr", dst, jndplug.JNDTarget(estimator_file, kind="jnd"), progress=False)
    assert len(report.written) == N_TRAIN and not report.failed
    return dst


def make_opt(data, name, jnd=None, *, gan=False, total_iter=4, val=True):
    opt = {
        "name": name,
        "model_type": "ESRGANModel" if gan else "SRModel",
        "scale": 4,
        "num_gpu": 0,
        "manual_seed": 0,
        "datasets": {
            "train": {
                "name": "tiny", "type": "PairedImageDataset",
                "dataroot_gt": str(data / "train" / "hr"), "dataroot_lq": str(data / "train" / "lr"),
                "io_backend": {"type": "disk"},
                # the whole image, unflipped: each target row is one known file
                "gt_size": 128, "use_hflip": False, "use_rot": False,
                "use_shuffle": True, "num_worker_per_gpu": 0, "batch_size_per_gpu": 4,
                "dataset_enlarge_ratio": 1, "prefetch_mode": None,
            },
            "val": {
                "name": "tiny_val", "type": "PairedImageDataset",
                "dataroot_gt": str(data / "val" / "hr"), "dataroot_lq": str(data / "val" / "lr"),
                "io_backend": {"type": "disk"},
            },
        },
        "network_g": ({"type": "RRDBNet", "num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 8,
                       "num_block": 1, "num_grow_ch": 8} if gan else
                      {"type": "EDSR", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 1,
                       "upscale": 4, "img_range": 1.0, "rgb_mean": [0.5, 0.5, 0.5]}),
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {
            "optim_g": {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99]},
            "scheduler": {"type": "MultiStepLR", "milestones": [1000], "gamma": 0.5},
            "total_iter": total_iter,
            "warmup_iter": -1,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
        },
        "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "use_tb_logger": False},
    }
    if gan:
        opt["network_d"] = {"type": "VGGStyleDiscriminator", "num_in_ch": 3, "num_feat": 8, "input_size": 128}
        opt["train"].update({
            "optim_d": {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99]},
            # no perceptual loss: its VGG19 weights would be downloaded
            "gan_opt": {"type": "GANLoss", "gan_type": "vanilla", "real_label_val": 1.0, "fake_label_val": 0.0,
                        "loss_weight": 5e-3},
            "net_d_iters": 1, "net_d_init_iters": 0,
        })
    if val:
        opt["val"] = {"val_freq": 2, "save_img": False,
                      "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 4, "test_y_channel": False}}}
    if isinstance(jnd, dict):
        # these tests check the wiring of the seed paper's JND image, which a random test estimator
        # changes measurably; the directed image (the default kind) has its own tests
        jnd = {"kind": "jnd", **jnd}
    if jnd is not None:
        opt["jnd_target"] = jnd
    return opt


def write_opt(path, opt):
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


class Spy:
    """Records what the real BasicSR code passes to the training loss, the discriminator and the metrics."""

    def __init__(self, monkeypatch):
        self.loss_targets, self.d_inputs, self.metric_gts = [], [], []
        l1, disc, metric = L1Loss.forward, VGGStyleDiscriminator.forward, basicsr.models.sr_model.calculate_metric

        def l1_forward(module, pred, target, *args, **kwargs):
            self.loss_targets.append(target.detach().clone())
            return l1(module, pred, target, *args, **kwargs)

        def disc_forward(module, x):
            self.d_inputs.append(x.detach().clone())
            return disc(module, x)

        def calculate_metric(data, opt):
            self.metric_gts.append(data["img2"].copy())
            return metric(data, opt)

        monkeypatch.setattr(L1Loss, "forward", l1_forward)
        monkeypatch.setattr(VGGStyleDiscriminator, "forward", disc_forward)
        monkeypatch.setattr(basicsr.models.sr_model, "calculate_metric", calculate_metric)


def run_pipeline(monkeypatch, root, opt, *extra):
    """BasicSR's own train_pipeline, as a user's train.py calls it after `import jndplug.integrations.basicsr`."""
    yml = write_opt(Path(root) / f"{opt['name']}.yml", opt)
    monkeypatch.setattr(sys, "argv", ["train.py", "-opt", str(yml), *extra])
    basicsr.train.train_pipeline(str(root))


def nearest(batch, candidates, reduce="max"):
    """Per image of ``batch``: the index of the nearest candidate and the max (or mean) abs difference to it."""
    diff = (batch[:, None] - candidates[None]).abs().flatten(2)
    diff = diff.amax(-1) if reduce == "max" else diff.mean(-1)
    dist, idx = diff.min(1)
    return idx, dist


def is_batch_of(batch, candidates, tol=1e-4):
    # batched and one-at-a-time inference differ only by float rounding
    return bool(nearest(batch, candidates)[1].max() <= tol)


def differs_from_all(batch, candidates):
    # the random test estimator moves pixels by about 0.6/255 on average (a JND-like amount)
    return bool(nearest(batch, candidates, "mean")[1].min() > 1e-3)


def assert_jnd_targets(batches, gts, jnds):
    for batch in batches:
        assert is_batch_of(batch, jnds) and differs_from_all(batch, gts)


def assert_validation_on_true_gt(metric_gts, data):
    truth = [cv2.imread(str(p)) for p in sorted((data / "val" / "hr").iterdir())]
    assert metric_gts
    for img in metric_gts:  # BGR uint8, as tensor2img returns it
        assert any(np.array_equal(img, t) for t in truth)


def test_torchvision_shim_makes_basicsr_importable():
    import torchvision.transforms.functional as F

    import basicsr.data.degradations as degradations

    alias = sys.modules["torchvision.transforms.functional_tensor"]
    assert degradations.rgb_to_grayscale is alias.rgb_to_grayscale is F.rgb_to_grayscale
    img = torch.rand(2, 3, 16, 16)
    assert degradations.rgb_to_grayscale(img, num_output_channels=1).shape == (2, 1, 16, 16)


_IMPORT_ORDER = """
import importlib.util, sys
import torchvision.transforms
if importlib.util.find_spec("torchvision.transforms.functional_tensor") is not None:
    print("torchvision still has functional_tensor"); sys.exit(0)
import jndplug
try:
    import basicsr  # the wrong order: before jndplug.integrations.basicsr
except ModuleNotFoundError as exc:
    print("FAILED:", exc)
import jndplug.integrations.basicsr  # the right line, late: still works after the failed import
import basicsr.train
print("hooked:", hasattr(basicsr.train.build_model, "__wrapped__"))
"""


def test_basicsr_imported_first_names_the_fix():
    proc = subprocess.run([PYTHON, "-c", _IMPORT_ORDER], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    if "still has functional_tensor" in proc.stdout:
        pytest.skip("this torchvision still has the module basicsr 1.4.2 needs")
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1 and "BasicSR issue #663" in failed[0]
    assert "Put `import jndplug.integrations.basicsr` before anything that imports basicsr" in failed[0]
    assert "hooked: True" in proc.stdout


def test_online_srmodel_trains_on_jnd_and_validates_on_gt(tmp_path, monkeypatch, data, jnd_truth, estimator_file):
    spy = Spy(monkeypatch)
    opt = make_opt(data, "edsr_jnd", {"enable": True, "estimator": str(estimator_file), "strength": 1.0,
                                      "sur": None, "mode": "online"})
    run_pipeline(monkeypatch, tmp_path, opt)

    gts, jnds = jnd_truth
    assert len(spy.loss_targets) == 4  # one pixel loss per iteration
    assert_jnd_targets(spy.loss_targets, gts, jnds)
    # validation at iters 2 and 4 and after training, 2 images each, all against the true GT
    assert len(spy.metric_gts) == 6
    assert_validation_on_true_gt(spy.metric_gts, data)
    assert (tmp_path / "experiments" / "edsr_jnd" / "models" / "net_g_latest.pth").is_file()


def test_without_the_block_training_is_unchanged(tmp_path, monkeypatch, data, jnd_truth):
    spy = Spy(monkeypatch)
    run_pipeline(monkeypatch, tmp_path, make_opt(data, "edsr_baseline", total_iter=2, val=False))
    gts, _ = jnd_truth
    for batch in spy.loss_targets:
        assert is_batch_of(batch, gts, tol=0)


def test_online_esrgan_gan_real_samples_are_jnd(tmp_path, monkeypatch, data, jnd_truth, estimator_file):
    spy = Spy(monkeypatch)
    # every term on the JND image; the default for GAN models and the other choices: test_gan_terms.py
    opt = make_opt(data, "esrgan_jnd", {"estimator": str(estimator_file), "terms": "all"}, gan=True, total_iter=2)
    run_pipeline(monkeypatch, tmp_path, opt)

    gts, jnds = jnd_truth
    assert len(spy.loss_targets) == 2
    assert_jnd_targets(spy.loss_targets, gts, jnds)
    # ESRGAN shows the discriminator the real batch twice per iteration (G and D steps), the
    # generator's output three times; the real samples are the JND images, never the true GT
    real = [x for x in spy.d_inputs if is_batch_of(x, jnds)]
    assert len(spy.d_inputs) == 10 and len(real) == 4
    assert all(differs_from_all(x, gts) for x in spy.d_inputs)
    assert_validation_on_true_gt(spy.metric_gts, data)


def test_offline_reads_precomputed_gt_and_validates_on_gt(tmp_path, monkeypatch, data, jnd_folder, jnd_truth,
                                                          estimator_file, basicsr_log):
    import jndplug.integrations.basicsr as integration

    spy = Spy(monkeypatch)
    monkeypatch.setattr(integration, "REPORT_STEPS", 2)  # the two steps of this run (10 by default)
    records = basicsr_log
    opt = make_opt(data, "edsr_offline", {"estimator": str(estimator_file), "mode": "offline",
                                          "source_gt": str(data / "train" / "hr")}, total_iter=2)
    opt["datasets"]["train"]["dataroot_gt"] = str(jnd_folder)
    run_pipeline(monkeypatch, tmp_path, opt)

    files = torch.stack([read_gt(p) for p in sorted(jnd_folder.glob("*.png"))])
    gts, jnds = jnd_truth
    assert len(spy.loss_targets) == 2
    for batch in spy.loss_targets:
        assert is_batch_of(batch, files, tol=0)  # exactly the files: no second, online pass
        assert differs_from_all(batch, gts)
    # the files are the 8-bit JND images
    assert (files - jnds).abs().max() <= 0.5 / 255 + 1e-4
    assert_validation_on_true_gt(spy.metric_gts, data)
    # the log has the same check as online mode: the two steps drew all 8 files (one epoch),
    # measured whole against their originals
    log = "\n".join(r.getMessage() for r in records)
    found = re.findall(r"jndplug: JND targets over the first 2 steps: mean PSNR ([0-9.]+) dB against the ground "
                       r"truth \(whole images of the 8 files they were cropped from; estimated JND image, ", log)
    expected = (10 * torch.log10(1 / ((files - gts) ** 2).mean(dim=(1, 2, 3)))).mean()
    assert len(found) == 1 and abs(float(found[0]) - float(expected)) <= 0.01


def test_a_run_parses_the_block_once_and_loads_the_estimator_once(tmp_path, monkeypatch, data, jnd_folder,
                                                                  estimator_file):
    import jndplug.target
    from jndplug.integrations.basicsr import options
    from jndplug.spec import TargetSpec

    monkeypatch.setattr(options, "_made", [])  # not a target an earlier test made with these settings
    loads, specs = [], []
    load = jndplug.target.load_estimator
    monkeypatch.setattr(jndplug.target, "load_estimator", lambda *a, **k: loads.append(a) or load(*a, **k))
    parse = TargetSpec.from_mapping.__func__

    def from_mapping(*args, **kwargs):
        specs.append(parse(*args, **kwargs))
        return specs[-1]

    monkeypatch.setattr(TargetSpec, "from_mapping", classmethod(from_mapping))
    opt = make_opt(data, "edsr_once", {"estimator": str(estimator_file), "mode": "offline",
                                       "source_gt": str(data / "train" / "hr")}, total_iter=1, val=False)
    opt["datasets"]["train"]["dataroot_gt"] = str(jnd_folder)
    run_pipeline(monkeypatch, tmp_path, opt)
    # the start-up check's spec is the one the model hook trained with: the dumped block is not parsed again
    assert len(specs) == 1 and options._made[0].spec is specs[0]
    assert len(loads) == 1


def run_train_module(cwd, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([PYTHON, "-m", "jndplug.integrations.basicsr.train", *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_resume_with_the_train_module(tmp_path, monkeypatch, data, estimator_file):
    opt = make_opt(data, "edsr_resume", {"estimator": str(estimator_file)}, total_iter=2, val=False)
    monkeypatch.chdir(tmp_path)  # BasicSR's --auto_resume looks in ./experiments
    run_pipeline(monkeypatch, tmp_path, opt)
    exp = tmp_path / "experiments" / "edsr_resume"
    assert (exp / "training_states" / "2.state").is_file()

    # two more iterations in a new process, through `python -m ...train --auto_resume`; on CPU
    # this needs the adapter's resume fix
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([PYTHON, "-m", "jndplug.integrations.basicsr.train", "-opt", tmp_path / "edsr_resume.yml",
                          "--auto_resume", "--force_yml", "train:total_iter=4"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "Resuming training from epoch: 0, iter: 2." in log
    assert f"Loading EDSR model from {exp / 'models' / 'net_g_2.pth'}" in log
    assert "jndplug: online JND targets for SRModel: estimated JND image, estimator " in log
    assert "iter:       3" in log and "iter:       4" in log
    assert (exp / "training_states" / "4.state").is_file() and (exp / "models" / "net_g_4.pth").is_file()


def test_train_module_reports_bad_options(tmp_path, monkeypatch, data, estimator_file):
    from jndplug.integrations.basicsr.train import main

    yml = write_opt(tmp_path / "bad.yml", make_opt(data, "cli", {"estimator": str(estimator_file)}))
    monkeypatch.setattr(sys, "argv", ["train", "-opt", str(yml), "--force_yml", "jnd_target:mode=sometimes"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == "error: jnd_target.mode: must be online or offline, got 'sometimes'"


@pytest.fixture(scope="module")
def other_estimator_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights2") / "other.safetensors"
    jndplug.save_estimator(jndplug.create_estimator("unet"), path, {"training": "none: random, tests"})
    return path


# case: (jnd_target changes, or a whole non-mapping block; dataset changes; the key the message must name).
# Upper-case values stand for folders made by the fixtures: HR (the true training GT), PLAIN (another
# GT folder), JND (HR's precompute output), PARTIAL (that output without 003.png) and OTHER (another
# estimator file).
BAD = {
    "not a mapping": ("yes", {}, "jnd_target"),
    "unknown key": ({"strenght": 0.5}, {}, "jnd_target.strenght"),
    "enable not a boolean": ({"enable": "yes"}, {}, "jnd_target.enable"),
    "negative strength": ({"strength": -0.1}, {}, "jnd_target.strength"),
    "strength not a number": ({"strength": "strong"}, {}, "jnd_target.strength"),
    "bad mode": ({"mode": "sometimes"}, {}, "jnd_target.mode"),
    "unknown term": ({"terms": ["pixel", "discriminator"]}, {}, "jnd_target.terms"),
    "missing estimator file": ({"estimator": "missing/nothing.safetensors"}, {}, "jnd_target.estimator"),
    "sur without conditioning": ({"sur": 0.75}, {}, "jnd_target.sur"),
    "source_gt online": ({"source_gt": "HR"}, {}, "jnd_target.source_gt"),
    "offline without source_gt": ({"mode": "offline"}, {"train.dataroot_gt": "JND"}, "jnd_target.source_gt"),
    "offline on the true gt": ({"mode": "offline", "source_gt": "HR"}, {}, "datasets.train.dataroot_gt"),
    "offline on a plain folder": ({"mode": "offline", "source_gt": "HR"}, {"train.dataroot_gt": "PLAIN"},
                                  "datasets.train.dataroot_gt"),
    "offline missing files": ({"mode": "offline", "source_gt": "HR"}, {"train.dataroot_gt": "PARTIAL"},
                              "datasets.train.dataroot_gt"),
    "offline other strength": ({"mode": "offline", "source_gt": "HR", "strength": 0.5},
                               {"train.dataroot_gt": "JND"}, "datasets.train.dataroot_gt"),
    "offline other estimator": ({"mode": "offline", "source_gt": "HR", "estimator": "OTHER"},
                                {"train.dataroot_gt": "JND"}, "datasets.train.dataroot_gt"),
    "offline unpaired": ({"mode": "offline", "source_gt": "HR"},
                         {"train.dataroot_gt": "JND", "train.dataroot_lq": None}, "datasets.train.dataroot_lq"),
    "online on a jnd folder": ({}, {"train.dataroot_gt": "JND"}, "datasets.train.dataroot_gt"),
    "online normalised gt": ({}, {"train.mean": [0.5, 0.5, 0.5]}, "datasets.train.mean"),
    "online y channel": ({}, {"train.color": "y"}, "datasets.train.color"),
    "validation on a jnd folder": ({}, {"val.dataroot_gt": "JND"}, "datasets.val.dataroot_gt"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_options_stop_at_start_up(case, tmp_path, monkeypatch, data, jnd_folder, estimator_file,
                                      other_estimator_file):
    changes, dataset_changes, key = BAD[case]
    folders = {"HR": str(data / "train" / "hr"), "PLAIN": str(data / "val" / "hr"), "JND": str(jnd_folder),
               "OTHER": str(other_estimator_file)}
    if "PARTIAL" in dataset_changes.values():
        partial = tmp_path / "partial"
        shutil.copytree(jnd_folder, partial)
        (partial / "003.png").unlink()
        folders["PARTIAL"] = str(partial)

    def resolve(value):
        return folders.get(value, value) if isinstance(value, str) else value

    jnd = {"estimator": str(estimator_file)}
    if isinstance(changes, dict):
        jnd.update({k: resolve(v) for k, v in changes.items()})
    else:
        jnd = changes
    opt = make_opt(data, "bad", jnd)
    for path, value in dataset_changes.items():
        phase, name = path.split(".")
        opt["datasets"][phase][name] = resolve(value)

    # as a train.py of one's own runs it: one line on the console, no traceback
    with pytest.raises(SystemExit, match=f"^error: {re.escape(key)}: [^\n]*$") as exit_:
        run_pipeline(monkeypatch, tmp_path, opt)
    err = exit_.value.__cause__
    assert isinstance(err, JNDOptionError) and err.key == key
    if case == "offline on a plain folder":
        assert "it was not made by `jndplug precompute`" in str(err)
    if case == "offline missing files":
        assert "003.png" in str(err)
    if case == "offline other strength":
        assert "jnd_target.strength: folder 1, this run 0.5" in str(err)
        # the command it gives to redo the folder is one the command line takes
        command = str(err).split("`jndplug ")[1].split("`")[0]
        args = build_parser("precompute").parse_args(shlex.split(command))
        assert (args.src, args.out, args.strength) == (folders["HR"], folders["JND"], 0.5)
    if case == "offline other estimator":
        assert "jnd_target.estimator: folder random-unet.safetensors (unet, fingerprint" in str(err)
        assert "this run other.safetensors (unet, fingerprint" in str(err)
    assert not (tmp_path / "experiments").exists()  # stopped before BasicSR created anything


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 2, 3, 32, 32)], ids=["image", "video"])
def test_wrap_model_swaps_every_target_only_during_the_step(shape, estimator_file):
    class Recorder:  # the attributes BasicSR models use; gt_usm as in Real-ESRGAN-style models
        def __init__(self):
            self.gt, self.gt_usm, self.seen = torch.rand(shape), torch.rand(shape), None

        def optimize_parameters(self, current_iter):
            self.seen = (self.gt, self.gt_usm)
            raise RuntimeError("the step fails")

    target = jndplug.JNDTarget(estimator_file, kind="jnd")
    model = Recorder()
    gt, gt_usm = model.gt, model.gt_usm
    wrap_model(model, target)
    with pytest.raises(RuntimeError, match="the step fails"):
        model.optimize_parameters(1)
    for seen, true in zip(model.seen, (gt, gt_usm)):
        frames = true.reshape(-1, 3, 32, 32)
        expected = torch.stack([target(f[None])[0] for f in frames]).view(shape)
        assert seen.shape == shape and torch.allclose(seen, expected, atol=1e-5)
    assert model.gt is gt and model.gt_usm is gt_usm  # restored, even when the step raises


def test_log_names_the_kind_gain_estimator_and_the_sur_in_effect(data, estimator_file):
    from jndplug.integrations.basicsr.options import make_target

    # the block's target, as the online, offline and 10-step log lines describe it
    shipped = make_target(check_options(make_opt(data, "x", {})))
    line = shipped.describe()
    assert line.startswith("estimated JND image, estimator default (unet), strength 1")  # make_opt: kind jnd
    assert "SUR 0.75 (the estimator's default" in line  # sur unset: the model's own default, shown
    # the directed image bounded by the estimator's map: the estimator and its SUR take part
    directed = make_target(check_options({"jnd_target": {"sur": 0.9, "bound": "estimator"}})).describe()
    assert directed.startswith("directed JND image (gain 1, bound estimator), estimator default (unet)")
    assert directed.endswith("SUR 0.9")
    by_estimator = jndplug.JNDTarget.from_spec(TargetSpec(estimator=estimator_file, bound="estimator"))
    assert "SUR none" in by_estimator.describe()
    # the default bound, the analytic profile, uses neither: the line names neither, and a sur is refused
    assert make_target(check_options({"jnd_target": {}})).describe() == "directed JND image (gain 1), strength 0.591"
    with pytest.raises(JNDOptionError, match="jnd_target.sur: applies where the estimator takes part"):
        check_options({"jnd_target": {"sur": 0.9}})


def test_wrap_model_logs_the_targets_psnr_after_the_first_steps(estimator_file):
    import logging

    from basicsr.utils import get_root_logger

    class Step:
        def __init__(self):
            self.gt = torch.rand(2, 3, 32, 32)

        def optimize_parameters(self, current_iter):
            pass

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = get_root_logger()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)  # what BasicSR's training sets up with its log file
    try:
        target = jndplug.JNDTarget.from_spec(TargetSpec(estimator=estimator_file, bound="estimator", strength=3.0))
        model = wrap_model(Step(), target, report_steps=3)
        expected = []
        for i in range(5):
            gt = model.gt = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(i))
            model.optimize_parameters(i)
            if i < 3:
                mse = ((target(gt) - gt) ** 2).mean(dim=(1, 2, 3)).numpy()
                expected.extend(10 * np.log10(1 / mse))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [r.getMessage() for r in records if "mean PSNR" in r.getMessage()]
    assert len(lines) == 1  # one line, after the third step
    assert lines[0].startswith("jndplug: JND targets over the first 3 steps: mean PSNR ")
    assert f"{np.mean(expected):.2f} dB against the ground truth" in lines[0]
    assert "(directed JND image (gain 1, bound estimator), estimator " in lines[0]
    assert "strength 3, SUR none" in lines[0]


def load_options(path):
    with open(path) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


PAIRS = ["train_EDSR_Mx4", "train_MSRResNet_x4", "train_ESRGAN_x4", "train_SwinIR_light_x4"]


def test_example_option_files(estimator_file):
    assert sorted(p.name for p in OPTIONS_DIR.glob("*.yml")) == sorted(
        f"{stem}_{kind}.yml" for stem in PAIRS for kind in ("baseline", "jnd"))
    for stem in PAIRS:
        base, jnd = load_options(OPTIONS_DIR / f"{stem}_baseline.yml"), load_options(OPTIONS_DIR / f"{stem}_jnd.yml")
        block = jnd.pop("jnd_target")
        # strength ~: the kind's default, so the block stays right if a user switches the kind
        assert block == {"enable": True, "estimator": "default", "strength": None, "sur": None, "mode": "online"}
        assert "jnd_target" not in base and base.pop("name") != jnd.pop("name")
        assert base == jnd, stem  # nothing else differs
        assert base["scale"] == 4
        MODEL_REGISTRY.get(base["model_type"])
        for net in ("network_g", "network_d"):
            if net in base:
                build_network(deepcopy(dict(base[net])))
        # the block is valid once an estimator exists (the shipped default is trained elsewhere)
        jnd["jnd_target"] = dict(block, estimator=str(estimator_file))
        # the default target: the directed image bounded by the analytic profile at 0.591
        assert check_options(jnd)["mode"] == "online"
        assert (check_options(jnd)["bound"], check_options(jnd)["strength"]) == ("profile", 0.591)


def test_an_empty_block_switches_jnd_on_with_the_defaults():
    opt = yaml.load("name: x\njnd_target:\n", Loader=ordered_yaml()[0])
    assert opt["jnd_target"] is None  # what YAML makes of the bare line
    cfg = check_options(opt)
    # every setting resolved, so that BasicSR's dump of the options shows what is trained on
    assert cfg == {"enable": True, "estimator": "default", "strength": 0.591, "sur": None, "mode": "online",
                   "source_gt": None, "terms": None, "kind": "directed", "gain": 1.0, "bound": "profile", "sigma": 1.0}
    # no gain, bound or sigma: the kind has none
    assert not {"gain", "bound", "sigma"} & set(check_options({"jnd_target": {"kind": "jnd"}}))
    assert check_options(yaml.load("name: x\n", Loader=ordered_yaml()[0])) is None


def test_jnd_tolerant_loss_is_a_basicsr_loss(estimator_file):
    """`pixel_opt: {type: JNDTolerantLoss, ...}` in an option file builds through BasicSR's registry."""
    import jndplug.integrations.basicsr  # noqa: F401  (registers the loss)
    from basicsr.losses import build_loss

    loss = build_loss({"type": "JNDTolerantLoss", "jnd": str(estimator_file), "kind": "l1", "loss_weight": 1.0})
    gt = torch.rand(2, 3, 32, 32)
    assert float(loss(gt, gt)) == 0.0
    far = (gt + 0.5).clamp(0, 1)
    assert float(loss(far, gt)) > 0


TORCHRUN_SCRIPT = Path(__file__).with_name("basicsr_torchrun_train.py")


@pytest.mark.parametrize("backend", ["cpu-gloo", "cuda-nccl"])
def test_torchrun_launcher_pytorch(backend, tmp_path, data, jnd_truth, estimator_file):
    """``--launcher pytorch`` under torchrun: every rank trains on the JND images of its own share
    of the data, and DDP keeps the ranks' networks identical.

    BasicSR 1.4.2's distributed set-up is CUDA-only; on CPU (2 ranks) the torchrun script swaps its
    two CUDA-only calls for gloo ones (see that script). The cuda-nccl case is BasicSR unchanged,
    one rank per GPU (at most 2).
    """
    nproc = 2 if backend == "cpu-gloo" else min(2, torch.cuda.device_count())
    if nproc == 0:
        pytest.skip("needs a CUDA GPU")
    opt = make_opt(data, f"edsr_ddp_{backend}", {"estimator": str(estimator_file)}, total_iter=4)
    opt["num_gpu"] = nproc if backend == "cuda-nccl" else 0
    opt["logger"]["save_checkpoint_freq"] = 4
    yml = write_opt(tmp_path / "ddp.yml", opt)
    spy = tmp_path / "spy"
    spy.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", JNDPLUG_TEST_SPY_DIR=str(spy),
               JNDPLUG_TEST_CPU_DDP="1" if backend == "cpu-gloo" else "0")
    run = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                          TORCHRUN_SCRIPT, "-opt", yml, "--launcher", "pytorch"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]

    ranks = [torch.load(spy / f"rank{r}.pt", weights_only=True) for r in range(nproc)]
    gts, jnds = jnd_truth
    for rank in ranks:
        assert len(rank["targets"]) == 4  # one pixel loss per iteration
        assert_jnd_targets([t.float() for t in rank["targets"]], gts, jnds)
    # BasicSR's distributed sampler: each epoch (8 images, batch 4 per rank) split between the ranks
    per_epoch = N_TRAIN // (4 * nproc)
    for epoch in range(4 // per_epoch):
        seen = [nearest(rank["targets"][it].float(), jnds)[0].tolist()
                for rank in ranks for it in range(epoch * per_epoch, (epoch + 1) * per_epoch)]
        assert sorted(sum(seen, [])) == list(range(N_TRAIN))
    # gradients were averaged across ranks: all end with the same network after training on
    # different images
    for rank in ranks[1:]:
        for name, value in ranks[0]["net_g"].items():
            assert torch.equal(value, rank["net_g"][name]), name
    exp = tmp_path / "experiments" / opt["name"]
    assert (exp / "models" / "net_g_4.pth").is_file()
    train_log = next(exp.glob("train_*.log")).read_text()
    assert f"world_size: {nproc}" in train_log
    assert "jndplug: online JND targets for SRModel" in train_log
    assert "Validation tiny_val" in train_log  # on rank 0, against the true GT (see the test above)


MISPLACED = {
    "plural": {"jnd_targets": {}},
    "short": {"jnd": {}},
    "misspelt": {"jnd_taget": {}},
    "letters swapped": {"jdn_target": {}},
    "under train": {"train": {"jnd_target": {}}},
    "under datasets.train": {"datasets": {"train": {"jnd_target": {}}}},
}


def merge(opt: dict, changes: dict, block) -> None:
    """``changes`` merged into ``opt`` at any depth, with ``block`` in place of each ``{}`` leaf."""
    for key, value in changes.items():
        if value == {}:
            opt[key] = block
        else:
            merge(opt.setdefault(key, {}), value, block)


@pytest.mark.parametrize("case", list(MISPLACED))
def test_launcher_refuses_a_block_basicsr_would_ignore(case, tmp_path, monkeypatch, data, estimator_file):
    from jndplug.integrations.basicsr.train import main

    opt = make_opt(data, "misplaced", total_iter=1, val=False)
    merge(opt, MISPLACED[case], {"estimator": str(estimator_file)})
    yml = write_opt(tmp_path / "misplaced.yml", opt)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train", "-opt", str(yml)])
    with pytest.raises(SystemExit) as exit_:
        main()
    message = str(exit_.value.code)
    key = {"plural": "jnd_targets", "short": "jnd", "misspelt": "jnd_taget", "letters swapped": "jdn_target",
           "under train": "train.jnd_target", "under datasets.train": "datasets.train.jnd_target"}[case]
    assert message.startswith(f"error: {key}: no top-level jnd_target block, but {key} looks like one")
    assert "plain baseline" in message and "\n" not in message
    assert not (tmp_path / "experiments").exists()  # stopped before BasicSR created anything


def test_a_second_block_beside_the_top_level_one_is_refused(tmp_path, monkeypatch, data, estimator_file):
    opt = make_opt(data, "two_blocks", {"estimator": str(estimator_file)})
    opt["datasets"]["train"]["jnd_target"] = {"strength": 0.5}
    with pytest.raises(SystemExit, match="^error: datasets.train.jnd_target: looks like a jnd_target block, but "
                                         "only the top-level one is read"):
        run_pipeline(monkeypatch, tmp_path, opt)
    assert not (tmp_path / "experiments").exists()


def test_hook_refuses_a_block_basicsr_would_ignore(tmp_path, monkeypatch, data):
    # a train.py of one's own: an error too, not a console warning that never reaches the log
    opt = make_opt(data, "refused")
    opt["train"]["jnd_target"] = {"strength": 0.5}
    yml = write_opt(tmp_path / "refused.yml", opt)
    monkeypatch.setattr(sys, "argv", ["train.py", "-opt", str(yml)])
    with pytest.raises(SystemExit, match="^error: train.jnd_target: no top-level jnd_target block") as exit_:
        basicsr.train.parse_options(str(tmp_path), is_train=True)  # the hooked one, as train_pipeline calls it
    assert exit_.value.__cause__.key == "train.jnd_target"
    # a JND-tolerant pixel loss names `jnd` one level further down: its parameter, not a block
    opt = make_opt(data, "tolerant")
    opt["train"]["pixel_opt"] = {"type": "JNDTolerantLoss", "jnd": "default", "loss_weight": 1.0}
    monkeypatch.setattr(sys, "argv", ["train.py", "-opt", str(write_opt(tmp_path / "tolerant.yml", opt))])
    parsed, _ = basicsr.train.parse_options(str(tmp_path), is_train=True)
    assert parsed["train"]["pixel_opt"]["jnd"] == "default" and "jnd_target" not in parsed


def test_unknown_key_names_the_nearest_known_one(estimator_file):
    with pytest.raises(JNDOptionError, match="^jnd_target.strenght: unknown key; did you mean strength\\? known "):
        check_options({"jnd_target": {"estimator": str(estimator_file), "strenght": 0.5}})
    with pytest.raises(JNDOptionError, match="^jnd_target.colour: unknown key; known keys: enable, "):
        check_options({"jnd_target": {"estimator": str(estimator_file), "colour": 1}})


def test_missing_vgg_weights_stop_before_anything_is_written(tmp_path, monkeypatch, data, estimator_file):

    from jndplug.integrations.basicsr import options
    from jndplug.integrations.basicsr.train import main

    opt = make_opt(data, "esrgan_vgg", {"estimator": str(estimator_file)}, gan=True, total_iter=1, val=False)
    # BasicSR's own ESRGAN template's perceptual loss
    opt["train"]["perceptual_opt"] = {"type": "PerceptualLoss", "layer_weights": {"conv5_4": 1},
                                      "vgg_type": "vgg19", "use_input_norm": True, "range_norm": False,
                                      "perceptual_weight": 1.0, "style_weight": 0, "criterion": "l1"}
    yml = write_opt(tmp_path / "vgg.yml", opt)
    monkeypatch.chdir(tmp_path)  # no experiments/pretrained_models/ here
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache

    monkeypatch.setattr(sys, "argv", ["train", "-opt", str(yml)])
    with pytest.raises(SystemExit) as exit_:
        main()
    message = str(exit_.value.code)
    cache = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert message.startswith("error: train.perceptual_opt: the perceptual loss needs the VGG weights "
                              "vgg19-dcbb9e9d.pth")
    assert str(cache) in message and "experiments/pretrained_models/vgg19-dcbb9e9d.pth" in message
    assert "download https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message and "\n" not in message
    assert not (tmp_path / "experiments").exists()
    # with the file where torchvision keeps it, the check passes
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"")
    options.check_vgg_weights(opt)
