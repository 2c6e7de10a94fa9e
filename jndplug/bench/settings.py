"""What each benchmark takes: one ``Settings`` dataclass per ``jndplug bench`` command, whose field
names are its flags (``jndplug.settings``).

They live apart from the runners because a runner and its report both read them: kept in the
runner, the report would import the module that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from jndplug.metrics import METRICS
from jndplug.settings import flag


def _cuda_if_available() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _estimator_archs() -> list[str]:
    # the registry, so a new architecture is timed without an edit here
    from jndplug.models import list_estimators

    return list_estimators()


SR_ARCHS = ("edsr", "srresnet")
# the arms of BENCHMARKS.md's SR proof, bound and budget spelled out so a default's change cannot
# rename a result: the default target, the previous one, the perceptual-loss curve, post-sharpening
SR_TARGETS = ["gt", "directed:bound=profile,strength=0.591", "directed:bound=estimator,strength=2",
              "perceptual:weight=0.3", "perceptual:weight=1", "perceptual:weight=3",
              "post:directed:bound=profile,strength=0.591"]
SR_METRICS = ["psnr_y", "ssim_y", "niqe", "flip", "stlpips", "ssimulacra2"]
CODEC_FACTOR = 64  # the codec's downsampling factor
SCREEN_METRICS = ("psnr_y", "ssim_y", "niqe", "flip", "stlpips")
ESTIMATOR_PARTS = ("speed", "accuracy", "overhead", "truth", "sur")
TRUTH_METRICS = ("ssimulacra2", "flip", "cvvdp")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
STATISTICS = {"max": "noticed_max", "mean": "noticed_mean"}  # bench visibility: over the photos, of the summary


@dataclass
class SRSettings:
    """One ``bench sr`` run; the field names are the command's flags."""

    train: str = flag(help="training photos (searched recursively)")
    test: str = flag(help="folder whose sub-folders are the test sets")
    out: str = flag("bench-sr", "results folder (rerun to resume)")
    test_sets: list[str] = flag(["CSet5", "CSet14"])
    archs: list[str] = flag(list(SR_ARCHS), choices=SR_ARCHS)
    targets: list[str] = flag(list(SR_TARGETS),
                              "gt (required), tolerant, screen transforms (usm, jnd, directed:strength=K,gain=G "
                              "...), perceptual:weight=W, post:TRANSFORM, gan:gt and gan:TRANSFORM, whose image "
                              "replaces the GT in all terms or those of terms=, e.g. gan:directed:strength=2,"
                              "terms=pixel+perceptual (gan:usm: pixel+perceptual, Real-ESRGAN's recipe)")
    seeds: list[int] = flag([0, 1, 2])
    estimator: str = flag("default", "JND estimator: pretrained name or .safetensors path")
    train_images: int = 200
    val_images: int = flag(10, "training photos held back for the pretraining curve")
    val_side: int = flag(192, "central crop of the validation photos (GT px)")
    crop: int = flag(256, "central crop of the test images (GT pixels)")
    patch: int = flag(64, "GT patch side (LQ: a quarter)")
    batch: int = 8
    blocks: int = flag(16, "residual blocks")
    features: int = flag(64, "feature channels")
    lr: float = flag(2e-4, "pretraining learning rate")
    pretrain_steps: int = 10000
    val_every: int = 500
    steps: int = flag(1000, "fine-tuning steps per target")
    finetune_lr: float = 5e-5
    metrics: list[str] = flag(list(SR_METRICS), choices=list(METRICS), metavar="METRIC")
    pretrain_only: bool = flag(False,
                               "stop after pretraining (a rerun without it fine-tunes from the same checkpoints)")
    device: str = flag(help="training device: cpu, cuda, cuda:1 ... (default: cuda if available); metrics run on "
                            "the CPU", factory=_cuda_if_available)


