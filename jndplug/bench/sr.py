"""``jndplug bench sr``: converged super-resolution restorers fine-tuned per target, scored against the ground truth.

The question (docs/directed.md): once a restorer trained against the ground truth has converged,
does fine-tuning it against a JND target make it look better to people, and at what fidelity cost?
For every architecture this command

1. pretrains one network against the ground truth (x4, L1), recording a validation PSNR-Y curve on
   training photos held back from training (``pretrain_ARCH/curve.png``);
2. fine-tunes that one checkpoint per target and seed, the same number of steps and the same
   schedule for each: ``gt`` (the baseline's own continuation), ``usm`` (BasicSR's unsharp-masked
   ground truth, Real-ESRGAN's ``gt_usm``), ``jnd`` (the seed paper's estimated JND image),
   ``directed:gain=G,strength=K`` (the perception-directed JND image) and ``tolerant``
   (``JNDTolerantLoss`` against the ground truth with the estimator's map); the targets are the
   ``jndplug bench screen`` transforms applied to the ground-truth photos, rounded to 8 bits as
   ``jndplug precompute`` does. Two arms are what users do instead of moving the target:
   ``perceptual:weight=W`` fine-tunes against the ground truth with L1 + W x an L1 distance of VGG16
   features (relu1_2, relu2_2, relu3_3 of the ImageNet-trained shift-tolerant VGG16 bundled with
   stlpips-pytorch; the ST-LPIPS metric uses the AlexNet trunk, so the judge does not share it), and
   ``post:TRANSFORM`` trains nothing: it passes the same seed's ``gt`` fine-tune's outputs through a
   screen transform (e.g. ``post:directed:strength=2``), the post-sharpening that training on
   ``T(y)`` approximates under L2. ``gan:TARGET`` (``gan:gt``, ``gan:directed:strength=2``) is the
   setting perception-oriented SR lives in: an SRGAN-style fine-tune (``GAN_WEIGHTS``: L1, the VGG16
   feature distance above and a non-saturating adversarial term from a small spectral-norm patch
   discriminator trained alongside), where TARGET replaces the ground truth in the terms of its
   ``terms=`` option (``gan:directed:strength=2,terms=pixel+perceptual``): by default all three, the
   discriminator's real samples included, except for ``gan:usm``, Real-ESRGAN's recipe (its USM
   ground truth in the pixel and perceptual terms, the true one for the discriminator); it is
   compared seed by seed with ``gan:gt``;
3. scores every fine-tune on the central crops of the test sets with ``jndplug.metrics``;
4. runs ``jndplug bench screen`` on the pretrained network's own test outputs and reports how often
   its predicted sign of each metric change agrees with the fine-tunes' measured one.

Layout of ``--out``::

    pretrain_ARCH/          checkpoint.pt (every validation), final.pt, curve.json, curve.png
    runs/NAME/              outputs/SET/*.png, result.json (NAME: ARCH_TARGET_seedS)
    screen_ARCH/            the screen on the pretrained network's outputs
    targets_*.npz           the target images of the training photos (shared by every run)
    sr_results.json, sr_results.md, pd_plane.png, crops_ARCH.png

Resumable: pretraining continues from its last checkpoint, finished fine-tunes are skipped, and a
fine-tune finished with other settings is refused. The defaults are not the published recipe: they
share its networks (16 blocks, 64 features), data, batch, pretraining length, fine-tuning rate and
targets, but the command of BENCHMARKS.md ("Twice the budget on the converged restorers") also
gives ``--patch 48 --val-every 1000 --steps 300`` (defaults 64, 500 and 1000); pass those to
reproduce it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from jndplug.bench.common import BenchError, finished_run, machine, resolve_estimator, write_json, write_text
from jndplug.bench.recipe import add_targets, run_name, save_atomic, to_tensor, training_files, transform_specs
from jndplug.bench.settings import SR_ARCHS as ARCHS, SRSettings as Settings
from jndplug.bench.sr_arms import (GAN_TERMS, GAN_WEIGHTS, POST, GANTerm, arm_of, check_arms, feature_network,
                                   gan_parts, images_of, perceptual_weight)
from jndplug.bench.sr_report import PD, crops, pd_plane, report
from jndplug.imageio import list_images, read_image, tensor_to_array, to_8bit, write_image
from jndplug.losses import JNDTolerantLoss
from jndplug.metrics import MetricSuite, psnr
from jndplug.pixels import bicubic_lq, centre_crop

FORMAT = "jndplug-bench-sr/2"
SCALE = 4
# what a fine-tune's result depends on: a finished run with other values is not mixed in
RUN_KEYS = ("test_sets", "train_images", "val_images", "crop", "patch", "batch", "blocks", "features", "lr",
            "pretrain_steps", "steps", "finetune_lr", "metrics")


def build(arch: str, blocks: int, features: int) -> torch.nn.Module:
    from jndplug.basicsr_compat import install_torchvision_shim

    install_torchvision_shim()  # basicsr 1.4.2 imports a torchvision module that no longer exists
    from basicsr.archs.edsr_arch import EDSR
    from basicsr.archs.srresnet_arch import MSRResNet

    if arch == "edsr":  # EDSR-baseline
        return EDSR(3, 3, num_feat=features, num_block=blocks, upscale=SCALE, res_scale=1.0)
    if arch == "srresnet":
        return MSRResNet(3, 3, num_feat=features, num_block=blocks, upscale=SCALE)
    raise BenchError(f"unknown arch {arch!r}: {' or '.join(ARCHS)}")


def load_training(s: Settings) -> dict:
    """Training photos and their LQ; every k-th chosen photo is held back for the validation curve."""
    train_files, val_files = training_files(s.train, s.train_images, s.val_images)
    data = {"gt": [], "lq": [], "files": [str(f) for f in train_files], "val_files": [str(f) for f in val_files]}
    for f in tqdm(train_files, desc="training photos", unit="img"):
        gt, lq = bicubic_lq(to_8bit(read_image(f)), SCALE)
        data["gt"].append(gt)
        data["lq"].append(lq)
    data["val"] = [bicubic_lq(centre_crop(to_8bit(read_image(f)), s.val_side, SCALE), SCALE) for f in val_files]
    return data


def batch(data: dict, target: str, rng: np.random.Generator, s: Settings):
    """A batch of LQ/target/map/ground-truth patches: random image, position, flip and rotation."""
    p, lp = s.patch, s.patch // SCALE
    xs, ys, ms, gs = [], [], [], []
    for _ in range(s.batch):
        i = int(rng.integers(len(data["lq"])))
        lq = data["lq"][i]
        top, left = int(rng.integers(lq.shape[0] - lp + 1)), int(rng.integers(lq.shape[1] - lp + 1))
        src = data["gt"][i] if images_of(target) == "gt" else data["targets"][images_of(target)][i]
        x = lq[top:top + lp, left:left + lp]
        y, g = (a[top * SCALE:top * SCALE + p, left * SCALE:left * SCALE + p] for a in (src, data["gt"][i]))
        m = (data["map"][i] if "map" in data else np.zeros(src.shape[:2], np.float16))[
            top * SCALE:top * SCALE + p, left * SCALE:left * SCALE + p, None]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        for j, a in enumerate((x, y, m, g)):
            a = np.rot90(a, k)
            a = a[:, ::-1] if flip else a
            (xs, ys, ms, gs)[j].append(np.ascontiguousarray(a))
    x, y, g = (torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 255.0 for a in (xs, ys, gs))
    m = torch.from_numpy(np.stack(ms).astype(np.float32)).permute(0, 3, 1, 2)
    return x, y, m, g


@torch.no_grad()
def upscale(net, lq: np.ndarray) -> np.ndarray:
    x = to_tensor(lq)[None].to(next(net.parameters()).device)
    return tensor_to_array(net(x).clamp(0, 1)[0])


def validate(net, data) -> float:
    """Mean PSNR-Y (BasicSR's conventions, a border of the scale) on the held-back photos."""
    net.eval()
    value = float(np.mean([psnr(upscale(net, lq), gt, crop_border=SCALE, y_channel=True) for gt, lq in data["val"]]))
    net.train()
    return value


def pretrain(arch: str, data: dict, s: Settings) -> Path:
    """One network per architecture against the ground truth; checkpoint at every validation."""
    folder = Path(s.out) / f"pretrain_{arch}"
    final = folder / "final.pt"
    if final.is_file():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = build(arch, s.blocks, s.features).to(s.device)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr, betas=(0.9, 0.99))
    # halve twice near the end, as BasicSR's multistep recipes do
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.7 * s.pretrain_steps), int(0.9 * s.pretrain_steps)], 0.5)
    state = {"step": 0, "curve": []}
    ckpt = folder / "checkpoint.pt"
    if ckpt.is_file():
        c = torch.load(ckpt, weights_only=True, map_location=s.device)
        net.load_state_dict(c["net"])
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        state = c["state"]
    t0 = time.perf_counter()
    bar = tqdm(total=s.pretrain_steps, initial=state["step"], desc=f"pretrain {arch}", unit="step")
    while state["step"] < s.pretrain_steps:
        x, y, _, _ = batch(data, "gt", np.random.default_rng((0, state["step"])), s)
        loss = F.l1_loss(net(x.to(s.device)), y.to(s.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        state["step"] += 1
        bar.update(1)
        if state["step"] % s.val_every == 0 or state["step"] == s.pretrain_steps:
            state["curve"].append({"step": state["step"], "val_psnr_y": validate(net, data),
                                   "seconds": time.perf_counter() - t0})
            bar.set_postfix(val=f"{state['curve'][-1]['val_psnr_y']:.3f}")
            save_atomic(ckpt, {"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                               "state": state})
    bar.close()
    write_json(folder / "curve.json", state["curve"])
    plot_curve(folder / "curve.png", arch, state["curve"])
    save_atomic(final, net.state_dict())
    return final


def plot_curve(path: Path, arch: str, curve: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([c["step"] for c in curve], [c["val_psnr_y"] for c in curve], "o-", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("validation PSNR-Y (dB)")
    ax.set_title(f"{arch} x4 pretraining against the ground truth")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def finetune(arch: str, target: str, seed: int, init: Path, data: dict, tests: list, suite, s: Settings,
             settings: dict) -> dict:
    run = Path(s.out) / "runs" / run_name(arch, target=target, seed=seed)
    done = finished_run(run, settings)
    if done is not None:
        return done
    torch.manual_seed(seed)
    net = build(arch, s.blocks, s.features).to(s.device)
    net.load_state_dict(torch.load(init, weights_only=True, map_location=s.device))
    opt = torch.optim.Adam(net.parameters(), lr=s.finetune_lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.8 * s.steps)], 0.5)
    tolerant = JNDTolerantLoss(None, kind="l1") if target == "tolerant" else None
    features, gan = None, None
    # the terms trained against the target's images; the others (a gan: arm's terms=) against the GT
    terms = gan_parts(target)[1] if arm_of(target) == "gan" else GAN_TERMS
    if arm_of(target) in ("perceptual", "gan"):
        weight = perceptual_weight(target) if arm_of(target) == "perceptual" else GAN_WEIGHTS["perceptual"]
        features = feature_network(target, s.device)
    if arm_of(target) == "gan":
        gan = GANTerm(s.device)
    t0 = time.perf_counter()
    for step in tqdm(range(s.steps), desc=run.name, unit="step", leave=False):
        # seed and step fix the batch: every target of one seed sees the same patches in the same order
        x, y, m, g = (t.to(s.device) for t in batch(data, target, np.random.default_rng((1000 + seed, step)), s))
        y_of = {term: y if term in terms else g for term in GAN_TERMS}
        pred = net(x)
        loss = tolerant(pred, y, jnd_map=m) if tolerant is not None else F.l1_loss(pred, y_of["pixel"])
        if gan is not None:
            loss = GAN_WEIGHTS["pixel"] * loss + GAN_WEIGHTS["adversarial"] * gan.generator_loss(pred)
        if features is not None:
            loss = loss + weight * sum(F.l1_loss(a, b) for a, b in zip(features(pred), features(y_of["perceptual"])))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if gan is not None:  # after the generator's step, as SRGAN alternates
            gan.discriminator_step(real=y_of["adversarial"], fake=pred.detach())
    train_seconds = time.perf_counter() - t0
    net.eval()
    return score(run, arch, target, seed, [(name, gt, upscale(net, lq)) for name, gt, lq in tests], suite,
                 settings, train_seconds, s.steps)


def post_sharpen(arch: str, target: str, seed: int, tests: list, suite, s: Settings, settings: dict) -> dict:
    """No training: the same seed's ``gt`` fine-tune's test outputs through the transform of ``post:T``."""
    from jndplug.bench.screen import Transforms, parse_transform

    run = Path(s.out) / "runs" / run_name(arch, target=target, seed=seed)
    done = finished_run(run, settings)
    if done is not None:
        return done
    label, opts = parse_transform(target[len(POST):])
    transform = Transforms([(label, opts)], s.estimator)
    source = Path(s.out) / "runs" / run_name(arch, target="gt", seed=seed) / "outputs"
    outputs = [(name, gt, transform(read_image(source / f"{name}.png"))[label]) for name, gt, _ in tests]
    return score(run, arch, target, seed, outputs, suite, settings, 0.0, 0)


def score(run: Path, arch: str, target: str, seed: int, outputs: list, suite, settings: dict,
          train_seconds: float, steps: int) -> dict:
    """Write and score one run's test outputs ``(name, gt, output)``; the run's result."""
    rows = []
    for name, gt, out in outputs:
        write_image(run / "outputs" / f"{name}.png", out)
        values, _ = suite(out, gt)
        rows.append({"file": name, **values})
    result = {"format": FORMAT, "arch": arch, "target": target, "seed": seed, "settings": settings,
              "train_seconds": train_seconds, "steps": steps,
              "mean": {m: float(np.mean([r[m] for r in rows if r.get(m) is not None])) for m in suite.names},
              "per_image": rows}
    write_json(run / "result.json", result)
    return result


def load_tests(s: Settings) -> list[tuple[str, np.ndarray, np.ndarray]]:
    tests = []
    for name in s.test_sets:
        for f in sorted(list_images(Path(s.test) / name)):
            gt, lq = bicubic_lq(centre_crop(to_8bit(read_image(f)), s.crop, SCALE), SCALE)
            tests.append((f"{name}/{f.stem}", gt, lq))
    if not tests:
        raise BenchError(f"no test images under {s.test} {' '.join(s.test_sets)}")
    return tests


def screen(arch: str, init: Path, tests: list, transforms: list[str], s: Settings) -> dict:
    """``jndplug bench screen`` on the pretrained network's test outputs."""
    from jndplug.bench import screen as screen_bench

    folder = Path(s.out) / f"screen_{arch}"
    if (folder / "screen.json").is_file():
        return json.loads((folder / "screen.json").read_text())
    net = build(arch, s.blocks, s.features).to(s.device)
    net.load_state_dict(torch.load(init, weights_only=True, map_location=s.device))
    net.eval()
    for name, gt, lq in tests:
        write_image(folder / "gt" / f"{name}.png", gt)
        write_image(folder / "outputs" / f"{name}.png", upscale(net, lq))
    return screen_bench.run(screen_bench.Settings(gt=str(folder / "gt"), outputs=str(folder / "outputs"),
                                                  out=str(folder), estimator=s.estimator, crop_border=SCALE,
                                                  metrics=list(s.metrics), transforms=transforms))


def run(s: Settings) -> dict:
    """Pretrain, fine-tune per target and seed, screen and report; returns the report."""
    if s.patch % SCALE:
        raise BenchError(f"--patch {s.patch} must be a multiple of {SCALE}")
    check_arms(s.targets)  # the other arms' settings fail now, not after pretraining
    # the images the trained arms compare with, each computed once ("gt" stays required)
    images = [t for t in s.targets if t == "gt"] + [images_of(t) for t in s.targets
                                                   if arm_of(t) in ("transform", "gan") and images_of(t) != "gt"]
    specs = transform_specs(list(dict.fromkeys(images)))
    transforms = [t for t in s.targets if arm_of(t) == "transform"]
    # checked before anything starts: a missing estimator must not surface after hours of pretraining
    estimator = None if s.pretrain_only else resolve_estimator(s.estimator)
    out = Path(s.out)
    data = load_training(s)
    tests = load_tests(s)
    out.mkdir(parents=True, exist_ok=True)
    inits = {arch: pretrain(arch, data, s) for arch in s.archs}
    if s.pretrain_only:
        return {}
    add_targets(data, specs, estimator, out)
    settings = {k: getattr(s, k) for k in RUN_KEYS}
    settings["estimator_sha256"] = hashlib.sha256(Path(estimator).read_bytes()).hexdigest()
    suite = MetricSuite(s.metrics, crop_border=SCALE)
    results, screens, curves = [], {}, {}
    for arch, init in inits.items():
        curves[arch] = json.loads((init.parent / "curve.json").read_text())
        screens[arch] = screen(arch, init, tests, transforms, s)
        for seed in s.seeds:
            trained = [t for t in s.targets if arm_of(t) != "post"]
            for target in trained:
                results.append(finetune(arch, target, seed, init, data, tests, suite, s, settings))
            for target in (t for t in s.targets if arm_of(t) == "post"):  # after this seed's gt fine-tune
                results.append(post_sharpen(arch, target, seed, tests, suite, s, settings))
        crops(out / f"crops_{arch}.png", arch, tests, s)
    rep = report(results, screens, curves, suite.names, tests, s)
    if set(PD) <= set(suite.names):
        pd_plane(out / "pd_plane.png", results, s)
    else:
        print(f"no pd_plane.png: it needs the metrics {' and '.join(PD)}", file=sys.stderr)
    result = {"format": FORMAT, "settings": dataclasses.asdict(s), "machine": machine(), "curves": curves,
              **rep, "estimator": estimator, "estimator_sha256": settings["estimator_sha256"],
              "train_files": data["files"], "val_files": data["val_files"]}
    write_json(out / "sr_results.json", result)
    write_text(out / "sr_results.md", rep["markdown"])
    print(rep["markdown"])
    return result
