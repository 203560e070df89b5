"""`audit init`: a commented recipe from the model and the data, that runs as written on both bundled examples."""

from __future__ import annotations

import json
import os
import tomllib

import pytest

from conftest import ROOT, run_cli

DIGITS_FACTORY = f"{ROOT / 'examples' / 'digits' / 'model.py'}:DigitsCNN"
CREDIT_FACTORY = f"{ROOT / 'examples' / 'credit' / 'model.py'}:CreditMLP"
CREDIT_CSV = ROOT / "examples" / "credit" / "data" / "german_credit.csv"
CREDIT_FEATURES = "age,job,credit_amount,duration,housing,saving_accounts,checking_account,purpose"  # training order


def _init(*args, cwd=None):
    res = run_cli("init", *args, cwd=cwd)
    assert res.exit_code == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def digits_init(digits_checkpoint, tmp_path_factory):
    d = tmp_path_factory.mktemp("init-digits")
    out = d / "sub" / "digits.toml"
    out.parent.mkdir()
    res = _init(digits_checkpoint, "--factory", DIGITS_FACTORY, "--data", "sklearn:digits", "--limit", "40",
                "--out", out)
    return out, res


@pytest.fixture(scope="module")
def credit_init(credit_checkpoint, tmp_path_factory):
    d = tmp_path_factory.mktemp("init-credit")
    out = d / "credit.toml"
    res = _init(credit_checkpoint, "--factory", CREDIT_FACTORY, "--data", CREDIT_CSV, "--label", "risk",
                "--sensitive", "sex", "--sensitive", "age", "--features", CREDIT_FEATURES, "--limit", "300",
                "--out", out)
    return out, res


def test_digits_recipe_reads_what_it_can_and_marks_what_it_guessed(digits_init):
    out, res = digits_init
    text = out.read_text()
    r = tomllib.loads(text)
    m = r["model"]
    assert m["num_classes"] == 10 and m["input_shape"] == [1, 8, 8] and m["input_bounds"] == [0.0, 1.0]
    # the model was trained on (x - 0.5) / 0.5: init finds it by trying, and says so
    assert m["mean"] == [0.5] and m["std"] == [0.5]
    assert "guessed: accuracy" in [ln for ln in text.splitlines() if ln.startswith("mean =")][0]
    assert "# guessed: the data lie in [0, 1]" in text
    # the factory path is relative to the recipe's folder
    assert (out.parent / m["factory"].rpartition(":")[0]).resolve() == ROOT / "examples" / "digits" / "model.py"
    assert r["data"] == {"source": "sklearn", "name": "digits", "split": "test", "limit": 40}
    assert {"performance", "robustness", "calibration"} <= set(r) and len(r["gates"]) == 4
    assert "# [fairness]" in text  # shown, commented: no sensitive attribute was named
    assert "guessed:" in res.stderr and "wrote" in res.stderr


def test_credit_recipe_reads_the_csv(credit_init):
    out, _ = credit_init
    r = tomllib.loads(out.read_text())
    assert r["model"]["num_classes"] == 2 and r["model"]["input_shape"] == [24]
    assert "input_bounds" not in r["model"] and "mean" not in r["model"]  # tabular; the model has its own scaler
    d = r["data"]
    assert d["source"] == "csv" and d["label"] == "risk" and d["features"] == CREDIT_FEATURES.split(",")
    assert d["sensitive"] == ["sex", "age"] and d["sensitive_bins"] == {"age": [33.0]}
    assert d["categorical"]["housing"] == ["free", "own", "rent"]
    assert r["fairness"]["attributes"] == ["sex", "age"] and r["performance"]["positive_class"] == 1
    assert "salt_pepper" not in r["robustness"]["noise"]  # needs bounds
    assert sum(g["metric"] == "disparate_impact_ratio" for g in r["gates"]) == 2


def test_csv_features_guessed_to_fit_the_models_first_layer(credit_checkpoint, tmp_path):
    """Without --features: the columns other than the label and the sensitive ones encode to 23 inputs; the
    model takes 24, and adding the sensitive 'age' (numeric) makes it fit."""
    out = tmp_path / "c.toml"
    res = _init(credit_checkpoint, "--factory", CREDIT_FACTORY, "--data", CREDIT_CSV, "--label", "risk",
                "--sensitive", "sex", "--sensitive", "age", "--out", out)
    d = tomllib.loads(out.read_text())["data"]
    assert "age" in d["features"] and "sex" not in d["features"] and len(d["features"]) == 8
    assert "sensitive column(s) age are also model inputs" in res.stderr and "(--features)" in res.stderr


