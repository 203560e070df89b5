"""Calibration metrics: ECE (equal-width and equal-mass bins, top-label and class-wise), MCE, Brier, NLL,
reliability-diagram data, the ECE a perfectly calibrated model would show at this sample size, and
temperature scaling as a held-out diagnostic.

Inputs are probabilities ``probs`` of shape ``(n, K)`` (rows sum to 1; a 1-D array is taken as the
positive-class probability of a binary model) or logits ``(n, K)``, and integer labels ``0..K-1``.

Binning conventions (the report should say them):

- ``strategy="uniform"``: M equal-width bins ``(lo, hi]`` on [0, 1], except that the first bin also holds
  0, i.e. bin ``b`` holds ``b/M < c <= (b+1)/M`` and ``c = 0`` is in bin 0. A confidence of exactly 1.0
  is in the last bin (a half-open ``[lo, hi)`` convention without a special case drops it, or indexes one
  past the end). Edges are ``k / M`` (correctly rounded; ``np.linspace`` computes ``k * (1/M)``, which
  is 0.30000000000000004 for 3/10) and bins are found with ``np.searchsorted`` on those same edges, so a
  value equal to an edge lands where the printed edges say, with no floating-point disagreement between
  ``floor(c * M)`` and the edges.
- ``strategy="quantile"`` (equal mass): the examples sorted by confidence (stable sort, so ties keep
  their input order) are cut into M consecutive runs of ``floor(n/M)`` or ``ceil(n/M)`` examples; example
  of rank r (0-based) is in bin ``floor(r * M / n)``. Every bin has the same mass even when confidences tie
  (a tie may straddle two bins). A bin's edges in the reliability diagram are the smallest and largest
  confidence in it. This is the "adaptive" binning of Nixon et al., "Measuring Calibration in Deep
  Learning", CVPR Workshops 2019.
- Empty bins contribute nothing to ECE and are skipped by MCE; their accuracy and mean confidence are NaN.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np

from audit.metrics.bootstrap import percentile_interval

Strategy = Literal["uniform", "quantile"]
Kind = Literal["top_label", "classwise"]

# ------------------------------------------------------------------------------------------- inputs


def as_probs(probs: np.ndarray) -> np.ndarray:
    """``(n, K)`` float64 probabilities; a 1-D array p is read as a binary model's P(class 1): ``[1-p, p]``."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"probabilities must have shape (n, K), not {p.shape}")
    return p


def _labels(labels: np.ndarray, n: int, k: int) -> np.ndarray:
    y = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} predictions")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}")
    return y


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(z / T)`` row-wise, computed as ``exp(log_softmax(z / T))`` for stability."""
    from scipy.special import log_softmax

    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1))


# Within ``reuse_bins()``: results of top_label / assign_bins by the identity of their input array (the
# arrays are held here, so an id cannot be reused while the block lasts).
_MEMO: dict[tuple, tuple] | None = None


@contextmanager
def reuse_bins() -> Iterator[None]:
    """Within the block, :func:`top_label` and :func:`assign_bins` compute once per input array object (and
    bins, strategy): a suite that asks for several ECEs, MCEs, intervals and references of the same
    probabilities sorts them once per binning instead of once per call (equal-mass bins cost a stable sort
    of n values). The caller must not modify those arrays in place inside the block."""
    global _MEMO
    outer, _MEMO = _MEMO, {} if _MEMO is None else _MEMO
    try:
        yield
    finally:
        _MEMO = outer


def _memo(key: tuple, arr: np.ndarray, fn):
    if _MEMO is None:
        return fn()
    hit = _MEMO.get(key)
    if hit is None or hit[0] is not arr:
        hit = (arr, fn())
        _MEMO[key] = hit
    return hit[1]


def top_label(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, prediction)``: the largest probability of each row and its class (first on ties,
    like ``argmax`` of the logits)."""
    p = as_probs(probs)

    def compute() -> tuple[np.ndarray, np.ndarray]:
        pred = p.argmax(axis=1)
        return p[np.arange(len(p)), pred], pred

    return _memo(("top", id(p)), p, compute)


# ------------------------------------------------------------------------------------------- binning


def bin_edges(n_bins: int) -> np.ndarray:
    """Equal-width edges ``k / n_bins`` for k = 0..n_bins (each the double nearest the exact fraction)."""
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    return np.arange(n_bins + 1) / n_bins


