"""Group fairness metrics from per-group confusion counts.

Everything here is a function of one integer array, ``counts[..., g, c]``: the confusion counts of group
``g``, with the cell index ``c = 2*y + yhat`` on the binarised label and prediction::

    c = 0  TN (y=0, yhat=0)     c = 1  FP (y=0, yhat=1)
    c = 2  FN (y=1, yhat=0)     c = 3  TP (y=1, yhat=1)

which is the order of ``sklearn.metrics.confusion_matrix(y, yhat, labels=[neg, pos]).ravel()``. The counts
come from one ``np.bincount`` over the rows; after that no function touches rows again. Counts add across
shards, so a distributed run sums each rank's counts and calls :func:`fairness_from_counts` once.

Conventions (the report should say them):

- Undefined ratios (0/0: a TPR in a group with no positives, a precision in a group with no positive
  predictions, any rate of an empty group) are NaN, never 0. Fairlearn (via scikit-learn's
  ``confusion_matrix(normalize="true")`` and ``zero_division`` defaults) reports 0 there instead, which
  silently makes such a group the worst one in every difference and ratio.
- Disparities are computed over every group whose value is defined (present and not 0/0), small or not,
  like fairlearn's ``between_groups``. Groups left out for being undefined are listed; a disparity whose
  groups include one whose metric rests on fewer than ``min_group_size`` examples (the metric's own
  denominator: all rows for a selection rate, positives for a TPR, negatives for an FPR, positive
  predictions for a precision) says so, and the caller makes its gate inconclusive.
- Intervals are stratified by group and boundary-safe: each group's four cells are drawn from the
  posterior Dirichlet(counts_g + 1/2) scaled to n_g (:func:`posterior_group_counts`; a Bayesian bootstrap
  with the Jeffreys prior), so group sizes are fixed at their observed values (they are ancillary for the
  rates), no group vanishes from a draw, and a rate observed at exactly 0 or 1 still varies across draws
  as much as its denominator allows. The multinomial bootstrap (:func:`bootstrap_group_counts`) puts every
  replicate of such a rate at the boundary, and every interval built from it then collapses (TPR 60/60 in
  two groups: an equal-opportunity interval of [0, 0]). All B x G draws are one Gamma call.
- An undefined rate in a present group (no positives for a TPR) leaves that group out of the disparity,
  which can only make it look smaller; :func:`undefined_rates` names such groups and the suite makes the
  disparity's gates inconclusive.
- Intervals for disparities. A max-minus-min over groups is not a smooth function of the group rates, and
  its bootstrap distribution is shifted upwards: with 24 groups of 100 rows and equal true rates, the
  median replicate lies well above the point estimate, and in about half of such datasets even the 2.5%
  quantile does, so a percentile interval (fairlearn's ``difference_ci``, or ours with
  ``interval="percentile"``) often excludes the estimate and practically always the true value 0
  (tests/test_metrics_fairness.py shows it; the bootstrap is inconsistent for functions that are only
  directionally differentiable, like a max at ties: Andrews, Econometrica 2000; Fang & Santos, Review of
  Economic Studies 2019). Stratification does not cure this. The default ``interval="simultaneous"``
  instead: with two groups, takes the interval of their one difference (or log ratio) from the same draws
  and projects it onto |d| (:func:`pairwise_disparity_interval`), which is as wide as a plain interval of
  a difference; with three or more, builds a simultaneous 95% band for the group rates and projects it
  onto the disparity (its smallest and largest value over the band's box), which is conservative (about
  1.5-2.6 times the needed width; a band over all pairs would be tighter but needs far more draws than
  pairs to find its level). Both contain the point estimate and cover the true disparity whenever the
  band covers. Coverage and widths of both: bench/coverage.py, BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from audit.metrics.bootstrap import dirichlet_draws, percentile_interval, posterior_interval, widen_to_exact


CELLS: tuple[str, ...] = ("tn", "fp", "fn", "tp")
RATES: tuple[str, ...] = ("selection_rate", "accuracy", "tpr", "fpr", "fnr", "precision", "fdr", "for",
                          "base_rate")
DISPARITIES: tuple[str, ...] = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "equal_opportunity_difference",
    "predictive_parity_difference",
    "disparate_impact_ratio",
)

Reference = int | Literal["largest", "highest"]
IntervalMethod = Literal["simultaneous", "percentile"]


# --------------------------------------------------------------------------------------------- counts


def binarize(labels: np.ndarray, pos_label: int = 1) -> np.ndarray:
    """One-vs-rest indicator ``labels == pos_label`` (bool).

    A multiclass task is audited for one named class at a time; a binary task passes its positive class.
    """
    return np.asarray(labels) == pos_label


def _factorize(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(col, return_inverse=True)``; for integer codes in a compact range by a bincount and a
    lookup table (O(n), no sort), which is what attributes stored as category codes look like."""
    col = col.reshape(-1)
    if col.dtype.kind in "iub" and col.size:
        lo, hi = int(col.min()), int(col.max())
        if hi - lo <= 4 * col.size + 1024 and -2**62 < lo and hi < 2**62:
            shifted = col.astype(np.int64, copy=False)
            if lo:
                shifted = shifted - lo
            seen = np.bincount(shifted, minlength=hi - lo + 1) > 0
            levels = (np.flatnonzero(seen) + lo).astype(col.dtype)
            if seen.all():          # already codes 0..L-1 (shifted): they are their own inverse
                return levels, shifted
            return levels, (np.cumsum(seen) - 1)[shifted]
    u, inv = np.unique(col, return_inverse=True)
    return u, inv.reshape(-1).astype(np.int64)


