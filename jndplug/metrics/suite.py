""":class:`MetricSuite`, which scores pairs of arrays with the metrics of :data:`jndplug.metrics.names.METRICS`."""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from jndplug.basicsr_compat import install_torchvision_shim
from jndplug.errors import CorruptFileError, load_torch_file
from jndplug.metrics.basic import MetricsError, psnr, ssim
from jndplug.metrics.names import DEFAULT_METRICS, METRICS
from jndplug.metrics.perceptual import STUDY_DISPLAY, cvvdp_jod, cvvdp_metric, flip_error, ssimulacra2_score
from jndplug.pixels import MS_SSIM_MIN_SIDE

INSTALL_HINT = "pip install 'jndplug[metrics]'"


class MetricUnavailable(Exception):
    """A metric cannot run here; the message says why and how to enable it."""


class MetricSuite:
    """Scores (output, reference) pairs of HxWx3 uint8/uint16 RGB arrays.

    Metrics that cannot be set up (package missing, weights not in place) land in ``skipped`` with
    the reason. LPIPS and DISTS read their ImageNet trunks where torchvision keeps them
    (:func:`_trunk_file`); nothing is downloaded.
    """

    def __init__(self, metrics=DEFAULT_METRICS, crop_border: int = 0, device: str | torch.device = "cpu"):
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise MetricsError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
        if crop_border < 0:
            raise MetricsError(f"crop_border must be >= 0, got {crop_border}")
        self.crop_border = crop_border
        self.device = torch.device(device)
        self.functions: dict[str, callable] = {}
        self.skipped: dict[str, str] = {}
        for name in metrics:
            try:
                self.functions[name] = getattr(self, f"_setup_{name}")()
            except MetricUnavailable as exc:
                self.skipped[name] = str(exc)

    @property
    def names(self) -> list[str]:
        return list(self.functions)

    def __call__(self, output: np.ndarray, reference: np.ndarray) -> tuple[dict, dict]:
        """(values, notes): the value of every available metric, and why any of them is None."""
        if output.shape != reference.shape:
            raise MetricsError(f"output is {output.shape[1]}x{output.shape[0]} but the reference is "
                               f"{reference.shape[1]}x{reference.shape[0]}")
        b = self.crop_border
        if b:
            if min(output.shape[:2]) <= 2 * b:
                raise MetricsError(f"a {output.shape[1]}x{output.shape[0]} image leaves nothing after cropping "
                                   f"{b} px borders")
            output, reference = output[b:-b, b:-b], reference[b:-b, b:-b]
        out8, ref8 = _to_float255(output), _to_float255(reference)
        values, notes = {}, {}
        for name, fn in self.functions.items():
            try:
                values[name] = fn(out8, ref8)
            except MetricUnavailable as exc:  # this image only (e.g. too small for MS-SSIM)
                values[name], notes[name] = None, str(exc)
        return values, notes

    # each _setup_NAME returns f(output, reference) on float64 HxWx3 arrays in [0, 255]

    def _setup_psnr(self):
        return lambda o, r: psnr(o, r)

    def _setup_psnr_y(self):
        return lambda o, r: psnr(o, r, y_channel=True)

    def _setup_ssim(self):
        return lambda o, r: ssim(o, r)

    def _setup_ssim_y(self):
        return lambda o, r: ssim(o, r, y_channel=True)

    def _setup_ms_ssim(self):
        from pytorch_msssim import ms_ssim

        def f(o, r):
            if min(o.shape[:2]) < MS_SSIM_MIN_SIDE:
                raise MetricUnavailable(f"MS-SSIM needs both sides >= {MS_SSIM_MIN_SIDE} px, got "
                                        f"{o.shape[1]}x{o.shape[0]}")
            return float(ms_ssim(self._tensor(o), self._tensor(r), data_range=1.0))

        return f

    def _setup_niqe(self):
        try:
            # BasicSR 1.4.2 is importable only behind jndplug's torchvision shim; the adapter's
            # hooks on basicsr.train are not wanted here
            install_torchvision_shim()
            from basicsr.metrics.niqe import calculate_niqe
        except ImportError as exc:
            raise MetricUnavailable(f"needs basicsr (pip install 'jndplug[basicsr]'): {exc}") from None

        def f(o, r):
            if min(o.shape[:2]) < 96:  # NIQE's 96x96 blocks
                raise MetricUnavailable(f"NIQE needs both sides >= 96 px, got {o.shape[1]}x{o.shape[0]}")
            # BasicSR takes BGR in [0, 255] and converts to Y itself; NIQE uses the rounded Y image
            return float(calculate_niqe(o[..., ::-1], 0, input_order="HWC", convert_to="y"))

        return f

    def _setup_cvvdp(self):
        try:
            import pycvvdp  # noqa: F401
        except ImportError as exc:
            raise MetricUnavailable(f"needs cvvdp ({INSTALL_HINT}): {exc}") from None
        metric, _ = cvvdp_metric(STUDY_DISPLAY, self.device)
        return lambda o, r: cvvdp_jod(metric, _to_uint8(o), _to_uint8(r))

    def _setup_ssimulacra2(self):
        try:
            import ssimulacra2  # noqa: F401
        except ImportError as exc:
            raise MetricUnavailable(f"needs ssimulacra2 ({INSTALL_HINT}): {exc}") from None

        def f(o, r):
            if min(o.shape[:2]) < 8:
                raise MetricUnavailable("SSIMULACRA 2 needs both sides >= 8 px")
            return ssimulacra2_score(_to_uint8(r), _to_uint8(o))

        return f

    def _setup_flip(self):
        try:
            import flip_evaluator  # noqa: F401
        except ImportError as exc:
            raise MetricUnavailable(f"needs flip-evaluator ({INSTALL_HINT}): {exc}") from None
        return lambda o, r: flip_error(r / 255.0, o / 255.0, STUDY_DISPLAY)

    def _setup_stlpips(self):
        try:
            from stlpips_pytorch import stlpips
        except ImportError as exc:
            raise MetricUnavailable(f"needs stlpips-pytorch, ipython and torchsummary ({INSTALL_HINT}): "
                                    f"{exc}") from None
        net = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False).to(self.device).eval()
        return self._distance(net)

    def _setup_lpips(self):
        _check_trunk("alexnet", "lpips")
        try:
            import lpips
        except ImportError as exc:
            raise MetricUnavailable(f"needs lpips ({INSTALL_HINT}): {exc}") from None
        with _pretrained_warnings_off():
            net = lpips.LPIPS(net="alex", verbose=False)
        return self._distance(net.to(self.device).eval())

    def _setup_dists(self):
        _check_trunk("vgg16", "dists")
        try:
            from DISTS_pytorch import DISTS
        except ImportError as exc:
            raise MetricUnavailable(f"needs DISTS_pytorch ({INSTALL_HINT}): {exc}") from None
        # DISTS() reads its fitted alpha/beta from where its wheel installs them
        fitted = Path(sys.prefix) / "weights.pt"
        if not fitted.is_file():
            raise MetricUnavailable(f"DISTS_pytorch's weights.pt is not at {fitted}, where its wheel installs it: "
                                    "reinstall dists-pytorch in this environment")
        with _pretrained_warnings_off():
            net = DISTS().to(self.device).eval()

        def f(o, r):
            with torch.no_grad():
                return float(net(self._tensor(o), self._tensor(r)))

        return f

    def _distance(self, net):
        def f(o, r):
            with torch.no_grad():
                return float(net(self._tensor(o), self._tensor(r), normalize=True).mean())

        return f

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a / 255.0, dtype=np.float32))
        return t.permute(2, 0, 1)[None].to(self.device)


