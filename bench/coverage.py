"""Coverage of every interval the report prints, measured on known populations.

    python bench/coverage.py                 # the full table (minutes on 2 vCPUs)
    python bench/coverage.py --quick         # the fast subset that tests/test_coverage.py asserts

For each scenario (a population whose true metric values are known) and sample size n, the harness draws
``datasets`` independent data sets, runs the same code the report runs on each (the performance suite's
``evaluate``, the fairness metrics with the suite's defaults, the robustness interval functions) and
counts how often the printed 95% interval contains the true value. It prints one row per (metric,
scenario, n): the nominal level, the measured coverage (its Monte-Carlo standard error is about
sqrt(0.95 * 0.05 / datasets): 1.0% at 500 data sets), the mean width of the interval, and the width of an
oracle interval, 3.92 times the true standard deviation of the estimate (measured as the spread of the
estimate over the same data sets), with the ratio of the two.

True values: count metrics of a population defined by its cell probabilities are computed exactly from
those probabilities; ranking metrics (AUROC, AP) of continuous scores from one sample of 2,000,000 rows
(their Monte-Carlo error, below 0.001, is far below every interval's width).

Targets (issue #10): coverage >= 93% everywhere; width <= 1.4 x oracle where n per group >= 100.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from audit.metrics import classification as C  # noqa: E402
from audit.metrics import fairness as F  # noqa: E402
from audit.metrics import robustness as R  # noqa: E402

CONFIDENCE = 0.95
POPULATION = 2_000_000


@dataclass
class Row:
    metric: str
    scenario: str
    n: int
    n_min: int                    # the smallest group (fairness) or class (performance) n, for the width target
    coverage: float
    width: float
    oracle: float
    defined: int                  # data sets where the interval existed
    datasets: int

    @property
    def ratio(self) -> float:
        return self.width / self.oracle if self.oracle > 0 else float("inf")


def _summarise(metric: str, scenario: str, n: int, n_min: int, truth: float, est: list[float],
               lo: list[float], hi: list[float]) -> Row:
    e, a, b = (np.asarray(v, dtype=np.float64) for v in (est, lo, hi))
    ok = np.isfinite(a) & np.isfinite(b)
    cover = float(np.mean((a[ok] <= truth + 1e-12) & (truth - 1e-12 <= b[ok]))) if ok.any() else float("nan")
    fin = np.isfinite(e)
    oracle = 3.92 * float(np.std(e[fin], ddof=1)) if fin.sum() > 1 else float("nan")
    return Row(metric, scenario, n, n_min, cover, float(np.mean(b[ok] - a[ok])) if ok.any() else float("nan"),
               oracle, int(ok.sum()), len(e))


# ------------------------------------------------------------------------------------- performance


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def binary_scores(prevalence: float, separation: float) -> Callable[[np.random.Generator, int], tuple]:
    """Binary labels at ``prevalence``; the positive-class score is sigmoid(z) with z ~ N(+-separation/2, 1)
    (a binormal ROC with AUROC = Phi(separation / sqrt 2)), and the prediction is its argmax."""

    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < prevalence).astype(np.int64)
        z = rng.normal(np.where(y == 1, separation / 2, -separation / 2), 1.0)
        p1 = _sigmoid(z)
        return y, np.stack([1 - p1, p1], axis=1)

    return draw


def perfect_binary(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Half positives, every one scored above every negative: every metric is exactly 1."""
    y = (np.arange(n) % 2).astype(np.int64)
    p1 = np.where(y == 1, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.4, n))
    return y, np.stack([1 - p1, p1], axis=1)


