"""Validity checks of a robustness evaluation: pure decisions from measured numbers (no torch, no I/O).

Each function returns ``(status, message, value)``; the message says what was measured, what it means and
what to do. The numbers come from ``audit.suites.robustness``; the checks follow Carlini et al., "On
Evaluating Adversarial Robustness" (2019), sections 4-5, and AutoAttack's flags (Croce & Hein, 2020).
"""

from __future__ import annotations

from typing import Sequence

Decision = tuple[str, str, float | None]


def perturbation_within_eps(excess: float, tol: float, where: str = "", units: str = "") -> Decision:
    """``excess`` = max over attacked examples of ||x_adv - x|| - eps (measured; in ``units`` when the
    tabular threat model declares them: the norm of (x_adv - x) / scale over the perturbed features)."""
    how = f" (measured in {units})" if units else ""
    if excess <= tol:
        return ("pass", f"Measured after every attack: the largest ||x_adv - x||{how} exceeds its eps by "
                        f"{max(excess, 0.0):.2g} at most (tolerance {tol:.0e} for float rounding). The perturbations "
                        "respect the threat model.", excess)
    return ("fail", f"{where or 'An attack'} produced an adversarial input {excess:.3g} beyond its eps (measured "
                    "||x_adv - x||): its robust accuracy is not about the stated threat model. This is a bug in the "
                    "attack or its configuration; report it.", excess)


def frozen_features_unchanged(change: float, what: str, noise: float = 0.0) -> Decision:
    """``change`` / ``noise`` = the largest |x' - x| measured on a feature the threat model freezes, over
    every adversarial input / every noisy copy (both must be exactly 0); ``what``: those features, in words."""
    if change == 0.0 and noise == 0.0:
        return ("pass", f"Measured on every adversarial input and every noisy copy: the features that must not change "
                        f"({what}) are exactly as in the clean input.", 0.0)
    which = "An adversarial input" if change > 0 else "A noisy copy"
    return ("fail", f"{which} changes a feature that must not change ({what}) by {max(change, noise):.3g}: the "
                    "perturbation left the declared threat model, and the accuracy measured under it is not about it. "
                    "This is a bug; report it.", max(change, noise))


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


def gradients_not_masked(n: int, blind: dict[str, int], nonfinite: dict[str, int], losses: dict[str, list[str]],
                         saturated: int) -> Decision:
    """The input gradients of the losses each attack optimises, on n clean-correct examples it attacks.

    ``losses``: attack -> the losses it maximises; ``blind[attack]``: examples on which the gradient of
    every one of them is exactly zero (the attack cannot take a step); ``nonfinite[attack]``: examples with a
    NaN/inf gradient in any of them; ``saturated``: examples on which plain float32 cross-entropy has an
    exactly zero gradient (a saturated softmax), which our attacks' losses are immune to.
    """
    what = "; ".join(f"{a}: {', '.join(ls)}" for a, ls in losses.items())
    sat = (f" Plain float32 cross-entropy would have an exactly zero gradient on {saturated} of them (a softmax "
           "saturated to 1); the losses above do not underflow, so that does not blind these attacks"
           + (" (AutoAttack's APGD-CE does use plain cross-entropy: its other components, margin-type or "
              "gradient-free, cover those examples)" if "autoattack" in losses else "") + "." if saturated else "")
    bad_nf = {a: k for a, k in nonfinite.items() if k}
    if bad_nf:
        a, k = max(bad_nf.items(), key=lambda t: t[1])
        return ("fail", f"{k} of {n} clean-correct examples have non-finite (NaN/inf) input gradients of the losses "
                        f"{a} optimises ({what}). Gradient attacks then fail silently and the model looks robust. "
                        "Find the unstable operation (log of 0, division, overflowing logits) and fix it, or evaluate "
                        "with a gradient-free attack (AutoAttack's Square).", float(k) / n)
    worst_attack, worst = max(blind.items(), key=lambda t: t[1]) if blind else ("", 0)
    frac = worst / n if n else 0.0
    if frac > 0.5:
        return ("fail", f"{worst_attack} cannot move {worst} of {n} clean-correct examples: the input gradient of every "
                        f"loss it optimises ({', '.join(losses[worst_attack])}) is exactly zero there. The losses do "
                        "not saturate, so the model itself hides its gradients: a non-differentiable layer (a "
                        "quantiser, rounding, argmax, a lookup) or a detached input. Its robust accuracy is NOT "
                        "evidence of robustness. Evaluate with a gradient-free attack (AutoAttack's Square), with "
                        "BPDA (a differentiable stand-in for the layer on the backward pass), or remove the "
                        "non-differentiable step." + sat, frac)
    if worst:
        return ("warn", f"{worst_attack} sees an exactly zero input gradient of every loss it optimises "
                        f"({', '.join(losses[worst_attack])}) on {worst} of {n} clean-correct examples: those may look "
                        "robust only because the model hides its gradient there (a non-differentiable step). Check "
                        "them with a gradient-free attack (AutoAttack's Square)." + sat, frac)
    return ("pass", f"Measured on {n} clean-correct examples at the clean input: the input gradients of the losses the "
                    f"attacks optimise ({what}) are finite and non-zero on every one." + sat, 0.0)


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