def intersect_groups(*columns: np.ndarray) -> tuple[np.ndarray, int, list[tuple]]:
    """Intersectional group codes for one or more sensitive attributes.

    Each column's levels are its sorted unique values; the code of a row is its mixed-radix position in the
    Cartesian product of the levels (first column slowest), so empty combinations keep a code (n = 0). This
    is the order of ``pandas.MultiIndex.from_product([np.unique(c) for c in columns])``, which is how
    fairlearn's ``MetricFrame.by_group`` indexes several sensitive features.

    Returns ``(codes, n_groups, levels)`` where ``levels[g]`` is the tuple of attribute values of group g.
    """
    if not columns:
        raise ValueError("intersect_groups needs at least one column")
    codes = np.zeros(len(columns[0]), dtype=np.int64)
    uniques = []
    for col in columns:
        u, inv = _factorize(np.asarray(col))
        if len(inv) != len(codes):
            raise ValueError("sensitive attribute columns differ in length")
        codes *= len(u)
        codes += inv  # codes is ours; inv may be the caller's own column (fast path) and is only read
        uniques.append(u)
    n_groups = int(np.prod([len(u) for u in uniques]))
    grids = np.meshgrid(*uniques, indexing="ij")
    levels = list(zip(*(g.ravel().tolist() for g in grids)))
    return codes, n_groups, levels


def group_confusion(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, n_groups: int,
                    pos_label: int = 1) -> np.ndarray:
    """Per-group binary confusion counts, shape ``(n_groups, 4)``, cells ``(tn, fp, fn, tp)``.

    ``counts[g, 2*y + yhat] = #{i : group_i = g, y_i = y, yhat_i = yhat}`` with ``y = 1[y_true == pos_label]``
    and ``yhat = 1[y_pred == pos_label]``, computed by one ``np.bincount`` over ``4*g + 2*y + yhat``.
    Reference: the same cells as ``sklearn.metrics.confusion_matrix(..., labels=[neg, pos]).ravel()``.
    """
    groups = np.asarray(groups)
    y = binarize(y_true, pos_label)
    yhat = binarize(y_pred, pos_label)
    if not (len(groups) == len(y) == len(yhat)):
        raise ValueError(f"y_true, y_pred and groups differ in length ({len(y)}, {len(yhat)}, {len(groups)})")
    if groups.size and (groups.min() < 0 or groups.max() >= n_groups):
        raise ValueError(f"group codes must lie in 0..{n_groups - 1}")
    # In-place arithmetic keeps this to one int64 temporary on a million rows.
    key = groups.astype(np.int64, copy=True)
    key *= 4
    key += y * 2
    key += yhat
    return np.bincount(key, minlength=4 * n_groups).reshape(n_groups, 4)


# ---------------------------------------------------------------------------------------- group rates


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.true_divide(a, b)


