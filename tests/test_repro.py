"""`audit repro`: seed statistics against numpy/scipy, the fingerprint and its comparison, the op recorder and
PyTorch's nondeterminism alerts, same-seed comparison, and the command end to end with real child
processes on the digits CNN, a model that applies dropout at inference, and a model that uses MaxUnpool2d
(an op PyTorch alerts on for CPU too). Nothing is mocked.

Child runs cost a fresh interpreter each (torch + scikit-learn imports), so the studies here are small:
[data] limit, bootstrap 50, --suite performance, jobs = 2.
"""

from __future__ import annotations

import json
import math
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from audit.repro import stats as S
from audit.repro.compare import array_sha256, compare_runs, metric_key, metric_sha256
from audit.repro.fingerprint import compare_fingerprints, fingerprint
from audit.repro.hazards import DOCUMENTED, match, op_key, parse_alert, record_model_ops
from conftest import DIGITS_DATA, DIGITS_MODEL, run_cli

# ------------------------------------------------------------------------------------ seed statistics


def test_seed_summary_equals_numpy_and_scipy():
    x = [0.91, 0.87, 0.93, 0.88, 0.90]
    st = S.seed_summary(x, 0.95)
    a = np.array(x)
    assert st["n"] == 5
    assert st["mean"] == pytest.approx(a.mean(), abs=1e-15)
    assert st["std"] == pytest.approx(a.std(ddof=1), abs=1e-15)
    lo, hi = sps.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=sps.sem(a))
    assert st["ci_low"] == pytest.approx(lo, abs=1e-12) and st["ci_high"] == pytest.approx(hi, abs=1e-12)
    assert st["min"] == 0.87 and st["max"] == 0.93
    # a 90% interval too, and undefined values are dropped (n says how many remained)
    st90 = S.seed_summary(x + [None, float("nan")], 0.90)
    lo, hi = sps.t.interval(0.90, 4, loc=a.mean(), scale=sps.sem(a))
    assert st90["n"] == 5 and st90["ci_low"] == pytest.approx(lo, abs=1e-12) and st90["ci_high"] == pytest.approx(hi)
    # a constant metric has exactly zero spread (numpy gives 1.24e-16 for five copies of 44/45)
    a45 = 44 / 45
    assert np.std([a45] * 5, ddof=1) > 0
    const = S.seed_summary([a45] * 5)
    assert const["std"] == 0.0 and const["mean"] == a45 and const["ci_low"] == const["ci_high"] == a45
    one = S.seed_summary([0.5])
    assert one["mean"] == 0.5 and one["std"] is None and one["ci_low"] is None
    assert S.seed_summary([None])["mean"] is None


def test_seeds_needed_is_the_smallest_n_by_brute_force():
    for std, h, conf in [(0.02, 0.01, 0.95), (0.013, 0.004, 0.95), (0.05, 0.01, 0.99), (0.001, 0.01, 0.95)]:
        n = S.seeds_needed(std, h, conf)
        def half(k, std=std, conf=conf):
            return sps.t.ppf((1 + conf) / 2, k - 1) * std / math.sqrt(k)

        assert half(n) <= h
        assert n == 2 or half(n - 1) > h
        brute = next(k for k in range(2, 100000) if half(k) <= h)
        assert n == brute
    assert S.seeds_needed(0.0, 0.01) == 2
    assert S.seeds_needed(None, 0.01) is None


def test_worst_seed_follows_the_metric_direction():
    v = [0.9, 0.8, None, 0.95]
    assert S.worst_index(v, "higher") == 1
    assert S.worst_index(v, "lower") == 3
    assert S.worst_index([1.0, 1.1, 2.0], None) == 2  # farthest from the mean
    assert S.worst_index([None, None], "higher") is None


def test_metric_direction_for_the_worst_seed():
    from audit.repro.study import orientation

    for name in ("accuracy", "robust_accuracy", "auroc", "median_breaking_eps", "disparate_impact_ratio"):
        assert orientation(name) == "higher", name
    for name in ("attack_success_rate", "ece", "nll_before_temperature", "brier", "equalized_odds_difference",
                 "mce"):
        assert orientation(name) == "lower", name
    assert orientation("temperature") is None and orientation("prevalence") is None


