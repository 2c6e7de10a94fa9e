"""``TargetSpec``: the one description of a JND target's settings.

Every place that takes target settings (``JNDTarget``, ``jndplug infer``/``precompute``, the
BasicSR ``jnd_target`` block, the CompressAI ``--jnd-*`` flags, the benchmarks) builds a
``TargetSpec`` and nothing else validates them. The spec is frozen, validates once, writes itself
to and reads itself from a precompute manifest, maps from a YAML block and from command-line
flags, and says which of its settings differ from another's.

A new target parameter is one new field in :class:`TargetSpec` with its ``_field`` metadata (the
help line, the type the command line parses, the choices) and its check in ``__post_init__``; the
flags, the YAML key, the manifest entry, the description in logs and the mismatch messages follow
from it (docs/architecture.md, "Where settings live").
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import shlex
from dataclasses import dataclass
from typing import Any

from jndplug.errors import JNDPlugValueError

# Blur of the directed image's high-pass, in output pixels. For x4 SR the low-resolution Nyquist
# frequency is 1/8 cycles/px; the high-pass 1 - exp(-2 pi^2 sigma^2 f^2) passes 71% at 1/8 and 99% at
# 1/4 with sigma 2, 26% and 71% with sigma 1. On the screen of bicubic x4 outputs (BENCHMARKS.md,
# "Zero-training screen") sigma 2 gained 0.05 dB PSNR-Y over sigma 1 at four times the NIQE cost.
DEFAULT_SIGMA = 1.0
# Sharpening gain of the directed image. Gain 2 scored like gain 1 on the converged restorers and the
# codec (BENCHMARKS.md), so the smaller change is the default.
DEFAULT_GAIN = 1.0


@dataclass(frozen=True)
class Bound:
    """A per-pixel bound of the directed image's change: ``provider`` (``module:function``, imported
    when a target is made, so that this module needs no torch) maps ``(target, x)`` to the ``[B,1,H,W]``
    float32 bound at the target's strength; ``uses_estimator`` says whether the estimator (and its SUR)
    takes part; ``default_strength`` is the strength an unset one resolves to, ``None`` where none has
    been calibrated (then the spec must give one); ``scales_sharpening``: the strength scales the
    sharpening instead of the bound (for ``none``, which has no bound to scale)."""

    provider: str
    uses_estimator: bool
    label: str
    default_strength: float | None = None
    scales_sharpening: bool = False


# Where the directed image may change, and by how much: a new bound is one row here and its function.
# Compared at equal visibility (`jndplug bench visibility`, BENCHMARKS.md "Where the budget goes"),
# the estimator's map, learned for autoencoder distortions, spends the budget where a sharpening
# shows (halos at strong edges) and gains about half as much as the analytic profile, which at
# 0.591 is noticed as often as the estimator's map at 2 on the calibration photos, is the only bound
# at the visibility line on Kodak24 and gains most: it is the default. A profile trained on the
# study's judgements of the directed distortion itself did not beat it (docs/directed.md). The
# estimator's 2 is the directed distortion's own threshold under its map, measured with the study
# (SUR 0.75 for three photos in four). The trivial bounds have no default: each was over the line
# on Kodak24 at the strength that matched on the calibration photos.
BOUNDS = {
    "estimator": Bound("jndplug.bounds:estimator_map", True, "the estimator's JND map", 2.0),
    "profile": Bound("jndplug.bounds:profile_map", False, "the analytic JND profile (NAMM)", 0.591),
    "localstd": Bound("jndplug.bounds:localstd_map", False, "the 7x7 standard deviation of the luma"),
    "flat": Bound("jndplug.bounds:flat_map", False, "the same bound everywhere, in 8-bit levels"),
    "none": Bound("jndplug.bounds:no_bound", False, "no bound: a plain zero-mean sharpening, strength x gain",
                  scales_sharpening=True),
}
DEFAULT_BOUND = "profile"


@dataclass(frozen=True)
class Kind:
    """A kind of target: the scale of its bound by default, the settings that apply to it besides
    ``estimator``, ``strength``, ``sur`` and ``kind`` (with their defaults), and ``image``
    (``module:function`` mapping ``(target, x)`` to the target image, imported when a target is made)."""

    default_strength: float
    settings: dict
    image: str
    label: str


# The perception-directed image is the default target: fine-tuned converged restorers measured better
# against it than against the ground truth and the seed paper's JND image (BENCHMARKS.md). Its
# default strength is its default bound's; the estimated JND image (kind jnd) is the estimator's
# threshold itself at 1: scaling it up makes it visible.
# A new kind is one row here and its image function.
KIND_TABLE = {
    "directed": Kind(BOUNDS[DEFAULT_BOUND].default_strength,
                     {"gain": DEFAULT_GAIN, "bound": DEFAULT_BOUND, "sigma": DEFAULT_SIGMA},
                     "jndplug.bounds:directed_image", "directed JND image"),
    "jnd": Kind(1.0, {}, "jndplug.bounds:estimated_image", "estimated JND image"),
}
KINDS = tuple(KIND_TABLE)
DEFAULT_KIND = "directed"
DEFAULT_STRENGTH = {name: k.default_strength for name, k in KIND_TABLE.items()}
# settings every kind has; the rest apply to the kinds whose row names them
_COMMON = ("estimator", "strength", "sur", "kind")


class TargetSpecError(JNDPlugValueError):
    """A bad target setting; ``key`` names it as the caller spelled it (``--gain``, ``jnd_target.gain``)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def _field(default, help: str, type=None, choices=None, metavar=None):
    return dataclasses.field(default=default, metadata={"help": help, "type": type, "choices": choices,
                                                        "metavar": metavar})