def assign_bins(confidence: np.ndarray, n_bins: int = 15, strategy: Strategy = "uniform") -> np.ndarray:
    """Bin index of each confidence (see the module docstring for the conventions); works on any shape,
    and for ``strategy="quantile"`` ranks each column of a 2-D array separately (class-wise ECE)."""
    c = np.asarray(confidence, dtype=np.float64)
    return _memo(("bins", id(c), n_bins, strategy), c, lambda: _assign_bins(c, n_bins, strategy))


def _assign_bins(c: np.ndarray, n_bins: int, strategy: Strategy) -> np.ndarray:
    if strategy == "uniform":
        # side="left" counts the inner edges strictly below c: bins are (lo, hi], 0 goes to bin 0 and
        # 1.0 to bin M-1.
        return np.searchsorted(bin_edges(n_bins)[1:-1], c, side="left")
    if strategy == "quantile":
        if n_bins < 1:
            raise ValueError("n_bins must be >= 1")
        n = c.shape[0]
        if c.ndim == 1:
            order = np.argsort(c, kind="stable")
            ranks = np.empty(n, dtype=np.int64)
            ranks[order] = np.arange(n)
        else:  # each column sorted as a contiguous row of the transpose (a strided sort is several times slower)
            ct = np.ascontiguousarray(np.moveaxis(c, 0, -1))
            order = np.argsort(ct, axis=-1, kind="stable")
            ranks = np.empty_like(order)
            np.put_along_axis(ranks, order, np.broadcast_to(np.arange(n), order.shape), axis=-1)
            ranks = np.moveaxis(ranks, -1, 0)
        return (ranks * n_bins) // max(n, 1)
    raise ValueError(f"strategy must be 'uniform' or 'quantile', not {strategy!r}")


@dataclass
class ReliabilityBins:
    """Reliability-diagram data, one entry per bin (empty bins included, with NaN means)."""

    lower: np.ndarray            # bin's lower edge (uniform) or smallest confidence in it (quantile)
    upper: np.ndarray            # upper edge / largest confidence
    count: np.ndarray            # examples in the bin
    mean_confidence: np.ndarray  # mean predicted confidence in the bin
    accuracy: np.ndarray         # fraction of the bin's examples that are correct (or of class k)
    n: int
    strategy: str

    @property
    def gap(self) -> np.ndarray:
        """``accuracy - mean_confidence`` (positive: underconfident)."""
        return self.accuracy - self.mean_confidence

    @property
    def ece(self) -> float:
        """``sum_b (n_b / n) |acc_b - conf_b|``."""
        if self.n == 0:
            return float("nan")
        return float(np.nansum(self.count * np.abs(self.gap)) / self.n)

    @property
    def mce(self) -> float:
        """``max_b |acc_b - conf_b|`` over non-empty bins."""
        g = np.abs(self.gap[self.count > 0])
        return float(g.max()) if g.size else float("nan")


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15,
                     strategy: Strategy = "uniform") -> ReliabilityBins:
    """Per-bin count, mean confidence and accuracy of (confidence, 0/1 outcome) pairs.

    Three ``np.bincount`` calls over the bin index; the basis of ECE, MCE and the reliability diagram
    (DeGroot & Fienberg, 1983; Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, sec. 2).
    """
    c = np.asarray(confidence, dtype=np.float64)
    c = c if c.ndim == 1 else c.reshape(-1)  # the same object when 1-D, so reuse_bins() recognises it
    ok = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(c) != len(ok):
        raise ValueError("confidence and correct differ in length")
    idx = assign_bins(c, n_bins, strategy)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = np.bincount(idx, weights=c, minlength=n_bins) / count
        acc = np.bincount(idx, weights=ok, minlength=n_bins) / count
    if strategy == "uniform":
        edges = bin_edges(n_bins)
        lower, upper = edges[:-1].copy(), edges[1:].copy()
    else:
        lower = np.full(n_bins, np.nan)
        upper = np.full(n_bins, np.nan)
        np.fmin.at(lower, idx, c)
        np.fmax.at(upper, idx, c)
    return ReliabilityBins(lower, upper, count, mean_conf, acc, len(c), strategy)


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15,
                        strategy: Strategy = "uniform") -> ReliabilityBins:
    """Top-label reliability-diagram data: per bin of max-probability, the mean confidence and the
    accuracy of the argmax prediction (Guo et al., ICML 2017, fig. 1)."""
    p = as_probs(probs)
    y = _labels(labels, len(p), p.shape[1])
    conf, pred = top_label(p)
    return calibration_bins(conf, pred == y, n_bins, strategy)


