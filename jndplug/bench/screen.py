"""``jndplug bench screen``: predict, without training, whether a target transform helps a restorer.

Under an L2 loss a restorer trained on ``T(y)`` learns about ``T(f(x))`` when ``T`` is close to
linear (``f`` the ground-truth-trained restorer). So the screen applies each transform to the
outputs of a ground-truth-trained restorer (``--outputs``; or bicubic upsampling of the ground
truth's downscaled copy, ``--bicubic SCALE``, as a stand-in) and scores them against the true
ground truth. A metric that gets better than under ``identity`` predicts that fine-tuning on
``T(y)`` helps it; worse predicts it hurts. Also reported per transform: the luma power ratio of
transformed over untransformed output in radial frequency bands (cycles/px), the share of the
change's energy that is a per-channel mean shift, its chroma share (BT.601) and its RMS.

Transforms (``--transforms``; ``identity`` is always scored first):

- ``identity``: the outputs themselves;
- ``jnd``, ``directed`` and every other target kind, written as ``TargetSpec.parse`` reads them
  (``jnd:strength=0.5``, ``directed:strength=2,gain=4``, ``directed:gain=1,bound=profile,sigma=2``):
  the JND target ``JNDTarget`` makes of the outputs, exactly as in training, with the estimator of
  ``--estimator``;
- ``usm[:weight=W,radius=R,threshold=T]``: BasicSR's ``usm_sharp`` (Real-ESRGAN's ``gt_usm``;
  defaults 0.5, 50, 10), a bench-only transform.

Transformed outputs are rounded to 8 bits, as a restorer's saved outputs are. Writes
``screen.json`` and ``screen.md`` under ``--out``. The prediction has not yet been validated
against real fine-tunes (docs/directed.md).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from jndplug.basicsr_compat import install_torchvision_shim
from jndplug.bench import truth
from jndplug.bench.common import BenchError, machine, resolve_estimator, spread, write_json, write_text
from jndplug.bench.settings import ScreenSettings as Settings
from jndplug.imageio import array_to_tensor, list_images, read_image, to_8bit
from jndplug.metrics import METRICS, MetricsError, MetricSuite, fmt, match_files, mean_of
from jndplug.pixels import bicubic_lq, bicubic_resize, centre_crop
from jndplug.spec import KINDS, TargetSpec, TargetSpecError

FORMAT = "jndplug-bench-screen/1"
# the transforms that are no JND target (those are TargetSpec kinds), with their options' defaults
BENCH_ONLY = {"identity": {}, "usm": {"weight": 0.5, "radius": 50, "threshold": 10}}


def parse_transform(text: str) -> tuple[str, TargetSpec | dict]:
    """``(label, what)`` of one transform: the ``TargetSpec`` of a JND target, the options (completed
    with the defaults) of a bench-only one."""
    name, _, rest = text.partition(":")
    if name in BENCH_ONLY:
        return text, {"name": name, **_bench_only_options(text, BENCH_ONLY[name], rest)}
    if name not in KINDS:
        raise BenchError(f"--transforms {text}: unknown transform {name!r}; known: {', '.join([*BENCH_ONLY, *KINDS])}")
    if "estimator" in (item.partition("=")[0].strip() for item in rest.split(",")):
        # one estimator per benchmark: its file is checked before any work and recorded with the results
        raise BenchError(f"--transforms {text}: give the estimator with --estimator, not in the transform")
    try:
        return text, TargetSpec.parse(text)
    except TargetSpecError as exc:
        raise BenchError(f"--transforms {exc}") from None


def _bench_only_options(text: str, defaults: dict, rest: str) -> dict:
    opts = dict(defaults)
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in opts:
            raise BenchError(f"--transforms {text}: {item!r} is not KEY=VALUE with KEY one of "
                             f"{', '.join(opts) or '(none: identity takes no options)'}")
        try:
            opts[key] = type(opts[key])(value)
        except ValueError:
            raise BenchError(f"--transforms {text}: {key} must be a number, got {value!r}") from None
        if not np.isfinite(opts[key]) or opts[key] < 0 or (key == "radius" and opts[key] == 0):
            raise BenchError(f"--transforms {text}: {key} must be a finite number "
                             f"{'> 0' if key == 'radius' else '>= 0'}, got {value}")
    return opts


def options_of(what: TargetSpec | dict) -> dict:
    """A transform's resolved options as plain values: what its images depend on besides the estimator."""
    if not isinstance(what, TargetSpec):
        return dict(what)
    values = what.to_mapping()
    # sur only where given: unset, the results of earlier runs (and their cached images) keep their key
    return {"name": what.kind, **{n: values[n] for n in what.applies()
                                  if n not in ("kind", "estimator") and not (n == "sur" and values[n] is None)}}


def _any_uses_estimator(specs: list[tuple[str, TargetSpec | dict]]) -> bool:
    return any(isinstance(what, TargetSpec) and what.uses_estimator for _, what in specs)


