"""Classification performance from a confusion matrix and from scores.

Count-based metrics take a K x K confusion matrix ``cm[true, pred]`` and also accept a stack of them,
shape (B, K, K), so that bootstrap replicates are computed in one vectorised call. Conventions follow
scikit-learn (labels are the classes present in y_true or y_pred; 0/0 precision or recall is 0), so that
the tests can compare against it to the last digit.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[i, j] = #{examples with true class i predicted as j}, via one bincount over i*K + j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _div(a: np.ndarray, b: np.ndarray, zero: float = 0.0) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = np.full(np.broadcast(a, b).shape, zero, dtype=np.float64)
    np.divide(a, b, out=out, where=b != 0)
    return out


def accuracy(cm: np.ndarray) -> np.ndarray:
    """accuracy = trace(cm) / sum(cm)."""
    cm = np.asarray(cm)
    return _div(np.trace(cm, axis1=-2, axis2=-1), cm.sum(axis=(-2, -1)), np.nan)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """recall_k = cm[k, k] / sum_j cm[k, j] (NaN where class k has no true examples)."""
    cm = np.asarray(cm)
    return _div(np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(axis=-1), np.nan)


def balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    """Mean of per-class recall over the classes present in y_true.

    Reference: Brodersen et al., "The balanced accuracy and its posterior distribution", ICPR 2010;
    sklearn.metrics.balanced_accuracy_score.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_class_recall(cm), axis=-1)


def mcc(cm: np.ndarray) -> np.ndarray:
    """Matthews correlation coefficient, multiclass form (Gorodkin, 2004):

        MCC = (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))

    with c = trace, s = total, t = true counts per class (row sums), p = predicted counts (column sums).
    0 when the denominator is 0, as in sklearn.metrics.matthews_corrcoef.
    """
    cm = np.asarray(cm, dtype=np.float64)
    t = cm.sum(axis=-1)
    p = cm.sum(axis=-2)
    c = np.trace(cm, axis1=-2, axis2=-1)
    s = cm.sum(axis=(-2, -1))
    num = c * s - (t * p).sum(axis=-1)
    # clipped at 0: on fractional (posterior-draw) counts rounding can leave a -1e-13 where the exact value is 0
    den = np.sqrt(np.maximum((s**2 - (p * p).sum(axis=-1)) * (s**2 - (t * t).sum(axis=-1)), 0.0))
    return _div(num, den, 0.0)


