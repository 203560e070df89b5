"""Validity checks of a robustness evaluation: pure decisions from measured numbers (no torch, no I/O).

Each function returns ``(status, message, value)``; the message says what was measured, what it means and
what to do. The numbers come from ``audit.suites.robustness``; the checks follow Carlini et al., "On
Evaluating Adversarial Robustness" (2019), sections 4-5, and AutoAttack's flags (Croce & Hein, 2020).
"""

from __future__ import annotations

from typing import Sequence

Decision = tuple[str, str, float | None]


def perturbation_within_eps(excess: float, tol: float, where: str = "") -> Decision:
    """``excess`` = max over attacked examples of ||x_adv - x|| - eps (measured)."""
    if excess <= tol:
        return ("pass", f"Measured after every attack: the largest ||x_adv - x|| exceeds its eps by {max(excess, 0.0):.2g} "
                        f"at most (tolerance {tol:.0e} for float rounding). The perturbations respect the threat model.",
                excess)
    return ("fail", f"{where or 'An attack'} produced an adversarial input {excess:.3g} beyond its eps (measured "
                    "||x_adv - x||): its robust accuracy is not about the stated threat model. This is a bug in the "
                    "attack or its configuration; report it.", excess)


def within_bounds(out: float | None, tol: float, bounds: Sequence[float] | None) -> Decision:
    """``out`` = how far any adversarial input lies outside the bounds (measured)."""
    if bounds is None:
        return ("pass", "No [model] input_bounds: inputs are unbounded, so there is nothing to stay inside. Set "
                        "input_bounds if your inputs have natural limits (e.g. [0, 1] pixels).", None)
    assert out is not None
    if out <= tol:
        return ("pass", f"Measured: every adversarial input lies inside the input bounds {list(bounds)} (largest "
                        f"excursion {out:.2g}).", out)
    return ("fail", f"An adversarial input lies {out:.3g} outside the input bounds {list(bounds)}: it is not a valid "
                    "input, so the attack is stronger than the threat model allows. Report it.", out)


def gradients_not_masked(n: int, nonfinite: int, zero: int, median_l1: float) -> Decision:
    """Input gradients of the logit margin on n clean-correct examples."""
    frac = zero / n if n else 0.0
    if nonfinite:
        return ("fail", f"{nonfinite} of {n} clean-correct examples have non-finite (NaN/inf) input gradients. Gradient "
                        "attacks then fail silently and the model looks robust. Find the unstable operation (log of 0, "
                        "division) and fix it, or evaluate with a gradient-free attack.", float(nonfinite))
    if frac > 0.5:
        return ("fail", f"The input gradient of the logit margin is exactly zero for {zero} of {n} clean-correct examples: "
                        "the model masks its gradients (a quantiser, rounding, argmax or a detached input layer). "
                        "Gradient attacks cannot move such inputs, so the robust accuracy here is NOT evidence of "
                        "robustness. Evaluate with a gradient-free attack (AutoAttack's Square) or BPDA, or remove the "
                        "non-differentiable step.", frac)
    if zero:
        return ("warn", f"{zero} of {n} clean-correct examples have an exactly zero input gradient of the logit margin: "
                        "those examples may look robust only because gradients vanish. Check them with a gradient-free "
                        "attack.", frac)
    return ("pass", f"Input gradients of the logit margin are finite and non-zero for all {n} checked examples (median "
                    f"L1 norm {median_l1:.3g}).", 0.0)


def accuracy_non_increasing(curves: dict[str, tuple[Sequence[str], Sequence[float]]], rise: float, tol: float,
                            n: int) -> Decision:
    """``curves``: norm -> (eps labels, accuracy of independent, non-nested PGD runs); ``rise`` its largest rise."""
    desc = "; ".join(f"{norm}: " + ", ".join(f"{lab} {a:.3f}" for lab, a in zip(labs, acc))
                     for norm, (labs, acc) in curves.items())
    if rise > tol:
        return ("fail", f"Independent PGD runs (not nested) on {n} clean-correct examples get HIGHER accuracy at a larger "
                        f"eps (rise of {rise:.3f} > {tol}; {desc}). A larger ball contains the smaller one, so the "
                        "attack is failing: too few steps, a bad step size, or gradient masking. Increase steps/restarts "
                        "or use AutoAttack before trusting these numbers.", rise)
    return ("pass", f"Independent PGD runs at each eps (not nested) on {n} clean-correct examples give accuracy that does "
                    f"not rise with eps ({desc}). The reported curves are nested and non-increasing by construction.",
            rise)


