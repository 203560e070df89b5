"""`audit diff`: McNemar's exact test and its interval against scipy, the paired bootstrap verdicts on synthetic
tables, and the command end to end on real audits of the digits CNN and the credit MLP (a second model made by
perturbing the first's weights, so that some predictions flip). Flips, discordant counts and group counts are
checked against a direct computation from the two examples.npz files.

Audits are small ([data] limit 150, 3 PGD steps, bootstrap 50) and run in-process; each costs a few seconds.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from audit.diff import compare_reports, diff_exit_code, write_diff
from audit.diff import stats as S
from audit.diff.compare import compare_metric
from audit.diff.recompute import View
from audit.engine.table import ExampleTable
from audit.metrics import calibration as K
from audit.metrics.robustness import robust_correct
from conftest import DIGITS_MODEL, ROOT, run_cli

# ------------------------------------------------------------------------------------------ pure statistics


def test_mcnemar_exact_equals_scipy_binomial_test():
    pairs = list(itertools.product(range(0, 45), range(0, 45))) + [(0, 0), (1000, 1100), (2500, 2400), (3000, 2890),
                                                                   (0, 4000), (7, 1), (1, 7)]
    for b, c in pairs:
        expected = sps.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
        assert S.mcnemar_exact(b, c) == pytest.approx(expected, abs=1e-12), (b, c)
    assert S.mcnemar_exact(0, 0) == 1.0 and S.mcnemar_exact(5, 5) == 1.0
    assert S.mcnemar_exact(7, 1) == S.mcnemar_exact(1, 7)
    with pytest.raises(ValueError):
        S.mcnemar_exact(-1, 2)


def test_mcnemar_interval_is_clopper_pearson_mapped_and_dual_to_the_test():
    n = 200
    for b, c in itertools.product(range(0, 25), range(0, 25)):
        lo, hi = S.mcnemar_interval(b, c, n, 0.95)
        m = b + c
        if m == 0:
            assert (lo, hi) == (0.0, 0.0)
            continue
        # Clopper-Pearson of c out of m (scipy's exact binomial interval), mapped to (c - b) / n
        ci = sps.binomtest(c, m, 0.5).proportion_ci(0.95, method="exact")
        assert lo == pytest.approx(m * (2 * ci.low - 1) / n, abs=1e-12)
        assert hi == pytest.approx(m * (2 * ci.high - 1) / n, abs=1e-12)
        assert lo <= (c - b) / n <= hi
        # excludes 0 exactly when the exact test rejects at 5%
        p = S.mcnemar_exact(b, c)
        if abs(p - 0.05) > 1e-9:
            assert (lo > 0 or hi < 0) == (p < 0.05), (b, c, p, lo, hi)


def test_verdict_rules():
    V = S.paired_verdict
    assert V(0.0, 0.0, 0.0, 1.0, "higher") == "unchanged"
    assert V(0.05, 0.02, 0.08, 0.001, "higher") == "improved"
    assert V(0.05, 0.02, 0.08, 0.001, "lower") == "regressed"
    assert V(-0.05, -0.08, -0.02, 0.001, "lower") == "improved"
    assert V(0.05, 0.02, 0.08, 0.001, None) == "changed"
    assert V(0.004, -0.006, 0.009, 0.4, "higher") == "unchanged"  # not significant, all within +-0.01
    assert V(0.004, -0.03, 0.04, 0.4, "higher") == "inconclusive"  # not significant, cannot rule out 0.03
    assert V(0.004, float("nan"), 0.04, 0.4, "higher") == "inconclusive"
    U = S.unpaired_verdict
    assert U(0.9, 0.9, None, None, "higher") == "unchanged"
    assert U(0.9, 0.95, None, None, "higher") == "inconclusive"  # no intervals: only equal values are unchanged
    assert U(0.80, 0.95, (0.75, 0.85), (0.92, 0.98), "higher") == "improved"  # disjoint
    assert U(0.80, 0.95, (0.75, 0.85), (0.92, 0.98), "lower") == "regressed"
    assert U(0.80, 0.84, (0.75, 0.85), (0.80, 0.88), "higher") == "inconclusive"  # overlapping
    assert U(0.900, 0.902, (0.897, 0.905), (0.899, 0.906), "higher", tolerance=0.01) == "unchanged"


def _view(logits: np.ndarray, labels: np.ndarray, bins: int = 10) -> View:
    pred = logits.argmax(1)
    cols = {"index": np.arange(len(labels)), "label": labels, "logits": logits.astype(np.float32), "pred": pred}
    return View(cols, {}, {}, [str(k) for k in range(logits.shape[1])], {"calibration": {"config": {"bins": bins}}})


def _ece_record(view: View) -> dict:
    value = K.ece(view.probs(), view.label, 10, "uniform", "top_label")
    return {"suite": "calibration", "name": "ece", "params": {"binning": "equal_width", "kind": "top_label"},
            "value": value, "ci_low": None, "ci_high": None, "n": view.n}


def _paired(vb: View, vn: View, n_boot: int = 300, seed: int = 0) -> dict:
    w = S.bootstrap_weights(vb.n, n_boot, np.random.default_rng(seed))
    return compare_metric(_ece_record(vb), _ece_record(vn), vb, vn, w, 0.05, 0.01)


def _calibrated(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from the model's own probabilities: a calibrated model."""
    r = np.random.default_rng(seed)
    logits = r.normal(0, 2.0, size=(n, k))
    p = K.softmax(logits)
    labels = (p.cumsum(1) > r.random((n, 1))).argmax(1)
    return logits, labels


