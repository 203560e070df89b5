"""Issue #10, item 5: no gate passes on a handful of examples. A gate that sets no min_n gets the documented
default (30) wherever a record's n counts examples; repro records count seeds and keep no default."""

from __future__ import annotations

from audit.report.gates import DEFAULT_MIN_N, evaluate_gate


def _gate(**kw):
    g = {"id": "g", "suite": "performance", "name": "accuracy", "params": {}, "op": ">=", "threshold": 0.9,
         "use": "value", "severity": "error"}
    g.update(kw)
    return g


def _rec(n, suite="performance", name="accuracy", value=1.0):
    return {"suite": suite, "name": name, "params": {}, "value": value, "ci_low": 0.2, "ci_high": 1.0, "n": n}


def test_a_gate_on_one_example_is_inconclusive_not_passed():
    assert DEFAULT_MIN_N == 30
    out = evaluate_gate(_gate(), [_rec(1)], ["performance"])
    assert out["status"] == "inconclusive" and out["min_n"] == 30
    assert out["message"] == "n = 1 < min_n = 30 (the default for a gate that sets none)"
    assert evaluate_gate(_gate(), [_rec(29)], ["performance"])["status"] == "inconclusive"
    assert evaluate_gate(_gate(), [_rec(30)], ["performance"])["status"] == "pass"
    # the gate's own min_n wins, in both directions
    assert evaluate_gate(_gate(min_n=1), [_rec(1)], ["performance"])["status"] == "pass"
    out = evaluate_gate(_gate(min_n=200), [_rec(100)], ["performance"])
    assert out["status"] == "inconclusive" and out["message"] == "n = 100 < min_n = 200"
    # every suite of `audit run` counts examples
    for suite, name in (("fairness", "group_tpr"), ("calibration", "ece"), ("robustness", "robust_accuracy")):
        out = evaluate_gate(_gate(suite=suite, name=name), [_rec(5, suite, name)], [suite])
        assert out["status"] == "inconclusive", suite


def test_repro_gates_count_seeds_and_keep_no_default():
    out = evaluate_gate(_gate(suite="repro", name="bitwise_identical", op=">=", threshold=1.0),
                        [_rec(3, "repro", "bitwise_identical")], ["repro"])
    assert out["status"] == "pass" and out["min_n"] is None
