"""Suites crossed end to end on one real model: robustness, calibration and fairness on digits with a
sensitive attribute. The per-group numbers the fairness suite reports must equal those the robustness
suite reports for the same groups, and a direct computation from the per-example table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.engine.table import ExampleTable
from audit.loading.data import sklearn_split
from audit.metrics import calibration as cal
from conftest import DIGITS_MODEL, run_cli


def _find(report, suite, name, **params):
    found = [m for m in report["metrics"] if m["suite"] == suite and m["name"] == name
             and {k: str(v) for k, v in m["params"].items()} == {k: str(v) for k, v in params.items()}]
    assert len(found) == 1, (suite, name, params, len(found))
    return found[0]


def test_robustness_calibration_and_fairness_cross_on_groups(digits_checkpoint, tmp_path):
    x, y, idx, _ = sklearn_split("digits", "test", 0.25, 0)
    site = np.where(idx % 3 == 0, "clinic", "hospital")  # a real, deterministic grouping of real examples
    np.savez(tmp_path / "digits.npz", x=x, y=y, site=site)
    recipe = DIGITS_MODEL + '''
[data]
source = "npz"
path = "digits.npz"
sensitive = { site = "site" }

[robustness]
attacks = ["fgsm", "pgd"]
eps = ["8/255", "32/255"]
steps = 5
noise = { gaussian = [0.1] }
noise_draws = 2
bootstrap = 100

[calibration]
reference_draws = 100

[fairness]
positive_class = "3"
bootstrap = 100
threshold_optimizer = false
'''
    (tmp_path / "r.toml").write_text(recipe)
    res = run_cli("run", digits_checkpoint, "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 0, res.stderr
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    assert r["suites_run"] == ["robustness", "calibration", "fairness"]  # the suites with a table
    t = ExampleTable.load(tmp_path / "o" / "examples.npz")
    codes, names = t["group:site"], t.categories["site"]
    assert names == ["clinic", "hospital"]
    worst = t["robust:worst:linf:eps_broken"]
    for g, name in enumerate(names):
        member = codes == g
        for label, eps in (("8/255", 8 / 255), ("32/255", 32 / 255)):
            direct = float(np.mean(worst[member] > eps + 1e-12))
            rob = _find(r, "robustness", "robust_accuracy", norm="linf", eps=label, attribute="site", group=name)
            fair = _find(r, "fairness", "group_robust_accuracy", norm="linf", eps=label, attribute="site", group=name)
            assert rob["value"] == pytest.approx(direct, abs=1e-12)
            assert fair["value"] == pytest.approx(direct, abs=1e-12)
        ece = _find(r, "fairness", "group_ece", attribute="site", group=name)
        assert ece["value"] == pytest.approx(cal.ece(t.probs[member], t["label"][member], n_bins=15), abs=1e-12)
        assert ece["n"] == int(member.sum())
    # every check the run recorded is declared, so [validity] downgrade can name it (and the docs list it)
    from audit.runner import CORE_CHECK_IDS
    from audit.suites import all_suites

    declared = set(CORE_CHECK_IDS) | {c for s in all_suites() for c in s.check_ids}
    assert {c["id"] for c in r["checks"]} <= declared
    assert {"gradients_not_masked", "pgd_converged"} <= {c["id"] for c in r["checks"]}
