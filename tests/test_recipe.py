"""Strict recipe validation: one line naming the file, the key and what was expected; exit 2."""

from __future__ import annotations

import pytest

from audit.errors import RecipeError
from audit.recipe import load_recipe
from conftest import DIGITS_DATA, DIGITS_MODEL, ROOT, assert_failed_run, run_cli

BASE = DIGITS_MODEL + DIGITS_DATA


def _load_error(write_recipe, text: str) -> str:
    path = write_recipe(text)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("text, fragments", [
    (BASE.replace("num_classes", "num_clases"), ["[model]", "unknown key 'num_clases'", "did you mean 'num_classes'"]),
    (BASE.replace("num_classes = 10", 'num_classes = "ten"'), ["[model]", "num_classes", "expected an integer >= 2"]),
    (BASE.replace("num_classes = 10", "num_classes = 1"), ["num_classes", "expected an integer >= 2"]),
    (BASE.replace("num_classes = 10\n", ""), ["[model]", "missing required key 'num_classes'"]),
    (BASE.replace("[0.0, 1.0]", "[1.0, 0.0]"), ["input_bounds", "low < high"]),
    (BASE.replace("std = [0.5]", "std = [0.0]"), ["std", "> 0"]),
    (BASE.replace("std = [0.5]\n", ""), ["mean and std go together"]),
    (BASE + '\n[data2]\nx = 1\n', ["unknown section [data2]", "did you mean 'data'"]),
    (BASE.replace('name = "digits"', 'name = "mnist"'), ["[data]", "name", "'digits'"]),
    (BASE.replace('name = "digits"', 'name = "digits"\npath = "x.npz"'), ["'path' is not used by source = 'sklearn'"]),
    (BASE.replace('source = "sklearn"\nname = "digits"', 'source = "npz"'), ["source = 'npz' needs key 'path'"]),
    (BASE + '\n[run]\ndevice = "gpu"\n', ["[run]", "device", "'auto', 'cpu', 'cuda' or 'cuda:N'"]),
    (BASE + '\n[run]\nsuites = ["performanse"]\n', ["unknown suite 'performanse'", "did you mean 'performance'"]),
    (BASE + '\n[performance]\nbootstrap = -1\n', ["[performance]", "bootstrap", ">= 0"]),
    (BASE + '\n[[gates]]\nmetric = "acuracy"\nop = ">="\nthreshold = 0.9\n',
     ["[[gates]] #1", "unknown metric 'acuracy'", "did you mean 'accuracy'"]),
    (BASE + '\n[[gates]]\nmetric = "accuracy"\nop = "=>"\nthreshold = 0.9\n', ["[[gates]] #1", "op", "'>='"]),
    (BASE + '\n[[gates]]\nmetric = "accuracy"\nop = ">="\n', ["missing required key 'threshold'"]),
    (BASE + '\n[[gates]]\nmetric = "f1"\nparams = { avg = "macro" }\nop = ">="\nthreshold = 0.9\n',
     ["params", "no parameter 'avg'", "average"]),
    (BASE + '\n[[gates]]\nmetric = "accuracy"\nop = ">="\nthreshold = 0.9\nuse = "low"\n', ["use", "'ci_low'"]),
    (BASE + '\n[gates]\nmetric = "accuracy"\n', ["must be an array of tables", "[[gates]]"]),
    (BASE.replace("factory = ", "factory = 3 #"), ["factory", "module:callable"]),
    (BASE + '\n[robustness]\nnorm = "linf"\neps = { linf = ["8/255"], l2 = [0.5] }\n',
     ["[robustness]", "eps has a list for norm 'l2', which is not run"]),
    (BASE.replace('name = "digits"', 'name = "digits"\nsplit = "all"\ntest_size = 0.25'),
     ["[data] test_size has no effect with split = 'all';", "set split = 'test'"]),
    (BASE.replace('source = "sklearn"\nname = "digits"', 'source = "npz"\npath = "d.npz"\nsplit_seed = 0'),
     ["[data] split_seed has no effect with split = 'all' (the default for source = 'npz')"]),
    (BASE.replace('source = "sklearn"\nname = "digits"', 'source = "csv"\npath = "d.csv"\nfeatures = ["a"]\n'
                  'label = "y"\ncategorical = { a = ["x"], b = [0, 1] }'),
     ["[data]", "categorical", "column 'b': item 0: expected a string", "write \"0\", not 0"]),
    (BASE + '\n[robustness]\nnorm = "linf"\nlarge_eps = { l2 = 4.0 }\n',
     ["[robustness]", "large_eps has a value for norm 'l2', which is not run"]),
])
def test_recipe_errors_name_file_key_and_expectation(write_recipe, text, fragments):
    msg = _load_error(write_recipe, text)
    for f in fragments:
        assert f in msg, (f, msg)