def test_churn_equals_numpy_pairwise_disagreement():
    rng = np.random.default_rng(0)
    cols = [rng.integers(0, 3, 50) for _ in range(4)]
    expected = np.mean([np.mean(a != b) for a, b in combinations(cols, 2)])
    assert S.pairwise_churn(cols) == pytest.approx(expected, abs=1e-15)
    stacked = np.stack(cols)
    assert S.unstable_fraction(cols) == pytest.approx(np.mean((stacked != stacked[0]).any(axis=0)), abs=1e-15)
    # float outcome columns: inf == inf and NaN == NaN count as "the same outcome"
    f = [np.array([0.1, np.inf, np.nan]), np.array([0.1, np.inf, np.nan]), np.array([0.2, np.inf, np.nan])]
    assert S.pairwise_churn(f) == pytest.approx(np.mean([0, 1 / 3, 1 / 3]))
    assert S.pairwise_churn(cols[:1]) is None


# -------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_records_versions_flags_threads_and_env(monkeypatch):
    import torch

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    fp = fingerprint()
    assert fp["versions"]["torch"] == torch.__version__
    assert fp["versions"]["numpy"] == np.__version__
    for key in ("cuda", "cudnn"):
        assert key in fp["versions"]
    assert fp["device"]["type"] in ("cpu", "cuda") and fp["device"]["name"]
    flags = fp["flags"]
    assert flags["deterministic_algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert flags["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    for key in ("cudnn_benchmark", "cudnn_deterministic", "cuda_matmul_allow_tf32", "cudnn_allow_tf32"):
        assert key in flags
    assert fp["threads"]["torch_num_threads"] == torch.get_num_threads()
    assert fp["env"]["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert "PYTHONHASHSEED" in fp["env"] and "OMP_NUM_THREADS" in fp["env"] and "MKL_NUM_THREADS" in fp["env"]
    json.dumps(fp)  # JSON-able as it stands


def test_fingerprint_comparison_is_ranked_by_likely_impact():
    base = fingerprint()
    now = json.loads(json.dumps(base))
    now["env"]["PYTHONHASHSEED"] = "0"
    now["threads"]["torch_num_threads"] = base["threads"]["torch_num_threads"] + 3
    now["versions"]["torch"] = "9.9.9"
    now["flags"]["cudnn_benchmark"] = not base["flags"]["cudnn_benchmark"]
    changes = compare_fingerprints(base, now)
    assert [c["key"] for c in changes] == ["flags.cudnn_benchmark", "versions.torch", "threads.torch_num_threads",
                                           "env.PYTHONHASHSEED"]
    assert [c["impact"] for c in changes] == ["high", "high", "medium", "low"]
    assert changes[1]["base"] == base["versions"]["torch"] and changes[1]["now"] == "9.9.9" and changes[1]["why"]
    assert compare_fingerprints(base, base) == []


# ---------------------------------------------------------------------------- ops, alerts and hazards


@pytest.fixture()
def deterministic_warn_only():
    """Deterministic warn-only mode for one test, then the previous setting back (it is process-global)."""
    import torch

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_max_unpool_alerts_on_cpu_and_the_alert_names_the_op(deterministic_warn_only):
    import torch
    import torch.nn.functional as F

    x = torch.randn(1, 1, 4, 4)
    p, idx = F.max_pool2d(x, 2, return_indices=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        F.max_unpool2d(p, idx, 2)
        torch.nn.functional.relu(x)  # deterministic: no alert
    ops = [parse_alert(str(w.message)) for w in caught]
    assert [o for o in ops if o] == ["max_unpooling2d_forward_out"]
    assert parse_alert("some unrelated warning") is None


def _unpool_net():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class UnpoolNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 10)

        def forward(self, x):
            h = torch.relu(self.conv(x.reshape(-1, 1, 8, 8)))
            p, idx = F.max_pool2d(h, 2, return_indices=True)
            return self.fc(F.max_unpool2d(p, idx, 2, output_size=h.shape[-2:]).flatten(1))

    torch.manual_seed(0)
    return UnpoolNet()


def test_op_recorder_sees_forward_and_backward_ops_and_matches_the_table():
    import torch

    net = _unpool_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ops = record_model_ops(net, np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32), torch.device("cpu"))
    assert set(ops) == {"inference", "attack_gradient", "training"}
    assert "convolution" in ops["inference"] and "max_unpool2d" in ops["inference"]
    assert "convolution_backward" in ops["attack_gradient"] and "convolution_backward" in ops["training"]
    assert "convolution_backward" not in ops["inference"]
    hz = match(ops)
    unpool = [h for h in hz if h["op"] == "max_unpool2d"]
    assert {h["phase"] for h in unpool} == {"inference", "attack_gradient", "training"}
    assert unpool[0]["devices"] == "cpu and cuda" and "raises" in unpool[0]["deterministic_mode"]
    assert any(h["op"] == "convolution" and h["devices"] == "cuda" for h in hz)
    # the recorder leaves the model as it found it: weights, grads, mode
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters()) and net.training


