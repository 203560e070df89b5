"""Benchmark: how `audit run` grows with the number of rows on a tabular binary task, against a reference
that computes the same kind of numbers with scikit-learn + fairlearn + a hand-written ECE and no intervals.

    python bench/scaling.py                    # 10k, 100k and 1M rows
    python bench/scaling.py --sizes 10000 100000 --no-reference

Data (generated here, seeded): 16 Gaussian features whose means shift with two sensitive attributes of 8
and 3 levels (24 intersectional groups of unequal size), a label from a logistic model with a group effect,
and a small torch MLP (examples/credit/model.py's CreditMLP, 16 -> 32 -> 2) trained for a few seconds on
a separate 20,000-row sample. `audit run` then runs the performance, fairness (both attributes and their
intersection) and calibration suites with their default intervals: 1000 confusion-matrix draws, 200
ranking replicates, 1000 fairness draws, 1000 ECE-interval draws and 1000 reference draws for each of the
four ECEs (equal-width / equal-mass, top-label / class-wise), temperature scaling and ThresholdOptimizer.

Every measurement is one fresh child process, timed by a wrapper process with
``resource.getrusage(RUSAGE_CHILDREN)``: CPU time = user + sys of the child and everything it waited for
(imports, data loading, inference, suites, report), peak memory = the child's ru_maxrss. The growth
exponent is the least-squares slope of log CPU time (and of log peak RSS) against log n.

The reference, at the largest size only, runs on the audit's own predictions (the probabilities written to
examples.npz): scikit-learn's accuracy, balanced accuracy, precision / recall / F1, ROC AUC, average
precision and Brier score; fairlearn's MetricFrame by the intersectional group with selection rate, TPR and
FPR, and its demographic-parity and equalized-odds differences; a hand-written 15-bin top-label ECE. Its
imports (sklearn, fairlearn, pandas) are included in its CPU time, as audit's are in audit's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FEATURES = 16
LEVELS = (8, 3)

# Runs argv[1:] as a child and prints its CPU seconds (user + sys) and peak RSS (KiB) on the last line.
_WRAP = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
         "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
         "print(r.ru_utime + r.ru_stime, r.ru_maxrss); sys.exit(p.returncode)")


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x (n, 16) float32, y (n,) int64 and the two sensitive attributes a (8 levels), b (3 levels)."""
    r = np.random.default_rng(seed)
    pa = np.linspace(1.0, 3.0, LEVELS[0])
    a = r.choice(LEVELS[0], n, p=pa / pa.sum())
    b = r.choice(LEVELS[1], n, p=[0.6, 0.3, 0.1])
    x = r.normal(size=(n, FEATURES)).astype(np.float32)
    x[:, 0] += 0.15 * a
    x[:, 1] -= 0.4 * b
    w = np.linspace(1.0, -1.0, FEATURES) / np.sqrt(FEATURES) * 2.0
    logit = x @ w + 0.6 * np.sin(x[:, 2] * x[:, 3]) - 0.1 * a + 0.3 * (b == 2) - 0.2
    y = (r.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return x, y, a, b


def train_model(path: Path) -> None:
    """A CreditMLP(16) trained on a separate seeded sample: full-batch Adam, 300 steps."""
    import torch
    from safetensors.torch import save_file

    from examples.credit.model import CreditMLP

    torch.manual_seed(0)
    x, y, _, _ = make_data(20_000, seed=1)
    net = CreditMLP(FEATURES)
    net.mean.copy_(torch.from_numpy(x.mean(0)))
    net.std.copy_(torch.from_numpy(x.std(0)))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))


def write_task(d: Path, n: int) -> Path:
    x, y, a, b = make_data(n, seed=2)
    np.savez(d / f"tab{n}.npz", x=x, y=y, a=a, b=b)
    rec = d / f"tab{n}.toml"
    rec.write_text(f'''
[model]
factory = "{ROOT}/examples/credit/model.py:CreditMLP"
kwargs = {{ num_features = {FEATURES} }}
num_classes = 2

[data]
source = "npz"
path = "{d / f'tab{n}.npz'}"
sensitive = {{ a = "a", b = "b" }}

[run]
batch_size = 8192                    # a tabular MLP: large batches (the default 256 is sized for images)

[performance]

[fairness]
intersectional = true

[calibration]
''')
    return rec