def test_paired_bootstrap_verdicts_on_synthetic_tables():
    logits, y = _calibrated(3000, 4, seed=1)
    base = _view(logits, y)
    # identical tables: every replicate of the difference is exactly 0
    same = _paired(base, _view(logits.copy(), y))
    assert same["verdict"] == "unchanged" and same["test"] == "paired_bootstrap" and same["paired"]
    assert same["ci_low"] == same["ci_high"] == 0.0 and same["p_value"] == 1.0
    # ECE is lower-is-better: an overconfident copy (logits x 4) regresses, and the way back improves
    worse = _view(logits * 4.0, y)
    r = _paired(base, worse)
    assert r["better"] == "lower" and r["delta"] > 0.05 and r["ci_low"] > 0 and r["verdict"] == "regressed", r
    back = _paired(worse, base)
    assert back["delta"] < -0.05 and back["ci_high"] < 0 and back["verdict"] == "improved", back
    # a tiny change on few examples: inside the noise, and too uncertain to call unchanged
    lg, yy = _calibrated(60, 4, seed=2)
    small = _paired(_view(lg, yy), _view(lg * 1.05, yy))
    assert small["verdict"] == "inconclusive", small
    assert small["p_value"] >= 0.05 and (small["ci_low"] < -0.01 or small["ci_high"] > 0.01), small


# ------------------------------------------------------------------------------------------ real audits

RECIPE = DIGITS_MODEL + """
[data]
source = "sklearn"
name = "digits"
split = "test"
limit = {limit}

[run]
seed = 0

[performance]
bootstrap = 50
bootstrap_ranking = 50

[robustness]
attacks = ["fgsm", "pgd"]
norm = "linf"
eps = ["8/255", "0.25"]
steps = 3
noise = {{ gaussian = [0.1] }}
noise_draws = 2

[calibration]
bins = 10
reference_draws = 50
interval_draws = 50

[[gates]]
metric = "accuracy"
op = ">="
threshold = 0.5

[[gates]]
metric = "robust_accuracy"
params = {{ norm = "linf", eps = "8/255" }}
op = ">="
threshold = 0.1
"""


def _perturbed(src: Path, dst: Path, scale: float, seed: int) -> Path:
    """A copy of a safetensors model with seeded Gaussian noise (scale x each tensor's std) on its weights.
    A feature scaler the model carries (the credit MLP's ``mean``/``std`` buffers) is kept: noise on it
    garbles the inputs into a constant predictor (the core check better_than_baseline fails it)."""
    import torch
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(seed)
    sd = load_file(str(src))
    out = {k: (v + scale * v.std() * torch.randn(v.shape, generator=g))
           if v.is_floating_point() and v.numel() > 1 and k not in ("mean", "std") else v for k, v in sd.items()}
    save_file({k: v.contiguous() for k, v in out.items()}, str(dst))
    return dst


def _audit(model: Path, recipe: Path, out: Path) -> Path:
    res = run_cli("run", model, "--recipe", recipe, "--out", out, "--quiet", "--no-cache")
    assert res.exit_code in (0, 1), res.stderr
    return out