def test_hazard_table_names_are_normalised_and_unique():
    assert op_key("aten.index_put_.default") == "index_put"
    assert op_key("_index_put_impl_") == "_index_put_impl"
    names = [op for h in DOCUMENTED for op in h.ops]
    assert len(names) == len(set(names))
    assert all(op_key(n) == n for n in names)


# ---------------------------------------------------------------------------------- same-seed compare


def test_compare_runs_detects_every_kind_of_difference():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(20, 3)).astype(np.float32)
    cols = {"index": np.arange(20), "logits": logits, "pred": logits.argmax(1),
            "robust:worst:linf:eps_broken": np.where(rng.random(20) < 0.5, np.inf, 0.1)}
    mets = [{"suite": "performance", "name": "accuracy", "params": {}, "value": 0.5, "ci_low": 0.4, "ci_high": 0.6,
             "n": 20}]
    same = compare_runs(cols, mets, {k: v.copy() for k, v in cols.items()}, json.loads(json.dumps(mets)))
    assert same["identical"] and same["max_abs_logit_diff"] == 0 and same["prediction_flips"] == 0
    other = {k: v.copy() for k, v in cols.items()}
    other["logits"][3] += np.float32(1e-6)
    other["robust:worst:linf:eps_broken"][5] = 0.05
    mets2 = [dict(mets[0], ci_low=0.4000000001)]
    c = compare_runs(cols, mets, other, mets2)
    assert not c["identical"]
    assert c["max_abs_logit_diff"] == pytest.approx(float(np.max(np.abs(other["logits"].astype(np.float64)
                                                                         - logits.astype(np.float64)))))
    assert c["outcome_flips"] == 1 and c["metrics_changed"] == 1
    assert c["changed_metrics"][0]["key"] == "performance.accuracy[]"
    assert {x["column"] for x in c["columns"] if not x["identical"]} == {"logits", "robust:worst:linf:eps_broken"}
    # digests see dtype and every bit
    assert array_sha256(np.zeros(3, np.float32)) != array_sha256(np.zeros(3, np.float64))
    assert metric_sha256(mets[0]) != metric_sha256(mets2[0])
    assert metric_key({"suite": "s", "name": "m", "params": {"b": 1, "a": "x"}}) == "s.m[a=x,b=1]"


# ------------------------------------------------------------------------------------------ the command

SMALL = """
[performance]
bootstrap = 50
bootstrap_ranking = 0

[repro]
jobs = 2
"""


def _digits_recipe(tmp_path: Path, extra: str = "", limit: int = 120) -> Path:
    p = tmp_path / "repro.toml"
    p.write_text(DIGITS_MODEL + DIGITS_DATA + f"limit = {limit}\n" + SMALL + extra)
    return p


GATES = """
[[gates]]
metric = "accuracy"
op = ">="
threshold = 0.9
use = "ci_low"

[[gates]]
metric = "repro.bitwise_identical"
op = ">="
threshold = 1

[[gates]]
metric = "repro.seed_std"
params = { metric = "performance.accuracy" }
op = "<="
threshold = 0.01

[[gates]]
metric = "repro.seed_mean"
params = { metric = "performance.f1", average = "macro" }
op = ">="
threshold = 0.8
use = "ci_low"

[[gates]]
id = "robust-spread"
metric = "repro.seed_std"
params = { metric = "robustness.robust_accuracy", norm = "linf", eps = "8/255" }
op = "<="
threshold = 0.05
"""


