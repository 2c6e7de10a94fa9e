"""Real entropy coding of a trained codec: ``evaluate(EvalSettings(dataset, checkpoint, out))``, or
``python -m jndplug.integrations.compressai.evaluate DIR --checkpoint FILE --out OUT`` (``cli.py``).

Every image under DIR is padded (centred, with zeros, as CompressAI's ``eval_model`` does) to a
multiple of the model's downsampling factor, entropy-coded with ``model.compress`` after
``model.update(force=True)``, and decoded from those bitstreams with ``model.decompress``.
bpp = 8 x bytes of the bitstreams / (H x W) of the original image. The decoded image, cropped back
and rounded to the file's bit depth (what a decoder writes), is compared with the ORIGINAL image:
the JND image is only ever a training target.

Outputs in OUT: ``LABEL-qQ.json`` (per-image and mean bpp, PSNR, MS-SSIM, timings), ``rd.png``
(redrawn from every result JSON in OUT, one curve per label, so evaluating each checkpoint of a
sweep into the same OUT builds the RD plot) and, on request, the bitstream files and the
reconstructions.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ops import compute_padding
from pytorch_msssim import ms_ssim
from tqdm import tqdm

from jndplug.imageio import (array_to_tensor, atomic_write, list_images, read_image, tensor_to_array,
                             write_image)
from jndplug.pixels import MS_SSIM_MIN_SIDE, psnr
from jndplug.settings import flag
from jndplug.viz import save_figure

from jndplug.integrations.compressai.codec import MODEL_NAMES, CodecError, downsampling_factor, load_codec
from jndplug.integrations.compressai.data import check_images

FORMAT = "jndplug-compressai-eval/1"
BITSTREAM_MAGIC = b"JNDPLUG-CAI1"


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate: ``dataset`` (a folder, searched recursively, or one image file), the
    ``checkpoint`` (``model``/``quality`` needed only for CompressAI's own files), the ``out`` folder,
    the curve ``label`` in the RD plot (default MODEL-jnd / MODEL-original / MODEL). Each field is also
    the command line's flag (``jndplug.settings``, ``cli.py``)."""

    dataset: str = flag(help="folder of images (searched recursively) or one image file", option="dataset")
    checkpoint: str = flag(help="a checkpoint of the train command or a CompressAI .pth.tar")
    out: str = flag(help="folder for the JSON results and the RD plot")
    model: str | None = flag(None, f"needed for CompressAI's own files: {', '.join(MODEL_NAMES)}")
    quality: int | None = flag(None, "needed for CompressAI's own files")
    label: str | None = flag(None, "curve name in the RD plot (default: MODEL-jnd / MODEL-original / MODEL)")
    device: str = flag("cpu", "cpu, cuda, cuda:1 ... (default cpu; entropy coding itself always runs on the CPU)")
    save_bitstreams: bool = flag(False, "write OUT/bitstreams/LABEL-qQ/*.jndc")
    save_reconstructions: bool = flag(False, "write OUT/reconstructions/LABEL-qQ/*.png")
    overwrite: bool = flag(False, "replace the results of this label and quality that OUT holds (its JSON, "
                                  "bitstreams and reconstructions)")


SAVED = ("bitstreams", "reconstructions")  # OUT/<kind>/LABEL-qQ/, written only on request