@pytest.fixture(scope="module")
def audits(digits_checkpoint, tmp_path_factory):
    """base, base again (another --out), a perturbed model, a clearly worse one, and base on other data."""
    tmp = tmp_path_factory.mktemp("diff")
    recipe = tmp / "recipe.toml"
    recipe.write_text(RECIPE.format(limit=150))
    other = tmp / "other.toml"
    other.write_text(RECIPE.format(limit=120))
    near = _perturbed(digits_checkpoint, tmp / "near.safetensors", 0.3, seed=1)
    worse = _perturbed(digits_checkpoint, tmp / "worse.safetensors", 1.5, seed=2)
    return {"base": _audit(digits_checkpoint, recipe, tmp / "base"),
            "again": _audit(digits_checkpoint, recipe, tmp / "again"),
            "near": _audit(near, recipe, tmp / "near"),
            "worse": _audit(worse, recipe, tmp / "worse"),
            "other_data": _audit(digits_checkpoint, other, tmp / "other"),
            "tmp": tmp}


def _rec(report: dict, suite: str, name: str, **params) -> dict:
    found = [m for m in report["metrics"] if m["suite"] == suite and m["name"] == name and m["params"] == params]
    assert len(found) == 1, (suite, name, params)
    return found[0]


def test_same_model_twice_is_unchanged_everywhere(audits):
    d = compare_reports(audits["base"], audits["again"] / "report.json", bootstrap=200)
    assert d["paired"] is True and d["unpaired_reason"] is None and d["n_paired"] == 150
    assert d["flips"] == [] and d["flip_counts"]["total"]["correct_to_wrong"] == 0
    assert d["metrics"] and {m["verdict"] for m in d["metrics"]} == {"unchanged"}, \
        [(m["key"], m["verdict"], m["note"]) for m in d["metrics"] if m["verdict"] != "unchanged"]
    assert d["counts"]["unchanged"] == len(d["metrics"])
    for m in d["metrics"]:
        if m["test"] in ("mcnemar_exact", "paired_bootstrap"):
            assert m["p_value"] == 1.0 and m["ci_low"] == 0.0 and m["ci_high"] == 0.0, m
    tests = {m["test"] for m in d["metrics"]}
    assert {"mcnemar_exact", "paired_bootstrap"} <= tests
    assert diff_exit_code(d, True) == 0
    assert d["environment"]["same_model"] and d["environment"]["same_data"]


def test_flips_and_mcnemar_equal_a_direct_computation(audits):
    d = compare_reports(audits["base"], audits["near"], bootstrap=200)
    assert d["paired"] is True
    ta, tb = ExampleTable.load(audits["base"] / "examples.npz"), ExampleTable.load(audits["near"] / "examples.npz")
    ra = json.loads((audits["base"] / "report.json").read_text())
    rb = json.loads((audits["near"] / "report.json").read_text())
    assert np.array_equal(ta["index"], tb["index"])
    y = ta["label"]
    ok_a, ok_b = ta["pred"] == y, tb["pred"] == y
    assert (ok_a != ok_b).any(), "the perturbed model must flip some predictions"
    # clean flips
    c2w = {int(i) for i in ta["index"][ok_a & ~ok_b]}
    w2c = {int(i) for i in ta["index"][~ok_a & ok_b]}
    got = {f["index"]: {c["what"] for c in f["changes"]} for f in d["flips"]}
    assert {i for i, w in got.items() if "correct_to_wrong" in w} == c2w
    assert {i for i, w in got.items() if "wrong_to_correct" in w} == w2c
    assert d["flip_counts"]["total"]["correct_to_wrong"] == len(c2w)
    assert d["flip_counts"]["total"]["wrong_to_correct"] == len(w2c)
    # robust flips, per attack column and eps, from the eps_broken columns (robust at e iff eps_broken > e)
    meta = ta.column_meta["robust:worst:linf:eps_broken"]
    expected_r2b = set()
    for label, value in zip(meta["eps"], meta["eps_values"]):
        for attack in ("fgsm", "pgd", "worst"):
            col = f"robust:{attack}:linf:eps_broken"
            rob_a, rob_b = robust_correct(ta[col], [value])[:, 0], robust_correct(tb[col], [value])[:, 0]
            # the report's robust accuracy is the mean of these very columns
            params = {"norm": "linf", "eps": label} | ({} if attack == "worst" else {"attack": attack})
            assert _rec(ra, "robustness", "robust_accuracy", **params)["value"] == pytest.approx(rob_a.mean(), abs=1e-12)
            assert _rec(rb, "robustness", "robust_accuracy", **params)["value"] == pytest.approx(rob_b.mean(), abs=1e-12)
            expected_r2b |= {(int(i), attack, label) for i in ta["index"][rob_a & ~rob_b]}
            n = int((rob_a & ~rob_b).sum())
            assert d["flip_counts"]["total"]["robust_to_broken"].get(f"{attack}:linf:{label}", 0) == n
            row = next(m for m in d["metrics"] if m["suite"] == "robustness" and m["name"] == "robust_accuracy"
                       and m["params"] == params)
            b, c = int((rob_a & ~rob_b).sum()), int((~rob_a & rob_b).sum())
            assert row["test"] == "mcnemar_exact" and row["discordant"] == {"base_only": b, "new_only": c, "n": 150}
            assert row["p_value"] == pytest.approx(sps.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0,
                                                   abs=1e-12)
    got_r2b = {(f["index"], c["attack"], c["eps"]) for f in d["flips"] for c in f["changes"]
               if c["what"] == "robust_to_broken"}
    assert got_r2b == expected_r2b and expected_r2b
    # accuracy: McNemar on the discordant predictions
    acc = next(m for m in d["metrics"] if m["key"] == "performance.accuracy[]")
    b, c = int((ok_a & ~ok_b).sum()), int((~ok_a & ok_b).sum())
    assert acc["discordant"]["base_only"] == b and acc["discordant"]["new_only"] == c
    assert acc["p_value"] == pytest.approx(sps.binomtest(min(b, c), b + c, 0.5).pvalue, abs=1e-12)
    assert acc["delta"] == pytest.approx((c - b) / 150, abs=1e-12)
    assert acc["ci_low"] <= acc["delta"] <= acc["ci_high"]
    # per-class counts
    for k, name in enumerate(ra["data"]["class_names"]):
        assert d["flip_counts"]["by_class"][name]["correct_to_wrong"] == int((ok_a & ~ok_b & (y == k)).sum())
    # the metric rows the bootstrap compared are paired, and none is a verdict without a test
    for m in d["metrics"]:
        if m["verdict"] in ("improved", "regressed"):
            assert m["p_value"] is not None and m["p_value"] < 0.05


