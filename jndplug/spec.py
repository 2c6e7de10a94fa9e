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
import os
import shlex
from dataclasses import dataclass
from typing import Any

from jndplug.errors import JNDPlugValueError

KINDS = ("directed", "jnd")
# The perception-directed image is the default target: fine-tuned converged restorers measured better
# against it than against the ground truth and the seed paper's JND image (BENCHMARKS.md).
DEFAULT_KIND = "directed"
# Sharpening gain of the directed image. Gain 2 scored like gain 1 on the converged restorers and the
# codec (BENCHMARKS.md), so the smaller change is the default.
DEFAULT_GAIN = 1.0
# Scale of the bound per kind. The directed distortion's own threshold, measured with the study on
# training photos, lies at 2.05 times the estimator's map for three photos in four (SUR 0.75); at 2
# Kodak24's targets sit at the visibility line (BENCHMARKS.md). The estimated JND image (kind jnd)
# is the estimator's threshold itself: scaling it up makes it visible.
DEFAULT_STRENGTH = {"directed": 2.0, "jnd": 1.0}


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
    kind, unset ``gain`` to :data:`DEFAULT_GAIN` for the directed kind; ``sur=None`` means the
    estimator's own default ratio (``JNDTarget.effective_sur``)."""

    estimator: Any = _field("default", "pretrained name or .safetensors path of the JND estimator "
                                       "(default: default)", str, metavar="NAME|PATH")
    strength: float | None = _field(None, "scale of the JND bound (of the estimated distortion for --kind jnd); "
                                          "0 gives the ground truth (default: "
                                          + ", ".join(f"{v:g} for {k}" for k, v in DEFAULT_STRENGTH.items()) + ")",
                                    float)
    sur: float | None = _field(None, "satisfied-user ratio in (0, 1], for SUR-conditioned estimators "
                                     "(default: the estimator's own)", float)
    kind: str = _field(DEFAULT_KIND, "directed (default): the perception-directed JND image, a zero-mean luma "
                                     "sharpening bounded by the JND map (docs/directed.md); jnd: the estimated "
                                     "JND image", str, KINDS)
    gain: float | None = _field(None, f"sharpening gain of --kind directed (default {DEFAULT_GAIN:g})", float)

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
        if self.kind not in KINDS:
            raise TargetSpecError("kind", f"must be {' or '.join(KINDS)}, got {self.kind!r}")
        strength = DEFAULT_STRENGTH[self.kind] if self.strength is None else _number("strength", self.strength)
        if strength < 0:
            raise TargetSpecError("strength", f"must be a finite number >= 0, got {strength:g}")
        set_(self, "strength", strength)
        if self.kind == "directed":
            gain = DEFAULT_GAIN if self.gain is None else _number("gain", self.gain)
            if gain < 0:
                raise TargetSpecError("gain", f"must be a finite number >= 0, got {gain:g}")
            set_(self, "gain", gain)
        elif self.gain is not None:
            raise TargetSpecError("gain", f"applies to kind directed only (kind is {self.kind})")

    # -- mappings --------------------------------------------------------------------------------

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: dict | None, where: str = "") -> TargetSpec:
        """From a YAML block or a JSON object: unknown keys are refused, and every error names the key
        as ``where`` + key (e.g. ``jnd_target.gain``)."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise TargetSpecError(where + unknown[0], f"unknown key; known keys: {', '.join(cls.names())}")
        for name, value in values.items():  # YAML hands over booleans and strings where numbers belong
            kind = dataclasses.fields(cls)[cls.names().index(name)].metadata["type"]
            if kind is float and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise TargetSpecError(where + name, f"must be a number, got {value!r}")
            if kind is str and not isinstance(value, str):
                raise TargetSpecError(where + name, f"must be a string, got {value!r}")
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
        """Add ``--estimator`` ... ``--gain`` (``--PREFIXestimator`` ...) to an argparse parser, with
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
                parts.append(f"--{prefix}{name} {value:g}" if isinstance(value, float)
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
            kind_of = dataclasses.fields(cls)[cls.names().index(key)].metadata["type"]
            try:
                values[key] = kind_of(value.strip()) if kind_of is float else value.strip()
            except ValueError:
                raise TargetSpecError(f"{text}: {key}", f"must be a number, got {value.strip()!r}") from None
        try:
            return cls(**values)
        except TargetSpecError as exc:
            raise TargetSpecError(f"{text}: {exc.key}", str(exc).split(": ", 1)[1]) from None

    def text(self) -> str:
        """The compact form :meth:`parse` reads: the strength always (the budget names a result, and a
        default may move), the other settings where they differ from the defaults;
        ``TargetSpec.parse(spec.text()) == spec`` (the estimator given by name or path)."""
        default = TargetSpec(kind=self.kind)
        parts = [f"{n}={v:g}" if isinstance(v, float) else f"{n}={v}"
                 for n, v in self.to_mapping().items()
                 if n != "kind" and (n == "strength" or v != default.to_mapping()[n])]
        return self.kind + (":" + ",".join(parts) if parts else "")

    # -- manifests and comparisons ---------------------------------------------------------------

    def manifest_settings(self) -> dict:
        """What a precompute manifest records besides the estimator's identity: every setting but the
        estimator's name (its fingerprint identifies it; a file may be renamed)."""
        return {n: v for n, v in self.to_mapping().items() if n != "estimator"}

    @classmethod
    def from_manifest(cls, settings: dict) -> TargetSpec:
        """The spec a manifest was written with; a manifest without kind/gain predates directed images
        and was made with the estimated JND image."""
        values = {n: settings[n] for n in ("strength", "sur", "kind", "gain") if n in settings}
        values.setdefault("kind", "jnd")
        return cls(estimator=settings.get("arch", "default"), **values)

    def differences(self, other: TargetSpec, compare_estimator: bool = True) -> list[tuple[str, Any, Any]]:
        """``(name, mine, theirs)`` for each setting that differs."""
        names = [n for n in self.names() if compare_estimator or n != "estimator"]
        a, b = self.to_mapping(), other.to_mapping()
        return [(n, a[n], b[n]) for n in names if a[n] != b[n]]

    def describe(self) -> str:
        """One line for logs: the kind and every resolved value."""
        est = self.to_mapping()["estimator"]
        what = f"directed JND image (gain {self.gain:g})" if self.kind == "directed" else "estimated JND image"
        sur = "estimator default" if self.sur is None else f"{self.sur:g}"
        return f"{what}, estimator {est}, strength {self.strength:g}, SUR {sur}"


def _number(name: str, value) -> float:
    if isinstance(value, bool):
        raise TargetSpecError(name, f"must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TargetSpecError(name, f"must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise TargetSpecError(name, f"must be a finite number, got {value}")
    return value


def _is_module(obj) -> bool:
    # torch is imported only when a module could be involved: the spec itself needs no torch
    import sys

    nn = sys.modules.get("torch.nn")
    return nn is not None and isinstance(obj, nn.Module)