def test_toml_syntax_error_and_missing_file(write_recipe, tmp_path):
    msg = _load_error(write_recipe, "[model\nnum_classes = 3")
    assert "not valid TOML" in msg and "line 1" in msg
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_recipe_error_through_cli_is_one_line_exit_2(write_recipe, digits_checkpoint, tmp_path):
    path = write_recipe(BASE.replace("num_classes", "num_clases"))
    res = run_cli("run", digits_checkpoint, "--recipe", path, "--out", tmp_path / "o")
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "unknown key 'num_clases'" in res.stderr
    assert_failed_run(tmp_path / "o", 2)


def test_cli_usage_errors(digits_checkpoint, digits_recipe, tmp_path):
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--suite", "robustnes", "--out", tmp_path)
    assert res.exit_code == 2 and "--suite robustnes: unknown suite" in res.stderr
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--device", "tpu", "--out", tmp_path)
    assert res.exit_code == 2 and "--device tpu" in res.stderr
    # click's own usage errors follow the same contract: one line, exit 2
    for args, fragment in [((digits_checkpoint,), "Missing option '--recipe' / '-r'. (see `audit run --help`)"),
                           ((digits_checkpoint, "-r", digits_recipe, "--seed", "-1"), "Invalid value for '--seed'"),
                           ((digits_checkpoint, "-r", digits_recipe, "--frob"), "No such option '--frob'"),
                           ((digits_checkpoint, "-r", digits_recipe, "--out", digits_recipe), "is a file")]:
        res = run_cli("run", *args)
        assert res.exit_code == 2 and res.stderr.startswith("audit: error: ") and fragment in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Usage:" not in res.stderr
    res = run_cli("frob")
    assert res.exit_code == 2 and res.stderr.strip() == "audit: error: No such command 'frob'. (see `audit --help`)"
    res = run_cli("--version")
    assert res.exit_code == 0 and "audit, version" in res.stdout
    res = run_cli("run", "--help")
    assert res.exit_code == 0 and "Usage: audit run" in res.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_requested_without_gpu(digits_checkpoint, digits_recipe, tmp_path):
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--device", "cuda", "--out", tmp_path)
    assert res.exit_code == 2 and "--device cuda: CUDA is not available" in res.stderr
    recipe = tmp_path / "cuda.toml"  # the same from the recipe names the recipe's key, not an option
    recipe.write_text(digits_recipe.read_text().replace("[run]\n", '[run]\ndevice = "cuda"\n')
                      .replace("../examples", f"{ROOT}/examples"))
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--out", tmp_path / "o")
    assert res.exit_code == 2 and f"{recipe}: [run] device = 'cuda': CUDA is not available" in res.stderr, res.stderr


def test_shipped_recipes_are_valid():
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        load_recipe(path)


def test_recipe_reference_is_up_to_date():
    """docs/recipe.md is generated from the same declarations that validate recipes."""
    from audit.recipe.docs import render

    assert (ROOT / "docs" / "recipe.md").read_text() == render(), "run `make docs` to regenerate docs/recipe.md"


def test_downgrade_of_an_unknown_check_is_an_error(write_recipe):
    msg = _load_error(write_recipe, BASE + '\n[validity]\ndowngrade = ["inference_determinstic"]\n')
    assert "[validity] downgrade: unknown check 'inference_determinstic'" in msg
    assert "did you mean 'inference_deterministic'" in msg


@pytest.mark.parametrize("params, fragment", [
    ('{ average = "macr" }', "average = 'macr' is not one of 'macro', 'weighted', 'micro'"),
    ("{ average = 5 }", "average = 5 is not one of"),
    ('{ average = ["macro"] }', "expected a string or a number"),
    ('{ class = "eleven" }', "class = 'eleven' is not one of '0', '1'"),
])
def test_gate_param_values_are_checked_before_the_run(write_recipe, params, fragment):
    msg = _load_error(write_recipe, BASE + f'\n[[gates]]\nmetric = "f1"\nparams = {params}\nop = ">="\nthreshold = 0.9\n')
    assert "[[gates]] #1 params" in msg and fragment in msg, msg