def _recomputed(out: Path) -> tuple[int, list]:
    """How many of a report's records examples.npz recomputes, and those that disagree with the report."""
    from audit.diff.recompute import definition

    report = json.loads((out / "report.json").read_text())
    t = ExampleTable.load(out / "examples.npz")
    view = View(t.columns, t.column_meta, t.categories, report["data"]["class_names"], report["suites"])
    ones, done, wrong = np.ones((1, view.n), dtype=np.int64), 0, []
    for m in report["metrics"]:
        d = definition(m, view)
        if d is None:
            continue
        done += 1
        v = float(d(ones)[0])
        if m["value"] is None:
            if np.isfinite(v):
                wrong.append((m, v))
        elif not abs(v - m["value"]) <= 1e-9:
            wrong.append((m, v))
    return done, wrong


def test_recomputed_records_equal_the_report(audits):
    """Every record the diff recomputes from examples.npz (with the project's own metric functions) is the
    report's value: the paired comparison compares the very numbers the reports state."""
    for name in ("base", "near"):
        done, wrong = _recomputed(audits[name])
        assert done >= 130 and wrong == [], wrong[:3]


def test_fail_on_regression_exit_codes_and_files(audits, tmp_path):
    out = tmp_path / "d"
    res = run_cli("diff", audits["base"], audits["worse"], "--out", out, "--bootstrap", "100", "--fail-on-regression")
    assert res.exit_code == 1, res.stderr
    d = json.loads((out / "diff.json").read_text())
    assert d["gated_regressions"] and all(k in {m["key"] for m in d["metrics"] if m["gated"]} for k in d["gated_regressions"])
    assert "gated metric regressed" in res.stderr
    html = (out / "diff.html").read_text()
    assert "PAIRED" in html and "regressed" in html and "<script" not in html and "http://" not in html \
        and "https://" not in html
    assert "## audit diff" in (out / "diff.md").read_text()
    # without the flag: 0 however much regressed
    assert run_cli("diff", audits["base"], audits["worse"], "--out", out, "--bootstrap", "100", "-q").exit_code == 0
    # with the flag, nothing regressed: 0
    res = run_cli("diff", audits["base"], audits["again"], "--out", out, "--bootstrap", "100", "--fail-on-regression")
    assert res.exit_code == 0, res.stderr