def group_rates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group rates from confusion counts of shape ``(..., G, 4)``; any leading axes (e.g. bootstrap
    replicates) are kept.

    With ``n = tn+fp+fn+tp``::

        selection_rate = (fp+tp)/n      accuracy = (tn+tp)/n       base_rate = (fn+tp)/n
        tpr = tp/(tp+fn)   fnr = fn/(tp+fn)   fpr = fp/(fp+tn)
        precision = tp/(tp+fp)   fdr = fp/(tp+fp)   for = fn/(fn+tn)   (false omission rate)

    0/0 is NaN (undefined), not 0. Also returns ``n`` (float). Reference: fairlearn.metrics
    (selection_rate, true_positive_rate, false_positive_rate, false_negative_rate) and
    sklearn.metrics.precision_score / accuracy_score, which agree wherever the ratio is defined.
    """
    c = np.asarray(counts, dtype=np.float64)
    tn, fp, fn, tp = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    n = tn + fp + fn + tp
    pos, neg, ppos, pneg = tp + fn, fp + tn, tp + fp, fn + tn
    return {
        "n": n,
        "selection_rate": _div(ppos, n),
        "accuracy": _div(tn + tp, n),
        "tpr": _div(tp, pos),
        "fpr": _div(fp, neg),
        "fnr": _div(fn, pos),
        "precision": _div(tp, ppos),
        "fdr": _div(fp, ppos),
        "for": _div(fn, pneg),
        "base_rate": _div(pos, n),
    }


def rate_denominators(counts: np.ndarray) -> dict[str, np.ndarray]:
    """The number of examples each per-group rate rests on (its denominator), shape ``(..., G)``.

    Used to decide whether a rate is too thin to gate on: a TPR rests on the group's positives, not on
    all its rows.
    """
    c = np.asarray(counts, dtype=np.int64)
    tn, fp, fn, tp = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    n = tn + fp + fn + tp
    return {"selection_rate": n, "accuracy": n, "base_rate": n, "tpr": tp + fn, "fnr": tp + fn,
            "fpr": fp + tn, "precision": tp + fp, "fdr": tp + fp, "for": fn + tn}


# ---------------------------------------------------------------------------------------- disparities


def _nanmax(x: np.ndarray) -> np.ndarray:
    # fmax ignores NaN (all-NaN gives NaN) without the all-NaN RuntimeWarning of np.nanmax.
    return np.fmax.reduce(x, axis=-1)


def _nanmin(x: np.ndarray) -> np.ndarray:
    return np.fmin.reduce(x, axis=-1)


def range_difference(x: np.ndarray) -> np.ndarray:
    """``max_g x_g - min_g x_g`` over the last axis, NaN entries ignored (all NaN gives NaN).

    Reference: fairlearn ``MetricFrame.difference(method="between_groups")`` (pandas max/min skip NaN).
    """
    return _nanmax(x) - _nanmin(x)


def range_ratio(x: np.ndarray) -> np.ndarray:
    """``min_g x_g / max_g x_g`` over the last axis, NaN entries ignored; 0/0 is NaN.

    Reference: fairlearn ``MetricFrame.ratio(method="between_groups")``.
    """
    return _div(_nanmin(x), _nanmax(x))


def reference_group(counts: np.ndarray, reference: Reference = "highest") -> int:
    """A comparison group: an explicit code, the largest group (most rows), or the group with the highest
    selection rate (the four-fifths rule's reference, 29 CFR 1607.4(D), which :class:`FourFifths` always
    uses). Ties go to the lowest code."""
    c = np.asarray(counts)
    if isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
        if not 0 <= int(reference) < c.shape[-2]:
            raise ValueError(f"reference group {reference} is not in 0..{c.shape[-2] - 1}")
        return int(reference)
    if reference == "largest":
        return int(np.argmax(c.sum(-1)))
    if reference == "highest":
        sr = group_rates(c)["selection_rate"]
        if np.all(np.isnan(sr)):
            raise ValueError("no group has any rows")
        return int(np.nanargmax(sr))
    raise ValueError(f"reference must be a group code, 'largest' or 'highest', not {reference!r}")


def disparate_impact_ratios(selection_rate: np.ndarray, reference: int) -> np.ndarray:
    """Selection-rate ratio of each group to the reference group, ``sr_g / sr_ref``, shape ``(..., G)``.

    The four-fifths rule (29 CFR 1607.4(D)) flags adverse impact when a group's ratio is below 0.8.
    """
    sr = np.asarray(selection_rate, dtype=np.float64)
    return _div(sr, sr[..., reference:reference + 1])


def disparate_impact_min_ratio(selection_rate: np.ndarray) -> np.ndarray:
    """The four-fifths statistic: ``min_g SR_g / max_g SR_g`` (NaN rates ignored; 0/0 is NaN), the ratio of
    each group's selection rate to the group with the highest one, at its smallest.

    EEOC Uniform Guidelines, 29 CFR 1607.4(D): "A selection rate for any race, sex, or ethnic group which
    is less than four-fifths (4/5) (or eighty percent) of the rate for the group with the highest rate will
    generally be regarded ... as evidence of adverse impact". Against another reference (e.g. the largest
    group, ratios capped at 1) adverse impact against the reference itself cannot show: a majority selected
    at 0.32 beside a minority at 0.62 would read 1.0. Equals fairlearn's ``demographic_parity_ratio``.
    """
    return range_ratio(np.asarray(selection_rate, dtype=np.float64))


def disparities(rates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every disparity from per-group rates of shape ``(..., G)`` (leading axes kept).

    - demographic_parity_difference = max_g SR_g - min_g SR_g; ratio = min_g SR_g / max_g SR_g
      (fairlearn ``demographic_parity_difference`` / ``demographic_parity_ratio``);
    - equalized_odds_difference = max(TPR difference, FPR difference); ratio = min(TPR ratio, FPR ratio)
      (fairlearn ``equalized_odds_difference`` / ``equalized_odds_ratio`` with ``agg="worst_case"``;
      Hardt, Price & Srebro, 2016);
    - equal_opportunity_difference = max_g TPR_g - min_g TPR_g (fairlearn ``equal_opportunity_difference``);
    - predictive_parity_difference = max_g PPV_g - min_g PPV_g (Chouldechova, 2017);
    - disparate_impact_ratio = min_g SR_g / max_g SR_g (four-fifths rule against the group with the highest
      selection rate, 29 CFR 1607.4(D); equal to the demographic parity ratio).

    Groups whose rate is NaN (empty, or 0/0) are ignored.
    """
    sr, tpr, fpr, ppv = rates["selection_rate"], rates["tpr"], rates["fpr"], rates["precision"]
    d_tpr, d_fpr = range_difference(tpr), range_difference(fpr)
    r_tpr, r_fpr = range_ratio(tpr), range_ratio(fpr)
    # fairlearn takes max()/min() of a pandas Series, which skips a NaN component; fmax/fmin do the same.
    return {
        "demographic_parity_difference": range_difference(sr),
        "demographic_parity_ratio": range_ratio(sr),
        "equalized_odds_difference": np.fmax(d_tpr, d_fpr),
        "equalized_odds_ratio": np.fmin(r_tpr, r_fpr),
        "equal_opportunity_difference": d_tpr,
        "predictive_parity_difference": range_difference(ppv),
        "disparate_impact_ratio": disparate_impact_min_ratio(sr),
    }