@pytest.fixture(scope="module")
def digits_study(digits_checkpoint, tmp_path_factory):
    """`audit repro --seeds 3` on the digits CNN, with --compare against a baseline whose fingerprint says
    another torch build made it."""
    tmp = tmp_path_factory.mktemp("repro")
    recipe = _digits_recipe(tmp, GATES)
    base = tmp / "baseline"
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--out", base, "--quiet", "--suite", "performance")
    assert res.exit_code == 0, res.stderr
    baseline = json.loads((base / "report.json").read_text())
    # the repro gates name a suite that `audit run` does not run
    assert {g["status"] for g in baseline["gates"] if g["metric"].startswith("repro.")} == {"not_run"}
    baseline["provenance"]["fingerprint"]["versions"]["torch"] = "2.0.0+cu118"
    baseline["provenance"]["fingerprint"]["env"]["PYTHONHASHSEED"] = "123"
    (base / "report.json").write_text(json.dumps(baseline))
    out = tmp / "out"
    res = run_cli("repro", digits_checkpoint, "--recipe", recipe, "--seeds", "3", "--suite", "performance",
                  "--out", out, "--compare", base / "report.json")
    return res, out, recipe


def test_digits_study_end_to_end(digits_study):
    res, out, _ = digits_study
    assert res.exit_code == 0, res.stderr
    for name in ("report.json", "report.html", "junit.xml", "summary.md", "examples.npz"):
        assert (out / name).is_file(), name
    # progress: one line per run (3 seeds + 2 repeats + 1 capture)
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("repro: run ")]) == 6
    assert "bitwise identical" in res.stderr and "PASS" in res.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["schema"] == "audit.report/1" and r["suites_run"] == ["performance", "repro"]
    assert "repro" not in r["suites_excused"] and "robustness" in r["suites_excused"]
    # a repro gate on a suite the study left out (--suite performance) is reported, not blocking
    g = next(g for g in r["gates"] if g["id"] == "robust-spread")
    assert g["status"] == "not_run" and g["excused"] and "'robustness' was not part of this run" in g["message"]
    rep = r["suites"]["repro"]
    assert rep["config"]["seeds"] == [0, 1, 2] and rep["config"]["repeats"] == 2
    assert "harden" in rep["config"]["fine_tuning"]
    assert [x["role"] for x in rep["tables"]["runs"]] == ["seed"] * 3 + ["repeat"] * 2 + ["capture"]
    metrics = {(m["name"], json.dumps(m["params"], sort_keys=True)): m for m in r["metrics"] if m["suite"] == "repro"}
    assert metrics[("bitwise_identical", "{}")]["value"] == 1.0
    assert metrics[("max_abs_logit_diff", "{}")]["value"] == 0.0
    assert metrics[("prediction_flips", "{}")]["value"] == 0.0
    assert metrics[("nondeterministic_ops", "{}")]["value"] == 0.0
    same = rep["tables"]["same_seed"]
    digests = list(same["digests"].values())
    assert len(digests) == 3 and all(d == digests[0] for d in digests) and len(digests[0]["logits"]) == 64
    # the CNN runs convolutions and matmuls: latent cuDNN/cuBLAS hazards for a GPU run
    hz = {h["op"] for h in rep["tables"]["determinism"]["latent_hazards"]}
    assert {"convolution", "convolution_backward", "addmm"} <= hz
    assert metrics[("latent_cuda_hazards", "{}")]["value"] == len(hz)
    assert rep["tables"]["determinism"]["batch_invariance"]["examples"] == 120
    # every child report carries the fingerprint; the study's report too
    fp = r["provenance"]["fingerprint"]
    assert fp["versions"]["torch"] and "CUBLAS_WORKSPACE_CONFIG" in fp["env"]
    cap = json.loads((out / "runs" / "seed-0-capture" / "report.json").read_text())
    assert cap["provenance"]["fingerprint"]["flags"]["deterministic_algorithms"] is True
    assert "determinism" in cap and "determinism" not in json.loads((out / "runs" / "seed-1" / "report.json").read_text())
    # gates on repro metrics, in the same [[gates]] syntax
    gates = {g["metric"]: g for g in r["gates"] if g["id"] != "robust-spread"}
    assert gates["repro.bitwise_identical"]["status"] == "pass"
    assert gates["repro.seed_std"]["status"] == "pass" and gates["repro.seed_mean"]["status"] == "pass"
    assert gates["repro.seed_mean"]["params"] == {"metric": "performance.f1", "average": "macro"}
    # the report explains in plain words
    assert any("bitwise" in a["text"] for a in rep["tables"]["advice"])
    assert any("CUBLAS_WORKSPACE_CONFIG" in a["text"] for a in rep["tables"]["advice"])
    html = (out / "report.html").read_text()
    assert 'id="suite-repro"' in html and "What to do" in html and "Same-seed repeats" in html
    assert len(html.encode()) < 1_000_000 and "<script" not in html