def measure(argv: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """CPU seconds (user + sys) and peak RSS (MiB) of ``argv`` run as one fresh child."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _WRAP, *argv], capture_output=True, text=True, cwd=ROOT, env=env)
    cpu, rss = proc.stdout.strip().splitlines()[-1].split()
    return float(cpu), int(rss) / 1024, proc


REFERENCE = r'''
import sys
import numpy as np
import pandas as pd
from fairlearn.metrics import (MetricFrame, demographic_parity_difference, equalized_odds_difference,
                               false_positive_rate, selection_rate, true_positive_rate)
from sklearn import metrics as M

with np.load(sys.argv[1]) as z:
    y, p1, g = z["y"], z["p1"], z["g"]
pred = (p1 >= 0.5).astype(np.int64)
out = {
    "accuracy": M.accuracy_score(y, pred), "balanced_accuracy": M.balanced_accuracy_score(y, pred),
    "precision": M.precision_score(y, pred), "recall": M.recall_score(y, pred), "f1": M.f1_score(y, pred),
    "roc_auc": M.roc_auc_score(y, p1), "average_precision": M.average_precision_score(y, p1),
    "brier": M.brier_score_loss(y, p1),
}
mf = MetricFrame(metrics={"selection_rate": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate},
                 y_true=y, y_pred=pred, sensitive_features=pd.Series(g, name="a&b"))
_ = mf.by_group
out["dp_difference"] = demographic_parity_difference(y, pred, sensitive_features=g)
out["eo_difference"] = equalized_odds_difference(y, pred, sensitive_features=g)
# hand-written top-label ECE, 15 equal-width bins (lo, hi]
conf = np.maximum(p1, 1 - p1)
correct = (pred == y)
idx = np.clip(np.ceil(conf * 15).astype(np.int64) - 1, 0, 14)
cnt = np.bincount(idx, minlength=15)
gap = np.abs(np.bincount(idx, weights=correct, minlength=15) - np.bincount(idx, weights=conf, minlength=15))
out["ece"] = gap.sum() / len(y)
print({k: round(float(v), 6) for k, v in out.items()})
'''


def reference(d: Path, out: Path, n: int) -> tuple[float, float]:
    with np.load(out / "examples.npz") as z:
        cols = {k: z[k] for k in z.files}
    z = cols["logits"].astype(np.float64)
    p1 = 1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1]))                # softmax's class-1 probability
    _, _, a, b = make_data(n, seed=2)
    order = cols["index"]
    np.savez(d / "ref.npz", y=cols["label"], p1=p1, g=(a * LEVELS[1] + b)[order])
    script = d / "reference.py"
    script.write_text(REFERENCE)
    cpu, rss, proc = measure([sys.executable, str(script), str(d / "ref.npz")])
    if proc.returncode != 0:
        raise SystemExit(f"reference failed: {proc.stderr[-2000:]}")
    print(f"    reference numbers: {proc.stdout.strip().splitlines()[0]}")
    return cpu, rss


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = np.log(xs), np.log(ys)
    return float(np.polyfit(lx, ly, 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--no-reference", action="store_true", help="skip the scikit-learn + fairlearn reference")
    ap.add_argument("--keep", type=Path, help="keep the outputs in this folder")
    a = ap.parse_args()
    import numpy, sklearn, torch  # noqa: E401 (versions only)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, numpy {numpy.__version__}, torch {torch.__version__}, "
          f"scikit-learn {sklearn.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        d = a.keep or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        model = d / "tab.safetensors"
        train_model(model)
        cpus, rsss = [], []
        print(f"{'rows':>10s} {'CPU s':>9s} {'peak RSS MiB':>13s} {'suites s (report.json timing)':>32s}")
        out = None
        for n in a.sizes:
            rec = write_task(d, n)
            out = d / f"out{n}"
            cpu, rss, proc = measure([sys.executable, "-m", "audit", "run", str(model), "--recipe", str(rec),
                                      "--out", str(out), "--quiet", "--device", "cpu",
                                      "--suite", "performance", "--suite", "fairness", "--suite", "calibration"])
            if proc.returncode not in (0, 1, 4):
                raise SystemExit(f"audit failed ({proc.returncode}): {proc.stderr[-3000:]}")
            timing = json.loads((out / "report.json").read_text()).get("timing", {})
            parts = ", ".join(f"{k.removesuffix('_s').removesuffix('.summarise')} {v:.1f}" for k, v in timing.items()
                              if (k.endswith(".summarise_s") or k in ("inference_s", "total_s")) and isinstance(v, (int, float)) and v >= 0.05)
            print(f"{n:10,d} {cpu:9.1f} {rss:13.0f}   {parts}", flush=True)
            cpus.append(cpu)
            rsss.append(rss)
        if len(a.sizes) >= 2:
            print(f"growth exponent (log-log slope over {len(a.sizes)} sizes): CPU time {slope(a.sizes, cpus):.2f}, "
                  f"peak RSS {slope(a.sizes, rsss):.2f}")
            lo, hi = a.sizes[-2], a.sizes[-1]
            print(f"  between {lo:,} and {hi:,}: CPU {math.log(cpus[-1] / cpus[-2]) / math.log(hi / lo):.2f}, "
                  f"RSS {math.log(rsss[-1] / rsss[-2]) / math.log(hi / lo):.2f}")
        if not a.no_reference and out is not None:
            n = a.sizes[-1]
            rcpu, rrss = reference(d, out, n)
            print(f"reference at {n:,} rows (scikit-learn + fairlearn MetricFrame + hand ECE, no intervals): "
                  f"{rcpu:.1f} CPU s, peak {rrss:.0f} MiB")
            print(f"audit / reference CPU time at {n:,} rows: {cpus[-1] / rcpu:.2f} (target <= 1); audit peak RSS "
                  f"{rsss[-1]:.0f} MiB (target <= 1024)")


if __name__ == "__main__":
    main()
