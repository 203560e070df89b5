"""`audit run` and `audit gate` end to end on the digits example: files, numbers, gates, exit codes."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from sklearn import metrics as skm

from audit.engine.table import ExampleTable
from conftest import ROOT, run_cli, run_subprocess


@pytest.fixture(scope="module")
def digits_run(digits_checkpoint, digits_recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", out)
    return res, out


def _metric(report, name, **params):
    found = [m for m in report["metrics"] if m["name"] == name and m["params"] == params]
    assert len(found) == 1
    return found[0]


def test_run_writes_every_output_and_passes(digits_run):
    res, out = digits_run
    assert res.exit_code == 0, res.stderr
    for name in ("report.json", "report.html", "junit.xml", "summary.md", "examples.npz"):
        assert (out / name).is_file(), name
    assert "PASS" in res.stderr and "report.html" in res.stderr


def test_report_schema_and_numbers_equal_sklearn(digits_run):
    _, out = digits_run
    r = json.loads((out / "report.json").read_text())
    assert r["schema"] == "audit.report/1" and r["passed"] is True and r["verdict"] == "pass"
    for key in ("provenance", "model", "data", "recipe", "metrics", "checks", "gates"):
        assert key in r
    assert r["provenance"]["packages"]["torch"] and r["provenance"]["tool"]["name"] == "audit"
    assert len(r["model"]["sha256"]) == 64 and len(r["data"]["sha256"]) == 64
    for m in r["metrics"]:
        assert set(m) - {"inconclusive"} == {"suite", "name", "params", "value", "ci_low", "ci_high", "n"}
    for g in r["gates"]:
        assert {"id", "metric", "params", "op", "threshold", "use", "value", "status"} <= set(g)
    for c in r["checks"]:
        assert {"id", "status", "message"} <= set(c)
    t = ExampleTable.load(out / "examples.npz")
    y, pred, probs = t["label"], t["pred"], t.probs
    assert _metric(r, "accuracy")["value"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert _metric(r, "balanced_accuracy")["value"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert _metric(r, "mcc")["value"] == pytest.approx(skm.matthews_corrcoef(y, pred), abs=1e-12)
    assert _metric(r, "f1", average="macro")["value"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert _metric(r, "auroc", average="macro")["value"] == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-9)
    cm = r["suites"]["performance"]["tables"]["confusion_matrix"]["counts"]
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred))
    # the checks every suite relies on ran and passed on this well-behaved model
    ids = {c["id"]: c["status"] for c in r["checks"]}
    assert ids["logits_not_probabilities"] == "pass" and ids["inference_deterministic"] == "pass"


def _strip(path):
    """A report without what legitimately changes between runs: creation time, command line, timings, run id."""
    r = json.loads(path.read_text())
    r["provenance"].pop("created")
    r["provenance"].pop("command")
    r["provenance"].pop("run_id")
    r.pop("run_id")
    r.pop("timing")
    return r


def test_report_is_deterministic(digits_run, digits_checkpoint, digits_recipe, tmp_path):
    """Same inputs, seed and options: the same report.json, every suite included, bit for bit."""
    _, out = digits_run
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", tmp_path, "--quiet")
    assert res.exit_code == 0
    assert _strip(out / "report.json") == _strip(tmp_path / "report.json")
    # another master seed changes the bootstrap intervals, not the point estimates of clean metrics
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", tmp_path / "s1", "--quiet",
                  "--seed", "1", "--suite", "performance")
    r1, r2 = _strip(out / "report.json"), _strip(tmp_path / "s1" / "report.json")
    assert _metric(r1, "accuracy")["value"] == _metric(r2, "accuracy")["value"]
    assert _metric(r1, "accuracy")["ci_low"] != _metric(r2, "accuracy")["ci_low"] or \
        _metric(r1, "mcc")["ci_low"] != _metric(r2, "mcc")["ci_low"]


def test_batch_size_changes_only_float_noise(digits_run, digits_checkpoint, digits_recipe, tmp_path):
    """CPU kernels choose algorithms per batch shape, so logits move in their last float32 bits with
    --batch-size (same batch size is bitwise identical). Count metrics cannot notice; continuous ones
    (calibration) agree to ~1e-6. `audit repro` measures this per model (batch_invariance_*)."""
    _, out = digits_run
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", tmp_path, "--quiet",
                  "--batch-size", "7", "--suite", "performance", "--suite", "calibration")
    assert res.exit_code == 0
    a, b = _strip(out / "report.json"), _strip(tmp_path / "report.json")
    t1 = ExampleTable.load(out / "examples.npz")
    t2 = ExampleTable.load(tmp_path / "examples.npz")
    np.testing.assert_allclose(t1["logits"], t2["logits"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(t1["pred"], t2["pred"])
    perf = lambda r: [m for m in r["metrics"] if m["suite"] == "performance"]  # noqa: E731
    assert perf(a) == perf(b)
    cal_a = [m for m in a["metrics"] if m["suite"] == "calibration"]
    cal_b = [m for m in b["metrics"] if m["suite"] == "calibration"]
    assert [(m["name"], m["params"], m["n"]) for m in cal_a] == [(m["name"], m["params"], m["n"]) for m in cal_b]
    for x, y in zip(cal_a, cal_b):
        for key in ("value", "ci_low", "ci_high"):
            assert (x[key] is None and y[key] is None) or x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6)


def test_html_is_small_offline_and_complete(digits_run):
    _, out = digits_run
    html = (out / "report.html").read_text()
    assert len(html.encode()) < 1_000_000
    # nothing is loaded from anywhere: no external URLs in src/href/url(), no scripts, no @import
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html)
    assert "<script" not in html and "@import" not in html and "<link" not in html
    assert html.index('id="summary"') < html.index('id="suite-performance"')
    assert html.count("<svg") >= 3  # confusion matrix, ROC, PR
    assert "PASS" in html


def test_failing_gate_exits_1_with_junit_failure_and_gate_agrees(digits_checkpoint, write_recipe, tmp_path):
    text = (ROOT / "recipes" / "digits.toml").read_text().replace(
        'factory = "../examples/digits/model.py:DigitsCNN"', f'factory = "{ROOT}/examples/digits/model.py:DigitsCNN"')
    text += '\n[[gates]]\nid = "impossible"\nmetric = "accuracy"\nop = ">"\nthreshold = 0.9999\n'
    text += '\n[[gates]]\nid = "soft"\nmetric = "mcc"\nop = ">="\nthreshold = 0.9999\nseverity = "warn"\n'
    recipe = write_recipe(text)
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--out", tmp_path / "o")
    assert res.exit_code == 1, res.stderr
    assert "FAIL" in res.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["verdict"] == "fail" and report["passed"] is False and report["exit_code"] == 1
    gates = {g["id"]: g for g in report["gates"]}
    assert gates["impossible"]["status"] == "fail" and gates["soft"]["status"] == "fail"
    junit = ET.parse(tmp_path / "o" / "junit.xml").getroot()
    failures = {c.get("name"): c.find("failure") for c in junit.iter("testcase")}
    assert failures["impossible"] is not None and "vs > 0.9999" in failures["impossible"].get("message")
    assert failures["soft"] is None  # warn gates are visible but never fail the build
    assert junit.find("testsuite").get("failures") == "1"
    # audit gate on the saved report reaches the same verdict, with the stored gates or the recipe's
    for extra in ([], ["--recipe", str(recipe)]):
        g = run_cli("gate", tmp_path / "o" / "report.json", *extra, "--junit", tmp_path / "g.xml")
        assert g.exit_code == 1, g.stderr
        assert ET.parse(tmp_path / "g.xml").getroot().find("testsuite").get("failures") == "1"
    # and a recipe with only passing gates turns the same report green, without model or data
    g = run_cli("gate", tmp_path / "o" / "report.json", "--recipe", ROOT / "recipes" / "digits.toml")
    assert g.exit_code == 0, g.stderr


def test_min_n_makes_gate_inconclusive(digits_checkpoint, write_recipe, tmp_path):
    text = (ROOT / "recipes" / "digits.toml").read_text().split("[[gates]]")[0].replace(
        "../examples", f"{ROOT}/examples")
    base = text + '\n[[gates]]\nid = "class-3-recall"\nmetric = "recall"\nparams = { class = "3" }\nop = ">="\nthreshold = 0.5\nmin_n = 1000\n'
    res = run_cli("run", digits_checkpoint, "--recipe", write_recipe(base), "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 1
    g = json.loads((tmp_path / "o" / "report.json").read_text())["gates"][0]
    assert g["status"] == "inconclusive" and "min_n = 1000" in g["message"] and g["n"] < 1000
    res = run_cli("run", digits_checkpoint, "--recipe", write_recipe(base + 'inconclusive = "pass"\n'),
                  "--out", tmp_path / "o2", "--quiet")
    assert res.exit_code == 0


def _tiny_model(tmp_path, forward: str, name: str) -> None:
    (tmp_path / "net.py").write_text(
        "import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.lin = torch.nn.Linear(64, 10)\n    def forward(self, x):\n" + forward)
    import torch

    torch.manual_seed(0)
    torch.save({"lin.weight": torch.randn(10, 64) * 0.3, "lin.bias": torch.zeros(10)}, tmp_path / name)


TINY_RECIPE = ('[model]\nfactory = "net.py:Net"\nnum_classes = 10\n[data]\nsource = "sklearn"\nname = "digits"\n'
               "[performance]\nbootstrap = 0\nbootstrap_ranking = 0\n")


def test_softmax_outputs_are_flagged_and_not_squashed_twice(tmp_path):
    """A model ending in softmax: a warning for the performance suite (its numbers stay right: the
    probabilities are used as they are), while suites that attack need logits and fail the check."""
    _tiny_model(tmp_path, "        return torch.softmax(self.lin(x.flatten(1)) * 5, dim=1)\n", "soft.pt")
    (tmp_path / "r.toml").write_text(TINY_RECIPE)
    res = run_cli("run", tmp_path / "soft.pt", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o")
    assert res.exit_code == 0, res.stderr
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    check = next(c for c in r["checks"] if c["id"] == "logits_not_probabilities")
    assert check["status"] == "warn" and "softmax" in check["message"]
    import torch

    from audit.loading.data import sklearn_split

    x, y, _, _ = sklearn_split("digits", "test", 0.25, 0)
    lin = torch.nn.Linear(64, 10)
    sd = torch.load(tmp_path / "soft.pt")
    lin.load_state_dict({"weight": sd["lin.weight"], "bias": sd["lin.bias"]})
    probs = torch.softmax(lin(torch.from_numpy(x).flatten(1)) * 5, 1).detach().numpy()
    t = ExampleTable.load(tmp_path / "o" / "examples.npz")
    np.testing.assert_allclose(t.probs, probs, atol=1e-5)
    assert _metric(r, "auroc", average="macro")["value"] == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr"), abs=1e-6)


def test_random_inference_exits_4_and_downgrade(tmp_path):
    """Dropout applied even in eval mode: two passes differ, the evaluation is invalid (exit 4)."""
    _tiny_model(tmp_path, "        return self.lin(torch.nn.functional.dropout(x.flatten(1), 0.5, training=True))\n",
                "rand.pt")
    (tmp_path / "r.toml").write_text(TINY_RECIPE)
    res = run_cli("run", tmp_path / "rand.pt", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o")
    assert res.exit_code == 4, res.stderr
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    check = next(c for c in r["checks"] if c["id"] == "inference_deterministic")
    assert check["status"] == "fail" and "predictions flipped" in check["message"]
    assert r["verdict"] == "invalid" and "INVALID" in (tmp_path / "o" / "report.html").read_text()
    junit = ET.parse(tmp_path / "o" / "junit.xml").getroot()
    assert any(c.find("failure") is not None and c.get("name") == "inference_deterministic"
               for c in junit.iter("testcase"))
    assert run_cli("gate", tmp_path / "o" / "report.json").exit_code == 4
    (tmp_path / "r2.toml").write_text(TINY_RECIPE + '[validity]\ndowngrade = ["inference_deterministic"]\n')
    res = run_cli("run", tmp_path / "rand.pt", "--recipe", tmp_path / "r2.toml", "--out", tmp_path / "o2")
    assert res.exit_code == 0, res.stderr
    c2 = next(c for c in json.loads((tmp_path / "o2" / "report.json").read_text())["checks"]
              if c["id"] == "inference_deterministic")
    assert c2["status"] == "warn" and c2["downgraded"] is True


def test_gate_errors(tmp_path):
    res = run_cli("gate", tmp_path / "none.json")
    assert res.exit_code == 2 and "report file not found" in res.stderr
    (tmp_path / "bad.json").write_text("{not json")
    res = run_cli("gate", tmp_path / "bad.json")
    assert res.exit_code == 2 and "not a valid JSON report" in res.stderr
    (tmp_path / "other.json").write_text('{"schema": "someone.else/3"}')
    res = run_cli("gate", tmp_path / "other.json")
    assert res.exit_code == 2 and "not supported" in res.stderr


def test_help_is_fast_and_documents_exit_codes():
    t = time.perf_counter()
    res = run_subprocess("--help")
    elapsed = time.perf_counter() - t
    assert res.exit_code == 0 and "Exit codes" in res.stdout and "run" in res.stdout and "gate" in res.stdout
    assert elapsed < 1.0, f"audit --help took {elapsed:.2f}s"
    res = run_subprocess("run", "--help")
    for opt in ("--suite", "--out", "--seed", "--device", "--batch-size", "--quiet", "--debug", "--trust-checkpoint"):
        assert opt in res.stdout


def test_internal_error_is_exit_3_and_debug_shows_traceback(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\nclass Boom(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.lin = torch.nn.Linear(64, 10)\n        self.calls = 0\n    def forward(self, x):\n"
        "        self.calls += 1\n        if self.calls > 1:\n            raise ZeroDivisionError('boom')\n"
        "        return self.lin(x.flatten(1))\n")
    import torch

    torch.save(torch.nn.Linear(64, 10).state_dict(), tmp_path / "w.pt")
    sd = torch.load(tmp_path / "w.pt")
    torch.save({f"lin.{k}": v for k, v in sd.items()}, tmp_path / "w.pt")
    (tmp_path / "r.toml").write_text('[model]\nfactory = "net.py:Boom"\nnum_classes = 10\n'
                                     '[data]\nsource = "sklearn"\nname = "digits"\n')
    res = run_subprocess("run", tmp_path / "w.pt", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o",
                         cwd=tmp_path)
    assert res.exit_code == 3
    assert res.stderr.strip().count("\n") == 0 and "internal error: ZeroDivisionError: boom" in res.stderr
    res = run_subprocess("run", tmp_path / "w.pt", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o",
                         "--debug", cwd=tmp_path)
    assert res.exit_code == 3 and "Traceback" in res.stderr


def test_credit_example_end_to_end(tmp_path):
    """The tabular example: csv with one-hot features, sensitive attributes kept aside, a real MLP."""
    import torch
    from safetensors.torch import save_file

    from examples.credit import train as credit_train  # the credit example's own training script

    torch.set_num_threads(2)
    net = credit_train.train(epochs=30, seed=0)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "credit.safetensors"))
    res = run_cli("run", tmp_path / "credit.safetensors", "--recipe", ROOT / "recipes" / "credit.toml",
                  "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 0, res.stderr
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    assert r["data"]["n"] == 300 and r["data"]["split"] == "test"
    assert r["data"]["sensitive"] == {"sex": ["female", "male"], "age": ["<25", ">=25"]}
    t = ExampleTable.load(tmp_path / "o" / "examples.npz")
    train_rows = set(credit_train.train_split().index.tolist())
    assert not train_rows & set(t["index"].tolist()) and len(train_rows) == 700
    assert _metric(r, "auroc", **{"class": "good"})["value"] == pytest.approx(
        skm.roc_auc_score(t["label"], t.probs[:, 1]), abs=1e-12)


def test_record_marked_inconclusive_makes_its_gate_inconclusive():
    """A suite can mark a record as undecidable (e.g. it rests on a group below the minimum size):
    a gate on it is inconclusive, whatever its value, and blocks unless the gate tolerates it."""
    from audit.report.gates import evaluate_gate, gate_blocks

    metrics = [{"suite": "fairness", "name": "dp_difference", "params": {}, "value": 0.01, "ci_low": 0.0,
                "ci_high": 0.05, "n": 500, "inconclusive": "group 'x' has 12 < 30 examples"}]
    gate = {"id": "g", "suite": "fairness", "name": "dp_difference", "params": {}, "op": "<=", "threshold": 0.1,
            "use": "value", "severity": "error", "min_n": None, "inconclusive": "fail"}
    g = evaluate_gate(gate, metrics, ["fairness"])
    assert g["status"] == "inconclusive" and "12 < 30" in g["message"] and gate_blocks(g)
    assert not gate_blocks(evaluate_gate(dict(gate, inconclusive="pass"), metrics, ["fairness"]))
    del metrics[0]["inconclusive"]
    assert evaluate_gate(gate, metrics, ["fairness"])["status"] == "pass"


def test_unwritable_out_is_a_user_error(digits_checkpoint, digits_recipe, tmp_path):
    """--out on a file, and `audit gate --junit` into a missing folder: one line, exit 2, no traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", blocker, "--suite", "performance")
    assert res.exit_code == 2, res.stderr  # click's own usage error for an option value
    assert "--out" in res.stderr and "is a file" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", blocker / "sub", "--suite", "performance")
    assert res.exit_code == 2 and "cannot write there" in res.stderr
    ok = tmp_path / "ok"
    assert run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", ok, "--suite", "performance",
                   "--quiet").exit_code == 0
    res = run_cli("gate", ok / "report.json", "--junit", tmp_path / "missing" / "j.xml")
    assert res.exit_code == 2 and "j.xml: cannot write" in res.stderr
    # an output name taken by a folder fails before the audit runs, and nothing is left half-written
    taken = tmp_path / "taken"
    (taken / "report.html").mkdir(parents=True)
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", taken, "--suite", "performance")
    assert res.exit_code == 2 and "report.html there is not a file" in res.stderr
    assert sorted(p.name for p in taken.iterdir()) == ["report.html"]