def test_different_data_is_unpaired_and_still_compares_metrics(audits, tmp_path):
    d = compare_reports(audits["base"], audits["other_data"], bootstrap=100)
    assert d["paired"] is False and "different data" in d["unpaired_reason"]
    assert d["flips"] == [] and d["flip_counts"] == {} and d["n_paired"] == 0
    assert d["metrics"] and all(m["test"] in ("intervals_unpaired", None) and not m["paired"] for m in d["metrics"])
    assert sum(d["counts"].values()) == len(d["metrics"])
    write_diff(d, tmp_path)
    assert "UNPAIRED" in (tmp_path / "diff.html").read_text()
    assert "NOT PAIRED" in (tmp_path / "diff.md").read_text()


def test_stale_or_missing_examples_make_it_unpaired_with_the_reason(audits, tmp_path):
    stale = tmp_path / "stale"
    shutil.copytree(audits["near"], stale)
    shutil.copy(audits["base"] / "examples.npz", stale / "examples.npz")  # another run's table
    d = compare_reports(audits["base"], stale, bootstrap=50)
    assert d["paired"] is False and "stale" in d["unpaired_reason"] and d["flips"] == []
    (stale / "examples.npz").unlink()
    d = compare_reports(audits["base"], stale, bootstrap=50)
    assert d["paired"] is False and "no examples.npz" in d["unpaired_reason"]


def test_bad_inputs_are_one_line_and_exit_2(audits, tmp_path, write_recipe):
    out = tmp_path / "d"
    assert run_cli("diff", audits["base"], audits["again"], "--out", out, "--bootstrap", "20", "-q").exit_code == 0
    assert (out / "diff.json").exists()

    def bad(*args: str, match: str) -> None:
        res = run_cli("diff", *args, "--out", out)
        assert res.exit_code == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("audit: error: ") and match in lines[0], res.stderr
        assert "Traceback" not in res.stderr
        assert not (out / "diff.json").exists()  # the earlier diff is gone, not passed off as this one

    bad(tmp_path / "nope", audits["again"], match="BASE: ")
    bad(audits["base"], tmp_path / "nope" / "report.json", match="report file not found")
    notreport = tmp_path / "x.json"
    notreport.write_text(json.dumps({"hello": 1}))
    bad(notreport, audits["again"], match="not an audit report")
    # a failed run's report (the failure report a bad recipe leaves in --out)
    failed = tmp_path / "failed"
    r = write_recipe(DIGITS_MODEL + '[data]\nsource = "sklearn"\nname = "digits"\n[performance]\nbootstrapp = 3\n')
    assert run_cli("run", audits["base"] / "report.json", "--recipe", r, "--out", failed, "-q").exit_code == 2
    bad(audits["base"], failed, match="failed")
    # an unreadable examples.npz is an error (not silently unpaired)
    broken = tmp_path / "broken"
    shutil.copytree(audits["again"], broken)
    (broken / "examples.npz").write_bytes(b"not a zip file")
    bad(audits["base"], broken, match="cannot read the per-example table")
    bad(audits["base"], audits["again"], "--alpha", "1.5", match="--alpha")
    bad(audits["base"], audits["again"], "--bootstrap", "0", match="--bootstrap")


