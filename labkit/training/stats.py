"""How large a difference must be to mean something: intervals for the difference of two settings.

Two settings compared on the same seeds and split (`paired`), or two models scored on the same test images
(`bootstrap`), give a difference and an interval around it. A difference whose interval holds 0 is within the
noise of the comparison: the numbers cannot tell the two settings apart.

    paired([0.970, 0.965, 0.972], [0.968, 0.969, 0.966])    # per-seed accuracies of a and b
    Interval(mean=0.0013, lo=-0.0078, hi=0.0105, n=3, method='paired t over 3 seeds')
    bootstrap(correct_a, correct_b)                          # (n_test,) 0/1 each, the same test images
    describe("sla aggregated", "sla single", interval, scale=100, unit="pp")   # the sentence after a table

`describe` is the one place where an interval becomes words: a notebook prints it, so its text cannot
contradict the numbers it was written from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import LabkitError

__all__ = ["Interval", "paired", "bootstrap", "describe", "verdict", "VERDICTS"]


@dataclass(frozen=True)
class Interval:
    """A difference a - b: its mean and its confidence interval [lo, hi] from `n` seeds or test images."""

    mean: float
    lo: float
    hi: float
    n: int
    method: str  # "paired t over 3 seeds", "bootstrap over 360 test images", ...
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly above or below 0: a difference beyond the comparison's noise."""
        return self.lo > 0 or self.hi < 0

    @property
    def finite(self) -> bool:
        """False when there is no interval to give (one seed: no spread to estimate)."""
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units: `scaled(100)` turns accuracy differences into percentage points."""
        return Interval(self.mean * factor, self.lo * factor, self.hi * factor, self.n, self.method, self.confidence)

    def __str__(self) -> str:
        return f"{self.mean:+.4g} [{self.lo:+.4g}, {self.hi:+.4g}]"


def _numbers(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        raise LabkitError(f"{name} holds a value that is not a finite number")
    return array


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise LabkitError(f"confidence must lie in (0, 1), got {confidence}")


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of a - b over seeds and its t-interval (a[k] and b[k] ran with the same seed and split). With
    one seed there is no spread to estimate: the interval is (-inf, inf)."""
    _check_confidence(confidence)
    a, b = _numbers(a, "a"), _numbers(b, "b")
    if len(a) != len(b) or not len(a):
        raise LabkitError(f"paired needs the same seeds on both sides, got {len(a)} and {len(b)} numbers")
    d, n = a - b, len(a)
    mean = float(d.mean())
    if n < 2:
        return Interval(mean, -math.inf, math.inf, n, "one seed, no interval", confidence)
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n, f"paired t over {n} seeds", confidence)


def bootstrap(correct_a: Sequence[float] | np.ndarray, correct_b: Sequence[float] | np.ndarray, n: int = 2000,
              seed: int = 0, confidence: float = 0.95) -> Interval:
    """The accuracy difference of two models on the same test images, and its paired bootstrap interval: `n`
    resamples of the images (with replacement), the same images for both models, percentile bounds."""
    _check_confidence(confidence)
    a, b = _numbers(correct_a, "correct_a"), _numbers(correct_b, "correct_b")
    if len(a) != len(b) or not len(a):
        raise LabkitError(f"bootstrap needs 0/1 correctness on the same test images, got {len(a)} and {len(b)}")
    if n < 1:
        raise LabkitError(f"bootstrap needs at least one resample, got n={n}")
    d = a - b  # (images,) in {-1, 0, 1}
    picks = np.random.default_rng(seed).integers(0, len(d), size=(n, len(d)))  # (n, images)
    means = d[picks].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return Interval(float(d.mean()), float(lo), float(hi), len(d), f"bootstrap over {len(d)} test images",
                    confidence)


VERDICTS = ("higher", "lower", "within noise", "no interval")


def verdict(interval: Interval) -> str:
    """One of VERDICTS: a above b, a below b (the interval excludes 0), within noise, or no interval (one seed)."""
    if not interval.finite:
        return "no interval"
    if not interval.excludes_zero:
        return "within noise"
    return "higher" if interval.mean > 0 else "lower"


def describe(a: str, b: str, interval: Interval, scale: float = 100.0, unit: str = "pp", digits: int = 2) -> str:
    """One sentence: what the difference a - b is, and what it shows and what it does not, from `interval`.

    describe("sla aggregated", "sla single", paired(...)) ->
    "sla aggregated − sla single: −0.30 pp, 95% interval [−0.90, +0.30] (paired t over 3 seeds): within noise;
    these runs cannot tell the two apart."
    """
    s = interval.scaled(scale)

    def signed(x: float) -> str:
        return f"{x:+.{digits}f}".replace("-", "−")  # a minus sign, not a hyphen

    head = f"{a} − {b}: {signed(s.mean)} {unit}"
    said = verdict(interval)
    if said == "no interval":
        return (f"{head} ({s.method}): no interval, so this difference shows nothing yet; run more seeds to "
                f"measure its noise.")
    bounds = f"{100 * s.confidence:.0f}% interval [{signed(s.lo)}, {signed(s.hi)}] ({s.method})"
    if said == "within noise":
        return f"{head}, {bounds}: within noise; these runs cannot tell the two apart."
    return f"{head}, {bounds}: {a} is {said}, beyond the noise of this comparison."
