"""Visibility models: how far a test image is from its reference, in (equivalent) JOD.

Each model maps its own score to a distance ``d`` whose detection probability for the median
observer is :func:`detection_probability`; the simulated observers (``observers.py``) answer the
study's questions from it.

Psychometric function (ColorVideoVDP)
-------------------------------------
ColorVideoVDP predicts quality ``Q`` in JOD (just-objectionable-difference) units, 10 meaning
identical to the reference; ``d = 10 - Q`` is the distance of the test image from its reference.
The JOD scale is a Thurstone case V scale: in a pairwise comparison, the probability that the
better image is preferred is ``P_pref(d) = Phi(z75 * d)``, with the unit fixed so that
``d = 1 JOD`` gives 75% preference, hence ``z75 = Phi^-1(0.75) = 0.6745``.

In a reference-versus-test comparison an observer who detects the difference prefers the
reference; one who does not, guesses. So ``P_pref = P_det + (1 - P_det) / 2 = 0.5 + 0.5 P_det``,
which gives the detection probability

    P_det(d) = 2 Phi(z75 d) - 1 = erf(z75 d / sqrt(2))

(0 at d = 0, 26% at 0.5 JOD, 50% at 1 JOD, 82% at 2 JOD). Participant ``i`` scales the distance
by a sensitivity ``s_i = m * exp(sigma_s * N(0, 1))`` (lognormal; with the default median
``m = 1`` the median participant is the model's average observer; ``sigma_s = 0.3`` by default puts the 5-95% range of thresholds at
0.61-1.64x, an assumption, not a measurement), and lapses with probability ``lambda``: on a lapse
the answer is a coin flip. The probability of answering "noticeable" is

    P_yes = (1 - lambda) * P_det(s_i d) + lambda / 2.

With no lapse, an identical pair (d = 0) is never called noticeable.

NVIDIA FLIP (the alternative)
-----------------------------
FLIP gives a mean per-pixel error ``e`` in [0, 1] with no probabilistic meaning. It is mapped to
an equivalent JOD distance ``d = (e / e50) ** gamma`` and then through the function above.
``e50 = 0.126`` and ``gamma = 2.17`` are a least-squares fit of log ColorVideoVDP distance on log
FLIP error over 12 photographs x 9 JPEG levels seen on the same display (``python -m
jndplug.study.validate``; see the study README). The calibration is to another model, not to
people, and is weaker than ColorVideoVDP's own (rank correlation between the two: 0.93).

SSIMULACRA 2
------------
A score ``s`` (100 = identical) fitted to human ratings, with a published scale: 90 "impossible
to distinguish from the original in a flicker test", 85 the same in a flip test, 80 the same
side by side at 1:1, 70 "hard to notice artifacts without comparison to the original". It is mapped
to ``d = ((100 - s) / (100 - s50)) ** gamma`` with ``s50 = 75`` and ``gamma = 3.3``, which puts the
detection probability of the median observer at 3% for s = 90, 10% at 85, 25% at 80, 50% at 75 and
79% at 70: low where the scale says people cannot tell the images apart in a side-by-side
comparison, high where it says they can without one. The two constants are the solution of
P(80) = 0.25 and P(70) = 0.8 (rounded); the other anchors then follow.

Colour difference
-----------------
People comparing two images side by side see a global colour cast that ColorVideoVDP largely
discounts (it models adaptation). This model measures CIEDE2000 (sRGB, D65) between the two
images' mean colours, and the 95th percentile of per-pixel CIEDE2000 between Gaussian low-passes of
the images (sigma half a degree of visual angle, 19 px on the study display) for local casts, and
takes ``d = max(dE_mean / 1.0, dE_low_p95 / 2.0)``. One CIEDE2000 unit is the usual
just-perceptible difference of two uniform patches; photographs are more forgiving (published
perceptibility thresholds for pictorial images are 1.3-2 units), so anchoring the image mean at 1.0
is conservative. Local casts are anchored at 2.0, a choice, not a measurement.

Conservative (the default for labelling)
----------------------------------------
No single model is a trustworthy stand-in for people (ColorVideoVDP- and FLIP-based observers
order the same images differently). The conservative model runs ColorVideoVDP, FLIP, SSIMULACRA 2
and the colour-difference test and returns the largest of their distances: an observer notices a
level when any of the models would have them notice it. Which model decided is kept with every
cached prediction (:func:`deciding_models`).

Viewing conditions: the study's display, a 24-inch 1920x1080 monitor (ColorVideoVDP's
``standard_fhd``: 200 cd/m^2 peak, contrast 1000:1, 250 lux office light) seen from 0.6 m
(about 38 pixels per degree); each image is shown at its native pixel size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy.special import erf

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import to_8bit
from jndplug.metrics.perceptual import STUDY_DISPLAY, Display, cvvdp_jod, cvvdp_metric, flip_error, ssimulacra2_score

# the study display's viewing conditions (jndplug.metrics.perceptual), the defaults of every model
DISTANCE, DIAGONAL = STUDY_DISPLAY.viewing_distance_m, STUDY_DISPLAY.diagonal_inches
RESOLUTION = STUDY_DISPLAY.resolution


Z75 = 0.6744897501960817  # Phi^-1(0.75)


def detection_probability(d, sensitivity: float = 1.0):
    """P(detect) of a reference-vs-test difference ``d`` JOD for an observer of ``sensitivity``."""
    d = np.maximum(np.asarray(d, dtype=float), 0.0)
    return erf(Z75 * sensitivity * d / math.sqrt(2))


class VisibilityModel:
    """A full-reference model giving a distance in (equivalent) JOD between two images."""

    name = "model"

    @property
    def key(self) -> str:
        """Identifies the model and viewing conditions; predictions are cached under it."""
        raise NotImplementedError

    def distance(self, reference: np.ndarray, test: np.ndarray) -> float:
        raise NotImplementedError

    def _viewing(self) -> str:
        """The viewing conditions' part of :attr:`key`, for models that take a display geometry."""
        w, h = self.resolution
        return f"{w}x{h}_{self.diagonal_inches:g}in_{self.viewing_distance_m:g}m"


