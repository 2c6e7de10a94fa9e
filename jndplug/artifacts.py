"""Self-describing, hash-verified files of tensors: one format for everything jndplug saves.

Estimators, JND profiles, patch regressors and distortion autoencoders are all written here as a
``.safetensors`` file whose string metadata holds ``format`` (what the file is, with a version),
``jndplug_version``, ``tensors_sha256`` (a hash of every tensor's name, dtype, shape and bytes) and
the kind's own JSON fields (config, provenance...). Reading checks, in this order, that the file is
complete, that it is of the expected kind, that its tensors match the hash and that they are
finite, so a truncated, edited, mislabelled or diverged file is refused with its name and the
problem instead of loading as garbage.
Nothing is unpickled. Writes are atomic: an interrupted save leaves the previous file or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from jndplug.errors import CorruptFileError, JNDPlugValueError
from jndplug.imageio import atomic_write

SUFFIX = ".safetensors"


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of the tensors themselves (independent of file layout and metadata)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_artifact(path: str | os.PathLike, tensors: dict[str, torch.Tensor], fmt: str, fields: dict,
                  what: str) -> Path:
    """Write ``tensors`` with ``format`` ``fmt`` and ``fields`` (strings kept, anything else as JSON)."""
    from jndplug import __version__

    path = Path(path)
    if path.suffix != SUFFIX:
        raise JNDPlugValueError(f"{path}: {what} files are written as {SUFFIX}; choose a name ending in {SUFFIX}")
    header = {}
    for key, value in fields.items():
        try:
            header[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        except TypeError as exc:
            raise TypeError(f"{what} field {key!r} must be JSON-serialisable: {exc}") from None
    header.update(format=fmt, jndplug_version=__version__, tensors_sha256=tensors_sha256(tensors))
    with atomic_write(path) as f:
        f.write(_st_save(tensors, metadata=header))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file, checking that the file is complete."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptFileError(f"{path}: truncated or not a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise CorruptFileError(f"{path}: corrupt or truncated safetensors header")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise CorruptFileError(f"{path}: corrupt safetensors header ({exc})") from exc
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        meta = header.get("__metadata__") or {}
        if not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
            raise TypeError("__metadata__ is not a mapping of strings")
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"{path}: malformed safetensors header ({type(exc).__name__}: {exc})") from None
    if 8 + n + end != size:
        raise CorruptFileError(f"{path}: truncated or corrupt file (expected {8 + n + end} bytes, found {size})")
    return meta


def format_of(path: str | os.PathLike) -> str | None:
    """The ``format`` a file says it has; None for anything that is not a readable safetensors file."""
    p = Path(path)
    if not (p.is_file() and p.suffix == SUFFIX):
        return None
    try:
        return read_metadata(p).get("format")
    except CorruptFileError:
        return None


def check_format(path: Path, meta: dict[str, str], fmt: str, what: str) -> None:
    if meta.get("format") != fmt:
        raise CorruptFileError(f"{path}: not a {what} file (its metadata format is {meta.get('format')!r}, "
                               f"expected {fmt!r})")


def load_artifact(path: str | os.PathLike, fmt: str, what: str,
                  meta: dict[str, str] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a file written by :func:`save_artifact` as ``fmt``, verified.

    ``meta`` is the file's metadata when the caller has already read and checked it (the estimator
    loader checks the architecture before reading any tensor).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if meta is None:
        meta = read_metadata(path)
        check_format(path, meta, fmt, what)
    if "tensors_sha256" not in meta:
        raise CorruptFileError(f"{path}: metadata lacks 'tensors_sha256'")
    try:
        tensors = _st_load(path.read_bytes())
    except SafetensorError as exc:
        raise CorruptFileError(f"{path}: corrupt safetensors data ({exc})") from exc
    digest = tensors_sha256(tensors)
    if digest != meta["tensors_sha256"]:
        raise CorruptFileError(f"{path}: tensor hash mismatch (file says {meta['tensors_sha256'][:12]}..., "
                               f"content is {digest[:12]}...); the file is corrupt or was modified")
    # the hash only proves the file is as written: training that diverged writes NaN weights, which
    # would make every output black without an error
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CorruptFileError(f"{path}: tensor {name!r} holds NaN or Inf (the training that wrote it "
                                   "diverged); retrain, or use an earlier checkpoint")
    return tensors, meta


def json_field(path: Path, meta: dict[str, str], key: str, default=None):
    """A JSON field of the metadata, refused with the file's name when it does not parse.

    Without ``default`` the field is required: a file lacking it is refused as corrupt.
    """
    if key not in meta:
        if default is None:
            raise CorruptFileError(f"{path}: metadata lacks {key!r}")
        return default
    try:
        return json.loads(meta[key])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CorruptFileError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from None