def _classwise_sums(p: np.ndarray, y: np.ndarray, n_bins: int, strategy: Strategy
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (class, bin): count, sum of p_k and sum of 1[y == k], each (K, M); plus the bin index (n, K)."""
    n, k = p.shape
    idx = assign_bins(p, n_bins, strategy)                      # (n, K), each column binned on its own
    key = idx + (np.arange(k) * n_bins)[None, :]
    size = k * n_bins
    count = np.bincount(key.ravel(), minlength=size).reshape(k, n_bins)
    psum = np.bincount(key.ravel(), weights=p.ravel(), minlength=size).reshape(k, n_bins)
    # Only the true class's column carries a 1, so one entry per row suffices.
    hits = np.bincount(key[np.arange(n), y], minlength=size).reshape(k, n_bins)
    return count, psum, hits.astype(np.float64), idx


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, strategy: Strategy = "uniform",
        kind: Kind = "top_label") -> float:
    """Expected calibration error.

    Top-label (Guo et al., ICML 2017, eq. 3; Naeini et al., AAAI 2015)::

        ECE = sum_b (|B_b| / n) * | acc(B_b) - conf(B_b) |

    with B_b the examples whose max probability falls in bin b, acc the fraction whose argmax is the
    label and conf their mean max probability. Class-wise (Kull et al., "Beyond temperature scaling",
    NeurIPS 2019, sec. 3)::

        classwise-ECE = (1/K) sum_k sum_b (|B_kb| / n) * | mean_{i in B_kb} 1[y_i = k] - mean_{i in B_kb} p_ik |

    with B_kb the examples whose p_k falls in bin b. Binning: module docstring.
    """
    p = as_probs(probs)
    y = _labels(labels, len(p), p.shape[1])
    if len(p) == 0:
        return float("nan")
    if kind == "top_label":
        conf, pred = top_label(p)
        return calibration_bins(conf, pred == y, n_bins, strategy).ece
    if kind == "classwise":
        _, psum, hits, _ = _classwise_sums(p, y, n_bins, strategy)
        return float(np.abs(hits - psum).sum() / (len(p) * p.shape[1]))
    raise ValueError(f"kind must be 'top_label' or 'classwise', not {kind!r}")


def mce(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, strategy: Strategy = "uniform",
        kind: Kind = "top_label") -> float:
    """Maximum calibration error: ``max_b |acc(B_b) - conf(B_b)|`` over non-empty bins (Naeini, Cooper &
    Hauskrecht, "Obtaining well calibrated probabilities using Bayesian binning", AAAI 2015). Class-wise:
    the maximum over classes and bins. It is driven by the thinnest bin, so read it with the bin counts."""
    p = as_probs(probs)
    y = _labels(labels, len(p), p.shape[1])
    if kind == "top_label":
        conf, pred = top_label(p)
        return calibration_bins(conf, pred == y, n_bins, strategy).mce
    if kind == "classwise":
        count, psum, hits, _ = _classwise_sums(p, y, n_bins, strategy)
        nz = count > 0
        return float(np.max(np.abs(hits[nz] - psum[nz]) / count[nz])) if nz.any() else float("nan")
    raise ValueError(f"kind must be 'top_label' or 'classwise', not {kind!r}")


# ------------------------------------------------------------------------------------- proper scores


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass Brier score ``(1/n) sum_i sum_k (p_ik - 1[y_i = k])^2``, in [0, 2] (Brier, Monthly
    Weather Review 78, 1950). Equals ``sklearn.metrics.brier_score_loss(y, p, labels=range(K),
    scale_by_half=False)``; for a binary model scikit-learn's default (``scale_by_half="auto"``) reports
    half of it, the familiar ``mean (p_1 - y)^2``."""
    p = as_probs(probs)
    y = _labels(labels, len(p), p.shape[1])
    if len(p) == 0:
        return float("nan")
    # sum_k (p_k - e_y)^2 = sum_k p_k^2 - 2 p_y + 1: no one-hot matrix needed.
    return float(np.mean(np.einsum("ij,ij->i", p, p) - 2.0 * p[np.arange(len(p)), y] + 1.0))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Negative log-likelihood ``-(1/n) sum_i log p_{i, y_i}`` (natural log), with probabilities clipped to
    ``[eps, 1 - eps]`` (eps = float64 machine epsilon) exactly as ``sklearn.metrics.log_loss`` does, so one
    confident miss costs at most ``-log(eps)`` ~ 36 instead of infinity. Use :func:`nll_from_logits` when
    logits are available: it needs no clipping."""
    p = as_probs(probs)
    y = _labels(labels, len(p), p.shape[1])
    eps = np.finfo(np.float64).eps
    return float(-np.mean(np.log(np.clip(p[np.arange(len(p)), y], eps, 1.0 - eps))))


def nll_per_example(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``-log softmax(z_i / T)_{y_i} = logsumexp(z_i / T) - z_{i,y_i} / T`` for every example."""
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64) / temperature
    y = _labels(labels, len(z), z.shape[1])
    return logsumexp(z, axis=1) - z[np.arange(len(z)), y]


