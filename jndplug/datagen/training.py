"""Brief training of the distortion autoencoders on random patches of the source photographs.

Training is deliberately short: an autoencoder that has not converged is what makes CNN-like
errors (colour casts, soft or shifted edges). Every random choice comes from a generator seeded by
the run seed and the autoencoder's name, so each member trains identically on every run and the
family can be rebuilt or extended member by member.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from jndplug.datagen.autoencoder import AutoencoderSpec, DistortionAutoencoder
from jndplug.datagen.recipes import FeatureNetwork, RecipeLoss
from jndplug.errors import JNDPlugValueError


def member_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "little")


def sample_patches(pool: list[np.ndarray], rng: np.random.Generator, batch: int, patch: int) -> torch.Tensor:
    """A ``[batch,3,patch,patch]`` float batch of random crops (random image, position, flip)."""
    out = np.empty((batch, patch, patch, 3), dtype=np.uint8)
    for b in range(batch):
        img = pool[rng.integers(len(pool))]
        h, w = img.shape[:2]
        y, x = rng.integers(h - patch + 1), rng.integers(w - patch + 1)
        crop = img[y: y + patch, x: x + patch]
        out[b] = crop[:, ::-1] if rng.integers(2) else crop
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def train_autoencoder(spec: AutoencoderSpec, pool: list[np.ndarray], seed: int, *, patch: int = 96,
                      batch: int = 8, lr: float = 2e-3, device: str | torch.device = "cpu",
                      features: FeatureNetwork | None = None, progress: bool = True
                      ) -> tuple[DistortionAutoencoder, dict]:
    """Train one family member; returns the model (eval mode, on ``device``) and training info."""
    if not pool:
        raise JNDPlugValueError("no usable source images to train the autoencoders on")
    smallest = min(min(p.shape[:2]) for p in pool)
    if smallest < patch:
        raise JNDPlugValueError(f"training patch size {patch} is larger than the smallest training image side "
                                f"{smallest}")
    s = member_seed(seed, spec.name)
    rng = np.random.default_rng(s)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        model = DistortionAutoencoder(spec)
    model.to(device).train()
    loss_fn = RecipeLoss(spec.loss, features).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0, last = time.perf_counter(), float("nan")
    for _ in tqdm(range(spec.steps), desc=f"train {spec.name}", leave=False, disable=not progress):
        x = sample_patches(pool, rng, batch, patch).to(device)
        loss = loss_fn(model(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = loss.detach().item()
    model.eval()
    info = {"steps": spec.steps, "patch": patch, "batch": batch, "lr": lr, "optimizer": "Adam",
            "seed": s, "final_loss": last, "seconds": round(time.perf_counter() - t0, 2),
            "device": str(device)}
    return model, info
