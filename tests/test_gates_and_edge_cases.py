"""Gate semantics across runs and saved reports, and edge cases of the data that must not crash a report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import torch

from audit.loading.data import sklearn_split
from audit.report.gates import same_param
from conftest import DIGITS_MODEL, ROOT, run_cli

PERF = "\n[performance]\nbootstrap = 50\nbootstrap_ranking = 20\n"


def _digits_npz(tmp_path, y=None, site=None):
    x, y0, idx, _ = sklearn_split("digits", "test", 0.25, 0)
    arrays = {"x": x, "y": y0 if y is None else y}
    if site is not None:
        arrays["site"] = site
    np.savez(tmp_path / "d.npz", **arrays)
    return len(y0)


def _one_line(res, code, *frags):
    assert res.exit_code == code, (res.exit_code, res.stderr)
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    for f in frags:
        assert f in res.stderr, (f, res.stderr)


def test_params_match_as_strings_or_numbers():
    assert same_param("8/255", "8/255") and same_param("1.0", 1) and same_param(0.1, "0.1")
    # a fraction is its value (the recipe refuses two epsilons of equal value, so this cannot be ambiguous)
    assert same_param("8/255", 8 / 255) and same_param(0.25, "1/4") and not same_param("8/255", 0.0313725)
    assert not same_param("macro", "micro") and not same_param(True, 1) and not same_param("1/0", 0)


def test_single_class_data_gives_a_report_with_undefined_ranking_metrics(digits_checkpoint, tmp_path):
    n = _digits_npz(tmp_path, y=np.zeros(450, dtype=np.int64))
    (tmp_path / "r.toml").write_text(DIGITS_MODEL + '[data]\nsource = "npz"\npath = "d.npz"\n' + PERF +
                                     '[[gates]]\nmetric = "auroc"\nparams = { average = "macro" }\nop = ">="\n'
                                     'threshold = 0.5\n')
    res = run_cli("run", digits_checkpoint, "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 1, res.stderr  # the AUROC gate is inconclusive: it cannot pass
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    assert r["data"]["n"] == n and r["gates"][0]["status"] == "inconclusive"
    assert all(m["value"] is None for m in r["metrics"] if m["name"] == "auroc")
    assert (tmp_path / "o" / "report.html").is_file()


def _binary_model(tmp_path):
    (tmp_path / "net.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(30, 2)\n")
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(30, 2).state_dict(), tmp_path / "lin.pt")
    return '[model]\nfactory = "net.py:make"\nnum_classes = 2\n[data]\nsource = "sklearn"\nname = "breast_cancer"\n'


def test_positive_class_outside_a_binary_task_is_a_recipe_error(tmp_path):
    (tmp_path / "r.toml").write_text(_binary_model(tmp_path) + "[performance]\npositive_class = 2\n")
    res = run_cli("run", tmp_path / "lin.pt", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o", "--quiet")
    _one_line(res, 2, "[performance] positive_class = 2", "classes 0 and 1")


def test_positive_class_on_a_multiclass_task_is_a_recipe_error(digits_checkpoint, tmp_path):
    _digits_npz(tmp_path)
    (tmp_path / "r.toml").write_text(DIGITS_MODEL + '[data]\nsource = "npz"\npath = "d.npz"\n'
                                     + PERF + "positive_class = 12\n")
    res = run_cli("run", digits_checkpoint, "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o", "--quiet")
    _one_line(res, 2, "[performance] positive_class = 12: only binary tasks use it", "10 classes")
    (tmp_path / "r1.toml").write_text((tmp_path / "r.toml").read_text().replace("= 12", "= 1"))  # the default value
    res = run_cli("run", digits_checkpoint, "--recipe", tmp_path / "r1.toml", "--out", tmp_path / "o", "--quiet")
    _one_line(res, 2, "[performance] positive_class = 1: only binary tasks use it")


def test_gates_on_a_suite_that_did_not_run_block_unless_left_out_on_purpose(digits_checkpoint, tmp_path):
    _digits_npz(tmp_path)
    gate = '[[gates]]\nmetric = "robust_accuracy"\nparams = { norm = "linf", eps = "8/255" }\nop = ">="\nthreshold = 0.5\n'
    base = DIGITS_MODEL + '[data]\nsource = "npz"\npath = "d.npz"\n' + PERF
    (tmp_path / "r.toml").write_text(base + gate)
    res = run_cli("run", digits_checkpoint, "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 1
    g = json.loads((tmp_path / "o" / "report.json").read_text())["gates"][0]
    assert g["status"] == "not_run" and not g["excused"] and "[robustness] table" in g["message"]
    # --suite performance leaves robustness out on purpose: the gate is reported, not blocking
    res = run_cli("run", digits_checkpoint, "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o2", "--quiet",
                  "--suite", "performance")
    assert res.exit_code == 0, res.stderr
    assert run_cli("gate", tmp_path / "o2" / "report.json").exit_code == 0  # the same verdict from the file
    # stricter release gates from a gates-only file, applied to a report without robustness: they fail
    (tmp_path / "release.toml").write_text(gate.replace("[[gates]]", '[[gates]]\nid = "release-robustness"'))
    (tmp_path / "ok.toml").write_text('[[gates]]\nmetric = "accuracy"\nop = ">="\nthreshold = 0.5\n')
    assert run_cli("gate", tmp_path / "o2" / "report.json", "--recipe", tmp_path / "ok.toml").exit_code == 0
    res = run_cli("gate", tmp_path / "o" / "report.json", "--recipe", tmp_path / "release.toml")
    assert res.exit_code == 1 and "release-robustness" in res.stderr
    # ... also on the report made with --suite performance: that run excused its own gates, not new ones
    res = run_cli("gate", tmp_path / "o2" / "report.json", "--recipe", tmp_path / "release.toml",
                  "--junit", tmp_path / "j.xml")
    assert res.exit_code == 1, res.stderr
    assert "gate release-robustness: NOT_RUN (blocking)" in res.stderr
    assert "suite 'robustness' is not in this report" in res.stderr and "--suite robustness" in res.stderr
    # nor a repro gate on a report that `audit repro` did not make
    (tmp_path / "rel.toml").write_text('[[gates]]\nid = "bitwise"\nmetric = "repro.bitwise_identical"\nop = ">="\n'
                                       'threshold = 1\n')
    res = run_cli("gate", tmp_path / "o2" / "report.json", "--recipe", tmp_path / "rel.toml")
    _one_line(res, 2, "none of its gates can be checked on", "they need repro", "`audit repro`")
    # a gates file without gates is a mistake (it would turn every gate off), not a pass
    (tmp_path / "empty.toml").write_text("# gates moved elsewhere\n")
    res = run_cli("gate", tmp_path / "o2" / "report.json", "--recipe", tmp_path / "empty.toml")
    _one_line(res, 2, "has no [[gates]] and no [validity] table")
    # a gate of --recipe whose params pick no record is a mistake in the gates file, not a regression of the
    # model: exit 2 naming what the report has, and nothing written
    (tmp_path / "typo.toml").write_text('[[gates]]\nid = "acc-3"\nmetric = "recall"\nparams = { class = "3" }\n'
                                        'op = ">="\nthreshold = 0.5\n[[gates]]\nid = "f1-typo"\nmetric = "f1"\n'
                                        'params = { average = "macro", class = "3" }\nop = ">="\nthreshold = 0.5\n')
    res = run_cli("gate", tmp_path / "o2" / "report.json", "--recipe", tmp_path / "typo.toml",
                  "--junit", tmp_path / "j2.xml")
    _one_line(res, 2, "gate 'f1-typo': no record of performance.f1 with params",
              "its records have the params (average) or (class)")
    assert not (tmp_path / "j2.xml").exists()
    # the same ERROR gate stored in a report (the run's own gates) is judged as the run judged it: a JUnit
    # error, exit 1
    r2 = json.loads((tmp_path / "o2" / "report.json").read_text())
    r2["recipe"]["gates"] = [dict(r2["recipe"]["gates"][0], id="f1-typo", suite="performance", name="f1",
                                  params={"average": "macro", "class": "3"})]
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / "report.json").write_text(json.dumps(r2))
    res = run_cli("gate", tmp_path / "o3" / "report.json", "--junit", tmp_path / "j2.xml")
    assert res.exit_code == 1 and "gate f1-typo: ERROR (blocking)" in res.stderr, res.stderr
    suite = ET.parse(tmp_path / "j2.xml").getroot().find("testsuite")
    assert (suite.get("errors"), suite.get("failures")) == ("1", "0")
    case = next(c for c in suite.iter("testcase") if c.get("name") == "f1-typo")
    assert case.find("error") is not None and case.find("failure") is None


def test_gate_recipe_without_the_downgrade_decides_afresh(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.lin = torch.nn.Linear(64, 10)\n    def forward(self, x):\n"
        "        return self.lin(torch.nn.functional.dropout(x.flatten(1), 0.5, training=True))\n")
    torch.manual_seed(0)
    torch.save({"lin.weight": torch.randn(10, 64) * 0.3, "lin.bias": torch.zeros(10)}, tmp_path / "m.pt")
    base = '[model]\nfactory = "net.py:Net"\nnum_classes = 10\n[data]\nsource = "sklearn"\nname = "digits"\n' + PERF
    (tmp_path / "lenient.toml").write_text(base + '[validity]\ndowngrade = ["inference_deterministic"]\n')
    (tmp_path / "strict.toml").write_text('[validity]\ndowngrade = []\n')
    res = run_cli("run", tmp_path / "m.pt", "--recipe", tmp_path / "lenient.toml", "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 0
    assert run_cli("gate", tmp_path / "o" / "report.json").exit_code == 0
    assert run_cli("gate", tmp_path / "o" / "report.json", "--recipe", tmp_path / "strict.toml").exit_code == 4


def test_malformed_reports_are_user_errors(digits_checkpoint, digits_recipe, tmp_path):
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", tmp_path / "o", "--quiet",
                  "--suite", "performance")
    assert res.exit_code == 0
    good = json.loads((tmp_path / "o" / "report.json").read_text())
    cases = {
        "no_n": lambda r: r["metrics"][0].pop("n"),
        "bad_status": lambda r: r["checks"][0].update(status="maybe"),
        "suites_list": lambda r: r.update(suites=[]),
        "no_recipe": lambda r: r.pop("recipe"),
        "gate_without_severity": lambda r: r["recipe"]["gates"][0].pop("severity"),
    }
    for name, damage in cases.items():
        r = json.loads(json.dumps(good))
        damage(r)
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
        res = run_cli("gate", tmp_path / f"{name}.json")
        _one_line(res, 2, f"{name}.json")


def test_single_group_attribute_makes_disparity_gates_inconclusive(digits_checkpoint, tmp_path):
    _digits_npz(tmp_path, site=np.array(["clinic"] * 450))
    (tmp_path / "r.toml").write_text(
        DIGITS_MODEL + '[data]\nsource = "npz"\npath = "d.npz"\nsensitive = { site = "site" }\n'
        '[fairness]\npositive_class = "3"\nbootstrap = 50\nthreshold_optimizer = false\n'
        '[[gates]]\nmetric = "disparate_impact_ratio"\nparams = { attribute = "site" }\nop = ">="\nthreshold = 0.8\n')
    res = run_cli("run", digits_checkpoint, "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 1
    g = json.loads((tmp_path / "o" / "report.json").read_text())["gates"][0]
    assert g["status"] == "inconclusive" and "single group" in g["message"]


def test_fgsm_alone_under_l2_is_a_recipe_error(digits_checkpoint, tmp_path):
    _digits_npz(tmp_path)
    (tmp_path / "r.toml").write_text(DIGITS_MODEL + '[data]\nsource = "npz"\npath = "d.npz"\n'
                                     '[robustness]\nattacks = ["fgsm"]\nnorm = "l2"\neps = [0.5]\n')
    res = run_cli("run", digits_checkpoint, "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o", "--quiet")
    _one_line(res, 2, "none of them attacks the l2 threat model")


def test_csv_feature_with_missing_values_names_the_column(tmp_path):
    (tmp_path / "net.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(2, 2)\n")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "lin.pt")
    (tmp_path / "d.csv").write_text("a,b,label\n0.1,,1\n0.2,,0\n0.3,0.5,1\n")
    (tmp_path / "r.toml").write_text('[model]\nfactory = "net.py:make"\nnum_classes = 2\n[data]\nsource = "csv"\n'
                                     'path = "d.csv"\nfeatures = ["a", "b"]\nlabel = "label"\n')
    res = run_cli("run", tmp_path / "lin.pt", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o", "--quiet")
    _one_line(res, 2, "feature column 'b' has missing values", "2 rows")


def test_shipped_recipes_gate_only_what_they_run():
    """Every gate in the shipped recipes names a suite the recipe runs (or repro, for `audit repro`)."""
    from audit.recipe import load_recipe
    from audit.runner import choose_suites

    for path in sorted((ROOT / "recipes").glob("*.toml")):
        recipe = load_recipe(path)
        ran = set(choose_suites(recipe, [])) | {"repro"}
        assert {g["suite"] for g in recipe.gates} <= ran, path
