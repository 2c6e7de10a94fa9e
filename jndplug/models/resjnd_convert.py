"""Import of the ResJND authors' released PyTorch checkpoint into jndplug's weights format.

The release is a plain state dict of a bias-free DRRN (``input.weight``, ``conv1.weight``,
``conv2.weight``, ``output.weight``), which is exactly the ``resjnd`` architecture's naming. It is
read with ``torch.load(weights_only=True)``, so nothing in it is unpickled as code, checked
tensor by tensor, and written as a verified ``.safetensors`` file whose provenance names the
source file and its SHA-256.

The number of recursions is not stored in the weights (the recursive block shares them), so it
is a parameter; ResJND uses DRRN's B1U25 configuration, hence the default of 25.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import pickle
from pathlib import Path

import torch

from jndplug.errors import JNDPlugValueError
from jndplug.models import create_estimator
from jndplug.weights import save_estimator

RESJND_KEYS = ("input.weight", "conv1.weight", "conv2.weight", "output.weight")
DEFAULT_RECURSIONS = 25


def read_resjnd_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The authors' checkpoint as ``{key: tensor}``, checked against the ResJND layout.

    A ``module.`` prefix (left by ``nn.DataParallel``) is removed. Raises ValueError naming the
    problem for a file that is not a plain state dict, has biases, misses or adds keys, or has
    shapes that do not form one network.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise JNDPlugValueError(f"{path}: not a checkpoint that loads with torch.load(weights_only=True) "
                         f"(a plain state dict is expected): {str(exc).splitlines()[0]}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise JNDPlugValueError(f"{path}: expected a state dict (names to tensors), got {type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    biases = sorted(k for k in state if k.endswith(".bias"))
    if biases:
        raise JNDPlugValueError(f"{path}: has biases ({', '.join(biases)}); the ResJND network has none, "
                         "so this is a different architecture")
    missing = [k for k in RESJND_KEYS if k not in state]
    unexpected = sorted(set(state) - set(RESJND_KEYS))
    if missing or unexpected:
        raise JNDPlugValueError(f"{path}: not a ResJND checkpoint (missing {missing}, unexpected {unexpected[:5]})")
    channels = state["input.weight"].shape[0]
    expected = {"input.weight": (channels, 3, 3, 3), "conv1.weight": (channels, channels, 3, 3),
                "conv2.weight": (channels, channels, 3, 3), "output.weight": (3, channels, 3, 3)}
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise JNDPlugValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {shape} "
                             f"for a ResJND network with {channels} channels")
    return {k: state[k].to(torch.float32) for k in RESJND_KEYS}


def convert_resjnd(src: str | os.PathLike, dst: str | os.PathLike,
                   recursions: int = DEFAULT_RECURSIONS) -> Path:
    """Convert the authors' ResJND checkpoint ``src`` into the jndplug weights file ``dst``."""
    src, dst = Path(src), Path(dst)
    state = read_resjnd_state_dict(src)
    channels = state["input.weight"].shape[0]
    model = create_estimator("resjnd", channels=channels, recursions=recursions)
    model.load_state_dict(state, strict=True)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    provenance = {
        "source": "ResJND authors' released PyTorch checkpoint",
        "source_file": src.name,
        "source_sha256": sha,
        "label_source": ["cplset"],
        "recursions": recursions,
        "command": f"jndplug convert {src.name} --out {dst.name} --recursions {recursions}",
        "date": datetime.date.today().isoformat(),
    }
    return save_estimator(model, dst, provenance)
