"""Robustness suite: adversarial robustness (FGSM, PGD-Linf/L2, AutoAttack through torchattacks) over
epsilon sweeps that reuse work, noise robustness, and the checks that make the numbers trustworthy.

What runs. Only clean-correct examples are attacked. For each norm, the epsilons are swept in ascending
order over nested balls: each larger epsilon attacks only the survivors of the smaller ones
(``audit.attacks.sweep``). Robust accuracy is the per-example worst case over all attacks of a norm, so
robust <= clean by construction. Noise robustness draws several seeded noisy copies of every example at
each level. Then the validity checks (below) test the evaluation itself.

Per-example columns added to the table (``examples.npz``):

  robust:<attack>:<norm>:eps_broken  float64  smallest tested eps at which <attack> (fgsm | pgd |
                                              autoattack) broke the example; 0 if clean-wrong; inf if
                                              never broken
  robust:worst:<norm>:eps_broken     float64  the minimum of the above over the attacks of <norm>
  noise:<kind>:<level>:correct       int64    of the noise_draws noisy copies at that level, how many
                                              the model still classifies correctly
  check:*                                     the validity checks' per-example facts (random-perturbation
                                              baseline on every row; on the checks' examples, marked by
                                              check:subset: gradients per loss; the independent PGD's
                                              re-runs per eps (check:pgd_rerun, on the examples the sweep
                                              broke at a smaller eps); the stronger PGD's breaking eps
                                              (check:pgd_stronger); the reference attack per eps; FGSM;
                                              large eps, on what no attack broke within it); blank
                                              (False / NaN) elsewhere

Each column's metadata (``ExampleTable.column_meta``, ``colmeta:<column>`` in examples.npz) says what it
holds (kind, attack, norm, eps labels and values, noise level, draws).

Metric records and how a gate names them (params are compared as strings; an eps or level is named as
the recipe writes it: "8/255" for a fraction string, 0.1 or "0.1" for a number; see
``audit.attacks.config``):

  clean_accuracy               {} | {class} | {attribute, group}
  robust_accuracy              {norm, eps} (worst case over the attacks) | {attack, norm, eps}
                               | {norm, eps, class} | {norm, eps, attribute, group}
  attack_success_rate          {norm, eps} | {attack, norm, eps}
  median_breaking_eps          {norm} | {attack, norm}
  noise_accuracy               {noise, level} | {noise, level, class} | {noise, level, attribute, group}

e.g. ``metric = "robust_accuracy"``, ``params = { norm = "linf", eps = "8/255" }``.

Validity checks (suite "robustness"; a failure exits 4 unless [validity] downgrade lists it):
perturbation_within_eps, adversarial_within_bounds, eps_within_input_range (warns only),
gradients_not_masked, accuracy_non_increasing_in_eps, pgd_stronger_than_fgsm, large_eps_reaches_chance,
attack_stronger_than_noise, pgd_converged, reference_attack_agrees. The core
checks logits_not_probabilities and inference_deterministic (``audit.runner``) run for every suite.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from audit.attacks.config import (
    AUTOATTACK_PRESETS,
    ATTACKS,
    LOSSES,
    NORMS,
    SCHEDULES,
    AttackConfig,
    Eps,
    autoattack_components,
    parse_eps_by_norm,
    parse_noise,
    parse_eps,
    parse_one_eps_by_norm,
    parse_step_size_by_norm,
    to_eps,
    to_step_size,
)
from audit.attacks.losses import LOSS_DOC
from audit.errors import RecipeError
from audit.metrics import robustness as R
from audit.recipe.fields import Field, FieldError, Section, p_bool, p_float, p_int, p_list, p_str
# _v: full precision for metric records; _r: rounded, for tables shown to people
from audit.report.records import SuiteResult, finite_or_none as _v, rounded as _r
from audit.seeding import rng
from audit.suites import gallery
from audit.suites import robustness_checks as K
from audit.engine.table import Part
from audit.suites.base import UNIT, Facts, FillContext, MetricSpec, Suite

DEFAULT_EPS = {"linf": ["2/255", "4/255", "8/255", "16/255"], "l2": [0.25, 0.5, 1.0]}
DEFAULT_NOISE = {"gaussian": [0.05, 0.1, 0.2, 0.3], "uniform": [0.1, 0.2, 0.3, 0.5],
                 "salt_pepper": [0.02, 0.05, 0.1, 0.2]}


def _p_norms(v: Any) -> list[str]:
    if isinstance(v, str):
        v = [v]
    return p_list(p_str(NORMS), "norms", min_len=1, unique=True)(v)


def _p_feature_scale(v: Any) -> Any:
    """'std' | 'range' | a list of numbers > 0 (one per feature) | a table column -> number > 0."""
    from audit.attacks.threat import SCALE_SOURCES

    if isinstance(v, str):
        if v not in SCALE_SOURCES:
            raise FieldError(f"expected {' or '.join(repr(x) for x in SCALE_SOURCES)}, a list of numbers or a table "
                             f"column -> number, got {v!r}")
        return v
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            try:
                out[str(k)] = p_float(0.0, lo_open=True)(x)
            except FieldError as e:
                raise FieldError(f"column {k!r}: {e}") from None
        if not out:
            raise FieldError("the table is empty: name each perturbed feature's scale, or write \"std\"")
        return out
    return p_list(p_float(0.0, lo_open=True), "numbers > 0", min_len=1)(v)


def _p_columns(v: Any) -> list[Any]:
    """A list of column names (strings) or feature indices (integers >= 0)."""
    if not isinstance(v, list):
        raise FieldError("expected a list of column names or feature indices")
    out = []
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, (str, int)) or (isinstance(x, int) and x < 0):
            raise FieldError(f"item {i}: expected a column name or an index >= 0, got {x!r}")
        out.append(x)
    return out


def _post(c: dict[str, Any]) -> None:
    """Cross-field checks; normalises eps and large_eps to tables by norm (kept JSON-able in the recipe)."""
    norms = c["norm"] if isinstance(c["norm"], list) else [c["norm"]]
    eps = c["eps"]
    if isinstance(eps, list):
        if len(norms) > 1:
            raise FieldError('with several norms, eps is a table by norm, e.g. eps = { linf = ["8/255"], l2 = [0.5] }')
        c["eps"] = {norms[0]: eps}
    elif isinstance(eps, dict):
        for n in norms:
            if n not in eps:
                raise FieldError(f"eps has no list for norm {n!r} (norm = {norms})")
        for n in eps:
            if n not in norms:
                raise FieldError(f"eps has a list for norm {n!r}, which is not run (norm = {norms})")
        c["eps"] = {n: eps[n] for n in norms}
    if not c["random_start"] and c["restarts"] > 1:
        raise FieldError(f"restarts = {c['restarts']} with random_start = false would repeat the same deterministic "
                         "run: set random_start = true (each restart then gets a fresh seeded start) or restarts = 1")
    ss = c["step_size"]
    if isinstance(ss, dict):
        for n in ss:
            if n not in norms:
                raise FieldError(f"step_size has a value for norm {n!r}, which is not run (norm = {norms})")
    le = c["large_eps"]
    if le is not None and not isinstance(le, dict):
        if len(norms) > 1:
            raise FieldError("with several norms, large_eps is a table by norm, e.g. { linf = 0.5, l2 = 4.0 }")
        c["large_eps"] = {norms[0]: le}
    elif isinstance(le, dict):
        for n in le:
            if n not in norms:
                raise FieldError(f"large_eps has a value for norm {n!r}, which is not run (norm = {norms})")


def settings(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """The recipe section (validated, JSON-able) as the suite uses it: epsilons and levels as ``Eps``."""
    c = dict(cfg)
    try:
        _post(c)
    except FieldError as e:
        raise RecipeError(f"{where}: [robustness] {e}") from None
    eps = c["eps"] or {n: parse_eps_by_norm(DEFAULT_EPS[n]) for n in c["norm"]}
    c["eps"] = {n: to_eps(eps[n] if n in eps else parse_eps_by_norm(DEFAULT_EPS[n])) for n in c["norm"]}
    noise = DEFAULT_NOISE if c["noise"] is None else c["noise"]
    c["noise"] = {k: to_eps(v) for k, v in parse_noise(noise).items()}
    c["large_eps"] = {k: parse_eps(v) for k, v in (c["large_eps"] or {}).items()}
    ss = c["step_size"]
    c["step_size"] = {n: to_step_size(ss.get(n) if isinstance(ss, dict) else ss) for n in c["norm"]}
    return c


SECTION = Section(
    "robustness",
    "Adversarial robustness (FGSM, PGD-Linf/L2, AutoAttack, via torchattacks) over an epsilon sweep on nested "
    "balls, noise robustness (Gaussian, uniform, salt-and-pepper), per class and per sensitive group, and "
    "validity checks of the evaluation (perturbation size and bounds measured, eps beyond the input range "
    "(a warning only), the input gradients of the losses the attacks use, monotone curves, PGD vs FGSM, "
    "large-epsilon sanity, attack vs random noise, PGD against a stronger PGD, and the configured attacks "
    "against AutoAttack's APGD-CE + APGD-T, skipped with a warning without input_bounds). Attacks see inputs "
    "in their natural bounds ([model] input_bounds); normalisation stays inside the model.",
    (
        Field("attacks", "list of 'fgsm' | 'pgd' | 'autoattack'",
              "Attacks to run; robust accuracy is the per-example worst case over them. fgsm is Linf only. "
              "autoattack needs image inputs (N, C, H, W) and [model] input_bounds.",
              default=["fgsm", "pgd"], parse=p_list(p_str(ATTACKS), "attack names", min_len=1, unique=True),
              example='["fgsm", "pgd"]'),
        Field("norm", "'linf' | 'l2' or a list of both", "Threat model(s): the norm of the perturbation ball.",
              default=["linf"], parse=_p_norms, example='"linf"'),
        Field("eps", "list of numbers or fraction strings; with several norms a table by norm",
              'Perturbation budgets, e.g. ["2/255", "8/255"] (fractions are kept as written: gates name an '
              'eps exactly as this list does). Default: linf ["2/255", "4/255", "8/255", "16/255"]; '
              "l2 [0.25, 0.5, 1.0].", parse=parse_eps_by_norm, example='["2/255", "4/255", "8/255"]'),
        Field("steps", "integer >= 1", "PGD iterations per run.", default=10, parse=p_int(1), example="10"),
        Field("losses", "list of 'ce' | 'margin' | 'targeted'",
              "Losses PGD maximises; every restart runs each of them in turn on the examples still unbroken, "
              "and robust accuracy is the per-example worst case over all runs. ce = " + LOSS_DOC["ce"] + "; "
              "margin = " + LOSS_DOC["margin"] + "; targeted = " + LOSS_DOC["targeted"] + ". None of them "
              "saturates on confident models (a softmax probability that rounds to 1 in float32 gives plain "
              "cross-entropy an exactly zero gradient). The default runs ce and then the targeted margin: an "
              "untargeted loss follows the class closest now, which is not always the class easiest to reach "
              "(on a 10-class linear model it overstated robust accuracy by 1-2% where the targeted margin is "
              "exact). Cost: 1 + targets runs per example that survives; [\"ce\", \"margin\"] costs 2 and is "
              "weaker (on the digits CNNs it overstated robust accuracy by up to 0.024-0.042, the default by "
              "0.007-0.024; BENCHMARKS.md). FGSM always uses ce.", default=["ce", "targeted"],
              parse=p_list(p_str(LOSSES), "loss names", min_len=1, unique=True), example='["ce", "targeted"]'),
        Field("targets", "integer >= 1",
              "With the 'targeted' loss: how many target classes (the highest clean logits other than the "
              "label; at most num_classes - 1), one run each per restart.", default=3, parse=p_int(1),
              example="3"),
        Field("step_size", "'auto', a number, a fraction of eps such as \"0.25 * eps\" or \"eps / 4\", or a table "
              "by norm of those",
              "PGD step size (the first one, before step_schedule shrinks it). 'auto' = 1 * eps (the first step; then eps / 2, eps / 4) for every eps "
              "and norm. A fraction of eps scales with each eps of the sweep; a plain number is the same "
              "absolute step at every eps. A table gives each norm its own, e.g. { linf = \"eps / 4\", "
              "l2 = \"0.2 * eps\" } (a norm left out gets 'auto').", default=None,
              parse=parse_step_size_by_norm, example='"auto"'),
        Field("step_schedule", "'decay' | 'constant'",
              "decay: the step is halved after half of the steps and again after three quarters (10 steps: "
              "5 x step, 2 x step/2, 3 x step/4; 20 steps: 10, 5 and 5), so the strides stay fractions of eps and "
              "more steps mean more iterations at each stride, not the same walk in smaller strides (as with "
              "2.5 * eps / steps). constant: every step the same.", default="decay", parse=p_str(SCHEDULES),
              example='"decay"'),
        Field("restarts", "integer >= 1",
              "PGD random restarts per loss (only examples still unbroken are restarted). More than 1 needs "
              "random_start = true.", default=1, parse=p_int(1), example="1"),
        Field("random_start", "true | false", "PGD starts at a seeded random point of the ball (per example).",
              default=True, parse=p_bool),
        Field("autoattack", "'standard' | 'cheap'",
              "AutoAttack configuration. standard = the reference version: APGD-CE (100 steps), APGD-T (100 "
              "steps, 9 target classes), FAB-T (100 steps, 9 targets), Square (5000 queries). cheap = a "
              "screening preset (APGD-CE 20 steps, APGD-T 20 steps with 3 targets, Square 1000 queries, no "
              "FAB-T): an upper bound on what standard would report. The report lists every setting that ran.",
              default="standard", parse=p_str(tuple(AUTOATTACK_PRESETS)), example='"standard"'),
        Field("autoattack_chunk", "integer >= 1",
              "AutoAttack runs on fixed chunks of this many examples (in data order, within a [run] block), each "
              "seeded from the master seed and its first global index: results do not depend on the number of "
              "torchrun ranks, nor on batch_size when [run] block_rows is set (its default follows the batch "
              "size).", default=128,
              parse=p_int(1)),
        Field("noise", "table kind -> list of levels",
              "Noise robustness: gaussian (std), uniform (half-width), salt_pepper (fraction of input values "
              "set to a bound; needs input_bounds: without them it is skipped, and the report's configuration "
              "says so). Levels are in feature_scale's units on tabular data. An empty table turns it off. "
              "Default: gaussian [0.05, 0.1, 0.2, 0.3], uniform [0.1, 0.2, 0.3, 0.5], salt_pepper [0.02, 0.05, "
              "0.1, 0.2].",
              default=None, parse=parse_noise, example="{ gaussian = [0.05, 0.1, 0.2], salt_pepper = [0.05] }"),
        Field("feature_scale", "'std' | 'range' | list of numbers > 0 | table column -> number > 0",
              "Tabular (N, F) inputs: the unit of eps and of the noise levels, per feature. With scale s_j, Linf "
              "lets feature j move by at most eps * s_j, and L2 bounds sqrt(sum_j (delta_j / s_j)^2) <= eps over "
              "the perturbed features; gaussian/uniform noise of level l adds l * s_j * z_j. 'std': each feature's "
              "standard deviation over the evaluated data (eps 0.1 = a tenth of a standard deviation); 'range': "
              "its max - min there; a list: one value per model input, in input order (one-hot columns' values "
              "are ignored); a table: by column name (a categorical column's name covers its one-hot columns). "
              "Default: raw units (a warning says so when the features' spreads differ more than 10-fold). A "
              "feature with zero spread under 'std'/'range' is not perturbed. Not with AutoAttack (torchattacks' "
              "components work in a box with one eps everywhere); the reference-attack check is then skipped.",
              parse=_p_feature_scale, example='"std"'),
        Field("immutable", "list of column names or feature indices",
              "Tabular inputs: features that attacks and noise never change (e.g. age, a contract's start "
              "date). A categorical column's name freezes all its one-hot columns. One-hot columns ([data] "
              "categorical) are never perturbed anyway: a fraction of an indicator is not an input a row can "
              "have. Validity checks confirm on every adversarial input that these stay unchanged.",
              default=[], parse=_p_columns, example='["age"]'),
        Field("perturb_sensitive", "true | false",
              "Tabular inputs: whether the sensitive attributes that are also model features ([data] sensitive "
              "and features) may be perturbed. Default false: they stay as they are, so robust accuracy is about "
              "changes to the other features (changing someone's age or sex to flip a decision is a fairness "
              "question: see the fairness suite).", default=False, parse=p_bool),
        Field("noise_draws", "integer >= 1", "Seeded noisy copies of each example per level.", default=5,
              parse=p_int(1), example="5"),
        Field("batch_size", "integer >= 1", "Examples per attack batch (default: [run] batch_size).",
              parse=p_int(1), example="128"),
        Field("bootstrap", "integer >= 0", "Bootstrap replicates for the 95% intervals (0: none). Robust accuracy's and success rates' "
              "intervals are widened to the Clopper-Pearson exact interval where that is wider (near 0 and 1, "
              "where the bootstrap is too narrow or collapses to a point); noise accuracy's (a mean over "
              "draws) gets the exact interval over its examples only at exactly 0 or 1.", default=1000,
              parse=p_int(0), example="1000"),
        Field("confidence", "number in [0.5, 0.999]", "Level of the bootstrap intervals.", default=0.95,
              parse=p_float(0.5, 0.999)),
        Field("check_examples", "integer >= 10",
              "Clean-correct examples (the first, in data order) used by the costlier validity checks.",
              default=200, parse=p_int(10), example="200"),
        Field("large_eps", "number or fraction; with several norms a table by norm",
              "Epsilon at which an attack must bring accuracy down to chance. Default: half the input range "
              "(Linf; e.g. 0.5 for [0, 1] images: every input can then be moved to the same mid-grey input) or "
              "that times sqrt(input size) (L2). Without input bounds and without this key the check is skipped.",
              parse=parse_one_eps_by_norm, example="0.5"),
        Field("chance_margin", "number in [0, 1]",
              "large_eps_reaches_chance passes when accuracy at large_eps <= largest class share + this margin.",
              default=0.1, parse=p_float(0.0, 1.0)),
        Field("convergence_tolerance", "number in [0, 1]",
              "pgd_converged fails when a stronger PGD (twice the steps on the same schedule, one restart more, "
              "fresh random starts, every loss including those not in losses) breaks, among the "
              "examples the configured PGD left standing, more than this share of all checked examples.",
              default=0.03, parse=p_float(0.0, 1.0)),
        Field("reference_tolerance", "number in [0, 1]",
              "reference_attack_agrees fails when a reference attack (AutoAttack's gradient components at the "
              "cheap preset's budget: APGD-CE 20 steps, on logits divided by their spread + 1 so that it cannot "
              "saturate, and APGD-T 20 steps x 3 targets, or APGD-DLR with 3 classes) breaks, among the examples "
              "the configured attacks reported robust, more than this share of all checked examples.",
              default=0.02, parse=p_float(0.0, 1.0)),
        Field("monotone_tolerance", "number in [0, 1]",
              "accuracy_non_increasing_in_eps fails when accuracy of independent (non-nested) PGD runs rises "
              "with eps by more than this.", default=0.02, parse=p_float(0.0, 1.0)),
        Field("strength_tolerance", "number in [0, 1]",
              "pgd_stronger_than_fgsm and attack_stronger_than_noise fail when the stronger method's accuracy "
              "exceeds the weaker one's by more than this.", default=0.02, parse=p_float(0.0, 1.0)),
        Field("escalate", "integer in [0, 3]",
              "When pgd_converged or reference_attack_agrees fails (the configured PGD has not converged on this "
              "model: a stronger attack breaks examples it left standing), re-run the whole sweep and its checks "
              "with a stronger PGD, 4 x the steps and one more restart (random starts on), up to this many times; "
              "the report then gives the stronger run's numbers and says so (check attack_escalated, a warning). "
              "0: never (the failed check makes the evaluation invalid, exit 4). The default 10-step attack is "
              "within about 0.01 of a 100-step, 5-restart reference on ordinary models, and overstates "
              "adversarially trained ones by up to 0.05 (BENCHMARKS.md); one escalation (40 steps, 2 restarts) "
              "brings those within 0.03, for 8 x the sweep's cost on such models only.", default=1,
              parse=p_int(0, 3), example="1"),
    ),
    example='[robustness]\nattacks = ["fgsm", "pgd"]\nnorm = "linf"\neps = ["2/255", "4/255", "8/255"]\n'
            'steps = 10\nrestarts = 1\nnoise = { gaussian = [0.05, 0.1, 0.2], salt_pepper = [0.05, 0.1] }\n\n'
            '[[gates]]\nmetric = "robust_accuracy"\nparams = { norm = "linf", eps = "8/255" }\nop = ">="\n'
            'threshold = 0.5\nuse = "ci_low"',
    post=_post,
)

_NORM = "'linf' or 'l2'"
_EPS = "an eps as written in the recipe's eps list, e.g. \"8/255\" or 0.1"
_ATTACK = "'fgsm', 'pgd' or 'autoattack' (omit for the worst case over all attacks)"
_CLASS = "a class name (see [model] class_names; default the class index as a string)"
_ATTR = "a sensitive attribute (with group)"
_GROUP = "a value of that attribute (with attribute)"
_CHOICES = {"norm": ("linf", "l2"), "attack": ("fgsm", "pgd", "autoattack"),
            "noise": ("gaussian", "uniform", "salt_pepper")}

METRICS = {
    "clean_accuracy": MetricSpec("Accuracy on the unperturbed data (the starting point of every curve).",
                                 {"class": _CLASS, "attribute": _ATTR, "group": _GROUP}, choices=_CHOICES, bounds=UNIT, better="higher"),
    "robust_accuracy": MetricSpec(
        "Share of ALL examples that are clean-correct and that no attack (or the named one) broke within eps; "
        "<= clean accuracy by construction.",
        {"norm": _NORM, "eps": _EPS, "attack": _ATTACK, "class": _CLASS, "attribute": _ATTR, "group": _GROUP}, choices=_CHOICES, bounds=UNIT, better="higher"),
    "attack_success_rate": MetricSpec("Share of clean-correct examples broken within eps (1 - robust / clean).",
                                      {"norm": _NORM, "eps": _EPS, "attack": _ATTACK}, choices=_CHOICES, bounds=UNIT, better="lower"),
    "median_breaking_eps": MetricSpec(
        "Lower median over clean-correct examples of the smallest tested eps that broke them; undefined (null, "
        "so a gate is inconclusive) when more than half survive the largest eps.", {"norm": _NORM, "attack": _ATTACK}, choices=_CHOICES, better="higher"),
    "noise_accuracy": MetricSpec(
        "Accuracy over noise_draws seeded noisy copies of every example at one noise level.",
        {"noise": "'gaussian', 'uniform' or 'salt_pepper'", "level": "a level as written in the recipe's noise table",
         "class": _CLASS, "attribute": _ATTR, "group": _GROUP}, choices=_CHOICES, bounds=UNIT, better="higher"),
}

DETERMINISM = (
    "FGSM and PGD: bitwise reproducible for the same seed, and independent of batch size, order and sharding up "
    "to floating-point differences between batched kernels: every random start is drawn per example from the "
    "master seed and the example's global index. AutoAttack: reproducible for the same seed, data, "
    "autoattack_chunk and blocks, and independent of the number of torchrun ranks; its components draw "
    "randomness per chunk of a block's survivors, so an example's result may change when the set of examples in "
    "its block changes: another [data] limit, or other blocks (the default [run] block_rows follows the batch "
    "size; set block_rows to make AutoAttack independent of batch_size). Noise: per example and draw, from the "
    "master seed and the global index.")


class _Plan(dict):
    """The validated section as the suite uses it (``settings``), plus the attack configurations, what the
    noise runs, and the notes that validation produced. A dict so that fill and summarise read it alike."""


def validate(cfg: dict[str, Any], facts: Facts) -> _Plan:
    """Settings, attack configurations and their recipe errors, before any suite does any work."""
    plan = _Plan(settings(cfg, facts.where))
    plan["_section"] = dict(cfg)  # what escalate() strengthens
    plan["_notes"] = []
    plan["_configs"] = attack_configs(plan, facts)
    kinds = dict(plan["noise"])
    plan["_noise_skipped"] = {}
    for kind in list(kinds):
        if kind in BOUNDED_NOISE and facts.input_bounds is None:  # configuration, not a finding about the model
            kinds.pop(kind)
            plan["_noise_skipped"][kind] = BOUNDED_NOISE[kind]
    plan["_noise_kinds"] = kinds
    from audit.attacks.threat import resolve

    try:
        plan["_threat"] = resolve(cfg, facts.features, tuple(facts.input_shape))
    except ValueError as e:
        raise RecipeError(f"{facts.where}: [robustness] {e}") from None
    # (AutoAttack, which could not honour a per-feature scale or frozen columns, refuses flat inputs in
    # attack_configs: a threat model exists only for flat inputs)
    plan["_bs"] = plan["batch_size"] or facts.batch_size
    plan["_bounds"] = facts.input_bounds
    plan["_large_eps"] = {norm: _large_eps_of(plan, facts, norm) for norm in plan["norm"]}
    return plan


# noise kinds that write the input bounds, and why they are skipped without them
BOUNDED_NOISE = {"salt_pepper": "salt-and-pepper sets values to the input bounds, and the data has no [model] "
                                "input_bounds: not run (set input_bounds to run it)"}


def _scale(fc: FillContext, plan: _Plan) -> Any:
    """The threat model's per-feature scale as a tensor on the device, or None (plain attacks)."""
    t = plan.get("_threat")
    return None if t is None else t.torch_scale(fc.device)


