"""Performance metrics against scikit-learn, on a real model's outputs and on adversarial edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from audit.metrics import classification as C
from audit.suites.performance import SECTION, evaluate

CFG = SECTION.defaults()


def _real_outputs():
    """A real classifier on real data: logistic regression on digits (multiclass) probabilities."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.3, random_state=0, stratify=y)
    clf = LogisticRegression(max_iter=200, C=0.05).fit(xtr, ytr)
    return yte, clf.predict_proba(xte)


def _binary_outputs():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.4, random_state=1, stratify=y)
    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=0.01, max_iter=500).fit(sc.transform(xtr), ytr)
    return yte, clf.predict_proba(sc.transform(xte))


def _get(res, name, **params):
    found = [m for m in res.metrics if m.name == name and m.params == params]
    assert len(found) == 1, (name, params, found)
    return found[0]


def test_count_metrics_equal_sklearn_multiclass():
    y, p = _real_outputs()
    pred = p.argmax(1)
    cm = C.confusion_matrix(y, pred, 10)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=range(10)))
    assert C.accuracy(cm) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert C.balanced_accuracy(cm) == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert C.mcc(cm) == pytest.approx(skm.matthews_corrcoef(y, pred), abs=1e-12)
    prf = C.precision_recall_f1(cm)
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        for avg in ("macro", "weighted", "micro"):
            assert prf[name][avg] == pytest.approx(fn(y, pred, average=avg, zero_division=0), abs=1e-12), (name, avg)
        np.testing.assert_allclose(prf[name]["per_class"], fn(y, pred, average=None, labels=range(10), zero_division=0),
                                   atol=1e-12)


def test_count_metrics_with_missing_and_never_predicted_classes():
    """Class 3 never occurs and class 2 is never predicted: sklearn's conventions (labels present in
    y_true or y_pred, 0 for undefined precision) must hold exactly."""
    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 2, 4], size=300)
    pred = np.where(rng.random(300) < 0.7, y, rng.choice([0, 1, 4], size=300))
    pred[pred == 2] = 0
    cm = C.confusion_matrix(y, pred, 5)
    assert C.balanced_accuracy(cm) == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert C.mcc(cm) == pytest.approx(skm.matthews_corrcoef(y, pred), abs=1e-12)
    prf = C.precision_recall_f1(cm)
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        for avg in ("macro", "weighted", "micro"):
            assert prf[name][avg] == pytest.approx(fn(y, pred, average=avg, zero_division=0), abs=1e-12)


def test_mcc_degenerate_is_zero_like_sklearn():
    y = np.array([0, 0, 1, 1])
    pred = np.array([1, 1, 1, 1])
    assert C.mcc(C.confusion_matrix(y, pred, 2)) == skm.matthews_corrcoef(y, pred) == 0.0


