"""``JNDTarget``: ground-truth images in, JND images out, ready to be a training target."""

from __future__ import annotations

import importlib
import os

import torch
import torch.nn as nn

from jndplug.bounds import estimator_map
from jndplug.errors import JNDPlugTypeError, JNDPlugValueError
from jndplug.imageio import check_image_tensor
from jndplug.spec import DEFAULT_KIND, KIND_TABLE, TargetSpec, TargetSpecError, bound_row, number_text
from jndplug.tiling import batch_chunks, blend, check_tile, pad_to_stride, tile_for, tiled_forward
from jndplug.weights import load_estimator


class JNDTarget:
    """Turn a batch of pristine images into inferred JND images.

    What the target makes is a :class:`jndplug.spec.TargetSpec` (``target.spec``), given either as
    ``spec=`` (or :meth:`from_spec`) or as its settings:

    Args:
        estimator: a pretrained name (``"default"``), the path of a jndplug ``.safetensors`` file,
            or an ``nn.Module`` taking ``[B,3,H,W]`` in [0,1] and returning the JND image.
        strength: scales the JND bound of the directed image, and the estimator's distortion
            ``gt + strength * (jnd - gt)`` of the estimated one; 0 returns ``gt``. ``None``: the
            bound's default for ``directed`` (:data:`jndplug.spec.BOUNDS`: 0.591 for the default
            bound, the JND profile, 2 for the estimator's map, each at the visibility line), 1 for
            ``jnd``, the estimator's threshold.
        sur: target satisfied-user ratio in (0, 1] (fraction of people who must not notice),
            only for estimators trained with that conditioning; ``None`` uses the estimator's
            own default (``effective_sur``).
        kind: ``"directed"`` (default, :data:`jndplug.spec.DEFAULT_KIND`): the perception-directed
            JND image (:mod:`jndplug.directed`), a zero-mean luma sharpening ``gain * highpass(Y)``
            bounded per pixel by :meth:`jnd_map`, see docs/directed.md; ``"jnd"``: the seed
            paper's estimated JND image, the estimator's own output.
        gain: the directed image's sharpening gain (0 returns ``gt``); only with ``kind="directed"``,
            default :data:`jndplug.spec.DEFAULT_GAIN`.

    The directed image's other settings (``bound``, ``sigma``) are given through ``spec=``
    (e.g. ``TargetSpec(bound="profile")``).

    and how it runs:

    Args:
        device: where the estimator runs; ``None`` follows each input. Outputs always come back
            on the input's device.
        dtype: compute dtype (e.g. ``torch.bfloat16`` on GPU); ``None`` uses float32. Outputs
            keep the input's dtype.
        tile: ``(size, overlap)`` to process large images in overlapping tiles blended
            seamlessly (:func:`jndplug.tiling.tiled_forward`); ``None`` tiles automatically above
            2048x2048; ``False`` never tiles. The outer half of each overlap is context only, so
            it must cover the context the estimator uses (docs/jndtarget.md, "Tiles").
        check_values: check every input for NaN, Inf and values outside [0,1]. The check reads
            one result back from the input's device, a synchronisation that stalls a GPU
            training step; ``False`` skips it (shape and dtype are always checked) for inputs
            known to be good, e.g. ground truth from a data loader already tested.

    Calling the object on ``[B,3,H,W]`` or ``[3,H,W]`` float images in [0,1] returns JND images
    of the same shape, dtype and device, clamped to [0,1], with no autograd graph. A batch is made
    in chunks of at most :data:`jndplug.tiling.BATCH_PIXELS` pixels (one image at least), so its
    memory is a chunk's (docs/jndtarget.md, "Memory").
    """

    def __init__(self, estimator: str | os.PathLike | nn.Module = "default", strength: float | None = None,
                 sur: float | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, tile: tuple[int, int] | None | bool = None,
                 kind: str = DEFAULT_KIND, gain: float | None = None, check_values: bool = True, *,
                 spec: TargetSpec | None = None):
        if spec is None:
            spec = TargetSpec(estimator=estimator, strength=strength, sur=sur, kind=kind, gain=gain)
        elif not isinstance(spec, TargetSpec):
            raise JNDPlugTypeError(f"spec must be a jndplug.spec.TargetSpec, got {type(spec).__name__}")
        elif not (isinstance(estimator, str) and estimator == "default" and strength is None and sur is None
                  and kind == DEFAULT_KIND and gain is None):
            raise JNDPlugTypeError("give the target's settings either as spec= or as keyword arguments, not both")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise JNDPlugTypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        model = spec.estimator if isinstance(spec.estimator, nn.Module) else load_estimator(spec.estimator)
        from jndplug.models import estimator_info  # the registry imports timm: only when an estimator is made

        info = estimator_info(model)
        if spec.sur is not None and not info.accepts_sur:
            raise TargetSpecError("sur", "(satisfied-user ratio) needs an estimator trained with SUR conditioning; "
                                         f"{spec.to_mapping()['estimator']} was not (use sur=None)")
        self.spec = spec
        row = KIND_TABLE[spec.kind]
        self._image = _function(row.image)
        self._bound_of = _function(bound_row(spec.bound).provider) if spec.bound is not None else estimator_map
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype or torch.float32
        self.tile = check_tile(tile)
        self.check_values = bool(check_values)
        self.accepts_sur = info.accepts_sur
        self.size_divisor = info.size_divisor
        self._default_sur = info.default_sur
        # a plain nn.Module is named by its class
        self.arch_name = info.arch_name or type(model).__name__
        self.weights_path = info.weights_path
        if self.device is not None:
            self.model.to(self.device)

    @classmethod
    def from_spec(cls, spec: TargetSpec, **runtime) -> JNDTarget:
        """The target a :class:`jndplug.spec.TargetSpec` describes; ``runtime`` takes ``device``,
        ``dtype``, ``tile`` and ``check_values``, which change how it runs, not what it makes."""
        return cls(spec=spec, **runtime)

    # the settings, as the spec holds them
    strength = property(lambda self: self.spec.strength)
    sur = property(lambda self: self.spec.sur, doc="the SUR asked for; None means the estimator's own (effective_sur)")
    kind = property(lambda self: self.spec.kind)
    gain = property(lambda self: self.spec.gain)

    @property
    def effective_sur(self) -> float | None:
        """The satisfied-user ratio the estimator is run with: ``sur``, else the estimator's
        default; ``None`` for an estimator without SUR conditioning."""
        return self.spec.sur if self.spec.sur is not None else self._default_sur

    @property
    def bound_label(self) -> str:
        """What :meth:`jnd_map` is, in words, for figures and logs."""
        return bound_row(self.spec.bound if self.spec.bound is not None else "estimator").label

    @property
    def estimator_name(self) -> str:
        """The estimator as it was given: a pretrained name, a path, or a module's class name."""
        return str(self.spec.to_mapping()["estimator"])

    def describe(self) -> str:
        """One line for logs: what the target makes (:meth:`TargetSpec.describe`), with the estimator
        by the name it was given and its architecture, and the SUR in effect."""
        name = self.estimator_name
        if self.arch_name != name:
            name = f"{name} ({self.arch_name})"
        if self.effective_sur is None:
            sur = "none (the estimator is not SUR-conditioned)"
        elif self.sur is None:
            sur = f"{self.effective_sur:g} (the estimator's default)"
        else:
            sur = f"{self.sur:g}"
        return self.spec._describe(name, sur)

    def __repr__(self) -> str:
        default, mine = TargetSpec(kind=self.kind).to_mapping(), self.spec.to_mapping()
        shown = ["kind", "strength"] + [n for n in KIND_TABLE[self.kind].settings if n == "gain" or mine[n] != default[n]]
        settings = "".join(f"{n}={number_text(mine[n]) if isinstance(mine[n], float) else repr(mine[n])}, "
                           for n in shown)
        return (f"JNDTarget(estimator={self.estimator_name!r}, {settings}sur={self.effective_sur}, "
                f"device={self.device}, dtype={self.dtype}, tile={self.tile})")

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_image_tensor(x, values=self.check_values)
        batch = x[None] if x.ndim == 3 else x
        if self.strength == 0 or self.gain == 0:
            out = batch.clamp(0, 1)
        else:
            out = self._by_chunks(self._image, self._float32(batch), 3).to(device=batch.device, dtype=batch.dtype)
        return out[0] if x.ndim == 3 else out

    @torch.no_grad()
    def jnd_map(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Per-pixel bound of the target's change, whatever the kind: the spec's ``bound``
        (:data:`jndplug.spec.BOUNDS`) for the directed image, whose change stays within it, and
        for the estimated JND image (and the default bound) the RMS over channels of the
        estimator's JND image minus ``x``; both times ``strength``. :meth:`distortion` is the change.

        ``[B,1,H,W]`` for a batch, ``[1,H,W]`` for a single image, in the input's dtype and on its
        device, computed in float32. ``normalize=True`` divides each image's map by its maximum, as
        ResJND does for its JND maps (an image whose map is all zero stays zero).
        """
        check_image_tensor(x, values=self.check_values)
        if normalize and self.spec.bound == "none":
            raise JNDPlugValueError("jnd_map(normalize=True): bound none bounds nothing (its map is infinite), "
                                    "so there is nothing to normalise; use another bound or distortion(x)")
        batch = x[None] if x.ndim == 3 else x
        xf = self._float32(batch)
        m = torch.zeros_like(xf[:, :1]) if self.strength == 0 else self._by_chunks(self._bound_of, xf, 1)
        if normalize:
            peak = m.amax(dim=(-2, -1), keepdim=True)
            m = m / torch.where(peak > 0, peak, torch.ones_like(peak))
        m = m.to(device=x.device, dtype=x.dtype)
        return m[0] if x.ndim == 3 else m

    @torch.no_grad()
    def distortion(self, x: torch.Tensor) -> torch.Tensor:
        """The change the target makes, ``target(x) - x``, in the input's shape and dtype."""
        return self(x) - x

    def _float32(self, batch: torch.Tensor) -> torch.Tensor:
        # every target is computed in float32 on the estimator's device, whatever the input's dtype:
        # a bf16 bound would move in steps of about 1/256
        return batch.to(device=self.device or batch.device, dtype=torch.float32).clamp(0, 1)

    def _by_chunks(self, make, xf: torch.Tensor, channels: int) -> torch.Tensor:
        """``make(self, xf)`` (``channels`` deep), made a chunk of the batch at a time
        (:func:`jndplug.tiling.batch_chunks`) so that memory follows the chunk, not the batch."""
        chunks = batch_chunks(xf.shape)
        if len(chunks) == 1:
            return make(self, xf)
        # xf is this call's own copy and each chunk is read before it is written: images need no
        # buffer of their own
        out = xf if channels == xf.shape[1] else xf.new_empty((xf.shape[0], channels, *xf.shape[-2:]))
        for c in chunks:
            out[c] = make(self, xf[c])
        return out

    def _bound(self, xf: torch.Tensor) -> torch.Tensor:
        return self._bound_of(self, xf)

    def _estimated(self, xf: torch.Tensor) -> torch.Tensor:
        """The estimator's JND image of a float32 batch, blended by strength, in float32."""
        tile = tile_for(xf.shape[-2:], self.tile)
        device = self._prepare_model(xf)
        if tile:
            return tiled_forward(self.model, xf, tile, strength=self.strength, run=self._run, dtype=self.dtype,
                                 device=device)
        xb = xf.to(dtype=self.dtype)
        h, w = xb.shape[-2:]
        jnd = self._run(pad_to_stride(xb, self.size_divisor))[..., :h, :w].clamp_(0, 1).to(torch.float32)
        return blend(xf, jnd, self.strength)

    def _prepare_model(self, batch: torch.Tensor) -> torch.device:
        device = self.device or batch.device
        if next(self.model.parameters(), torch.empty(0)).device != device:
            self.model.to(device)
        self.model.to(self.dtype)
        return device

    def _run(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model(x, sur=self.sur, **kwargs) if self.accepts_sur else self.model(x, **kwargs)


def _function(path: str):
    """The function a kind-table row names as ``module:function``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
