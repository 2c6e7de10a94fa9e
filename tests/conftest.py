import logging
import os
import subprocess
import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Tests run on a 2-core machine next to other work: keep torch from oversubscribing it.
torch.set_num_threads(min(2, os.cpu_count() or 1))

PYTHON = sys.executable


@pytest.fixture(scope="module")
def one_thread():
    # the machine is shared: one thread per process is much faster than two contended ones
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def unet():
    import jndplug

    torch.manual_seed(0)
    return jndplug.create_estimator("unet").eval()


@pytest.fixture(scope="session")
def estimator_file(tmp_path_factory, unet):
    import jndplug

    path = tmp_path_factory.mktemp("weights") / "random-unet.safetensors"
    jndplug.save_estimator(unet, path, {"training": "none: random initialisation for tests"})
    return path


@pytest.fixture
def torch_hub(tmp_path, monkeypatch):
    """torch's hub cache in a folder of the test's own (``checkpoints/``, where torchvision keeps its
    weights, not yet made), with downloading turned into a test failure."""

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return Path(torch.hub.get_dir()) / "checkpoints"


@pytest.fixture
def basicsr_log():
    """The records of BasicSR's logger at the level a training run sets. By name: its file belongs
    to the first run in this process, and get_root_logger() would set it up here without one; a
    test that called it first without a log file left the level unset."""
    logger, records = logging.getLogger("basicsr"), []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def make_image(h=48, w=64, seed=0, dtype=np.uint8):
    """A smooth colour image with some edges (random noise would be an unrealistic input)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + rng.uniform(0, 3)), np.cos(5 * yy + rng.uniform(0, 3)),
                     np.sin(4 * (xx + yy))], axis=-1) * 0.35 + 0.5
    base[h // 3: h // 2, w // 4: w // 2] = rng.uniform(0.1, 0.9, 3)
    peak = np.iinfo(dtype).max
    return np.round(np.clip(base, 0, 1) * peak).astype(dtype)


def noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """``img`` plus seeded Gaussian noise of ``sigma`` levels, rounded and clipped to uint8."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(img + rng.normal(0, sigma, img.shape)), 0, 255).astype(np.uint8)


def make_dataset(root: Path, n_images: int = 3, size: tuple[int, int] = (48, 32), strength: float = 1.0) -> Path:
    """originals/im<i>.png and distorted/im<i>/<level>.png with noise growing by level (times ``strength``)."""
    rng = np.random.default_rng(0)
    w, h = size
    (root / "originals").mkdir(parents=True)
    for i in range(n_images):
        yy, xx = np.mgrid[0:h, 0:w]
        base = 120 + 50 * np.sin(xx / (3 + i)) * np.cos(yy / 4)
        img = np.clip(np.stack([base, base * 0.9 + 12, base * 0.7 + 30], -1), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "originals" / f"im{i}.png")
        (root / "distorted" / f"im{i}").mkdir(parents=True)
        noise = rng.standard_normal(img.shape)
        for lvl in range(1, 10):
            d = np.clip(img + strength * 1.6 ** lvl * noise, 0, 255).astype(np.uint8)
            Image.fromarray(d).save(root / "distorted" / f"im{i}" / f"{lvl}.png")
    return root


def _warning_to_stderr(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """``jndplug ARGS`` through the command line's ``main``, in this process: a second interpreter
    would pay the torch import on every call. Gives what a subprocess would: the exit status, the
    output and the errors. ``env`` holds only for the call."""
    from jndplug.cli import main

    def run(*args, env=None):
        argv = [str(a) for a in args]
        threads = torch.get_num_threads()
        capsys.readouterr()  # what the test printed before is not the command's
        with monkeypatch.context() as m, warnings.catch_warnings():
            for name, value in (env or {}).items():
                m.setenv(name, value)
            warnings.showwarning = _warning_to_stderr  # where the command's warnings go in a terminal
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's refusals: a subprocess would exit with this status
                code = exc.code
            finally:
                torch.set_num_threads(threads)  # a command under torchrun settings splits the cores
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["jndplug", *argv], code, out, err)

    return run


@pytest.fixture
def image_folder(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(make_image(40, 56, 1)).save(src / "a.png")
    Image.fromarray(make_image(33, 47, 2)).save(src / "sub" / "b.png")
    Image.fromarray(make_image(64, 48, 3)).save(src / "c.jpg", quality=95)
    return src


def free_port() -> int:
    # asked of the OS, not fixed: another run on the machine may hold any given port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_python(code: str, timeout: int = 300) -> str:
    """What ``code`` prints in a new interpreter, which must exit 0: for what an import pulls in, or
    memory measured without this process's own."""
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
