"""Robustness suite: a closed-form oracle for FGSM/PGD, nested sweeps, batch-size independence, measured
perturbation bounds, every validity check on a bad and a good model, and `audit run --suite robustness`
end to end on the digits example. Real torchattacks, no mocks; small subsets so the file runs in ~1-2 min."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from audit.attacks import sweep as S
from audit.attacks.adapters import PGDAttack
from audit.attacks.config import AttackConfig, Eps, parse_eps_list, to_eps
from audit.attacks.noise import noise_correct
from audit.engine.wrapper import WrappedModel
from audit.metrics import robustness as R
from audit.suites import robustness_checks as K
from tests.conftest import DIGITS_DATA, DIGITS_MODEL, ROOT, assert_failed_run, run_cli

# ------------------------------------------------------------------------------------- closed-form oracle


def _linear_problem(seed: int = 0, n: int = 400, d: int = 12):
    """A binary linear classifier: logit difference z1 - z0 = w.x + b, inputs in [0, 1]."""
    g = np.random.default_rng(seed)
    w = g.normal(0, 1.0, d)
    x = g.uniform(0, 1, (n, d)).astype(np.float32)
    b = -float(w @ np.full(d, 0.5))
    y = ((x @ w + b) > 0).astype(np.int64)
    flip = g.random(n) < 0.1  # some clean-wrong examples
    y[flip] = 1 - y[flip]
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(np.stack([-w / 2, w / 2]), dtype=torch.float32))
        lin.bias.copy_(torch.tensor([-b / 2, b / 2], dtype=torch.float32))
    model = WrappedModel(lin, bounds=(0.0, 1.0), num_classes=2)
    return model, x, y, w, b


def _oracle_margin(x, y, w, b, eps):
    """The exact worst-case signed margin over {x': ||x' - x||_inf <= eps, 0 <= x' <= 1}: the objective
    s*(w.x' + b) (s = +1 for class 1, -1 for class 0) is separable and linear, so each coordinate moves to
    the end of its interval that lowers it: x'_j = clip(x_j - eps * sign(s w_j), 0, 1). This is exactly what
    FGSM computes for a linear model (Goodfellow et al., 2015), bounds included."""
    s = np.where(y == 1, 1.0, -1.0)[:, None]
    xp = np.clip(x.astype(np.float64) - eps * np.sign(s * w[None, :]), 0.0, 1.0)
    return (s[:, 0]) * (xp @ w + b)


def test_oracle_fgsm_and_pgd_match_the_closed_form_exactly():
    model, x, y, w, b = _linear_problem()
    index = np.arange(len(x), dtype=np.int64)
    clean_margin = np.where(y == 1, 1, -1) * (x.astype(np.float64) @ w + b)
    cc = clean_margin > 0
    eps_list = [0.02, 0.05, 0.1, 0.2, 0.3]
    # the premise: no worst-case margin within float rounding of 0 (so the oracle's answer is unambiguous)
    for e in eps_list:
        assert np.min(np.abs(_oracle_margin(x, y, w, b, e))) > 1e-4
    oracle = np.stack([cc & (_oracle_margin(x, y, w, b, e) > 0) for e in eps_list], axis=1)
    assert 0 < oracle[:, -1].sum() < oracle[:, 0].sum() < cc.sum()  # the sweep is non-trivial
    eps = [Eps(e, str(e)) for e in eps_list]
    torch_cc = model(torch.from_numpy(x)).argmax(1).numpy() == y
    assert np.array_equal(torch_cc, cc)
    dev = torch.device("cpu")
    f = S.fgsm_sweep(model, AttackConfig("fgsm", "linf", eps), x, y, index, cc, 64, dev, (0.0, 1.0))
    p = S.pgd_sweep(model, AttackConfig("pgd", "linf", eps, steps=10, random_start=True), x, y, index, cc, 64, dev,
                    (0.0, 1.0), seed=3)
    for res in (f, p):
        got = R.robust_correct(res.eps_broken, eps_list)
        assert np.array_equal(got, oracle), res.attack
        np.testing.assert_array_equal(R.robust_accuracy(res.eps_broken, eps_list), oracle.mean(axis=0))
    assert f.max_norm_excess <= 1e-6 and p.max_norm_excess <= 1e-6 and p.max_bound_excess == 0.0


# ---------------------------------------------------------------------------------------- pure metrics


def test_metrics_against_brute_force():
    g = np.random.default_rng(1)
    eps = [0.1, 0.2, 0.3]
    a = g.choice([0.0, 0.1, 0.2, 0.3, np.inf], size=200)
    bb = g.choice([0.0, 0.1, 0.2, 0.3, np.inf], size=200)
    bb[a == 0] = 0.0  # clean-wrong in both
    wc = R.worst_case(a, bb)
    for k, e in enumerate(eps):
        brute = np.mean([min(u, v) > e for u, v in zip(a, bb)])
        assert R.robust_accuracy(wc, eps)[k] == brute
    cc = a > 0
    asr = R.attack_success_rate(a, cc, eps)
    np.testing.assert_allclose(asr, 1 - R.robust_accuracy(a, eps) / cc.mean())
    v = np.sort(a[cc])
    assert R.median_breaking_eps(a, cc) == v[(len(v) - 1) // 2]
    assert R.median_breaking_eps(np.array([0.1, np.inf, np.inf]), np.ones(3, bool)) == np.inf
    assert R.non_increasing_violation([0.9, 0.8, 0.85, 0.5]) == pytest.approx(0.05)
    assert R.non_increasing_violation([0.9, 0.9, 0.1]) == 0.0
    # the multinomial bootstrap of a mean of counts equals the row bootstrap in distribution
    c = g.integers(0, 6, size=300)
    r = np.random.default_rng(0)
    lo, hi = R.count_mean_interval(c, 5, 4000, r)
    rows = np.array([c[r.integers(0, 300, 300)].mean() / 5 for _ in range(4000)])
    assert lo == pytest.approx(np.quantile(rows, 0.025), abs=0.006)
    assert hi == pytest.approx(np.quantile(rows, 0.975), abs=0.006)


def test_eps_labels_sorting_and_fractions():
    raw = parse_eps_list(["8/255", 0.01, " 2 / 255 "])
    assert raw == ["2/255", 0.01, "8/255"]  # 2/255 = 0.0078
    eps = to_eps(raw)
    assert [e.label for e in eps] == ["2/255", "0.01", "8/255"]
    assert eps[2].value == 8 / 255
    from audit.recipe.fields import FieldError

    with pytest.raises(FieldError):
        parse_eps_list(["1/2", 0.5])


# ------------------------------------------------------------------------ digits: batch size, bounds


@pytest.fixture(scope="module")
def digits(digits_checkpoint):
    import sys

    from safetensors.torch import load_file

    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    from model import DigitsCNN

    from audit.loading.data import sklearn_split

    net = DigitsCNN()
    net.load_state_dict(load_file(str(digits_checkpoint)))
    model = WrappedModel(net, [0.5], [0.5], (0.0, 1.0), 10)
    x, y, _, _ = sklearn_split("digits", "test", 0.25, 0)
    x, y = x[:96], y[:96]
    with torch.no_grad():
        cc = model(torch.from_numpy(x)).argmax(1).numpy() == y
    return model, x, y, np.arange(len(y), dtype=np.int64) * 7 + 3, cc


def test_results_identical_for_two_batch_sizes(digits):
    model, x, y, index, cc = digits
    eps = to_eps(["8/255", "24/255", "0.2"])
    cfg = AttackConfig("pgd", "linf", eps, steps=5, restarts=2, random_start=True)
    dev = torch.device("cpu")
    a = S.pgd_sweep(model, cfg, x, y, index, cc, 7, dev, (0.0, 1.0), seed=11)
    b = S.pgd_sweep(model, cfg, x, y, index, cc, 64, dev, (0.0, 1.0), seed=11)
    assert np.array_equal(a.eps_broken, b.eps_broken)
    assert 0 < np.isinf(a.eps_broken).sum() < cc.sum()
    lv = to_eps([0.1, 0.3])
    n1 = noise_correct(model, x, y, index, "gaussian", lv, 3, 5, (0.0, 1.0), dev, 10)
    n2 = noise_correct(model, x, y, index, "gaussian", lv, 3, 5, (0.0, 1.0), dev, 96)
    assert np.array_equal(n1, n2)
    # nested sweep is never weaker than independent runs at the same eps (same seeds)
    for e in eps:
        one = S.pgd_sweep(model, AttackConfig("pgd", "linf", [e], steps=5, restarts=2, random_start=True),
                          x, y, index, cc, 64, dev, (0.0, 1.0), seed=11)
        assert R.robust_accuracy(a.eps_broken, [e.value])[0] <= R.robust_accuracy(one.eps_broken, [e.value])[0]


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
@pytest.mark.parametrize("bounds", [(0.0, 1.0), None])
def test_perturbation_within_eps_and_bounds_measured(digits, norm, eps, bounds):
    model, x, y, index, cc = digits
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    start = torch.from_numpy(S.unit_start(np.arange(len(x)), x.shape[1:], norm))
    atk = PGDAttack(model, eps=eps, alpha=2.5 * eps / 5, steps=5, norm=norm, bounds=bounds, early_stop=False)
    adv, found = atk(xt, yt, start)
    dist, out = S.measure(adv, xt, norm, (0.0, 1.0))
    assert dist.max() <= eps + 1e-6
    assert dist.max() > 0.5 * eps  # it moved
    if bounds is not None:
        assert out == 0.0
    with torch.no_grad():
        assert torch.equal(model(adv).argmax(1) != yt, found)


def test_perturbation_checks_fire_on_an_attack_that_oversteps(digits):
    model, x, y, index, cc = digits
    eps = to_eps([0.05])
    res = S.SweepResult("bad", "linf", eps, np.empty(0))

    def bad_attack(xb, yb, rows, e):  # steps 2 eps out, and outside [0, 1]
        return xb + 2 * e.value + 0.0 * xb

    S.nested_sweep(bad_attack, model, x, y, index, eps, cc, 32, torch.device("cpu"), "linf", (0.0, 1.0), res)
    assert res.max_norm_excess == pytest.approx(0.05, abs=1e-6)
    assert K.perturbation_within_eps(res.max_norm_excess, 1e-6)[0] == "fail"
    assert K.within_bounds(res.max_bound_excess, 1e-6, (0.0, 1.0))[0] == "fail"
    assert K.perturbation_within_eps(1e-9, 1e-6)[0] == "pass"
    assert K.within_bounds(0.0, 1e-6, (0.0, 1.0))[0] == "pass"


def test_check_decisions_on_synthetic_numbers():
    assert K.accuracy_non_increasing({"linf": (["a", "b"], [0.5, 0.6])}, 0.1, 0.02, 100)[0] == "fail"
    assert K.accuracy_non_increasing({"linf": (["a", "b"], [0.6, 0.5])}, 0.0, 0.02, 100)[0] == "pass"
    pgd = {"pgd": ["ce", "margin"]}
    assert K.gradients_not_masked(100, {"pgd": 0}, {"pgd": 3}, pgd, 0)[0] == "fail"
    assert K.gradients_not_masked(100, {"pgd": 2}, {"pgd": 0}, pgd, 0)[0] == "warn"
    st, msg, _ = K.gradients_not_masked(100, {"pgd": 60}, {"pgd": 0}, pgd, 0)
    assert st == "fail" and "non-differentiable layer" in msg and "BPDA" in msg
    st, msg, _ = K.gradients_not_masked(100, {"pgd": 0}, {"pgd": 0}, pgd, 80)
    assert st == "pass" and "80 of them (a softmax saturated to 1)" in msg and "ce, margin" in msg
    assert K.pgd_converged(0.05, "linf eps 0.1", 0.5, 0.45, 10, 1, ["ce", "targeted"], 3, 0.03, 100)[0] == "fail"
    assert K.pgd_converged(0.01, "linf eps 0.1", 0.5, 0.49, 10, 1, ["ce", "targeted"], 3, 0.03, 100)[0] == "pass"
    assert K.reference_attack_agrees(0.05, "linf eps 0.1", 0.5, 0.45, "APGD", 0.02, 100)[0] == "fail"
    assert K.eps_within_input_range(["linf eps 1.5"], (0.0, 1.0))[0] == "warn"
    assert K.eps_within_input_range([], (0.0, 1.0))[0] == "pass"
    assert K.large_eps_reaches_chance([("linf", "0.5", 0.5, 0.12, 100)], 0.1, 20, 100)[0] == "fail"
    assert K.large_eps_reaches_chance([("linf", "0.5", 0.15, 0.12, 30)], 0.1, 20, 100)[0] == "pass"


# ------------------------------------------------------------------------------------- end to end (CLI)

ROBUST = '''
[data]
source = "sklearn"
name = "digits"
limit = {limit}

[robustness]
attacks = {attacks}
eps = ["4/255", "16/255", "0.25"]
steps = {steps}
{extra}
noise = {{ gaussian = [0.1, 0.3], salt_pepper = [0.05] }}
noise_draws = 2
bootstrap = 100
check_examples = 40
'''

BAD_MODELS = '''
import torch
import torch.nn.functional as F
from model import DigitsCNN


class Quantised(DigitsCNN):
    def forward(self, x):
        return super().forward(torch.round(x * 4) / 4)  # zero gradient almost everywhere


class Softmaxed(DigitsCNN):
    def forward(self, x):
        return F.softmax(super().forward(x), dim=1)


class RandomAtInference(DigitsCNN):
    def forward(self, x):
        return super().forward(F.dropout(x, p=0.3, training=True))


class Overflowing(DigitsCNN):
    def forward(self, x):
        return super().forward(x) * 1e39  # float32 overflow: +-inf logits


class NaNOnSome(DigitsCNN):
    def forward(self, x):
        z = super().forward(x)
        return torch.where(x.flatten(1)[:, 20:21] > 0.9, torch.full_like(z, float("nan")), z)
'''


def _recipe(write_recipe, tmp_path: Path, factory: str | None = None, limit: int = 120, attacks='["fgsm", "pgd"]',
            steps: int = 5, extra: str = "", gates: str = "") -> Path:
    model = DIGITS_MODEL
    if factory:
        (tmp_path / "bad.py").write_text(BAD_MODELS)
        import sys

        sys.path.insert(0, str(ROOT / "examples" / "digits"))
        model = model.replace(f"{ROOT / 'examples' / 'digits' / 'model.py'}:DigitsCNN", f"{tmp_path / 'bad.py'}:{factory}")
    body = model + ROBUST.format(limit=limit, attacks=attacks, steps=steps, extra=extra) + gates
    return write_recipe(body)


def _run(recipe: Path, ckpt: Path, out: Path):
    res = run_cli("run", ckpt, "--recipe", recipe, "--suite", "robustness", "--out", out, "--quiet")
    report = json.loads((out / "report.json").read_text())
    return res, report, {c["id"]: c for c in report["checks"]}


GATES = '''
[[gates]]
metric = "robust_accuracy"
params = { norm = "linf", eps = "4/255" }
op = ">="
threshold = 0.8
use = "ci_low"

[[gates]]
metric = "robustness.robust_accuracy"
params = { norm = "linf", eps = 0.25 }
op = "<="
threshold = 0.2

[[gates]]
metric = "noise_accuracy"
params = { noise = "gaussian", level = 0.1 }
op = ">="
threshold = 0.8
'''


def test_e2e_digits_good_model_passes_every_check_and_gates(digits_checkpoint, write_recipe, tmp_path):
    recipe = _recipe(write_recipe, tmp_path, gates=GATES)
    res, report, checks = _run(recipe, digits_checkpoint, tmp_path / "out")
    assert res.exit_code == 0, (res.stderr, [c for c in checks.values() if c["status"] != "pass"], report["gates"])
    expected = {"perturbation_within_eps", "adversarial_within_bounds", "gradients_not_masked",
                "accuracy_non_increasing_in_eps", "pgd_stronger_than_fgsm", "large_eps_reaches_chance",
                "attack_stronger_than_noise", "pgd_converged", "logits_not_probabilities", "inference_deterministic"}
    assert expected <= set(checks)
    assert all(checks[c]["status"] == "pass" for c in expected)
    assert [g["status"] for g in report["gates"]] == ["pass", "pass", "pass"]
    m = [r for r in report["metrics"] if r["suite"] == "robustness"]
    clean = next(r["value"] for r in m if r["name"] == "clean_accuracy" and not r["params"])
    worst = [r for r in m if r["name"] == "robust_accuracy" and set(r["params"]) == {"norm", "eps"}]
    assert [r["params"]["eps"] for r in worst] == ["4/255", "16/255", "0.25"]
    vals = [r["value"] for r in worst]
    assert vals == sorted(vals, reverse=True) and vals[0] <= clean
    per_attack = [r for r in m if r["name"] == "robust_accuracy" and r["params"].get("attack")]
    for r in worst:  # the worst case is at most every single attack
        assert all(r["value"] <= q["value"] for q in per_attack if q["params"]["eps"] == r["params"]["eps"])
    assert any(r["name"] == "robust_accuracy" and r["params"].get("class") == "3" for r in m)
    table = np.load(tmp_path / "out" / "examples.npz")
    assert {"robust:pgd:linf:eps_broken", "robust:fgsm:linf:eps_broken", "robust:worst:linf:eps_broken",
            "noise:gaussian:0.1:correct"} <= set(table.files)
    wc = table["robust:worst:linf:eps_broken"]
    assert R.robust_accuracy(wc, [0.25])[0] == vals[-1]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Can these numbers be trusted?" in html and "Exact configuration that ran" in html
    assert "<svg" in html and 'src="http' not in html and "<script" not in html


def test_e2e_quantised_model_fails_gradient_masking(digits_checkpoint, write_recipe, tmp_path):
    res, report, checks = _run(_recipe(write_recipe, tmp_path, "Quantised", limit=60), digits_checkpoint, tmp_path / "o")
    assert res.exit_code == 4
    assert checks["gradients_not_masked"]["status"] == "fail"
    assert checks["large_eps_reaches_chance"]["status"] == "fail"
    assert report["verdict"] == "invalid"


def test_e2e_softmax_model_is_flagged(digits_checkpoint, write_recipe, tmp_path):
    res, report, checks = _run(_recipe(write_recipe, tmp_path, "Softmaxed", limit=60), digits_checkpoint, tmp_path / "o")
    assert res.exit_code == 4
    assert checks["logits_not_probabilities"]["status"] == "fail"


def test_e2e_random_model_fails_determinism(digits_checkpoint, write_recipe, tmp_path):
    res, report, checks = _run(_recipe(write_recipe, tmp_path, "RandomAtInference", limit=60), digits_checkpoint,
                               tmp_path / "o")
    assert res.exit_code == 4
    assert checks["inference_deterministic"]["status"] == "fail"


def test_e2e_weak_pgd_is_caught(digits_checkpoint, write_recipe, tmp_path):
    """PGD with a tiny step and no random start: weaker than FGSM and than random noise, and not converged."""
    recipe = _recipe(write_recipe, tmp_path, limit=100, attacks='["pgd"]', steps=2,
                     extra="step_size = 0.0005\nrandom_start = false\nconvergence_tolerance = 0.0\nescalate = 0")
    res, report, checks = _run(recipe, digits_checkpoint, tmp_path / "o")
    assert res.exit_code == 4
    assert checks["pgd_stronger_than_fgsm"]["status"] == "fail"
    assert checks["attack_stronger_than_noise"]["status"] == "fail"
    assert checks["large_eps_reaches_chance"]["status"] == "pass"  # its own attack uses the default step size


def test_e2e_slow_pgd_fails_convergence_and_downgrade_works(digits_checkpoint, write_recipe, tmp_path):
    recipe = _recipe(write_recipe, tmp_path, limit=100, attacks='["pgd"]', steps=3,
                     extra="step_size = 0.01\nrandom_start = false\nescalate = 0\n")
    res, report, checks = _run(recipe, digits_checkpoint, tmp_path / "o")
    assert checks["pgd_converged"]["status"] == "fail"
    assert checks["reference_attack_agrees"]["status"] == "fail"  # APGD sees the weak attack too
    assert "Add 'autoattack'" in checks["reference_attack_agrees"]["message"]
    text = recipe.read_text() + '\n[validity]\ndowngrade = ["pgd_converged", "pgd_stronger_than_fgsm", ' \
                                '"attack_stronger_than_noise", "reference_attack_agrees"]\n'
    recipe.write_text(text)
    res, report, checks = _run(recipe, digits_checkpoint, tmp_path / "o2")
    assert checks["pgd_converged"]["status"] == "warn" and checks["pgd_converged"]["downgraded"]
    assert res.exit_code == 0, [c for c in checks.values() if c["status"] == "fail"]


def test_recipe_errors_are_one_line(digits_checkpoint, write_recipe, tmp_path):
    recipe = write_recipe(DIGITS_MODEL + DIGITS_DATA + '[robustness]\nnorm = ["linf", "l2"]\neps = [0.1]\n')
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--suite", "robustness", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "eps is a table by norm" in res.stderr
    recipe = write_recipe(DIGITS_MODEL + DIGITS_DATA + '[robustness]\neps = ["8/0"]\n')
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--suite", "robustness", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "eps" in res.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_on_the_oracle():
    model, x, y, w, b = _linear_problem()
    index = np.arange(len(x), dtype=np.int64)
    cc = np.where(y == 1, 1, -1) * (x.astype(np.float64) @ w + b) > 0
    eps = [Eps(e, str(e)) for e in (0.02, 0.1, 0.3)]
    cfg = AttackConfig("pgd", "linf", eps, steps=10, random_start=True)
    cpu = S.pgd_sweep(model, cfg, x, y, index, cc, 64, torch.device("cpu"), (0.0, 1.0), seed=3)
    gpu = S.pgd_sweep(model.to("cuda"), cfg, x, y, index, cc, 64, torch.device("cuda"), (0.0, 1.0), seed=3)
    assert np.array_equal(cpu.eps_broken, gpu.eps_broken)


def test_autoattack_runner_is_reproducible_and_leaves_the_global_rng_alone(digits):
    """The AutoAttack path with tiny components (the presets are too slow for CI on CPU): results are a
    function of the seed and the chunking only, inputs stay in the ball and the bounds, and the caller's
    torch RNG state is untouched (torchattacks reseeds the global RNG internally)."""
    model, x, y, index, cc = digits
    x, y, index, cc = x[:24], y[:24], index[:24], cc[:24]
    comps = [{"component": "apgd-ce", "class": "APGD", "loss": "ce", "steps": 5, "n_restarts": 1, "rho": 0.75},
             {"component": "square", "class": "Square", "n_queries": 20, "n_restarts": 1, "p_init": 0.8,
              "loss": "margin"}]
    cfg = AttackConfig("autoattack", "linf", to_eps(["8/255", "0.1"]), preset="test", components=comps, chunk=8)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = S.autoattack_sweep(model, cfg, x, y, index, cc, torch.device("cpu"), (0.0, 1.0), seed=0, num_classes=10)
    assert torch.equal(torch.get_rng_state(), before)
    b = S.autoattack_sweep(model, cfg, x, y, index, cc, torch.device("cpu"), (0.0, 1.0), seed=0, num_classes=10)
    assert np.array_equal(a.eps_broken, b.eps_broken)
    assert a.max_norm_excess <= 1e-6 and a.max_bound_excess == 0.0
    assert np.all(a.eps_broken[~cc] == 0) and 0 < np.sum(np.isfinite(a.eps_broken[cc]))
    assert sum(a.components["0.1"].values()) == a.broken[1]


GROUP_DATA = '''
import numpy as np
from sklearn.datasets import load_digits


def load():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None][:120]
    y = d.target[:120]
    return x, y, {"pen": np.where(np.arange(120) % 3 == 0, "thick", "thin")}
'''


def test_e2e_per_group_robust_and_noise_accuracy_match_the_table(digits_checkpoint, write_recipe, tmp_path):
    (tmp_path / "groups.py").write_text(GROUP_DATA)
    recipe = write_recipe(DIGITS_MODEL + '''
[data]
source = "python"
callable = "groups.py:load"

[robustness]
attacks = ["fgsm"]
eps = ["8/255", "0.2"]
noise = { gaussian = [0.2] }
noise_draws = 2
bootstrap = 50
check_examples = 20
''')
    res, report, checks = _run(recipe, digits_checkpoint, tmp_path / "out")
    assert res.exit_code == 0, [c for c in checks.values() if c["status"] != "pass"]
    table = np.load(tmp_path / "out" / "examples.npz")
    codes, cats = table["group:pen"], list(table["categories:pen"])
    wc = table["robust:worst:linf:eps_broken"]
    noisy = table["noise:gaussian:0.2:correct"]
    m = [r for r in report["metrics"] if r["suite"] == "robustness" and r["params"].get("attribute") == "pen"]
    for g, name in enumerate(cats):
        sel = codes == g
        rob = next(r for r in m if r["name"] == "robust_accuracy" and r["params"]["group"] == name
                   and r["params"]["eps"] == "0.2")
        assert rob["value"] == pytest.approx(np.mean(wc[sel] > 0.2)) and rob["n"] == sel.sum()
        nz = next(r for r in m if r["name"] == "noise_accuracy" and r["params"]["group"] == name)
        assert nz["value"] == pytest.approx(noisy[sel].sum() / (2 * sel.sum()))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Per sensitive group" in html and "thick" in html


class _RowCounter(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.net(x)


def test_autoattack_standard_preset_runs_every_component_at_its_reference_budget():
    """The full "standard" AutoAttack (APGD-CE 100 steps, APGD-T 9 targets x 100 steps, FAB-T 9 targets x
    100 steps, Square 5000 queries) end to end through the sweep, on a small MLP (seconds on CPU; the digits
    CNN takes minutes per example through FAB-T's per-class Jacobians). At eps = 1/255 nothing breaks, so
    every component runs its whole budget on every example: the model must see at least that many rows."""
    from audit.attacks.config import AUTOATTACK_PRESETS, autoattack_components
    from audit.loading.data import sklearn_split

    x, y, _, _ = sklearn_split("digits", "test", 0.25, 0)
    x = x.reshape(len(x), -1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), Y).backward()
        opt.step()
    counted = _RowCounter(net)
    model = WrappedModel(counted, bounds=(0.0, 1.0), num_classes=10)
    comps, notes = autoattack_components("standard", 10)
    assert notes == [] and comps == AUTOATTACK_PRESETS["standard"]
    assert [(c["component"], c.get("steps"), c.get("n_target_classes"), c.get("n_queries")) for c in comps] == [
        ("apgd-ce", 100, None, None), ("apgd-t", 100, 9, None), ("fab-t", 100, 9, None), ("square", None, None, 5000)]
    with torch.no_grad():
        cc = (model(X[:3]).argmax(1) == Y[:3]).numpy()
    assert cc.all()
    cfg = AttackConfig("autoattack", "linf", to_eps(["1/255"]), preset="standard", components=comps, chunk=8)
    counted.rows = 0
    res = S.autoattack_sweep(model, cfg, x[:3], y[:3], np.arange(3), cc, torch.device("cpu"), (0.0, 1.0), seed=0,
                             num_classes=10)
    assert np.all(np.isinf(res.eps_broken)) and res.components["1/255"] == {c["component"]: 0 for c in comps}
    budget = 3 * (100 + 9 * 100 + 9 * 100 + 5000)  # rows each component must at least evaluate
    assert counted.rows >= budget, (counted.rows, budget)
    assert res.max_norm <= 1 / 255 + 1e-6 and res.max_bound_excess == 0.0
    # at a large eps the same configuration breaks examples and says which component did
    res = S.autoattack_sweep(model, AttackConfig("autoattack", "linf", to_eps(["0.3"]), preset="standard",
                                                 components=comps, chunk=8),
                             x[:3], y[:3], np.arange(3), cc, torch.device("cpu"), (0.0, 1.0), seed=0, num_classes=10)
    assert res.broken == [3] and sum(res.components["0.3"].values()) == 3


@pytest.mark.parametrize("factory, kind", [("Overflowing", "infinite"), ("NaNOnSome", "NaN")])
@pytest.mark.parametrize("suite", ["calibration", "performance", "robustness"])
def test_non_finite_logits_stop_the_run_with_one_line_exit_4(digits_checkpoint, write_recipe, tmp_path, factory,
                                                              kind, suite):
    recipe = _recipe(write_recipe, tmp_path, factory, limit=60)
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--suite", suite, "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 4, res.stderr
    line = res.stderr.strip()
    assert "\n" not in line and line.startswith("audit: error: the model outputs") and f"{kind} logits" in line
    assert "no metric can be computed" in line
    assert_failed_run(tmp_path / "o", 4)


def test_non_finite_logits_clear_an_earlier_report_and_stop_repro_with_exit_4(digits_checkpoint, write_recipe,
                                                                              tmp_path):
    good = _recipe(write_recipe, tmp_path, limit=60)
    out = tmp_path / "o"
    assert run_cli("run", digits_checkpoint, "--recipe", good, "--suite", "performance", "--out", out,
                   "--quiet").exit_code == 0
    bad = _recipe(write_recipe, tmp_path, "NaNOnSome", limit=60)
    # the repro children are fresh processes: bad.py must find examples/digits/model.py on its own
    (tmp_path / "bad.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'examples' / 'digits')!r})\n"
                                     + BAD_MODELS)
    res = run_cli("run", digits_checkpoint, "--recipe", bad, "--suite", "performance", "--out", out, "--quiet")
    assert res.exit_code == 4  # no earlier model's report left behind: a failure report stands in its place
    assert_failed_run(out, 4)
    res = run_cli("repro", digits_checkpoint, "--recipe", bad, "--seeds", "2", "--repeats", "1", "--suite",
                  "performance", "--out", tmp_path / "r", "--quiet")
    assert res.exit_code == 4, res.stderr
    assert "the model outputs NaN logits" in res.stderr and len(res.stderr.strip().splitlines()) == 1