def pgd_config(cfg: dict[str, Any], norm: str, eps: list[Eps]) -> AttackConfig:
    """The recipe's PGD for one norm (also what the checks re-run on their subset)."""
    return AttackConfig("pgd", norm, eps, steps=cfg["steps"], step_size=cfg["step_size"][norm],
                        restarts=cfg["restarts"], random_start=cfg["random_start"], losses=tuple(cfg["losses"]),
                        schedule=cfg["step_schedule"], targets=cfg["targets"])


def stronger_losses(losses: Any) -> tuple[str, ...]:
    """Every loss, the configured ones first: what pgd_converged's stronger PGD runs."""
    return tuple(losses) + tuple(x for x in LOSSES if x not in losses)


def stronger_pgd(cfg: AttackConfig) -> AttackConfig:
    """What pgd_converged compares with (run at twice the steps and one restart more): random starts and
    every loss."""
    return replace(cfg, random_start=True, losses=stronger_losses(cfg.losses))


def attack_configs(cfg: _Plan, facts: Facts) -> list[AttackConfig]:
    k = facts.num_classes
    notes = cfg["_notes"]
    if cfg["targets"] > k - 1:  # also for the checks' stronger PGD, which adds the targeted loss
        if "targeted" in cfg["losses"]:
            notes.append(f"PGD targeted loss: {k - 1} target classes (all the model has) instead of "
                         f"targets = {cfg['targets']}.")
        cfg["targets"] = k - 1
    out = []
    for norm in cfg["norm"]:
        for name in cfg["attacks"]:
            eps = cfg["eps"][norm]
            if name == "fgsm":
                if norm != "linf":
                    notes.append("FGSM is an Linf attack: it was not run for the L2 threat model.")
                    continue
                out.append(AttackConfig("fgsm", norm, eps))
            elif name == "pgd":
                out.append(pgd_config(cfg, norm, eps))
            else:
                shape = (facts.n,) + tuple(facts.input_shape)
                if facts.input_bounds is None or len(shape) != 4:
                    raise RecipeError(f"{facts.where}: [robustness] attacks: 'autoattack' needs image inputs "
                                      "of shape (N, C, H, W) and [model] input_bounds (torchattacks' APGD/FAB/Square "
                                      f"work on images in a box); the data has shape {shape}"
                                      f"{'' if facts.input_bounds else ' and no input_bounds'}. Use 'pgd' instead")
                comps, aa_notes = autoattack_components(cfg["autoattack"], k)
                notes.extend(f"AutoAttack: {n}." for n in aa_notes)
                out.append(AttackConfig("autoattack", norm, eps, preset=cfg["autoattack"], components=comps,
                                        chunk=cfg["autoattack_chunk"]))
        if not any(a.norm == norm for a in out):
            raise RecipeError(f"{facts.where}: [robustness] attacks = {cfg['attacks']}: none of them "
                              f"attacks the {norm} threat model (FGSM is Linf only); add 'pgd' or 'autoattack'")
    return out