def _to_float255(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint16:
        return a.astype(np.float64) * (255.0 / 65535.0)
    return a.astype(np.float64)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def _trunk_file(arch: str) -> tuple[Path, str]:
    """``(path, url)``: where torchvision keeps its ImageNet weights of ``arch`` (torch's hub cache),
    and where it would download them from."""
    from torchvision.models import get_model_weights

    url = get_model_weights(arch).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def _check_trunk(arch: str, metric: str) -> None:
    """Make sure torchvision will find ``arch``'s ImageNet weights in its cache, and that they are tensors only.

    As for BasicSR's VGG (``jndplug.integrations.basicsr.options.check_vgg_weights``) nothing is
    downloaded: a missing file skips the metric with the path to put it at. torchvision unpickles
    the cached file without ``weights_only``, so the file is read with it first: a pickle that is
    not plain tensors is refused before any of its code runs.
    """
    import torchvision.models

    path, url = _trunk_file(arch)
    name = {"alexnet": "AlexNet", "vgg16": "VGG16"}[arch]
    if not path.is_file():
        raise MetricUnavailable(f"needs torchvision's ImageNet {name} weights at {path} (nothing is downloaded "
                                f"here): fetch {url} on a machine with network and copy it there")
    fix = f"replace it with {path.name} from {url}"
    state = load_torch_file(path, f"torchvision {name} checkpoint for {metric}", fix)
    with torch.device("meta"):  # only the names and shapes, nothing allocated
        expected = getattr(torchvision.models, arch)(weights=None).state_dict()
    wrong = [k for k, v in expected.items()
             if not (isinstance(state, dict) and isinstance(state.get(k), torch.Tensor) and state[k].shape == v.shape)]
    if wrong:
        raise CorruptFileError(f"{path}: not torchvision's ImageNet {name}: it lacks {wrong[0]} (or its shape "
                               f"differs); {fix}")


@contextmanager
def _pretrained_warnings_off():
    # lpips and DISTS_pytorch ask torchvision for pretrained=True, which it still honours with a
    # deprecation warning the user can do nothing about
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(pretrained|weight enum)", category=UserWarning)
        yield
