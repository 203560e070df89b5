"""Bootstrap helpers shared by the suites.

Metrics that are functions of a confusion matrix are bootstrapped without touching rows: resampling n
rows with replacement makes the cell counts Multinomial(n, observed cell frequencies), so one
``rng.multinomial`` call draws all B replicate confusion matrices at once (Efron & Tibshirani, 1993,
ch. 6; the same identity underlies the "Bayesian/Poisson bootstrap over counts").
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95, axis: int = 0
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval: the (1-c)/2 and (1+c)/2 quantiles of the replicates along ``axis``,
    NaNs ignored (all-NaN slices give NaN).

    The numbers of ``np.nanquantile`` (linear interpolation, Hyndman & Fan 1996 definition 7), from one
    sort of the whole array instead of its per-slice ``apply_along_axis``, which dominated the bootstrap's
    run time with many statistics. Reference: Efron & Tibshirani, An Introduction to the Bootstrap
    (1993), section 13.3.
    """
    r = np.moveaxis(np.asarray(replicates, dtype=np.float64), axis, 0)
    b = r.shape[0]
    # Sorting contiguous rows of the transpose is faster than along a strided first axis; NaN sorts last.
    srt = np.moveaxis(np.sort(np.moveaxis(r, 0, -1).copy(), axis=-1), -1, 0)
    m = (~np.isnan(r)).sum(0)
    alpha = (1.0 - confidence) / 2.0
    out = []
    for q in (alpha, 1.0 - alpha):
        pos = q * (np.maximum(m, 1) - 1)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, np.maximum(m - 1, 0))
        t = pos - i0
        a = np.take_along_axis(srt, i0[None], axis=0)[0] if b else np.full(m.shape, np.nan)
        c = np.take_along_axis(srt, i1[None], axis=0)[0] if b else np.full(m.shape, np.nan)
        d = c - a
        # numpy's _lerp: interpolate from the nearer end, so t = 0 and t = 1 return the data exactly.
        v = np.where(t >= 0.5, c - d * (1.0 - t), a + d * t)
        out.append(np.where(m > 0, v, np.nan)[()])  # [()]: a numpy scalar for 1-D input
    return out[0], out[1]


def exact_at_boundary(lo: np.ndarray | float, hi: np.ndarray | float, p_hat: np.ndarray | float,
                      n: np.ndarray | int, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap interval of a proportion, with the Clopper-Pearson exact interval where the bootstrap
    collapses: at p_hat = 0 or 1 every replicate equals p_hat and the percentile interval is a point,
    a certainty no sample of n gives (30 of 30 correct is consistent with a true accuracy of 0.88).

    There the exact interval is [0, 1 - (a/2)^(1/n)] for p_hat = 0 and [(a/2)^(1/n), 1] for p_hat = 1,
    a = 1 - confidence (Clopper & Pearson, Biometrika 1934; the beta quantiles at x = 0 and x = n).
    Elsewhere the bootstrap interval is returned unchanged. Vectorised over arrays of equal shape.
    """
    lo_a, hi_a = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    p = np.asarray(p_hat, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        edge = ((1.0 - confidence) / 2.0) ** (1.0 / m)
    ok = m > 0
    lo_a = np.where(ok & (p == 1.0), edge, lo_a)
    hi_a = np.where(ok & (p == 0.0), 1.0 - edge, hi_a)
    return lo_a[()], hi_a[()]


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