def _worst_norms(plan: _Plan) -> list[str]:
    return [n for n in plan["norm"] if any(a.norm == n for a in plan["_configs"])]


def _eps_meta(attack: str, norm: str, eps: list[Eps]) -> dict[str, Any]:
    eps = sorted(eps)
    return {"kind": "eps_broken", "attack": attack, "norm": norm, "eps": [e.label for e in eps],
            "eps_values": [e.value for e in eps]}


# ------------------------------------------------------------------------------------------------ fill


def fill(fc: FillContext, plan: _Plan, positions: np.ndarray, rows: Any) -> Part:
    """Attack and noise columns for these rows, and the random-perturbation baseline of
    attack_stronger_than_noise. Partials: per sweep, what was measured (largest perturbation, largest
    excursion outside the bounds, forward/backward rows, seconds, AutoAttack's per-component tallies)."""
    from audit.attacks import sweep as S
    from audit.attacks.noise import noise_correct, random_ball_correct

    from audit.engine.shard import take

    x, y, index = take(fc.data.x, positions), rows["label"], rows["index"]
    cc = rows["pred"] == y
    bounds, bs, seed = fc.facts.input_bounds, plan["_bs"], fc.seed
    scale = _scale(fc, plan)
    cols: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, Any]] = {}
    sweeps: list[dict[str, Any]] = []
    for a in plan["_configs"]:
        if a.name == "fgsm":
            s = S.fgsm_sweep(fc.model, a, x, y, index, cc, bs, fc.device, bounds, fc.progress, scale=scale)
        elif a.name == "pgd":
            s = S.pgd_sweep(fc.model, a, x, y, index, cc, bs, fc.device, bounds, seed, fc.progress, scale=scale)
        else:
            s = S.autoattack_sweep(fc.model, a, x, y, index, cc, fc.device, bounds, seed, fc.facts.num_classes,
                                   fc.progress)
        name = f"robust:{a.name}:{a.norm}:eps_broken"
        cols[name], meta[name] = s.eps_broken, _eps_meta(a.name, a.norm, a.eps)
        sweeps.append({"attack": a.name, "norm": a.norm, "max_norm_excess": _finite(s.max_norm_excess),
                       "max_bound_excess": s.max_bound_excess, "max_norm": s.max_norm,
                       "max_frozen_change": s.max_frozen_change,
                       "forward_rows": s.counter.forward, "backward_rows": s.counter.backward,
                       "seconds": s.seconds, "components": s.components})
    for norm in _worst_norms(plan):
        worst = R.worst_case(*[cols[f"robust:{a.name}:{a.norm}:eps_broken"] for a in plan["_configs"]
                               if a.norm == norm])
        name = f"robust:worst:{norm}:eps_broken"
        cols[name], meta[name] = worst, _eps_meta("worst", norm, plan["eps"][norm])
    draws = plan["noise_draws"]
    noise_measured: dict[str, float] = {"max_frozen_change": 0.0}
    for kind, levels in plan["_noise_kinds"].items():
        if len(y) == 0:
            break
        counts = noise_correct(fc.model, x, y, index, kind, levels, draws, seed, bounds, fc.device, bs, fc.progress,
                               scale=scale, measured=noise_measured)
        for j, lv in enumerate(levels):
            name = f"noise:{kind}:{lv.label}:correct"
            cols[name] = counts[:, j]
            meta[name] = {"kind": "noise_correct", "noise": kind, "level": lv.label, "level_value": lv.value,
                          "draws": draws}
    # attack_stronger_than_noise's baseline: one random perturbation of each attack's size, on every row
    for norm in _worst_norms(plan):
        eps = plan["eps"][norm]
        name = f"check:random_ball:{norm}"
        cols[name] = random_ball_correct(fc.model, x, y, index, norm, eps, seed, bounds, fc.device, bs, scale=scale)
        meta[name] = {"kind": "check", "eps": [e.label for e in eps]}
    return Part(positions, cols, meta, {"sweeps": sweeps, "noise_frozen_change": noise_measured["max_frozen_change"]})