class CVVDP(VisibilityModel):
    """ColorVideoVDP on the study display (see the module docstring); needs no downloads."""

    name = "cvvdp"

    def __init__(self, display: str = STUDY_DISPLAY.cvvdp_name, viewing_distance_m: float = DISTANCE,
                 diagonal_inches: float = DIAGONAL, resolution=RESOLUTION):
        import pycvvdp

        if viewing_distance_m <= 0 or diagonal_inches <= 0:
            raise JNDPlugValueError("viewing distance and display size must be positive")
        self.display, self.viewing_distance_m, self.diagonal_inches = display, viewing_distance_m, diagonal_inches
        self.resolution = tuple(resolution)
        try:
            self._metric, geometry = cvvdp_metric(Display(self.resolution, diagonal_inches, viewing_distance_m,
                                                          display), "cpu")
        except Exception as exc:  # pycvvdp raises bare RuntimeError/vq_exception for unknown displays
            raise JNDPlugValueError(f"ColorVideoVDP could not use display {display!r}: {exc}") from None
        self.ppd = float(geometry.get_ppd())
        self._version = getattr(pycvvdp, "__version__", "") or _param_version(pycvvdp)

    @property
    def key(self) -> str:
        return f"cvvdp-{self._version}_{self.display}_{self._viewing()}"

    def distance(self, reference, test) -> float:
        return max(0.0, 10.0 - cvvdp_jod(self._metric, test, reference))


def _param_version(pycvvdp) -> str:
    try:
        p = Path(pycvvdp.__file__).parent / "vvdp_data" / "cvvdp_parameters.json"
        return json.loads(p.read_text()).get("version", "unknown")
    except (OSError, ValueError):
        return "unknown"


class FLIP(VisibilityModel):
    """NVIDIA FLIP (LDR) mapped to an equivalent JOD distance ``(e / e50) ** gamma``."""

    name = "flip"

    def __init__(self, viewing_distance_m: float = DISTANCE, diagonal_inches: float = DIAGONAL,
                 resolution=RESOLUTION, e50: float = 0.126, gamma: float = 2.17):
        if viewing_distance_m <= 0 or diagonal_inches <= 0 or e50 <= 0 or gamma <= 0:
            raise JNDPlugValueError("viewing distance, display size, e50 and gamma must be positive")
        w, h = resolution
        self.resolution = (w, h)
        self.viewing_distance_m, self.diagonal_inches = viewing_distance_m, diagonal_inches
        self._display = Display((w, h), diagonal_inches, viewing_distance_m)
        self.e50, self.gamma = e50, gamma

    @property
    def key(self) -> str:
        return f"flip_{self._viewing()}_e50-{self.e50:g}_g{self.gamma:g}"

    def mean_error(self, reference, test) -> float:
        def f(a):
            peak = 65535.0 if a.dtype == np.uint16 else 255.0
            return np.asarray(a, dtype=np.float32) / peak

        return flip_error(f(reference), f(test), self._display)

    def distance(self, reference, test) -> float:
        return (self.mean_error(reference, test) / self.e50) ** self.gamma


class SSIMULACRA2(VisibilityModel):
    """SSIMULACRA 2 mapped to an equivalent JOD distance (see the module docstring)."""

    name = "ssimulacra2"

    def __init__(self, viewing_distance_m: float = DISTANCE, s50: float = 75.0, gamma: float = 3.3):
        if not 0 < s50 < 100 or gamma <= 0:
            raise JNDPlugValueError(f"SSIMULACRA 2 mapping needs 0 < s50 < 100 and gamma > 0, got {s50} and {gamma}")
        from importlib.metadata import version

        from ssimulacra2 import compute_ssimulacra2  # noqa: F401  (fail now, not mid-study)

        self.s50, self.gamma = s50, gamma
        self._version = version("ssimulacra2")

    @property
    def key(self) -> str:
        return f"ssimulacra2-{self._version}_s50-{self.s50:g}_g{self.gamma:g}"

    def score(self, reference, test) -> float:
        if np.array_equal(reference, test):
            return 100.0
        return ssimulacra2_score(to_8bit(reference), to_8bit(test))

    def score_to_distance(self, s: float) -> float:
        return ((100.0 - min(100.0, s)) / (100.0 - self.s50)) ** self.gamma

    def distance(self, reference, test) -> float:
        return self.score_to_distance(self.score(reference, test))