def test_child_runs_write_what_the_study_reads_and_no_pages(digits_study):
    """Each child keeps report.json, examples.npz, summary.md and stderr.txt; report.html and junit.xml
    are the study's alone (rendered once, from the children's reports)."""
    res, out, _ = digits_study
    assert res.exit_code == 0, res.stderr
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["seed-0", "seed-0-capture", "seed-0-repeat-1", "seed-0-repeat-2", "seed-1", "seed-2"]
    for name in runs:
        files = sorted(p.name for p in (out / "runs" / name).iterdir() if not p.name.startswith("."))
        assert [f for f in files if f not in ("cache",)] == ["examples.npz", "report.json", "stderr.txt",
                                                             "summary.md"], (name, files)
        child = json.loads((out / "runs" / name / "report.json").read_text())
        assert child["run_status"] == "finished"
        assert child["run_id"] in (out / "runs" / name / "summary.md").read_text()
    assert (out / "report.html").is_file() and (out / "junit.xml").is_file()


def test_digits_seed_statistics_equal_numpy_over_the_child_reports(digits_study):
    _, out, _ = digits_study
    r = json.loads((out / "report.json").read_text())
    children = [json.loads((out / "runs" / f"seed-{s}" / "report.json").read_text()) for s in (0, 1, 2)]
    rows = {row["key"]: row for row in r["suites"]["repro"]["tables"]["seeds"]["metrics"]}
    checked = 0
    for m in children[0]["metrics"]:
        key = metric_key(m)
        vals = [next(x["value"] for x in c["metrics"] if metric_key(x) == key) for c in children]
        if any(v is None for v in vals):
            continue
        a = np.array(vals, dtype=np.float64)
        row = rows[key]
        assert row["mean"] == pytest.approx(a.mean(), abs=1e-9) and row["std"] == pytest.approx(a.std(ddof=1), abs=1e-9)
        assert row["min"] == pytest.approx(a.min()) and row["max"] == pytest.approx(a.max())
        checked += 1
    assert checked > 50
    # the metric record a gate reads: seed_mean carries the t-interval
    rec = next(m for m in r["metrics"] if m["name"] == "seed_mean" and m["params"] == {"metric": "performance.accuracy"})
    assert rec["n"] == 3 and rec["ci_low"] == pytest.approx(rec["value"]) and rec["ci_high"] == pytest.approx(rec["value"])
    churn = next(m for m in r["metrics"] if m["name"] == "prediction_churn")
    assert churn["value"] == 0.0  # clean inference takes no seed


def test_digits_compare_ranks_environment_changes(digits_study, tmp_path):
    _, out, _ = digits_study
    cmp_ = json.loads((out / "report.json").read_text())["suites"]["repro"]["tables"]["compare"]
    # Thread counts may differ too on a machine with more cores (the test process pins torch to 2 threads
    # in conftest, a child takes the machine's default): only the two faked changes must be there.
    keys = [c["key"] for c in cmp_["changes"] if not c["key"].startswith("threads.")]
    assert keys == ["versions.torch", "env.PYTHONHASHSEED"]
    assert cmp_["changes"][0]["key"] == "versions.torch"
    assert cmp_["changes"][0]["impact"] == "high" and cmp_["changes"][0]["base"] == "2.0.0+cu118"
    assert cmp_["same_model"] and cmp_["same_data"]
    # without a model: this environment against the report's fingerprint, printed
    res = run_cli("repro", "--compare", cmp_["base"])
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "difference(s)" in lines[0] and lines[1].startswith("  [high] versions.torch: 2.0.0+cu118 ->")
    assert any("env.PYTHONHASHSEED" in line for line in lines)


def test_audit_gate_reaches_the_same_verdict_on_the_study_report(digits_study, tmp_path):
    _, out, recipe = digits_study
    res = run_cli("gate", out / "report.json", "--quiet")
    assert res.exit_code == 0
    strict = recipe.read_text() + '\n[[gates]]\nid = "need-more-seeds"\nmetric = "repro.seeds_needed"\n' \
                                  'params = { metric = "performance.accuracy" }\nop = ">"\nthreshold = 2\n'
    p = tmp_path / "strict.toml"
    p.write_text(strict)
    res = run_cli("gate", out / "report.json", "--recipe", p)
    assert res.exit_code == 1 and "need-more-seeds" in res.stderr
    # gates given anew are not excused by the study's --suite: the robustness one cannot be checked here
    assert "gate robust-spread: NOT_RUN (blocking)" in res.stderr