def _finite(v: float) -> float | None:
    """-inf (nothing was attacked) as None; +inf (a broken attack) stays, for perturbation_within_eps."""
    return None if v == -np.inf else float(v)


def check_tasks(table: Any, plan: _Plan) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """The checks' new gradient work, as tasks that ranks share, on the checks' examples (the first
    check_examples clean-correct ones, in data order). Only what the sweep did not already measure:

    - the gradients at the clean input;
    - the independent (non-nested) PGD at each eps, only on the examples that the PGD sweep broke at a
      smaller eps. On every other checked example the sweep's own attack at that eps IS the independent
      run: the sweep gives each survivor exactly the attack a fresh run at that eps gives it (same seeded
      random starts, keyed by global index, eps, restart and loss; same steps), so re-running it would
      repeat the same computation;
    - the stronger PGD (pgd_converged), only on what the configured PGD left standing at each eps, nested:
      an example it breaks at one eps counts as broken at every larger eps without another attack (the
      adversarial input it found lies inside every larger ball); in fixed chunks of the checked examples;
    - FGSM's sweep (one gradient per example), unless the configured attacks ran it;
    - per eps and chunk of 128 survivors, the reference attack;
    - the large-eps PGD, only on the examples that no configured attack broke at an eps up to large_eps
      (an adversarial input within a smaller ball lies inside the large one)."""
    from audit.engine.shard import chunks

    cc = table["pred"] == table["label"]
    sub = np.flatnonzero(cc)[: plan["check_examples"]]
    # the reference attack works in a box with one eps everywhere: not with a tabular threat model
    bounded = plan["_bounds"] is not None and plan.get("_threat") is None
    steps, restarts = plan["steps"], plan["restarts"]
    runs = len(plan["losses"]) + (plan["targets"] - 1 if "targeted" in plan["losses"] else 0)
    runs_all = len(LOSSES) + plan["targets"] - 1
    m = len(sub)
    if m == 0:
        return []
    # Each task runs on a fixed set of rows (in batches of the attack batch size) exactly as one process
    # would, so its columns are the same for any number of ranks; the reference attack runs on chunks of 128
    # of the examples each eps left standing, as AutoAttack's chunks are seeded.
    # Costs: estimated backward rows (upper bounds where early stopping cuts them short), so that ranks get
    # even shares (``audit.engine.shard.owners``); who runs a task never changes its result.
    out: list[tuple[np.ndarray, dict[str, Any]]] = [(sub, {"do": "gradients", "cost": 4.0 * m})]
    for norm in _worst_norms(plan):
        eps = plan["eps"][norm]
        worst = table[f"robust:worst:{norm}:eps_broken"]
        pgd = table[f"robust:pgd:{norm}:eps_broken"] if f"robust:pgd:{norm}:eps_broken" in table else None
        if pgd is not None:
            for j in range(1, len(eps)):
                rows = sub[pgd[sub] <= eps[j - 1].value]  # broken earlier: the sweep did not attack them here
                if len(rows):  # most break in a step or two: early stop
                    out.append((rows, {"do": "pgd_rerun", "norm": norm, "eps": j,
                                       "cost": 0.25 * steps * restarts * runs * len(rows)}))
            for rows in chunks(sub[pgd[sub] > eps[0].value], STRONGER_CHUNK):
                left = sum(float(np.sum(pgd[rows] > e.value)) for e in eps)
                out.append((rows, {"do": "stronger", "norm": norm,
                                   "cost": 2.0 * steps * (restarts + 1) * runs_all * left}))
        if norm == "linf" and "robust:fgsm:linf:eps_broken" not in table:  # else the sweep's FGSM is this run
            out.append((sub, {"do": "fgsm", "norm": norm, "cost": 2.0 * m}))
        if bounded:
            for j, e in enumerate(eps):
                for chunk in chunks(sub[worst[sub] > e.value], REFERENCE_CHUNK):
                    out.append((chunk, {"do": "reference", "norm": norm, "eps": j, "cost": 20.0 * 4 * len(chunk)}))
        large = plan["_large_eps"].get(norm)
        if large is not None and not _frozen(plan):
            rows = sub[worst[sub] > large.value]
            if len(rows):
                out.append((rows, {"do": "large_eps", "norm": norm, "cost": max(steps, 20) * runs * 0.5 * len(rows)}))
    # the report's gallery: a few examples' adversarial inputs at their smallest breaking eps (audit.suites.gallery)
    out += gallery.adversarial_tasks(table, {n: plan["eps"][n] for n in _worst_norms(plan)})
    return out


STRONGER_CHUNK = 128  # checked examples per stronger-PGD task (a fixed split: the same for any number of ranks)


def _attack_losses(configs: list[AttackConfig]) -> dict[str, list[str]]:
    """attack -> the losses it maximises (``audit.attacks.losses.PER_EXAMPLE`` names, or "targeted"). For
    AutoAttack: APGD-CE's plain float32 cross-entropy and, when a margin-type or gradient-free component runs
    (APGD-T's targeted DLR, FAB, Square), the margin, whose gradient vanishes only where the model hides it."""
    out: dict[str, list[str]] = {}
    for a in configs:
        if a.name == "fgsm":
            ls = ["ce"]
        elif a.name == "pgd":
            ls = list(a.losses)
        else:
            ls = (["float32_ce"] if any(comp["class"] == "APGD" for comp in a.components) else []) + \
                (["margin"] if any(comp["class"] != "APGD" for comp in a.components) else [])
        out.setdefault(a.name, [])
        out[a.name] += [x for x in ls if x not in out[a.name]]
    return out


def _gradient_losses(plan: _Plan) -> list[str]:
    # float32_ce and margin are always measured: where plain cross-entropy's gradient is zero but the margin's
    # is not, the softmax saturated (the model is confident), which is not masking
    losses = _attack_losses(plan["_configs"])
    return list(dict.fromkeys([x for ls in losses.values() for x in ls] + ["float32_ce", "margin"]))


def _large_eps_of(plan: _Plan, facts: Facts, norm: str) -> Eps | None:
    given = plan["large_eps"].get(norm)
    if given is not None:
        return given
    if facts.input_bounds is None:
        return None
    d = int(np.prod(facts.input_shape))
    half = 0.5 * (facts.input_bounds[1] - facts.input_bounds[0])
    v = half if norm == "linf" else half * math.sqrt(d)
    return Eps(v, str(float(v)))


