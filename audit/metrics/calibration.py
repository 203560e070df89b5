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

from dataclasses import dataclass
from typing import Literal

import numpy as np

from audit.metrics.bootstrap import percentile_interval

Strategy = Literal["uniform", "quantile"]
Kind = Literal["top_label", "classwise"]

# Cap on the number of elements of a temporary array in the Monte-Carlo reference (about 80 MB of int64).
_CHUNK_ELEMENTS = 10_000_000


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


def top_label(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, prediction)``: the largest probability of each row and its class (first on ties,
    like ``argmax`` of the logits)."""
    p = as_probs(probs)
    pred = p.argmax(axis=1)
    return p[np.arange(len(p)), pred], pred


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
    if strategy == "uniform":
        # side="left" counts the inner edges strictly below c: bins are (lo, hi], 0 goes to bin 0 and
        # 1.0 to bin M-1.
        return np.searchsorted(bin_edges(n_bins)[1:-1], c, side="left")
    if strategy == "quantile":
        if n_bins < 1:
            raise ValueError("n_bins must be >= 1")
        n = c.shape[0]
        order = np.argsort(c, axis=0, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(n).reshape((n,) + (1,) * (c.ndim - 1)), axis=0)
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
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
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
    """Consistency resampling: draw labels from the model's own probabilities ``y*_i ~ Categorical(p_i)``
    ``n_draws`` times and compute the ECE of each draw; the model is perfectly calibrated for those labels
    by construction, so the draws show how large ECE is from sampling noise alone at this n (Brocker &
    Smith, "Increasing the reliability of reliability diagrams", Weather and Forecasting 22, 2007).

    Returns the mean, the percentile interval at ``confidence`` and, with ``observed``, the one-sided
    p-value ``(1 + #{ECE* >= observed}) / (1 + n_draws)``. Bins depend only on the probabilities, so they
    are computed once; each draw is a set of bincounts (top-label: correct_i ~ Bernoulli(max_k p_ik), since
    P(y* = argmax) = max_k p_ik).
    """
    if rng is None:
        raise ValueError("calibrated_reference needs a seeded numpy Generator (audit.seeding.rng)")
    p = as_probs(probs)
    n, k = p.shape
    if n == 0:
        nan = float("nan")
        return CalibratedReference(nan, nan, nan, 0, int(n_draws), None, np.full(n_draws, np.nan))
    draws = np.empty(int(n_draws))
    if kind == "top_label":
        conf, _ = top_label(p)
        idx = assign_bins(conf, n_bins, strategy)
        conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
        step = max(1, _CHUNK_ELEMENTS // n)
        for s in range(0, n_draws, step):  # chunks of draws, to bound memory; each chunk is vectorised
            b = min(step, n_draws - s)
            hit = rng.random((b, n)) < conf
            key = (np.arange(b)[:, None] * n_bins + idx[None, :])[hit]
            acc_sum = np.bincount(key, minlength=b * n_bins).reshape(b, n_bins)
            draws[s:s + b] = np.abs(acc_sum - conf_sum).sum(1) / n
    elif kind == "classwise":
        idx = assign_bins(p, n_bins, strategy) + (np.arange(k) * n_bins)[None, :]   # (n, K)
        size = k * n_bins
        p_sum = np.bincount(idx.ravel(), weights=p.ravel(), minlength=size)
        cum = np.cumsum(p, axis=1)
        cum[:, -1] = np.inf  # rows summing to 1 - 1e-16 must still give a class
        step = max(1, _CHUNK_ELEMENTS // (n * k))
        rows = np.arange(n)
        for s in range(0, n_draws, step):
            b = min(step, n_draws - s)
            u = rng.random((b, n, 1))
            ystar = (u >= cum[None]).sum(-1)                                  # inverse-CDF sampling
            key = np.arange(b)[:, None] * size + idx[rows[None, :], ystar]
            hits = np.bincount(key.ravel(), minlength=b * size).reshape(b, size)
            draws[s:s + b] = np.abs(hits - p_sum).sum(1) / (n * k)
    else:
        raise ValueError(f"kind must be 'top_label' or 'classwise', not {kind!r}")
    lo, hi = percentile_interval(draws, confidence)
    pv = None if observed is None else float((1 + np.sum(draws >= observed)) / (1 + n_draws))
    return CalibratedReference(float(draws.mean()), float(lo), float(hi), n, int(n_draws), pv, draws)


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
    "calibrated_reference", "fit_temperature", "TemperatureDiagnostic", "temperature_scaling_diagnostic",
]
