"""Benchmark: bootstrap intervals of the count metrics, ours vs the naive way, on the same data.

Ours: one multinomial draw of B replicate confusion matrices, then every metric vectorised over B.
Naive (what most hand-written audits do): resample row indices B times and call scikit-learn's
accuracy / balanced accuracy / MCC / macro-F1 on each resample.

Prints wall times, the speed-up ratio measured in this run, and both intervals side by side (they must
agree up to Monte-Carlo error). Usage: python bench/performance.py [--n 100000] [--classes 10] [--boot 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit.metrics import classification as C  # noqa: E402
from audit.metrics.bootstrap import multinomial_confusions, percentile_interval  # noqa: E402


def ours(y, pred, k, B, seed=0):
    cm = C.confusion_matrix(y, pred, k)
    boot = multinomial_confusions(cm, B, np.random.default_rng(seed))
    return {
        "accuracy": percentile_interval(C.accuracy(boot)),
        "balanced_accuracy": percentile_interval(C.balanced_accuracy(boot)),
        "mcc": percentile_interval(C.mcc(boot)),
        "f1_macro": percentile_interval(C.precision_recall_f1(boot)["f1"]["macro"]),
    }


def naive(y, pred, B, seed=0):
    from sklearn import metrics as skm

    rng = np.random.default_rng(seed)
    vals = {"accuracy": [], "balanced_accuracy": [], "mcc": [], "f1_macro": []}
    n = len(y)
    for _ in range(B):
        i = rng.integers(0, n, n)
        yt, yp = y[i], pred[i]
        vals["accuracy"].append(skm.accuracy_score(yt, yp))
        vals["balanced_accuracy"].append(skm.balanced_accuracy_score(yt, yp))
        vals["mcc"].append(skm.matthews_corrcoef(yt, yp))
        vals["f1_macro"].append(skm.f1_score(yt, yp, average="macro", zero_division=0))
    return {k: percentile_interval(np.array(v)) for k, v in vals.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--naive-boot", type=int, default=100,
                    help="replicates actually run the naive way (its time is scaled to --boot: it is linear in B)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, args.n)
    pred = np.where(rng.random(args.n) < 0.85, y, rng.integers(0, args.classes, args.n))

    ours(y, pred, args.classes, 10)  # warm-up
    t = time.perf_counter()
    a = ours(y, pred, args.classes, args.boot)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    b = naive(y, pred, args.naive_boot)
    t_naive = (time.perf_counter() - t) * args.boot / args.naive_boot

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"data: n={args.n}, {args.classes} classes; B={args.boot} bootstrap replicates")
    print(f"ours  (multinomial confusion matrices): {t_ours:8.3f} s")
    print(f"naive (row resampling + scikit-learn):  {t_naive:8.3f} s  (measured on {args.naive_boot} replicates, scaled)")
    print(f"speed-up: {t_naive / t_ours:.0f}x")
    print(f"{'metric':<18} {'ours 95% interval':>26} {'naive 95% interval':>26}")
    for k in a:
        print(f"{k:<18} {a[k][0]:>12.5f} {a[k][1]:>12.5f}  {b[k][0]:>12.5f} {b[k][1]:>12.5f}")


if __name__ == "__main__":
    main()
