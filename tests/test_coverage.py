"""The fast subset of bench/coverage.py: every interval the report prints, on known populations, must
cover the truth at the nominal 95% (issue #10's target is 93%; asserted with a margin of three Monte-Carlo
standard errors, seeded, so the test is deterministic) and must never be a point where the estimate can
still move. The full table, with the width target, is in BENCHMARKS.md."""

from __future__ import annotations

import math

import pytest

from bench import coverage as cov

TARGET = 0.93


@pytest.fixture(scope="module")
def rows():
    return cov.all_rows(quick=True, seed=0)


def test_every_interval_covers_at_the_target(rows):
    assert len(rows) > 50
    low = []
    for r in rows:
        assert r.defined == r.datasets, (r.metric, r.scenario, "interval missing")
        se = math.sqrt(TARGET * (1 - TARGET) / r.defined)
        if r.coverage < TARGET - 3 * se:
            low.append(f"{r.metric} / {r.scenario} / n={r.n}: {r.coverage:.1%}")
    assert not low, low


def test_the_cases_issue_10_found_are_fixed(rows):
    """The measured failures before the fix: AUROC 0.967 at n = 60 (85%), equal opportunity with TPRs 1.0 vs
    0.97 (84-86%; equalized odds collapsed to [0, 0]), the ECE of a calibrated model (no interval)."""
    by = {(r.metric, r.scenario, r.n): r for r in rows}
    assert by[("auroc[class=1]", "binary, AUROC 0.967", 60)].coverage >= 0.93
    for name in ("equal_opportunity_difference", "equalized_odds_difference"):
        r = by[(name, "TPR 1.0 vs 0.97, FPR 0 vs 0", 240)]
        assert r.coverage >= 0.93 and r.width > 0.02, (name, r)
    r = by[("group_tpr[g0]", "TPR 1.0 vs 0.97, FPR 0 vs 0", 240)]   # observed 120/120 nearly always
    assert r.coverage == 1.0 and r.width > 0.02
    assert by[("ece[equal_width,top_label]", "calibrated", 500)].coverage >= 0.93


def test_intervals_are_sized_to_the_data(rows):
    """Not wider than the width target where the estimate varies and n per group is 100 or more (two-group
    disparities included: they were 1.5 x before), and never a point. Named exception here (BENCHMARKS.md):
    the ECE of a calibrated model, whose true value 0 sits on the boundary (the interval is [0, U]; the oracle
    is two-sided). Disparities over three or more groups, the other exception, are not in the fast subset."""
    for r in rows:
        assert r.width > 0, (r.metric, r.scenario)
        exception = r.metric.startswith("ece") and r.scenario == "calibrated"
        if r.n_min >= 100 and r.oracle > 0 and not exception:
            assert r.ratio <= 1.4, (r.metric, r.scenario, r.ratio)
