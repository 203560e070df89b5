"""Seed statistics: pure functions of numbers and per-example columns (no I/O, no torch).

Everything here is tested against numpy/scipy on small known cases (tests/test_repro.py).
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Sequence

import numpy as np


def _clean(values: Sequence[float | None]) -> np.ndarray:
    """The defined values as float64 (None and NaN dropped: an undefined metric under one seed does not
    poison the others; ``n`` in the summary says how many remained)."""
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return arr[np.isfinite(arr)]


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided Student-t critical value t_{(1+c)/2, dof}: ``scipy.special.stdtrit``, the function
    ``scipy.stats.t.ppf`` evaluates (the same number, without importing scipy.stats: about 1 CPU s)."""
    from scipy.special import stdtrit

    return float(stdtrit(dof, (1.0 + confidence) / 2.0))


def seed_summary(values: Sequence[float | None], confidence: float = 0.95,
                 bounds: tuple[float | None, float | None] | None = None) -> dict[str, float | int | None]:
    """Mean, sample standard deviation and Student-t interval of one metric over seeds.

    With n defined values x_1..x_n:
        mean = (1/n) sum x_i
        std  = sqrt( sum (x_i - mean)^2 / (n - 1) )                 (Bessel-corrected, numpy ddof=1)
        half = t_{(1+c)/2, n-1} * std / sqrt(n)
        interval = [mean - half, mean + half]
    the classical t-interval for the mean of a normal sample (Student, "The probable error of a mean",
    Biometrika 6, 1908; NIST/SEMATECH e-Handbook of Statistical Methods, section 7.2.2.1). Seeds are
    independent draws of the audit's randomness, so the interval says where the mean over *all* seeds
    lies; it is not an interval for one seed's value (for that see min/max).

    ``bounds`` (low, high; None for an open end): the metric's range (``MetricSpec.bounds``). The interval
    is then clipped to it, ``[max(mean - half, low), min(mean + half, high)]``: an accuracy's interval
    never reaches above 1. Clipping keeps the t-interval's coverage exactly: the true mean lies inside the
    bounds, so it lies in the clipped interval whenever it lies in the t-interval (and only then); the
    interval only stops claiming values the metric cannot take. ``half_width`` stays the t half-width (what
    ``seeds_needed`` plans with).

    Returns n, mean, std, ci_low, ci_high, half_width, min, max (None where undefined: std and the
    interval need n >= 2).
    """
    x = _clean(values)
    n = int(len(x))
    out: dict[str, float | int | None] = {"n": n, "mean": None, "std": None, "ci_low": None, "ci_high": None,
                                          "half_width": None, "min": None, "max": None}
    if n == 0:
        return out
    constant = bool(np.all(x == x[0]))
    # Identical values give exactly their value and a spread of exactly 0 (np.mean of n copies of a double
    # can be off by an ulp, which would make a constant metric look seed-dependent).
    mean = float(x[0]) if constant else float(np.mean(x))
    out.update(mean=mean, min=float(np.min(x)), max=float(np.max(x)))
    if n >= 2:
        std = 0.0 if constant else float(np.std(x, ddof=1))
        half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
        lo, hi = clip_interval(mean - half, mean + half, bounds)
        out.update(std=std, half_width=half, ci_low=lo, ci_high=hi)
    return out


def clip_interval(lo: float, hi: float, bounds: tuple[float | None, float | None] | None) -> tuple[float, float]:
    """``[lo, hi]`` intersected with the metric's range ``bounds`` (either end None: open)."""
    if bounds is None:
        return lo, hi
    b_lo, b_hi = bounds
    if b_lo is not None:
        lo, hi = max(lo, b_lo), max(hi, b_lo)
    if b_hi is not None:
        lo, hi = min(lo, b_hi), min(hi, b_hi)
    return lo, hi


def seeds_needed(std: float | None, half_width: float, confidence: float = 0.95, max_n: int = 1_000_000) -> int | None:
    """The smallest number of seeds n >= 2 whose t-interval half-width is at most ``half_width``,
    taking the observed standard deviation ``std`` as the true one:

        smallest n with  t_{(1+c)/2, n-1} * std / sqrt(n) <= h.

    The normal approximation n0 = ceil((z_{(1+c)/2} * std / h)^2) is a lower bound (t > z), so the search
    starts there and steps up until the t condition holds ("iterated" sample-size formula; NIST/SEMATECH
    e-Handbook, section 7.2.2.2, "Sample sizes required"). std = 0 gives 2 (the fewest seeds that
    measure a spread at all). None when std is unknown; None too when more than ``max_n`` would be needed.
    """
    if std is None or not math.isfinite(std) or half_width <= 0:
        return None
    if std == 0:
        return 2
    from scipy.special import ndtri  # what scipy.stats.norm.ppf evaluates

    z = float(ndtri((1.0 + confidence) / 2.0))
    n = max(2, math.ceil((z * std / half_width) ** 2))
    while n <= max_n:
        if t_quantile(confidence, n - 1) * std / math.sqrt(n) <= half_width:
            return n
        n += 1
    return None


def worst_index(values: Sequence[float | None], orientation: str | None) -> int | None:
    """Index of the worst seed: the smallest value when higher is better, the largest when lower is
    better, and the value farthest from the mean when the metric has no direction (ties: the first).
    None when no value is defined."""
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    ok = np.isfinite(arr)
    if not ok.any():
        return None
    if orientation == "higher":
        return int(np.nanargmin(np.where(ok, arr, np.nan)))
    if orientation == "lower":
        return int(np.nanargmax(np.where(ok, arr, np.nan)))
    dev = np.abs(arr - np.nanmean(arr[ok]))
    return int(np.nanargmax(np.where(ok, dev, np.nan)))


def _differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: do two columns differ? (NaN equals NaN, inf equals inf; 2-D columns compare whole rows.)"""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        neq = ~((a == b) | (np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))))
    else:
        neq = a != b
    if neq.ndim > 1:
        neq = neq.reshape(len(neq), -1).any(axis=1)
    return neq


def pairwise_churn(columns: Sequence[np.ndarray]) -> float | None:
    """Mean over all pairs of seeds (s, t), s < t, of the fraction of examples whose value differs:

        churn = (2 / (S (S - 1))) * sum_{s<t} (1/n) * sum_i [c_s(i) != c_t(i)]

    For the prediction column this is the "prediction churn" of Milani Fard et al., "Launch and
    Iterate: Reducing Prediction Churn" (NeurIPS 2016), averaged over seed pairs. None with < 2 seeds.
    """
    cols = list(columns)
    if len(cols) < 2:
        return None
    fr = [float(np.mean(_differs(a, b))) if len(a) else 0.0 for a, b in combinations(cols, 2)]
    return float(np.mean(fr))


def unstable_fraction(columns: Sequence[np.ndarray]) -> float | None:
    """Fraction of examples whose value is not the same under every seed:
    (1/n) sum_i [exists s, t: c_s(i) != c_t(i)]. None with < 2 seeds."""
    cols = list(columns)
    if len(cols) < 2 or not len(cols[0]):
        return None if len(cols) < 2 else 0.0
    any_diff = np.zeros(len(cols[0]), dtype=bool)
    for c in cols[1:]:
        any_diff |= _differs(cols[0], c)
    return float(np.mean(any_diff))