def test_outputs_are_all_or_none(digits_checkpoint, digits_recipe, tmp_path, monkeypatch):
    """A failure while writing leaves no partial files and no report that reads as this run's result: a
    failure report (passed false, the error line) stands in --out, the earlier run's files are kept under
    previous-runs/<its run id>/, and `audit gate` on the folder's report fails."""
    from audit.report import outdir

    out = tmp_path / "o"
    assert run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", out, "--suite", "performance",
                   "--quiet").exit_code == 0
    first = json.loads((out / "report.json").read_text())
    assert first["passed"] is True and first["run_status"] == "finished"
    real = outdir.write_text
    failed = []

    def failing(path, text):
        finished = "RUN FAILED" not in text and "DID NOT FINISH" not in text
        if path.name.startswith(".summary.md.") and finished and not failed:  # the finished run's summary, once
            failed.append(path)
            raise outdir.AuditError(f"{path}: cannot write (disk full)")
        real(path, text)

    monkeypatch.setattr(outdir, "write_text", failing)
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", out, "--suite", "performance",
                  "--seed", "7", "--quiet")
    assert res.exit_code == 2 and "disk full" in res.stderr and failed
    names = sorted(p.name for p in out.iterdir())
    # the rows it computed stay in cache/ for `--resume`
    assert names == [".audit.lock", "cache", "junit.xml", "previous-runs", "report.html", "report.json", "summary.md"], names
    now = json.loads((out / "report.json").read_text())
    assert now["passed"] is False and now["run_status"] == "failed" and now["exit_code"] == 2
    assert "disk full" in now["error"] and now["run_id"] != first["run_id"]
    assert "RUN FAILED" in (out / "report.html").read_text()
    kept = out / "previous-runs" / first["run_id"]
    assert json.loads((kept / "report.json").read_text()) == first and (kept / "examples.npz").is_file()
    res = run_cli("gate", out / "report.json")
    assert res.exit_code == 2 and "failed (exit 2)" in res.stderr and "disk full" in res.stderr