def multiclass_rare(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Four classes at prevalence 4%, 32%, 32%, 32%; logits = 2.2 * onehot(y) + N(0, 1) noise."""
    y = rng.choice(4, size=n, p=[0.04, 0.32, 0.32, 0.32])
    z = 2.2 * np.eye(4)[y] + rng.normal(0.0, 1.0, (n, 4))
    p = np.exp(z - z.max(1, keepdims=True))
    return y, p / p.sum(1, keepdims=True)


# (metric name, params) read from the suite's records, and how to compute the truth from (y, probs).
BINARY_METRICS: list[tuple[str, dict[str, str]]] = [
    ("accuracy", {}), ("balanced_accuracy", {}), ("mcc", {}), ("f1", {"average": "macro"}),
    ("precision", {"class": "1"}), ("recall", {"class": "1"}), ("f1", {"class": "1"}),
    ("auroc", {"class": "1"}), ("average_precision", {"class": "1"}),
]
MULTI_METRICS: list[tuple[str, dict[str, str]]] = [
    ("accuracy", {}), ("balanced_accuracy", {}), ("mcc", {}), ("f1", {"average": "macro"}),
    ("recall", {"class": "0"}), ("precision", {"class": "0"}), ("auroc", {"class": "0"}),
    ("auroc", {"average": "macro"}), ("average_precision", {"class": "0"}),
]


def _point(name: str, params: dict[str, str], y: np.ndarray, probs: np.ndarray) -> float:
    """The population value of a performance metric (same functions the suite uses)."""
    k = probs.shape[1]
    pred = probs.argmax(1)
    cm = C.confusion_matrix(y, pred, k)
    if name == "accuracy":
        return float(C.accuracy(cm))
    if name == "balanced_accuracy":
        return float(C.balanced_accuracy(cm))
    if name == "mcc":
        return float(C.mcc(cm))
    if name in ("precision", "recall", "f1"):
        prf = C.precision_recall_f1(cm)[name]
        return float(prf["per_class"][int(params["class"])] if "class" in params else prf[params["average"]])
    fn = C.auroc_binary if name == "auroc" else C.average_precision_binary
    if "class" in params:
        c = int(params["class"])
        return float(fn(y == c, probs[:, c]))
    per = C.one_vs_rest(y, probs, fn)
    return C.average_over_classes(per, np.bincount(y, minlength=k))[params["average"]]


def performance_rows(scenario: str, draw: Callable, metrics: list[tuple[str, dict[str, str]]], ns: list[int],
                     datasets: int, seed: int, cfg: dict[str, Any]) -> list[Row]:
    from audit.suites.performance import evaluate

    pop_y, pop_p = draw(np.random.default_rng(10_000 + seed), POPULATION)
    truth = {(m, tuple(p.items())): _point(m, p, pop_y, pop_p) for m, p in metrics}
    k = pop_p.shape[1]
    names = [str(i) for i in range(k)]
    prevalence = np.bincount(pop_y, minlength=k) / len(pop_y)
    rows = []
    for n in ns:
        rng = np.random.default_rng([seed, n])
        got: dict[tuple, tuple[list, list, list]] = {key: ([], [], []) for key in truth}
        for d in range(datasets):
            y, p = draw(rng, n)
            res = evaluate(y, p.argmax(1), p, names, cfg, seed=d)
            for rec in res.metrics:
                key = (rec.name, tuple(rec.params.items()))
                if key in got:
                    e, lo, hi = got[key]
                    e.append(np.nan if rec.value is None else rec.value)
                    lo.append(np.nan if rec.ci_low is None else rec.ci_low)
                    hi.append(np.nan if rec.ci_high is None else rec.ci_high)
        n_min = int(round(n * prevalence.min()))
        for (m, params), (e, lo, hi) in got.items():
            label = m + ("" if not params else "[" + ",".join(f"{a}={b}" for a, b in params) + "]")
            rows.append(_summarise(label, scenario, n, n_min, truth[(m, params)], e, lo, hi))
    return rows


# ----------------------------------------------------------------------------------------- fairness


@dataclass
class GroupPopulation:
    """Groups of fixed shares; within group g: P(y=1) = base_g, P(yhat=1 | y=1) = tpr_g, P(yhat=1 | y=0) = fpr_g."""

    shares: tuple[float, ...]
    base: tuple[float, ...]
    tpr: tuple[float, ...]
    fpr: tuple[float, ...]

    def cell_probs(self) -> np.ndarray:
        b, t, f = (np.asarray(v, dtype=np.float64) for v in (self.base, self.tpr, self.fpr))
        return np.stack([(1 - b) * (1 - f), (1 - b) * f, b * (1 - t), b * t], axis=1)   # (G, 4) tn fp fn tp

    def sizes(self, n: int) -> np.ndarray:
        return np.maximum(np.round(np.asarray(self.shares) * n).astype(np.int64), 1)

    def draw_counts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.stack([rng.multinomial(m, p) for m, p in zip(self.sizes(n), self.cell_probs())])


FAIR_RATES = ("selection_rate", "tpr", "fpr", "precision")


def fairness_rows(scenario: str, pop: GroupPopulation, ns: list[int], datasets: int, seed: int,
                  cfg: dict[str, Any]) -> list[Row]:
    cells = pop.cell_probs()
    true_rates = F.group_rates(cells)
    true_disp = F.disparities(true_rates)
    rows = []
    for n in ns:
        rng = np.random.default_rng([seed, n, 7])
        est: dict[str, tuple[list, list, list]] = {}

        def put(key: str, v: float, lo: float, hi: float, est: dict = est) -> None:
            e, a, b = est.setdefault(key, ([], [], []))
            e.append(v)
            a.append(lo)
            b.append(hi)

        for d in range(datasets):
            counts = pop.draw_counts(rng, n)
            fr = F.fairness_from_counts(counts, min_group_size=cfg["min_group_size"], reference="highest",
                                        threshold=cfg["four_fifths_threshold"], n_boot=cfg["bootstrap"],
                                        rng=np.random.default_rng([seed, n, d]), confidence=CONFIDENCE,
                                        interval=cfg["interval"])
            for name in F.DISPARITIES:
                x = fr.disparities[name]
                put(name, x.value, x.ci_low, x.ci_high)
            for rate in FAIR_RATES:
                for g in range(len(pop.shares)):
                    put(f"group_{rate}[g{g}]", fr.rates[rate][g], fr.rate_ci[rate][0][g], fr.rate_ci[rate][1][g])
        n_min = int(pop.sizes(n).min())
        for key, (e, a, b) in est.items():
            if key.startswith("group_"):
                rate, g = key[len("group_"):].split("[g")
                truth = float(true_rates[rate][int(g[:-1])])
            else:
                truth = float(true_disp[key])
            if np.isfinite(truth):
                rows.append(_summarise(key, scenario, n, n_min, truth, e, a, b))
    return rows


# --------------------------------------------------------------------------------------- robustness


def robustness_rows(ns: list[int], datasets: int, seed: int, n_boot: int) -> list[Row]:
    """Robust accuracy (a proportion of n examples: :func:`audit.metrics.robustness.binomial_interval`) at
    true values in the interior and at exactly 0 and 1, and noise accuracy (a mean of per-example survival
    counts over D = 5 draws: :func:`count_mean_interval`) with heterogeneous per-example survival."""
    rows = []
    for p in (0.0, 0.3, 0.97, 1.0):
        for n in ns:
            rng = np.random.default_rng([seed, n, int(p * 100)])
            e, a, b = [], [], []
            for _ in range(datasets):
                ph = rng.binomial(n, p) / n
                lo, hi = R.binomial_interval(ph, n, n_boot, rng, CONFIDENCE)
                e.append(ph)
                a.append(lo)
                b.append(hi)
            rows.append(_summarise("robust_accuracy", f"p={p:g}", n, n, p, e, a, b))
    draws = 5
    for label, shape in (("mixed survival", (2.0, 1.0)), ("every draw survives", None)):
        for n in ns:
            rng = np.random.default_rng([seed, n, 99, 0 if shape else 1])
            truth = shape[0] / sum(shape) if shape else 1.0
            e, a, b = [], [], []
            for _ in range(datasets):
                q = rng.beta(*shape, n) if shape else np.ones(n)
                c = rng.binomial(draws, q)
                lo, hi = R.count_mean_interval(c, draws, n_boot, rng, CONFIDENCE)
                e.append(R.noise_accuracy(c, draws))
                a.append(lo)
                b.append(hi)
            rows.append(_summarise("noise_accuracy", label, n, n, truth, e, a, b))
    return rows


# ------------------------------------------------------------------------------------------ calibration


def confidence_model(overconfidence: float) -> Callable[[np.random.Generator, int], tuple]:
    """A binary model whose top-label confidence c is 0.5 + Beta(5, 1.5)/2 and whose prediction is right
    with probability c - overconfidence * 0.6 * (c - 0.5): calibrated at 0, overconfident above."""

    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        c = 0.5 + rng.beta(5.0, 1.5, n) / 2
        right = rng.random(n) < c - overconfidence * 0.6 * (c - 0.5)
        return np.stack([1 - c, c], axis=1), right.astype(np.int64)   # class 1 predicted; label 1 if right

    return draw


def calibration_rows(ns: list[int], datasets: int, seed: int, draws: int, levels: tuple[float, ...]) -> list[Row]:
    """ECE (top-label, 15 equal-width bins) and its interval from
    :func:`audit.metrics.calibration.ece_estimate` (what the calibration suite and the fairness suite's
    group ECE print), against the population ECE of the same bins; also the debiased estimate's bias."""
    from audit.metrics import calibration as K

    rows = []
    for over in levels:
        draw = confidence_model(over)
        pop_p, pop_y = draw(np.random.default_rng(20_000 + seed), POPULATION)
        truth = K.ece(pop_p, pop_y, 15)
        label = "calibrated" if over == 0 else f"overconfident ({over:g}), true ECE {truth:.3f}"
        for n in ns:
            rng = np.random.default_rng([seed, n, int(over * 100), 3])
            e, a, b = [], [], []
            for _ in range(datasets):
                p, y = draw(rng, n)
                est = K.ece_estimate(p, y, 15, "uniform", "top_label", draws, rng, CONFIDENCE)
                e.append(est.ece)
                a.append(est.ci_low)
                b.append(est.ci_high)
            rows.append(_summarise("ece[equal_width,top_label]", label, n, n, truth, e, a, b))
    return rows


# ------------------------------------------------------------------------------------------ driver

FAIR_SCENARIOS: dict[str, GroupPopulation] = {
    "two groups 70/30, interior rates": GroupPopulation((0.7, 0.3), (0.4, 0.3), (0.8, 0.7), (0.1, 0.15)),
    "four equal groups, no disparity": GroupPopulation((0.25,) * 4, (0.4,) * 4, (0.75,) * 4, (0.2,) * 4),
    "TPR 1.0 vs 0.97, FPR 0 vs 0": GroupPopulation((0.5, 0.5), (0.5, 0.5), (1.0, 0.97), (0.0, 0.0)),
    "selection 0.002 vs 0.012": GroupPopulation((0.5, 0.5), (0.002, 0.012), (1.0, 1.0), (0.0, 0.0)),
}


def all_rows(quick: bool, datasets: int | None = None, seed: int = 0,
             parts: tuple[str, ...] = ("performance", "fairness", "robustness", "calibration")) -> list[Row]:
    """The whole table (quick: the subset the test asserts, fewer data sets and sizes)."""
    from audit.suites.fairness import SECTION as FAIR
    from audit.suites.performance import SECTION as PERF

    perf_cfg = PERF.defaults()
    fair_cfg = FAIR.defaults()
    if quick:  # about 15 s on 2 vCPUs: the boundary cases issue #10 found, one interior case each
        d = datasets or 200
        rows = performance_rows("binary, AUROC 0.967", binary_scores(0.5, 2.6), BINARY_METRICS, [60], d * 3 // 4,
                                seed, perf_cfg)
        rows += performance_rows("4 classes, one at 4%", multiclass_rare, MULTI_METRICS, [300], d * 2 // 5, seed,
                                 perf_cfg)
        for name in ("TPR 1.0 vs 0.97, FPR 0 vs 0", "two groups 70/30, interior rates"):
            rows += fairness_rows(name, FAIR_SCENARIOS[name], [240], d, seed, fair_cfg)
        rows += robustness_rows([40], d, seed, 1000)
        rows += calibration_rows([500], d, seed, 500, (0.0, 0.3))
        return rows
    d = datasets or 500
    rows = []
    if "performance" in parts:
        rows += performance_rows("binary, prevalence 0.3, AUROC 0.85", binary_scores(0.3, 1.47), BINARY_METRICS,
                                 [30, 100, 300, 1000], d, seed, perf_cfg)
        rows += performance_rows("binary, AUROC 0.967", binary_scores(0.5, 2.6), BINARY_METRICS, [60, 300], d,
                                 seed, perf_cfg)
        rows += performance_rows("binary, perfect separation", perfect_binary, BINARY_METRICS, [20, 100], d, seed,
                                 perf_cfg)
        rows += performance_rows("4 classes, one at 4%", multiclass_rare, MULTI_METRICS, [300, 1000], d, seed,
                                 perf_cfg)
    if "fairness" in parts:
        for name, pop in FAIR_SCENARIOS.items():
            ns = [2000, 10000] if "0.002" in name else [120, 400, 2000]
            rows += fairness_rows(name, pop, ns, d, seed, fair_cfg)
    if "robustness" in parts:
        rows += robustness_rows([30, 300], d, seed, 1000)
    if "calibration" in parts:
        rows += calibration_rows([100, 500, 2000], d, seed, 1000, (0.0, 0.1, 0.3, 1.0))
    return rows


def format_table(rows: list[Row]) -> str:
    out = ["| metric | scenario | n | n min | nominal | coverage | mean width | oracle width | ratio |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flag = " **<93%**" if r.coverage < 0.93 else ""
        wide = " **>1.4**" if r.n_min >= 100 and r.oracle > 0 and r.ratio > 1.4 else ""
        undefined = f" ({r.datasets - r.defined} undefined)" if r.defined < r.datasets else ""
        ratio = f"{r.ratio:.2f}" if r.oracle > 0 else "— (estimate constant)"
        out.append(f"| {r.metric} | {r.scenario} | {r.n} | {r.n_min} | 95% | {r.coverage:.1%}{flag}{undefined} | "
                   f"{r.width:.4f} | {r.oracle:.4f} | {ratio}{wide} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the fast subset (what the test asserts)")
    ap.add_argument("--datasets", type=int, default=None, help="data sets per row (default 500; quick 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="performance,fairness,robustness,calibration",
                    help="comma-separated subset of the full table")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    t0 = time.perf_counter()
    rows = all_rows(args.quick, args.datasets, args.seed, tuple(args.parts.split(",")))
    print(format_table(rows))
    below = [r for r in rows if r.coverage < 0.93]
    wide = [r for r in rows if r.n_min >= 100 and r.oracle > 0 and r.ratio > 1.4]
    print(f"\n{len(rows)} rows in {time.perf_counter() - t0:.0f} s; below 93% coverage: {len(below)}; "
          f"wider than 1.4 x oracle at n per group >= 100: {len(wide)}")


if __name__ == "__main__":
    main()
