"""Tiled inference of a JND estimator: overlapping tiles blended seamlessly, memory bounded by a strip.

:func:`tiled_forward` runs an estimator over an image too large for one pass. What it relies on
is declared in the estimator interface (:mod:`jndplug.models.base`): ``size_divisor`` (tiles lie
on the stride), ``zero_mean`` with ``forward(..., center=False)`` (the residual is centred once,
over the whole image, as in one pass) and :class:`~jndplug.models.base.GlobalPooling` layers
(their image-wide means are measured tile by tile before the pass that makes the output).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from jndplug.errors import JNDPlugValueError

# Above this many pixels per image, inputs are tiled automatically so that activation memory
# stays bounded (the default unet needs roughly 0.4 KB of activations per pixel in float32).
AUTO_TILE_PIXELS = 2048 * 2048
# The halo (half the overlap) must cover the context the estimator actually uses: the shipped
# model's tiles agree with the whole image within 0.5/255 from 16 px off their edge, but a
# randomly initialised unet without squeeze-excitation, scaled to the shipped model's residual,
# needs about 160-192 px (BENCHMARKS.md, "Tiled inference"); 192 covers both.
AUTO_TILE = (1536, 384)
# A batch is made in chunks of at most this many pixels (one image at least), so that its memory,
# the estimator's activations above all, is a chunk's: four 1080p images with the shipped estimator
# held 346 bytes per pixel at once, 179 in chunks of two (BENCHMARKS.md, "Tiled inference")
BATCH_PIXELS = AUTO_TILE_PIXELS
# Tiled passes that measure the image-wide means of global-pooling layers (squeeze-excitation)
# before the pass that makes the output; see _pool_means. One pass brings the shipped model
# within 0.49/255 of the untiled result, a second only to 0.48/255 (BENCHMARKS.md).
POOL_PASSES = 1


def check_tile(tile) -> tuple[int, int] | None | bool:
    """``tile`` as ``JNDTarget`` takes it: ``(size, overlap)``, ``None`` (automatic) or ``False`` (never)."""
    if tile is None or tile is False:
        return tile
    if not (isinstance(tile, (tuple, list)) and len(tile) == 2):
        raise JNDPlugValueError(f"tile must be (size, overlap), None or False, got {tile!r}")
    size, overlap = int(tile[0]), int(tile[1])
    if size < 32 or not 0 <= overlap < size // 2:
        raise JNDPlugValueError(f"tile=(size, overlap) needs size >= 32 and 0 <= overlap < size/2, got {tile}")
    return size, overlap


def tile_for(hw: tuple[int, int], tile: tuple[int, int] | None | bool) -> tuple[int, int] | None:
    """The tiles an ``H x W`` image is processed in, or ``None`` for one pass: ``tile=None`` tiles
    with :data:`AUTO_TILE` above :data:`AUTO_TILE_PIXELS`; an image no larger than a tile is one pass."""
    h, w = hw
    if tile is None and h * w > AUTO_TILE_PIXELS:
        tile = AUTO_TILE
    return tile if tile and (h > tile[0] or w > tile[0]) else None


def batch_chunks(shape: torch.Size) -> list[slice]:
    """The chunks of a ``[B,C,H,W]`` batch that are made at once: :data:`BATCH_PIXELS` each."""
    b, (h, w) = shape[0], shape[-2:]
    n = max(1, BATCH_PIXELS // (h * w))
    return [slice(i, min(i + n, b)) for i in range(0, b, n)]


def pad_to_stride(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """``x`` padded at the bottom and right to a multiple of ``divisor``, as the tiles are."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if not (ph or pw):
        return x
    return F.pad(x, (0, pw, 0, ph), mode=pad_mode(h, w, divisor))


def blend(gt: torch.Tensor, jnd: torch.Tensor, strength: float) -> torch.Tensor:
    """``gt + strength * (jnd - gt)`` clamped, in ``gt``'s dtype; overwrites ``jnd`` (float32)."""
    jnd = jnd.to(gt.device)
    return jnd.sub_(gt).mul_(strength).add_(gt).clamp_(0, 1).to(gt.dtype)