@dataclass(frozen=True)
class TargetSpec:
    """What a JND target is made of. Unset ``strength`` resolves to :data:`DEFAULT_STRENGTH` of the
    kind; unset ``gain``, ``bound`` and ``sigma`` to the defaults of the kinds they apply to
    (:data:`KIND_TABLE`), and stay ``None`` for the others; ``sur=None`` means the estimator's own
    default ratio (``JNDTarget.effective_sur``)."""

    estimator: Any = _field("default", "pretrained name or .safetensors path of the JND estimator "
                                       "(default: default)", str, metavar="NAME|PATH")
    strength: float | None = _field(None, "scale of the JND bound (of the estimated distortion for --kind jnd); "
                                          "0 gives the ground truth (default: the bound's for directed, "
                                          + ", ".join(f"{b.default_strength:g} for {k}" for k, b in BOUNDS.items()
                                                      if b.default_strength is not None)
                                          + "; " + ", ".join(f"{v:g} for {k}" for k, v in DEFAULT_STRENGTH.items()
                                                             if k != "directed") + ")",
                                    float)
    sur: float | None = _field(None, "satisfied-user ratio in (0, 1], for SUR-conditioned estimators, where the "
                                     "estimator takes part (kind jnd, bound estimator; default: the estimator's "
                                     "own)", float)
    kind: str = _field(DEFAULT_KIND, "directed (default): the perception-directed JND image, a zero-mean luma "
                                     "sharpening bounded by a JND map (docs/directed.md); jnd: the estimated "
                                     "JND image", str, KINDS)
    gain: float | None = _field(None, f"sharpening gain of --kind directed (default {DEFAULT_GAIN:g})", float)
    bound: str | None = _field(None, "what bounds the change of --kind directed per pixel: "
                                     + "; ".join(f"{k}: {b.label}" for k, b in BOUNDS.items())
                                     + "; or the path of a trained JND profile (.safetensors written by "
                                       f"`jndplug jnd-profile`), its map (default {DEFAULT_BOUND})", str,
                               metavar="NAME|PROFILE")
    sigma: float | None = _field(None, "blur of --kind directed's high-pass, in output pixels "
                                       f"(default {DEFAULT_SIGMA:g})", float)

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise once, here
        est = self.estimator
        if isinstance(est, os.PathLike):
            set_(self, "estimator", os.fspath(est))
        elif not isinstance(est, str) and not _is_module(est):
            raise TargetSpecError("estimator", "must be a pretrained name, a .safetensors path or an nn.Module, "
                                               f"got {type(est).__name__}")
        if self.sur is not None:
            set_(self, "sur", _number("sur", self.sur))
            if not 0.0 < self.sur <= 1.0:
                raise TargetSpecError("sur", f"must be in (0, 1], got {self.sur:g}")
        if not isinstance(self.kind, str) or self.kind not in KIND_TABLE:
            raise TargetSpecError("kind", f"must be {' or '.join(KINDS)}, got {self.kind!r}")
        row = KIND_TABLE[self.kind]
        for name in self.names():
            if name in _COMMON:
                continue
            value = getattr(self, name)
            if name not in row.settings:
                if value is not None:
                    raise TargetSpecError(name, f"applies to kind {' or '.join(self.kinds_with(name))} only "
                                                f"(kind is {self.kind})")
                continue
            set_(self, name, _check(name, row.settings[name] if value is None else value))
        if self.strength is not None:
            strength = _number("strength", self.strength)
        elif self.bound is not None:
            strength = bound_row(self.bound).default_strength
            if strength is None:
                raise TargetSpecError("strength", f"bound {self.bound} has no calibrated default strength; give "
                                                  "one (`jndplug bench visibility` finds the strength at the line)")
        else:
            strength = row.default_strength
        if strength < 0:
            raise TargetSpecError("strength", f"must be a finite number >= 0, got {strength:g}")
        set_(self, "strength", strength)
        if self.sur is not None and not self.uses_estimator:
            # silently ignored, a YAML block's sur would look like it changed the target
            raise TargetSpecError("sur", f"applies where the estimator takes part (kind jnd, or bound estimator); "
                                         f"bound {self.bound} does not use it: leave sur out, or use bound=estimator")

    # -- the kind table --------------------------------------------------------------------------

    @classmethod
    def kinds_with(cls, name: str) -> list[str]:
        """The kinds a setting applies to."""
        return [k for k, row in KIND_TABLE.items() if name in _COMMON or name in row.settings]

    @property
    def uses_estimator(self) -> bool:
        """Whether the estimator (and so ``sur``) takes part in the target."""
        return self.bound is None or bound_row(self.bound).uses_estimator

    def applies(self) -> tuple[str, ...]:
        """The settings that change what this spec's target is: its kind's, and the estimator and
        ``sur`` only where the estimator takes part."""
        common = _COMMON if self.uses_estimator else ("strength", "kind")
        return tuple(n for n in self.names() if n in common or n in KIND_TABLE[self.kind].settings)

    # -- mappings --------------------------------------------------------------------------------

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def _type_of(cls, name: str):
        return dataclasses.fields(cls)[cls.names().index(name)].metadata["type"]

    @classmethod
    def from_mapping(cls, values: dict | None, where: str = "") -> TargetSpec:
        """From a YAML block or a JSON object: unknown keys are refused, and every error names the key
        as ``where`` + key (e.g. ``jnd_target.gain``)."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise TargetSpecError(where + unknown[0], f"unknown key; known keys: {', '.join(cls.names())}")
        try:
            return cls(**values)
        except TargetSpecError as exc:
            raise TargetSpecError(where + exc.key, str(exc).split(": ", 1)[1]) from None

    def to_mapping(self) -> dict:
        """The settings as plain values (the estimator as given; a module by its class name)."""
        out = {name: getattr(self, name) for name in self.names()}
        if _is_module(self.estimator):
            out["estimator"] = type(self.estimator).__name__
        return out

    @classmethod
    def add_arguments(cls, parser, prefix: str = "") -> None:
        """Add ``--estimator`` ... ``--sigma`` (``--PREFIXestimator`` ...) to an argparse parser, with
        ``None`` defaults so that :meth:`from_args` sees what was given."""
        for f in dataclasses.fields(cls):
            m = f.metadata
            parser.add_argument(f"--{prefix}{f.name}", dest=f"{prefix}{f.name}".replace("-", "_"), default=None,
                                type=m["type"], choices=m["choices"], metavar=m["metavar"], help=m["help"])

    @classmethod
    def given_arguments(cls, args, prefix: str = "") -> list[str]:
        """The target flags given on the command line, as spelled there."""
        return [f"--{prefix}{n}" for n in cls.names() if getattr(args, f"{prefix}{n}".replace("-", "_")) is not None]

    @classmethod
    def from_args(cls, args, prefix: str = "") -> TargetSpec:
        """From flags added by :meth:`add_arguments`; errors name the flag."""
        values = {n: getattr(args, f"{prefix}{n}".replace("-", "_")) for n in cls.names()}
        try:
            return cls(**{n: v for n, v in values.items() if v is not None})
        except TargetSpecError as exc:
            raise TargetSpecError(f"--{prefix}{exc.key}", str(exc).split(": ", 1)[1]) from None

    def flags(self, prefix: str = "") -> str:
        """The command-line flags that rebuild this spec, every setting spelled out (so a command's
        own defaults cannot differ from what was meant), quoted for a POSIX shell."""
        parts = []
        for name, value in self.to_mapping().items():
            if value is not None:
                parts.append(f"--{prefix}{name} {number_text(value)}" if isinstance(value, float)
                             else f"--{prefix}{name} {shlex.quote(str(value))}")
        return " ".join(parts)

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        """From the compact form ``KIND[:key=value,...]`` the benchmarks take, e.g. ``directed``,
        ``directed:strength=2,gain=4`` or ``jnd:estimator=my.safetensors``; errors name the key."""
        kind, _, rest = str(text).partition(":")
        values: dict[str, Any] = {"kind": kind.strip()}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = part.partition("=")
            key = key.strip()
            if not eq or not key:
                raise TargetSpecError(str(text), f"{part!r} is not key=value; e.g. directed:strength=2,gain=4")
            if key == "kind" or key not in cls.names():
                raise TargetSpecError(f"{text}: {key}", "unknown key; known keys: "
                                      + ", ".join(n for n in cls.names() if n != "kind"))
            try:
                values[key] = float(value.strip()) if cls._type_of(key) is float else value.strip()
            except ValueError:
                raise TargetSpecError(f"{text}: {key}", f"must be a number, got {value.strip()!r}") from None
        try:
            return cls(**values)
        except TargetSpecError as exc:
            raise TargetSpecError(f"{text}: {exc.key}", str(exc).split(": ", 1)[1]) from None

    def text(self) -> str:
        """The compact form :meth:`parse` reads: the strength always (the budget names a result, and a
        default may move), the other settings where they differ from the defaults;
        ``TargetSpec.parse(spec.text()) == spec`` exactly (the estimator given by name or path)."""
        default = TargetSpec(kind=self.kind).to_mapping()
        parts = [f"{n}={number_text(v)}" if isinstance(v, float) else f"{n}={v}"
                 for n, v in self.to_mapping().items()
                 if n != "kind" and (n == "strength" or v != default[n])]
        return self.kind + (":" + ",".join(parts) if parts else "")

    # -- manifests and comparisons ---------------------------------------------------------------

    def manifest_settings(self) -> dict:
        """What a precompute manifest records besides the estimator's identity: every setting but the
        estimator's name (its fingerprint identifies it; a file may be renamed)."""
        return {n: v for n, v in self.to_mapping().items() if n != "estimator"}

    @classmethod
    def from_manifest(cls, settings: dict) -> TargetSpec:
        """The spec a manifest was written with; a manifest without kind/gain predates directed images
        and was made with the estimated JND image, a directed one without bound was bounded by the
        estimator's map (the default then), one without sigma used its default."""
        values = {n: settings[n] for n in cls.names() if n != "estimator" and settings.get(n) is not None}
        values.setdefault("kind", "jnd")
        if values["kind"] == "directed":  # written before bounds existed, or before the profile was the default
            values.setdefault("bound", "estimator")
        return cls(estimator=settings.get("arch", "default"), **values)

    def differences(self, other: TargetSpec, compare_estimator: bool = True) -> list[tuple[str, Any, Any]]:
        """``(name, mine, theirs)`` for each setting that differs; a setting that does not apply to
        both targets (``gain`` of a ``jnd`` one, the estimator of a profile-bounded one) is not one."""
        both = set(self.applies()) & set(other.applies())
        names = [n for n in self.names() if n in both and (compare_estimator or n != "estimator")]
        a, b = self.to_mapping(), other.to_mapping()
        return [(n, a[n], b[n]) for n in names if a[n] != b[n]]

    def describe(self) -> str:
        """One line for logs: the kind and every resolved value (``JNDTarget.describe`` adds what
        only a loaded estimator knows)."""
        return self._describe(str(self.to_mapping()["estimator"]),
                              "estimator default" if self.sur is None else number_text(self.sur))

    def _describe(self, estimator: str, sur: str) -> str:
        what = KIND_TABLE[self.kind].label
        if self.kind == "directed":
            extra = [f"gain {number_text(self.gain)}"]
            if self.bound != DEFAULT_BOUND:
                extra.append(f"bound {self.bound}")
            if self.sigma != DEFAULT_SIGMA:
                extra.append(f"sigma {number_text(self.sigma)}")
            what += f" ({', '.join(extra)})"
        parts = [what] + ([f"estimator {estimator}"] if self.uses_estimator else [])
        parts.append(f"strength {number_text(self.strength)}")
        if self.uses_estimator:
            parts.append(f"SUR {sur}")
        return ", ".join(parts)