class Transforms:
    """Applies the parsed transforms to one HxWx3 uint8 output; every JND target through its own
    ``JNDTarget``, with ``estimator`` wherever the target uses one."""

    def __init__(self, specs: list[tuple[str, TargetSpec | dict]], estimator: str | None):
        from jndplug.target import JNDTarget

        self.specs = specs
        self.targets = {label: JNDTarget.from_spec(dataclasses.replace(what, estimator=estimator)
                                                   if what.uses_estimator else what)
                        for label, what in specs if isinstance(what, TargetSpec)}
        if any(isinstance(what, dict) and what["name"] == "usm" for _, what in specs):
            try:
                install_torchvision_shim()
                import basicsr.utils.img_process_util  # noqa: F401
            except ImportError as exc:
                raise BenchError(f"the usm transform needs basicsr (pip install 'jndplug[basicsr]'): {exc}") from None

    def __call__(self, out: np.ndarray) -> dict[str, np.ndarray]:
        x = array_to_tensor(out)[None]
        result = {}
        for label, what in self.specs:
            if label in self.targets:
                y = self.targets[label](x)
            elif what["name"] == "identity":
                y = x
            else:
                from basicsr.utils.img_process_util import usm_sharp

                y = torch.from_numpy(usm_sharp(out.astype(np.float32) / 255.0, what["weight"], int(what["radius"]),
                                               what["threshold"])).permute(2, 0, 1)[None]
            result[label] = np.clip(np.round(y[0].permute(1, 2, 0).numpy().astype(np.float64) * 255), 0, 255
                                    ).astype(np.uint8)
        return result