def precision_recall_f1(cm: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per-class and averaged precision, recall and F1 (van Rijsbergen, 1979; sklearn's conventions).

    precision_k = cm[k,k] / col_k, recall_k = cm[k,k] / row_k, f1_k = 2 P R / (P + R), each 0 when
    undefined (sklearn's zero_division=0). Averages over the classes that occur in y_true or y_pred:
    macro (unweighted mean), weighted (by support row_k), micro (from the pooled counts; equals accuracy
    for single-label multiclass).

    Returns {"precision"|"recall"|"f1": {"per_class": (..., K), "macro", "weighted", "micro"}}.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    row = cm.sum(axis=-1)
    col = cm.sum(axis=-2)
    present = (row + col) > 0
    prec = _div(tp, col)
    rec = _div(tp, row)
    f1 = _div(2 * prec * rec, prec + rec)
    n_present = present.sum(axis=-1)
    support = row.sum(axis=-1)
    out: dict[str, dict[str, np.ndarray]] = {}
    micro_tp = tp.sum(axis=-1)
    micro = _div(micro_tp, support)  # micro P = micro R = micro F1 = accuracy here
    for name, v in (("precision", prec), ("recall", rec), ("f1", f1)):
        out[name] = {
            "per_class": v,
            "macro": _div((v * present).sum(axis=-1), n_present),
            "weighted": _div((v * row).sum(axis=-1), support),
            "micro": micro,
        }
    return out


# ------------------------------------------------------------------------------------ ranking metrics


def mid_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given the mean of the ranks they span (scipy.stats.rankdata's "average"):
    a run of equal values at sorted positions i..j (0-based) gets (i + j) / 2 + 1. In numpy, so that the
    performance path does not import scipy.stats."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    new = np.r_[True, s[1:] != s[:-1]] if len(s) else np.zeros(0, dtype=bool)
    starts = np.r_[np.flatnonzero(new), len(s)]
    avg = (starts[:-1] + starts[1:] - 1) / 2.0 + 1.0
    out = np.empty(len(a), dtype=np.float64)
    out[order] = avg[np.cumsum(new) - 1]
    return out


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve's vertices (FPR, TPR), one per distinct score from the highest down, starting at
    (0, 0): what sklearn.metrics.roc_curve(y, score, drop_intermediate=False) gives, without importing
    scikit-learn on the performance path. Needs both classes."""
    tps, fps = _cumulative_counts(y, score)
    return np.r_[0.0, fps] / fps[-1], np.r_[0.0, tps] / tps[-1]


def pr_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The precision-recall curve by increasing recall, (recall, precision): (0, 1), then one point per
    distinct score from the highest down (precision TP / (TP + FP), recall TP / P at threshold score >= t):
    sklearn.metrics.precision_recall_curve's arrays (scikit-learn >= 1.1), reversed. Needs a positive."""
    tps, fps = _cumulative_counts(y, score)
    return np.r_[0.0, tps / tps[-1]], np.r_[1.0, tps / (tps + fps)]


def _cumulative_counts(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each distinct score taken as the threshold (score >= t), highest first."""
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    yy = np.asarray(y).astype(bool).reshape(-1)
    order = np.argsort(-s, kind="mergesort")
    s, yy = s[order], yy[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(yy, dtype=np.float64)[last]
    return tps, (last + 1) - tps


def auroc_binary(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic with mid-ranks for ties:

        AUROC = (R_1 - n_1 (n_1 + 1) / 2) / (n_1 n_0)

    where R_1 is the sum of the ranks of the positives. NaN if only one class is present.
    Reference: Hanley & McNeil, Radiology 143 (1982); equals sklearn.metrics.roc_auc_score.
    """
    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = mid_ranks(score)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def average_precision_binary(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision, the step-wise area under the PR curve:

        AP = sum_n (R_n - R_{n-1}) P_n

    over the distinct score thresholds in decreasing order (tied scores form one threshold).
    NaN if there is no positive. Reference: sklearn.metrics.average_precision_score; Manning et al.,
    Introduction to Information Retrieval (2008), section 8.4.
    """
    y = np.asarray(y).astype(bool)
    if not y.any():
        return float("nan")
    tp, fp = _cumulative_counts(y, score)  # one threshold per run of equal scores
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def delong_variance(y: np.ndarray, score: np.ndarray) -> float:
    """DeLong's variance estimate of the AUROC (DeLong, DeLong & Clarke-Pearson, Biometrics 44, 1988),
    computed from mid-ranks (Sun & Xu, IEEE Signal Processing Letters 21, 2014):

        V10_i = (R_i - R1_i) / n0   for each positive i,   V01_j = 1 - (R_j - R0_j) / n1   for each negative j
        Var = s2(V10) / n1 + s2(V01) / n0

    with R the rank among all scores, R1/R0 the rank among the positives/negatives and s2 the sample
    variance (ddof = 1). NaN with fewer than two positives or negatives."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 < 2 or n0 < 2:
        return float("nan")
    r = mid_ranks(s)
    v10 = (r[y] - mid_ranks(s[y])) / n0
    v01 = 1.0 - (r[~y] - mid_ranks(s[~y])) / n1
    return float(v10.var(ddof=1) / n1 + v01.var(ddof=1) / n0)


def effective_n(value: float, variance: float, floor: float) -> float:
    """The sample size at which a proportion ``value`` would have this ``variance``:
    ``value (1 - value) / variance``, never below ``floor``; ``floor`` itself where the variance is 0 or
    undefined or the value is 0 or 1 (nothing measured the spread there).

    For the AUROC the floor ``min(n1, n0)`` is safe: Var(AUROC) <= A (1 - A) / min(n1, n0) for every pair
    of score distributions (van Dantzig 1951; Birnbaum & Klose, Annals of Mathematical Statistics 28, 1957),
    so a proportion on min(n1, n0) trials is never surer than the AUROC."""
    if not (np.isfinite(value) and np.isfinite(variance)) or variance <= 0 or value <= 0 or value >= 1:
        return float(floor)
    return float(max(floor, value * (1.0 - value) / variance))


def hanley_mcneil_n(a: float, n1: int, n0: int) -> float:
    """Effective number of trials of an AUROC ``a`` under Hanley & McNeil's variance (Radiology 143, 1982,
    eq. 2, with Q1 = A / (2 - A), Q2 = 2 A^2 / (1 + A)), i.e. ``A (1 - A) / Var_HM``, which simplifies to

        n_eff = n1 n0 / (1 + (n1 - 1)(1 - A) / (2 - A) + (n0 - 1) A / (1 + A)).

    A smooth function of A that stays finite at A = 1 (about 2 n1 n0 / (n0 + 1)), unlike the variance
    estimated from the data, which is 0 there."""
    a = min(max(float(a), 0.0), 1.0)
    return float(n1 * n0 / (1.0 + (n1 - 1) * (1.0 - a) / (2.0 - a) + (n0 - 1) * a / (1.0 + a)))


def auroc_effective_n(y: np.ndarray, score: np.ndarray) -> float:
    """The number of independent trials the AUROC of (y, score) is worth: the geometric mean of DeLong's
    ``A (1 - A) / Var_DeLong`` (:func:`delong_variance`; :func:`effective_n`) and Hanley & McNeil's
    (:func:`hanley_mcneil_n`), each at least min(n1, n0). NaN when a class is absent.

    Why both. DeLong's variance is unbiased on average but too small exactly when the estimate is too
    high (few discordant pairs; 0 at a perfect separation), which cost 86% coverage at a 4% class of 300
    rows (bench/coverage.py). Hanley & McNeil's is a smooth function of A that stays positive at A = 1 but
    assumes exponential-like score distributions and is 2-3 times too large for a near-perfect rare
    class. Their geometric mean covers at least 95% in every scenario of bench/coverage.py with more than
    two positives, at 1.1-1.4 times the oracle width. The floor is the van Dantzig bound Var(AUROC) <=
    A (1 - A) / min(n1, n0), true for every pair of score distributions (Birnbaum & Klose, Annals of
    Mathematical Statistics 28, 1957)."""
    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    a = auroc_binary(y, score)
    m = min(n1, n0)
    return float(np.sqrt(effective_n(a, delong_variance(y, score), m) * max(hanley_mcneil_n(a, n1, n0), m)))


def auroc_interval(y: np.ndarray, score: np.ndarray, confidence: float = 0.95) -> tuple[float, float] | None:
    """Interval of the AUROC that does not collapse at 0 or 1: the Jeffreys interval
    (:func:`audit.metrics.bootstrap.jeffreys_interval`) of a proportion A on ``n_eff`` trials
    (:func:`auroc_effective_n`), widened to contain A. The AUROC is a proportion of correctly ordered
    (positive, negative) pairs; the Beta shape carries the skew near 1 that a percentile bootstrap misses,
    and at a perfect separation (every bootstrap replicate 1: [1, 1]) it still says what the data can show.
    A logit-scale DeLong interval (Pepe, The Statistical Evaluation of Medical Tests, 2003, sec. 5.2) has
    the same aim but no answer at A = 1. None when a class is absent."""
    from audit.metrics.bootstrap import jeffreys_interval

    m = auroc_effective_n(y, score)
    if not np.isfinite(m):
        return None
    a = auroc_binary(y, score)
    lo, hi = jeffreys_interval(a * m, m, confidence)
    return float(min(lo, a)), float(max(hi, a))


class RankingCells:
    """The distinct (score, label) cells of one class's scores, in decreasing score (positives first within a
    score), computed with one sort: ``cell_of_row[i]`` is row i's cell, ``positive[j]`` cell j's label,
    ``count[j]`` its rows, ``tie`` the positive cells whose score a negative cell shares (the next cell)."""

    def __init__(self, y: np.ndarray, score: np.ndarray):
        y = np.asarray(y).astype(bool).reshape(-1)
        s = np.asarray(score, dtype=np.float64).reshape(-1)
        n = len(s)
        order = np.lexsort((~y, -s))                       # score descending, then label 1 before 0
        so, yo = s[order], y[order]
        new = np.ones(n, dtype=bool)
        if n:
            new[1:] = (so[1:] != so[:-1]) | (yo[1:] != yo[:-1])
        cid = np.cumsum(new) - 1
        self.cell_of_row = np.empty(n, dtype=np.int64)
        self.cell_of_row[order] = cid
        self.positive = yo[new]
        cs = so[new]
        self.count = np.bincount(cid, minlength=len(cs)).astype(np.int64) if n else np.zeros(0, np.int64)
        # positive cells followed by a negative cell of the same score: the thresholds that hold two cells
        self.tie = np.nonzero(self.positive[:-1] & ~self.positive[1:] & (cs[:-1] == cs[1:]))[0] if len(cs) \
            else np.zeros(0, np.int64)
        self.n = n

    def __len__(self) -> int:
        return len(self.positive)

    def metrics(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AUROC and AP of replicates given as (B, J) counts of every cell: the formulas of
        :func:`ranking_replicates`, in cell space. Every threshold holds one cell, or a positive cell followed
        by a negative one of the same score (``tie``), so with TP_j, FP_j the cumulative counts down to cell j
        and w_j the positive cells' counts (0 on negative cells):

            AUROC = [W1 W0 - sum_j w_j FP_j - sum_tie w_j w_{j+1} / 2] / (W1 W0)
            AP    = sum_j w_j TP_j / (TP_j + FP_j + [tie] w_{j+1}) / W1

        Written for few passes over the (B, J) arrays (they are the cost at 1M rows): no gather of
        thresholds, dot products for the sums."""
        # float64 throughout: counts and their cumulative sums are integers below 2^53, so exact
        w = np.asarray(counts, dtype=np.float64)
        wp = w * self.positive
        tp = np.cumsum(wp, axis=1)
        fp = np.cumsum(w, axis=1)
        fp -= tp
        w1, w0 = tp[:, -1].copy(), fp[:, -1].copy()
        tie = self.tie
        w_next = w[:, tie + 1]                                # the tied negatives of each tie threshold
        den = tp + fp
        den[:, tie] += w_next
        prec = np.divide(tp, den, out=den, where=den > 0)     # in place: den is not needed afterwards
        ap_num = np.einsum("ij,ij->i", wp, prec)
        au_num = w1 * w0 - np.einsum("ij,ij->i", wp, fp) - 0.5 * np.einsum("ij,ij->i", w[:, tie], w_next)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = np.where(w1 > 0, ap_num / w1, np.nan)
            au = np.where((w1 > 0) & (w0 > 0), au_num / (w1 * w0), np.nan)
        return au, ap


def ranking_replicates(y: np.ndarray, score: np.ndarray, weights: np.ndarray,
                       max_elements: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision of B weighted copies of the data at once, shape ``(B,)`` each.

    ``weights[b, i]`` is how often row i occurs in replicate b (a row bootstrap's counts), so each value
    equals :func:`auroc_binary` / :func:`average_precision_binary` of the resampled rows exactly: with the
    scores sorted once (descending) and tied scores forming one threshold t, the weighted counts of
    positives P_t and negatives N_t at each threshold give

        AUROC = sum_t P_t (N_below_t + N_t / 2) / (W1 W0)        (Mann-Whitney with mid-ranks)
        AP    = sum_t (P_t / W1) * TP_t / (TP_t + FP_t)           (TP, FP cumulative down to t)

    and a threshold whose rows are all absent from a replicate adds nothing, as in the resample. NaN where
    a replicate lacks positives (AP, AUROC) or negatives (AUROC). The rows' weights are summed into the
    distinct (score, label) cells (:class:`RankingCells`, one sort), processed in chunks of at most
    ``max_elements`` weights."""
    cells = RankingCells(y, score)
    w_all = np.asarray(weights, dtype=np.float64)
    b_total = w_all.shape[0]
    au = np.full(b_total, np.nan)
    ap = np.full(b_total, np.nan)
    n, j = cells.n, len(cells)
    step = max(1, max_elements // max(n, 1))
    for start in range(0, b_total, step):
        w = w_all[start:start + step]
        keys = (cells.cell_of_row[None, :] + j * np.arange(len(w))[:, None]).ravel()
        counts = np.bincount(keys, weights=w.ravel(), minlength=len(w) * j).reshape(len(w), j)
        au[start:start + step], ap[start:start + step] = cells.metrics(counts)
    return au, ap


def ranking_bootstrap(y: np.ndarray, probs: np.ndarray, classes: list[int], n_boot: int, rng: np.random.Generator,
                      max_elements: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Row-bootstrap replicates of the one-vs-rest AUROC and AP of ``classes``, shape ``(n_boot,
    len(classes))`` each, without a (n_boot, n) array.

    A row bootstrap draws n rows with replacement; a ranking metric depends on the resample only through
    how many copies of each distinct (score, label) cell it holds (:class:`RankingCells`, sorted once per
    class), i.e. on the cell counts, which are Multinomial(n, count_j / n) (Efron & Tibshirani, An
    Introduction to the Bootstrap, 1993, ch. 6). So:

    - one class (binary) with few distinct cells (J <= n / 16, e.g. tied or rounded scores): the counts are
      drawn directly, ``rng.multinomial(n, count / n)``, O(J) per replicate;
    - otherwise: n row indices per replicate, shared by every class (the macro/weighted averages need one
      joint resample of the rows across classes), mapped to each class's cells and counted; O(n K) per
      replicate.

    Either way each replicate is the bootstrap of the rows in distribution; the metrics of the counts are
    :meth:`RankingCells.metrics` (exactly :func:`auroc_binary` and :func:`average_precision_binary` of the
    resampled rows). Replicates are processed in chunks so no temporary array exceeds ``max_elements``
    elements (memory O(n + max_elements), never n_boot x n)."""
    y = np.asarray(y)
    n = len(y)
    cells = [RankingCells(y == c, probs[:, c]) for c in classes]
    au = np.full((n_boot, len(classes)), np.nan)
    ap = np.full((n_boot, len(classes)), np.nan)
    if n == 0 or n_boot == 0:
        return au, ap
    if len(cells) == 1 and 16 * len(cells[0]) <= n:
        cl = cells[0]
        step = max(1, max_elements // max(len(cl), 1))
        for s in range(0, n_boot, step):
            b = min(step, n_boot - s)
            counts = rng.multinomial(n, cl.count / n, size=b)
            au[s:s + b, 0], ap[s:s + b, 0] = cl.metrics(counts)
        return au, ap
    step = max(1, max_elements // n)
    one = cells[0] if len(cells) == 1 else None
    if one is not None:  # one class: a row's identity does not matter, only its cell; cells are runs of
        # consecutive positions in the sorted order, so counting positions and summing runs (sequential)
        # replaces a random gather of every drawn index
        starts = np.r_[0, np.cumsum(one.count)[:-1]]
    for s in range(0, n_boot, step):
        b = min(step, n_boot - s)
        idx = rng.integers(0, n, size=(b, n))
        if one is not None:
            per_pos = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
            counts = per_pos if len(one) == n else np.add.reduceat(per_pos, starts, axis=1)
            au[s:s + b, 0], ap[s:s + b, 0] = one.metrics(counts)
            continue
        for i, cl in enumerate(cells):
            j = len(cl)
            keys = (cl.cell_of_row[idx] + j * np.arange(b)[:, None]).ravel()
            counts = np.bincount(keys, minlength=b * j).reshape(b, j)
            au[s:s + b, i], ap[s:s + b, i] = cl.metrics(counts)
    return au, ap


def one_vs_rest(y: np.ndarray, probs: np.ndarray, fn) -> np.ndarray:
    """fn(y == k, probs[:, k]) for each class k (NaN where undefined)."""
    return np.array([fn(y == k, probs[:, k]) for k in range(probs.shape[1])])


def average_over_classes(per_class: np.ndarray, support: np.ndarray) -> dict[str, float]:
    """Macro (unweighted) and weighted-by-support means over the classes where the value is defined."""
    ok = np.isfinite(per_class)
    if not ok.any():
        return {"macro": float("nan"), "weighted": float("nan")}
    w = support[ok].astype(np.float64)
    return {
        "macro": float(per_class[ok].mean()),
        "weighted": float((per_class[ok] * w).sum() / w.sum()) if w.sum() > 0 else float("nan"),
    }


def downsample_curve(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[list[float], list[float]]:
    """Keep at most ``max_points`` points of a curve for the report (first and last always kept), so the
    report stays small on large data; the curve's area is computed before downsampling."""
    n = len(x)
    if n <= max_points:
        idx = np.arange(n)
    else:
        idx = np.unique(np.r_[np.linspace(0, n - 1, max_points).round().astype(int), n - 1])
    return [round(float(v), 6) for v in x[idx]], [round(float(v), 6) for v in y[idx]]
