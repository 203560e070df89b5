"""The report's reading aids, against independent references: seed intervals inside a metric's range
(scipy's t-interval, a coverage simulation), the gallery's PNG framing (Pillow decodes it), the reliability
diagram's merged bins (pooled counts), and the summary card's findings on a real report."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest


def test_seed_interval_clipped_to_bounds_keeps_the_t_intervals_coverage():
    from scipy import stats

    from audit.repro.stats import seed_summary

    rng = np.random.default_rng(0)
    mu, n, reps = 0.985, 5, 2000
    # accuracies near 1 over seeds: Beta with mean mu (bounded, skewed: the case the t-interval overshoots)
    draws = rng.beta(mu * 60, (1 - mu) * 60, size=(reps, n))
    half = stats.t.ppf(0.975, n - 1) * stats.sem(draws, axis=1)  # scipy's t-interval, all rows at once
    lo_t, hi_t = draws.mean(axis=1) - half, draws.mean(axis=1) + half
    cov_t = cov_c = over = 0
    for x, lo, hi in zip(draws, lo_t, hi_t):
        s = seed_summary(list(x), 0.95)
        c = seed_summary(list(x), 0.95, (0.0, 1.0))
        assert s["ci_low"] == pytest.approx(lo, abs=1e-12) and s["ci_high"] == pytest.approx(hi, abs=1e-12)
        assert 0.0 <= c["ci_low"] <= c["ci_high"] <= 1.0
        assert c["ci_low"] == pytest.approx(max(lo, 0.0), abs=1e-12) and c["ci_high"] == pytest.approx(min(hi, 1.0), abs=1e-12)
        over += hi > 1.0
        in_t, in_c = lo <= mu <= hi, c["ci_low"] <= mu <= c["ci_high"]
        assert in_t == in_c  # clipping never loses (nor adds) the true mean: it lies inside the bounds
        cov_t += in_t
        cov_c += in_c
    assert over > 50, "the simulation must produce t-intervals above 1 for the clip to matter"
    # equal coverage (88.3% here: the t-interval itself undercovers a skewed bounded metric at 5 seeds;
    # clipping neither helps nor hurts that)
    assert cov_c == cov_t and cov_c / reps > 0.85


def test_seed_interval_open_bound_and_constant_values():
    from audit.repro.stats import clip_interval, seed_summary

    assert clip_interval(-0.2, 0.3, (0.0, None)) == (0.0, 0.3)
    assert clip_interval(0.9, 1.2, (None, 1.0)) == (0.9, 1.0)
    assert clip_interval(1.1, 1.3, (0.0, 1.0)) == (1.0, 1.0)
    s = seed_summary([1.0, 1.0, 1.0], 0.95, (0.0, 1.0))
    assert (s["ci_low"], s["ci_high"], s["std"]) == (1.0, 1.0, 0.0)


def test_metric_catalogue_declares_the_range_of_bounded_metrics():
    from audit.suites.base import metric_bounds

    assert metric_bounds("performance", "accuracy") == (0.0, 1.0)
    assert metric_bounds("robustness", "robust_accuracy") == (0.0, 1.0)
    assert metric_bounds("performance", "mcc") == (-1.0, 1.0)
    assert metric_bounds("calibration", "brier") == (0.0, 2.0)
    assert metric_bounds("calibration", "nll") == (0.0, None)
    assert metric_bounds("fairness", "demographic_parity_difference") == (0.0, 1.0)
    assert metric_bounds("calibration", "temperature") is None and metric_bounds("nope", "x") is None


@pytest.mark.parametrize("shape", [(8, 8, 1), (5, 7, 3)])
def test_png_framing_decodes_to_the_same_pixels(shape):
    from PIL import Image

    from audit.report.png import data_uri, encode_png

    px = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    png = encode_png(px.tobytes(), shape[0], shape[1], shape[2])
    back = np.asarray(Image.open(io.BytesIO(png)))
    assert np.array_equal(back.reshape(shape), px)
    uri = data_uri({"b64": base64.b64encode(px.tobytes()).decode(), "shape": list(shape)})
    assert uri.startswith("data:image/png;base64,") and base64.b64decode(uri.split(",", 1)[1]) == png
    with pytest.raises(ValueError):
        encode_png(b"\x00" * 10, 2, 2, 1)


def test_reliability_bins_merge_slivers_into_their_pooled_examples():
    from audit.report.figures.calibration import display_bins, reliability_svg

    # a confident model's equal-mass bins: one wide bin, then four of 30 with (nearly) the same range
    b = {"lower": [0.5, 0.999, 0.9995, 1.0, 1.0], "upper": [0.999, 0.9995, 1.0, 1.0, 1.0],
         "count": [30, 30, 30, 30, 5], "mean_confidence": [0.9, 0.9993, 0.9998, 1.0, 1.0],
         "accuracy": [0.8, 29 / 30, 1.0, 1.0, 0.6]}
    bins = display_bins(b)
    assert [d["count"] for d in bins] == [30, 95] and bins[1]["bins"] == 4
    correct = 29 + 30 + 30 + 3  # the pooled examples' accuracy, counted directly
    assert bins[1]["accuracy"] == pytest.approx(correct / 95, abs=1e-12)
    svg = reliability_svg(b, "t", "t-rel")
    # the merged bar is too narrow for its count (left to report.json, and said so); the wide bin is labelled
    assert ">30<" in svg and "bins too narrow to draw apart are merged" in svg and "counts of narrow bars" in svg
    assert "accuracy above confidence" not in svg  # no bin here has accuracy above its confidence
    b2 = {"lower": [0.0, 0.5], "upper": [0.5, 1.0], "count": [3, 40], "mean_confidence": [0.4, 0.7],
          "accuracy": [0.9, 0.8]}
    svg2 = reliability_svg(b2, "t", "t-rel2")
    # the under-confident gap has its own colour, named in the legend; the 3-example bin is faint
    assert "accuracy above confidence" in svg2 and "#7b5aa6" in svg2 and "fewer than 10 examples" in svg2


def _report(**over):
    r = {"checks": [{"id": "setup_warning", "suite": "core", "status": "warn", "message": "about the setup"}],
         "gates": [], "metrics": [], "suites_run": ["fairness"],
         "suites": {"fairness": {"config": {}, "curves": {}, "notes": ["a note"], "tables": {"attributes": [{
             "attribute": "sex", "four_fifths": {"status": "fail", "worst_group": "f", "min_ratio": 0.7, "threshold": 0.8},
             "disparities": [
                 {"name": "demographic_parity_difference", "kind": "difference", "value": 0.2, "high_group": "m",
                  "low_group": "f", "inconclusive": None},
                 {"name": "demographic_parity_ratio", "kind": "ratio", "value": 0.7, "high_group": "m", "low_group": "f"}]}]}}}}
    r.update(over)
    return r


def _gate(value, threshold, status="pass", use="value", severity="error", ci=None):
    return {"id": f"g{value}", "metric": "performance.accuracy", "params": {}, "op": ">=", "threshold": threshold,
            "use": use, "value": value, "status": status, "severity": severity, "message": "m",
            "inconclusive_counts_as": "fail", "min_n": 30, "n": 100}


def test_findings_are_about_the_model_and_notes_go_to_their_own_box():
    from audit.report.html import findings

    f = findings(_report())
    texts = [x["text"] for x in f["model"]]
    assert any("four-fifths rule fails (group f" in t for t in texts)
    assert any(t.startswith("By sex: demographic parity difference 0.2") and "f lowest" in t for t in texts)
    assert not any("ratio 0.7 (" in t for t in texts)  # one finding per difference, the ratio is the rule's
    assert [x["text"] for x in f["notes"]] == ["setup_warning: about the setup", "fairness: a note"]
    assert f["problems"] == [] and all("setup" not in t for t in texts)


def test_gates_within_a_small_margin_are_findings_and_comfortable_ones_are_not():
    from audit.report.html import findings

    metrics = [{"suite": "performance", "name": "accuracy", "params": {}, "value": 0.93, "ci_low": 0.88, "ci_high": 0.97}]
    gates = [_gate(0.905, 0.9), _gate(0.9999, 0.98), _gate(0.93, 0.9)]
    near = [x["text"] for x in findings(_report(gates=gates, metrics=metrics))["model"] if "small margin" in x["text"]]
    assert len(near) == 2 and "0.905" in near[0] and "0.93" in near[1]  # within 1%; interval reaches 0.9
    gates = [_gate(0.85, 0.9, status="fail")]
    f = findings(_report(gates=gates, metrics=metrics))
    assert f["problems"] and f["problems"][0]["text"].startswith("Gate g0.85 fail")


def test_summary_card_renders_alone():
    from audit.report.html import render_summary

    r = _report(gates=[_gate(0.95, 0.9)], verdict="pass", exit_code=0, model={"path": "m.pt", "trusted_load": False},
                data={"n": 10})
    html = render_summary(r)
    assert html.startswith("<style>") and "<html" not in html and 'class="badge pass"' in html
    css = html[len("<style>"):html.index("</style>")]
    rules = [sel.strip() for r in re.findall(r"([^{}]+)\{", css) for sel in r.split(",")]
    assert rules and all(r.startswith(".audit-summary") for r in rules), rules  # nothing outside the card restyled
    assert "Worst findings about the model" in html and "Notes on the setup" in html and "g0.95" in html


def test_malformed_gallery_is_one_line_naming_the_field():
    from audit.errors import ReportError
    from audit.report.validate import _Where, validate_gallery

    img = {"b64": base64.b64encode(bytes(64)).decode(), "shape": [8, 8, 1]}
    item = {"index": 1, "y": 0, "label": "0", "pred": "1", "confidence": 0.9, "image": img}
    ok = {"suites": {"performance": {"tables": {"gallery": {"errors": [item, dict(item, image=None)]}}}}}
    validate_gallery(_Where("r.json"), ok)
    bad = {"suites": {"performance": {"tables": {"gallery": {"errors": [dict(item, image=dict(img, shape=[8, 7, 1]))]}}}}}
    with pytest.raises(ReportError, match=r"r.json: malformed report: suites.performance.tables.gallery.errors\[0\].image.b64 "
                                          r"holds 64 bytes: expected 56"):
        validate_gallery(_Where("r.json"), bad)
    bad = {"suites": {"performance": {"tables": {"gallery": {"errors": [dict(item, confidence="high")]}}}}}
    with pytest.raises(ReportError, match=r"errors\[0\].confidence is 'high': expected a finite number"):
        validate_gallery(_Where("r.json"), bad)


def test_tabular_confident_errors_record_the_model_inputs(credit_checkpoint, tmp_path):
    """On tabular data the gallery lists the most confident errors per class with the row's inputs (the
    encoded features, named), from a real run of the credit model; report.json and the page agree."""
    import json

    from conftest import ROOT, run_cli

    out = tmp_path / "o"
    res = run_cli("run", credit_checkpoint, "--recipe", ROOT / "recipes" / "credit.toml", "--suite", "performance",
                  "--out", out, "--quiet")
    assert res.exit_code in (0, 1), res.stderr
    r = json.loads((out / "report.json").read_text())
    errs = r["suites"]["performance"]["tables"]["gallery"]["errors"]
    z = np.load(out / "examples.npz", allow_pickle=False)
    logits = z["logits"].astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pred, y, idx = p.argmax(1), z["label"], z["index"]
    expect = []
    for c in sorted(set(y[pred != y].tolist())):
        wrong = np.flatnonzero((y == c) & (pred != c))
        expect += [int(idx[i]) for i in sorted(wrong, key=lambda i: (-p[i, pred[i]], idx[i]))[:2]]
    assert [e["index"] for e in errs] == expect
    names = r["data"]["encoded_features"]
    assert all(e["image"] is None and len(e["features"]) == len(names) for e in errs)
    html = (out / "report.html").read_text()
    assert 'class="errtab"' in html and f">{names[0]}</th>" in html
    # binary task: AUROC and AP once (for the positive class), no micro averages; report.json keeps them all
    assert html.count("<td>auroc (class good)</td>") == 1 and "auroc (macro)" not in html and "auroc (weighted)" not in html
    assert html.count("<td>average precision (class good)</td>") == 1 and "(micro)" not in html
    assert {m["params"].get("average") for m in r["metrics"] if m["name"] == "auroc"} >= {"macro", "weighted"}


def test_across_seeds_intervals_of_accuracies_stay_within_0_and_1():
    """The repro study's seed records and table: a robust accuracy of 1, 0.96, 1, 1, 0.97 over five seeds has
    a t-interval reaching above 1; the study reports it clipped, and a metric without bounds unclipped."""
    from scipy import stats

    from audit.repro.study import _seed_stats
    from audit.report.records import SuiteResult

    vals = [1.0, 0.96, 1.0, 1.0, 0.97]
    temps = [1.2, 1.5, 1.1, 1.4, 1.3]
    rep = lambda v, t: {"metrics": [  # noqa: E731
        {"suite": "robustness", "name": "robust_accuracy", "params": {"eps": "8/255", "norm": "linf"}, "value": v},
        {"suite": "calibration", "name": "temperature", "params": {}, "value": t}], "gates": []}
    data = [(s, rep(v, t), {"pred": np.zeros(3, dtype=np.int64)}) for s, v, t in zip(range(5), vals, temps)]
    res = SuiteResult("repro")
    out = _seed_stats(res, rep(1.0, 1.2), data, {"confidence": 0.95, "target_half_width": 0.01})
    acc, temp = out["metrics"]
    lo, hi = stats.t.interval(0.95, 4, loc=np.mean(vals), scale=stats.sem(vals))
    assert hi > 1 and acc["ci_high"] == 1.0 and acc["ci_low"] == pytest.approx(lo, abs=1e-6)
    lo, hi = stats.t.interval(0.95, 4, loc=np.mean(temps), scale=stats.sem(temps))
    assert temp["ci_low"] == pytest.approx(lo, abs=1e-6) and temp["ci_high"] == pytest.approx(hi, abs=1e-6)
    rec = next(m for m in res.metrics if m.name == "seed_mean" and m.params["metric"] == "robustness.robust_accuracy")
    assert rec.ci_high == 1.0