def number_text(value: float) -> str:
    """A number as short as it can be written and still read back exactly: ``2`` for 2.0,
    ``1.2345678`` for 1.2345678 (``:g`` would round it to six digits)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


_CHECKS = {  # the settings a kind's row may name: how each is checked
    "gain": lambda v: _number_at_least("gain", v, 0.0),
    "sigma": lambda v: _number_above("sigma", v),
    "bound": lambda v: _check_bound(v),
}


def bound_row(bound: str) -> Bound:
    """The :data:`BOUNDS` row of a bound's name; a trained JND profile's file is a row of its own,
    uncalibrated (its strength must be given)."""
    if bound in BOUNDS:
        return BOUNDS[bound]
    return Bound("jndplug.bounds:profile_file_map", False, f"the trained JND profile {bound}")


def _check_bound(value) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value in BOUNDS:
        return value
    known = f"must be one of {', '.join(BOUNDS)} or the path of a trained JND profile"
    if not isinstance(value, str) or not value.endswith(".safetensors"):
        raise TargetSpecError("bound", f"{known} (.safetensors written by `jndplug jnd-profile`), got {value!r}")
    from jndplug.artifacts import format_of  # imports torch: only for a path
    from jndplug.models.jnd_profile import PROFILE_FORMAT

    if not os.path.isfile(value):
        raise TargetSpecError("bound", f"{known}; {value} does not exist (a relative path is read from "
                                       f"{os.getcwd()})")
    fmt = format_of(value)
    if fmt != PROFILE_FORMAT:
        hint = ("it holds an estimator's weights: give it as estimator=PATH with bound=estimator"
                if fmt is not None and "estimator" in fmt else f"its format is {fmt!r}, not {PROFILE_FORMAT}")
        raise TargetSpecError("bound", f"{value} is not a JND profile file: {hint}")
    return value


def _check(name: str, value):
    return _CHECKS[name](value)


def _number_at_least(name: str, value, low: float) -> float:
    value = _number(name, value)
    if value < low:
        raise TargetSpecError(name, f"must be a finite number >= {low:g}, got {value:g}")
    return value


def _number_above(name: str, value) -> float:
    value = _number(name, value)
    if not value > 0:
        raise TargetSpecError(name, f"must be a finite number > 0, got {value:g}")
    return value


def _number(name: str, value) -> float:
    # a string is refused even where it would parse: YAML's "2.0" and JNDTarget(strength="2") are
    # mistakes the same way (the compact form and argparse convert their text before this)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TargetSpecError(name, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise TargetSpecError(name, f"must be a finite number, got {value}")
    return value


def _is_module(obj) -> bool:
    # torch is imported only when a module could be involved: the spec itself needs no torch
    import sys

    nn = sys.modules.get("torch.nn")
    return nn is not None and isinstance(obj, nn.Module)
