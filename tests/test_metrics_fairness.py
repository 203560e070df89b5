"""audit.metrics.fairness against fairlearn's MetricFrame (to 1e-9) on real data, its edge cases, and the
behaviour of the stratified bootstrap and the disparity intervals."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as flm
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, precision_score
from sklearn.preprocessing import StandardScaler

from audit.metrics import fairness as F
from audit.metrics.bootstrap import percentile_interval
from audit.seeding import rng as stream

TOL = 1e-9
GERMAN = Path(__file__).resolve().parent.parent / "examples" / "credit" / "data" / "german_credit.csv"

# fairlearn's own metric functions; precision with zero_division=nan so that "undefined" reads the same
# on both sides (scikit-learn's default returns 0.0 with a warning).
FL_METRICS = {
    "selection_rate": flm.selection_rate,
    "accuracy": accuracy_score,
    "tpr": flm.true_positive_rate,
    "fpr": flm.false_positive_rate,
    "fnr": flm.false_negative_rate,
    "precision": partial(precision_score, zero_division=np.nan),
}


def _nan_rate(num: str, den: tuple[str, ...]):
    """A rate that is NaN on 0/0 (fairlearn's built-ins return 0 there), for MetricFrame."""
    cells = {"tn": (0, 0), "fp": (0, 1), "fn": (1, 0), "tp": (1, 1)}

    def metric(y_true, y_pred):
        y, p = np.asarray(y_true), np.asarray(y_pred)
        c = {k: np.sum((y == a) & (p == b)) for k, (a, b) in cells.items()}
        d = sum(c[k] for k in den)
        return c[num] / d if d else np.nan

    return metric


def assert_matches_metricframe(y, yhat, sf: pd.DataFrame | np.ndarray, codes, n_groups, pos_label=1):
    """Every per-group rate and every disparity equals fairlearn's to 1e-9."""
    res = F.fairness_audit(y, yhat, codes, n_groups, pos_label=pos_label, n_boot=0)
    mf = flm.MetricFrame(metrics=FL_METRICS, y_true=y, y_pred=yhat, sensitive_features=sf)
    by = mf.by_group
    assert len(by) == n_groups
    for name in FL_METRICS:
        np.testing.assert_allclose(res.rates[name], by[name].to_numpy(dtype=float), rtol=0, atol=TOL,
                                   err_msg=name)
    counts = flm.MetricFrame(metrics=flm.count, y_true=y, y_pred=yhat, sensitive_features=sf).by_group
    np.testing.assert_array_equal(res.n, counts.fillna(0).to_numpy(dtype=int))
    d = {k: v.value for k, v in res.disparities.items()}
    kw = dict(sensitive_features=sf)
    assert d["demographic_parity_difference"] == pytest.approx(
        flm.demographic_parity_difference(y, yhat, **kw), abs=TOL)
    assert d["demographic_parity_ratio"] == pytest.approx(flm.demographic_parity_ratio(y, yhat, **kw), abs=TOL)
    assert d["equalized_odds_difference"] == pytest.approx(flm.equalized_odds_difference(y, yhat, **kw), abs=TOL)
    assert d["equalized_odds_ratio"] == pytest.approx(flm.equalized_odds_ratio(y, yhat, **kw), abs=TOL)
    assert d["equal_opportunity_difference"] == pytest.approx(
        flm.equal_opportunity_difference(y, yhat, **kw), abs=TOL)
    assert d["predictive_parity_difference"] == pytest.approx(mf.difference()["precision"], abs=TOL)
    # Four-fifths against the group with the highest selection rate (29 CFR 1607.4(D)), from MetricFrame's
    # selection rates: the demographic parity ratio.
    sr = by["selection_rate"].to_numpy(dtype=float)
    assert res.four_fifths.reference == int(np.nanargmax(sr))
    np.testing.assert_allclose(res.four_fifths.ratios, sr / np.nanmax(sr), atol=TOL)
    assert d["disparate_impact_ratio"] == pytest.approx(np.nanmin(sr) / np.nanmax(sr), abs=TOL)
    assert d["disparate_impact_ratio"] == pytest.approx(flm.demographic_parity_ratio(y, yhat, **kw), abs=TOL)
    return res


# ------------------------------------------------------------------------------------------ layout


def test_group_confusion_is_sklearn_confusion_per_group():
    r = np.random.default_rng(0)
    y, yhat, g = r.integers(0, 2, 500), r.integers(0, 2, 500), r.integers(0, 5, 500)
    counts = F.group_confusion(y, yhat, g, 6)
    assert counts.shape == (6, 4) and counts.dtype == np.int64
    for k in range(5):
        m = g == k
        np.testing.assert_array_equal(counts[k], confusion_matrix(y[m], yhat[m], labels=[0, 1]).ravel())
    np.testing.assert_array_equal(counts[5], 0)  # a code with no rows is an empty group, not an error
    with pytest.raises(ValueError):
        F.group_confusion(y, yhat, g, 4)


def test_rates_work_over_a_leading_bootstrap_axis():
    r = np.random.default_rng(1)
    counts = r.integers(0, 50, (7, 3, 4))
    batched = F.group_rates(counts)
    for b in range(7):
        single = F.group_rates(counts[b])
        for k in F.RATES:
            np.testing.assert_array_equal(batched[k][b], single[k])
    d = F.disparities(batched)
    assert d["demographic_parity_difference"].shape == (7,)


def test_intersect_groups_matches_multiindex_product_order():
    a = np.array(["m", "f", "m", "f", "m"])
    b = np.array([3, 1, 2, 3, 1])
    codes, n_groups, levels = F.intersect_groups(a, b)
    expected = list(pd.MultiIndex.from_product([np.unique(a), np.unique(b)]))
    assert n_groups == 6 and levels == expected
    assert [levels[c] for c in codes] == list(zip(a, b))


# -------------------------------------------------------------------------------- real-data parity


def test_matches_metricframe_breast_cancer_real_feature_groups():
    """Bundled real data (no download): logistic regression on breast_cancer; groups are terciles of the
    real 'mean radius' feature, and, intersectionally, terciles x halves of 'mean texture'."""
    ds = load_breast_cancer()
    X, y = ds.data, ds.target
    perm = np.random.default_rng(0).permutation(len(y))
    fit, ev = perm[:300], perm[300:]
    model = LogisticRegression(max_iter=5000).fit(StandardScaler().fit(X[fit]).transform(X[fit]), y[fit])
    yhat = model.predict(StandardScaler().fit(X[fit]).transform(X[ev]))
    y = y[ev]
    radius = np.digitize(X[ev, 0], np.quantile(X[ev, 0], [1 / 3, 2 / 3]))
    texture = (X[ev, 1] > np.median(X[ev, 1])).astype(int)
    codes, g, _ = F.intersect_groups(radius)
    assert_matches_metricframe(y, yhat, radius, codes, g)
    codes, g, _ = F.intersect_groups(radius, texture)
    assert_matches_metricframe(y, yhat, pd.DataFrame({"radius": radius, "texture": texture}), codes, g)


def test_matches_metricframe_german_credit_sex_and_age():
    """German credit (UCI Statlog, vendored with the credit example): logistic regression on the
    non-sensitive features, audited by sex, by binned age, and by sex x age (8 intersectional groups)
    against MetricFrame with two sensitive-feature columns."""
    df = pd.read_csv(GERMAN)
    y = df["risk"].to_numpy()
    X = pd.get_dummies(df.drop(columns=["risk", "sex", "age"]), drop_first=True).astype(float).to_numpy()
    perm = np.random.default_rng(0).permutation(len(y))
    fit = perm[:500]
    sc = StandardScaler().fit(X[fit])
    yhat = LogisticRegression(max_iter=5000).fit(sc.transform(X[fit]), y[fit]).predict(sc.transform(X))
    sex = df["sex"].to_numpy()
    age = pd.cut(df["age"], [0, 25, 35, 50, 200],
                 labels=["<=25", "26-35", "36-50", ">50"]).astype(str).to_numpy()
    for cols in ((sex,), (age,)):
        codes, g, _ = F.intersect_groups(*cols)
        assert_matches_metricframe(y, yhat, cols[0], codes, g)
    codes, g, levels = F.intersect_groups(sex, age)
    res = assert_matches_metricframe(y, yhat, pd.DataFrame({"sex": sex, "age": age}), codes, g)
    assert g == 8 and res.present.all()
    # The bad-risk class as the positive label: the same numbers fairlearn gives with pos_label=0.
    res0 = F.fairness_audit(y, yhat, codes, g, pos_label=0, n_boot=0)
    mf0 = flm.MetricFrame(metrics={"tpr": partial(flm.true_positive_rate, pos_label=0),
                                   "sr": partial(flm.selection_rate, pos_label=0)},
                          y_true=y, y_pred=yhat, sensitive_features=pd.DataFrame({"sex": sex, "age": age}))
    np.testing.assert_allclose(res0.rates["tpr"], mf0.by_group["tpr"], atol=TOL, rtol=0)
    np.testing.assert_allclose(res0.rates["selection_rate"], mf0.by_group["sr"], atol=TOL, rtol=0)


def test_multiclass_one_vs_rest_matches_metricframe_on_binarised_labels():
    """wine (3 classes, bundled): auditing class k is fairlearn on 1[y == k], 1[yhat == k]."""
    ds = load_wine()
    X = StandardScaler().fit_transform(ds.data)
    y = ds.target
    yhat = LogisticRegression(max_iter=5000, C=0.05).fit(X[::2], y[::2]).predict(X)
    alcohol = (ds.data[:, 0] > np.median(ds.data[:, 0])).astype(int)
    codes, g, _ = F.intersect_groups(alcohol)
    for k in range(3):
        res = F.fairness_audit(y, yhat, codes, g, pos_label=k, n_boot=0)
        ref = assert_matches_metricframe((y == k).astype(int), (yhat == k).astype(int), alcohol, codes, g)
        for name in F.RATES:
            np.testing.assert_array_equal(res.rates[name], ref.rates[name])


# -------------------------------------------------------------------------------------- edge cases


def test_group_without_positives_is_nan_where_fairlearn_says_zero():
    """Group 2 has no positives, so its TPR and FNR are 0/0.

    fairlearn's true_positive_rate / false_negative_rate go through scikit-learn's
    confusion_matrix(normalize="true"), which turns 0/0 into 0: fairlearn reports TPR = FNR = 0 for the
    group (TPR + FNR = 0, not 1), and equal opportunity / equalized odds then count it as the worst group:
    0.5 here, where every group that has positives has TPR 0.5 and every group has FPR 0.5, i.e. no
    disparity. We report NaN, leave the group out of TPR-based disparities (0 here) and list it as
    undefined. With NaN-returning metrics in MetricFrame, fairlearn's numbers are ours exactly.
    """
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0])
    yhat = np.array([1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0])
    g = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    res = F.fairness_audit(y, yhat, g, 3, n_boot=0, min_group_size=1)
    mf = flm.MetricFrame(metrics={"tpr": flm.true_positive_rate, "fnr": flm.false_negative_rate},
                         y_true=y, y_pred=yhat, sensitive_features=g)
    assert mf.by_group.loc[2, "tpr"] == 0.0 and mf.by_group.loc[2, "fnr"] == 0.0
    assert np.isnan(res.rates["tpr"][2]) and np.isnan(res.rates["fnr"][2])
    np.testing.assert_allclose(res.rates["tpr"][:2], mf.by_group["tpr"].to_numpy()[:2], atol=TOL)
    np.testing.assert_allclose(res.rates["fpr"], 0.5)

    assert flm.equalized_odds_difference(y, yhat, sensitive_features=g) == pytest.approx(0.5)
    assert flm.equal_opportunity_difference(y, yhat, sensitive_features=g) == pytest.approx(0.5)
    assert res.disparities["equalized_odds_difference"].value == 0.0
    assert res.disparities["equal_opportunity_difference"].value == 0.0
    nan_frame = flm.MetricFrame(metrics={"tpr": _nan_rate("tp", ("tp", "fn")),
                                         "fpr": _nan_rate("fp", ("fp", "tn"))},
                                y_true=y, y_pred=yhat, sensitive_features=g)
    assert max(nan_frame.difference()) == pytest.approx(res.disparities["equalized_odds_difference"].value, abs=TOL)
    assert min(nan_frame.ratio()) == pytest.approx(res.disparities["equalized_odds_ratio"].value, abs=TOL)
    assert res.disparities["equal_opportunity_difference"].undefined_groups == (2,)
    assert res.disparities["equalized_odds_difference"].undefined_groups == (2,)
    assert not res.disparities["demographic_parity_difference"].undefined_groups

    # A group with no positive predictions: precision 0/0 is NaN here, 0.0 (plus a warning) in
    # scikit-learn's precision_score default, which MetricFrame(precision_score) inherits.
    yhat2 = np.where(g == 2, 0, yhat)
    res2 = F.fairness_audit(y, yhat2, g, 3, n_boot=0, min_group_size=1)
    assert np.isnan(res2.rates["precision"][2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert precision_score(y[g == 2], yhat2[g == 2]) == 0.0
    assert res2.disparities["predictive_parity_difference"].undefined_groups == (2,)


def test_single_group_and_empty_intersection():
    r = np.random.default_rng(3)
    y, yhat = r.integers(0, 2, 200), r.integers(0, 2, 200)
    one = np.zeros(200, dtype=int)
    res = F.fairness_audit(y, yhat, one, 1, n_boot=200, rng=np.random.default_rng(0))
    assert res.disparities["demographic_parity_difference"].value == 0.0
    assert res.disparities["demographic_parity_ratio"].value == 1.0
    assert flm.demographic_parity_difference(y, yhat, sensitive_features=one) == 0.0
    assert flm.demographic_parity_ratio(y, yhat, sensitive_features=one) == 1.0
    d = res.disparities["demographic_parity_difference"]
    assert (d.ci_low, d.ci_high) == (0.0, 0.0)      # a single group's range is 0 in every replicate
    assert res.four_fifths.passed and res.four_fifths.min_ratio == 1.0

    # Two attributes whose combination ("b", 1) never occurs: n = 0 and NaN rates, like MetricFrame's
    # reindexed product (an all-NaN row that its min/max skip).
    a = np.where(np.arange(200) < 100, "a", "b")
    b = np.where(np.arange(200) < 150, 0, 1)
    codes, g, levels = F.intersect_groups(a, b)
    res = assert_matches_metricframe(y, yhat, pd.DataFrame({"a": a, "b": b}), codes, g)
    assert levels[1] == ("a", 1) and res.n[1] == 0 and not res.present[1]
    assert not res.small[1]            # empty is not "small": there is nothing to gate on


def test_small_groups_are_flagged_by_the_metrics_own_denominator():
    r = np.random.default_rng(4)
    g = np.repeat([0, 1, 2], [500, 400, 20])
    y = (r.random(920) < np.where(g == 1, 0.03, 0.5)).astype(int)       # group 1: ~12 positives
    yhat = (r.random(920) < 0.4).astype(int)
    res = F.fairness_audit(y, yhat, g, 3, n_boot=0, min_group_size=30)
    np.testing.assert_array_equal(res.small, [False, False, True])
    assert res.disparities["demographic_parity_difference"].small_group_involved       # group 2 (n=20)
    big = F.fairness_audit(y[g < 2], yhat[g < 2], g[g < 2], 2, n_boot=0, min_group_size=30)
    assert not big.disparities["demographic_parity_difference"].small_group_involved
    assert big.disparities["equal_opportunity_difference"].small_group_involved         # group 1's TPR rests on ~12


def test_four_fifths_against_the_highest_selection_rate():
    # Group sizes 100, 300, 50; selection rates 0.30, 0.50, 0.44: every group against the highest (0.50).
    n = np.array([100, 300, 50])
    sel = np.array([30, 150, 22])
    counts = np.stack([n - sel, sel, np.zeros(3, int), np.zeros(3, int)], axis=1)   # all negatives
    res = F.fairness_from_counts(counts, n_boot=0, min_group_size=10)
    ff = res.four_fifths
    assert ff.reference == 1
    np.testing.assert_allclose(ff.ratios, [0.6, 1.0, 0.88])
    assert ff.min_ratio == pytest.approx(0.6) and ff.worst_group == 0 and not ff.passed
    # A named comparison group changes only the reference ratios, never the rule.
    named = F.fairness_from_counts(counts, n_boot=0, reference=2)
    assert named.four_fifths.min_ratio == pytest.approx(0.6)
    np.testing.assert_allclose(named.reference_ratios, [0.3 / 0.44, 0.5 / 0.44, 1.0])


def test_four_fifths_sees_adverse_impact_against_the_largest_group():
    """Regression (issue #10): the majority selected at 0.32, a minority at 0.62. Against the largest group
    with ratios capped at 1 the rule read 1.0 with interval [1, 1] and passed; the EEOC rule compares with
    the highest selection rate: 0.32 / 0.62 = 0.516, a failure with an interval that excludes 0.8."""
    n = np.array([800, 200])
    sel = np.array([256, 124])
    counts = np.stack([n - sel, sel, np.zeros(2, int), np.zeros(2, int)], axis=1)
    for reference in ("largest", "highest", 0):
        res = F.fairness_from_counts(counts, n_boot=1000, rng=np.random.default_rng(0), reference=reference)
        ff = res.four_fifths
        assert ff.reference == 1 and ff.worst_group == 0
        assert ff.min_ratio == pytest.approx(0.32 / 0.62) and not ff.passed
        assert ff.ci_low < ff.min_ratio < ff.ci_high < 0.8
        assert res.disparities["disparate_impact_ratio"].value == pytest.approx(
            res.disparities["demographic_parity_ratio"].value)


# --------------------------------------------------------------------------------------- bootstrap


def test_stratified_replicates_keep_group_sizes_and_are_reproducible():
    r = np.random.default_rng(5)
    g = r.integers(0, 6, 3000)
    y, yhat = r.integers(0, 2, 3000), r.integers(0, 2, 3000)
    counts = F.group_confusion(y, yhat, g, 7)          # group 6 is empty
    boot = F.bootstrap_group_counts(counts, 300, stream(7, "fairness"))
    assert boot.shape == (300, 7, 4)
    np.testing.assert_array_equal(boot.sum(-1), np.broadcast_to(counts.sum(-1), (300, 7)))
    np.testing.assert_allclose(boot.mean(0), counts, rtol=0.05)
    a = F.fairness_audit(y, yhat, g, 7, n_boot=300, rng=stream(7, "fairness"))
    b = F.fairness_audit(y, yhat, g, 7, n_boot=300, rng=stream(7, "fairness"))
    for k in F.RATES:
        np.testing.assert_array_equal(a.rate_ci[k][0], b.rate_ci[k][0])
    # Pointwise intervals of a large group agree with the normal approximation.
    a = F.fairness_from_counts(counts, n_boot=4000, rng=stream(8, "fairness"))
    sr, n = a.rates["selection_rate"][0], a.n[0]
    half = 1.96 * np.sqrt(sr * (1 - sr) / n)
    lo, hi = a.rate_ci["selection_rate"][0][0], a.rate_ci["selection_rate"][1][0]
    assert lo == pytest.approx(sr - half, abs=0.25 * half) and hi == pytest.approx(sr + half, abs=0.25 * half)
    assert np.isnan(a.rate_ci["selection_rate"][0][6])


def test_fast_percentile_interval_equals_nanquantile():
    r = np.random.default_rng(6)
    reps = r.random((301, 9))
    reps[r.random((301, 9)) < 0.2] = np.nan
    reps[:, 4] = np.nan                      # all NaN
    reps[:, 5] = np.round(reps[:, 5], 1)     # ties
    reps[:300, 6] = np.nan                   # one value
    lo, hi = percentile_interval(reps, 0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN column
        rlo, rhi = np.nanquantile(reps, 0.05, axis=0), np.nanquantile(reps, 0.95, axis=0)
    np.testing.assert_allclose(lo, rlo, rtol=0, atol=1e-15)
    np.testing.assert_allclose(hi, rhi, rtol=0, atol=1e-15)
    lo1, hi1 = percentile_interval(reps[:, 0])
    assert np.ndim(lo1) == 0 and (lo1, hi1) == pytest.approx(
        (np.nanquantile(reps[:, 0], 0.025), np.nanquantile(reps[:, 0], 0.975)), abs=1e-15)
    lo2, hi2 = percentile_interval(reps.T, 0.9, axis=1)  # any axis
    np.testing.assert_array_equal(lo2, lo)
    np.testing.assert_array_equal(hi2, hi)


def _null_data(seed: int, n_groups: int = 24, per_group: int = 100, rate: float = 0.3):
    """No true disparity: every group selects with the same probability."""
    r = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    return r.integers(0, 2, g.size), (r.random(g.size) < rate).astype(int), g


def test_fairlearn_whole_frame_bootstrap_of_the_max_difference_is_shifted_upwards():
    """fairlearn 0.15 does bootstrap: MetricFrame(n_boot=..., ci_quantiles=..., random_state=int) resamples
    the whole frame with replacement (DataFrame.sample(frac=1, replace=True)), recomputes every group and
    takes np.quantile of ``difference()`` = max - min over the groups present in that replicate
    (fairlearn/metrics/_bootstrap.py, _metric_frame.py::_populate_results_ci).

    With 24 groups of 100 rows and the same true selection rate (no disparity), the max - min of the
    replicates sits above the estimate's: every replicate adds its own noise to 24 already noisy rates, and
    the range of noisier rates is wider. The median replicate is above the point estimate and here even the
    2.5% quantile is, so fairlearn's 95% "interval" excludes its own point estimate (this happens in about
    half of such datasets; test_percentile_interval_... below measures it on 150) and always excludes the
    true value 0. Our default interval (a simultaneous band over the groups, projected onto max - min)
    contains both.
    """
    y, yhat, g = _null_data(1)
    mf = flm.MetricFrame(metrics=flm.selection_rate, y_true=y, y_pred=yhat, sensitive_features=g,
                         n_boot=100, ci_quantiles=[0.025, 0.5, 0.975], random_state=1)
    point = mf.difference()
    lo, med, hi = mf.difference_ci()
    assert point == pytest.approx(0.15)
    assert med > point + 0.05                      # the bootstrap distribution is centred well above it
    assert lo > point                              # the 95% interval misses the point estimate...
    assert lo > 0.1                                # ...and the true disparity 0
    ours = F.fairness_audit(y, yhat, g, 24, n_boot=1000, rng=stream(1, "fairness"))
    d = ours.disparities["demographic_parity_difference"]
    assert d.value == pytest.approx(point, abs=TOL)
    assert d.ci_low <= d.value <= d.ci_high and d.ci_low == 0.0
    # Stratifying alone does not fix it: our own percentile interval of the replicated max - min is
    # shifted the same way.
    pct = F.fairness_audit(y, yhat, g, 24, n_boot=1000, rng=stream(1, "fairness"), interval="percentile")
    assert pct.disparities["demographic_parity_difference"].ci_low > point


def test_percentile_interval_of_max_difference_misses_while_simultaneous_covers():
    """Over 150 datasets without disparity (24 groups x 100 rows): the percentile interval of the
    stratified replicates of max - min contains the point estimate in only about half of them and the true
    value 0 in none; the projected simultaneous band contains the point estimate always (by construction)
    and the true value 0 in at least ~95% of them."""
    contains_point_pct = contains_point_sim = covers_truth_sim = covers_truth_pct = 0
    n_sets = 150
    for seed in range(n_sets):
        y, yhat, g = _null_data(1000 + seed)
        counts = F.group_confusion(y, yhat, g, 24)
        sim = F.fairness_from_counts(counts, n_boot=300, rng=stream(seed, "fairness", "null")).disparities[
            "demographic_parity_difference"]
        pct = F.fairness_from_counts(counts, n_boot=300, rng=stream(seed, "fairness", "null"),
                                     interval="percentile").disparities["demographic_parity_difference"]
        contains_point_pct += pct.ci_low <= pct.value <= pct.ci_high
        contains_point_sim += sim.ci_low <= sim.value <= sim.ci_high
        covers_truth_pct += pct.ci_low <= 0.0
        covers_truth_sim += sim.ci_low <= 0.0
    assert contains_point_sim == n_sets
    assert covers_truth_sim >= 0.93 * n_sets
    assert contains_point_pct <= 0.75 * n_sets
    assert covers_truth_pct == 0


def test_fairlearn_bootstrap_lets_group_sizes_vary_and_small_groups_vanish():
    """Whole-frame resampling redraws group sizes: fairlearn's bootstrap interval of a group's row count is
    not a single number, and a group of 4 rows is absent from about e^-4 ~ 2% of replicates (its max - min
    is then taken over the other groups only). Stratified replicates keep every n_g fixed."""
    r = np.random.default_rng(9)
    g = np.repeat([0, 1, 2], [300, 300, 4])
    y, yhat = r.integers(0, 2, g.size), r.integers(0, 2, g.size)
    mf = flm.MetricFrame(metrics={"count": flm.count}, y_true=y, y_pred=yhat, sensitive_features=g,
                         n_boot=100, ci_quantiles=[0.01, 0.99], random_state=0)
    lo, hi = mf.by_group_ci
    assert lo.loc[2, "count"] < 4 < hi.loc[2, "count"] and lo.loc[0, "count"] < 300 < hi.loc[0, "count"]
    boot = F.bootstrap_group_counts(F.group_confusion(y, yhat, g, 3), 200, stream(0, "fairness"))
    assert (boot.sum(-1) == [300, 300, 4]).all()


def test_simultaneous_band_covers_jointly_and_contains_the_point():
    r = np.random.default_rng(11)
    reps = r.normal(size=(2000, 10))
    lo, hi = F.simultaneous_band(reps, np.zeros(10), 0.95)
    inside = ((reps >= lo) & (reps <= hi)).all(1).mean()
    assert 0.95 <= inside <= 0.96
    # Wider than pointwise 95% (1.96) and close to the Sidak value for 10 independent columns (2.80).
    assert np.all(hi > 1.96) and np.all(-lo > 1.96)
    assert np.mean(hi) == pytest.approx(2.80, abs=0.15)
    # NaN columns are left out; NaN replicates do not constrain.
    reps[:100, 3] = np.nan
    lo, hi = F.simultaneous_band(reps, np.array([0.0] * 9 + [np.nan]), 0.95)
    assert np.isnan(lo[9]) and np.isfinite(lo[3])


def test_projected_intervals_contain_every_point_estimate():
    r = np.random.default_rng(12)
    g = r.integers(0, 8, 4000)
    y = (r.random(4000) < 0.3 + 0.04 * g).astype(int)
    yhat = np.where(r.random(4000) < 0.8, y, 1 - y)
    res = F.fairness_audit(y, yhat, g, 8, n_boot=500, rng=stream(0, "fairness"))
    for d in res.disparities.values():
        assert d.ci_low <= d.value <= d.ci_high, d.name
        assert d.ci_high > d.ci_low
    assert res.four_fifths.ci_low <= res.four_fifths.min_ratio <= res.four_fifths.ci_high
    with pytest.raises(ValueError):
        F.fairness_audit(y, yhat, g, 8, n_boot=10)          # a bootstrap needs a seeded Generator


def test_equalized_odds_interval_does_not_collapse_at_tpr_1_and_fpr_0():
    """Regression (issue #10): two groups with TPR 60/60 and FPR 0/60 got an equalized-odds interval of [0, 0]
    (every multinomial replicate sits at the boundary, and so does the band). The posterior draws keep the
    width 60 positives and 60 negatives allow: a Jeffreys-like 0.04 or so, and never a point."""
    counts = np.array([[60, 0, 0, 60], [60, 0, 0, 60]])
    res = F.fairness_from_counts(counts, n_boot=1000, rng=stream(0, "fairness"))
    for name in ("equalized_odds_difference", "equal_opportunity_difference"):
        d = res.disparities[name]
        assert d.value == 0.0 and d.ci_low == 0.0 and 0.02 < d.ci_high < 0.15, (name, d.ci_high)
    assert res.disparities["equalized_odds_ratio"].ci_low < 0.97
    tpr_lo, tpr_hi = res.rate_ci["tpr"]
    assert np.all(tpr_hi == 1.0) and np.all(tpr_lo < 0.97)
    # the percentile option is built from the same non-collapsing draws
    pct = F.fairness_from_counts(counts, n_boot=1000, rng=stream(0, "fairness"), interval="percentile")
    assert pct.disparities["equal_opportunity_difference"].ci_high > 0


def test_posterior_group_draws_keep_group_sizes_and_give_jeffreys_tprs():
    from scipy.stats import beta

    counts = np.array([[50, 10, 5, 35], [0, 0, 0, 0], [10, 0, 0, 20]])
    draws = F.posterior_group_counts(counts, 20000, stream(1, "fairness"))
    np.testing.assert_allclose(draws.sum(-1), np.broadcast_to(counts.sum(-1), (20000, 3)))
    tpr = F.group_rates(draws)["tpr"]
    assert np.all(np.isnan(tpr[:, 1]))                      # an empty group stays undefined
    lo, hi = percentile_interval(tpr[:, 0])
    assert (lo, hi) == pytest.approx(beta.ppf([0.025, 0.975], 35.5, 5.5), abs=0.005)
    assert percentile_interval(tpr[:, 2])[0] == pytest.approx(beta.ppf(0.025, 20.5, 0.5), abs=0.005)


def test_two_group_disparity_interval_is_the_interval_of_one_difference():
    """With two groups the default interval is that of their one difference (projected onto |d|): at large
    n and a clear gap it matches the closed-form Wald interval d +- 1.96 sqrt(v1 + v2), where the band over
    the two rates, projected, was about 1.4 times as wide (bench/coverage.py)."""
    n = np.array([4000, 3000])
    sel = np.array([1600, 900])                         # 0.40 vs 0.30
    counts = np.stack([n - sel, sel, np.zeros(2, int), np.zeros(2, int)], axis=1)
    res = F.fairness_from_counts(counts, n_boot=4000, rng=stream(3, "fairness"))
    d = res.disparities["demographic_parity_difference"]
    p = sel / n
    half = 1.959964 * np.sqrt((p * (1 - p) / n).sum())
    assert (d.ci_low, d.ci_high) == pytest.approx((0.1 - half, 0.1 + half), abs=0.003)
    r = res.disparities["demographic_parity_ratio"]       # log-ratio scale: delta method
    se_log = np.sqrt(((1 - p) / (n * p)).sum())
    assert (r.ci_low, r.ci_high) == pytest.approx(tuple(0.75 * np.exp([-1.959964 * se_log, 1.959964 * se_log])),
                                                  abs=0.004)
    # equal rates: the interval of |d| starts at 0 and contains the estimate
    same = F.fairness_from_counts(np.array([[60, 40, 0, 0], [61, 39, 0, 0]]), n_boot=1000, rng=stream(0, "f"))
    dd = same.disparities["demographic_parity_difference"]
    assert dd.ci_low == 0.0 and dd.ci_low <= dd.value <= dd.ci_high
