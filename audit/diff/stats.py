"""Tests and intervals for comparing two audits, and the verdict they lead to. Pure functions (numpy, and
scipy's beta quantile through :func:`audit.metrics.bootstrap.clopper_pearson`); no I/O.

Paired (the same examples scored by both models):

- a proportion (accuracy, robust accuracy at one eps): McNemar's exact test on the discordant examples
  (:func:`mcnemar_exact`) and the exact conditional interval of the difference (:func:`mcnemar_interval`);
- any other metric that is a function of the rows: the paired bootstrap (:func:`paired_bootstrap`), which
  resamples examples once and scores both models on the same resample.

Unpaired (different data, or no per-example table): only the two reports' own intervals are known
(:func:`unpaired_verdict`).

Verdicts (:func:`paired_verdict`): ``improved`` / ``regressed`` only when the difference is significant at
``alpha`` in the metric's better direction; ``changed`` for a significant difference of a metric without a
direction; ``unchanged`` when it is not significant and its whole interval lies within +-tolerance;
``inconclusive`` otherwise (not significant, but the data cannot rule out a change larger than the
tolerance). A difference inside the noise is therefore never improved or regressed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

IMPROVED, REGRESSED, UNCHANGED, INCONCLUSIVE, CHANGED = "improved", "regressed", "unchanged", "inconclusive", "changed"
VERDICTS = (IMPROVED, REGRESSED, UNCHANGED, INCONCLUSIVE, CHANGED)

# Above this many discordant pairs the binomial tail is summed in log space (lgamma) instead of with exact
# integers: the integers grow like 2^m and their sum costs O(m^2) digit operations.
_EXACT_MAX = 2000


def binom_half_cdf(k: int, m: int) -> float:
    """P[X <= k] for X ~ Binomial(m, 1/2): ``sum_{j=0..k} C(m, j) / 2^m``.

    Exact (integer arithmetic) for m <= 2000, else summed in log space with ``log C(m, j) = lgamma(m + 1) -
    lgamma(j + 1) - lgamma(m - j + 1)`` and a log-sum-exp (relative error about 1e-13)."""
    if m < 0 or k < 0:
        return 0.0
    if k >= m:
        return 1.0
    if m <= _EXACT_MAX:
        total, term = 0, 1
        for j in range(k + 1):  # term = C(m, j), updated in place: C(m, j+1) = C(m, j) (m - j) / (j + 1)
            total += term
            term = term * (m - j) // (j + 1)
        return total / (1 << m)  # int / int: correctly rounded, however large both are
    logs = np.array([math.lgamma(m + 1) - math.lgamma(j + 1) - math.lgamma(m - j + 1) for j in range(k + 1)])
    top = logs.max()
    return float(math.exp(top + math.log(np.exp(logs - top).sum()) - m * math.log(2.0)))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test of b (base right, new wrong) against c (base wrong, new right)::

        p = min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)])

    Under the null of no difference each discordant example is equally likely to go either way, so the
    number of one kind among the m = b + c discordant ones is Binomial(m, 1/2) (McNemar, "Note on the
    sampling error of the difference between correlated proportions or percentages", Psychometrika 1947;
    the exact conditional form, e.g. Fagerland, Lydersen & Laake, BMC Med Res Methodol 2013). The
    concordant examples carry no information about the difference. p = 1 when b = c (and at b = c = 0);
    equals ``scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue`` (the distribution is symmetric)."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2.0 * binom_half_cdf(min(b, c), m))


def mcnemar_interval(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact conditional interval of the paired difference new - base of a proportion,
    ``delta = (c - b) / n``.

    Given m = b + c discordant examples, c ~ Binomial(m, pi) and delta = m (2 pi - 1) / n; the Clopper-Pearson
    interval [L, U] of pi (Clopper & Pearson, Biometrika 1934) maps to ``[m (2L - 1) / n, m (2U - 1) / n]``.
    It is dual to :func:`mcnemar_exact`: it excludes 0 exactly when the test rejects at 1 - confidence. With
    no discordant example the models agree on every example and the difference is exactly 0: [0, 0].
    Conditioning on m makes it exact for these examples' discordance, not for a fresh sample."""
    from audit.metrics.bootstrap import clopper_pearson

    b, c, n = int(b), int(c), int(n)
    if n <= 0:
        return float("nan"), float("nan")
    m = b + c
    if m == 0:
        return 0.0, 0.0
    lo, hi = clopper_pearson(c, m, confidence)
    return float(m * (2 * lo - 1) / n), float(m * (2 * hi - 1) / n)


def discordant(base_right: np.ndarray, new_right: np.ndarray) -> tuple[int, int]:
    """(b, c): examples right under base and wrong under new, and the reverse."""
    a = np.asarray(base_right, dtype=bool)
    z = np.asarray(new_right, dtype=bool)
    return int((a & ~z).sum()), int((~a & z).sum())


# Largest number of row counts in one chunk of resamples (the int64 index draws behind it: 32 MB).
_CHUNK_ELEMENTS = 4_000_000


