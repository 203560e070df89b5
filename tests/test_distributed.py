"""Sharded audits under torchrun (two Gloo processes on this CPU) and resumable audits.

Every run here is a real `torchrun ... -m audit run` or `python -m audit run` process on the credit MLP
(tabular; robustness with PGD and noise, performance, calibration, fairness) or the digits CNN (images
with bounds, so the reference attack and the large-eps check run). The model factories that fail on
purpose (raise, hang, get killed on one rank) are test files written below; the product has no fault
hooks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audit.engine.table import ExampleTable
from conftest import DIGITS_MODEL

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # what the `torchrun` script runs

pytestmark = pytest.mark.distributed

CREDIT = (ROOT / "recipes" / "credit.toml").read_text().replace("../examples", f"{ROOT}/examples")
# 299 examples (odd: uneven shards), blocks of 40 (8 blocks: rank 0 gets 4 of them, rank 1 the other 4, the
# last one short), check chunks of 16 (the checks' 40 examples: 3 chunks, 2 on rank 0)
SHARDED = CREDIT.replace('split_seed = 0', 'split_seed = 0\nlimit = 299').replace(
    "bootstrap = 1000", "bootstrap = 200").replace("reference_draws = 1000", "reference_draws = 200") + '''
[run]
block_rows = 40
rank_timeout = 20

[robustness]
attacks = ["fgsm", "pgd"]
norm = "linf"
eps = [0.05, 0.2, 0.5]
steps = 5
losses = ["ce", "margin"]
noise = { gaussian = [0.1, 0.5] }
noise_draws = 2
batch_size = 16
check_examples = 40
bootstrap = 200

[validity]
downgrade = ["gradients_not_masked", "accuracy_non_increasing_in_eps", "pgd_stronger_than_fgsm", "pgd_converged",
             "attack_stronger_than_noise"]
'''

DIGITS = DIGITS_MODEL + '''
[data]
source = "sklearn"
name = "digits"
limit = 101

[run]
block_rows = 32

[robustness]
attacks = ["pgd"]
eps = ["4/255", "16/255"]
steps = 5
targets = 2
noise = { gaussian = [0.2] }
noise_draws = 1
batch_size = 16
check_examples = 30
bootstrap = 100

[validity]
downgrade = ["pgd_converged", "reference_attack_agrees", "large_eps_reaches_chance", "accuracy_non_increasing_in_eps"]
'''

# A model whose forward fails on one rank, once attacks start (inputs that need gradients): FAULT_RANK and
# FAULT_MODE (raise | hang | kill) choose how. Loaded through [model] factory like any user model.
FAULTY = f'''
import os, signal, sys, time
sys.path.insert(0, {str(ROOT)!r})
import torch
from examples.credit.model import CreditMLP


class Faulty(CreditMLP):
    def forward(self, x):
        if (os.environ.get("RANK", "0") == os.environ.get("FAULT_RANK") and torch.is_grad_enabled()
                and x.requires_grad):
            mode = os.environ["FAULT_MODE"]
            if mode == "raise":
                raise RuntimeError("injected fault in the model")
            if mode == "hang":
                time.sleep(600)
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)
'''


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


def audit(*args, nproc: int = 1, env: dict[str, str] | None = None, timeout: float = 300
          ) -> subprocess.CompletedProcess:
    """`python -m audit ...` (nproc 1) or `torchrun --standalone --nproc_per_node=N -m audit ...`."""
    launch = [sys.executable, "-m", "audit"] if nproc == 1 else \
        TORCHRUN + ["--standalone", f"--nproc_per_node={nproc}", "-m", "audit"]
    return subprocess.run(launch + [str(a) for a in args], capture_output=True, text=True, env=env or _env(),
                          timeout=timeout, cwd=ROOT)


def start(*args, nproc: int = 1, env: dict[str, str] | None = None) -> subprocess.Popen:
    launch = [sys.executable, "-m", "audit"] if nproc == 1 else \
        TORCHRUN + ["--standalone", f"--nproc_per_node={nproc}", "-m", "audit"]
    return subprocess.Popen(launch + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or _env(), cwd=ROOT, start_new_session=True)


def comparable(report: dict) -> dict:
    """A report without what legitimately differs between two runs of the same audit: times, run ids,
    the process layout (world size, hosts), how many rows were resumed."""
    r = json.loads(json.dumps(report))
    for k in ("run_id", "timing", "provenance", "created"):
        r.pop(k, None)
    for s in r.get("suites", {}).values():
        s.pop("timing", None)
    return r


def assert_same_audit(a: Path, b: Path) -> None:
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (a, b))
    assert ra["run_status"] == rb["run_status"] == "finished"
    ca, cb = comparable(ra), comparable(rb)
    assert ca["metrics"] == cb["metrics"]
    assert ca["checks"] == cb["checks"]
    assert ca == cb
    ta, tb = ExampleTable.load(a / "examples.npz"), ExampleTable.load(b / "examples.npz")
    assert sorted(ta.columns) == sorted(tb.columns)
    for k in ta.columns:
        assert np.array_equal(ta[k], tb[k], equal_nan=ta[k].dtype.kind == "f"), k
    assert ta.column_meta == tb.column_meta


@pytest.fixture(scope="module")
def credit_model(credit_checkpoint) -> Path:
    return credit_checkpoint


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("recipes")
    (d / "faulty.py").write_text(FAULTY)
    out = {"sharded": d / "sharded.toml", "faulty": d / "faulty.toml", "digits": d / "digits.toml"}
    out["sharded"].write_text(SHARDED)
    out["faulty"].write_text(SHARDED.replace(f'factory = "{ROOT}/examples/credit/model.py:CreditMLP"',
                                             f'factory = "{d / "faulty.py"}:Faulty"').replace(
        "rank_timeout = 20", "rank_timeout = 5"))
    out["digits"].write_text(DIGITS)
    return out


@pytest.fixture(scope="module")
def single(credit_model, recipes, tmp_path_factory) -> Path:
    """The reference: the same audit in one process."""
    out = tmp_path_factory.mktemp("single")
    res = audit("run", credit_model, "--recipe", recipes["sharded"], "--out", out, "--quiet")
    assert res.returncode in (0, 1), res.stderr
    return out


def test_two_ranks_equal_one_process(credit_model, recipes, single, tmp_path):
    """torchrun with 2 Gloo ranks on an odd number of examples: every metric record, every check, every
    table of the report and every column of examples.npz equal the single-process run; the report records
    the world size; rank 1 writes nothing but its rows."""
    out = tmp_path / "two"
    res = audit("run", credit_model, "--recipe", recipes["sharded"], "--out", out, "--quiet", nproc=2)
    assert res.returncode in (0, 1), res.stderr
    assert_same_audit(single, out)
    report = json.loads((out / "report.json").read_text())
    assert report["provenance"]["sharding"]["world_size"] == 2
    assert report["data"]["n"] == 299
    assert not (out / "cache").exists()  # finished: the rows are in examples.npz


def test_two_ranks_equal_one_process_on_images_with_every_check(digits_checkpoint, recipes, tmp_path):
    """The digits CNN (input bounds: the reference attack and the large-eps PGD run too): 2 ranks equal 1."""
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = audit("run", digits_checkpoint, "--recipe", recipes["digits"], "--out", one, "--quiet")
    r2 = audit("run", digits_checkpoint, "--recipe", recipes["digits"], "--out", two, "--quiet", nproc=2)
    assert r1.returncode == r2.returncode and r1.returncode in (0, 1, 4), (r1.stderr, r2.stderr)
    assert_same_audit(one, two)
    checks = {c["id"] for c in json.loads((two / "report.json").read_text())["checks"]}
    assert {"reference_attack_agrees", "large_eps_reaches_chance", "pgd_converged"} <= checks


def test_an_escalated_attack_on_two_ranks_equals_one_process(digits_checkpoint, tmp_path):
    """A PGD too weak for the model (2 small constant steps, no random start): the convergence check fails,
    rank 0 decides to re-run with 4 x the steps and every rank re-runs (its own resume-cache units); the
    2-rank report equals the single-process one, escalation included."""
    recipe = tmp_path / "weak.toml"
    recipe.write_text(DIGITS.replace("steps = 5\n", 'steps = 2\nstep_size = 0.01\nstep_schedule = "constant"\n'
                                     'random_start = false\nlosses = ["ce"]\n')
                      .split("[validity]")[0])
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = audit("run", digits_checkpoint, "--recipe", recipe, "--out", one, "--quiet")
    r2 = audit("run", digits_checkpoint, "--recipe", recipe, "--out", two, "--quiet", nproc=2)
    # 8 steps of 0.01 still cannot cross the ball: the re-run's own checks fail it (exit 4; torchrun itself
    # exits 1 for any rank's non-zero code, so compare the reports' codes)
    assert r1.returncode == 4 and r2.returncode != 0, (r1.stderr, r2.stderr)
    assert json.loads((two / "report.json").read_text())["exit_code"] == 4
    checks = {c["id"]: c for c in json.loads((two / "report.json").read_text())["checks"]}
    assert checks["attack_escalated"]["status"] == "warn", checks.get("attack_escalated")
    assert "re-run with 8 steps and 2 restarts" in checks["attack_escalated"]["message"]
    assert_same_audit(one, two)


@pytest.mark.parametrize("mode", ["raise", "hang", "kill"])
def test_a_failing_rank_stops_every_rank_with_one_line(credit_model, recipes, tmp_path, mode):
    """Rank 1's model raises, hangs or is SIGKILLed once the attacks start: every rank's stderr has one
    `audit: error:` line naming rank 1, the job exits non-zero, and --out holds no finished report."""
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = audit("run", credit_model, "--recipe", recipes["faulty"], "--out", out, "--quiet", nproc=2,
                env=_env(FAULT_RANK="1", FAULT_MODE=mode), timeout=240)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("audit: error:")]
    # torchrun's agent prints its own summary (ChildFailedError); the ranks print no traceback of ours
    assert f'File "{ROOT / "audit"}' not in res.stderr, res.stderr
    if mode == "raise":
        assert len(lines) == 2, res.stderr  # one per rank
        assert any(ln.startswith("audit: error: rank 1: internal error: RuntimeError: injected fault") for ln in lines)
        assert any(ln.startswith("audit: error: rank 0: stopped because rank 1 failed: rank 1: internal error")
                   for ln in lines)
    elif mode == "hang":
        assert any("rank 0: stopped because rank 1 made no progress for 5 s (last seen: robustness" in ln
                   for ln in lines), res.stderr
        # and the hung rank, stopped by torchrun, says after what
        assert any(ln.startswith("audit: error: rank 1: terminated (SIGTERM)") and "made no progress" in ln
                   for ln in lines), res.stderr
        assert time.monotonic() - t0 < 60
    else:
        assert any("rank 0: terminated (SIGTERM)" in ln and "rank 1" in ln for ln in lines), res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False and report["run_status"] in ("failed", "incomplete")
    assert report["metrics"] == [] and not (out / "examples.npz").exists()


def _wait_for_entries(proc: subprocess.Popen, folder: Path, unit: str, count: int, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if len(list((folder / "cache").glob(f"*/{unit}/*.npz"))) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {count} {unit} blocks were cached: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("no cache entries appeared")


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_sigkill_then_resume_equals_an_uninterrupted_run(credit_model, recipes, single, tmp_path):
    """SIGKILL in the middle of the robustness fill, then the same command with --resume: the report equals
    the uninterrupted one, fewer rows were computed (counted in the report), and stderr says how many rows
    were resumed. A damaged cache entry is detected and recomputed."""
    out = tmp_path / "out"
    args = ("run", credit_model, "--recipe", recipes["sharded"], "--out", out, "--quiet")
    proc = start(*args)
    _wait_for_entries(proc, out, "robustness", 3)
    _kill(proc)
    entries = sorted((out / "cache").glob("*/robustness/*.npz"))
    assert 3 <= len(entries) < 8
    # damage one block: flipped bytes in the middle (its checksum no longer matches its name)
    data = bytearray(entries[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    entries[0].write_bytes(bytes(data))
    res = audit("run", credit_model, "--recipe", recipes["sharded"], "--out", out, "--resume")
    assert res.returncode in (0, 1), res.stderr
    assert "is damaged" in res.stderr and entries[0].name in res.stderr
    assert "audit: robustness: " in res.stderr and "rows resumed from" in res.stderr
    assert_same_audit(single, out)
    resume = json.loads((out / "report.json").read_text())["provenance"]["resume"]
    assert resume["resumed_rows"]["core"] == 299
    assert 0 < resume["resumed_rows"]["robustness"] < 299
    assert resume["computed_rows"]["robustness"] == 299 - resume["resumed_rows"]["robustness"]


def test_resume_ignores_rows_of_another_audit(credit_model, recipes, tmp_path):
    """A cache left by another recipe (here PGD with 6 steps instead of 5) is ignored with its one-line
    notice, and every row is computed again."""
    out = tmp_path / "out"
    other = tmp_path / "other.toml"
    other.write_text(recipes["sharded"].read_text().replace("steps = 5", "steps = 6"))
    proc = start("run", credit_model, "--recipe", other, "--out", out, "--quiet")
    _wait_for_entries(proc, out, "robustness", 1)
    _kill(proc)
    res = audit("run", credit_model, "--recipe", recipes["sharded"], "--out", out, "--resume", "--suite",
                "performance")
    assert res.returncode in (0, 1), res.stderr
    notices = [ln for ln in res.stderr.splitlines() if ln.startswith("audit: notice:")]
    assert len(notices) == 1 and "holds rows of another audit (different recipe)" in notices[0], res.stderr
    assert "rows resumed" not in res.stderr
    assert json.loads((out / "report.json").read_text())["provenance"]["resume"]["resumed_rows"] == {"core": 0}


def test_killed_on_two_ranks_resumed_on_one(credit_model, recipes, single, tmp_path):
    """Resume under another world size: the blocks are keyed by position, not by rank."""
    out = tmp_path / "out"
    proc = start("run", credit_model, "--recipe", recipes["sharded"], "--out", out, "--quiet", nproc=2)
    _wait_for_entries(proc, out, "robustness", 2)
    _kill(proc)
    res = audit("run", credit_model, "--recipe", recipes["sharded"], "--out", out, "--resume", "--quiet")
    assert res.returncode in (0, 1), res.stderr
    assert_same_audit(single, out)
    resume = json.loads((out / "report.json").read_text())["provenance"]["resume"]
    assert resume["resumed_rows"]["robustness"] > 0


def test_repro_says_it_does_not_run_under_torchrun(credit_model, recipes, tmp_path):
    res = audit("repro", credit_model, "--recipe", recipes["sharded"], "--out", tmp_path / "r", "--seeds", "2",
                nproc=2, timeout=120)
    assert res.returncode != 0  # torchrun's own code; its summary has the ranks' exit code, 2
    assert "exitcode  : 2" in res.stderr
    # every rank that gets that far says so; torchrun stops the other one as soon as the first exits, so it
    # may not (it may still be importing torch): one line at least
    assert res.stderr.count("audit: error: audit repro does not run under torchrun (WORLD_SIZE = 2)") >= 1


def test_two_nodes_with_c10d_rendezvous_equal_one_process(credit_model, recipes, single, tmp_path):
    """`torchrun --nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT`: two agents (two "nodes" on this
    machine, one rank each) meet at the rendezvous; the report equals the single-process run."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    cmd = TORCHRUN + ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                      f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=audit-test", "-m", "audit", "run",
                      str(credit_model), "--recipe", str(recipes["sharded"]), "--out", str(out), "--quiet"]
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in nodes]
    assert all(code in (0, 1) for code, _ in results), results
    assert_same_audit(single, out)
    assert json.loads((out / "report.json").read_text())["provenance"]["sharding"]["world_size"] == 2
