"""The fairness suite end to end on the credit example (real model, real data): its numbers equal
fairlearn's MetricFrame and disparity functions, small groups make gates inconclusive, the
ThresholdOptimizer diagnostic is there for binary tasks, multiclass is audited one-vs-rest on a named class,
data without sensitive attributes is reported (not a crash), and the crossing with robustness columns."""

from __future__ import annotations

import json
import warnings
from functools import partial

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as flm
from sklearn.metrics import accuracy_score, confusion_matrix, precision_score

from audit.engine.table import ExampleTable
from conftest import DIGITS_MODEL, ROOT, assert_failed_run, run_cli

TOL = 1e-9
CREDIT = (ROOT / "recipes" / "credit.toml").read_text().replace("../examples", f"{ROOT}/examples")


@pytest.fixture(scope="module")
def credit_run(credit_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("credit-run")
    res = run_cli("run", credit_checkpoint, "--recipe", ROOT / "recipes" / "credit.toml", "--out", out, "--quiet")
    assert res.exit_code == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    return report, ExampleTable.load(out / "examples.npz"), out


def _rec(report, name, **params):
    found = [m for m in report["metrics"] if m["suite"] == "fairness" and m["name"] == name and m["params"] == params]
    assert len(found) == 1, (name, params, len(found))
    return found[0]


def _nan_ratio(num, den):
    def metric(y_true, y_pred):
        y, p = np.asarray(y_true), np.asarray(y_pred)
        cm = confusion_matrix(y, p, labels=[0, 1]).ravel()  # tn, fp, fn, tp
        d = sum(cm[i] for i in den)
        return cm[num] / d if d else np.nan
    return metric


FL = {"selection_rate": flm.selection_rate, "accuracy": accuracy_score, "tpr": flm.true_positive_rate,
      "fpr": flm.false_positive_rate, "fnr": flm.false_negative_rate,
      "precision": partial(precision_score, zero_division=np.nan),
      "fdr": _nan_ratio(1, (1, 3)), "for": _nan_ratio(2, (0, 2)), "count": flm.count}


def _features(t: ExampleTable, attr: str) -> pd.DataFrame:
    names = attr.split("&")
    return pd.DataFrame({a: np.asarray(t.categories[a])[t[f"group:{a}"]] for a in names})


@pytest.mark.parametrize("attr", ["sex", "age", "sex&age"])
def test_group_metrics_and_disparities_equal_fairlearn(credit_run, attr):
    report, t, _ = credit_run
    y, pred = t["label"], t["pred"]  # class 1 = "good" is the positive class of the recipe
    sf = _features(t, attr)
    mf = flm.MetricFrame(metrics=FL, y_true=y, y_pred=pred, sensitive_features=sf)
    by = mf.by_group
    for key, row in by.iterrows():
        group = " & ".join(key) if isinstance(key, tuple) else key
        assert _rec(report, "group_selection_rate", attribute=attr, group=group)["n"] == row["count"]
        for rate in ("selection_rate", "accuracy", "tpr", "fpr", "fnr", "precision", "fdr", "for"):
            rec = _rec(report, f"group_{rate}", attribute=attr, group=group)
            want = row[rate]
            if np.isnan(want):
                assert rec["value"] is None
            else:
                assert rec["value"] == pytest.approx(want, abs=TOL), (rate, group)
                assert rec["ci_low"] <= rec["value"] + TOL and rec["value"] <= rec["ci_high"] + TOL
    fl = {
        "demographic_parity_difference": flm.demographic_parity_difference,
        "demographic_parity_ratio": flm.demographic_parity_ratio,
        "equalized_odds_difference": flm.equalized_odds_difference,
        "equalized_odds_ratio": flm.equalized_odds_ratio,
        "equal_opportunity_difference": flm.equal_opportunity_difference,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in fl.items():
            rec = _rec(report, name, attribute=attr)
            assert rec["value"] == pytest.approx(fn(y, pred, sensitive_features=sf), abs=TOL), name
            # the default simultaneous interval always contains its own estimate
            assert rec["ci_low"] <= rec["value"] + TOL <= rec["ci_high"] + 2 * TOL
    ppv = by["precision"].dropna()
    assert _rec(report, "predictive_parity_difference", attribute=attr)["value"] == pytest.approx(
        ppv.max() - ppv.min(), abs=TOL)
    # four-fifths: selection-rate ratio to the highest selection rate (29 CFR 1607.4(D))
    sr = by["selection_rate"].to_numpy()
    assert _rec(report, "disparate_impact_ratio", attribute=attr)["value"] == pytest.approx(
        np.nanmin(sr) / np.nanmax(sr), abs=TOL)


def test_small_groups_make_gates_inconclusive(credit_run, credit_checkpoint, write_recipe, tmp_path):
    report, t, _ = credit_run
    gates = {g["id"]: g for g in report["gates"]}
    assert gates["four-fifths-sex"]["status"] == "pass"
    g = gates["demographic-parity-sex-and-age"]
    assert g["status"] == "inconclusive" and "< 30 examples" in g["message"] and g["severity"] == "warn"
    small = [n for n, c in zip(*np.unique(_features(t, "sex&age").agg(" & ".join, axis=1), return_counts=True))
             if c < 30]
    assert small  # the credit test split has intersectional groups below 30
    tiny = small[0]
    rec = _rec(report, "group_selection_rate", attribute="sex&age", group=tiny)
    assert rec["inconclusive"] == f"group '{tiny}' of 'sex&age' has {rec['n']} < 30 examples"
    # a blocking gate on the tiny group is inconclusive and fails the run, unless it tolerates that
    gate = (f'\n[[gates]]\nid = "tiny"\nmetric = "group_selection_rate"\n'
            f'params = {{ attribute = "sex&age", group = "{tiny}" }}\nop = ">="\nthreshold = 0.0\n')
    res = run_cli("run", credit_checkpoint, "--recipe", write_recipe(CREDIT + gate), "--out", tmp_path / "a",
                  "--quiet", "--suite", "fairness")
    assert res.exit_code == 1, res.stderr
    out = {g["id"]: g for g in json.loads((tmp_path / "a" / "report.json").read_text())["gates"]}
    assert out["tiny"]["status"] == "inconclusive" and tiny in out["tiny"]["message"]
    res = run_cli("run", credit_checkpoint, "--recipe", write_recipe(CREDIT + gate + 'inconclusive = "pass"\n', "b.toml"),
                  "--out", tmp_path / "b", "--quiet", "--suite", "fairness")
    assert res.exit_code == 0, res.stderr


def test_threshold_optimizer_diagnostic_for_binary(credit_run):
    report, t, out = credit_run
    s = report["suites"]["fairness"]
    for a in s["tables"]["attributes"]:
        o = a["optimizer"]
        assert o["status"] == "ok" and o["n_fit"] + o["n_eval"] == len(t)
        assert len(o["groups"]) == len(a["groups"]) and all("score" in g["rule"] for g in o["groups"])
        rec = _rec(report, "postprocessed_accuracy", attribute=a["attribute"])
        assert 0.0 <= rec["value"] <= 1.0 and rec["n"] == o["n_eval"]
    html = (out / "report.html").read_text()
    assert "a diagnostic, not applied" in html and "Nothing in this report uses these thresholds" in html


def test_crossing_ece_per_group_equals_calibration_module(credit_run):
    from audit.metrics.calibration import ece

    report, t, _ = credit_run
    codes = t["group:sex"]
    for g, name in enumerate(t.categories["sex"]):
        m = codes == g
        assert _rec(report, "group_ece", attribute="sex", group=name)["value"] == pytest.approx(
            ece(t.probs[m], t["label"][m], 15), abs=1e-12)


def test_html_has_fairness_section_with_svgs_and_explanations(credit_run):
    report, _, out = credit_run
    html = (out / "report.html").read_text()
    sec = html[html.index('id="suite-fairness"'):html.index('id="provenance"')]
    assert sec.count("<svg") >= 9  # three figures per attribute: sex, age, sex&age
    assert "Four-fifths rule" in sec and "below min. size" in sec
    assert "Disparity intervals are simultaneous" in sec and "fairlearn reports 0 there" in sec
    assert "<script" not in html and len(html.encode()) < 1_000_000


def test_data_without_sensitive_attributes_is_reported_not_crashed(digits_checkpoint, write_recipe, tmp_path):
    from conftest import DIGITS_DATA

    gate = ('\n[[gates]]\nid = "dp"\nmetric = "demographic_parity_difference"\n'
            'params = { attribute = "sex" }\nop = "<="\nthreshold = 0.1\n')
    text = DIGITS_MODEL + DIGITS_DATA + "\n[fairness]\n"
    res = run_cli("run", digits_checkpoint, "--recipe", write_recipe(text), "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 0, res.stderr
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    check = next(c for c in r["checks"] if c["id"] == "sensitive_attributes")
    assert check["status"] == "warn" and "no sensitive attributes" in check["message"].lower()
    assert not [m for m in r["metrics"] if m["suite"] == "fairness"]
    assert "no sensitive attributes" in (tmp_path / "o" / "report.html").read_text()
    # a gate on an attribute of such data is a mistake in the recipe, found before any suite runs: exit 2
    res = run_cli("run", digits_checkpoint, "--recipe", write_recipe(text + gate), "--out", tmp_path / "o2", "--quiet")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "[[gates]] #1 (dp) params: attribute = 'sex', but the data has no sensitive attributes" in res.stderr


def _digits_with_groups(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)[:600]
    y = d.target[:600].astype(np.int64)
    grp = np.where(np.arange(600) % 3 == 0, "a", "b")
    np.savez(tmp_path / "digits_groups.npz", x=x, y=y, grp=grp)
    return tmp_path / "digits_groups.npz"


def test_multiclass_one_vs_rest_on_a_named_class(digits_checkpoint, write_recipe, tmp_path):
    path = _digits_with_groups(tmp_path)
    base = DIGITS_MODEL + f'\n[data]\nsource = "npz"\npath = "{path}"\nsensitive = {{ grp = "grp" }}\n'
    res = run_cli("run", digits_checkpoint, "--recipe", write_recipe(base + "\n[fairness]\n"), "--out", tmp_path / "x",
                  "--quiet", "--suite", "fairness")
    assert res.exit_code == 2 and "positive_class" in res.stderr and "one-vs-rest" in res.stderr
    res = run_cli("run", digits_checkpoint, "--recipe", write_recipe(base + '\n[fairness]\npositive_class = "3"\n',
                                                                     "r3.toml"),
                  "--out", tmp_path / "o", "--quiet", "--suite", "fairness")
    assert res.exit_code == 0, res.stderr
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    t = ExampleTable.load(tmp_path / "o" / "examples.npz")
    yb, pb = (t["label"] == 3).astype(int), (t["pred"] == 3).astype(int)
    sf = np.asarray(t.categories["grp"])[t["group:grp"]]
    by = flm.MetricFrame(metrics=FL, y_true=yb, y_pred=pb, sensitive_features=sf).by_group
    from sklearn.metrics import accuracy_score

    for group, row in by.iterrows():
        # the binarised rates say which class they are one-vs-rest for ...
        for rate in ("selection_rate", "tpr", "fpr", "precision"):
            rec = _rec(r, f"group_{rate}", attribute="grp", group=group, **{"class": "3"})
            assert rec["value"] == pytest.approx(row[rate], abs=TOL)
        ovr = _rec(r, "group_ovr_accuracy", attribute="grp", group=group, **{"class": "3"})
        assert ovr["value"] == pytest.approx(accuracy_score(yb[sf == group], pb[sf == group]), abs=TOL)
        # ... and group_accuracy is the multiclass accuracy (regression, issue #10: it was the one-vs-rest one,
        # far above the real accuracy, so a gate group_accuracy >= 0.95 passed on a worse group)
        m = sf == group
        acc = _rec(r, "group_accuracy", attribute="grp", group=group)
        assert acc["value"] == pytest.approx(accuracy_score(t["label"][m], t["pred"][m]), abs=TOL)
        assert acc["value"] <= ovr["value"] and acc["n"] == m.sum()
        assert acc["ci_low"] < acc["value"] <= acc["ci_high"]
        err = _rec(r, "group_error_rate", attribute="grp", group=group)
        assert err["value"] == pytest.approx(1 - acc["value"], abs=TOL)
    assert _rec(r, "equalized_odds_difference", attribute="grp", **{"class": "3"})["value"] == pytest.approx(
        flm.equalized_odds_difference(yb, pb, sensitive_features=sf), abs=TOL)
    s = r["suites"]["fairness"]
    assert s["config"]["positive_class"] == "3" and s["config"]["threshold_optimizer"] is False
    assert "optimizer" not in s["tables"]["attributes"][0]
    assert any("one-vs-rest for class '3'" in n and "skipped" in n for n in s["notes"])


def test_crossing_with_robustness_columns_on_a_synthetic_table():
    """Robust and noise accuracy per group from the columns the robustness suite writes, found through
    their metadata (not through the robustness suite's config)."""
    from audit.suites import fairness as FS

    r = np.random.default_rng(0)
    n = 400
    t = ExampleTable()
    t.add("label", r.integers(0, 2, n))
    t.add("logits", r.normal(size=(n, 2)).astype(np.float32))
    t.add("pred", t["logits"].argmax(1))
    t.add("group:g", r.integers(0, 3, n))
    t.categories["g"] = ["x", "y", "z"]
    broken = np.where(r.random(n) < 0.3, np.inf, r.choice([0.0, 0.1, 0.2, 0.3], n))
    assert FS.crossing_columns(t) == []  # no robustness columns yet
    t.add("noise:gaussian:0.1:correct", r.integers(0, 5, n),
          {"kind": "noise_correct", "noise": "gaussian", "level": "0.1", "draws": 4})
    t.add("robust:worst:linf:eps_broken", broken,
          {"kind": "eps_broken", "attack": "worst", "norm": "linf", "eps": ["0.2", "0.1"], "eps_values": [0.2, 0.1]})
    t.add("robust:pgd:linf:eps_broken", broken,  # one attack's column: not what a group's robust accuracy reads
          {"kind": "eps_broken", "attack": "pgd", "norm": "linf", "eps": ["0.1", "0.2"], "eps_values": [0.1, 0.2]})
    extra = FS.crossing_columns(t)
    assert [e["params"] for e in extra] == [{"norm": "linf", "eps": "0.1"}, {"norm": "linf", "eps": "0.2"},
                                            {"noise": "gaussian", "level": "0.1"}]
    cfg = FS.SECTION.defaults()
    cfg.update(bootstrap=50, threshold_optimizer=False)
    res = FS.evaluate(t["label"], t["pred"], t.probs, FS.attribute_groups(t, ["g"], False), ["0", "1"], 1, cfg, 0,
                      extra=extra)
    for g, name in enumerate("xyz"):
        m = t["group:g"] == g
        rec = [x for x in res.metrics if x.name == "group_robust_accuracy" and x.params["group"] == name
               and x.params["eps"] == "0.2"][0]
        assert rec.value == pytest.approx(np.mean(broken[m] > 0.2)) and rec.n == m.sum()
        rec = [x for x in res.metrics if x.name == "group_noise_accuracy" and x.params["group"] == name][0]
        assert rec.value == pytest.approx(np.mean(t["noise:gaussian:0.1:correct"][m] / 4))


def test_reference_table_names_a_group_per_attribute_and_typos_are_errors(credit_checkpoint, write_recipe, tmp_path):
    base = CREDIT.replace('reference = "largest"', 'reference = { sex = "female" }')
    res = run_cli("run", credit_checkpoint, "--recipe", write_recipe(base), "--out", tmp_path / "ok", "--quiet",
                  "--suite", "fairness")
    assert res.exit_code in (0, 1), res.stderr
    tables = json.loads((tmp_path / "ok" / "report.json").read_text())["suites"]["fairness"]["tables"]
    by_attr = {t["attribute"]: t for t in tables["attributes"]}
    assert by_attr["sex"]["reference"] == "female"  # the named group, not the largest (male) ...
    assert by_attr["sex"]["reference_shown"] and "reference_ratio" in by_attr["sex"]["groups"][0]
    # ... while the four-fifths rule compares with the highest selection rate whatever the reference says
    top = max(by_attr["sex"]["groups"], key=lambda g: g["selection_rate"]["value"])["group"]
    assert by_attr["sex"]["four_fifths"]["reference"] == top
    assert by_attr["age"]["reference_rule"] == "highest"  # attributes the table leaves out keep the default
    for ref, fragment in [('{ sex = "femal" }', "'femal' is not a group of 'sex' (groups: female, male)"),
                          ('{ gender = "female" }', "'gender' is not an analysed attribute (analysed: sex, age, sex&age)")]:
        res = run_cli("run", credit_checkpoint, "--recipe",
                      write_recipe(CREDIT.replace('reference = "largest"', f"reference = {ref}"), "bad.toml"),
                      "--out", tmp_path / "bad", "--quiet", "--suite", "fairness")
        assert res.exit_code == 2 and fragment in res.stderr and "[fairness] reference" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert_failed_run(tmp_path / "bad", 2)


def test_intersectional_with_one_attribute_says_so(credit_checkpoint, write_recipe, tmp_path):
    text = CREDIT.replace('attributes = ["sex", "age"]', 'attributes = ["sex"]').replace("bootstrap = 1000", "bootstrap = 0")
    res = run_cli("run", credit_checkpoint, "--recipe", write_recipe(text), "--out", tmp_path / "o", "--quiet",
                  "--suite", "fairness")
    assert res.exit_code in (0, 1), res.stderr
    notes = json.loads((tmp_path / "o" / "report.json").read_text())["suites"]["fairness"]["notes"]
    assert any(n.startswith("intersectional = true has nothing to intersect: only one attribute (sex)") for n in notes)


def _fair_cfg(**kw):
    from audit.suites.fairness import SECTION

    return {**SECTION.defaults(), "threshold_optimizer": False, **kw}


def _metric(res, name, **params):
    found = [m for m in res.metrics if m.name == name and m.params == params]
    assert len(found) == 1, (name, params, [m.params for m in res.metrics if m.name == name])
    return found[0]


def test_multiclass_group_accuracy_is_the_multiclass_accuracy():
    """Regression (issue #10): 4 classes, group 'b' 90.5% accurate. Binarised on one class, its 'accuracy' was
    about 0.99 and a gate group_accuracy >= 0.95 passed; now group_accuracy is the multiclass accuracy (equal to
    scikit-learn's accuracy_score per group) and the one-vs-rest one is group_ovr_accuracy."""
    from sklearn.metrics import accuracy_score

    from audit.report.gates import evaluate_gate
    from audit.suites import fairness as FS

    r = np.random.default_rng(0)
    n = 2000
    codes = np.repeat([0, 1], n // 2)
    y = r.integers(0, 4, n)
    wrong = np.r_[r.random(n // 2) < 0.02, np.arange(n // 2) < 95]      # group b: 95 of 1000 wrong
    pred = np.where(wrong, (y + 1 + r.integers(0, 3, n)) % 4, y)
    res = FS.evaluate(y, pred, np.eye(4)[pred], [("g", codes, ["a", "b"])], ["0", "1", "2", "3"], 3, _fair_cfg(), 0)
    acc = _metric(res, "group_accuracy", attribute="g", group="b")
    assert acc.value == pytest.approx(accuracy_score(y[codes == 1], pred[codes == 1])) == pytest.approx(0.905)
    ovr = _metric(res, "group_ovr_accuracy", attribute="g", group="b", **{"class": "3"})
    assert ovr.value > 0.95
    gate = {"id": "g", "suite": "fairness", "name": "group_accuracy", "params": {"attribute": "g", "group": "b"},
            "op": ">=", "threshold": 0.95, "use": "value", "severity": "error"}
    assert evaluate_gate(gate, [m.to_json() for m in res.metrics], ["fairness"])["status"] == "fail"
    assert any("group_accuracy and group_error_rate are the multiclass accuracy" in x for x in res.notes)


def test_a_group_with_no_positives_makes_tpr_disparities_inconclusive():
    """Regression (issue #10): group 'c' has no positives, so its TPR is undefined. Over the other groups the
    equal-opportunity difference is 0.02 (fairlearn, filling 0 for c, says 0.82); a gate on it passed. Every
    disparity that needs the TPR is now inconclusive and names the group; the others still decide."""
    import fairlearn.metrics as flm

    from audit.report.gates import evaluate_gate
    from audit.suites import fairness as FS

    sizes = [(100, 100), (100, 100), (0, 200)]         # (positives, negatives) per group
    y, pred, codes = [], [], []
    for g, (pos, neg) in enumerate(sizes):
        hits = (80, 82, 0)[g]                          # TPR 0.80 and 0.82; c has no positives
        y += [1] * pos + [0] * neg
        pred += [1] * hits + [0] * (pos - hits)
        pred += [1] * (neg // 10) + [0] * (neg - neg // 10)
        codes += [g] * (pos + neg)
    y, pred, codes = map(np.asarray, (y, pred, codes))
    res = FS.evaluate(y, pred, np.eye(2)[pred], [("g", codes, ["a", "b", "c"])], ["0", "1"], 1, _fair_cfg(), 0)
    eo = _metric(res, "equal_opportunity_difference", attribute="g")
    assert eo.value == pytest.approx(0.02)
    assert flm.equal_opportunity_difference(y, pred, sensitive_features=codes) == pytest.approx(0.82)
    assert eo.inconclusive and "TPR of group 'c' of 'g' is undefined (no positives)" in eo.inconclusive
    for name in ("equalized_odds_difference", "equalized_odds_ratio"):
        assert "group 'c'" in _metric(res, name, attribute="g").inconclusive
    assert _metric(res, "demographic_parity_difference", attribute="g").inconclusive is None
    gate = {"id": "eo", "suite": "fairness", "name": "equal_opportunity_difference", "params": {"attribute": "g"},
            "op": "<=", "threshold": 0.1, "use": "value", "severity": "error"}
    out = evaluate_gate(gate, [m.to_json() for m in res.metrics], ["fairness"])
    assert out["status"] == "inconclusive" and "'c'" in out["message"]
    # one positive: defined, but resting on 1 < min_group_size positives: inconclusive as before
    y2 = y.copy()
    y2[np.flatnonzero(codes == 2)[0]] = 1
    res2 = FS.evaluate(y2, pred, np.eye(2)[pred], [("g", codes, ["a", "b", "c"])], ["0", "1"], 1, _fair_cfg(), 0)
    assert "rests on 1 < 30 positives" in _metric(res2, "equal_opportunity_difference", attribute="g").inconclusive


def test_group_ece_has_an_interval_a_debiased_value_and_its_own_calibrated_reference():
    """Regression (issue #10): a perfectly calibrated model shows a group ECE of about 0.14 on 40 examples and
    0.02 on 2000, so group ECEs compared group sizes. Each group now has the ECE a perfectly calibrated model
    would show on its own examples (consistency resampling), a debiased ECE, and an interval for its true ECE,
    which reaches 0 for both groups here; gates can use any of them."""
    from audit.report.gates import evaluate_gate
    from audit.suites import fairness as FS

    r = np.random.default_rng(1)
    n = 2040
    codes = np.r_[np.zeros(40, int), np.ones(2000, int)]
    c = 0.5 + r.beta(2.0, 2.0, n) / 2
    pred = r.integers(0, 2, n)
    y = np.where(r.random(n) < c, pred, 1 - pred)            # right with probability = confidence
    probs = np.where(pred[:, None] == 1, np.stack([1 - c, c], 1), np.stack([c, 1 - c], 1))
    cfg = _fair_cfg(bootstrap=200)
    res = FS.evaluate(y, pred, probs, [("g", codes, ["small", "big"])], ["0", "1"], 1, cfg, 0,
                      calib={"bins": 15, "interval_draws": 500, "reference_draws": 500})
    ece = {g: _metric(res, "group_ece", attribute="g", group=g) for g in ("small", "big")}
    ref = {g: _metric(res, "group_ece_reference", attribute="g", group=g) for g in ("small", "big")}
    deb = {g: _metric(res, "group_ece_debiased", attribute="g", group=g) for g in ("small", "big")}
    assert ece["small"].value > 3 * ece["big"].value                 # the plug-in tracks group size ...
    assert ref["small"].value > 3 * ref["big"].value                 # ... and so does its reference
    for g in ("small", "big"):
        assert ref[g].ci_low <= ece[g].value <= ref[g].ci_high       # within its own noise
        assert ece[g].ci_low == 0.0 and deb[g].value < ece[g].value and deb[g].ci_high == ece[g].ci_high
    records = [m.to_json() for m in res.metrics]
    gate = {"id": "ece-big", "suite": "fairness", "name": "group_ece", "params": {"attribute": "g", "group": "big"},
            "op": "<=", "threshold": 0.05, "use": "ci_high", "severity": "error"}
    assert evaluate_gate(gate, records, ["fairness"])["status"] == "pass"
    assert evaluate_gate(dict(gate, name="group_ece_debiased", use="value"), records, ["fairness"])["status"] == "pass"
    # "miscalibrated beyond doubt" (ci_low > 0) holds for neither group, the small one included
    for g in ("small", "big"):
        doubt = dict(gate, params={"attribute": "g", "group": g}, op=">", threshold=0.0, use="ci_low")
        assert evaluate_gate(doubt, records, ["fairness"])["status"] == "fail"
    row = res.tables["attributes"][0]["crossing"]["rows"][0]
    assert row["ece_reference_range"] and row["ece_beyond_noise"] is False