@pytest.mark.parametrize("which", ["digits", "credit"])
def test_the_recipe_runs_as_written_fast_suites(which, digits_init, credit_init, digits_checkpoint,
                                                credit_checkpoint, tmp_path):
    """Every suite's section is validated when the recipe loads (`audit run` does that first); the cheap
    suites run here, the whole recipe in the slow test below."""
    out, _ = digits_init if which == "digits" else credit_init
    model = digits_checkpoint if which == "digits" else credit_checkpoint
    suites = ["--suite", "performance", "--suite", "calibration"] + (["--suite", "fairness"] if which == "credit" else [])
    res = run_cli("run", model, "--recipe", out, *suites, "--out", tmp_path / "o", "--quiet")
    assert res.exit_code in (0, 1), res.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["run_status"] == "finished" and report["metrics"]
    acc = next(m["value"] for m in report["metrics"] if m["name"] == "accuracy")
    assert acc > (0.9 if which == "digits" else 0.6)  # the guessed normalisation / encoding is the right one


# The digits recipe as written runs the default attacks and every validity check of them (the reference
# APGD-CE + APGD-T included): 30 s to 2 min on the 2-core CI machine even on 40 examples, so it runs when
# AUDIT_SLOW=1 is set (e.g. before a release); the credit recipe (an MLP) runs every suite in the default run.
_DIGITS_FULL = pytest.param("digits", marks=pytest.mark.skipif(
    not os.environ.get("AUDIT_SLOW"), reason="every suite of the digits recipe: set AUDIT_SLOW=1"))


@pytest.mark.slow
@pytest.mark.parametrize("which", [_DIGITS_FULL, "credit"])
def test_the_recipe_runs_as_written_every_suite(which, digits_init, credit_init, digits_checkpoint,
                                                credit_checkpoint, tmp_path):
    out, _ = digits_init if which == "digits" else credit_init
    model = digits_checkpoint if which == "digits" else credit_checkpoint
    res = run_cli("run", model, "--recipe", out, "--out", tmp_path / "o", "--quiet")
    assert res.exit_code in (0, 1), res.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    expected = {"performance", "robustness", "calibration"} | ({"fairness"} if which == "credit" else set())
    assert set(report["suites"]) == expected and all(g["status"] != "error" for g in report["gates"])


def test_mistakes_are_one_line_and_exit_2(digits_checkpoint, credit_checkpoint, tmp_path):
    out = tmp_path / "r.toml"
    out.write_text("# mine\n")
    res = run_cli("init", digits_checkpoint, "--factory", DIGITS_FACTORY, "--data", "sklearn:digits", "--out", out)
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"audit: error: --out {out}: exists; pass --force to overwrite it, or choose another file")
    assert out.read_text() == "# mine\n"
    res = run_cli("init", digits_checkpoint, "--out", tmp_path / "a.toml")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "holds weights only (safetensors): name the architecture they load into with --factory" in res.stderr
    res = run_cli("init", credit_checkpoint, "--factory", CREDIT_FACTORY, "--data", CREDIT_CSV, "--out", tmp_path / "b.toml")
    assert res.exit_code == 2 and "name the label column with --label COLUMN (columns: risk, sex," in res.stderr
    res = run_cli("init", credit_checkpoint, "--factory", CREDIT_FACTORY, "--data", CREDIT_CSV, "--label", "risk",
                  "--sensitive", "gender", "--out", tmp_path / "b.toml")
    assert res.exit_code == 2 and "--sensitive gender:" in res.stderr and "no column 'gender'" in res.stderr
    res = run_cli("init", digits_checkpoint, "--factory", DIGITS_FACTORY, "--data", "sklearn:digitz", "--out",
                  tmp_path / "c.toml")
    assert res.exit_code == 2 and "did you mean 'digits'?" in res.stderr
    res = run_cli("init", digits_checkpoint, "--factory", DIGITS_FACTORY, "--kwarg", "width=32", "--out",
                  tmp_path / "d.toml")
    assert res.exit_code == 2 and "shape mismatch" in res.stderr
    for name in "abcd":
        assert not (tmp_path / f"{name}.toml").exists()  # nothing written on an error
    res = run_cli("init", digits_checkpoint, "--factory", DIGITS_FACTORY, "--mean", "0.5", "--out", tmp_path / "e.toml")
    assert res.exit_code == 2 and "--mean and --std go together" in res.stderr


def test_without_data_the_classes_come_from_the_last_layer(digits_checkpoint, tmp_path):
    out = tmp_path / "r.toml"
    _init(digits_checkpoint, "--factory", DIGITS_FACTORY, "--kwarg", "width=16", "--out", out)
    text = out.read_text()
    r = tomllib.loads(text)
    assert r["model"]["num_classes"] == 10 and r["model"]["kwargs"] == {"width": 16}
    assert "rows of the last layer's weight (10)" in text and "data" not in r  # [data] left to fill in, commented
    # --force overwrites
    _init(digits_checkpoint, "--factory", DIGITS_FACTORY, "--num-classes", "10", "--out", out, "--force")
    assert "given with --num-classes" in out.read_text()


def test_help_names_init():
    res = run_cli("--help")
    assert "audit init" in res.stdout and "audit.run(" in res.stdout
    res = run_cli("init", "--help")
    assert res.exit_code == 0 and "--factory" in res.stdout and "# guessed:" in res.stdout
