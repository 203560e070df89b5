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
    assert acc.value == 1.0 and (acc.ci_low, acc.ci_high) == pytest.approx((beta.ppf(0.025, 30, 1), 1.0))
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
