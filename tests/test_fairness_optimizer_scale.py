"""The ThresholdOptimizer diagnostic on many distinct scores: rounded to 3 decimals (fairlearn's threshold
search is a Python loop over distinct scores), with the same reading as the unrounded fit."""

import numpy as np

from audit.report.records import SuiteResult
from audit.suites import fairness as FS


def _data(n, seed=0):
    r = np.random.default_rng(seed)
    g = r.integers(0, 2, n)
    y = (r.random(n) < 0.3 + 0.2 * g).astype(np.int64)
    p1 = 1 / (1 + np.exp(-(1.5 * (y - 0.5) + 0.4 * g + r.normal(size=n))))
    probs = np.stack([1 - p1, p1], 1)
    return y, (p1 > 0.5).astype(np.int64), probs, g


def _fit(n, monkeypatch=None, limit=None):
    if limit is not None:
        monkeypatch.setattr(FS, "_OPTIMIZER_DISTINCT", limit)
    y, pred, probs, g = _data(n)
    res = SuiteResult("fairness")
    out = FS._threshold_optimizer(res, y, pred, probs, g, ["a", "b"], "g", 1, {"constraint": "demographic_parity"}, 0)
    acc = next(m for m in res.metrics if m.name == "postprocessed_accuracy").value
    return out, acc


def test_many_distinct_scores_are_rounded_and_read_the_same(monkeypatch):
    small, _ = _fit(2_000)
    assert small["status"] == "ok" and small["scores_rounded"] is None       # small data: exact scores
    big, acc = _fit(30_000)
    assert big["status"] == "ok" and big["scores_rounded"] == 3
    exact, acc_exact = _fit(30_000, monkeypatch, limit=10**9)
    assert exact["scores_rounded"] is None
    assert abs(acc - acc_exact) < 0.003
    for key in ("demographic_parity_difference", "accuracy"):
        assert abs(big["thresholds"][key] - exact["thresholds"][key]) < 0.005
