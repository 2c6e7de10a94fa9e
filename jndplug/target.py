"""``JNDTarget``: ground-truth images in, JND images out, ready to be a training target."""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from jndplug import directed
from jndplug.imageio import check_image_tensor
from jndplug.weights import load_estimator

# Above this many pixels per image, inputs are tiled automatically so that activation memory
# stays bounded (the default unet needs roughly 0.4 KB of activations per pixel in float32).
AUTO_TILE_PIXELS = 2048 * 2048
AUTO_TILE = (1024, 128)
KINDS = ("jnd", "directed")


class JNDTarget:
    """Turn a batch of pristine images into inferred JND images.

    Args:
        estimator: a pretrained name (``"default"``), the path of a jndplug ``.safetensors`` file,
            or an ``nn.Module`` taking ``[B,3,H,W]`` in [0,1] and returning the JND image.
        strength: scales the predicted distortion, ``out = gt + strength * (jnd - gt)``;
            0 returns ``gt``, values above 1 exaggerate it.
        sur: target satisfied-user ratio in (0, 1] (fraction of people who must not notice),
            only for estimators trained with that conditioning.
        device: where the estimator runs; ``None`` follows each input. Outputs always come back
            on the input's device.
        dtype: compute dtype (e.g. ``torch.bfloat16`` on GPU); ``None`` uses float32. Outputs
            keep the input's dtype.
        tile: ``(size, overlap)`` to process large images in overlapping tiles blended
            seamlessly; ``None`` tiles automatically above 2048x2048; ``False`` never tiles.
        kind: ``"jnd"`` (default): the seed paper's estimated JND image; ``"directed"``: the
            perception-directed JND image (:mod:`jndplug.directed`), a zero-mean luma sharpening
            ``gain * highpass(Y)`` bounded per pixel by this estimator's JND magnitude (times
            ``strength``). See docs/directed.md.
        gain: the directed image's sharpening gain (0 returns ``gt``); only with ``kind="directed"``,
            default :data:`jndplug.directed.DEFAULT_GAIN`.

    Calling the object on ``[B,3,H,W]`` or ``[3,H,W]`` float images in [0,1] returns JND images
    of the same shape, dtype and device, clamped to [0,1], with no autograd graph.
    """

    def __init__(self, estimator: str | os.PathLike | nn.Module = "default", strength: float = 1.0,
                 sur: float | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, tile: tuple[int, int] | None | bool = None,
                 kind: str = "jnd", gain: float | None = None):
        if isinstance(estimator, nn.Module):
            model = estimator
        elif isinstance(estimator, (str, os.PathLike)):
            model = load_estimator(estimator)
        else:
            raise TypeError(f"estimator must be a pretrained name, a .safetensors path or an nn.Module, "
                            f"got {type(estimator).__name__}")
        try:
            strength = float(strength)
        except (TypeError, ValueError):
            raise TypeError(f"strength must be a number, got {strength!r}") from None
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be a finite number >= 0, got {strength}")
        self.accepts_sur = bool(getattr(model, "accepts_sur", False))
        if sur is not None:
            if not self.accepts_sur:
                raise ValueError("sur (satisfied-user ratio) needs an estimator trained with SUR conditioning; "
                                 "this one was not (use sur=None)")
            sur = float(sur)
            if not 0.0 < sur <= 1.0:
                raise ValueError(f"sur must be in (0, 1], got {sur}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if gain is not None and kind != "directed":
            raise ValueError("gain applies to kind='directed' only")
        if kind == "directed":
            gain = directed.DEFAULT_GAIN if gain is None else float(gain)
            if not math.isfinite(gain) or gain < 0:
                raise ValueError(f"gain must be a finite number >= 0, got {gain}")
        self.kind, self.gain = kind, gain
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if tile not in (None, False):
            if not (isinstance(tile, (tuple, list)) and len(tile) == 2):
                raise ValueError(f"tile must be (size, overlap), None or False, got {tile!r}")
            size, overlap = int(tile[0]), int(tile[1])
            if size < 32 or not 0 <= overlap < size // 2:
                raise ValueError(f"tile=(size, overlap) needs size >= 32 and 0 <= overlap < size/2, got {tile}")
            tile = (size, overlap)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.strength = strength
        self.sur = sur
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype or torch.float32
        self.tile = tile
        self.size_divisor = int(getattr(model, "size_divisor", 1))
        if self.device is not None:
            self.model.to(self.device)

    def __repr__(self) -> str:
        name = getattr(self.model, "arch_name", type(self.model).__name__)
        directed_ = f", kind=directed, gain={self.gain}" if self.kind == "directed" else ""
        return (f"JNDTarget(estimator={name}, strength={self.strength}, sur={self.sur}, "
                f"device={self.device}, dtype={self.dtype}, tile={self.tile}{directed_})")

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_image_tensor(x)
        single = x.ndim == 3
        batch = x[None] if single else x
        if self.strength == 0 or self.gain == 0:
            out = batch.clamp(0, 1)
        else:
            jnd = self._infer(batch)
            out = (batch + self.strength * (jnd - batch)).clamp_(0, 1)
            if self.kind == "directed":
                # the estimator's JND image only sets the bound; the direction is the sharpening
                x = batch.to(device=out.device, dtype=torch.float32).clamp(0, 1)
                out = directed.directed_jnd(x, (out - x).pow(2).mean(1, keepdim=True).sqrt(), self.gain).clamp_(0, 1)
        out = out.to(device=x.device, dtype=x.dtype)
        return out[0] if single else out

    @torch.no_grad()
    def jnd_map(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Per-pixel JND magnitude: RMS over channels of ``jnd - x``.

        ``[B,1,H,W]`` for a batch, ``[1,H,W]`` for a single image, in the input's dtype.
        ``normalize=True`` divides each image's map by its maximum, as ResJND does for its JND
        maps (an image whose map is all zero stays zero).
        """
        check_image_tensor(x)
        diff = self(x).to(torch.float32) - x.to(torch.float32)
        m = diff.pow(2).mean(dim=-3, keepdim=True).sqrt()
        if normalize:
            peak = m.amax(dim=(-2, -1), keepdim=True)
            m = m / torch.where(peak > 0, peak, torch.ones_like(peak))
        return m.to(x.dtype)

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        device = self.device or batch.device
        if next(self.model.parameters(), torch.empty(0)).device != device:
            self.model.to(device)
        self.model.to(self.dtype)
        xb = batch.to(device=device, dtype=self.dtype)
        h, w = xb.shape[-2:]
        tile = self.tile
        if tile is None and h * w > AUTO_TILE_PIXELS:
            tile = AUTO_TILE
        if tile and (h > tile[0] or w > tile[0]):
            out = self._tiled(xb, *tile)
        else:
            out = self._run(self._pad(xb))[..., :h, :w]
        return out.clamp_(0, 1).to(torch.float32)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        d = self.size_divisor
        ph, pw = (-h) % d, (-w) % d
        if not (ph or pw):
            return x
        # reflection keeps image statistics at the border; it needs the pad smaller than the side
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def _run(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model(x, sur=self.sur, **kwargs) if self.accepts_sur else self.model(x, **kwargs)

    def _tiled(self, x: torch.Tensor, size: int, overlap: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Pad the whole image once, as the untiled path does, so border tiles see the same padding;
        # tile sizes rounded to the divisor then need no padding of their own.
        x = self._pad(x)
        d = self.size_divisor
        size = max(d, size - size % d)
        ph, pw = x.shape[-2:]
        ys, xs = _tile_starts(ph, size, overlap, d), _tile_starts(pw, size, overlap, d)
        out = torch.zeros_like(x)
        weight = torch.zeros((1, 1, ph, pw), dtype=x.dtype, device=x.device)
        # a zero-mean estimator centres its residual over the whole image: tiles stay uncentred
        # and the assembled residual is centred once, as the untiled pass does
        zero_mean = bool(getattr(self.model, "zero_mean", False))
        kwargs = {"center": False} if zero_mean else {}
        for y0 in ys:
            for x0 in xs:
                th, tw = min(size, ph - y0), min(size, pw - x0)
                pred = self._run(x[..., y0:y0 + th, x0:x0 + tw], **kwargs)
                win = _blend_window(th, tw, overlap, top=y0 > 0, left=x0 > 0,
                                    bottom=y0 + th < ph, right=x0 + tw < pw, like=x)
                out[..., y0:y0 + th, x0:x0 + tw] += pred * win
                weight[..., y0:y0 + th, x0:x0 + tw] += win
        out = out / weight
        if zero_mean:
            r = (out - x)[..., :h, :w]
            out = out - r.mean(dim=(-2, -1), keepdim=True)
        return out[..., :h, :w]


def _tile_starts(length: int, size: int, overlap: int, divisor: int) -> list[int]:
    if length <= size:
        return [0]
    step = max(divisor, (size - overlap) // divisor * divisor)
    starts = list(range(0, length - size, step))
    starts.append(length - size)  # last tile flush with the edge (length and size are multiples of divisor)
    return starts


def _blend_window(h: int, w: int, overlap: int, *, top: bool, left: bool, bottom: bool, right: bool,
                  like: torch.Tensor) -> torch.Tensor:
    """Blending weights for one tile.

    On each side shared with a neighbour, the outer half of the overlap gets weight 0 (a halo:
    those pixels only give the network context, since predictions near a tile edge see zero
    padding instead of the real surroundings) and the inner half ramps linearly up to 1. The
    neighbour's ramp mirrors it, so the weights of the two tiles sum to one across the seam.
    """

    def ramp(n: int, lo: bool, hi: bool) -> torch.Tensor:
        r = torch.ones(n, dtype=like.dtype, device=like.device)
        halo = overlap // 2
        width = overlap - halo
        edge = torch.cat([torch.zeros(halo), torch.arange(1, width + 1) / (width + 1)]).to(r)
        k = min(overlap, n)
        if lo:
            r[:k] = torch.minimum(r[:k], edge[:k])
        if hi:
            r[n - k:] = torch.minimum(r[n - k:], edge[:k].flip(0))
        return r

    return (ramp(h, top, bottom)[:, None] * ramp(w, left, right)[None, :])[None, None]