def large_eps_reaches_chance(results: Sequence[tuple[str, str, float, float, int]], margin: float, steps: int,
                             n: int) -> Decision:
    """``results``: (norm, eps label, accuracy at that eps, largest class share, examples the large-eps PGD
    attacked) per norm. An example counts as broken at the large eps when a configured attack broke it at
    an eps up to it (that adversarial input lies inside the large ball) or the large-eps PGD did; the
    large-eps PGD runs only on the rest."""
    lines = [f"{norm} eps {lab}: accuracy {acc:.3f} (largest class share {ch:.3f})" for norm, lab, acc, ch, _ in results]
    bad = [line for line, (_, _, acc, ch, _) in zip(lines, results) if acc > ch + margin]
    worst = max((acc - ch for _, _, acc, ch, _ in results), default=0.0)
    how = "; ".join(f"{norm}: {n - k} of {n} broken by the sweep within that ball, PGD ({steps} steps) at the large "
                    f"eps on the other {k}" for norm, _, _, _, k in results)
    if bad:
        return ("fail", f"At a very large eps the attacks on {n} clean-correct examples should bring accuracy down to "
                        f"at most the largest class share + {margin} (every input can then be moved onto the same "
                        f"point), but {'; '.join(bad)} ({how}). The attack cannot find adversarial examples even "
                        "where they must exist: gradient masking or a broken attack. Robust accuracy is not "
                        "trustworthy.", worst)
    return ("pass", f"At a very large eps the attacks bring accuracy down to chance ({'; '.join(lines)}; margin "
                    f"{margin}; {how}): they find adversarial examples where they must exist.", worst)


def attack_stronger_than_noise(gap: float, where: str, attack: float, noise: float, tol: float) -> Decision:
    """``gap`` = the largest (attack accuracy - accuracy under one random perturbation of the same size)."""
    if gap > tol:
        return ("fail", f"At {where}, random noise of exactly that size leaves accuracy at {noise:.3f} but the attacks "
                        f"leave {attack:.3f}: the attack is weaker than random noise, so it is not following useful "
                        "gradients (masking, wrong loss, or a bug). Do not trust the robust accuracy.", gap)
    return ("pass", f"At every eps the attacks are at least as strong as one random perturbation of the same size "
                    f"(largest attack-minus-noise accuracy {gap:+.3f}, at {where}).", gap)


def pgd_converged(diff: float, where: str, before: float, after: float, steps: int, restarts: int,
                  losses: Sequence[str], targets: int, tol: float, n: int) -> Decision:
    """``diff`` = the largest share of the n checked examples that the configured PGD sweep left standing
    and a stronger PGD (2 x steps on the same schedule, one more fresh random restart, every loss) breaks,
    over eps, at ``where``; ``before``/``after`` = the PGD sweep's robust accuracy there without/with the
    stronger attack's breaks (nested: a break at a smaller eps counts at every larger one)."""
    names = [f"targeted to {targets} classes" if x == "targeted" else x for x in losses]
    strong = (f"{2 * steps} steps, {restarts + 1} fresh random restart(s) with each of {', '.join(names)}")
    if diff > tol:
        return ("fail", f"A stronger PGD ({strong}) breaks {diff:.3f} of the {n} checked examples that the configured "
                        f"PGD ({steps} steps, {restarts} restart(s) per loss) left standing, at {where} (robust accuracy "
                        f"{before:.3f} -> {after:.3f}; tolerance {tol}). The attack has not converged: the reported "
                        "robust accuracy overstates robustness. Raise [robustness] steps and restarts until this passes, "
                        "or add 'autoattack' to attacks.", diff)
    return ("pass", f"A stronger PGD ({strong}) breaks at most {diff:.3f} of the {n} checked examples beyond what the "
                    f"configured PGD broke (at {where}: {before:.3f} -> {after:.3f}; tolerance {tol}): no sign that "
                    "more PGD would lower robust accuracy.", diff)


def reference_attack_agrees(diff: float, where: str, before: float, after: float, reference: str, tol: float,
                            n: int) -> Decision:
    """``diff`` = the largest share, over eps, of the n checked examples that the configured attacks reported
    robust and the reference attack breaks; ``before``/``after`` = the reported robust accuracy on them
    without/with those breaks."""
    if diff > tol:
        return ("fail", f"The reference attack ({reference}) breaks {diff:.3f} of the {n} checked examples that the "
                        f"configured attacks reported robust, at {where} (robust accuracy {before:.3f} -> {after:.3f}; "
                        f"tolerance {tol}). The reported robust accuracy overstates robustness. Add 'autoattack' to "
                        "[robustness] attacks (the standard preset is the reference evaluation), or raise steps and "
                        "restarts until this passes.", diff)
    return ("pass", f"The reference attack ({reference}) breaks at most {diff:.3f} of the {n} checked examples beyond "
                    f"what the configured attacks broke (at {where}: {before:.3f} -> {after:.3f}; tolerance {tol}).",
            diff)


def eps_within_input_range(too_large: Sequence[str], bounds: Sequence[float] | None) -> Decision:
    """``too_large``: the eps (``norm eps``) at which the ball already holds every valid input."""
    if bounds is None:
        return ("pass", "No [model] input_bounds: every eps is meaningful for unbounded inputs.", None)
    if too_large:
        return ("warn", f"{', '.join(too_large)}: an eps this large (at least the whole input range "
                        f"{list(bounds)}) lets an attack replace the input by any other valid input, so robust "
                        "accuracy there is at most the largest class share (a constant model's) and says nothing "
                        "about the model. Check the units of eps "
                        "(fractions of the input range, e.g. \"8/255\" for [0, 1] images).", float(len(too_large)))
    return ("pass", f"Every eps is smaller than the input range {list(bounds)}.", 0.0)
