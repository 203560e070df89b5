"""Bootstrap helpers shared by the suites.

Metrics that are functions of a confusion matrix are bootstrapped without touching rows: resampling n
rows with replacement makes the cell counts Multinomial(n, observed cell frequencies), so one
``rng.multinomial`` call draws all B replicate confusion matrices at once (Efron & Tibshirani, 1993,
ch. 6; the same identity underlies the "Bayesian/Poisson bootstrap over counts").
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval: the (1-c)/2 and (1+c)/2 quantiles of the replicates, NaNs ignored.

    Reference: Efron & Tibshirani, An Introduction to the Bootstrap (1993), section 13.3.
    """
    alpha = (1.0 - confidence) / 2.0
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, which is what we want
            lo = np.nanquantile(replicates, alpha, axis=axis)
            hi = np.nanquantile(replicates, 1.0 - alpha, axis=axis)
    return lo, hi


def multinomial_confusions(cm: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """B bootstrap replicates of a K x K confusion matrix, shape (B, K, K)."""
    cm = np.asarray(cm, dtype=np.int64)
    n = int(cm.sum())
    k = cm.shape[0]
    if n == 0:
        return np.zeros((n_boot, k, k), dtype=np.int64)
    draws = rng.multinomial(n, cm.ravel() / n, size=n_boot)
    return draws.reshape(n_boot, k, k)


def bootstrap_rows(stat: Callable[[np.ndarray], float], n: int, n_boot: int, rng: np.random.Generator,
                   confidence: float = 0.95) -> tuple[float, float]:
    """Row-resampling bootstrap for statistics that are not functions of counts (e.g. AUROC).

    ``stat`` receives an index array of length n (a resample) and returns a number (NaN if undefined).
    """
    vals = np.empty(n_boot)
    for b in range(n_boot):
        vals[b] = stat(rng.integers(0, n, size=n))
    lo, hi = percentile_interval(vals, confidence)
    return float(lo), float(hi)
