"""The Python API (`audit.run`, `audit.Report`): the same audit as `audit run`, from an in-memory model.

The headline test: the API on the digits CNN in memory gives the report.json that the CLI gives on the
same weights saved to disk and the same examples saved as an npz file, field for field, except the fields
that say where the model and the data came from and when the run happened (listed in VARYING).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import audit
from audit.errors import DataError, RecipeError
from conftest import ROOT, run_cli

# 150 test digits, FGSM + a short PGD at two eps, one noise level, calibration: a few seconds per run
RECIPE = f'''
[model]
factory = "{ROOT / 'examples' / 'digits' / 'model.py'}:DigitsCNN"
kwargs = {{ width = 16 }}
num_classes = 10
input_bounds = [0.0, 1.0]
input_shape = [1, 8, 8]
mean = [0.5]
std = [0.5]

[data]
source = "npz"
path = "digits_test.npz"
limit = 100

[run]
seed = 3

[performance]
bootstrap = 200

[robustness]
attacks = ["fgsm"]
eps = ["8/255"]
noise = {{ gaussian = [0.1] }}
noise_draws = 2
check_examples = 10
escalate = 0

[calibration]
bins = 10
reference_draws = 200

[[gates]]
metric = "accuracy"
op = ">="
threshold = 0.8

[[gates]]
metric = "robust_accuracy"
params = {{ norm = "linf", eps = "8/255" }}
op = ">="
threshold = 0.5
'''

# Fields that legitimately differ between the two runs: when and how the run was started, and where the
# model and the data came from (a file and its digest vs. a module and its state_dict's digest). Every
# metric, check, gate, suite table, the recipe and the data's content hash must be equal.
VARYING = {
    ("run_id",), ("timing",),
    ("provenance", "created"), ("provenance", "command"), ("provenance", "run_id"),
    ("model", "path"), ("model", "format"), ("model", "sha256"), ("model", "notes"), ("model", "factory"),
    ("model", "source"), ("model", "class"),
    ("data", "source"), ("data", "path"), ("data", "file_sha256"), ("data", "x"),
}


def _strip(report: dict) -> dict:
    r = json.loads(json.dumps(report))
    for keys in VARYING:
        d = r
        for k in keys[:-1]:
            d = d[k]
        d.pop(keys[-1], None)
    return r


@pytest.fixture(scope="module")
def digits_arrays():
    from audit.loading.data import sklearn_split

    x, y, _, _ = sklearn_split("digits", "test", 0.25, 0)
    return x, y


@pytest.fixture(scope="module")
def digits_net(digits_checkpoint):
    from safetensors.torch import load_file

    from examples.digits.model import DigitsCNN

    net = DigitsCNN(width=16)
    net.load_state_dict(load_file(str(digits_checkpoint)))
    return net


@pytest.fixture(scope="module")
def both_runs(digits_checkpoint, digits_net, digits_arrays, tmp_path_factory):
    """The CLI on the safetensors file and an npz of the examples; the API on the module and the arrays, run
    from an empty working directory (to see that it writes nothing)."""
    x, y = digits_arrays
    files = tmp_path_factory.mktemp("api-cli")
    np.savez(files / "digits_test.npz", x=x, y=y)
    recipe = files / "recipe.toml"
    recipe.write_text(RECIPE)
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--out", files / "out", "--quiet")
    assert res.exit_code in (0, 1, 4), res.stderr
    cli = json.loads((files / "out" / "report.json").read_text())
    empty = tmp_path_factory.mktemp("api-cwd")
    old = Path.cwd()
    os.chdir(empty)
    try:
        digits_net.train()  # the caller's mode, to be given back
        report = audit.run(digits_net, x, y, recipe=recipe, quiet=True)
    finally:
        os.chdir(old)
    return cli, report, recipe, files, empty


def test_api_report_equals_the_cli_report_on_the_same_model_and_data(both_runs):
    cli, report, _, _, empty = both_runs
    api = report.to_dict()
    assert _strip(api) == _strip(cli)
    # the equal parts are the substance, not empty lists
    assert len(api["metrics"]) > 50 and api["gates"] and {"performance", "robustness", "calibration"} <= set(api["suites"])
    assert api["data"]["sha256"] == cli["data"]["sha256"] and api["data"]["n"] == 100
    # provenance says where the model came from: its class and the digest of its state_dict
    assert api["model"]["source"] == "memory" and api["model"]["class"] == "examples.digits.model.DigitsCNN"
    assert api["model"]["format"] == "in_memory" and api["model"]["factory"] is None
    from audit.api import state_dict_sha256
    from audit.loading.model import load_checkpoint
    from audit.recipe import load_recipe

    rec = load_recipe(both_runs[2])
    loaded = load_checkpoint(cli["model"]["path"], rec.section("model"), rec.base_dir, rec.path)
    assert api["model"]["sha256"] == state_dict_sha256(loaded.module)  # the same weights as the file
    assert api["data"]["source"] == "memory" and api["data"]["path"] is None
    assert api["run_status"] == "finished" and api["run_id"] and api["provenance"]["run_id"] == api["run_id"]
    # nothing written: no folder, no cache, no file
    assert list(empty.iterdir()) == []


def test_the_report_object(both_runs, digits_net):
    cli, report, *_ = both_runs
    assert report.passed is (cli["verdict"] == "pass") and report.exit_code == cli["exit_code"]
    m = report.metrics
    assert list(m.columns[:7]) == ["suite", "name", "params", "value", "ci_low", "ci_high", "n"]
    assert len(m) == len(cli["metrics"])
    acc = m[(m.name == "accuracy") & (m.suite == "performance")].iloc[0]
    from sklearn.metrics import accuracy_score

    table = report.table
    assert acc.value == pytest.approx(accuracy_score(table.columns["label"], table.columns["pred"]))
    assert [g["id"] for g in report.gates] == [g["id"] for g in cli["gates"]]
    assert {c["id"] for c in report.checks} == {c["id"] for c in cli["checks"]}
    assert json.loads(report.json) == report.to_dict()
    assert "audit.Report" in repr(report) and report.verdict.upper() in repr(report)
    # the caller's module comes back as it went in
    assert digits_net.training and all(p.requires_grad for p in digits_net.parameters())


def test_save_writes_the_usual_files_that_audit_gate_accepts(both_runs, tmp_path):
    _, report, *_ = both_runs
    out = report.save(tmp_path / "saved")
    for name in ("report.json", "report.html", "junit.xml", "summary.md", "examples.npz"):
        assert (out / name).is_file(), name
    assert json.loads((out / "report.json").read_text()) == report.to_dict()
    res = run_cli("gate", out / "report.json")
    assert res.exit_code == report.exit_code, res.stderr
    # saved twice: the earlier files are moved aside, as with `audit run --out`
    report.save(out)
    assert list((out / "previous-runs").iterdir())
    assert "saved to" in report._repr_html_()


def test_gate_regates_like_audit_gate_recipe(both_runs, tmp_path):
    _, report, _, files, _ = both_runs
    stricter = tmp_path / "stricter.toml"
    stricter.write_text('[[gates]]\nmetric = "accuracy"\nop = ">="\nthreshold = 0.999\n')
    again = report.gate(stricter)
    assert again.exit_code == 1 and not again.passed and report.to_dict()["gates"] != again.to_dict()["gates"]
    saved = report.save(tmp_path / "s")
    res = run_cli("gate", saved / "report.json", "--recipe", stricter)
    assert res.exit_code == again.exit_code
    assert again.gates[0]["status"] == "fail" and len(again.gates) == 1
    # a list of gates, and a dict, do the same
    listed = report.gate([{"metric": "accuracy", "op": ">=", "threshold": 0.999}])
    assert listed.gates == again.gates
    # gates alone keep the run's [validity] downgrades (there is nowhere else to give them)
    assert listed.to_dict()["recipe"]["sections"]["validity"] == report.to_dict()["recipe"]["sections"]["validity"]
    # saved, the re-gated report says so and `audit gate` without --recipe reaches the same verdict
    regated = again.save(tmp_path / "g")
    assert run_cli("gate", regated / "report.json").exit_code == again.exit_code == 1
    assert "re-evaluated by `audit.Report.gate`" in (regated / "summary.md").read_text()
    assert "Gates re-evaluated by <code>audit.Report.gate</code>" in (regated / "report.html").read_text()
    assert report.gate({"gates": [{"metric": "accuracy", "op": ">=", "threshold": 0.0}]}).passed is (
        report.verdict != "invalid")
    with pytest.raises(RecipeError, match="unknown metric 'acuracy'.*did you mean 'accuracy'"):
        report.gate([{"metric": "acuracy", "op": ">=", "threshold": 0.9}])
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    res = run_cli("gate", saved / "report.json", "--recipe", empty)
    with pytest.raises(audit.errors.AuditError) as e:
        report.gate(empty)
    assert res.exit_code == 2 and res.stderr.strip() == f"audit: error: {e.value}"


def test_repr_html_is_the_reports_summary_card(both_runs):
    _, report, *_ = both_runs
    html = report._repr_html_()
    badge = {"pass": "PASS", "fail": "FAIL", "invalid": "INVALID"}[report.verdict]
    assert f'class="badge {report.verdict}">{badge}<' in html
    assert 'id="summary"' in html and "Worst findings" in html
    for g in report.gates:
        assert g["id"].replace(">", "&gt;") in html
    # a fragment for a notebook: no page, and styles that stay inside the card
    assert "<html" not in html and "<body" not in html
    assert "in memory" in audit.Report(report.to_dict())._repr_html_()  # not saved (saved_to: see save's test)
    import re

    for rule in re.findall(r"^([^{}@\n][^{}]*)\{", html.split("<style>")[1].split("</style>")[0], re.M):
        for sel in rule.split(","):
            assert sel.strip().startswith(".audit-summary"), sel


def test_a_torch_dataset_a_dict_recipe_and_keyword_overrides(digits_net, digits_arrays):
    import torch

    x, y = digits_arrays
    x, y = x[:120], y[:120]
    recipe = {"model": {"input_bounds": [0.0, 1.0], "mean": [0.5], "std": [0.5]},
              "performance": {"bootstrap": 1000},
              "gates": [{"metric": "accuracy", "op": ">=", "threshold": 0.0}]}
    kept = json.dumps(recipe)
    a = audit.run(digits_net, x, y, recipe=recipe, suites=["performance"], seed=5, performance={"bootstrap": 100},
                  quiet=True)
    assert json.dumps(recipe) == kept  # the caller's dict is not changed
    d = a.to_dict()
    assert d["recipe"]["sections"]["performance"]["bootstrap"] == 100  # the keyword wins
    assert d["provenance"]["seed"] == 5 and d["suites_run"] == ["performance"]
    assert d["recipe"]["sections"]["model"]["num_classes"] == 10  # read from the model's output
    assert any("num_classes = 10 was read" in n for n in d["model"]["notes"])
    assert a.passed
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    b = audit.run(digits_net, ds, recipe=recipe, suites="performance", seed=5, performance={"bootstrap": 100},
                  quiet=True)
    assert b.to_dict()["metrics"] == d["metrics"] and b.to_dict()["data"]["sha256"] == d["data"]["sha256"]
    # the [model] section by keyword too (model, x and y are positional-only, so `model=` is an option)
    m = audit.run(digits_net, x, y, suites=["performance"], seed=5, performance={"bootstrap": 100},
                  model=recipe["model"], quiet=True)
    assert m.to_dict()["metrics"] == d["metrics"]
    # sensitive attributes as a DataFrame, [data] limit applied to memory
    import pandas as pd

    c = audit.run(digits_net, x, y, recipe=recipe, suites=["performance"], data={"limit": 50},
                  sensitive=pd.DataFrame({"parity": np.where(y % 2, "odd", "even")}), quiet=True)
    assert c.to_dict()["data"]["n"] == 50 and c.to_dict()["data"]["sensitive"] == {"parity": ["even", "odd"]}


def test_option_mistakes_name_the_fix(digits_net, digits_arrays):
    x, y = digits_arrays
    with pytest.raises(RecipeError, match=r"audit.run: unknown option 'robustnes' \(did you mean 'robustness'\?"):
        audit.run(digits_net, x, y, robustnes={"eps": ["8/255"]})
    with pytest.raises(RecipeError, match=r"audit.run\(robustness=...\): unknown key 'epss' \(did you mean 'eps'\?"):
        audit.run(digits_net, x, y, robustness={"epss": ["8/255"]})
    with pytest.raises(RecipeError, match=r"audit.run\(suites=...\): unknown suite 'robustnes' \(did you mean"):
        audit.run(digits_net, x, y, suites=["robustnes"])
    with pytest.raises(RecipeError, match=r"<recipe>: \[data\] unknown key 'path' \(allowed: sensitive_bins, limit\)"):
        audit.run(digits_net, x, y, data={"path": "x.npz"})
    with pytest.raises(audit.errors.AuditError, match=r"audit.run\(device='gpu'\): expected auto, cpu, cuda"):
        audit.run(digits_net, x, y, device="gpu")
    with pytest.raises(audit.errors.AuditError, match="model must be a torch.nn.Module, got str"):
        audit.run("model.pt", x, y)
    with pytest.raises(DataError, match="y \\(the labels\\) is missing"):
        audit.run(digits_net, x)
    with pytest.raises(DataError, match=r"in-memory data \(x, y\): x has 450 rows but y has 449"):
        audit.run(digits_net, x, y[:-1])


def test_errors_are_the_clis_exit_2_lines(digits_checkpoint, digits_net, digits_arrays, tmp_path):
    """The same mistake, in a recipe file given to both: the CLI's one line is the exception's message."""
    x, y = digits_arrays
    np.savez(tmp_path / "digits_test.npz", x=x, y=y)
    bad = tmp_path / "bad.toml"
    bad.write_text(RECIPE.replace("noise_draws = 2", "noise_drawz = 2"))
    res = run_cli("run", digits_checkpoint, "--recipe", bad, "--out", tmp_path / "out")
    with pytest.raises(RecipeError) as e:
        audit.run(digits_net, x, y, recipe=bad)
    assert res.exit_code == 2 and res.stderr.strip() == f"audit: error: {e.value}"
    assert "unknown key 'noise_drawz'" in str(e.value)
    # a gate on an eps the sweep does not run: found when the recipe loads, in both
    bad.write_text(RECIPE.replace('eps = "8/255" }', 'eps = 0.03137 }'))
    res = run_cli("run", digits_checkpoint, "--recipe", bad, "--out", tmp_path / "out")
    with pytest.raises(RecipeError) as e:
        audit.run(digits_net, x, y, recipe=bad)
    assert res.exit_code == 2 and res.stderr.strip() == f"audit: error: {e.value}"
    # bad data: the same validation (_validate) with the in-memory source named instead of the file
    xn = x.copy()
    xn[3, 0, 2, 5] = np.nan
    np.savez(tmp_path / "digits_test.npz", x=xn, y=y)
    good = tmp_path / "good.toml"
    good.write_text(RECIPE)
    res = run_cli("run", digits_checkpoint, "--recipe", good, "--out", tmp_path / "out2")
    with pytest.raises(DataError) as e:
        audit.run(digits_net, xn, y, recipe=good)
    line = res.stderr.strip().removeprefix("audit: error: ")
    assert res.exit_code == 2 and line == str(e.value).replace("in-memory data (x, y)", str(tmp_path / "digits_test.npz"))
    assert "x has NaN or Inf values at position (0, 2, 5)" in line