def test_gate_param_values_of_other_suites(write_recipe):
    msg = _load_error(write_recipe, BASE + '\n[[gates]]\nmetric = "ece"\nparams = { binning = "equal_widht", kind = '
                      '"top_label" }\nop = "<="\nthreshold = 0.1\n')
    assert "binning = 'equal_widht' is not one of 'equal_width', 'equal_mass'" in msg
    msg = _load_error(write_recipe, BASE + '\n[[gates]]\nmetric = "robust_accuracy"\nparams = { norm = "Linf", eps = '
                      '"8/255" }\nop = ">="\nthreshold = 0.5\n')
    # no [robustness] table: checked against what the defaults run (L-inf only)
    assert "norm = 'Linf' is not one of 'linf' (what [robustness] runs); did you mean 'linf'?" in msg


ROB = '\n[robustness]\nnorm = "linf"\neps = ["4/255", "8/255"]\nnoise = { gaussian = [0.1] }\n'


@pytest.mark.parametrize("gate, fragment", [
    ('metric = "robust_accuracy"\nparams = { norm = "linf", eps = "16/255" }',
     "eps = '16/255' is not one of '4/255', '8/255'"),
    ('metric = "noise_accuracy"\nparams = { noise = "gaussian", level = 0.2 }', "level = 0.2 is not one of '0.1'"),
    ('metric = "repro.seed_std"\nparams = { metric = "accuracy" }',
     "metric = 'accuracy': name the suite too, metric = \"performance.accuracy\""),
    ('metric = "repro.seed_std"\nparams = { metric = "performance.acc" }', "suite 'performance' has no metric 'acc'"),
    ('metric = "robust_accuracy"\nparams = { norm = "l2", eps = "8/255" }', "norm = 'l2' is not one of 'linf' (what"),
    ('metric = "robust_accuracy"\nparams = { norm = "linf", eps = "8/255", attack = "autoattack" }',
     "attack = 'autoattack' is not one of 'fgsm', 'pgd' (what [robustness] runs)"),
    ('metric = "noise_accuracy"\nparams = { noise = "uniform", level = 0.1 }', "noise = 'uniform' is not one of 'gaussian'"),
    ('metric = "repro.seed_std"\nparams = { metric = "seed_mean" }', "the spread of a repro metric is not summarised"),
    ('metric = "repro.nondeterministic_ops"\nparams = { phase = "bogus" }',
     "phase = 'bogus' is not one of 'inference', 'attack_gradient', 'training'"),
])
def test_gates_on_values_the_recipe_does_not_produce_fail_at_load(write_recipe, gate, fragment):
    msg = _load_error(write_recipe, BASE + ROB + f'\n[[gates]]\n{gate}\nop = "<="\nthreshold = 0.1\n')
    assert "[[gates]] #1 params" in msg and fragment in msg, msg


def test_gates_on_swept_values_load(write_recipe):
    path = write_recipe(BASE + ROB.replace('"8/255"]', '"8/255", "1/4"]') + '\n[[gates]]\nmetric = "robust_accuracy"\nparams = { norm = "linf", eps = 0.25 '
                        '}\nop = ">="\nthreshold = 0.1\n[[gates]]\nmetric = "repro.seed_std"\nparams = { metric = '
                        '"robustness.robust_accuracy", norm = "linf", eps = "8/255" }\nop = "<="\nthreshold = 0.1\n')
    assert len(load_recipe(path).gates) == 2
    # a gates-only file for `audit gate` has no [robustness] to check against: the report decides
    gates_only = write_recipe('[[gates]]\nmetric = "robust_accuracy"\nparams = { norm = "linf", eps = "1/3" }\n'
                              'op = ">="\nthreshold = 0.1\n', "g.toml")
    assert len(load_recipe(gates_only, gates_only=True).gates) == 1


def test_gate_on_a_capture_metric_without_the_capture_run_is_an_error(write_recipe):
    msg = _load_error(write_recipe, BASE + '\n[repro]\ncapture = false\n[[gates]]\nmetric = "repro.nondeterministic_ops"\n'
                                           'op = "<="\nthreshold = 0\n')
    assert "repro.nondeterministic_ops comes from the capture run, which [repro] capture = false turns off" in msg
    msg = _load_error(write_recipe, BASE + '\n[repro]\nbatch_invariance = false\n[[gates]]\n'
                                           'metric = "repro.batch_invariance_flips"\nop = "<="\nthreshold = 0\n')
    assert "[repro] batch_invariance = false turns off" in msg
