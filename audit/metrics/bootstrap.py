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


def clopper_pearson(x: np.ndarray | float, n: np.ndarray | int, confidence: float = 0.95
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson exact interval of a proportion x/n: [B(a/2; x, n - x + 1), B(1 - a/2; x + 1, n - x)]
    with B the beta quantile, a = 1 - confidence, and the ends 0 at x = 0 and 1 at x = n (Clopper &
    Pearson, Biometrika 1934). ``x`` may be fractional (a mean of per-example fractions times n). NaN
    where n = 0."""
    # the beta quantile B(q; a, b) is scipy.special.betaincinv(a, b, q), what scipy.stats.beta.ppf evaluates
    # (bit for bit), without importing scipy.stats (1.3 s)
    from scipy.special import betaincinv

    x_a = np.asarray(x, dtype=np.float64)
    n_a = np.asarray(n, dtype=np.float64)
    a = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(x_a <= 0, 0.0, betaincinv(np.maximum(x_a, 1e-300), n_a - x_a + 1, a / 2))
        hi = np.where(x_a >= n_a, 1.0, betaincinv(x_a + 1, np.maximum(n_a - x_a, 1e-300), 1 - a / 2))
    bad = ~(n_a > 0) | ~np.isfinite(x_a)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def widen_to_exact(lo: np.ndarray | float, hi: np.ndarray | float, p_hat: np.ndarray | float,
                   n: np.ndarray | int, confidence: float = 0.95, *, only_at_boundary: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A proportion's bootstrap interval, widened to the Clopper-Pearson exact interval where that is
    wider: ``[min(lo, cp_lo), max(hi, cp_hi)]``.

    Why. Near 0 and 1 the percentile bootstrap of a proportion is too narrow (it is close to the Wald
    interval), and at exactly 0 or 1 every replicate equals the estimate, so it collapses to a point: 30
    of 30 correct would read as certain. Replacing it only at the boundary would not do either: the lower
    end at 29/30 (bootstrap) would sit above the one at 30/30 (exact). The union is never narrower than the
    exact interval, so its coverage is at least the exact interval's, and both ends move monotonically
    with the count. Where n = 0 or the estimate is NaN the bootstrap interval is returned unchanged.
    Vectorised over arrays of equal shape.

    ``only_at_boundary``: widen only at p_hat = 0 or 1. For a mean of per-example fractions (noise
    accuracy over D draws: a cluster bootstrap) the exact interval on n examples is valid but much wider
    than needed away from the boundary, so there it only replaces the collapsed point.
    """
    lo_a, hi_a = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    p = np.asarray(p_hat, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    cp_lo, cp_hi = clopper_pearson(p * m, m, confidence)
    ok = np.isfinite(cp_lo) & np.isfinite(cp_hi)
    if only_at_boundary:
        ok &= (p == 0.0) | (p == 1.0)
    lo_a = np.where(ok, np.fmin(lo_a, cp_lo), lo_a)
    hi_a = np.where(ok, np.fmax(hi_a, cp_hi), hi_a)
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


# ------------------------------------------------------------------ posterior draws (boundary-safe)


def jeffreys_cell_prior(k: int) -> np.ndarray:
    """The prior pseudo-counts of a K x K confusion matrix: 1/2 on each diagonal cell and 1/(2(K-1)) on
    each off-diagonal cell (1/2 per cell when K = 2; [[1/2]] when K = 1).

    Why this shape. Under a Dirichlet(cm + prior) posterior each row's recall is
    Beta(tp_k + 1/2, (n_k - tp_k) + 1/2): the Jeffreys posterior of a proportion, whose central interval is
    the Jeffreys interval (Brown, Cai & DasGupta, "Interval estimation for a binomial proportion",
    Statistical Science 16, 2001), for every K. A flat 1/2 on all K^2 cells would put K(K-1)/2 pseudo-errors
    into the accuracy and pull a 10-class model's interval far towards chance at small n.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if k == 1:
        return np.full((1, 1), 0.5)
    prior = np.full((k, k), 0.5 / (k - 1))
    np.fill_diagonal(prior, 0.5)
    return prior


def dirichlet_draws(counts: np.ndarray, prior: np.ndarray | float, n_draws: int, rng: np.random.Generator,
                    axes: int = 1) -> np.ndarray:
    """``n_draws`` posterior draws of cell counts: ``m * Dirichlet(counts + prior)`` over the last ``axes``
    axes (each leading index, e.g. a group, is its own Dirichlet with its own total m), shape
    ``(n_draws,) + counts.shape``, float.

    A Bayesian bootstrap over the cells (Rubin, "The Bayesian bootstrap", Annals of Statistics 9, 1981: with
    prior 0 it is the Dirichlet(counts) weighting of the observed rows) with a Jeffreys-type prior added, so
    that a cell observed empty still has mass: metrics at exactly 0 or 1 (a perfect classifier, a group
    with TPR 60/60) get an interval as wide as the data allow instead of a point. Drawn as normalised
    Gamma(counts + prior) variates, one call for every group. A slice with total 0 draws zeros (its
    rates stay 0/0, undefined). Every metric of the counts is a ratio, so the scale m only keeps the
    draws readable as counts.
    """
    c = np.asarray(counts, dtype=np.float64)
    alpha = c + np.asarray(prior, dtype=np.float64)
    g = rng.standard_gamma(np.broadcast_to(alpha, (int(n_draws),) + c.shape))
    red = tuple(range(-axes, 0))
    total = c.sum(axis=red, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = g / g.sum(axis=red, keepdims=True) * total
    return np.where(total > 0, draws, 0.0)


def posterior_interval(draws: np.ndarray, point: np.ndarray | float, confidence: float = 0.95, axis: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Central interval of posterior draws (:func:`percentile_interval`), widened to contain the point
    estimate: at an estimate of exactly 0 or 1 the data are consistent with the boundary itself (the
    modified Jeffreys interval of Brown, Cai & DasGupta 2001, sec. 4.1.2, sets L = 0 at x = 0 and U = 1 at
    x = n), and an interval that excludes its own estimate would be read as an error. NaN where the point
    is NaN."""
    lo, hi = percentile_interval(draws, confidence, axis)
    p = np.asarray(point, dtype=np.float64)
    bad = np.isnan(p)
    return np.where(bad, np.nan, np.fmin(lo, p))[()], np.where(bad, np.nan, np.fmax(hi, p))[()]


def jeffreys_interval(x: np.ndarray | float, n: np.ndarray | float, confidence: float = 0.95
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Jeffreys interval of a proportion x/n: the alpha/2 and 1 - alpha/2 quantiles of Beta(x + 1/2,
    n - x + 1/2), with L = 0 at x = 0 and U = 1 at x = n (Brown, Cai & DasGupta, Statistical Science 16,
    2001, sec. 4.1.2). ``x`` and ``n`` may be fractional (an effective sample size). NaN where n <= 0."""
    # the beta quantile B(q; a, b) is scipy.special.betaincinv(a, b, q), what scipy.stats.beta.ppf evaluates
    # (bit for bit), without importing scipy.stats (1.3 s)
    from scipy.special import betaincinv

    x_a = np.asarray(x, dtype=np.float64)
    n_a = np.asarray(n, dtype=np.float64)
    a = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(x_a <= 0, 0.0, betaincinv(x_a + 0.5, np.maximum(n_a - x_a, 0) + 0.5, a / 2))
        hi = np.where(x_a >= n_a, 1.0, betaincinv(x_a + 0.5, np.maximum(n_a - x_a, 0) + 0.5, 1 - a / 2))
    bad = ~(n_a > 0) | ~np.isfinite(x_a)
    return np.where(bad, np.nan, lo)[()], np.where(bad, np.nan, hi)[()]