def test_groups_flip_counts_equal_a_direct_computation(credit_checkpoint, tmp_path):
    text = (ROOT / "recipes" / "credit.toml").read_text().replace("../examples", str(ROOT / "examples"))
    text = text.replace("bootstrap = 1000", "bootstrap = 50").replace("reference_draws = 1000", "reference_draws = 50")
    text = text.replace("threshold_optimizer = true", "threshold_optimizer = false")
    recipe = tmp_path / "credit.toml"
    recipe.write_text(text)
    other = _perturbed(credit_checkpoint, tmp_path / "other.safetensors", 0.5, seed=3)
    a = _audit(credit_checkpoint, recipe, tmp_path / "a")
    b = _audit(other, recipe, tmp_path / "b")
    d = compare_reports(a, b, bootstrap=100)
    assert d["paired"] is True
    for out in (a, b):
        done, wrong = _recomputed(out)
        assert done >= 140 and wrong == [], wrong[:3]  # group rates and disparities included
    ta, tb = ExampleTable.load(a / "examples.npz"), ExampleTable.load(b / "examples.npz")
    y = ta["label"]
    ok_a, ok_b = ta["pred"] == y, tb["pred"] == y
    assert (ok_a != ok_b).any()
    for attr in ("sex", "age"):
        codes, names = ta[f"group:{attr}"], ta.categories[attr]
        for g, name in enumerate(names):
            counts = d["flip_counts"]["by_group"][attr][name]
            assert counts["n"] == int((codes == g).sum())
            assert counts["correct_to_wrong"] == int((ok_a & ~ok_b & (codes == g)).sum())
            assert counts["wrong_to_correct"] == int((~ok_a & ok_b & (codes == g)).sum())
    for f in d["flips"]:
        row = int(np.flatnonzero(ta["index"] == f["index"])[0])
        assert f["groups"] == {attr: ta.categories[attr][int(ta[f"group:{attr}"][row])] for attr in ("sex", "age")}
        assert f["label"] == int(y[row]) and f["class"] == ["bad", "good"][int(y[row])]
    # group rates are paired too: a group's accuracy by McNemar on that group's examples
    ga = next(m for m in d["metrics"] if m["suite"] == "fairness" and m["name"] == "group_accuracy"
              and m["params"] == {"attribute": "sex", "group": "female"})
    fem = ta["group:sex"] == ta.categories["sex"].index("female")
    b_, c_ = int((ok_a & ~ok_b & fem).sum()), int((~ok_a & ok_b & fem).sum())
    assert ga["test"] == "mcnemar_exact" and ga["discordant"]["base_only"] == b_ and ga["discordant"]["new_only"] == c_
    disp = next(m for m in d["metrics"] if m["key"] == "fairness.demographic_parity_difference[attribute=sex]")
    assert disp["test"] == "paired_bootstrap" and disp["better"] == "lower"
    # HTML and Markdown list at most 50 flips; diff.json all of them; the per-group counts are in both
    write_diff(d, tmp_path / "d")
    html, md = (tmp_path / "d" / "diff.html").read_text(), (tmp_path / "d" / "diff.md").read_text()
    saved = json.loads((tmp_path / "d" / "diff.json").read_text())
    assert len(saved["flips"]) == len(d["flips"])
    assert "By group of sex" in html and "by sex" in md
    if len(d["flips"]) > 50:
        assert f"first 50 of {len(d['flips'])}" in html and f"{len(d['flips']) - 50} more in diff.json" in md
    assert html.count("correct → wrong</td>") + html.count("wrong → correct</td>") <= 50


def test_every_metric_of_every_suite_has_a_direction():
    from audit.suites import all_suites

    for suite in all_suites():
        for name, spec in suite.metrics.items():
            assert spec.better in ("higher", "lower", None), (suite.name, name, spec.better)
    from audit.suites import get_suite

    assert get_suite("calibration").metrics["ece"].better == "lower"
    assert get_suite("performance").metrics["prevalence"].better is None
    assert get_suite("fairness").metrics["disparate_impact_ratio"].better == "higher"


def test_paired_bootstrap_in_chunks_equals_one_weights_array(audits, monkeypatch):
    """audit diff draws its resamples a chunk at a time (no (B, n) array): any chunk size gives the resamples
    of one (B, n) draw, and tiny chunks (3 resamples) give the very intervals and p-values of the default."""
    r1, r2 = np.random.default_rng(4), np.random.default_rng(4)
    full = S.bootstrap_weights(150, 200, r1)
    parts = np.concatenate(list(S.bootstrap_weight_chunks(150, 200, r2, max_elements=7 * 150)))
    assert parts.shape == (200, 150) and np.array_equal(full, parts) and (full.sum(1) == 150).all()
    assert max(len(w) for w in S.bootstrap_weight_chunks(150, 200, np.random.default_rng(0), 450)) == 3
    ref = compare_reports(audits["base"], audits["near"], bootstrap=200)
    monkeypatch.setattr(S, "_CHUNK_ELEMENTS", 3 * 150)
    small = compare_reports(audits["base"], audits["near"], bootstrap=200)
    boot = [m for m in ref["metrics"] if m["test"] == "paired_bootstrap"]
    assert len(boot) >= 20
    for a, b in zip(ref["metrics"], small["metrics"]):
        assert a["key"] == b["key"] and a["verdict"] == b["verdict"]
        # equal up to float rounding (a matrix product over 3 rows or 64 rows rounds differently)
        for k in ("ci_low", "ci_high", "p_value"):
            assert a[k] == b[k] if a[k] is None else b[k] == pytest.approx(a[k], rel=1e-9, abs=1e-12)