@dataclass
class CodecSettings:
    """One ``bench codec`` run; the field names are the command's flags."""

    train: str = flag(help="training photos (searched recursively)")
    eval: str = flag(help="evaluation photos, e.g. Kodak24")
    out: str = flag("bench-codec", "results folder (rerun to resume)")
    targets: list[str] = flag(["gt", "directed:bound=profile,strength=0.591", "directed:bound=estimator,strength=2"],
                              "gt (required) and screen transforms: jnd, directed:strength=K,gain=G, usm ...")
    seeds: list[int] = flag([0, 1])
    estimator: str = flag("default", "JND estimator: pretrained name or .safetensors path")
    channels: list[int] = flag([128, 192], "widths of the transforms (default: CompressAI's quality 1-5)",
                               nargs=2, metavar=("N", "M"))
    lambdas: list[float] = flag([0.0035, 0.0067, 0.013])
    pretrain_lambda: float | None = flag(None, "default: the middle of --lambdas")
    train_images: int = 300
    val_images: int = flag(8, "training photos held back for the curves")
    val_side: int = flag(256, "central crop of the validation photos")
    eval_images: int | None = flag(None, "use this many evaluation images, spread over the sorted list")
    patch: int = flag(128, f"training crop side (a multiple of {CODEC_FACTOR})")
    batch: int = 8
    lr: float = flag(3e-4, "pretraining learning rate")
    pretrain_steps: int = 20000
    adapt_steps: int = 2000
    adapt_lr: float = 1e-4
    steps: int = flag(500, "fine-tuning steps per target")
    finetune_lr: float = 5e-5
    val_every: int = 250
    metrics: list[str] = flag(["psnr_y", "ssim_y", "ms_ssim", "stlpips", "ssimulacra2", "flip"],
                              choices=list(METRICS), metavar="METRIC")
    pretrain_only: bool = flag(False, "stop after pretraining and adaptation")
    device: str = flag(help="training device: cpu, cuda, cuda:1 ... (default: cuda if available); entropy coding "
                            "and metrics run on the CPU", factory=_cuda_if_available)


@dataclass
class ScreenSettings:
    """One screen; the field names are the command's flags. Exactly one of ``outputs`` and ``bicubic``."""

    gt: str = flag(help="ground-truth folder (searched recursively)")
    outputs: str | None = flag(None, "restorer outputs, matched to --gt by relative path without extension",
                               exclusive="source")
    bicubic: int | None = flag(None, "stand-in restorer: the ground truth (mod-cropped to SCALE) downscaled and "
                                     "upscaled by x SCALE with BasicSR's MATLAB-style bicubic",
                               exclusive="source", metavar="SCALE")
    transforms: list[str] = flag(["jnd", "usm", "directed"],
                                 "NAME or NAME:KEY=VALUE,... (identity, jnd, directed, usm); identity is always added")
    estimator: str = flag("default", "JND estimator of jnd and directed: name or .safetensors")
    metrics: list[str] = flag(list(SCREEN_METRICS), f"default: {' '.join(SCREEN_METRICS)} (seconds per image on a "
                                                    f"CPU); any of {', '.join(METRICS)}",
                              choices=list(METRICS), metavar="METRIC")
    crop_border: int | None = flag(None, "pixels removed at every edge before scoring "
                                         "(default: SCALE with --bicubic, else 0)")
    crop: int | None = flag(None, "score the central CROPxCROP (at most) of each image")
    max_images: int | None = flag(None, "use this many images, spread over the sorted list")
    out: str = flag("bench-screen", "results folder (screen.json, screen.md)")
    overwrite: bool = flag(False, "replace the results of an earlier screen in --out")
    metrics_device: str = flag("cpu", "device of the network-based metrics: cpu, cuda, cuda:1 ... (default cpu)")


@dataclass
class TargetsSettings:
    """One ``bench targets`` run; the field names are the command's flags."""

    images: str = flag(help="folder of photos (searched recursively), e.g. Kodak24")
    targets: list[str] = flag(["directed"], "targets as KIND[:key=value,...], e.g. directed "
                                            "directed:bound=estimator jnd (default: directed, the shipped default)",
                              metavar="SPEC")
    out: str = flag("bench-targets", "results folder (rerun to resume; default bench-targets)")
    limit: int | None = flag(None, "at most N photos, spread over the sorted list")
    max_side: int | None = flag(None, "downscale photos whose longer side exceeds this")
    observers: int = flag(20, "simulated panel size (default 20)")
    seed: int = flag(0, "seed of the simulated panel (default 0)")
    device: str = flag("cpu", "where the JND estimator runs (default cpu)")