def test_ranking_metrics_equal_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    score = np.round(rng.random(500) * 0.6 + 0.4 * y, 1)  # heavy ties
    assert C.auroc_binary(y, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert C.average_precision_binary(y, score) == pytest.approx(skm.average_precision_score(y, score), abs=1e-12)
    assert np.isnan(C.auroc_binary(np.ones(5), np.arange(5)))
    assert np.isnan(C.average_precision_binary(np.zeros(5), np.arange(5)))


def test_performance_suite_multiclass_equals_sklearn():
    y, p = _real_outputs()
    names = [str(i) for i in range(10)]
    res = evaluate(y, p.argmax(1), p, names, CFG, seed=0)
    assert _get(res, "accuracy").value == pytest.approx(skm.accuracy_score(y, p.argmax(1)), abs=1e-12)
    for avg in ("macro", "weighted"):
        assert _get(res, "auroc", average=avg).value == pytest.approx(
            skm.roc_auc_score(y, p, multi_class="ovr", average=avg), abs=1e-9)
    ap_sk = skm.average_precision_score(np.eye(10)[y], p, average=None)
    for k in range(10):
        assert _get(res, "average_precision", **{"class": str(k)}).value == pytest.approx(ap_sk[k], abs=1e-9)
        assert _get(res, "prevalence", **{"class": str(k)}).value == pytest.approx(np.mean(y == k))
    assert _get(res, "average_precision", average="macro").value == pytest.approx(
        skm.average_precision_score(np.eye(10)[y], p, average="macro"), abs=1e-9)
    # curves come from scikit-learn and keep their end points
    roc = res.curves["roc"][0]
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0
    # intervals bracket the estimate and come from the seeded stream: same seed, same interval
    acc = _get(res, "accuracy")
    assert acc.ci_low <= acc.value <= acc.ci_high and acc.ci_high - acc.ci_low > 0
    again = evaluate(y, p.argmax(1), p, names, CFG, seed=0)
    assert _get(again, "accuracy").ci_low == acc.ci_low
    other = evaluate(y, p.argmax(1), p, names, CFG, seed=1)
    assert _get(other, "accuracy").ci_low != acc.ci_low or _get(other, "mcc").ci_low != _get(res, "mcc").ci_low


def test_performance_suite_binary_and_imbalance_warning():
    y, p = _binary_outputs()
    res = evaluate(y, p.argmax(1), p, ["malignant", "benign"], CFG, seed=0)
    assert _get(res, "auroc", **{"class": "benign"}).value == pytest.approx(skm.roc_auc_score(y, p[:, 1]), abs=1e-12)
    assert _get(res, "average_precision", **{"class": "benign"}).value == pytest.approx(
        skm.average_precision_score(y, p[:, 1]), abs=1e-12)
    assert len(res.curves["roc"]) == 1 and res.curves["roc"][0]["class"] == "benign"
    # make it strongly imbalanced: keep 10% of class 0
    keep = (y == 1) | (np.arange(len(y)) % 10 == 0)
    res2 = evaluate(y[keep], p[keep].argmax(1), p[keep], ["malignant", "benign"], CFG, seed=0)
    assert any("Class imbalance" in n and "balanced accuracy" in n for n in res2.notes)
    assert not any("Class imbalance" in n for n in res.notes)


def test_multinomial_bootstrap_matches_row_bootstrap_in_distribution():
    """Resampling rows and drawing Multinomial(n, cell frequencies) give the same distribution of
    accuracy: compare the two interval ends (Monte-Carlo tolerance)."""
    from audit.metrics.bootstrap import multinomial_confusions, percentile_interval

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    pred = np.where(rng.random(400) < 0.8, y, rng.integers(0, 3, 400))
    cm = C.confusion_matrix(y, pred, 3)
    fast = percentile_interval(C.accuracy(multinomial_confusions(cm, 4000, rng)))
    idx = rng.integers(0, 400, size=(4000, 400))
    slow = percentile_interval((y[idx] == pred[idx]).mean(axis=1))
    assert abs(fast[0] - slow[0]) < 0.01 and abs(fast[1] - slow[1]) < 0.01


def test_proportion_intervals_are_never_narrower_than_the_exact_interval():
    """At 0 or 1 every bootstrap replicate equals the estimate; the interval must still say what n
    examples can show, and its ends must move monotonically with the count (29/30 may not look surer than
    30/30). Clopper-Pearson against scipy's beta quantiles (its definition)."""
    from scipy.stats import beta

    from audit.metrics import fairness as FM
    from audit.metrics import robustness as R
    from audit.metrics.bootstrap import clopper_pearson, widen_to_exact

    for n, conf in ((30, 0.95), (7, 0.9), (1000, 0.99)):
        a = 1 - conf
        x = np.arange(n + 1)
        lo, hi = clopper_pearson(x, n, conf)
        np.testing.assert_allclose(lo[1:], beta.ppf(a / 2, x[1:], n - x[1:] + 1), rtol=1e-12)
        np.testing.assert_allclose(hi[:-1], beta.ppf(1 - a / 2, x[:-1] + 1, n - x[:-1]), rtol=1e-12)
        assert lo[0] == 0.0 and hi[-1] == 1.0 and lo[-1] == pytest.approx((a / 2) ** (1 / n), rel=1e-12)
        lo, hi = widen_to_exact(1.0, 1.0, 1.0, n, conf)  # a collapsed bootstrap interval
        assert (lo, hi) == pytest.approx(((a / 2) ** (1 / n), 1.0), abs=1e-12)
        wide = widen_to_exact(0.0, 1.0, 0.5, n, conf)  # a wider bootstrap interval is kept
        assert wide == (0.0, 1.0)
    lo, hi = widen_to_exact(np.array([0.5, np.nan]), np.array([0.7, np.nan]), np.array([0.6, np.nan]), np.array([0, 0]))
    np.testing.assert_array_equal(lo, [0.5, np.nan])  # n = 0: nothing to say, left as it was
    # monotone in the count, through the real bootstrap: 29/30 never looks surer than 30/30
    rng = np.random.default_rng(0)
    lows = [R.binomial_interval(k / 30, 30, 2000, rng)[0] for k in range(25, 31)]
    assert all(b >= a_ - 1e-12 for a_, b in zip(lows, lows[1:])), lows
    # every proportion the suites report goes through it: accuracy and per-class recall/precision ...
    y = np.repeat(np.arange(3), 10)
    res = evaluate(y, y, np.eye(3)[y], ["a", "b", "c"], CFG, seed=0)
    acc = _get(res, "accuracy")
    # (the posterior over a 3-class confusion matrix is wider still than Clopper-Pearson here: the union)
    assert acc.value == 1.0 and acc.ci_high == 1.0 and acc.ci_low <= beta.ppf(0.025, 30, 1) + 1e-12
    rec = _get(res, "recall", **{"class": "b"})
    assert (rec.ci_low, rec.ci_high) == pytest.approx((beta.ppf(0.025, 10, 1), 1.0))
    # ... robust accuracy and attack success rate, noise accuracy, and per-group fairness rates
    assert R.binomial_interval(0.0, 40, 200, rng) == pytest.approx((0.0, beta.ppf(0.975, 1, 40)))
    assert R.count_mean_interval(np.full(25, 5), 5, 200, rng) == pytest.approx((beta.ppf(0.025, 25, 1), 1.0))
    codes = np.repeat([0, 1], 20)
    pred = np.r_[np.ones(20, int), rng.integers(0, 2, 20)]  # group 0: everyone selected
    fr = FM.fairness_audit(rng.integers(0, 2, 40), pred, codes, 2, n_boot=200, rng=rng)
    sel_lo, sel_hi = fr.rate_ci["selection_rate"]
    assert (sel_lo[0], sel_hi[0]) == pytest.approx((beta.ppf(0.025, 20, 1), 1.0))
    x1 = fr.rates["selection_rate"][1] * 20
    cp = clopper_pearson(x1, 20)
    assert sel_lo[1] <= cp[0] + 1e-12 and sel_hi[1] >= cp[1] - 1e-12


# ------------------------------------------------------------------------ boundary-safe intervals (#10)


def test_a_perfect_model_on_20_examples_gets_no_point_interval():
    """Regression (issue #10): 20 examples, all right. Accuracy's interval was [0.83, 1] but balanced accuracy,
    MCC, F1, AUROC and AP said [1, 1], so a gate ci_low >= 0.95 passed on them. Every interval now reaches
    below what 20 examples can show (10 per class: a Jeffreys lower end near 0.89 for a recall), and the gate
    does not pass (on n = 20 it is also inconclusive by the default min_n)."""
    from audit.report.gates import evaluate_gate

    y = np.repeat([0, 1], 10)
    p1 = np.where(y == 1, np.linspace(0.6, 0.99, 20), np.linspace(0.01, 0.4, 20))
    res = evaluate(y, y, np.stack([1 - p1, p1], 1), ["0", "1"], CFG, seed=0)
    picks = [("accuracy", {}), ("balanced_accuracy", {}), ("mcc", {}), ("f1", {"average": "macro"}),
             ("f1", {"class": "1"}), ("precision", {"class": "1"}), ("recall", {"class": "1"}),
             ("auroc", {"class": "1"}), ("average_precision", {"class": "1"}), ("auroc", {"average": "macro"})]
    records = [r.to_json() for r in res.metrics]
    for name, params in picks:
        rec = _get(res, name, **params)
        assert rec.value == 1.0 and rec.ci_high == 1.0, name
        assert rec.ci_low < 0.95, (name, params, rec.ci_low)
        gate = {"id": name, "suite": "performance", "name": name, "params": params, "op": ">=", "threshold": 0.95,
                "use": "ci_low", "severity": "error", "min_n": 1}
        assert evaluate_gate(gate, records, ["performance"])["status"] == "fail", name
        assert evaluate_gate(dict(gate, min_n=None), records, ["performance"])["status"] == "inconclusive", name
    # records say what they rest on: AUROC / AP on min(positives, negatives), precision on predictions
    assert _get(res, "auroc", **{"class": "1"}).n == 10 and _get(res, "average_precision", **{"class": "1"}).n == 10
    assert _get(res, "balanced_accuracy").n == 10 and _get(res, "accuracy").n == 20


def test_record_n_is_what_the_metric_rests_on():
    """Per-class precision rests on the predictions of that class (not its size), recall on its size, AUROC and
    AP on the smaller of its positives and negatives (issue #10, item 6)."""
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    pred = np.r_[np.zeros(60, int), np.ones(30, int), np.ones(10, int)]    # class 1 predicted 40 times
    p1 = np.where(pred == 1, 0.8, 0.2)
    res = evaluate(y, pred, np.stack([1 - p1, p1], 1), ["0", "1"], CFG, seed=0)
    assert _get(res, "precision", **{"class": "1"}).n == 40 and _get(res, "recall", **{"class": "1"}).n == 10
    assert _get(res, "precision", **{"class": "0"}).n == 60 and _get(res, "recall", **{"class": "0"}).n == 90
    assert _get(res, "auroc", **{"class": "1"}).n == 10 and _get(res, "average_precision", average="macro").n == 10
    assert _get(res, "precision", average="macro").n == 40 and _get(res, "recall", average="macro").n == 10
    assert _get(res, "precision", average="micro").n == 100


def test_delong_variance_and_hanley_mcneil_against_their_definitions():
    """DeLong's variance from mid-ranks equals its definition from the pairwise kernel psi(x, y) = 1[x > y] +
    1/2 1[x = y] (DeLong et al. 1988); Hanley & McNeil's effective n equals A(1 - A) / Var_HM with Q1, Q2."""
    r = np.random.default_rng(3)
    y = r.random(120) < 0.35
    s = np.round(r.normal(y * 1.2, 1.0), 1)           # rounded: ties
    x1, x0 = s[y], s[~y]
    psi = (x1[:, None] > x0[None, :]) + 0.5 * (x1[:, None] == x0[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    brute = v10.var(ddof=1) / len(x1) + v01.var(ddof=1) / len(x0)
    assert C.delong_variance(y, s) == pytest.approx(brute, rel=1e-12)
    assert C.auroc_binary(y, s) == pytest.approx(psi.mean(), abs=1e-12)
    a, n1, n0 = 0.83, 40, 70
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    assert C.hanley_mcneil_n(a, n1, n0) == pytest.approx(a * (1 - a) / var, rel=1e-12)
    assert np.isfinite(C.hanley_mcneil_n(1.0, n1, n0))


def test_posterior_draws_give_the_jeffreys_interval_of_a_recall():
    """Under Dirichlet(cm + jeffreys_cell_prior) each row's recall is Beta(tp + 1/2, fn + 1/2): its central
    interval is the Jeffreys interval (scipy's beta quantiles), for K = 2 and K = 5."""
    from scipy.stats import beta

    from audit.metrics.bootstrap import dirichlet_draws, jeffreys_cell_prior, jeffreys_interval, posterior_interval

    rng = np.random.default_rng(0)
    for k in (2, 5):
        cm = np.diag(np.arange(10, 10 + k)) + 1
        cm[0] = [12] + [0] * (k - 1)                    # class 0: 12 of 12 right
        draws = dirichlet_draws(cm, jeffreys_cell_prior(k), 40000, rng, axes=2)
        np.testing.assert_allclose(draws.sum((1, 2)), cm.sum())
        rec = C.per_class_recall(draws)
        for c in (0, 1):
            tp, row = cm[c, c], cm[c].sum()
            lo, hi = posterior_interval(rec[:, c], tp / row)
            jl, jh = jeffreys_interval(tp, row)
            assert lo == pytest.approx(beta.ppf(0.025, tp + 0.5, row - tp + 0.5), abs=0.006)
            assert hi == pytest.approx(jh if tp < row else 1.0, abs=0.006)
            assert jl == pytest.approx(beta.ppf(0.025, tp + 0.5, row - tp + 0.5), rel=1e-12)
    lo, hi = jeffreys_interval(np.array([0, 5]), np.array([5, 5]))
    assert lo[0] == 0.0 and hi[1] == 1.0            # the modified Jeffreys ends at x = 0 and x = n


def test_ranking_replicates_equal_the_metrics_of_the_resampled_rows():
    """The vectorised weighted AUROC / AP equal the row-resampled scikit-learn-equal functions exactly, ties
    and replicates without a positive included."""
    r = np.random.default_rng(2)
    n = 80
    y = r.random(n) < 0.15
    s = np.round(r.normal(y * 1.0, 1.0), 1)
    idx = r.integers(0, n, size=(60, n))
    w = np.stack([np.bincount(i, minlength=n) for i in idx])
    au, ap = C.ranking_replicates(y, s, w, max_elements=500)      # small chunks: chunking is exercised
    for b in range(60):
        yy, ss = y[idx[b]], s[idx[b]]
        np.testing.assert_allclose(au[b], C.auroc_binary(yy, ss), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ap[b], C.average_precision_binary(yy, ss), rtol=1e-12, atol=1e-12)
    w0 = np.zeros((1, n))
    w0[0, ~y] = 1                                   # no positive in the replicate
    assert np.isnan(C.ranking_replicates(y, s, w0)[0][0]) and np.isnan(C.ranking_replicates(y, s, w0)[1][0])


def test_numpy_ranks_and_curves_equal_scipy_and_sklearn_with_ties():
    """mid_ranks, roc_points and pr_points replace scipy.stats.rankdata and sklearn's roc_curve /
    precision_recall_curve on the performance path (their imports cost more than the computation): equal
    to them, ties included."""
    from scipy.stats import rankdata

    g = np.random.default_rng(0)
    for n, decimals in ((1, 3), (2, 0), (50, 1), (400, 2), (1000, 6)):
        s = np.round(g.random(n), decimals)
        y = g.random(n) < 0.3
        y[0] = True
        np.testing.assert_array_equal(C.mid_ranks(s), rankdata(s))
        if y.all():
            continue
        fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
        got = C.roc_points(y, s)
        np.testing.assert_allclose(got[0], fpr, rtol=0, atol=1e-15)
        np.testing.assert_allclose(got[1], tpr, rtol=0, atol=1e-15)
        prec, rec, _ = skm.precision_recall_curve(y, s)
        r, p = C.pr_points(y, s)
        np.testing.assert_allclose(r, rec[::-1], rtol=0, atol=1e-15)
        np.testing.assert_allclose(p, prec[::-1], rtol=0, atol=1e-15)


def test_beta_quantile_intervals_equal_scipy_stats():
    """Clopper-Pearson and Jeffreys from scipy.special.betaincinv equal scipy.stats.beta.ppf's intervals."""
    from scipy.stats import beta

    from audit.metrics.bootstrap import clopper_pearson, jeffreys_interval

    g = np.random.default_rng(1)
    n = g.integers(1, 5000, 2000).astype(float)
    x = np.floor(g.random(2000) * (n + 1))
    x[:5], n[:5] = [0, 1, 3, 7, 2], [1, 1, 3, 9, 1e6]
    for conf in (0.9, 0.95, 0.99):
        a = 1 - conf
        lo, hi = clopper_pearson(x, n, conf)
        np.testing.assert_array_equal(lo, np.where(x <= 0, 0.0, beta.ppf(a / 2, np.maximum(x, 1e-300), n - x + 1)))
        np.testing.assert_array_equal(hi, np.where(x >= n, 1.0, beta.ppf(1 - a / 2, x + 1, np.maximum(n - x, 1e-300))))
        lo, hi = jeffreys_interval(x, n, conf)
        np.testing.assert_array_equal(lo, np.where(x <= 0, 0.0, beta.ppf(a / 2, x + 0.5, n - x + 0.5)))
        np.testing.assert_array_equal(hi, np.where(x >= n, 1.0, beta.ppf(1 - a / 2, x + 0.5, n - x + 0.5)))