def evaluate(s: EvalSettings) -> Path:
    """Code every image, write the result JSON and redraw the RD plot; returns the path of the JSON."""
    model, name, quality, checkpoint = load_codec(s.checkpoint, s.model, s.quality)
    model.to(s.device)
    label = s.label or _default_label(name, checkpoint)
    root = Path(s.dataset)
    files = list_images(root)
    if not files:
        raise CodecError(f"no images found under {root}")
    out = Path(s.out)
    run = f"{label}-q{quality}"
    previous = [p for p in (out / f"{run}.json", *(out / kind / run for kind in SAVED)) if p.exists()]
    if previous and not s.overwrite:
        raise CodecError(f"{out} already holds results of {run} ({', '.join(str(p) for p in previous)}): add "
                         "--overwrite to replace them, or choose another --out or --label")
    factor = downsampling_factor(model)
    check_images(files, factor, f"{factor}x{factor}, the downsampling factor of {name}")
    # this run's files are gathered aside and replace the previous ones only once every image is coded
    staging = out / f".{run}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run
    records = []
    for path in tqdm(files, desc=f"{name} q{quality}", unit="img"):
        rel = path.relative_to(root) if root.is_dir() else Path(path.name)
        record, bitstream, reconstruction = evaluate_image(model, read_image(path), str(rel))
        records.append(record)
        if s.save_bitstreams:
            with atomic_write(staging / "bitstreams" / rel.with_suffix(".jndc")) as f:
                f.write(bitstream)
        if s.save_reconstructions:
            write_image(staging / "reconstructions" / rel.with_suffix(".png"), reconstruction)
    for kind in SAVED:
        # stale files of an earlier evaluation of this run would pass for this one's
        shutil.rmtree(out / kind / run, ignore_errors=True)
        if (staging / kind).is_dir():
            (out / kind).mkdir(parents=True, exist_ok=True)
            os.replace(staging / kind, out / kind / run)
    shutil.rmtree(staging, ignore_errors=True)
    result = {"format": FORMAT, "label": label, "model": name, "quality": quality,
              "lmbda": checkpoint.get("lmbda"), "jnd": checkpoint.get("jnd"), "checkpoint": str(s.checkpoint),
              "dataset": str(root), "device": str(s.device), "mean": _means(records), "images": records}
    json_path = out / f"{run}.json"
    with atomic_write(json_path, "w") as f:
        json.dump(result, f, indent=1)
    plot_rd(out)
    m = result["mean"]
    print(f"{run}: {len(records)} images, {m['bpp']:.4f} bpp, PSNR {m['psnr']:.2f} dB"
          + (f", MS-SSIM {m['ms_ssim']:.4f}" if m["ms_ssim"] is not None else "") + f" -> {json_path}",
          file=sys.stderr)
    return json_path


@torch.no_grad()
def evaluate_image(model, array: np.ndarray, name: str = "image") -> tuple[dict, bytes, np.ndarray]:
    """Code one HxWx3 image for real: its metrics record, bitstream file contents and decoded array."""
    x = array_to_tensor(array)[None].to(next(model.parameters()).device)
    h, w = x.shape[-2:]
    t0 = time.perf_counter()
    strings, latent_shape = encode(model, x, name)
    t1 = time.perf_counter()
    decoded = decode(model, strings, latent_shape, h, w)
    t2 = time.perf_counter()
    reconstruction = tensor_to_array(decoded[0], array.dtype)
    num_bytes = sum(len(s) for group in strings for s in group)
    record = {"file": name, "height": h, "width": w, "bytes": num_bytes, "bpp": num_bytes * 8 / (h * w),
              **metrics(array_to_tensor(array), array_to_tensor(reconstruction)),
              "encode_s": t1 - t0, "decode_s": t2 - t1}
    bits = 16 if array.dtype == np.uint16 else 8
    return record, pack_bitstream(strings, latent_shape, h, w, bits), reconstruction


def encode(model, x: torch.Tensor, name: str = "image"):
    """``model.compress`` of ``x`` [1,3,H,W] padded to the downsampling factor: (strings, latent shape)."""
    factor = downsampling_factor(model)
    h, w = x.shape[-2:]
    if h < factor or w < factor:
        raise CodecError(f"{name} is {h}x{w}, smaller than {factor}x{factor}, the downsampling factor of "
                         f"{type(model).__name__}")
    pad, _ = compute_padding(h, w, min_div=factor)
    out = model.compress(F.pad(x, pad, mode="constant", value=0))
    return out["strings"], tuple(int(s) for s in out["shape"])


def decode(model, strings, latent_shape, h: int, w: int) -> torch.Tensor:
    """``model.decompress`` of the strings, cropped back to the original ``h`` x ``w``: [1,3,H,W] in [0,1]."""
    _, unpad = compute_padding(h, w, min_div=downsampling_factor(model))
    return F.pad(model.decompress(strings, latent_shape)["x_hat"], unpad)


def metrics(original: torch.Tensor, reconstruction: torch.Tensor) -> dict:
    """Distortion of ``reconstruction`` against ``original`` ([3,H,W] in [0,1])."""
    a, b = original[None].double(), reconstruction[None].double()
    result = {"psnr": psnr(a, b), "ms_ssim": None, "ms_ssim_db": None}
    if min(a.shape[-2:]) >= MS_SSIM_MIN_SIDE:
        value = float(ms_ssim(a.float(), b.float(), data_range=1.0))
        result.update(ms_ssim=value, ms_ssim_db=-10 * math.log10(1 - value) if value < 1 else math.inf)
    return result