DROPOUT_NET = '''
import torch.nn.functional as F
from torch import nn


class DropoutAtInference(nn.Module):
    """Dropout applied even in eval mode: random at inference."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(F.dropout(x.flatten(1), 0.5, training=True))


class Unpool(nn.Module):
    """MaxUnpool2d has no deterministic implementation on CPU or CUDA."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = self.conv(x.reshape(-1, 1, 8, 8)).relu()
        p, idx = F.max_pool2d(h, 2, return_indices=True)
        return self.fc(F.max_unpool2d(p, idx, 2, output_size=h.shape[-2:]).flatten(1))
'''


def _toy_study(tmp_path: Path, factory: str, extra: str) -> tuple[Path, Path]:
    import torch

    (tmp_path / "nets.py").write_text(DROPOUT_NET)
    ns: dict = {}
    exec(DROPOUT_NET, ns)  # noqa: S102 - our own test model
    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    torch.save(ns[factory]().state_dict(), model)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[model]\nfactory = "nets.py:{factory}"\nnum_classes = 10\ninput_bounds = [0.0, 1.0]\n'
                      f'input_shape = [1, 8, 8]\n' + DIGITS_DATA + "limit = 60\n\n[performance]\nbootstrap = 20\n"
                      "bootstrap_ranking = 0\n\n[repro]\njobs = 2\n" + extra)
    return model, recipe


def test_dropout_at_inference_is_not_bitwise_identical_and_the_report_says_so(tmp_path):
    extra = ('capture = false\n\n[validity]\ndowngrade = ["inference_deterministic"]\n\n'
             '[[gates]]\nmetric = "repro.bitwise_identical"\nop = ">="\nthreshold = 1\n')
    model, recipe = _toy_study(tmp_path, "DropoutAtInference", extra)
    res = run_cli("repro", model, "--recipe", recipe, "--seeds", "2", "--repeats", "1", "--suite", "performance",
                  "--out", tmp_path / "out", "--quiet")
    assert res.exit_code == 1, res.stderr  # the bitwise gate fails
    r = json.loads((tmp_path / "out" / "report.json").read_text())
    rec = next(m for m in r["metrics"] if m["suite"] == "repro" and m["name"] == "bitwise_identical")
    assert rec["value"] == 0.0
    gate = next(g for g in r["gates"] if g["metric"] == "repro.bitwise_identical")
    assert gate["status"] == "fail"
    same = r["suites"]["repro"]["tables"]["same_seed"]
    assert not same["bitwise_identical"] and same["max_abs_logit_diff"] > 0
    assert "logits" in same["repeats"][0]["columns_differ"]
    notes = " ".join(r["suites"]["repro"]["notes"])
    assert "random at inference" in notes and "F.dropout(x, p, training=True)" in notes
    assert "model.eval()" in notes
    churn = next(m for m in r["metrics"] if m["name"] == "prediction_churn")
    assert churn["value"] > 0  # predictions change from run to run, hence from seed to seed
    assert "random at inference" in (tmp_path / "out" / "summary.md").read_text()


def test_an_op_that_alerts_on_cpu_is_named_with_its_phase(tmp_path):
    extra = '\n[[gates]]\nmetric = "repro.nondeterministic_ops"\nop = "<="\nthreshold = 0\n'
    model, recipe = _toy_study(tmp_path, "Unpool", extra)
    res = run_cli("repro", model, "--recipe", recipe, "--seeds", "2", "--repeats", "1", "--suite", "performance",
                  "--out", tmp_path / "out")
    assert res.exit_code == 1, res.stderr
    assert "max_unpooling2d_forward_out (inference)" in res.stderr
    r = json.loads((tmp_path / "out" / "report.json").read_text())
    det = r["suites"]["repro"]["tables"]["determinism"]
    phases = {a["phase"] for a in det["alerts"] if a["op"] == "max_unpooling2d_forward_out"}
    assert {"inference", "attack_gradient", "training"} <= phases
    assert any(h["op"] == "max_unpool2d" and h["devices"] == "cpu and cuda" for h in det["latent_hazards"])
    rec = {json.dumps(m["params"]): m["value"] for m in r["metrics"] if m["name"] == "nondeterministic_ops"}
    assert rec["{}"] == 1.0 and rec['{"phase": "inference"}'] == 1.0
    assert any("MaxUnpool" in a["text"] for a in r["suites"]["repro"]["tables"]["advice"])
    assert "max_unpooling2d_forward_out" in (tmp_path / "out" / "report.html").read_text()


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("args, message", [
    (["--seeds", "1"], "--seeds 1: a spread needs at least 2 seeds"),
    (["--repeats", "0"], "--repeats 0: at least 1 same-seed repeat"),
    (["--jobs", "0"], "--jobs 0: expected 1 or more"),
    (["--device", "tpu"], "--device tpu: expected auto, cpu, cuda or cuda:N"),
    (["--suite", "repro"], "--suite repro: the 'repro' suite is not run by `audit run`; use `audit repro`"),
    (["--suite", "nope"], "--suite nope: unknown suite"),
    (["--compare", "missing/report.json"], "missing/report.json: report file not found"),
])
def test_usage_errors_are_one_line_and_exit_2(args, message, digits_checkpoint, tmp_path):
    recipe = _digits_recipe(tmp_path)
    res = run_cli("repro", digits_checkpoint, "--recipe", recipe, "--out", tmp_path / "o", *args)
    assert res.exit_code == 2, res.stderr
    assert res.stderr.startswith("audit: error: ") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "runs").exists()  # nothing started