def fill_checks(fc: FillContext, plan: _Plan, positions: np.ndarray, rows: Any, task: dict[str, Any]) -> Part:
    """One task of the costlier validity checks (:func:`check_tasks`) on its rows (the checks' examples,
    all clean-correct; for the reference attack, one chunk of those left standing), as columns: the input gradients of every loss (zero, not finite, L1 norm); at one
    eps, an independent (non-nested) PGD run and the stronger PGD on its survivors; FGSM's independent
    sweep (Linf); at one eps, the reference attack on what the configured attacks left standing; a PGD at
    the large eps."""
    from audit.attacks import sweep as S
    from audit.attacks.gradients import loss_gradient_stats

    xs, ys, ids = fc.data.x[positions], rows["label"], rows["index"]
    bounds, bs, seed, cfg = fc.facts.input_bounds, plan["_bs"], fc.seed, plan
    scale = _scale(fc, plan)
    m = len(positions)
    ones = np.ones(m, dtype=bool)
    cols: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, Any]] = {}
    do, norm = task["do"], task.get("norm")
    if do == "gradients":
        cols["check:subset"] = ones.copy()
        meta["check:subset"] = {"kind": "check", "what": "the checks' examples"}
        for loss, v in loss_gradient_stats(fc.model, xs, ys, fc.device, bs, _gradient_losses(plan)).items():
            cols[f"check:grad:{loss}:zero"] = v["zero"]
            cols[f"check:grad:{loss}:nonfinite"] = v["nonfinite"]
            cols[f"check:grad:{loss}:l1"] = v["l1"]
    elif do == "pgd_rerun":  # the independent run at one eps, on the examples the sweep broke at a smaller one
        e = cfg["eps"][norm][task["eps"]]
        r1 = S.pgd_sweep(fc.model, pgd_config(cfg, norm, [e]), xs, ys, ids, ones, bs, fc.device, bounds, seed,
                         scale=scale)
        cols[f"check:pgd_rerun:{norm}:{e.label}"] = r1.eps_broken > e.value
    elif do == "stronger":
        # the stronger PGD: twice the steps at each stride, one restart more, from fresh random starts, with
        # every loss (those the recipe left out too), at each eps on what the configured PGD left standing
        # there. On robust models fresh restarts move more than extra steps do (BENCHMARKS.md), so both are
        # added. Nested (see check_tasks): the column is the smallest eps at which it broke the example.
        eps = sorted(cfg["eps"][norm])
        pgd = rows[f"robust:pgd:{norm}:eps_broken"]
        eligible = np.stack([pgd > e.value for e in eps], axis=1)
        r2 = S.pgd_sweep(fc.model, stronger_pgd(pgd_config(cfg, norm, eps)), xs, ys, ids, eligible[:, 0], bs,
                         fc.device, bounds, seed, steps=2 * cfg["steps"], restarts=cfg["restarts"] + 1,
                         stream="pgd-stronger", eligible=eligible, scale=scale)
        cols[f"check:pgd_stronger:{norm}"] = r2.eps_broken
    elif do == "fgsm":
        f = S.fgsm_sweep(fc.model, AttackConfig("fgsm", norm, cfg["eps"][norm]), xs, ys, ids, ones, bs, fc.device,
                         bounds, scale=scale)
        cols[f"check:fgsm_independent:{norm}"] = f.eps_broken
    elif do == "reference":  # on one chunk of the examples that the configured attacks left standing at e
        e = cfg["eps"][norm][task["eps"]]
        cols[f"check:reference:{norm}:{e.label}"] = _reference(fc, norm, e, xs, ys, ids)
    elif do == "gallery":
        return Part(positions, {}, {}, gallery.fill_adversarial(fc, cfg["_configs"], cfg["eps"][norm], positions,
                                                                rows, task))
    elif do == "large_eps":
        e = cfg["_large_eps"][norm]
        one = AttackConfig("pgd", norm, [e], steps=max(cfg["steps"], 20), restarts=1, random_start=True,
                           losses=tuple(cfg["losses"]), targets=cfg["targets"])
        r = S.pgd_sweep(fc.model, one, xs, ys, ids, ones, bs, fc.device, bounds, seed, stream="large-eps",
                        scale=scale)
        cols[f"check:large_eps:{norm}"] = r.eps_broken > e.value
    else:
        raise ValueError(f"unknown check task {task!r}")
    for k in cols:
        meta.setdefault(k, {"kind": "check", "task": dict(task)})
    return Part(positions, cols, meta, {})


# AutoAttack's gradient components at the cheap preset's budget: the reference of reference_attack_agrees.
REFERENCE_COMPONENTS = ("apgd-ce", "apgd-t")


def _reference_components(k: int) -> tuple[list[dict[str, Any]], str]:
    comps, _ = autoattack_components("cheap", k)
    comps = [comp for comp in comps if comp["component"] in REFERENCE_COMPONENTS]
    if k == 3:  # APGD-T needs 4 classes; the untargeted DLR loss works from 3
        comps.append({"component": "apgd-dlr", "class": "APGD", "loss": "dlr", "steps": 20, "n_restarts": 1,
                      "rho": 0.75})
    desc = " + ".join(f"{comp['component'].upper()} {comp['steps']} steps"
                      + (f", {comp['n_target_classes']} targets" if "n_target_classes" in comp else "") for comp in comps)
    if k < 4:
        desc += " (APGD-T needs at least 4 classes)"
    desc += ("; APGD-CE on the logits divided by their spread + 1 (the same decisions; its cross-entropy cannot "
             "saturate)")
    return comps, desc


