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
# The halo (half the overlap) must cover the context the estimator actually uses: the shipped
# model's tiles agree with the whole image within 0.5/255 from 16 px off their edge, but a
# randomly initialised unet without squeeze-excitation, scaled to the shipped model's residual,
# needs about 160-192 px (BENCHMARKS.md, "Tiled inference"); 192 covers both.
AUTO_TILE = (1536, 384)
# Tiled passes that measure the image-wide means of global-pooling layers (squeeze-excitation)
# before the pass that makes the output; see JNDTarget._pool_means. One pass brings the shipped
# model within 0.49/255 of the untiled result, a second only to 0.48/255 (BENCHMARKS.md).
POOL_PASSES = 1
KINDS = ("jnd", "directed")
# The perception-directed image is the default target: fine-tuned converged restorers measured better
# against it than against the ground truth and the seed paper's JND image (BENCHMARKS.md, "Converged
# restorers"); kind="jnd" keeps the seed paper's estimated JND image.
DEFAULT_KIND = "directed"


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
            seamlessly; ``None`` tiles automatically above 2048x2048 (with ``AUTO_TILE``);
            ``False`` never tiles. The outer half of each overlap is context only, so it must
            cover the context the estimator uses (see the README).
        kind: ``"directed"`` (default, :data:`DEFAULT_KIND`): the perception-directed JND image
            (:mod:`jndplug.directed`), a zero-mean luma sharpening ``gain * highpass(Y)`` bounded
            per pixel by this estimator's JND magnitude (times ``strength``), see docs/directed.md;
            ``"jnd"``: the seed paper's estimated JND image, the estimator's own output.
        gain: the directed image's sharpening gain (0 returns ``gt``); only with ``kind="directed"``,
            default :data:`jndplug.directed.DEFAULT_GAIN`.
        check_values: check every input for NaN, Inf and values outside [0,1]. The check reads
            one result back from the input's device, a synchronisation that stalls a GPU
            training step; ``False`` skips it (shape and dtype are always checked) for inputs
            known to be good, e.g. ground truth from a data loader already tested.

    Calling the object on ``[B,3,H,W]`` or ``[3,H,W]`` float images in [0,1] returns JND images
    of the same shape, dtype and device, clamped to [0,1], with no autograd graph.
    """

    def __init__(self, estimator: str | os.PathLike | nn.Module = "default", strength: float = 1.0,
                 sur: float | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, tile: tuple[int, int] | None | bool = None,
                 kind: str = DEFAULT_KIND, gain: float | None = None, check_values: bool = True):
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
        from jndplug.models import estimator_info  # the registry imports timm: only when an estimator is made

        info = estimator_info(model)
        self.accepts_sur = info.accepts_sur
        if sur is not None:
            if not self.accepts_sur:
                raise ValueError("sur (satisfied-user ratio) needs an estimator trained with SUR conditioning; "
                                 "this one was not (use sur=None)")
            sur = float(sur)
            if not 0.0 < sur <= 1.0:
                raise ValueError(f"sur must be in (0, 1], got {sur}")
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
        self.check_values = bool(check_values)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if gain is not None and kind != "directed":
            raise ValueError("gain applies to kind='directed' only")
        if kind == "directed":
            gain = directed.DEFAULT_GAIN if gain is None else float(gain)
            if not math.isfinite(gain) or gain < 0:
                raise ValueError(f"gain must be a finite number >= 0, got {gain}")
        self.kind, self.gain = kind, gain
        self.size_divisor = info.size_divisor
        # a plain nn.Module is named by its class
        self.arch_name = info.arch_name or type(model).__name__
        self.weights_path = info.weights_path
        if self.device is not None:
            self.model.to(self.device)
        from jndplug.spec import TargetSpec

        self.spec = TargetSpec(estimator=estimator, strength=strength, sur=sur, kind=kind, gain=gain)

    @classmethod
    def from_spec(cls, spec, **runtime) -> "JNDTarget":
        """The target a :class:`jndplug.spec.TargetSpec` describes; ``runtime`` takes ``device``,
        ``dtype``, ``tile`` and ``check_values``, which change how it runs, not what it makes."""
        return cls(spec.estimator, strength=spec.strength, sur=spec.sur, kind=spec.kind, gain=spec.gain, **runtime)

    def __repr__(self) -> str:
        name = self.arch_name
        directed_ = f", kind=directed, gain={self.gain}" if self.kind == "directed" else ""
        return (f"JNDTarget(estimator={name}, strength={self.strength}, sur={self.sur}, "
                f"device={self.device}, dtype={self.dtype}, tile={self.tile}{directed_})")

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_image_tensor(x, values=self.check_values)
        single = x.ndim == 3
        batch = x[None] if single else x
        tile = self._tile_for(batch)
        if self.strength == 0 or self.gain == 0:
            out = batch.clamp(0, 1)
        else:
            out = self._tiled(batch, *tile) if tile else self._blend(batch, self._infer(batch))
            if self.kind == "directed":
                # the estimator's JND image only sets the bound; the direction is the sharpening
                xf = batch.to(device=out.device, dtype=torch.float32).clamp(0, 1)
                bound = (out.to(torch.float32) - xf).pow(2).mean(1, keepdim=True).sqrt()
                out = directed.directed_jnd(xf, bound, self.gain).clamp_(0, 1).to(batch.dtype)
        return out[0] if single else out

    @torch.no_grad()
    def jnd_map(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Per-pixel JND magnitude: RMS over channels of ``jnd - x``.

        ``[B,1,H,W]`` for a batch, ``[1,H,W]`` for a single image, in the input's dtype.
        ``normalize=True`` divides each image's map by its maximum, as ResJND does for its JND
        maps (an image whose map is all zero stays zero).
        """
        diff = self(x).to(torch.float32) - x.to(torch.float32)
        m = diff.pow(2).mean(dim=-3, keepdim=True).sqrt()
        if normalize:
            peak = m.amax(dim=(-2, -1), keepdim=True)
            m = m / torch.where(peak > 0, peak, torch.ones_like(peak))
        return m.to(x.dtype)

    def _tile_for(self, batch: torch.Tensor) -> tuple[int, int] | None:
        h, w = batch.shape[-2:]
        tile = self.tile
        if tile is None and h * w > AUTO_TILE_PIXELS:
            tile = AUTO_TILE
        return tile if tile and (h > tile[0] or w > tile[0]) else None

    def _prepare_model(self, batch: torch.Tensor) -> torch.device:
        device = self.device or batch.device
        if next(self.model.parameters(), torch.empty(0)).device != device:
            self.model.to(device)
        self.model.to(self.dtype)
        return device

    def _blend(self, gt: torch.Tensor, jnd: torch.Tensor) -> torch.Tensor:
        """``gt + strength * (jnd - gt)`` clamped, in ``gt``'s dtype; overwrites ``jnd`` (float32)."""
        jnd = jnd.to(gt.device)
        return jnd.sub_(gt).mul_(self.strength).add_(gt).clamp_(0, 1).to(gt.dtype)

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        """The JND image of a whole batch in one pass, float32 on the compute device."""
        device = self._prepare_model(batch)
        xb = batch.to(device=device, dtype=self.dtype)
        h, w = xb.shape[-2:]
        out = self._run(self._pad(xb))[..., :h, :w]
        return out.clamp_(0, 1).to(torch.float32)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        d = self.size_divisor
        ph, pw = (-h) % d, (-w) % d
        if not (ph or pw):
            return x
        return F.pad(x, (0, pw, 0, ph), mode=_pad_mode(h, w, d))

    def _run(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model(x, sur=self.sur, **kwargs) if self.accepts_sur else self.model(x, **kwargs)

    def _tiled(self, batch: torch.Tensor, size: int, overlap: int) -> torch.Tensor:
        """Tiled inference and strength blend, with memory bounded by a strip of tiles.

        The image is padded to the network's stride as in the untiled pass, but tile by tile
        (``_TileGrid.crop``), so no padded or converted copy of the whole image is made; blended
        residuals accumulate in a float32 strip one tile row high, and rows that no later tile
        touches are blended and written straight into the output, the only full-size tensor.
        """
        device = self._prepare_model(batch)
        grid = _TileGrid(batch.shape[-2:], size, overlap, self.size_divisor)
        pools = [m for m in self.model.modules() if hasattr(m, "global_mean") and hasattr(m, "observer")]
        # a zero-mean estimator centres its residual over the whole image: tiles stay uncentred
        # and the assembled residual is centred once, as the untiled pass does
        zero_mean = bool(getattr(self.model, "zero_mean", False))
        kwargs = {"center": False} if zero_mean else {}
        try:
            means = None
            for _ in range(POOL_PASSES if pools else 0):
                means = self._pool_means(batch, grid, pools, means, device, kwargs)
            for m, mean in zip(pools, means or [None] * len(pools)):
                m.global_mean = mean
            return self._assemble(batch, grid, device, zero_mean, kwargs)
        finally:
            for m in pools:
                m.global_mean, m.observer = None, None

    def _tile(self, batch, grid, ty, tx, device) -> torch.Tensor:
        return grid.crop(batch, ty, tx).to(device=device, dtype=self.dtype)

    def _pool_means(self, batch, grid, pools, means, device, kwargs) -> list[torch.Tensor]:
        """One tiled pass that measures each global-pooling layer's mean over the whole image.

        Each tile contributes its input to a layer over its own core (the cores partition the
        padded image), the part it sees with the most context. The layers' inputs depend on the
        gates of earlier layers, which use ``means`` from the previous pass (their own tile's
        mean on the first), so repeated passes converge on the untiled pass's means.
        """
        sums = [0.0] * len(pools)
        ph, pw = grid.padded
        for m, mean in zip(pools, means or [None] * len(pools)):
            m.global_mean = mean
        for ty in range(len(grid.ys)):
            for tx in range(len(grid.xs)):
                (y0, y1), (x0, x1) = grid.core(ty, tx)
                tile = self._tile(batch, grid, ty, tx, device)
                th = tile.shape[-2]

                seen = []

                def observe(t, k):
                    s = th // t.shape[-2]  # this layer's stride; cores lie on multiples of every stride
                    part = t[..., y0 // s:y1 // s, x0 // s:x1 // s]
                    sums[k] = sums[k] + part.sum(dim=(-2, -1), keepdim=True, dtype=torch.float32) / (ph * pw / s / s)
                    seen.append(k)
                    if len(seen) == len(pools):  # the rest of the network cannot change the means
                        raise _PoolsMeasured

                for k, m in enumerate(pools):
                    m.observer = (lambda t, k=k: observe(t, k))
                try:
                    self._run(tile, **kwargs)
                except _PoolsMeasured:
                    pass
        for m in pools:
            m.observer = None
        return sums

    def _assemble(self, batch, grid, device, zero_mean, kwargs) -> torch.Tensor:
        h, w = batch.shape[-2:]
        ph, pw = grid.padded
        out = torch.empty_like(batch)
        acc, acc_top = None, 0  # residual strip covering padded rows [acc_top, acc_top + acc rows)
        total = 0.0  # per-image, per-channel sum of the blended residual (zero-mean estimators)

        def emit(rows: torch.Tensor, top: int) -> None:
            # rows: the finished blended residual of padded rows top.., full padded width
            bottom = min(top + rows.shape[-2], h)
            if bottom <= top:
                return
            r = rows[..., :bottom - top, :w]
            if zero_mean:
                out[..., top:bottom, :] = r.to(out.dtype)  # centred and blended at the end
            else:
                gt = batch[..., top:bottom, :].to(device=device, dtype=torch.float32)
                out[..., top:bottom, :] = self._blend(batch[..., top:bottom, :], r.add_(gt).clamp_(0, 1))

        for ty, y0 in enumerate(grid.ys):
            if acc is not None and y0 > acc_top:  # rows above this tile row are finished
                emit(acc[..., :y0 - acc_top, :], acc_top)
                acc, acc_top = acc[..., y0 - acc_top:, :], y0
            th = min(grid.size, ph - y0)
            need = y0 + th - acc_top if acc is not None else th
            if acc is None:
                acc, acc_top = batch.new_zeros((*batch.shape[:-2], th, pw), dtype=torch.float32, device=device), y0
            elif need > acc.shape[-2]:
                grow = acc.new_zeros((*acc.shape[:-2], need - acc.shape[-2], pw))
                acc = torch.cat([acc, grow], dim=-2)
            for tx, x0 in enumerate(grid.xs):
                tile = self._tile(batch, grid, ty, tx, device)
                r = self._run(tile, **kwargs).to(torch.float32).sub_(tile)
                r.mul_(grid.window(ty, tx, like=r))
                if zero_mean:
                    total = total + r.sum(dim=(-2, -1), keepdim=True)
                tw = r.shape[-1]
                acc[..., y0 - acc_top:y0 - acc_top + th, x0:x0 + tw] += r
        emit(acc, acc_top)
        if zero_mean:
            mean = total / (ph * pw)
            for top in range(0, h, grid.size):
                rows = slice(top, min(top + grid.size, h))
                gt = batch[..., rows, :].to(device=device, dtype=torch.float32)
                jnd = out[..., rows, :].to(device=device, dtype=torch.float32).sub_(mean).add_(gt).clamp_(0, 1)
                out[..., rows, :] = self._blend(batch[..., rows, :], jnd)
        return out


class _PoolsMeasured(Exception):
    """Ends a measuring pass once every global-pooling layer has seen its input."""


def _pad_mode(h: int, w: int, d: int) -> str:
    # reflection keeps image statistics at the border; it needs the pad smaller than the side
    return "reflect" if (-h) % d < h and (-w) % d < w else "replicate"


class _TileGrid:
    """Where the tiles of one padded image lie, their blending windows and their cores."""

    def __init__(self, hw, size: int, overlap: int, divisor: int):
        self.h, self.w = int(hw[0]), int(hw[1])
        d = divisor
        self.mode = _pad_mode(self.h, self.w, d)
        self.padded = (self.h + (-self.h) % d, self.w + (-self.w) % d)
        self.size = max(d, size - size % d)  # tile sides on the stride: tiles need no padding of their own
        self.overlap, self.divisor = overlap, d
        ph, pw = self.padded
        self.ys = _tile_starts(ph, self.size, overlap, d)
        self.xs = _tile_starts(pw, self.size, overlap, d)
        self._wy = _normalised_ramps(ph, self.ys, self.size, overlap)
        self._wx = _normalised_ramps(pw, self.xs, self.size, overlap)

    def window(self, ty: int, tx: int, like: torch.Tensor) -> torch.Tensor:
        return (self._wy[ty].to(like)[:, None] * self._wx[tx].to(like)[None, :])[None, None]

    def crop(self, x: torch.Tensor, ty: int, tx: int) -> torch.Tensor:
        """Tile (ty, tx) of ``x`` padded to the stride, without padding all of ``x``."""
        y0, x0 = self.ys[ty], self.xs[tx]
        rows = _source_index(y0, min(self.size, self.padded[0] - y0), self.h, self.mode)
        cols = _source_index(x0, min(self.size, self.padded[1] - x0), self.w, self.mode)
        part = x[..., rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        if rows[-1] - rows[0] == len(rows) - 1 and cols[-1] - cols[0] == len(cols) - 1:
            return part  # inside the image: a plain slice
        return part.index_select(-2, rows - rows.min()).index_select(-1, cols - cols.min())

    def core(self, ty: int, tx: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The part of the padded image tile (ty, tx) stands for, in tile coordinates: the cores
        of all tiles partition the image; boundaries sit mid-overlap, on the stride."""
        def span(starts, i, length):
            lo = 0 if i == 0 else _mid(starts[i], starts[i - 1] + self.size, self.divisor)
            hi = length if i + 1 == len(starts) else _mid(starts[i + 1], starts[i] + self.size, self.divisor)
            return lo - starts[i], hi - starts[i]

        return span(self.ys, ty, self.padded[0]), span(self.xs, tx, self.padded[1])


def _mid(a: int, b: int, d: int) -> int:
    return (a + b) // 2 // d * d


def _source_index(start: int, n: int, length: int, mode: str) -> torch.Tensor:
    """Indices into an axis of ``length`` for padded positions start..start+n, as F.pad would fill them."""
    i = torch.arange(start, start + n)
    if mode == "reflect":
        return torch.where(i < length, i, 2 * (length - 1) - i)
    return i.clamp(max=length - 1)


def _normalised_ramps(length: int, starts: list[int], size: int, overlap: int) -> list[torch.Tensor]:
    """Each tile's 1-D blending ramp divided by the sum of all ramps, so that the windows of
    overlapping tiles sum to exactly one (the 2-D windows are products of these)."""
    ramps = [_ramp(min(size, length - s), overlap, lo=i > 0, hi=i + 1 < len(starts)) for i, s in enumerate(starts)]
    total = torch.zeros(length)
    for s, r in zip(starts, ramps):
        total[s:s + len(r)] += r
    return [r / total[s:s + len(r)] for s, r in zip(starts, ramps)]


def _tile_starts(length: int, size: int, overlap: int, divisor: int) -> list[int]:
    if length <= size:
        return [0]
    step = max(divisor, (size - overlap) // divisor * divisor)
    starts = list(range(0, length - size, step))
    starts.append(length - size)  # last tile flush with the edge (length and size are multiples of divisor)
    return starts


def _ramp(n: int, overlap: int, *, lo: bool, hi: bool) -> torch.Tensor:
    """Blending ramp of one tile along one axis.

    On each side shared with a neighbour, the outer half of the overlap gets weight 0 (a halo:
    those pixels only give the network context, since predictions near a tile edge see zero
    padding instead of the real surroundings) and the inner half ramps linearly up to 1. The
    neighbour's ramp mirrors it, so the two sum to one across the seam.
    """
    r = torch.ones(n)
    halo = overlap // 2
    width = overlap - halo
    edge = torch.cat([torch.zeros(halo), torch.arange(1, width + 1) / (width + 1)])
    k = min(overlap, n)
    if lo:
        r[:k] = torch.minimum(r[:k], edge[:k])
    if hi:
        r[n - k:] = torch.minimum(r[n - k:], edge[:k].flip(0))
    return r