def nll_from_logits(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """``-(1/n) sum_i log softmax(z_i / T)_{y_i} = (1/n) sum_i [logsumexp(z_i / T) - z_{i,y_i} / T]``
    (cross-entropy; Guo et al., ICML 2017, sec. 4.2 for the temperature)."""
    return float(np.mean(nll_per_example(logits, labels, temperature)))


# ------------------------------------------------------------------------------ ECE interval, debiased


@dataclass
class ECEEstimate:
    """Plug-in ECE, its debiased version and an interval for the population's binned ECE."""

    ece: float           # the plug-in ECE (what :func:`ece` returns)
    debiased: float      # 2 * plug-in - mean of the posterior draws, at least 0
    ci_low: float
    ci_high: float
    n: int
    n_draws: int


def ece_estimate(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, strategy: Strategy = "uniform",
                 kind: Kind = "top_label", n_draws: int = 1000, rng: np.random.Generator | None = None,
                 confidence: float = 0.95) -> ECEEstimate:
    """ECE with a debiased estimate and an interval for the population ECE of the same bins.

    The plug-in ECE ``sum_b (n_b / n) |acc_b - conf_b|`` is biased upwards: noise in a bin's accuracy adds
    to |gap| on average (a perfectly calibrated model shows about 0.125 on 100 examples with 15 bins). Draws:
    the bin masses and accuracies from the posterior Dirichlet over the (bin, miss/hit) cells with one
    pseudo-example per non-empty bin split as its mean confidence (a prior that adds no gap of its own;
    :func:`audit.metrics.bootstrap.dirichlet_draws`; class-wise: one Dirichlet per class), the mean
    confidence of each bin held at its observed value, and
    ``ECE* = sum_b |hits*_b - n*_b conf_b| / n``. Then, with ``q_lo, q_hi`` the (1 -+ c)/2 quantiles of ECE*:

        debiased = max(0, 2 ECE - mean(ECE*))                   (bootstrap bias correction)
        interval = [max(0, 2 ECE - q_hi), max(2 ECE - q_lo, q_hi)]      (reverse percentile, upper end
                                                                          never below the percentile one)

    The bias correction is the one Kumar, Liang & Ma ("Verified uncertainty calibration", NeurIPS 2019,
    sec. 5) apply with a per-bin resample of the accuracies; the reverse-percentile interval (Davison &
    Hinkley, Bootstrap Methods and their Application, 1997, eq. 5.6) reflects the draws around the estimate,
    so the upward bias is subtracted rather than doubled as a percentile interval would do. The interval is
    for the population's binned ECE, so it may lie below the plug-in value; coverage is measured by
    bench/coverage.py. Bins are those of the data (equal-mass edges are not redrawn).
    """
    if rng is None:
        raise ValueError("ece_estimate needs a seeded numpy Generator (audit.seeding.rng)")
    from audit.metrics.bootstrap import dirichlet_draws, percentile_interval as _pct

    p = as_probs(probs)
    y = _labels(labels, len(p), p.shape[1])
    n = len(p)
    nan = float("nan")
    if n == 0:
        return ECEEstimate(nan, nan, nan, nan, 0, int(n_draws))
    if kind == "top_label":
        conf, pred = top_label(p)
        b = calibration_bins(conf, pred == y, n_bins, strategy)
        count = b.count[None, :].astype(np.float64)
        hits = np.nan_to_num(b.accuracy * b.count)[None, :]
        psum = np.nan_to_num(b.mean_confidence * b.count)[None, :]
        scale = float(n)
    elif kind == "classwise":
        count, psum, hits, _ = _classwise_sums(p, y, n_bins, strategy)
        count = count.astype(np.float64)
        scale = float(n * p.shape[1])
    else:
        raise ValueError(f"kind must be 'top_label' or 'classwise', not {kind!r}")
    plug = float(np.abs(hits - psum).sum() / scale)
    if n_draws <= 0:
        return ECEEstimate(plug, nan, nan, nan, n, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, psum / np.maximum(count, 1), 0.0)
    cells = np.stack([count - hits, hits], axis=-1)                       # (rows, bins, 2): misses, hits
    # prior: one pseudo-example per non-empty bin, split as the bin's own confidence (miss 1 - conf, hit conf),
    # so it adds no gap of its own (a flat 1/2, 1/2 would pull a 0.95-confidence bin towards 0.5)
    prior = np.where(count[..., None] > 0, np.stack([1.0 - mean_conf, mean_conf], axis=-1), 0.0)
    d = dirichlet_draws(cells, prior, int(n_draws), rng, axes=2)          # each row (class) sums to n
    ece_d = np.abs(d[..., 1] - d.sum(-1) * mean_conf[None]).sum((1, 2)) / scale
    q_lo, q_hi = _pct(ece_d, confidence)
    debiased = max(0.0, 2 * plug - float(ece_d.mean()))
    lo = max(0.0, 2 * plug - float(q_hi))
    # The reflected upper end alone is too low where the gaps are of the order of the noise (a true ECE of
    # 0.02-0.07 at n = 100-500: 88-92% coverage in bench/coverage.py), so the upper end is never below the
    # percentile upper end of the draws (which the upward bias makes conservative).
    hi = min(1.0, max(2 * plug - float(q_lo), float(q_hi), debiased))
    # At and near ECE = 0 the bias is a kink, not a slope, and the reflection removes only part of it; there
    # the interval reaches 0 whenever a perfectly calibrated model could have shown this ECE: hits drawn as
    # Binomial(n_b, conf_b) per bin (the consistency resampling of Brocker & Smith 2007, per bin), and 0 is
    # kept unless the plug-in ECE exceeds their 1 - (1 - c)/2 quantile (a test of ECE = 0 inverted).
    h0 = rng.binomial(count.astype(np.int64), np.clip(mean_conf, 0.0, 1.0), size=(int(n_draws),) + count.shape)
    ece0 = np.abs(h0 - psum[None]).sum((1, 2)) / scale
    if plug <= float(np.quantile(ece0, 1.0 - (1.0 - confidence) / 2)):
        lo = 0.0
    return ECEEstimate(plug, debiased, lo, hi, n, int(n_draws))


# ----------------------------------------------------------------------- perfectly calibrated reference


@dataclass
class CalibratedReference:
    """The ECE a perfectly calibrated model with these probabilities would show at this n."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_draws: int
    p_value: float | None       # P(reference ECE >= observed), if an observed ECE was given
    draws: np.ndarray           # (n_draws,) reference ECEs


def calibrated_reference(probs: np.ndarray, n_bins: int = 15, strategy: Strategy = "uniform",
                         kind: Kind = "top_label", n_draws: int = 1000,
                         rng: np.random.Generator | None = None, confidence: float = 0.95,
                         observed: float | None = None) -> CalibratedReference:
    """The ECE a perfectly calibrated model with these probabilities would show at this n, for one binning
    and kind: :func:`calibrated_references` with one entry (see there for the method and its accuracy)."""
    obs = None if observed is None else {(strategy, kind): observed}
    return calibrated_references(probs, n_bins, (strategy,), (kind,), n_draws, rng, confidence, obs)[(strategy, kind)]


def calibrated_references(probs: np.ndarray, n_bins: int = 15, strategies: tuple[Strategy, ...] = ("uniform",),
                          kinds: tuple[Kind, ...] = ("top_label",), n_draws: int = 1000,
                          rng: np.random.Generator | None = None, confidence: float = 0.95,
                          observed: dict[tuple[str, str], float] | None = None
                          ) -> dict[tuple[str, str], CalibratedReference]:
    """Consistency resampling (Brocker & Smith, "Increasing the reliability of reliability diagrams",
    Weather and Forecasting 22, 2007): labels drawn from the model's own probabilities ``y*_i ~
    Categorical(p_i)``, for which the model is perfectly calibrated by construction, ``n_draws`` times; the
    ECE of each draw shows how large ECE is from sampling noise alone at this n. One entry per (strategy,
    kind): the mean, the percentile interval at ``confidence`` and, with ``observed[(strategy, kind)]``, the
    one-sided p-value ``(1 + #{ECE* >= observed}) / (1 + n_draws)``.

    Drawn from per-cell sums, not per row. The ECE of a draw depends on the labels only through the number
    of hits in each bin, and the rows of a bin are independent, so that number is a Poisson-binomial sum of
    Bernoulli(p_i) over the bin's rows; each is drawn from its exact distribution
    (:func:`audit.metrics.poisson_binomial.poisson_binomial_draws`: FFT product of the generating
    functions, inverse-CDF sampling; at most ~1e-10 total spurious mass, no normal approximation). All requested binnings
    and kinds share one draw: every row's outcome is routed to a joint cell (the tuple of its bins under
    every requested binning and kind), whose hits are drawn once and summed into each ECE's bins.

    - Binary (K = 2): exact. The only randomness of a row is 1[y* = 1] ~ Bernoulli(p_i1): its class-1 bin
      gets that hit, its class-0 bin the complement, its top-label bin the hit if it predicts 1 and the
      complement otherwise. So top-label and class-wise come from one draw with their true dependence.
    - Multiclass, top-label: exact (correct_i ~ Bernoulli(max_k p_ik): the unit of class pred_i).
    - Multiclass, class-wise: still one label per row per draw (:func:`_classwise_per_row`), in chunks of
      at most ``_CHUNK_ELEMENTS`` (draws x rows x classes) so memory stays bounded; its time grows with
      n x K x draws. Why: one row's K indicators sum to 1, so the (class, bin) cells of different classes
      are dependent, and drawing them as independent Poisson-binomials keeps each cell's marginal and the
      reference's mean but not its spread: on rows split between two of three classes the standard
      deviation of the class-wise ECE came out 17% too small (0.0080 vs 0.0096 at n = 300; measured
      against the per-row draw, tests/test_calibrated_reference.py), which would move the reference's
      upper end and with it the "beyond noise" verdict.

    Cost of the cell path: O(n K log^2 n + n_draws x cells) once for all its entries, memory O(n K + n_draws
    x cells), never rows x draws (the per-row draw it replaces was 2/3 of a 1M-row binary audit).
    """
    if rng is None:
        raise ValueError("calibrated_reference needs a seeded numpy Generator (audit.seeding.rng)")
    for st in strategies:
        if st not in ("uniform", "quantile"):
            raise ValueError(f"strategy must be 'uniform' or 'quantile', not {st!r}")
    for kd in kinds:
        if kd not in ("top_label", "classwise"):
            raise ValueError(f"kind must be 'top_label' or 'classwise', not {kd!r}")
    p = as_probs(probs)
    n, k = p.shape
    n_draws = int(n_draws)
    wanted_all = [(st, kd) for st in strategies for kd in kinds]
    # multiclass class-wise: per-row draws (exact), see the docstring
    wanted = [w for w in wanted_all if k == 2 or w[1] == "top_label"]
    if n == 0:
        nan = float("nan")
        return {w: CalibratedReference(nan, nan, nan, 0, n_draws, None, np.full(n_draws, np.nan)) for w in wanted_all}
    conf, pred = top_label(p)
    top_bins = {st: assign_bins(conf, n_bins, st) for st in strategies if "top_label" in kinds}
    cls_bins = {st: assign_bins(p, n_bins, st) for st in strategies if "classwise" in kinds}   # (n, K)
    draws_of: dict[tuple[str, str], np.ndarray] = {}
    if wanted:
        draws_of.update(_reference_from_cells(p, conf, pred, top_bins, cls_bins, wanted, n_bins, n_draws, rng))
    for st, kd in wanted_all:
        if (st, kd) not in draws_of:
            draws_of[(st, kd)] = _classwise_per_row(p, cls_bins[st], n_bins, n_draws, rng)
    out = {}
    for w in wanted_all:
        d = draws_of[w]
        lo, hi = percentile_interval(d, confidence)
        obs = None if observed is None else observed.get(w)
        # ECE takes few distinct values for a confident model, and the observed one and the draw equal to it
        # are computed along different paths: they differ in the last bits. A strict >= would then count a
        # tie as smaller (measured: p understated by up to 0.4 on confident binary models), so ties within
        # float rounding count as reaching the observed value.
        pv = None if obs is None else float((1 + np.sum(d >= obs - ECE_TIE * max(1.0, abs(obs)))) / (1 + n_draws))
        out[w] = CalibratedReference(float(d.mean()), float(lo), float(hi), n, n_draws, pv, d)
    return out


# Two ECE values this close are equal up to float rounding (each is a sum of at most n_bins terms).
ECE_TIE = 1e-9

# Cap on the number of elements of a temporary array in the per-row multiclass class-wise reference
# (draws x rows x classes; about 80 MB of float64).
_CHUNK_ELEMENTS = 10_000_000


def _classwise_per_row(p: np.ndarray, bins: np.ndarray, n_bins: int, n_draws: int, rng: np.random.Generator
                       ) -> np.ndarray:
    """Class-wise reference ECEs from one label per row per draw, y* by inverse-CDF sampling of each row's
    probabilities; chunks of draws keep every temporary array under ``_CHUNK_ELEMENTS`` elements."""
    n, k = p.shape
    idx = bins + (np.arange(k) * n_bins)[None, :]                              # (n, K)
    size = k * n_bins
    p_sum = np.bincount(idx.ravel(), weights=p.ravel(), minlength=size)
    cum = np.cumsum(p, axis=1)
    cum[:, -1] = np.inf  # rows summing to 1 - 1e-16 must still give a class
    step = max(1, _CHUNK_ELEMENTS // (n * k))
    rows = np.arange(n)
    draws = np.empty(n_draws)
    for s in range(0, n_draws, step):
        b = min(step, n_draws - s)
        u = rng.random((b, n, 1))
        ystar = (u >= cum[None]).sum(-1)
        key = np.arange(b)[:, None] * size + idx[rows[None, :], ystar]
        hits = np.bincount(key.ravel(), minlength=b * size).reshape(b, size)
        draws[s:s + b] = np.abs(hits - p_sum).sum(1) / (n * k)
    return draws


def _reference_from_cells(p: np.ndarray, conf: np.ndarray, pred: np.ndarray, top_bins: dict, cls_bins: dict,
                          wanted: list[tuple[str, str]], n_bins: int, n_draws: int, rng: np.random.Generator
                          ) -> dict[tuple[str, str], np.ndarray]:
    """Reference ECE draws of the entries ``wanted`` (binary: any; multiclass: top-label) from one draw of
    Poisson-binomial counts per joint cell (see :func:`calibrated_references`)."""
    from audit.metrics.poisson_binomial import poisson_binomial_draws

    n, k = p.shape

    # Units: the Bernoulli variables, one per row. Binary: 1[y* = 1]; multiclass (top-label only):
    # 1[y* = pred], i.e. correct_i ~ Bernoulli(max_k p_ik).
    binary = k == 2
    rows = np.arange(n)
    cls = np.ones(n, dtype=np.int64) if binary else pred
    q = p[rows, cls]
    sizes = [n_bins if kd == "top_label" else k * n_bins for _, kd in wanted]

    def columns(sel: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Per entry, per side: the target cell of the units ``sel`` (-1: the unit does not count there) and
        its sign (+1: the target's hits gain X; -1: they gain 1 - X). Target cells are numbered per entry."""
        out = []
        for st, kd in wanted:
            if kd == "top_label":
                b = top_bins[st][sel]
                out.append([(b, np.where(pred[sel] == 1, 1, -1) if binary else np.ones(len(b), np.int64))])
            elif binary:   # class 1's bin (numbered after class 0's) gets X; class 0's bin gets 1 - X
                out.append([(cls_bins[st][sel, 0], np.full(len(sel), -1, np.int64)),
                            (cls_bins[st][sel, 1] + n_bins, np.ones(len(sel), np.int64))])
            else:  # not reached: multiclass class-wise is drawn per row
                raise AssertionError("multiclass class-wise entries take the per-row path")
        return out

    # The joint cell of every unit: all its columns as one mixed-radix integer, built a column at a time (no
    # units x columns matrix) and compacted with np.unique whenever the radix product nears int64's range,
    # so it is exact for any number of bins.
    key = np.zeros(n, dtype=np.int64)
    mult = 1
    for entry in columns(rows):
        for pair in entry:
            for col in pair:
                v = col.astype(np.int64) + 1                                  # 0 .. radix - 1
                r = int(v.max()) + 1 if len(v) else 1
                if mult * r >= 2**62:
                    key = np.unique(key, return_inverse=True)[1].reshape(-1).astype(np.int64)
                    mult = int(key.max()) + 1
                key += v * mult
                mult *= r
    _, rep, cell = np.unique(key, return_index=True, return_inverse=True)
    del key
    cell = cell.reshape(-1)
    n_cells = len(rep)
    per_cell = columns(rep)                           # each joint cell's columns, read from one of its units
    cell_count = np.bincount(cell, minlength=n_cells)
    x = poisson_binomial_draws(q, cell, n_cells, n_draws, rng).astype(np.float64)   # (n_draws, n_cells)
    draws_of: dict[tuple[str, str], np.ndarray] = {}
    for (st, kd), entry, size in zip(wanted, per_cell, sizes):
        hits = np.zeros((n_draws, size))
        for tc, sc in entry:
            use = tc >= 0
            contrib = np.where(sc[use] > 0, x[:, use], cell_count[use] - x[:, use])
            # sum the joint cells into the entry's bins: one (cells x bins) 0/1 matrix product
            onehot = np.zeros((int(use.sum()), size))
            onehot[np.arange(int(use.sum())), tc[use]] = 1.0
            hits += contrib @ onehot
        if kd == "top_label":
            psum = np.bincount(top_bins[st], weights=conf, minlength=n_bins)
            scale = float(n)
        else:
            key = cls_bins[st] + (np.arange(k) * n_bins)[None, :]
            psum = np.bincount(key.ravel(), weights=p.ravel(), minlength=k * n_bins)
            scale = float(n * k)
        draws_of[(st, kd)] = np.abs(hits - psum[None, :]).sum(1) / scale
    return draws_of


# ------------------------------------------------------------------------------- temperature scaling


TEMPERATURE_BOUNDS = (1e-2, 1e2)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = TEMPERATURE_BOUNDS
                    ) -> float:
    """The temperature ``T > 0`` minimising ``NLL(softmax(z / T), y)`` (Guo et al., "On Calibration of
    Modern Neural Networks", ICML 2017, sec. 4.2).

    Searched over ``log T`` with ``scipy.optimize.minimize_scalar(method="bounded")`` within ``bounds``
    (NLL is smooth and unimodal in log T for non-degenerate data; a T at a bound means the data asked for
    more than the bounds allow: e.g. every example correct pushes T -> 0).
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64)
    y = _labels(labels, len(z), z.shape[1])
    if len(z) == 0:
        raise ValueError("cannot fit a temperature on no examples")
    zy = z[np.arange(len(z)), y]

    def objective(log_t: float) -> float:
        t = np.exp(log_t)
        return float(np.mean(logsumexp(z / t, axis=1) - zy / t))

    res = minimize_scalar(objective, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-7})
    return float(np.exp(res.x))


@dataclass
class TemperatureDiagnostic:
    """Temperature scaling fitted on one split, judged on the other (before / after)."""

    temperature: float
    n_fit: int
    n_eval: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    brier_before: float
    brier_after: float


def temperature_scaling_diagnostic(logits: np.ndarray, labels: np.ndarray, *, fit_fraction: float = 0.5,
                                   rng: np.random.Generator | None = None,
                                   fit_mask: np.ndarray | None = None, n_bins: int = 15,
                                   strategy: Strategy = "uniform") -> TemperatureDiagnostic:
    """Fit T on a fit split and report top-label ECE, NLL and Brier on the disjoint evaluation split
    before (T = 1) and after (T fitted). A large improvement says the model's ranking is fine but its
    confidences are mis-scaled (Guo et al., ICML 2017).

    The split is ``fit_mask`` (bool, True = fit; the rest is evaluated) or else a seeded random
    permutation whose first ``round(fit_fraction * n)`` examples fit T.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = _labels(labels, len(z), z.shape[1])
    n = len(z)
    if fit_mask is None:
        if rng is None:
            raise ValueError("a random split needs a seeded numpy Generator (audit.seeding.rng)")
        if not 0.0 < fit_fraction < 1.0:
            raise ValueError("fit_fraction must lie in (0, 1)")
        fit_mask = np.zeros(n, dtype=bool)
        fit_mask[rng.permutation(n)[:int(round(fit_fraction * n))]] = True
    fit_mask = np.asarray(fit_mask, dtype=bool)
    if fit_mask.shape != (n,):
        raise ValueError("fit_mask must be a boolean array with one entry per example")
    ev = ~fit_mask
    if not fit_mask.any() or not ev.any():
        raise ValueError("both the fit and the evaluation split need examples")
    t = fit_temperature(z[fit_mask], y[fit_mask])
    z_ev, y_ev = z[ev], y[ev]
    p0, p1 = softmax(z_ev), softmax(z_ev, t)
    return TemperatureDiagnostic(
        temperature=t, n_fit=int(fit_mask.sum()), n_eval=int(ev.sum()),
        ece_before=ece(p0, y_ev, n_bins, strategy), ece_after=ece(p1, y_ev, n_bins, strategy),
        nll_before=nll_from_logits(z_ev, y_ev), nll_after=nll_from_logits(z_ev, y_ev, t),
        brier_before=brier_score(p0, y_ev), brier_after=brier_score(p1, y_ev))


__all__ = [
    "as_probs", "softmax", "top_label", "bin_edges", "assign_bins", "ReliabilityBins", "calibration_bins",
    "reliability_diagram", "ece", "mce", "brier_score", "nll", "nll_from_logits", "CalibratedReference",
    "calibrated_reference", "calibrated_references", "fit_temperature", "TemperatureDiagnostic", "temperature_scaling_diagnostic",
]
