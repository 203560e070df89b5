"""Checks for silent nonsense (issue 15, point 5).

- ``better_than_baseline``: a model that predicts one class for (nearly) every row, or worse than chance,
  makes every other number meaningless; it fires on a tabular model audited without its normalisation and
  not on the same model with it.
- The tabular threat model (``audit.attacks.threat``): eps in declared units (``feature_scale``), one-hot,
  immutable and sensitive columns never perturbed, measured on the adversarial and the noisy inputs
  themselves (the attacks called directly on the wrapped model) and by the audit's own checks.
- Noise kinds that need input bounds are skipped as configuration, not reported as findings.
- Raw units with very different feature spreads: a warning pointing to feature_scale.

Every model is a real MLP trained on the shipped German credit data (a second or two).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, run_cli

CREDIT = (ROOT / "recipes" / "credit.toml").read_text().replace("../examples", str(ROOT / "examples"))
# [model] and [data] of the credit recipe: everything before its first suite table
CREDIT_CORE = CREDIT.split("[performance]")[0]


# ------------------------------------------------------------------------------------ better_than_baseline


def _check(y, pred, k=2):
    from audit.engine.baseline import better_than_baseline

    return better_than_baseline(np.asarray(y), np.asarray(pred), [str(i) for i in range(k)])


def test_baseline_check_decisions_on_synthetic_predictions():
    rng = np.random.default_rng(0)
    y = rng.choice(3, size=600, p=[0.6, 0.25, 0.15])
    # constant: one class for every prediction
    c = _check(y, np.zeros_like(y), 3)
    assert c.status == "fail" and "predicts '0' for 600 of 600" in c.message
    assert "[model] mean and std" in c.message and "order" in c.message and "label_values" in c.message
    # 99% one class is still constant; 98% is not
    p = np.zeros_like(y)
    p[:6] = y[:6]
    assert _check(y, p, 3).status == "fail"
    # worse than chance: the labels mapped to the wrong classes (a cyclic shift of a perfect model)
    c = _check(y, (y + 1) % 3, 3)
    assert c.status == "fail" and "worse than chance" in c.message and c.value == 0.0
    # no better than the majority, not below chance: a warning
    noisy = np.where(rng.random(len(y)) < 0.2, y, rng.choice(3, size=len(y)))
    c = _check(y, noisy, 3)
    assert c.status == "warn" and "majority baseline" in c.message
    # a good model passes
    good = np.where(rng.random(len(y)) < 0.9, y, rng.choice(3, size=len(y)))
    assert _check(y, good, 3).status == "pass"
    # a dataset that is itself (nearly) one class: predicting it is not a collapse
    y1 = np.r_[np.zeros(97, dtype=int), np.ones(3, dtype=int)]
    assert _check(y1, np.zeros_like(y1)).status != "fail"
    # heavy imbalance (a fraud set, 96% one class): always predicting the majority finds none of the 40
    # others and fails; finding 5 of them is only a warning; finding 30 passes
    y2 = np.r_[np.zeros(960, dtype=int), np.ones(40, dtype=int)]
    c = _check(y2, np.zeros_like(y2))
    assert c.status == "fail" and "finds 0 of the 40" in c.message
    p2 = np.zeros_like(y2)
    p2[960:965] = 1
    assert _check(y2, p2).status == "warn"
    p2[960:990] = 1
    assert _check(y2, p2).status == "pass"


def test_balanced_accuracy_and_its_bound_against_scikit_learn_and_a_simulation():
    """The point equals scikit-learn's balanced_accuracy_score; the one-sided 95% upper bound falls below
    1/K (the check fires) for about 5% of input-ignoring predictors (the rate it is built for), measured
    over 2000 simulated ones with skewed class and prediction frequencies."""
    from sklearn.metrics import balanced_accuracy_score

    from audit.engine.baseline import balanced_accuracy_upper

    rng = np.random.default_rng(1)
    fired = 0
    for i in range(2000):
        y = rng.choice(3, size=150, p=[0.5, 0.3, 0.2])
        pred = rng.choice(3, size=150, p=[0.2, 0.5, 0.3])  # independent of y
        ba, hi, kp = balanced_accuracy_upper(y, pred, 3)
        if i < 20:
            assert ba == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12) and kp == 3
        fired += hi < 1 / 3
    rate = fired / 2000
    assert 0.02 <= rate <= 0.08, rate


def _standardised_mlp(tmp_path: Path) -> tuple[Path, list[float], list[float]]:
    """The credit MLP trained on standardised features WITHOUT carrying its scaler (its buffers stay at
    mean 0, std 1): it needs [model] mean/std, as most tabular models trained on scaled arrays do."""
    from safetensors.torch import save_file

    from examples.credit import train as ct
    from examples.credit.model import CreditMLP

    torch.manual_seed(0)
    data = ct.train_split()
    x = torch.from_numpy(data.x)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs, y = (x - mean) / std, torch.from_numpy(data.y)
    net = CreditMLP(num_features=x.shape[1])
    net.eval()  # no dropout: full-batch Adam on 700 rows converges in a fraction of a second
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(net(xs), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "scaled.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path, mean.tolist(), std.tolist()


def test_baseline_check_fires_on_a_tabular_model_audited_without_its_normalisation(tmp_path, write_recipe):
    model, mean, std = _standardised_mlp(tmp_path)
    base = CREDIT_CORE + "\n[performance]\nbootstrap = 0\nbootstrap_ranking = 0\n"
    # with its normalisation: a real model, the check passes
    good = write_recipe(base.replace("class_names", f"mean = {mean}\nstd = {std}\nclass_names", 1), "good.toml")
    res = run_cli("run", model, "--recipe", good, "--out", tmp_path / "good", "--quiet")
    checks = {c["id"]: c for c in json.loads((tmp_path / "good" / "report.json").read_text())["checks"]}
    assert res.exit_code == 0, res.stderr
    assert checks["better_than_baseline"]["status"] == "pass"
    # without it: raw credit amounts in the thousands saturate the first layer, one class for every row
    bad = write_recipe(base, "bad.toml")
    res = run_cli("run", model, "--recipe", bad, "--out", tmp_path / "bad", "--quiet")
    report = json.loads((tmp_path / "bad" / "report.json").read_text())
    checks = {c["id"]: c for c in report["checks"]}
    assert res.exit_code == 4, res.stderr
    c = checks["better_than_baseline"]
    assert c["status"] == "fail" and c["suite"] == "core"
    assert "(nearly) constant" in c["message"] and "[model] mean and std" in c["message"]
    # balanced accuracy says the same: exactly chance
    ba = next(m for m in report["metrics"] if m["name"] == "balanced_accuracy")
    assert ba["value"] == pytest.approx(0.5)
    # a deliberately trivial model can be audited: the downgrade makes it a warning
    down = write_recipe(base + '\n[validity]\ndowngrade = ["better_than_baseline"]\n', "down.toml")
    res = run_cli("run", model, "--recipe", down, "--out", tmp_path / "down", "--quiet")
    checks = {c["id"]: c for c in json.loads((tmp_path / "down" / "report.json").read_text())["checks"]}
    assert res.exit_code == 0 and checks["better_than_baseline"]["status"] == "warn"
    assert checks["better_than_baseline"]["downgraded"] is True


# ------------------------------------------------------------------------------- the tabular threat model


@pytest.fixture(scope="module")
def credit_wrapped(credit_checkpoint):
    """The bundled credit MLP (it carries its scaler) wrapped as the audit wraps it, its test data, and the
    threat model that feature_scale = "std", immutable = ["duration"] resolve to."""
    import tomllib

    from audit.attacks.threat import feature_facts, resolve
    from audit.engine.wrapper import WrappedModel
    from audit.loading.data import load_data
    from audit.recipe.load import load_recipe
    from examples.credit.model import CreditMLP

    p = Path(credit_checkpoint).parent / "credit.toml"
    p.write_text(CREDIT)
    recipe = load_recipe(p)
    data = load_data(recipe)
    from safetensors.torch import load_file

    net = CreditMLP(num_features=data.x.shape[1])
    net.load_state_dict(load_file(str(credit_checkpoint)))
    model = WrappedModel(net, num_classes=2)
    ff = feature_facts(recipe.section("data"), data.x, data.feature_names, data.meta)
    threat = resolve({"feature_scale": "std", "immutable": ["duration"]}, ff, data.x.shape[1:])
    assert tomllib  # the recipe parses
    return model, data, ff, threat


def test_threat_model_resolves_one_hot_immutable_sensitive_and_scales(credit_wrapped):
    _, data, ff, threat = credit_wrapped
    names = data.feature_names
    one_hot = [n for n in names if "=" in n]
    assert len(one_hot) == 20 and threat.frozen["one-hot"] == one_hot
    assert threat.frozen["immutable"] == ["duration"]
    assert threat.frozen["sensitive (perturb_sensitive = false)"] == ["age"]  # sensitive and a feature
    free = [n for n in names if n not in one_hot + ["duration", "age"]]
    assert free == ["job", "credit_amount"]
    for j, n in enumerate(names):
        expect = data.x[:, j].astype(np.float64).std() if n in free else 0.0
        assert threat.scale[j] == pytest.approx(expect, rel=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attacks_never_perturb_frozen_columns_and_respect_eps_in_declared_units(credit_wrapped, norm):
    """PGD (random start, 10 steps) and FGSM on the wrapped model, measured on the adversarial inputs:
    one-hot, immutable and sensitive columns exactly unchanged; |delta_j| / scale_j within eps (Linf), the
    L2 norm of delta / scale within eps; and the attack does break examples (the threat model is not empty)."""
    from audit.attacks.adapters import FGSMAttack, PGDAttack
    from audit.attacks.sweep import unit_start

    model, data, _, threat = credit_wrapped
    x = torch.from_numpy(data.x[:200])
    y = torch.from_numpy(data.y[:200])
    s = threat.torch_scale("cpu")
    frozen = ~threat.mask
    eps = 1.0  # one standard deviation
    start = torch.from_numpy(unit_start(np.arange(200, dtype=np.uint64) + 7, (x.shape[1],), norm))
    atk = PGDAttack(model, eps=eps, alpha=[eps] * 5 + [eps / 2] * 5, steps=10, norm=norm, bounds=None, scale=s)
    adv, found = atk(x, y, start)
    d = (adv - x).double().numpy()
    assert np.all(d[:, frozen] == 0.0)
    u = d[:, threat.mask] / threat.scale[threat.mask]
    size = np.abs(u).max(axis=1) if norm == "linf" else np.linalg.norm(u, axis=1)
    assert size.max() <= eps * (1 + 1e-5)
    assert found.sum() > 0 and np.abs(u).max() > 0.5 * eps  # it does move the free features
    if norm == "linf":
        f = FGSMAttack(model, bounds=None, scale=s)
        adv_f = f.at(x, f.grad_sign(x, y), eps)
        df = (adv_f - x).double().numpy()
        assert np.all(df[:, frozen] == 0.0)
        assert np.abs(df[:, threat.mask] / threat.scale[threat.mask]).max() == pytest.approx(eps, rel=1e-5)


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "salt_pepper"])
def test_noise_never_perturbs_frozen_columns_and_is_in_declared_units(credit_wrapped, kind):
    from audit.attacks.noise import _unit, perturb
    from audit.seeding import example_seeds

    _, data, _, threat = credit_wrapped
    x = torch.from_numpy(data.x[:300])
    unit, salt = _unit(kind, example_seeds(0, np.arange(300), "noise", kind, 0), (x.shape[1],))
    bounds = (float(data.x.min()), float(data.x.max())) if kind == "salt_pepper" else None
    xn = perturb(kind, x, 0.5, unit, salt, bounds, threat.torch_scale("cpu"))
    d = (xn - x).double().numpy()
    assert np.all(d[:, ~threat.mask] == 0.0)
    assert np.any(d[:, threat.mask] != 0.0)
    if kind != "salt_pepper":  # level 0.5 in standard deviations of each feature
        expect = 0.5 * unit[:, threat.mask] * threat.scale[threat.mask]
        np.testing.assert_allclose(d[:, threat.mask], expect, rtol=1e-4, atol=1e-3)


ROBUST = """
[robustness]
attacks = ["fgsm", "pgd"]
norm = ["linf", "l2"]
eps = {{ linf = [0.25, 1.0], l2 = [0.5] }}
steps = 5
losses = ["ce"]
check_examples = 20
bootstrap = 0
noise = {{ gaussian = [0.5], salt_pepper = [0.05] }}
noise_draws = 2
{extra}
"""


def test_audit_records_the_threat_model_and_its_checks_confirm_it(credit_checkpoint, write_recipe, tmp_path):
    rec = write_recipe(CREDIT_CORE + ROBUST.format(extra='feature_scale = "std"\nimmutable = ["duration", "purpose"]'))
    res = run_cli("run", credit_checkpoint, "--recipe", rec, "--out", tmp_path / "o", "--suite", "robustness",
                  "--quiet")
    assert res.exit_code == 0, res.stderr
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    checks = {c["id"]: c for c in r["checks"]}
    assert checks["frozen_features_unchanged"]["status"] == "pass"
    assert checks["frozen_features_unchanged"]["value"] == 0.0
    assert "every noisy copy" in checks["frozen_features_unchanged"]["message"]
    assert checks["perturbation_within_eps"]["status"] == "pass"
    assert "standard deviations" in checks["perturbation_within_eps"]["message"]
    assert checks["perturbation_units"]["status"] == "pass"
    assert checks["large_eps_reaches_chance"]["status"] == "warn"  # frozen columns can carry the label
    cfg = r["suites"]["robustness"]["config"]
    tm = cfg["threat_model"]
    assert tm["units"] == "std" and tm["frozen"]["immutable"][0] == "duration"
    assert "purpose=car" in tm["frozen"]["one-hot"] and tm["scale"]["duration"] == 0.0
    assert tm["scale"]["credit_amount"] > 1000  # a standard deviation of amounts in the thousands
    # salt-and-pepper without input bounds: skipped as configuration, no record, not a note (not a finding)
    assert "salt_pepper" in cfg["noise_skipped"]
    assert not [m for m in r["metrics"] if m["params"].get("noise") == "salt_pepper"]
    assert not any("alt" in n for n in r["suites"]["robustness"]["notes"])
    assert [m for m in r["metrics"] if m["params"].get("noise") == "gaussian"]
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Tabular threat model: eps and noise levels are in standard deviations" in html
    assert "Noise salt_pepper skipped" in html


def test_raw_units_with_different_spreads_warn_and_point_to_feature_scale(credit_checkpoint, write_recipe, tmp_path):
    rec = write_recipe(CREDIT_CORE + ROBUST.format(extra="").replace("norm = [\"linf\", \"l2\"]", 'norm = "linf"')
                       .replace("eps = { linf = [0.25, 1.0], l2 = [0.5] }", "eps = [0.05]"))
    res = run_cli("run", credit_checkpoint, "--recipe", rec, "--out", tmp_path / "o", "--suite", "robustness",
                  "--quiet")
    assert res.exit_code == 0, res.stderr
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    checks = {c["id"]: c for c in r["checks"]}
    c = checks["perturbation_units"]
    assert c["status"] == "warn" and "raw feature units" in c["message"] and "feature_scale" in c["message"]
    assert "'credit_amount'" in c["message"] and c["value"] > 10
    # one-hot columns and the sensitive age are still frozen without feature_scale
    assert checks["frozen_features_unchanged"]["status"] == "pass"
    assert r["suites"]["robustness"]["config"]["threat_model"]["units"] == "raw"


@pytest.mark.parametrize("extra, msg", [
    ('immutable = ["durration"]', "[robustness] immutable: no feature 'durration' (did you mean 'duration'?"),
    ("feature_scale = [1.0, 2.0]", "feature_scale has 2 values but the data has 24 features"),
    ('feature_scale = { credit_amount = 1000.0 }', "feature_scale has no value for 'job'"),
    ('feature_scale = "variance"', "expected 'std' or 'range'"),
    ("immutable = [99]", "immutable: index 99 is out of range"),
])
def test_threat_model_mistakes_are_one_line_exit_2(credit_checkpoint, write_recipe, tmp_path, extra, msg):
    rec = write_recipe(CREDIT_CORE + ROBUST.format(extra=extra))
    res = run_cli("run", credit_checkpoint, "--recipe", rec, "--out", tmp_path / "o", "--suite", "robustness")
    assert res.exit_code == 2, res.stderr
    assert msg in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_feature_scale_on_images_is_refused(digits_checkpoint, write_recipe, tmp_path):
    from tests.conftest import DIGITS_DATA, DIGITS_MODEL

    rec = write_recipe(DIGITS_MODEL + DIGITS_DATA + '\n[robustness]\nfeature_scale = "std"\n')
    res = run_cli("run", digits_checkpoint, "--recipe", rec, "--out", tmp_path / "o", "--suite", "robustness")
    assert res.exit_code == 2 and "feature_scale is for flat (tabular) inputs" in res.stderr, res.stderr


def test_frozen_check_fires_on_an_attack_that_moves_a_frozen_column(credit_wrapped):
    """The check can fail: an attack that steps every value by eps (frozen ones too) is measured as such by
    the sweep, and the decision fails; in declared units its size is eps / scale_j on the free features."""
    from audit.attacks import sweep as S
    from audit.attacks.config import to_eps
    from audit.suites import robustness_checks as K

    model, data, _, threat = credit_wrapped
    x, y = data.x[:64], data.y[:64]
    eps = to_eps([0.5])
    res = S.SweepResult("bad", "linf", eps, np.empty(0))
    s = threat.torch_scale("cpu")

    def bad_attack(xb, yb, rows, e):  # moves every value, frozen ones included, by eps in raw units
        return xb + e.value

    S.nested_sweep(bad_attack, model, x, y, np.arange(64), eps, np.ones(64, dtype=bool), 32, torch.device("cpu"),
                   "linf", None, res, scale=s)
    assert res.max_frozen_change == pytest.approx(0.5, abs=1e-5)
    assert K.frozen_features_unchanged(res.max_frozen_change, threat.frozen_brief())[0] == "fail"
    assert K.frozen_features_unchanged(0.0, threat.frozen_brief(), noise=1e-3)[0] == "fail"
    assert K.frozen_features_unchanged(0.0, threat.frozen_brief())[0] == "pass"
    free = threat.scale[threat.mask]
    assert res.max_norm == pytest.approx(0.5 / free.min(), rel=1e-4)  # measured in standard deviations


def test_constant_predictions_on_a_handful_of_rows_only_warn():
    y = np.array([0, 1, 1, 0] * 7)  # 14 examples of class 1: too few to call a collapse
    c = _check(y, np.zeros_like(y))
    assert c.status == "warn" and "only 14 examples of the other classes" in c.message
    y = np.array([0, 1] * 30)
    assert _check(y, np.zeros_like(y)).status == "fail"


def test_flattened_pixels_in_one_box_are_not_raw_units(tmp_path):
    """An MLP on flattened images (N, 64) is flat data, but with [model] input_bounds every feature shares
    one box: perturbation_units passes (it warned, the pixels' spreads differing 277-fold)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    import audit
    from audit.loading.data import sklearn_split

    x, y, _, _ = sklearn_split("digits", "test", 0.25, 0)
    x = x.reshape(len(x), -1)[:120]
    y = y[:120]
    lr = LogisticRegression(max_iter=300).fit(x, y)
    net = torch.nn.Linear(64, 10)
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(lr.coef_).float())
        net.bias.copy_(torch.from_numpy(lr.intercept_).float())
    r = audit.run(net, x, y, suites=["robustness"], quiet=True, model={"input_bounds": [0.0, 1.0]},
                  robustness={"attacks": ["fgsm"], "eps": ["0.1"], "noise": {}, "check_examples": 20,
                              "bootstrap": 0})
    c = {c["id"]: c for c in r.checks}["perturbation_units"]
    assert c["status"] == "pass" and "units of [model] input_bounds" in c["message"], c