def pack_bitstream(strings, latent_shape, h: int, w: int, bits: int = 8) -> bytes:
    """A ``.jndc`` file: the bitstreams with what a decoder needs besides the model (docs/compressai.md)."""
    header = json.dumps({"height": h, "width": w, "bits": bits, "latent_shape": list(latent_shape),
                         "lengths": [[len(s) for s in group] for group in strings]}).encode()
    return BITSTREAM_MAGIC + struct.pack("<I", len(header)) + header + b"".join(s for g in strings for s in g)


def _parse_bitstream(data: bytes) -> tuple[dict, list[list[bytes]]]:
    start = len(BITSTREAM_MAGIC) + 4
    if not data.startswith(BITSTREAM_MAGIC) or len(data) < start:
        raise CodecError("not a jndplug CompressAI bitstream (.jndc) file")
    (n,) = struct.unpack("<I", data[len(BITSTREAM_MAGIC):start])
    try:
        header = json.loads(data[start:start + n])
        lengths = header["lengths"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CodecError(f"corrupt .jndc header ({exc})") from None
    pos, strings = start + n, []
    for group_lengths in lengths:
        group = []
        for length in group_lengths:
            group.append(data[pos:pos + length])
            pos += length
        strings.append(group)
    if pos != len(data):
        raise CodecError(f"truncated or corrupt .jndc file: {len(data)} bytes, the header describes {pos}")
    return header, strings


def unpack_bitstream(data: bytes):
    """Inverse of ``pack_bitstream``: (strings, latent shape, height, width)."""
    header, strings = _parse_bitstream(data)
    return strings, tuple(header["latent_shape"]), header["height"], header["width"]


@torch.no_grad()
def decode_bitstream(model, data: bytes) -> np.ndarray:
    """The image a ``.jndc`` file holds, decoded with the model it was coded with (``load_codec`` of
    the same checkpoint): HxWx3, uint8 or uint16 as the original, equal to the reconstruction
    ``evaluate`` scored."""
    header, strings = _parse_bitstream(data)
    x = decode(model, strings, tuple(header["latent_shape"]), header["height"], header["width"])
    return tensor_to_array(x[0], np.uint16 if header.get("bits") == 16 else np.uint8)


def plot_rd(out: Path) -> Path:
    """Redraw OUT/rd.png from every result JSON in OUT: bpp against PSNR (and MS-SSIM in dB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list[dict]] = {}
    for path in sorted(out.glob("*.json")):
        result = json.loads(path.read_text())
        if result.get("format") == FORMAT:
            curves.setdefault(result["label"], []).append(result)
    panels = [("psnr", "PSNR (dB)")]
    if all(r["mean"]["ms_ssim_db"] is not None for rs in curves.values() for r in rs):
        panels.append(("ms_ssim_db", "MS-SSIM (dB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for label, results in curves.items():
            results.sort(key=lambda r: r["mean"]["bpp"])
            xs, ys = [r["mean"]["bpp"] for r in results], [r["mean"][key] for r in results]
            ax.plot(xs, ys, "o-", label=label)
            for r, x_, y_ in zip(results, xs, ys):
                ax.annotate(f"q{r['quality']}", (x_, y_), textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.set(xlabel="bits per pixel", ylabel=title, title=f"{title} vs original images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "rd.png"
    save_figure(fig, path, dpi=120)
    return path


def _means(records: list[dict]) -> dict:
    means = {}
    for key in ("bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s"):
        values = [r[key] for r in records]
        # an image too small for MS-SSIM leaves the mean undefined rather than biased
        means[key] = None if any(v is None for v in values) else float(np.mean(values))
    return means


def _default_label(name: str, checkpoint: dict) -> str:
    if "jnd" not in checkpoint:  # CompressAI's own file
        return name
    return f"{name}-{'jnd' if checkpoint['jnd'] else 'original'}"


if __name__ == "__main__":
    from jndplug.integrations.compressai.cli import evaluate_main

    evaluate_main()