def _reference(fc: FillContext, norm: str, e: Eps, xs: np.ndarray, ys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """AutoAttack's gradient components (cheap preset budget), one after the other on what the previous
    left standing, on one chunk of the checked examples that the configured attacks left standing at
    ``e`` (each component seeded from the chunk's first global index): bool per example, broken."""
    import torch

    from audit.attacks.adapters import AutoAttackRunner, TamedLogits
    from audit.engine.precision import fp32_decisions
    from audit.seeding import stream_key

    k = fc.facts.num_classes
    comps, _ = _reference_components(k)
    names = [comp["component"] for comp in comps]
    # APGD-CE on the tamed logits (plain float32 cross-entropy is blind on confident examples); the others on
    # the model's own logits (taming would bend APGD-T's scale-invariant DLR loss and weaken it)
    runners = [AutoAttackRunner(TamedLogits(fc.model) if comp["component"] == "apgd-ce" else fc.model, [comp], norm,
                                fc.facts.input_bounds, k) for comp in comps]
    broken = np.zeros(len(xs), dtype=bool)
    b = np.arange(len(xs))
    for nm, runner in zip(names, runners):
        b = b[~broken[b]]
        if len(b) == 0:
            break
        xb = torch.from_numpy(xs[b]).to(fc.device)
        yb = torch.from_numpy(ys[b]).to(fc.device)
        seed = stream_key(fc.seed, "reference", nm, norm, e.label, int(ids[b[0]])) >> 1
        adv, _, _ = runner.run(xb, yb, e.value, [seed])
        with torch.no_grad(), fp32_decisions():
            wrong = (fc.model(adv).argmax(1) != yb).cpu().numpy()
        broken[b[wrong]] = True
    return broken


REFERENCE_CHUNK = 128  # examples per reference-attack call (its components draw randomness per call)


# ------------------------------------------------------------------------------------------- summarise


class _Sum:
    """What the summary helpers share: the table, the plan, the facts (no model)."""

    def __init__(self, table: Any, plan: _Plan, facts: Facts):
        self.table, self.cfg, self.facts = table, plan, facts
        self.k = facts.num_classes
        self.names = facts.class_names
        self.bounds = facts.input_bounds
        self.y, self.index = table["label"], table["index"]
        self.cc = table["pred"] == self.y
        self.seed = facts.seed
        self.res = SuiteResult("robustness")
        self.partials: list[dict[str, Any]] = []

    def ci(self, p: float, n: int, *names: Any) -> tuple[float, float] | None:
        return R.binomial_interval(p, n, self.cfg["bootstrap"], rng(self.seed, "robustness", *names),
                                   self.cfg["confidence"])


def _merge_sweeps(plan: _Plan, table: Any, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per attack configuration: its column and the reduction of every part's measurements
    (max of the maxima, sum of the counts, per-component tallies added)."""
    cc = table["pred"] == table["label"]
    out = []
    for i, a in enumerate(plan["_configs"]):
        mine = [p["sweeps"][i] for p in parts if p.get("sweeps")]
        col = table[f"robust:{a.name}:{a.norm}:eps_broken"]
        eps = sorted(a.eps)
        excess = [m["max_norm_excess"] for m in mine if m["max_norm_excess"] is not None]
        comps: dict[str, dict[str, int]] = {}
        for m in mine:
            for lab, tally in m["components"].items():
                t = comps.setdefault(lab, {})
                for c, v in tally.items():
                    t[c] = t.get(c, 0) + int(v)
        out.append({
            "config": a, "attack": a.name, "norm": a.norm, "eps": eps, "eps_broken": col,
            # attacked at eps_j: the clean-correct examples no smaller eps broke; broken there: those it did
            "attacked": [int(np.sum(cc & (col >= e.value))) for e in eps],
            "broken": [int(np.sum(cc & (col == e.value))) for e in eps],
            "forward_rows": sum(m["forward_rows"] for m in mine), "backward_rows": sum(m["backward_rows"] for m in mine),
            "max_norm_excess": max(excess) if excess else None,  # +inf kept: perturbation_within_eps fails on it
            "max_bound_excess": max([m["max_bound_excess"] for m in mine], default=0.0),
            "max_frozen_change": max([m.get("max_frozen_change", 0.0) for m in mine], default=0.0),
            "seconds": sum(m["seconds"] for m in mine),
            "components": {e.label: comps[e.label] for e in eps if e.label in comps},
        })
    return out


def _work(s: dict[str, Any]) -> dict[str, Any]:
    return {"attack": s["attack"], "norm": s["norm"], "eps": [e.label for e in s["eps"]],
            "attacked": s["attacked"], "broken": s["broken"], "forward_rows": s["forward_rows"],
            "backward_rows": s["backward_rows"],
            "max_norm_excess": s["max_norm_excess"] if s["max_norm_excess"] is None or np.isfinite(s["max_norm_excess"])
            else None,
            "max_bound_excess": s["max_bound_excess"], **({"components": s["components"]} if s["components"] else {})}


def summarise(table: Any, plan: _Plan, facts: Facts, partials: dict[str, list[dict[str, Any]]]) -> SuiteResult:
    import torchattacks

    c = _Sum(table, plan, facts)
    res = c.res
    res.notes.extend(plan["_notes"])
    c.partials = partials.get("robustness", [])  # the fill's measurements, one per block
    sweeps = _merge_sweeps(plan, table, c.partials)
    worst = {norm: table[f"robust:worst:{norm}:eps_broken"] for norm in _worst_norms(plan)}
    _adversarial_metrics(c, sweeps, worst)
    noise = _noise(c)
    _checks(c, sweeps, worst)
    for step in plan.get("_escalation", []):
        a, b = step["from"], step["to"]
        res.check("attack_escalated", "warn",
                  f"The configured PGD ({a['steps']} steps, {a['restarts']} restart(s)) had not converged on this "
                  f"model ({'; '.join(step['why'])}). The sweep and its checks were re-run with {b['steps']} steps "
                  f"and {b['restarts']} restarts, and every robustness number here is from that run. Set "
                  f"[robustness] steps = {b['steps']} and restarts = {b['restarts']} to skip the first run, or "
                  "escalate = 0 to fail the evaluation instead.")
        res.notes.append(f"Attack escalated: PGD {a['steps']} steps x {a['restarts']} restart(s) had not converged; "
                         f"re-run with {b['steps']} x {b['restarts']} (see the check attack_escalated).")
    res.config = {
        "attacks": [a.to_json() for a in plan["_configs"]],
        "norms": plan["norm"],
        "input_bounds": list(c.bounds) if c.bounds else None,
        "batch_size": plan["_bs"],
        "torchattacks": getattr(torchattacks, "__version__", None),
        "clean_correct": int(c.cc.sum()),
        "n": int(len(c.y)),
        "noise": {k: [e.label for e in v] for k, v in plan["_noise_kinds"].items()} if noise else {},
        "noise_draws": plan["noise_draws"],
        # noise kinds left out for want of input bounds (a configuration fact, not a finding about the model)
        "noise_skipped": dict(plan["_noise_skipped"]),
        # the tabular threat model: units of eps and noise levels, and the features never perturbed
        "threat_model": plan["_threat"].to_json() if plan.get("_threat") is not None else None,
        "bootstrap": plan["bootstrap"], "confidence": plan["confidence"],
        "interval": "percentile bootstrap over examples (binomial / multinomial replicates)",
        "determinism": DETERMINISM,
        "work": [_work(s) for s in sweeps],
        "columns": [k for k in table.columns if k.startswith(("robust:", "noise:"))],
    }
    for s in sweeps:
        res.timing[f"{s['attack']}:{s['norm']}"] = round(s["seconds"], 3)
    adv = gallery.adversarial_table(partials.get("robustness.checks", []))
    if adv:
        res.tables["gallery"] = {"adversarial": adv}
    return res


def _adversarial_metrics(c: _Sum, sweeps: list[dict[str, Any]], worst: dict[str, np.ndarray]) -> None:
    res, n = c.res, len(c.y)
    clean = float(c.cc.mean()) if n else float("nan")
    res.metric("clean_accuracy", clean, n, c.ci(clean, n, "clean"))
    acc_k, n_k = R.accuracy_by_code(c.cc, c.y, c.k)
    for i in range(c.k):
        res.metric("clean_accuracy", _v(acc_k[i]), int(n_k[i]), c.ci(acc_k[i], int(n_k[i]), "clean", i),
                   **{"class": c.names[i]})
    for attr, codes, cats in c.table.groups():
        acc_g, n_g = R.accuracy_by_code(c.cc, codes, len(cats))
        for g, name in enumerate(cats):
            res.metric("clean_accuracy", _v(acc_g[g]), int(n_g[g]), c.ci(acc_g[g], int(n_g[g]), "clean", attr, g),
                       attribute=attr, group=name)

    n_cc = int(c.cc.sum())
    curves: list[dict[str, Any]] = []
    by_eps: list[dict[str, Any]] = []
    per_class_rows = {i: {"class": c.names[i], "n": int(n_k[i]), "clean": _r(acc_k[i])} for i in range(c.k)}
    group_rows: dict[tuple[str, str], dict[str, Any]] = {}
    for norm, eps in c.cfg["eps"].items():
        if norm not in worst:
            continue
        vals = [e.value for e in eps]
        series: dict[str, list] = {}
        lo: dict[str, list] = {}
        hi: dict[str, list] = {}
        for label, col, attack in [(s["attack"], s["eps_broken"], s["attack"]) for s in sweeps if s["norm"] == norm] + \
                                   [("worst case", worst[norm], None)]:
            acc = R.robust_accuracy(col, vals)
            asr = R.attack_success_rate(col, c.cc, vals)
            p = {} if attack is None else {"attack": attack}
            series[label], lo[label], hi[label] = [], [], []
            for j, e in enumerate(eps):
                ci = c.ci(acc[j], n, "robust", attack, norm, e.label)
                res.metric("robust_accuracy", float(acc[j]), n, ci, **p, norm=norm, eps=e.label)
                res.metric("attack_success_rate", _v(asr[j]), n_cc, c.ci(asr[j], n_cc, "asr", attack, norm, e.label),
                           **p, norm=norm, eps=e.label)
                series[label].append(_r(acc[j]))
                lo[label].append(None if ci is None else _r(ci[0]))
                hi[label].append(None if ci is None else _r(ci[1]))
            med = R.median_breaking_eps(col, c.cc)
            res.metric("median_breaking_eps", _v(med), n_cc, None, **p, norm=norm)
        # per class and per group: the worst case
        rc = R.robust_correct(worst[norm], vals)
        for j, e in enumerate(eps):
            acc_c, n_c = R.accuracy_by_code(rc[:, j], c.y, c.k)
            for i in range(c.k):
                res.metric("robust_accuracy", _v(acc_c[i]), int(n_c[i]), c.ci(acc_c[i], int(n_c[i]), "robust-class",
                           norm, e.label, i), norm=norm, eps=e.label, **{"class": c.names[i]})
                per_class_rows[i][f"{norm} {e.label}"] = _r(acc_c[i])
            for attr, codes, cats in c.table.groups():
                acc_g, n_g = R.accuracy_by_code(rc[:, j], codes, len(cats))
                clean_g, _ = R.accuracy_by_code(c.cc, codes, len(cats))
                for g, name in enumerate(cats):
                    res.metric("robust_accuracy", _v(acc_g[g]), int(n_g[g]),
                               c.ci(acc_g[g], int(n_g[g]), "robust-group", norm, e.label, attr, g),
                               norm=norm, eps=e.label, attribute=attr, group=name)
                    row = group_rows.setdefault((attr, name), {"attribute": attr, "group": name, "n": int(n_g[g]),
                                                               "clean": _r(clean_g[g])})
                    row[f"{norm} {e.label}"] = _r(acc_g[g])
        worst_asr = R.attack_success_rate(worst[norm], c.cc, vals)
        for j, e in enumerate(eps):
            by_eps.append({"norm": norm, "eps": e.label, "eps_value": e.value,
                           "attacks": {k: v[j] for k, v in series.items() if k != "worst case"},
                           "worst": series["worst case"][j], "ci_low": lo["worst case"][j],
                           "ci_high": hi["worst case"][j], "success_rate": _r(worst_asr[j]),
                           "broken_here": int(np.sum(worst[norm] == e.value))})
        curves.append({"norm": norm, "eps": vals, "labels": [e.label for e in eps], "clean": _r(clean),
                       "series": series, "ci_low": lo, "ci_high": hi,
                       "median_breaking_eps": _r(R.median_breaking_eps(worst[norm], c.cc), 9),
                       "median_breaking_eps_label": next((e.label for e in eps if e.value ==
                                                          R.median_breaking_eps(worst[norm], c.cc)), None)})
    res.curves["accuracy_vs_eps"] = curves
    res.tables["robust_by_eps"] = by_eps
    res.tables["per_class"] = list(per_class_rows.values())
    res.tables["per_group"] = list(group_rows.values())
    res.tables["robust_columns"] = [f"{norm} {e.label}" for norm, eps in c.cfg["eps"].items() if norm in worst
                                    for e in eps]
    aa = [s for s in sweeps if s["attack"] == "autoattack"]
    if aa:
        aa_cfg = next(a for a in c.cfg["_configs"] if a.name == "autoattack")
        names = [comp["component"] for comp in aa_cfg.components]
        res.tables["autoattack_components"] = {
            "components": names,
            "rows": [{"norm": s["norm"], "eps": e.label, "attacked": n_att,
                      "broken": [s["components"].get(e.label, {}).get(k, 0) for k in names]}
                     for s in aa for e, n_att in zip(s["eps"], s["attacked"]) if e.label in s["components"]]}


def _noise(c: _Sum) -> bool:
    cfg, res, n = c.cfg, c.res, len(c.y)
    kinds = c.cfg["_noise_kinds"]
    if not kinds or n == 0:
        return False
    draws = cfg["noise_draws"]
    curves, rows = [], {}
    for kind, levels in kinds.items():
        accs, los, his = [], [], []
        for lv in levels:
            counts = c.table[f"noise:{kind}:{lv.label}:correct"]
            acc = R.noise_accuracy(counts, draws)
            ci = R.count_mean_interval(counts, draws, cfg["bootstrap"],
                                       rng(c.seed, "robustness", "noise", kind, lv.label), cfg["confidence"])
            res.metric("noise_accuracy", acc, n, ci, noise=kind, level=lv.label)
            accs.append(_r(acc))
            los.append(None if ci is None else _r(ci[0]))
            his.append(None if ci is None else _r(ci[1]))
            frac = counts / draws
            for i in range(c.k):
                m = c.y == i
                a = float(frac[m].mean()) if m.any() else None
                ci_c = R.count_mean_interval(counts[m], draws, cfg["bootstrap"],
                                             rng(c.seed, "robustness", "noise-class", kind, lv.label, i),
                                             cfg["confidence"]) if m.any() else None
                res.metric("noise_accuracy", _v(a), int(m.sum()), ci_c, noise=kind, level=lv.label,
                           **{"class": c.names[i]})
            for attr, codes, cats in c.table.groups():
                for g, name in enumerate(cats):
                    m = codes == g
                    a = float(frac[m].mean()) if m.any() else None
                    ci_g = R.count_mean_interval(counts[m], draws, cfg["bootstrap"],
                                                 rng(c.seed, "robustness", "noise-group", kind, lv.label, attr, g),
                                                 cfg["confidence"]) if m.any() else None
                    res.metric("noise_accuracy", _v(a), int(m.sum()), ci_g, noise=kind, level=lv.label,
                               attribute=attr, group=name)
            rows.setdefault(kind, []).append({"level": lv.label, "accuracy": _r(acc),
                                              "ci_low": los[-1], "ci_high": his[-1]})
        curves.append({"noise": kind, "levels": [lv.value for lv in levels], "labels": [lv.label for lv in levels],
                       "accuracy": accs, "ci_low": los, "ci_high": his, "clean": _r(float(c.cc.mean()))})
    res.curves["accuracy_vs_noise"] = curves
    res.tables["noise"] = rows
    return True


# ------------------------------------------------------------------------------------------ validity checks


def _checks(c: _Sum, sweeps: list[dict[str, Any]], worst: dict[str, np.ndarray]) -> None:
    """Every validity check from the table's check columns and the sweeps' merged measurements. How ranks'
    parts combine: the largest perturbation and bound excursion over all parts; every other check reads
    per-example columns, so it sees the checked examples of every rank at once."""
    res, cfg, t = c.res, c.cfg, c.table
    threat = cfg.get("_threat")
    scale = max(1.0, c.facts.input_absmax)
    if threat is not None and c.facts.features is not None:  # measured in declared units
        scale = threat.rounding_scale(c.facts.features["absmax"])
    tol = 1e-6 * scale  # float32 rounding of x + delta - x, relative to the inputs' magnitude
    details: dict[str, Any] = {}

    def record(id: str, decision: tuple[str, str, float | None]) -> None:
        status, msg, value = decision
        res.check(id, status, msg, value=_r(value, 12))  # type: ignore[arg-type]

    # measured perturbation size and bounds
    if sweeps:
        w = max(sweeps, key=lambda s: -math.inf if s["max_norm_excess"] is None else s["max_norm_excess"])
        excess = -math.inf if w["max_norm_excess"] is None else w["max_norm_excess"]
        record("perturbation_within_eps", K.perturbation_within_eps(excess, tol, f"{w['attack']} ({w['norm']})",
                                                                    threat.units() if threat is not None else ""))
        record("adversarial_within_bounds", K.within_bounds(max(s["max_bound_excess"] for s in sweeps), tol, c.bounds))
        if threat is not None and threat.n_frozen():
            noise = max([p.get("noise_frozen_change", 0.0) for p in c.partials], default=0.0)
            moved = max(s["max_frozen_change"] for s in sweeps)
            record("frozen_features_unchanged", K.frozen_features_unchanged(moved, threat.frozen_brief(), noise))
    record("eps_within_input_range", K.eps_within_input_range(_eps_too_large(c), c.bounds))
    units = _units_decision(c)
    if units is not None:
        record("perturbation_units", units)

    sub = np.flatnonzero(t["check:subset"]) if "check:subset" in t else np.zeros(0, dtype=np.int64)
    if len(sub) == 0:
        res.check("gradients_not_masked", "warn", "No clean-correct example: nothing to attack, nothing checked.")
        return
    n = int(len(sub))

    losses = _attack_losses(cfg["_configs"])
    g = {loss: {"zero": t[f"check:grad:{loss}:zero"][sub], "nonfinite": t[f"check:grad:{loss}:nonfinite"][sub],
                "l1": t[f"check:grad:{loss}:l1"][sub]} for loss in _gradient_losses(cfg)}
    blind = {a: int(np.logical_and.reduce([g[x]["zero"] for x in ls]).sum()) for a, ls in losses.items()}
    nonfinite = {a: int(np.logical_or.reduce([g[x]["nonfinite"] for x in ls]).sum()) for a, ls in losses.items()}
    saturated = int((g["float32_ce"]["zero"] & ~g["margin"]["zero"]).sum())

    def median_l1(v: np.ndarray) -> float:
        fin = v[np.isfinite(v)]
        return float(np.median(fin)) if len(fin) else float("nan")

    details["gradients"] = {"n": n, "losses": losses, "blind": blind, "nonfinite": nonfinite,
                            "float32_ce_zero": int(g["float32_ce"]["zero"].sum()),
                            "zero_by_loss": {k: int(v["zero"].sum()) for k, v in g.items()},
                            "median_l1_by_loss": {k: _r(median_l1(v["l1"]), 6) for k, v in g.items()}}
    record("gradients_not_masked", K.gradients_not_masked(n, blind, nonfinite, losses, saturated))

    norms = _worst_norms(cfg)
    mono: dict[str, tuple[list[str], list[float]]] = {}
    conv, fg, rnd, ref = [], [], [], []
    no_pgd: list[str] = []
    for norm in norms:
        eps = cfg["eps"][norm]
        labels = [e.label for e in eps]
        pgd_col = f"robust:pgd:{norm}:eps_broken"
        if pgd_col not in t:  # no PGD ran for this norm: the PGD checks have nothing to examine
            no_pgd.append(norm)
        else:
            _pgd_checks(c, norm, sub, details, mono, conv, fg)
        rb = t[f"check:random_ball:{norm}"]
        r_acc = (rb & c.cc[:, None]).mean(axis=0)
        a_acc = R.robust_accuracy(worst[norm], [e.value for e in eps])
        gaps = [float(a - b) for a, b in zip(a_acc, r_acc)]
        j = int(np.argmax(gaps))
        rnd.append((gaps[j], f"{norm} eps {labels[j]}", float(a_acc[j]), float(r_acc[j])))
        details[f"random_noise_{norm}"] = {"eps": labels, "accuracy": [float(v) for v in r_acc]}
        if c.bounds is not None:
            reported = worst[norm][sub]
            # no column at an eps where nothing was left standing (no task ran): nothing broken there
            broken = np.stack([t[f"check:reference:{norm}:{lab}"][sub] if f"check:reference:{norm}:{lab}" in t
                               else np.zeros(len(sub), dtype=bool) for lab in labels], axis=1)
            before = [float(np.mean(reported > e.value)) for e in eps]
            after = [float(np.mean((reported > e.value) & ~broken[:, j])) for j, e in enumerate(eps)]
            share = [float(broken[:, j].sum()) / n for j in range(len(eps))]
            desc = _reference_components(c.k)[1]
            details[f"reference_{norm}"] = {"attack": desc, "eps": labels, "reported": before,
                                            "with_reference": after, "n": n}
            j = int(np.argmax(share))
            ref.append((share[j], f"{norm} eps {labels[j]}" if share[j] > 0 else f"{norm}, every eps", before[j],
                        after[j], desc))

    if norms and c.bounds is not None and threat is not None:
        res.check("reference_attack_agrees", "warn",
                  "Skipped: the reference attack (torchattacks' APGD) uses one eps for every input value in a box, "
                  "which cannot honour this tabular threat model (a scale per feature, frozen features). Nothing "
                  "stronger than the "
                  "configured attacks was compared; treat robust accuracy as an upper bound.")
        ref = []
    if no_pgd:  # say so rather than check a PGD that nobody reported
        why = (f"Not measured for {', '.join(no_pgd)}: no PGD ran there (attacks = {cfg['attacks']}), and this "
               "check examines the PGD sweep. Add 'pgd' to attacks to have it checked"
               + ("; reference_attack_agrees still compares the configured attacks with a stronger one." if c.bounds
                  is not None else "."))
        # a check another norm's PGD measured is recorded below from that norm
        measured = {"accuracy_non_increasing_in_eps": bool(mono), "pgd_converged": bool(conv),
                    "pgd_stronger_than_fgsm": bool(fg) or "linf" not in no_pgd}
        for cid, done in measured.items():
            if not done:
                res.check(cid, "warn", why)
    if mono:
        rise = max(R.non_increasing_violation(acc) for _, acc in mono.values())
        record("accuracy_non_increasing_in_eps", K.accuracy_non_increasing(mono, rise, cfg["monotone_tolerance"], n))
    if fg:
        record("pgd_stronger_than_fgsm", K.pgd_stronger_than_fgsm(*fg[0], cfg["strength_tolerance"], n))
    _large_eps(c, sub, details, record)
    if rnd:
        record("attack_stronger_than_noise", K.attack_stronger_than_noise(*max(rnd), cfg["strength_tolerance"]))
    if conv:
        d, where, a, b = max(conv)
        record("pgd_converged", K.pgd_converged(d, where, a, b, cfg["steps"], cfg["restarts"],
                                                list(stronger_losses(cfg["losses"])), cfg["targets"],
                                                cfg["convergence_tolerance"], n))
    if ref:
        d, where, a, b, name = max(ref)
        record("reference_attack_agrees", K.reference_attack_agrees(d, where, a, b, name, cfg["reference_tolerance"], n))
    elif norms and not (c.bounds is not None and threat is not None):
        res.check("reference_attack_agrees", "warn",
                  "Skipped: the reference attack (torchattacks' APGD) works in a box, and the model has no [model] "
                  "input_bounds. Nothing stronger than the configured attacks was compared; treat robust accuracy as "
                  "an upper bound.")
    c.res.tables["checks_detail"] = details


def _pgd_checks(c: _Sum, norm: str, sub: np.ndarray, details: dict[str, Any], mono: dict[str, Any],
                conv: list[Any], fg: list[Any]) -> None:
    """The inputs of accuracy_non_increasing_in_eps, pgd_converged and pgd_stronger_than_fgsm for one norm
    whose PGD sweep ran."""
    cfg, t, n = c.cfg, c.table, len(sub)
    eps = cfg["eps"][norm]
    labels = [e.label for e in eps]
    pgd = t[f"robust:pgd:{norm}:eps_broken"][sub]
    # The independent run at eps j: the sweep's own attack there where it attacked (it survived every
    # smaller eps; see check_tasks for why that is the same run), a fresh run where it had broken earlier.
    # the smallest eps at which the stronger PGD broke each example (nested; no task ran: it broke none)
    sb = t[f"check:pgd_stronger:{norm}"][sub] if f"check:pgd_stronger:{norm}" in t else np.full(n, np.inf)
    indep, strong, reported = [], [], []
    rerun = 0
    for j, e in enumerate(eps):
        left = pgd > e.value  # what the configured PGD sweep left standing at e
        alive = left
        if j and f"check:pgd_rerun:{norm}:{e.label}" in t:
            earlier = pgd <= eps[j - 1].value
            alive = np.where(earlier, t[f"check:pgd_rerun:{norm}:{e.label}"][sub], left)
            rerun += int(earlier.sum())
        indep.append(float(np.mean(alive)))
        reported.append(float(np.mean(left)))
        strong.append(float(np.mean(left & ~(sb <= e.value))))
    details[f"pgd_independent_{norm}"] = {"eps": labels, "steps": cfg["steps"], "accuracy": indep,
                                          "reported_pgd": reported, "accuracy_stronger_pgd": strong, "n": n,
                                          "fresh_runs": rerun}
    mono[norm] = (labels, indep)
    diffs = [a - b for a, b in zip(reported, strong)]
    j = int(np.argmax(diffs))
    conv.append((diffs[j], f"{norm} eps {labels[j]}" if diffs[j] > 0 else f"{norm}, every eps", reported[j],
                 strong[j]))
    if norm == "linf":
        # the FGSM sweep when it ran (the same deterministic computation), else the check's own
        f_col = "robust:fgsm:linf:eps_broken" if "robust:fgsm:linf:eps_broken" in t else "check:fgsm_independent:linf"
        f_acc = R.robust_accuracy(t[f_col][sub], [e.value for e in eps])
        gaps = [p - q for p, q in zip(indep, f_acc)]
        j = int(np.argmax(gaps))
        fg.append((float(gaps[j]), labels[j], indep[j], float(f_acc[j])))
        details["fgsm_independent_linf"] = {"eps": labels, "accuracy": [float(v) for v in f_acc]}


def _eps_too_large(c: _Sum) -> list[str]:
    """The eps of the sweep whose ball holds every valid input (Linf: eps >= the input range; L2: eps >= the
    range times sqrt(input size), the diameter of the input box)."""
    if c.bounds is None:
        return []
    span = c.bounds[1] - c.bounds[0]
    d = int(np.prod(c.facts.input_shape)) if len(c.facts.input_shape) else 1
    lim = {"linf": span, "l2": span * math.sqrt(d)}
    threat = c.cfg.get("_threat")
    if threat is not None:  # in declared units, over the perturbed features: every one can cross the box
        s = threat.scale[threat.mask].astype(np.float64)
        lim = {"linf": float(span / s.min()), "l2": float(span * np.sqrt(np.sum(1.0 / s ** 2)))}
    return [f"{norm} eps {e.label}" for norm, eps in c.cfg["eps"].items() for e in eps if e.value >= lim[norm]]


def _large_eps(c: _Sum, sub: np.ndarray, details: dict[str, Any], record: Any) -> None:
    cfg, res, t = c.cfg, c.res, c.table
    if _frozen(cfg):
        res.check("large_eps_reaches_chance", "warn",
                  f"Skipped: the features the attacks may not change ({cfg['_threat'].frozen_brief()}) can still "
                  "carry the label, so no eps, however large, must bring accuracy down to chance.")
        return
    ys = c.y[sub]
    chance = float(np.bincount(ys, minlength=c.k).max() / len(ys))
    steps = max(cfg["steps"], 20)
    results = []
    for norm in cfg["norm"]:
        e = _large_eps_of(cfg, c.facts, norm)
        if e is None:
            res.check("large_eps_reaches_chance", "warn",
                      f"Skipped for {norm}: no input_bounds and no [robustness] large_eps, so no epsilon is known to be "
                      "large enough. Set large_eps to one at which any input can be moved onto any other.")
            continue
        if f"robust:worst:{norm}:eps_broken" not in t:
            continue
        # broken within the large ball: by a configured attack at an eps up to large_eps (its adversarial
        # input lies inside the large ball), else by the large-eps PGD that ran on the rest
        left = t[f"robust:worst:{norm}:eps_broken"][sub] > e.value
        attacked = int(left.sum())
        if attacked:
            left &= t[f"check:large_eps:{norm}"][sub]
        acc = float(np.mean(left))
        details[f"large_eps_{norm}"] = {"eps": e.label, "steps": steps, "accuracy": acc, "chance": chance,
                                        "attacked_at_large_eps": attacked}
        results.append((norm, e.label, acc, chance, attacked))
    if results:
        record("large_eps_reaches_chance", K.large_eps_reaches_chance(results, cfg["chance_margin"], steps, len(sub)))


def _frozen(plan: Any) -> bool:
    t = plan.get("_threat")
    return t is not None and t.n_frozen() > 0


def _units_decision(c: _Sum) -> tuple[str, str, float | None] | None:
    """perturbation_units: on flat (tabular) data, whether eps means the same on every feature."""
    from audit.attacks.threat import RAW_UNITS_RATIO, raw_units_ratio

    ff, threat = c.facts.features, c.cfg.get("_threat")
    if ff is None:
        return None
    if threat is not None and threat.source != "raw":
        return ("pass", threat.summary(), None)
    if c.facts.input_bounds is not None:  # one box for every feature (flattened pixels): one unit, declared
        return ("pass", f"Eps and noise levels are in the units of [model] input_bounds {list(c.facts.input_bounds)}, "
                        "one box for every feature, so they mean the same on each.", None)
    r = raw_units_ratio(ff, threat)
    frozen = f" Never perturbed: {threat.frozen_brief()}." if threat is not None and threat.n_frozen() else ""
    if r is None:
        return ("pass", "Eps and noise levels are in raw feature units; fewer than two perturbed features vary, so "
                        "there is no spread to compare." + frozen, None)
    ratio, wide, narrow = r
    if ratio > RAW_UNITS_RATIO:
        return ("warn", f"Eps and noise levels are in raw feature units, and the perturbed features' spreads differ "
                        f"{ratio:.3g}-fold (standard deviation of {wide!r} over that of {narrow!r}; warns above "
                        f"{RAW_UNITS_RATIO:g}): the same eps is negligible on one feature and large on another, so "
                        "robust and noise accuracy are dominated by the narrowest features. Declare the units: "
                        "[robustness] feature_scale = \"std\" (eps in standard deviations of each feature), a list, "
                        "or a table by column; immutable = [...] for features that must not change." + frozen, ratio)
    return ("pass", f"Eps and noise levels are in raw feature units; the perturbed features' spreads are within "
                    f"{ratio:.3g}-fold of each other (standard deviation of {wide!r} over {narrow!r}).{frozen}", ratio)


CHECK_IDS = ("perturbation_within_eps", "adversarial_within_bounds", "eps_within_input_range", "gradients_not_masked",
             "accuracy_non_increasing_in_eps", "pgd_stronger_than_fgsm", "large_eps_reaches_chance",
             "attack_stronger_than_noise", "pgd_converged", "reference_attack_agrees", "attack_escalated",
             "frozen_features_unchanged", "perturbation_units")

# the checks whose failure means "the configured PGD is too weak for this model", which a stronger PGD fixes
_ESCALATE_ON = ("pgd_converged", "reference_attack_agrees")


def escalate(plan: _Plan, result: SuiteResult, facts: Facts) -> _Plan | None:
    """The plan of a stronger re-run when this run's convergence or reference check failed and [robustness]
    escalate allows one more: 4 x the steps on the same schedule, one more restart, random starts on. Why
    these: a failed convergence check compares against 2 x the steps and one more restart, so the re-run
    must be stronger than what was compared (its own checks then compare against 8 x the steps); and on the
    adversarially trained digits CNN 40 steps x 2 restarts was the smallest budget within 0.03 of the
    100-step, 5-restart reference (tests/test_attack_strength.py). None: no re-run."""
    done = plan.get("_escalated", 0)
    failed = [c for c in result.checks if c.id in _ESCALATE_ON and c.status == "fail"]
    if not failed or done >= plan["escalate"]:
        return None
    cfg = dict(plan["_section"])
    cfg.update(steps=plan["steps"] * 4, restarts=plan["restarts"] + 1, random_start=True)
    new = validate(cfg, facts)
    new["_escalated"] = done + 1
    new["_escalation"] = list(plan.get("_escalation", [])) + [{
        "from": {"steps": plan["steps"], "restarts": plan["restarts"]},
        "to": {"steps": cfg["steps"], "restarts": cfg["restarts"]},
        "why": [f"{c.id}: {c.message}" for c in failed]}]
    return new

SUITE = Suite("robustness", SECTION.doc, SECTION, METRICS, summarise, validate=validate, fill=fill,
              check_tasks=check_tasks, fill_checks=fill_checks, needs_logits=True, check_ids=CHECK_IDS,
              escalate=escalate)