def _bicubic(gt: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(GT mod-cropped to the scale, its MATLAB-style bicubic down-then-up copy), as ``bench sr`` makes them."""
    gt, lq = bicubic_lq(gt, scale)
    return gt, bicubic_resize(lq, scale)


def _pairs(settings: Settings) -> list[tuple[str, Path | None, Path]]:
    gt = Path(settings.gt)
    if not gt.is_dir():
        raise BenchError(f"--gt {gt}: not a folder")
    if settings.outputs is not None:
        if not Path(settings.outputs).is_dir():
            raise BenchError(f"--outputs {settings.outputs}: not a folder")
        try:
            pairs = match_files(settings.outputs, gt)
        except MetricsError as exc:
            raise BenchError(f"--outputs/--gt: {exc}") from None
    else:
        files = list_images(gt)
        if not files:
            raise BenchError(f"--gt {gt}: no images found")
        pairs = [(p.relative_to(gt).with_suffix("").as_posix(), None, p) for p in files]
    return spread(pairs, settings.max_images)


def run(settings: Settings) -> dict:
    if (settings.outputs is None) == (settings.bicubic is None):
        raise BenchError("give one of --outputs (a restorer's outputs) and --bicubic SCALE")
    if settings.bicubic is not None and settings.bicubic < 2:
        raise BenchError(f"--bicubic {settings.bicubic}: the scale must be an integer >= 2")
    if settings.crop is not None and settings.crop < 16:
        raise BenchError(f"--crop {settings.crop}: use at least 16 pixels")
    if (Path(settings.out) / "screen.json").exists() and not settings.overwrite:
        raise BenchError(f"{Path(settings.out) / 'screen.json'} already holds a screen's results; use another --out, "
                         "or --overwrite to replace them")
    specs = [parse_transform("identity")] + [parse_transform(s) for s in settings.transforms if s != "identity"]
    labels = [label for label, _ in specs]
    if len(set(labels)) != len(labels):
        raise BenchError(f"--transforms names a transform twice: {' '.join(settings.transforms)}")
    estimator = resolve_estimator(settings.estimator) if _any_uses_estimator(specs) else None
    crop = settings.crop_border if settings.crop_border is not None else (settings.bicubic or 0)
    pairs = _pairs(settings)
    try:
        suite = MetricSuite(settings.metrics, crop_border=crop, device=settings.metrics_device)
    except MetricsError as exc:
        raise BenchError(str(exc)) from None
    if not suite.names:
        raise BenchError(f"none of --metrics {' '.join(settings.metrics)} can run here: "
                         + "; ".join(f"{m}: {why}" for m, why in suite.skipped.items()))
    transforms = Transforms(specs, estimator)
    rows = {label: [] for label in labels}
    notes: dict[str, str] = {}
    for name, out_path, gt_path in tqdm(pairs, desc="screen", unit="img"):
        gt = to_8bit(read_image(gt_path))
        if out_path is None:
            gt, out = _bicubic(centre_crop(gt, settings.crop), settings.bicubic)
        else:
            out = to_8bit(read_image(out_path))
            if out.shape != gt.shape:
                raise BenchError(f"{name}: the output is {out.shape[1]}x{out.shape[0]} but the ground truth is "
                                 f"{gt.shape[1]}x{gt.shape[0]}")
            gt, out = centre_crop(gt, settings.crop), centre_crop(out, settings.crop)
        base = out.astype(np.float64) / 255.0
        for label, y in transforms(out).items():
            try:
                values, why = suite(y, gt)
            except MetricsError as exc:
                raise BenchError(f"{name}: {exc}") from None
            for m, reason in why.items():
                notes.setdefault(m, f"{reason} (e.g. {name})")
            yf = y.astype(np.float64) / 255.0
            rows[label].append({"file": name, **values,
                                "band_power_ratio": truth.band_power_ratios(base, yf),
                                "mean_shift_share": truth.mean_shift_share(base, yf),
                                "chroma_share": truth.chroma_share(base, yf),
                                "rms_255": float(np.sqrt(((yf - base) ** 2).mean()) * 255)})
    result = summarize(specs, rows, suite.names)
    result.update(format=FORMAT, gt=str(Path(settings.gt).resolve()),
                  source=f"bicubic x{settings.bicubic}" if settings.bicubic else str(Path(settings.outputs).resolve()),
                  estimator=estimator, crop_border=crop, crop=settings.crop, images=len(pairs),
                  skipped=dict(suite.skipped), notes=notes, machine=machine(), per_image=rows)
    out = Path(settings.out)
    write_json(out / "screen.json", result)
    text = markdown(result)
    write_text(out / "screen.md", text)
    print(text)
    print(f"wrote {out / 'screen.json'} and {out / 'screen.md'}", file=sys.stderr)
    return result


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(specs, rows: dict[str, list[dict]], names: list[str]) -> dict:
    """Means per transform, deltas vs identity and the predicted effect (help / hurt / none) per metric."""
    base = mean_of(rows["identity"], names)
    summary = []
    for label, s in specs:
        mean = mean_of(rows[label], names)
        entry = {"transform": label, "options": options_of(s), "mean": mean,
                 "band_power_ratio": [_mean(r["band_power_ratio"][i] for r in rows[label])
                                      for i in range(len(truth.BANDS))],
                 "mean_shift_share": _mean(r["mean_shift_share"] for r in rows[label]),
                 "chroma_share": _mean(r["chroma_share"] for r in rows[label]),
                 "rms_255": _mean(r["rms_255"] for r in rows[label])}
        if label != "identity":
            entry["delta"], entry["prediction"] = {}, {}
            for m in names:
                if mean[m] is None or base[m] is None:
                    entry["delta"][m], entry["prediction"][m] = None, None
                    continue
                d = mean[m] - base[m]
                entry["delta"][m] = d
                better = d > 0 if METRICS[m].higher_is_better else d < 0
                entry["prediction"][m] = "none" if d == 0 else ("help" if better else "hurt")
        summary.append(entry)
    return {"metrics": names, "bands": list(truth.BAND_NAMES), "summary": summary}


def markdown(result: dict) -> str:
    names = result["metrics"]
    head = "| transform | " + " | ".join(f"{METRICS[m].label} {'↑' if METRICS[m].higher_is_better else '↓'}"
                                          for m in names) + " |"
    lines = [f"Zero-training screen: {result['images']} images of {result['gt']}, outputs: {result['source']}, "
             f"crop border {result['crop_border']}"
             + (f", central crops of at most {result['crop']} px" if result["crop"] else "")
             + ". Each transform applied to the outputs, scored against the ground truth; in brackets the "
               "change vs identity and the predicted effect of fine-tuning on that target.", "", head,
             "|" + "---|" * (len(names) + 1)]
    for e in result["summary"]:
        cells = []
        for m in names:
            if e["transform"] == "identity" or e["delta"][m] is None:
                cells.append(fmt(e["mean"][m], m))
            else:
                d = e["delta"][m]
                cells.append(f"{fmt(e['mean'][m], m)} ({'+' if d >= 0 else ''}{fmt(d, m)}, {e['prediction'][m]})")
        lines.append(f"| {e['transform']} | " + " | ".join(cells) + " |")
    lines += ["", "What each transform does to the outputs: luma power ratio (transformed / untransformed) per band "
                  "in cycles/px, share of the change's energy that is a per-channel mean shift, its chroma share "
                  "(BT.601), RMS change in 8-bit levels (means over images).", "",
              "| transform | " + " | ".join(f"band {b}" for b in result["bands"])
              + " | mean-shift share | chroma share | RMS (/255) |", "|" + "---|" * (len(result["bands"]) + 4)]
    for e in result["summary"]:
        lines.append(f"| {e['transform']} | " + " | ".join(fmt(v) for v in e["band_power_ratio"])
                     + f" | {fmt(e['mean_shift_share'])} | {fmt(e['chroma_share'])} | {fmt(e['rms_255'], 'psnr')} |")
    extra = [f"- {m}: skipped: {why}" for m, why in result["skipped"].items()]
    extra += [f"- {m}: n/a for some images, so its means are n/a: {why}" for m, why in result["notes"].items()]
    if extra:
        lines += [""] + extra
    return "\n".join(lines) + "\n"
