"""Robustness metrics as pure functions of per-example columns (numpy only: no torch, no I/O).

The central column is ``eps_broken``: for each example, the smallest tested epsilon at which an attack
changed its prediction (``0`` for an example the model already gets wrong, ``inf`` if no tested epsilon
broke it). Because the threat-model balls are nested (B(x, e1) is inside B(x, e2) for e1 <= e2), an
example broken at e1 is broken at every larger epsilon, so one number per example holds its whole
accuracy-vs-epsilon curve:

    robust_correct_i(eps) = [eps_broken_i > eps]
    robust_accuracy(eps)  = (1/n) * sum_i [eps_broken_i > eps]

over ALL n examples (clean-wrong ones count as wrong), so robust_accuracy(eps) <= clean_accuracy and the
curve never rises with eps, by construction. Several attacks combine per example by the minimum
(the worst case: an example is robust only if no attack broke it). References: Madry et al., "Towards
Deep Learning Models Resistant to Adversarial Attacks" (ICLR 2018) for robust accuracy; Croce & Hein,
"Reliable evaluation of adversarial robustness..." (ICML 2020) for the per-example worst case over an
ensemble of attacks; Carlini et al., "On Evaluating Adversarial Robustness" (2019) for the curve checks.

Bootstrap intervals. A mean of 0/1 values resampled by rows is Binomial(n, p_hat)/n; a mean of per-example
counts c_i in {0..D} (noise: draws still correct) resampled by rows is a Multinomial(n, cell
frequencies) over the D+1 possible counts (the identity ``audit.metrics.bootstrap`` uses for confusion
matrices; Efron & Tibshirani 1993, ch. 6). Both draw all B replicates in one call, and both equal the row
bootstrap in distribution.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from audit.metrics.bootstrap import percentile_interval, widen_to_exact


def worst_case(*eps_broken: np.ndarray) -> np.ndarray:
    """Per-example worst case over attacks: ``min_a eps_broken_a`` (Croce & Hein 2020, section 5)."""
    return np.minimum.reduce([np.asarray(e, dtype=np.float64) for e in eps_broken])


def robust_correct(eps_broken: np.ndarray, eps: Sequence[float]) -> np.ndarray:
    """(n, E) booleans: example i still correct at eps_k, i.e. ``eps_broken_i > eps_k``."""
    return np.asarray(eps_broken, dtype=np.float64)[:, None] > np.asarray(eps, dtype=np.float64)[None, :]


def robust_accuracy(eps_broken: np.ndarray, eps: Sequence[float]) -> np.ndarray:
    """Robust accuracy at each eps: ``mean_i [eps_broken_i > eps_k]`` over all examples (NaN if none)."""
    rc = robust_correct(eps_broken, eps)
    if len(rc) == 0:
        return np.full(len(eps), np.nan)
    return rc.mean(axis=0)


def attack_success_rate(eps_broken: np.ndarray, clean_correct: np.ndarray, eps: Sequence[float]) -> np.ndarray:
    """Share of clean-correct examples the attack broke at or below eps_k:
    ``sum_i cc_i [eps_broken_i <= eps_k] / sum_i cc_i`` (NaN with no clean-correct example).

    Equals ``1 - robust_accuracy / clean_accuracy``.
    """
    cc = np.asarray(clean_correct, dtype=bool)
    if not cc.any():
        return np.full(len(eps), np.nan)
    return 1.0 - robust_correct(np.asarray(eps_broken)[cc], eps).mean(axis=0)


def median_breaking_eps(eps_broken: np.ndarray, clean_correct: np.ndarray) -> float:
    """Lower median of the smallest breaking epsilon over clean-correct examples.

    The true breaking radius of example i lies in (eps_{k-1}, eps_k] when eps_broken_i = eps_k (interval
    censored by the grid), so the median is reported on the grid: the ceil(m/2)-th smallest value of the m
    clean-correct examples. ``inf`` when more than half survive the largest epsilon (the median is then only
    known to exceed it); NaN with no clean-correct example.
    """
    v = np.sort(np.asarray(eps_broken, dtype=np.float64)[np.asarray(clean_correct, dtype=bool)])
    if len(v) == 0:
        return float("nan")
    return float(v[(len(v) - 1) // 2])


def accuracy_by_code(correct: np.ndarray, codes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, n) per code (class or group) from 0/1 ``correct``; accuracy NaN for an empty code."""
    codes = np.asarray(codes, dtype=np.int64)
    n = np.bincount(codes, minlength=n_codes).astype(np.int64)
    k = np.bincount(codes, weights=np.asarray(correct, dtype=np.float64), minlength=n_codes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, k / np.maximum(n, 1), np.nan), n


def binomial_interval(p_hat: float, n: int, n_boot: int, rng: np.random.Generator,
                      confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of a mean of n 0/1 values (rows resampled = Binomial(n, p_hat)/n);
    never narrower than the Clopper-Pearson exact interval (:func:`widen_to_exact`)."""
    if n_boot <= 0 or n <= 0 or not np.isfinite(p_hat):
        return None
    reps = rng.binomial(n, min(max(p_hat, 0.0), 1.0), size=n_boot) / n
    lo, hi = widen_to_exact(*percentile_interval(reps, confidence), p_hat, n, confidence)
    return float(lo), float(hi)


def noise_accuracy(correct_draws: np.ndarray, draws: int) -> float:
    """Accuracy under noise: ``sum_i c_i / (n * D)`` where c_i is how many of the D draws example i survives."""
    c = np.asarray(correct_draws, dtype=np.float64)
    return float(c.sum() / (len(c) * draws)) if len(c) else float("nan")


def count_mean_interval(correct_draws: np.ndarray, draws: int, n_boot: int, rng: np.random.Generator,
                        confidence: float = 0.95) -> tuple[float, float] | None:
    """Bootstrap interval of ``noise_accuracy`` resampling examples (each keeps its D draws: a cluster
    bootstrap), drawn as Multinomial(n, frequencies of c = 0..D) replicate histograms. At 0 or 1 (every
    draw of every example wrong, or right), where it collapses to a point, the Clopper-Pearson interval
    over the n examples (the clusters) replaces it (:func:`widen_to_exact` with ``only_at_boundary``)."""
    c = np.asarray(correct_draws, dtype=np.int64)
    n = len(c)
    if n_boot <= 0 or n == 0:
        return None
    hist = np.bincount(c, minlength=draws + 1)
    reps = rng.multinomial(n, hist / n, size=n_boot) @ np.arange(draws + 1) / (n * draws)
    lo, hi = widen_to_exact(*percentile_interval(reps, confidence), noise_accuracy(c, draws), n, confidence,
                            only_at_boundary=True)
    return float(lo), float(hi)


def non_increasing_violation(values: Sequence[float]) -> float:
    """Largest rise of a curve that should not rise: ``max_k max(0, v_{k} - min_{j<k} v_j)`` (0 if none)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return 0.0
    run_min = np.minimum.accumulate(v)
    return float(max(0.0, np.max(v[1:] - run_min[:-1])))