@dataclass
class EstimatorSettings:
    """One ``bench estimator`` run; the field names are the command's flags (their help says which part uses each)."""

    parts: list[str] = flag(list(ESTIMATOR_PARTS), choices=ESTIMATOR_PARTS)
    out: str = flag("bench-estimator", "results folder")
    device: str = flag(help="cpu, cuda, cuda:1 ... (default: cuda if available)", factory=_cuda_if_available)
    archs: list[str] = flag(help="architectures timed with random weights", factory=_estimator_archs)
    weights: list[str] = flag([], "estimators: pretrained names or .safetensors files (speed, accuracy, truth)")
    sizes: list[str] = flag(["512x512", "1920x1080"], "speed: image sizes WxH")
    budget: float = flag(10.0, "speed: seconds of timed runs per case (at least one)")
    dtype: str = flag("float32", "speed: arithmetic of the timed forward passes (bfloat16/float16: what a GPU user "
                                 "would run)", choices=list(DTYPE_NAMES))
    data: list[str] = flag([], "accuracy, sur: labelled data, e.g. generated:DATASET")
    split: str | None = flag(None, "sur: split.json of the training run: its validation ids only, and its training "
                                   "ids for the most-common-level baseline")
    sur_values: list[float] = flag([0.5, 0.75, 0.95], "sur: satisfied-user ratios to compare")
    val_crop: int = flag(512, "accuracy: central crop side, as in training validation")
    estimator: str = flag("default", "overhead: the JND estimator (name or path)")
    patch: int = flag(96, "overhead: GT patch side of the training batch")
    batch: int = flag(16, "overhead: batch size")
    steps: int = flag(5, "overhead: timed steps per block")
    repeats: int = flag(3, "overhead: alternating blocks with and without JNDTarget")
    images: str | None = flag(None, "truth: folder of photos (searched recursively), e.g. Kodak24")
    limit: int | None = flag(None, "truth: use this many images, spread over the sorted list")
    max_side: int | None = flag(None, "truth: downscale (Lanczos) images whose longer side exceeds this")
    sur: float | None = flag(None, "truth: satisfied-user ratio for SUR-conditioned estimators (default: each one's "
                                   "own; estimators without SUR conditioning ignore it)")
    strength: float = flag(1.0, "truth: JNDTarget strength (default 1)")
    metrics: list[str] = flag(list(TRUTH_METRICS), f"truth: visibility metrics of the JND images (default "
                                                   f"{' '.join(TRUTH_METRICS)})",
                              choices=list(METRICS), metavar="METRIC")


@dataclass
class VisibilitySettings:
    """One ``bench visibility`` run; the field names are the command's flags."""

    images: str = flag(help="photos to calibrate on (searched recursively); not the ones you judge on")
    targets: list[str] = flag(["directed"], "targets as KIND[:key=value,...]; a strength given is the first guess "
                                            "(default 1 where the bound has no default), e.g. directed "
                                            "directed:bound=localstd,strength=0.2", metavar="SPEC")
    out: str = flag("bench-visibility", "results folder (rerun to resume; default bench-visibility)")
    level: float = flag(0.25, "the panel's detection probability to reach (default 0.25: SUR 0.75)")
    statistic: str = flag("max", "over the photos: max (default; no photo above the level) or mean",
                          choices=list(STATISTICS))
    match: str | None = flag(None, "instead of --level: the statistic of this target", metavar="SPEC")
    tolerance: float = flag(0.01, "stop when the statistic is this close to the level (default 0.01)")
    evaluations: int = flag(6, "at most this many strengths per target (default 6)")
    limit: int | None = flag(None, "at most N photos, spread over the sorted list")
    max_side: int | None = flag(None, "downscale photos whose longer side exceeds this")
    observers: int = flag(20, "simulated panel size (default 20)")
    seed: int = flag(0, "seed of the simulated panel (default 0)")
    device: str = flag("cpu", "where the JND estimator runs (default cpu)")