# Which per-group rates each disparity is a function of (its simultaneous band is calibrated jointly
# over exactly these columns, so the projection keeps its coverage).
_DEPENDS: dict[str, tuple[str, ...]] = {
    "demographic_parity_difference": ("selection_rate",),
    "demographic_parity_ratio": ("selection_rate",),
    "equalized_odds_difference": ("tpr", "fpr"),
    "equalized_odds_ratio": ("tpr", "fpr"),
    "equal_opportunity_difference": ("tpr",),
    "predictive_parity_difference": ("precision",),
    "disparate_impact_ratio": ("selection_rate",),
}


# ------------------------------------------------------------------------------------------ bootstrap


def bootstrap_group_counts(counts: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified bootstrap replicates of per-group confusion counts, shape ``(n_boot, G, 4)``.

    Resampling n_g rows with replacement inside group g makes its cells Multinomial(n_g, counts_g / n_g);
    groups are independent. One ``rng.multinomial`` call draws all B x G tables (Efron & Tibshirani,
    An Introduction to the Bootstrap, 1993, ch. 8: resample each sample separately).
    """
    c = np.asarray(counts, dtype=np.int64)
    n = c.sum(-1)
    pvals = c / np.maximum(n, 1)[:, None]  # an empty group gets all-zero pvals and n=0: zero draws
    return rng.multinomial(n, pvals, size=(int(n_boot), c.shape[0]))


def posterior_group_counts(counts: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """Posterior draws of per-group confusion counts, shape ``(n_draws, G, 4)``, float: group g's cells are
    ``n_g * Dirichlet(counts_g + 1/2)``, independently per group (group sizes fixed, as in the stratified
    bootstrap :func:`bootstrap_group_counts`, which is the same with Multinomial(n_g, counts_g / n_g)).

    The Jeffreys prior 1/2 on every cell makes each TPR, FPR, FNR, precision, FDR and FOR draw
    Beta(x + 1/2, m - x + 1/2) on its own denominator m (the Jeffreys posterior: Brown, Cai & DasGupta,
    Statistical Science 16, 2001), and a selection rate or accuracy Beta(x + 1, n_g - x + 1). Unlike the
    multinomial bootstrap it never puts every draw at 0 or 1: a group with TPR 60/60 draws TPRs below 1,
    so a band and every disparity projected from it keep the width that 60 positives allow (two groups at
    TPR 60/60 and FPR 0/60 no longer give an equalized-odds interval of [0, 0]). Rubin, "The Bayesian
    bootstrap", Annals of Statistics 9, 1981, for the Dirichlet weighting of observed cells. An empty group
    draws zeros (its rates stay undefined)."""
    return dirichlet_draws(np.asarray(counts, dtype=np.int64), 0.5, n_draws, rng, axes=1)


def simultaneous_band(replicates: np.ndarray, point: np.ndarray, confidence: float = 0.95
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A simultaneous bootstrap band ``[L_j, U_j]`` for several statistics at once, shape ``(M,)`` each.

    ``replicates`` has shape ``(B, M)``; NaN replicates do not constrain, columns whose ``point`` is NaN
    get NaN. The band at level g is ``L_j = min{x : F_j(x) >= g}``, ``U_j = max{x : S_j(x) >= g}`` with F_j
    and S_j the empirical CDF and survival function of column j's replicates; g is the largest level at
    which at least ``confidence`` of the replicates lie inside the band in every column at once (a
    quantile-calibrated version of the sup-t band: Montiel Olea & Plagborg-Moller, "Simultaneous
    confidence bands", J. Applied Econometrics 34, 2019; simultaneous bootstrap bounds for fairness
    audits: Cherian & Candes, "Statistical inference for fairness auditing", 2023). The band is widened,
    if needed, to contain ``point``, so a disparity projected from it always contains its own point
    estimate.
    """
    r = np.asarray(replicates, dtype=np.float64)
    point = np.asarray(point, dtype=np.float64)
    b, m = r.shape
    active = ~np.isnan(point)
    lo = np.full(m, np.nan)
    hi = np.full(m, np.nan)
    if b == 0 or not active.any():
        return lo, hi
    # Work on the transpose, one contiguous row per statistic: sorting along the last axis is several
    # times faster than along a strided first axis. Ties may sort in any order: only run ends are used.
    rt = np.ascontiguousarray(r.T)
    order = np.argsort(rt, axis=1)  # NaN sorts last
    srt = np.take_along_axis(rt, order, axis=1)
    nvalid = (~np.isnan(rt)).sum(1, keepdims=True)
    j = np.arange(b)[None, :]
    valid = j < nvalid
    nan_col = np.full((m, 1), np.nan)
    # Run boundaries of tied values in each sorted row (NaN != anything, so the last valid position
    # always ends a run): F at a value counts its whole run, S counts from its run's start.
    is_end = valid & (srt != np.hstack([srt[:, 1:], nan_col]))
    is_start = valid & (srt != np.hstack([nan_col, srt[:, :-1]]))
    run_end = np.minimum.accumulate(np.where(is_end, j, b)[:, ::-1], axis=1)[:, ::-1]
    run_start = np.maximum.accumulate(np.where(is_start, j, -1), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cdf = (run_end + 1) / nvalid
        surv = (nvalid - run_start) / nvalid
    depth = np.where(valid & active[:, None], np.minimum(cdf, surv), np.inf)
    depth_unsorted = np.empty_like(depth)
    np.put_along_axis(depth_unsorted, order, depth, axis=1)
    worst = np.sort(depth_unsorted.min(axis=0))   # each replicate's most extreme statistic
    level = worst[min(int(np.floor((1.0 - confidence) * b)), b - 1)]
    if np.isfinite(level):
        nv = nvalid[:, 0]
        i_lo = np.minimum(((cdf < level) & valid).sum(1), np.maximum(nv - 1, 0))
        i_hi = np.maximum(((surv >= level) & valid).sum(1) - 1, 0)
        rows = np.arange(m)
        lo = np.where(active & (nv > 0), srt[rows, i_lo], np.nan)
        hi = np.where(active & (nv > 0), srt[rows, i_hi], np.nan)
    lo = np.where(active, np.fmin(lo, point), np.nan)
    hi = np.where(active, np.fmax(hi, point), np.nan)
    return lo, hi


def _pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Band ends of the groups in the band (NaN = not in it), or None if no group is."""
    keep = ~np.isnan(lo)
    if not keep.any():
        return None
    return lo[keep], hi[keep]


def _project_range(lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
    """Smallest and largest ``max_g x_g - min_g x_g`` over the box ``prod_g [lo_g, hi_g]``.

    Smallest: the intervals share a point iff max lo <= min hi (then 0). Largest: the widest pair of
    distinct groups, ``max_{g != h} hi_g - lo_h`` (0 with one group: its range is always 0).
    """
    b = _pairs(lo, hi)
    if b is None:
        return float("nan"), float("nan")
    lo, hi = b
    if len(lo) == 1:
        return 0.0, 0.0
    gap = hi[:, None] - lo[None, :]
    np.fill_diagonal(gap, -np.inf)
    return float(max(0.0, lo.max() - hi.min())), float(gap.max())


def _project_ratio(lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
    """Smallest and largest ``min_g x_g / max_g x_g`` over the box (rates are >= 0).

    Largest: 1 if the intervals share a point, else min hi / max lo (the two binding groups at their
    ends, every other group placed between them). Smallest: ``min_{g != h} lo_g / hi_h``.
    """
    b = _pairs(lo, hi)
    if b is None:
        return float("nan"), float("nan")
    lo, hi = b
    if len(lo) == 1:
        return 1.0, 1.0
    ratio = _div(lo[:, None], hi[None, :])
    np.fill_diagonal(ratio, np.inf)
    sup = 1.0 if lo.max() <= hi.min() else float(hi.min() / lo.max())
    inf_ = float(np.fmin.reduce(ratio, axis=None))
    if not np.isfinite(inf_):       # every upper end is 0: all rates are 0 and the ratio is 0/0
        return float("nan"), float("nan")
    return inf_, sup


def _project(name: str, bands: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    if name in ("demographic_parity_difference", "equal_opportunity_difference",
                "predictive_parity_difference"):
        return _project_range(*bands[_DEPENDS[name][0]])
    if name == "demographic_parity_ratio":
        return _project_ratio(*bands["selection_rate"])
    lo, hi = bands["tpr+fpr"]
    g = len(lo) // 2
    if name == "equalized_odds_difference":
        (a0, a1), (b0, b1) = _project_range(lo[:g], hi[:g]), _project_range(lo[g:], hi[g:])
        return float(np.fmax(a0, b0)), float(np.fmax(a1, b1))
    if name == "equalized_odds_ratio":
        (a0, a1), (b0, b1) = _project_ratio(lo[:g], hi[:g]), _project_ratio(lo[g:], hi[g:])
        return float(np.fmin(a0, b0)), float(np.fmin(a1, b1))
    if name == "disparate_impact_ratio":  # min over max of the selection rates: the same projection
        return _project_ratio(*bands["selection_rate"])
    raise KeyError(name)


def _pairwise(draws: np.ndarray, point: np.ndarray, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """Draws and estimates of every pairwise difference ``x_g - x_h`` (g < h) of per-group values, or of
    ``log x_g - log x_h`` with ``log`` (a 0 rate gives -inf: a ratio of 0; two 0 rates give NaN: 0/0)."""
    i, j = np.triu_indices(point.shape[-1], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d, p = (np.log(draws), np.log(point)) if log else (draws, point)
        return d[:, i] - d[:, j], p[i] - p[j]


def pairwise_disparity_interval(draws: list[np.ndarray], points: list[np.ndarray], kind: str,
                                confidence: float = 0.95) -> tuple[float, float]:
    """Interval of a largest-minus-smallest difference (``kind="difference"``) or smallest-over-largest
    ratio (``"ratio"``) of per-group rates, from their draws ``(B, G)`` and estimates ``(G,)`` (several
    rates at once for equalized odds: the max of the differences, the min of the ratios).

    ``max_g x_g - min_g x_g = max_{g<h} |x_g - x_h|`` and ``min_g x_g / max_g x_g = exp(-max_{g<h} |log x_g -
    log x_h|)``, so a simultaneous band over the pairwise differences (or log ratios), from the same
    draws (:func:`simultaneous_band`), bounds the disparity: each |d_gh| lies in [0, max(|L|, |U|)] when its
    band [L, U] contains 0 and in [min(|L|, |U|), max(|L|, |U|)] otherwise, and the disparity is the max of
    them. It covers whenever the band covers every pair (its simultaneous level), contains the estimate,
    and, unlike the band over the group rates projected onto max - min (the earlier method, which adds the
    two groups' half-widths instead of combining them, 1.5-2.6 x the needed width), it is as wide as a
    plain interval of one difference when there are two groups. A pair whose estimate is undefined (0/0)
    is left out. (Tukey-style simultaneous pairwise comparisons: Hsu, Multiple Comparisons, 1996, ch. 5;
    for fairness audits: Cherian & Candes, "Statistical inference for fairness auditing", 2023.)
    """
    pairs = [_pairwise(np.asarray(d, dtype=np.float64), np.asarray(p, dtype=np.float64), kind == "ratio")
             for d, p in zip(draws, points)]
    d = np.concatenate([a for a, _ in pairs], axis=1)
    p = np.concatenate([b for _, b in pairs])
    if p.size == 0:                       # one group: its range is 0 and its ratio 1 in every draw
        return (0.0, 0.0) if kind == "difference" else (1.0, 1.0)
    if np.all(np.isnan(p)):
        return float("nan"), float("nan")
    lo, hi = simultaneous_band(np.where(np.isnan(d), np.nan, d), p, confidence)
    ok = ~np.isnan(lo)
    lo, hi = lo[ok], hi[ok]
    with np.errstate(invalid="ignore"):
        far = np.fmax(np.abs(lo), np.abs(hi))
        near = np.where((lo <= 0) & (hi >= 0), 0.0, np.fmin(np.abs(lo), np.abs(hi)))
    a, b = float(np.max(near)), float(np.max(far))
    if kind == "difference":
        return a, b
    return float(np.exp(-b)), float(np.exp(-a))


# ------------------------------------------------------------------------------------------- results


@dataclass
class Disparity:
    """One disparity: value, interval, the groups it was computed over and why a gate may be unsure."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    n: int                      # the thinnest denominator among the rates that entered it (what its precision
    #                             rests on: min_n on a disparity guards its smallest group)
    groups: np.ndarray          # bool (G,): groups whose value entered the max/min
    high_group: int             # group holding the max (or, for ratios, the max of the denominator); -1 if none
    low_group: int              # group holding the min; -1 if none
    small_group_involved: bool  # an entering group's rate rests on fewer than min_group_size examples
    undefined_groups: tuple[int, ...]  # present groups left out because their rate is 0/0


@dataclass
class FourFifths:
    """The four-fifths (disparate impact) rule: ratio of each group's selection rate to the highest one
    (29 CFR 1607.4(D)); its minimum is the disparate impact ratio."""

    reference: int              # the group with the highest selection rate (-1: no group has rows)
    ratios: np.ndarray          # (G,) sr_g / sr_highest, NaN for empty groups
    min_ratio: float
    worst_group: int
    threshold: float
    passed: bool                # min_ratio >= threshold (the caller makes it inconclusive if small_group_involved)
    small_group_involved: bool
    ci_low: float = float("nan")
    ci_high: float = float("nan")


@dataclass
class FairnessResult:
    """All group metrics, disparities and intervals of one (binarised) classification."""

    counts: np.ndarray                      # (G, 4) int64, cells (tn, fp, fn, tp)
    n: np.ndarray                           # (G,) rows per group
    rates: dict[str, np.ndarray]            # name -> (G,), NaN where undefined
    rate_ci: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (low, high) pointwise; NaN if no bootstrap
    present: np.ndarray                     # (G,) bool, n > 0
    small: np.ndarray                       # (G,) bool, present and n < min_group_size
    disparities: dict[str, Disparity]
    four_fifths: FourFifths
    min_group_size: int
    n_boot: int
    confidence: float
    interval: str
    bands: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    reference: int = -1                     # the caller's comparison group (``reference``), -1 if none
    reference_ratios: np.ndarray | None = None  # (G,) sr_g / sr_reference (not capped)


def small_groups(counts: np.ndarray, min_group_size: int) -> np.ndarray:
    """Mask of groups that are present (n > 0) but have fewer than ``min_group_size`` rows."""
    n = np.asarray(counts).sum(-1)
    return (n > 0) & (n < min_group_size)


def _extremes(x: np.ndarray) -> tuple[int, int]:
    if np.all(np.isnan(x)):
        return -1, -1
    return int(np.nanargmax(x)), int(np.nanargmin(x))


def fairness_from_counts(counts: np.ndarray, *, min_group_size: int = 30,
                         reference: Reference = "highest", threshold: float = 0.8, n_boot: int = 1000,
                         rng: np.random.Generator | None = None, confidence: float = 0.95,
                         interval: IntervalMethod = "simultaneous") -> FairnessResult:
    """Group metrics, disparities, the four-fifths verdict and stratified-bootstrap intervals from
    per-group confusion counts ``(G, 4)`` (see :func:`group_confusion`).

    Draws are posterior draws stratified by group (:func:`posterior_group_counts`: Dirichlet with the
    Jeffreys prior 1/2 per cell; boundary-safe). Per-group intervals are the central posterior intervals,
    widened to contain the estimate and to the Clopper-Pearson interval on the rate's denominator where
    that is wider. Disparity intervals are, with ``interval="simultaneous"`` (default), the projection of a
    simultaneous band over the same draws (:func:`simultaneous_band`), and with ``interval="percentile"``
    the percentile interval of the disparity's own draws (biased upwards for max-min statistics; see the
    module docstring). The four-fifths rule compares every group with the highest selection rate;
    ``reference`` only chooses the group of ``reference_ratios``. ``n_boot=0`` skips the bootstrap (intervals NaN); otherwise ``rng`` is required so
    that every interval is reproducible.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[1] != 4:
        raise ValueError(f"counts must have shape (G, 4), not {counts.shape}")
    if interval not in ("simultaneous", "percentile"):
        raise ValueError(f"interval must be 'simultaneous' or 'percentile', not {interval!r}")
    n_groups = counts.shape[0]
    ref = reference_group(counts, reference) if counts.sum() else -1
    rates = group_rates(counts)
    n = counts.sum(-1)
    present = n > 0
    denominators = rate_denominators(counts)
    point = disparities(rates)

    nan_ci = (np.full(n_groups, np.nan), np.full(n_groups, np.nan))
    rate_ci = {k: nan_ci for k in RATES}
    disp_ci = {k: (float("nan"), float("nan")) for k in DISPARITIES}
    bands: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if n_boot:
        if rng is None:
            raise ValueError("n_boot > 0 needs a seeded numpy Generator (audit.seeding.rng)")
        boot = group_rates(posterior_group_counts(counts, n_boot, rng))
        for k in RATES:  # and never narrower than Clopper-Pearson
            rate_ci[k] = widen_to_exact(*posterior_interval(boot[k], rates[k], confidence), rates[k],
                                        denominators[k], confidence)
        if interval == "percentile":
            reps = disparities(boot)
            for k in DISPARITIES:
                lo, hi = percentile_interval(reps[k], confidence)
                disp_ci[k] = (float(lo), float(hi))
        else:
            for cols in (("selection_rate",), ("tpr",), ("precision",), ("tpr", "fpr")):
                key = "+".join(cols)
                bands[key] = simultaneous_band(np.concatenate([boot[c] for c in cols], axis=1),
                                               np.concatenate([rates[c] for c in cols]), confidence)
            for k in DISPARITIES:
                cols = _DEPENDS[k]
                if max(int(np.sum(~np.isnan(rates[c]))) for c in cols) == 2:
                    # Two groups: the interval of their one difference (or log ratio), sized like a plain
                    # interval of a difference; the band over the rates would add the two half-widths.
                    disp_ci[k] = pairwise_disparity_interval([boot[c] for c in cols], [rates[c] for c in cols],
                                                             "ratio" if k.endswith("ratio") else "difference",
                                                             confidence)
                else:
                    # More groups: a simultaneous band over all pairs needs many more draws than pairs to
                    # find its level (24 groups, 276 pairs: 50-80% coverage at 300-2000 draws), so the band
                    # over the G group rates, projected, is used (conservative: about 1.5-2.6 x the width).
                    disp_ci[k] = _project(k, bands)
                if np.isfinite(point[k]):  # contains its estimate (both constructions do; guard rounding)
                    disp_ci[k] = (min(disp_ci[k][0], float(point[k])), max(disp_ci[k][1], float(point[k])))
        for k in DISPARITIES:
            if np.isnan(point[k]):  # undefined (e.g. 0/0 ratio): so is its interval
                disp_ci[k] = (float("nan"), float("nan"))

    result: dict[str, Disparity] = {}
    for k in DISPARITIES:
        deps = _DEPENDS[k]
        entered = np.zeros(n_groups, dtype=bool)
        undefined: set[int] = set()
        thin = False
        thinnest = []
        for c in deps:
            ok = ~np.isnan(rates[c])
            entered |= ok
            if ok.any():
                thinnest.append(int(denominators[c][ok].min()))
            undefined.update(np.flatnonzero(present & ~ok).tolist())
            thin |= bool(np.any(ok & (denominators[c] < min_group_size)))
        if k == "equalized_odds_difference" or k == "equalized_odds_ratio":
            # Report the extremes of whichever component decides the worst case.
            use_fpr = (point[k] == (range_difference(rates["fpr"]) if k.endswith("difference")
                                    else range_ratio(rates["fpr"])))
            hi_g, lo_g = _extremes(rates["fpr" if use_fpr else "tpr"])
        elif k == "disparate_impact_ratio":
            hi_g, lo_g = _extremes(rates["selection_rate"])
        else:
            hi_g, lo_g = _extremes(rates[deps[0]])
        result[k] = Disparity(
            name=k, value=float(point[k]), ci_low=disp_ci[k][0], ci_high=disp_ci[k][1],
            n=min(thinnest) if thinnest else 0, groups=entered, high_group=hi_g, low_group=lo_g,
            small_group_involved=thin, undefined_groups=tuple(sorted(undefined)))

    dir_ = result["disparate_impact_ratio"]
    top = _extremes(rates["selection_rate"])[0]
    ff = FourFifths(reference=top, ratios=disparate_impact_ratios(rates["selection_rate"], max(top, 0)),
                    min_ratio=dir_.value, worst_group=dir_.low_group, threshold=threshold,
                    passed=bool(dir_.value >= threshold), small_group_involved=dir_.small_group_involved,
                    ci_low=dir_.ci_low, ci_high=dir_.ci_high)
    return FairnessResult(counts=counts, n=n, rates=rates, rate_ci=rate_ci, present=present,
                          small=small_groups(counts, min_group_size), disparities=result, four_fifths=ff,
                          min_group_size=min_group_size, n_boot=int(n_boot), confidence=confidence,
                          interval=interval, bands=bands, reference=ref,
                          reference_ratios=disparate_impact_ratios(rates["selection_rate"], max(ref, 0)))


UNDEFINED_BECAUSE = {"tpr": "no positives", "fnr": "no positives", "fpr": "no negatives",
                     "precision": "no positive predictions", "fdr": "no positive predictions",
                     "for": "no negative predictions"}


def undefined_rates(result: FairnessResult, name: str) -> list[tuple[int, str, str]]:
    """``(group, rate, why)`` for every present group whose rate, needed by disparity ``name``, is 0/0.
    Such a disparity is computed over the other groups only, which can only make it look smaller (or the
    ratio closer to 1) than it is, so a gate on it must be inconclusive (fairlearn fills 0 instead)."""
    out = []
    for rate in _DEPENDS[name]:
        for g in np.flatnonzero(result.present & np.isnan(result.rates[rate])):
            out.append((int(g), rate, UNDEFINED_BECAUSE.get(rate, "an empty denominator")))
    return out


def fairness_audit(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, n_groups: int, *,
                   pos_label: int = 1, min_group_size: int = 30, reference: Reference = "highest",
                   threshold: float = 0.8, n_boot: int = 1000, rng: np.random.Generator | None = None,
                   confidence: float = 0.95, interval: IntervalMethod = "simultaneous") -> FairnessResult:
    """:func:`group_confusion` then :func:`fairness_from_counts`: every group metric, disparity, the
    four-fifths verdict and their stratified-bootstrap intervals for labels/predictions binarised on
    ``pos_label`` and group codes ``0..n_groups-1`` (intersect attributes first with
    :func:`intersect_groups`). Cross-checked against fairlearn's MetricFrame in the tests.
    """
    counts = group_confusion(y_true, y_pred, groups, n_groups, pos_label)
    return fairness_from_counts(counts, min_group_size=min_group_size, reference=reference,
                                threshold=threshold, n_boot=n_boot, rng=rng, confidence=confidence,
                                interval=interval)


__all__ = [
    "CELLS", "RATES", "DISPARITIES", "Disparity", "FourFifths", "FairnessResult", "binarize",
    "intersect_groups", "group_confusion", "group_rates", "rate_denominators", "range_difference",
    "range_ratio", "reference_group", "disparate_impact_ratios", "disparate_impact_min_ratio",
    "disparities", "bootstrap_group_counts", "posterior_group_counts", "simultaneous_band", "small_groups",
    "fairness_from_counts", "fairness_audit", "pairwise_disparity_interval", "undefined_rates", "UNDEFINED_BECAUSE",
]