def test_more_usage_errors(digits_checkpoint, tmp_path):
    recipe = _digits_recipe(tmp_path)
    cases = [
        (["repro"], "give MODEL and --recipe"),
        (["repro", digits_checkpoint], "--recipe is required with MODEL"),
        (["repro", tmp_path / "nope.safetensors", "--recipe", recipe], "nope.safetensors: model file not found"),
    ]
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema": "audit.report/1", "metrics": [], "checks": [], "suites": {},
                               "provenance": {}}))
    cases.append((["repro", "--compare", old], "has no environment fingerprint"))
    bad = tmp_path / "bad.toml"
    bad.write_text(recipe.read_text() + "\n[[gates]]\nmetric = \"repro.bitwise_identical\"\nparams = { x = 1 }\n"
                                        "op = \">=\"\nthreshold = 1\n")
    cases.append((["repro", digits_checkpoint, "--recipe", bad], "metric 'bitwise_identical' has no parameter 'x'"))
    typo = tmp_path / "typo.toml"
    typo.write_text(recipe.read_text().replace("[repro]\njobs = 2", "[repro]\nseed = 3"))
    cases.append((["repro", digits_checkpoint, "--recipe", typo], "[repro] unknown key 'seed' (did you mean 'seeds'?"))
    for args, message in cases:
        res = run_cli(*args, cwd=tmp_path)  # the default --out (out/repro) is relative: keep it in tmp_path
        assert res.exit_code == 2, (args, res.stderr)
        assert res.stderr.startswith("audit: error: ") and message in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    # `audit run` ignores [repro] and refuses to run the repro suite
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--suite", "repro", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "use `audit repro`" in res.stderr


def test_a_child_input_error_surfaces_as_one_line_exit_2(tmp_path):
    recipe = _digits_recipe(tmp_path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    res = run_cli("repro", junk, "--recipe", recipe, "--out", tmp_path / "o", "--suite", "performance", "--quiet")
    assert res.exit_code == 2, res.stderr
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith("audit: error: repro run seed 0 (seed 0, log ") and "junk.safetensors" in line
    # only the first seed ran: the rest never started
    assert sorted(p.name for p in (tmp_path / "o" / "runs").iterdir()) == ["seed-0"]


def test_child_runs_do_not_write_the_github_job_summary_or_annotations(tmp_path, monkeypatch):
    """Under GitHub Actions the study writes one job summary and its annotations; its child runs (every seed,
    repeat and the capture run) must not append theirs: run_child drops those variables from their
    environment (a real child process reports what it was given)."""
    import sys as _sys

    from audit.repro.runs import ChildArgs, ChildRun, run_child

    class EnvProbe(ChildArgs):
        def command(self, seed, out):
            return [_sys.executable, "-c", "import os, sys; sys.stderr.write(repr(sorted(k for k in os.environ "
                    "if k.startswith('GITHUB_'))))"]

    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_SHA", "abc")  # other GitHub variables stay
    run = run_child(ChildRun("seed", 0, tmp_path / "c", "seed 0"), EnvProbe(tmp_path / "m", tmp_path / "r", []))
    assert run.exit_code == 0 and run.stderr.strip() == "['GITHUB_SHA']", run.stderr