class ColourDifference(VisibilityModel):
    """CIEDE2000 of the image means and of low-passes (see the module docstring)."""

    name = "colour"

    def __init__(self, viewing_distance_m: float = DISTANCE, diagonal_inches: float = DIAGONAL,
                 resolution=RESOLUTION, mean_de50: float = 1.0, local_de50: float = 2.0,
                 sigma_degrees: float = 0.5, percentile: float = 95.0):
        if min(viewing_distance_m, diagonal_inches, mean_de50, local_de50, sigma_degrees) <= 0:
            raise JNDPlugValueError("viewing distance, display size, anchors and sigma must be positive")
        if not 0 < percentile <= 100:
            raise JNDPlugValueError(f"percentile must be in (0, 100], got {percentile}")
        w, h = resolution
        width_m = Display((w, h), diagonal_inches, viewing_distance_m).width_m
        ppd = w / (2 * math.degrees(math.atan(width_m / 2 / viewing_distance_m)))
        self.sigma_px = sigma_degrees * ppd
        self.mean_de50, self.local_de50, self.percentile = mean_de50, local_de50, percentile
        self.viewing_distance_m, self.diagonal_inches, self.resolution = viewing_distance_m, diagonal_inches, (w, h)
        self.sigma_degrees = sigma_degrees

    @property
    def key(self) -> str:
        return (f"ciede2000_{self._viewing()}_mean-{self.mean_de50:g}_"
                f"local-{self.local_de50:g}-p{self.percentile:g}-s{self.sigma_degrees:g}deg")

    def differences(self, reference, test) -> tuple[float, float]:
        """(dE00 of the mean colours, percentile of dE00 between the low-passes)."""
        from scipy.ndimage import gaussian_filter
        from skimage.color import deltaE_ciede2000, rgb2lab

        def f(a):
            peak = 65535.0 if a.dtype == np.uint16 else 255.0
            return np.asarray(a, dtype=np.float64)[..., :3] / peak

        r, t = f(reference), f(test)
        # the mean colour is taken in linear light, where mixing happens, then converted
        def mean_lab(a):
            lin = np.where(a <= 0.04045, a / 12.92, ((a + 0.055) / 1.055) ** 2.4).mean(axis=(0, 1))
            srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
            return rgb2lab(srgb[None, None])[0, 0]

        de_mean = float(deltaE_ciede2000(mean_lab(r), mean_lab(t)))
        lp = [gaussian_filter(a, sigma=(self.sigma_px, self.sigma_px, 0), mode="reflect") for a in (r, t)]
        de_local = float(np.percentile(deltaE_ciede2000(rgb2lab(lp[0]), rgb2lab(lp[1])), self.percentile))
        return de_mean, de_local

    def distance(self, reference, test) -> float:
        de_mean, de_local = self.differences(reference, test)
        return max(de_mean / self.mean_de50, de_local / self.local_de50)


class Conservative(VisibilityModel):
    """The largest distance of several models: noticed when any of them says so."""

    name = "conservative"

    def __init__(self, models: list[VisibilityModel]):
        if not models:
            raise JNDPlugValueError("the conservative model needs at least one visibility model")
        self.models = list(models)

    @property
    def key(self) -> str:
        return "conservative[" + "+".join(m.key for m in self.models) + "]"

    def components(self, reference, test) -> dict[str, float]:
        return {m.name: float(m.distance(reference, test)) for m in self.models}

    def distance(self, reference, test) -> float:
        return max(self.components(reference, test).values())


def _conservative(viewing_distance_m: float = DISTANCE) -> Conservative:
    return Conservative([CVVDP(viewing_distance_m=viewing_distance_m), FLIP(viewing_distance_m=viewing_distance_m),
                         SSIMULACRA2(viewing_distance_m=viewing_distance_m),
                         ColourDifference(viewing_distance_m=viewing_distance_m)])


MODELS = {"conservative": _conservative, "cvvdp": CVVDP, "flip": FLIP, "ssimulacra2": SSIMULACRA2,
          "colour": ColourDifference}
DEFAULT_MODEL = "conservative"


def make_model(name: str = DEFAULT_MODEL, viewing_distance_m: float = DISTANCE, **kw) -> VisibilityModel:
    if name not in MODELS:
        raise JNDPlugValueError(f"unknown visibility model {name!r}; choose {', '.join(MODELS)}")
    return MODELS[name](viewing_distance_m=viewing_distance_m, **kw)