def pgd_stronger_than_fgsm(gap: float, eps: str, pgd: float, fgsm: float, tol: float, n: int) -> Decision:
    """``gap`` = the largest (PGD accuracy - FGSM accuracy) over eps, at ``eps``."""
    if gap > tol:
        return ("fail", f"At eps {eps}, PGD leaves {pgd:.3f} of {n} checked examples correct but one-step FGSM only "
                        f"{fgsm:.3f}. A multi-step attack must be at least as strong as its first step: PGD is "
                        "misconfigured (step size, steps) or the loss surface is masked. Fix the attack before reading "
                        "robust accuracy.", gap)
    return ("pass", f"PGD is at least as strong as FGSM at every eps on {n} checked examples (largest PGD-minus-FGSM "
                    f"accuracy {gap:+.3f}, tolerance {tol}).", gap)


def large_eps_reaches_chance(results: Sequence[tuple[str, str, float, float]], margin: float, steps: int,
                             n: int) -> Decision:
    """``results``: (norm, eps label, accuracy at that eps, largest class share) per norm."""
    lines = [f"{norm} eps {lab}: accuracy {acc:.3f} (largest class share {ch:.3f})" for norm, lab, acc, ch in results]
    bad = [line for line, (_, _, acc, ch) in zip(lines, results) if acc > ch + margin]
    worst = max((acc - ch for _, _, acc, ch in results), default=0.0)
    if bad:
        return ("fail", f"At a very large eps, PGD ({steps} steps) on {n} clean-correct examples should bring accuracy "
                        f"down to at most the largest class share + {margin} (every input can then be moved onto the "
                        f"same point), but {'; '.join(bad)}. The attack cannot find adversarial examples even where "
                        "they must exist: gradient masking or a broken attack. Robust accuracy is not trustworthy.",
                worst)
    return ("pass", f"At a very large eps the attack brings accuracy down to chance ({'; '.join(lines)}; margin "
                    f"{margin}): it finds adversarial examples where they must exist.", worst)


def attack_stronger_than_noise(gap: float, where: str, attack: float, noise: float, tol: float) -> Decision:
    """``gap`` = the largest (attack accuracy - accuracy under one random perturbation of the same size)."""
    if gap > tol:
        return ("fail", f"At {where}, random noise of exactly that size leaves accuracy at {noise:.3f} but the attacks "
                        f"leave {attack:.3f}: the attack is weaker than random noise, so it is not following useful "
                        "gradients (masking, wrong loss, or a bug). Do not trust the robust accuracy.", gap)
    return ("pass", f"At every eps the attacks are at least as strong as one random perturbation of the same size "
                    f"(largest attack-minus-noise accuracy {gap:+.3f}, at {where}).", gap)


def pgd_converged(diff: float, where: str, before: float, after: float, steps: int, tol: float, n: int) -> Decision:
    """``diff`` = the largest |accuracy(2k steps) - accuracy(k steps)| over eps, at ``where``."""
    if diff > tol:
        return ("fail", f"Doubling PGD steps ({steps} -> {2 * steps}) changes robust accuracy by {diff:.3f} at {where} "
                        f"({before:.3f} -> {after:.3f}) on {n} checked examples (tolerance {tol}). The attack has not "
                        "converged: the reported robust accuracy overstates robustness. Raise [robustness] steps (and "
                        "restarts) until this passes.", diff)
    return ("pass", f"Doubling PGD steps ({steps} -> {2 * steps}) changes robust accuracy by at most {diff:.3f} (at "
                    f"{where}) on {n} checked examples: the attack has converged.", diff)