def bootstrap_weight_chunks(n: int, n_boot: int, rng: np.random.Generator,
                            max_elements: int | None = None) -> Iterator[np.ndarray]:
    """The resamples of :func:`bootstrap_weights`, as consecutive (chunk, n) int32 count arrays of at most
    ``max_elements`` counts (default ``_CHUNK_ELEMENTS``; at least one resample each): memory O(max_elements),
    never B x n. Drawn from ``rng`` in order, and numpy's bounded integers do not depend on how a stream is
    split into calls, so any chunking gives the same resamples (tests/test_diff.py checks it)."""
    step = max(1, min(64, (max_elements or _CHUNK_ELEMENTS) // max(n, 1)))
    for start in range(0, n_boot, step):
        idx = rng.integers(0, n, size=(min(step, n_boot - start), n))
        yield np.bincount((idx + n * np.arange(len(idx))[:, None]).ravel(),
                          minlength=len(idx) * n).reshape(len(idx), n).astype(np.int32)


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n) counts: how often each of n rows occurs in each of B row resamples (n draws with replacement),
    so a weighted statistic equals the statistic of the resampled rows (Efron & Tibshirani, "An
    Introduction to the Bootstrap", 1993, ch. 6). B x n memory: for small n and tests; ``audit diff`` uses
    :func:`bootstrap_weight_chunks`, the same resamples a chunk at a time."""
    out = np.empty((n_boot, n), dtype=np.int32)  # int32: B x n counts of at most n each
    start = 0
    for w in bootstrap_weight_chunks(n, n_boot, rng):
        out[start:start + len(w)] = w
        start += len(w)
    return out


def paired_bootstrap(delta_reps: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Percentile interval and two-sided p-value of a paired difference from its bootstrap replicates.

    ``delta_reps[b] = stat_new(resample b) - stat_base(resample b)``: the SAME resampled examples for both
    models, so the spread is that of the difference, with the correlation between the two models'
    per-example results kept (Efron & Tibshirani 1993, ch. 13 and 16). Interval: the (1 - confidence)/2 and
    (1 + confidence)/2 quantiles. p-value: twice the smaller tail share of replicates at or beyond 0,
    ``min(1, 2 min((1 + #{d_b <= 0}) / (B + 1), (1 + #{d_b >= 0}) / (B + 1)))``, which is 1 when every
    replicate is 0 (identical models) and at least 2 / (B + 1). Replicates that are undefined (NaN: a
    resample without a class) are dropped; with none left the result is NaN."""
    d = np.asarray(delta_reps, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    a = (1.0 - confidence) / 2
    lo, hi = np.quantile(d, [a, 1.0 - a])
    nb = d.size
    p = min(1.0, 2.0 * min((1 + np.sum(d <= 0)) / (nb + 1), (1 + np.sum(d >= 0)) / (nb + 1)))
    return float(lo), float(hi), float(p)


def direction_of(delta: float, better: str | None) -> str:
    """improved / regressed for a significant difference of a metric with a direction, else changed."""
    if better == "higher":
        return IMPROVED if delta > 0 else REGRESSED
    if better == "lower":
        return IMPROVED if delta < 0 else REGRESSED
    return CHANGED


def paired_verdict(delta: float, ci_low: float, ci_high: float, p_value: float, better: str | None, *,
                   alpha: float = 0.05, tolerance: float = 0.01) -> str:
    """The verdict of a paired comparison (module docstring). A difference of exactly 0 is significant
    never (its p is 1); an undefined p or interval is inconclusive."""
    if not all(np.isfinite(v) for v in (delta, ci_low, ci_high, p_value)):
        return INCONCLUSIVE
    if p_value < alpha and delta != 0:
        return direction_of(delta, better)
    if -tolerance <= ci_low and ci_high <= tolerance:
        return UNCHANGED
    return INCONCLUSIVE


def unpaired_verdict(base: float, new: float, base_ci: tuple[float, float] | None, new_ci: tuple[float, float] | None,
                     better: str | None, *, tolerance: float = 0.01) -> str:
    """The verdict of an unpaired comparison (different data, or a metric the table cannot recompute).

    ``improved`` / ``regressed`` (``changed`` without a direction) only when the two reports' intervals are
    disjoint; ``unchanged`` when the values are equal, or when each report's interval lies within
    +-tolerance of the other report's value (both estimates are precise, and close); else
    ``inconclusive``. Without intervals only equal values are unchanged. Disjoint 95% intervals are a
    conservative test (about p < 0.006 for two normal estimates of equal spread: Schenker & Gentleman, "On
    judging the significance of differences by examining the overlap between confidence intervals", Am
    Stat 2001), which suits a comparison that cannot pair examples."""
    if not (np.isfinite(base) and np.isfinite(new)):
        return INCONCLUSIVE
    if base == new:
        return UNCHANGED
    if base_ci is None or new_ci is None or not all(np.isfinite(v) for v in (*base_ci, *new_ci)):
        return INCONCLUSIVE
    if base_ci[1] < new_ci[0] or new_ci[1] < base_ci[0]:
        return direction_of(new - base, better)
    if (new - tolerance <= base_ci[0] and base_ci[1] <= new + tolerance
            and base - tolerance <= new_ci[0] and new_ci[1] <= base + tolerance):
        return UNCHANGED
    return INCONCLUSIVE


def unpaired_interval(base_ci: tuple[float, float] | None, new_ci: tuple[float, float] | None
                      ) -> tuple[float | None, float | None]:
    """A conservative interval of new - base from the two reports' intervals: ``[new_lo - base_hi,
    new_hi - base_lo]`` (the differences their intervals allow). None where an interval is missing."""
    if base_ci is None or new_ci is None:
        return None, None
    return new_ci[0] - base_ci[1], new_ci[1] - base_ci[0]