def tiled_forward(model: nn.Module, x: torch.Tensor, tile: tuple[int, int], *, strength: float = 1.0,
                  run: Callable[..., torch.Tensor] | None = None, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """``x + strength * (model(x) - x)`` clamped to [0, 1], computed tile by tile.

    Args:
        model: the estimator, already on ``device`` in ``dtype``; read through the estimator
            interface (``size_divisor``, ``zero_mean``, its :class:`GlobalPooling` layers).
        x: ``[B,3,H,W]`` images in [0, 1], on any device; the result has its shape, dtype and device.
        tile: ``(size, overlap)``; the outer half of each overlap is context only (a halo), so it
            must cover the context the estimator uses.
        run: calls the estimator on a tile (keyword arguments such as ``center`` passed on);
            default ``model`` itself (``JNDTarget`` adds its ``sur``).
        dtype, device: what the tiles are converted to before ``run``.

    The image is padded to the network's stride as in one pass, but tile by tile
    (``_TileGrid.crop``), so no padded or converted copy of the whole image is made; blended
    residuals accumulate in a float32 strip one tile row high, and rows that no later tile touches
    are blended and written straight into the output, the only full-size tensor.
    """
    from jndplug.models.base import estimator_info, global_pools

    run = model if run is None else run
    device = torch.device(device) if device is not None else x.device
    info = estimator_info(model)
    grid = _TileGrid(x.shape[-2:], *tile, info.size_divisor)
    pools = global_pools(model)
    # a zero-mean estimator centres its residual over the whole image: tiles stay uncentred
    # and the assembled residual is centred once, as the untiled pass does
    kwargs = {"center": False} if info.zero_mean else {}
    tiles = _Tiles(x, grid, run, kwargs, dtype, device)
    try:
        means = None
        for _ in range(POOL_PASSES if pools else 0):
            means = _pool_means(tiles, pools, means)
        for m, mean in zip(pools, means or [None] * len(pools)):
            m.global_mean = mean
        return _assemble(tiles, strength, info.zero_mean)
    finally:
        for m in pools:
            m.global_mean, m.observer = None, None


class _Tiles:
    """One image's tiles and how the estimator is called on them."""

    def __init__(self, x, grid, run, kwargs, dtype, device):
        self.x, self.grid, self.run, self.kwargs, self.dtype, self.device = x, grid, run, kwargs, dtype, device

    def get(self, ty: int, tx: int) -> torch.Tensor:
        return self.grid.crop(self.x, ty, tx).to(device=self.device, dtype=self.dtype)

    def forward(self, tile: torch.Tensor) -> torch.Tensor:
        return self.run(tile, **self.kwargs)


class _PoolsMeasured(Exception):
    """Ends a measuring pass once every global-pooling layer has seen its input."""


def _pool_means(tiles: _Tiles, pools: list, means: list | None) -> list[torch.Tensor]:
    """One tiled pass that measures each global-pooling layer's mean over the whole image.

    Each tile contributes its input to a layer over its own core (the cores partition the
    padded image), the part it sees with the most context. The layers' inputs depend on the
    gates of earlier layers, which use ``means`` from the previous pass (their own tile's
    mean on the first), so repeated passes converge on the untiled pass's means.
    """
    grid = tiles.grid
    sums = [0.0] * len(pools)
    ph, pw = grid.padded
    for m, mean in zip(pools, means or [None] * len(pools)):
        m.global_mean = mean
    for ty in range(len(grid.ys)):
        for tx in range(len(grid.xs)):
            (y0, y1), (x0, x1) = grid.core(ty, tx)
            tile = tiles.get(ty, tx)
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
                tiles.forward(tile)
            except _PoolsMeasured:
                pass
    for m in pools:
        m.observer = None
    return sums


def _assemble(tiles: _Tiles, strength: float, zero_mean: bool) -> torch.Tensor:
    x, grid, device = tiles.x, tiles.grid, tiles.device
    h, w = x.shape[-2:]
    ph, pw = grid.padded
    out = torch.empty_like(x)
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
            gt = x[..., top:bottom, :].to(device=device, dtype=torch.float32)
            out[..., top:bottom, :] = blend(x[..., top:bottom, :], r.add_(gt).clamp_(0, 1), strength)

    for ty, y0 in enumerate(grid.ys):
        if acc is not None and y0 > acc_top:  # rows above this tile row are finished
            emit(acc[..., :y0 - acc_top, :], acc_top)
            acc, acc_top = acc[..., y0 - acc_top:, :], y0
        th = min(grid.size, ph - y0)
        need = y0 + th - acc_top if acc is not None else th
        if acc is None:
            acc, acc_top = x.new_zeros((*x.shape[:-2], th, pw), dtype=torch.float32, device=device), y0
        elif need > acc.shape[-2]:
            grow = acc.new_zeros((*acc.shape[:-2], need - acc.shape[-2], pw))
            acc = torch.cat([acc, grow], dim=-2)
        for tx, x0 in enumerate(grid.xs):
            tile = tiles.get(ty, tx)
            r = tiles.forward(tile).to(torch.float32).sub_(tile)
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
            gt = x[..., rows, :].to(device=device, dtype=torch.float32)
            jnd = out[..., rows, :].to(device=device, dtype=torch.float32).sub_(mean).add_(gt).clamp_(0, 1)
            out[..., rows, :] = blend(x[..., rows, :], jnd, strength)
    return out


def pad_mode(h: int, w: int, d: int) -> str:
    """How an ``h x w`` image is padded to a multiple of ``d``."""
    # reflection keeps image statistics at the border; it needs the pad smaller than the side
    return "reflect" if (-h) % d < h and (-w) % d < w else "replicate"


class _TileGrid:
    """Where the tiles of one padded image lie, their blending windows and their cores."""

    def __init__(self, hw, size: int, overlap: int, divisor: int):
        self.h, self.w = int(hw[0]), int(hw[1])
        d = divisor
        self.mode = pad_mode(self.h, self.w, d)
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
