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
from audit.suites import robustness_checks as K
from audit.suites.base import MetricSpec, RunContext, Suite

DEFAULT_EPS = {"linf": ["2/255", "4/255", "8/255", "16/255"], "l2": [0.25, 0.5, 1.0]}
DEFAULT_NOISE = {"gaussian": [0.05, 0.1, 0.2, 0.3], "uniform": [0.1, 0.2, 0.3, 0.5],
                 "salt_pepper": [0.02, 0.05, 0.1, 0.2]}


def _p_norms(v: Any) -> list[str]:
    if isinstance(v, str):
        v = [v]
    return p_list(p_str(NORMS), "norms", min_len=1, unique=True)(v)


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
              "AutoAttack runs on fixed chunks of this many examples (in data order), each seeded from the master "
              "seed and its first global index: results do not depend on batch_size.", default=128,
              parse=p_int(1)),
        Field("noise", "table kind -> list of levels",
              "Noise robustness: gaussian (std), uniform (half-width), salt_pepper (fraction of input values "
              "set to a bound; needs input_bounds). An empty table turns it off. Default: gaussian [0.05, 0.1, "
              "0.2, 0.3], uniform [0.1, 0.2, 0.3, 0.5], salt_pepper [0.02, 0.05, 0.1, 0.2].",
              default=None, parse=parse_noise, example="{ gaussian = [0.05, 0.1, 0.2], salt_pepper = [0.05] }"),
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
                                 {"class": _CLASS, "attribute": _ATTR, "group": _GROUP}, choices=_CHOICES),
    "robust_accuracy": MetricSpec(
        "Share of ALL examples that are clean-correct and that no attack (or the named one) broke within eps; "
        "<= clean accuracy by construction.",
        {"norm": _NORM, "eps": _EPS, "attack": _ATTACK, "class": _CLASS, "attribute": _ATTR, "group": _GROUP}, choices=_CHOICES),
    "attack_success_rate": MetricSpec("Share of clean-correct examples broken within eps (1 - robust / clean).",
                                      {"norm": _NORM, "eps": _EPS, "attack": _ATTACK}, choices=_CHOICES),
    "median_breaking_eps": MetricSpec(
        "Lower median over clean-correct examples of the smallest tested eps that broke them; undefined (null, "
        "so a gate is inconclusive) when more than half survive the largest eps.", {"norm": _NORM, "attack": _ATTACK}, choices=_CHOICES),
    "noise_accuracy": MetricSpec(
        "Accuracy over noise_draws seeded noisy copies of every example at one noise level.",
        {"noise": "'gaussian', 'uniform' or 'salt_pepper'", "level": "a level as written in the recipe's noise table",
         "class": _CLASS, "attribute": _ATTR, "group": _GROUP}, choices=_CHOICES),
}

DETERMINISM = (
    "FGSM and PGD: bitwise reproducible for the same seed, and independent of batch size, order and sharding up "
    "to floating-point differences between batched kernels: every random start is drawn per example from the "
    "master seed and the example's global index. AutoAttack: reproducible for the same seed, data and "
    "autoattack_chunk, independent of batch_size; its components draw randomness per chunk, so an example's "
    "result may change when the set of examples changes (another [data] limit, or sharding). Noise: per example "
    "and draw, from the master seed and the global index.")


class _Ctx:
    """What the helpers below share: data, model, settings."""

    def __init__(self, ctx: RunContext, cfg: dict[str, Any]):
        import torch  # noqa: F401  (heavy import only when the suite runs)

        m = ctx.recipe.section("model")
        self.ctx, self.cfg = ctx, cfg
        self.k = int(m["num_classes"])
        self.names = list(m["class_names"]) if m["class_names"] else [str(i) for i in range(self.k)]
        self.bounds = tuple(m["input_bounds"]) if m["input_bounds"] else None
        self.x, self.y, self.index = ctx.data.x, ctx.table["label"], ctx.table["index"]
        self.cc = ctx.table["pred"] == self.y
        self.model, self.device, self.seed = ctx.model, ctx.device, ctx.seed
        self.bs = cfg["batch_size"] or ctx.batch_size
        self.progress = ctx.progress
        self.res = SuiteResult("robustness")
        self.cfg_attacks: list[AttackConfig] = []

    def ci(self, p: float, n: int, *names: Any) -> tuple[float, float] | None:
        return R.binomial_interval(p, n, self.cfg["bootstrap"], rng(self.seed, "robustness", *names),
                                   self.cfg["confidence"])


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


def attack_configs(c: _Ctx) -> list[AttackConfig]:
    cfg = c.cfg
    if cfg["targets"] > c.k - 1:  # also for the checks' stronger PGD, which adds the targeted loss
        if "targeted" in cfg["losses"]:
            c.res.notes.append(f"PGD targeted loss: {c.k - 1} target classes (all the model has) instead of "
                               f"targets = {cfg['targets']}.")
        cfg["targets"] = c.k - 1
    out = []
    for norm in cfg["norm"]:
        for name in cfg["attacks"]:
            eps = cfg["eps"][norm]
            if name == "fgsm":
                if norm != "linf":
                    c.res.notes.append("FGSM is an Linf attack: it was not run for the L2 threat model.")
                    continue
                out.append(AttackConfig("fgsm", norm, eps))
            elif name == "pgd":
                out.append(pgd_config(cfg, norm, eps))
            else:
                if c.bounds is None or c.x.ndim != 4:
                    raise RecipeError(f"{c.ctx.recipe.path}: [robustness] attacks: 'autoattack' needs image inputs "
                                      "of shape (N, C, H, W) and [model] input_bounds (torchattacks' APGD/FAB/Square "
                                      f"work on images in a box); the data has shape {tuple(c.x.shape)}"
                                      f"{'' if c.bounds else ' and no input_bounds'}. Use 'pgd' instead")
                comps, notes = autoattack_components(cfg["autoattack"], c.k)
                c.res.notes.extend(f"AutoAttack: {n}." for n in notes)
                out.append(AttackConfig("autoattack", norm, eps, preset=cfg["autoattack"], components=comps,
                                        chunk=cfg["autoattack_chunk"]))
        if not any(a.norm == norm for a in out):
            raise RecipeError(f"{c.ctx.recipe.path}: [robustness] attacks = {cfg['attacks']}: none of them "
                              f"attacks the {norm} threat model (FGSM is Linf only); add 'pgd' or 'autoattack'")
    return out


def run(ctx: RunContext, cfg: dict[str, Any]) -> SuiteResult:
    import torchattacks

    from audit.attacks import sweep as S

    cfg = settings(cfg, str(ctx.recipe.path))
    c = _Ctx(ctx, cfg)
    res = c.res
    configs = attack_configs(c)
    c.cfg_attacks = configs
    sweeps: list[S.SweepResult] = []
    for a in configs:
        if a.name == "fgsm":
            s = S.fgsm_sweep(c.model, a, c.x, c.y, c.index, c.cc, c.bs, c.device, c.bounds, c.progress)
        elif a.name == "pgd":
            s = S.pgd_sweep(c.model, a, c.x, c.y, c.index, c.cc, c.bs, c.device, c.bounds, c.seed, c.progress)
        else:
            s = S.autoattack_sweep(c.model, a, c.x, c.y, c.index, c.cc, c.device, c.bounds, c.seed, c.k, c.progress)
        ctx.table.add(f"robust:{a.name}:{a.norm}:eps_broken", s.eps_broken)
        sweeps.append(s)
    worst: dict[str, np.ndarray] = {}
    for norm in cfg["norm"]:
        cols = [s.eps_broken for s in sweeps if s.norm == norm]
        if cols:
            worst[norm] = R.worst_case(*cols)
            ctx.table.add(f"robust:worst:{norm}:eps_broken", worst[norm])

    _adversarial_metrics(c, sweeps, worst)
    noise = _noise(c)
    _checks(c, sweeps, worst, configs)

    res.config = {
        "attacks": [a.to_json() for a in configs],
        "norms": cfg["norm"],
        "input_bounds": list(c.bounds) if c.bounds else None,
        "batch_size": c.bs,
        "torchattacks": getattr(torchattacks, "__version__", None),
        "clean_correct": int(c.cc.sum()),
        "n": int(len(c.y)),
        "noise": {k: [e.label for e in v] for k, v in cfg["noise"].items()} if noise else {},
        "noise_draws": cfg["noise_draws"],
        "bootstrap": cfg["bootstrap"], "confidence": cfg["confidence"],
        "interval": "percentile bootstrap over examples (binomial / multinomial replicates)",
        "determinism": DETERMINISM,
        "work": [s.summary() for s in sweeps],
        "columns": [k for k in ctx.table.columns if k.startswith(("robust:", "noise:"))],
    }
    for s in sweeps:
        res.timing[f"{s.attack}:{s.norm}"] = round(s.seconds, 3)
    return res


def _adversarial_metrics(c: _Ctx, sweeps: list, worst: dict[str, np.ndarray]) -> None:
    res, n = c.res, len(c.y)
    clean = float(c.cc.mean()) if n else float("nan")
    res.metric("clean_accuracy", clean, n, c.ci(clean, n, "clean"))
    acc_k, n_k = R.accuracy_by_code(c.cc, c.y, c.k)
    for i in range(c.k):
        res.metric("clean_accuracy", _v(acc_k[i]), int(n_k[i]), c.ci(acc_k[i], int(n_k[i]), "clean", i),
                   **{"class": c.names[i]})
    for attr, codes, cats in c.ctx.table.groups():
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
        for label, col, attack in [(s.attack, s.eps_broken, s.attack) for s in sweeps if s.norm == norm] + \
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
            for attr, codes, cats in c.ctx.table.groups():
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
    aa = [s for s in sweeps if s.attack == "autoattack"]
    if aa:
        aa_cfg = next(a for a in c.cfg_attacks if a.name == "autoattack")
        names = [comp["component"] for comp in aa_cfg.components]
        res.tables["autoattack_components"] = {
            "components": names,
            "rows": [{"norm": s.norm, "eps": lab, "attacked": n_att, "broken": [tally[k] for k in names]}
                     for s in aa for (lab, tally), n_att in zip(s.components.items(), s.attacked)]}


def _noise(c: _Ctx) -> bool:
    from audit.attacks.noise import noise_correct

    cfg, res, n = c.cfg, c.res, len(c.y)
    kinds = dict(cfg["noise"])
    if "salt_pepper" in kinds and c.bounds is None:
        kinds.pop("salt_pepper")
        res.notes.append("Salt-and-pepper noise needs [model] input_bounds (the values it writes): not run.")
    if not kinds or n == 0:
        return False
    draws = cfg["noise_draws"]
    curves, rows = [], {}
    for kind, levels in kinds.items():
        counts = noise_correct(c.model, c.x, c.y, c.index, kind, levels, draws, c.seed, c.bounds, c.device, c.bs,
                               c.progress)
        accs, los, his = [], [], []
        for j, lv in enumerate(levels):
            c.ctx.table.add(f"noise:{kind}:{lv.label}:correct", counts[:, j])
            acc = R.noise_accuracy(counts[:, j], draws)
            ci = R.count_mean_interval(counts[:, j], draws, cfg["bootstrap"],
                                       rng(c.seed, "robustness", "noise", kind, lv.label), cfg["confidence"])
            res.metric("noise_accuracy", acc, n, ci, noise=kind, level=lv.label)
            accs.append(_r(acc))
            los.append(None if ci is None else _r(ci[0]))
            his.append(None if ci is None else _r(ci[1]))
            frac = counts[:, j] / draws
            for i in range(c.k):
                m = c.y == i
                a = float(frac[m].mean()) if m.any() else None
                ci_c = R.count_mean_interval(counts[m, j], draws, cfg["bootstrap"],
                                             rng(c.seed, "robustness", "noise-class", kind, lv.label, i),
                                             cfg["confidence"]) if m.any() else None
                res.metric("noise_accuracy", _v(a), int(m.sum()), ci_c, noise=kind, level=lv.label,
                           **{"class": c.names[i]})
            for attr, codes, cats in c.ctx.table.groups():
                for g, name in enumerate(cats):
                    m = codes == g
                    a = float(frac[m].mean()) if m.any() else None
                    ci_g = R.count_mean_interval(counts[m, j], draws, cfg["bootstrap"],
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


# AutoAttack's gradient components at the cheap preset's budget: the reference of reference_attack_agrees.
REFERENCE_COMPONENTS = ("apgd-ce", "apgd-t")


def _checks(c: _Ctx, sweeps: list, worst: dict[str, np.ndarray], configs: list[AttackConfig]) -> None:
    from audit.attacks import sweep as S
    from audit.attacks.gradients import loss_gradient_stats
    from audit.attacks.noise import random_ball_correct

    res, cfg = c.res, c.cfg
    scale = max(1.0, float(np.max(np.abs(c.x))) if c.x.size else 1.0)
    tol = 1e-6 * scale  # float32 rounding of x + delta - x, relative to the inputs' magnitude
    details: dict[str, Any] = {}

    def record(id: str, decision: tuple[str, str, float | None]) -> None:
        status, msg, value = decision
        res.check(id, status, msg, value=_r(value, 12))  # type: ignore[arg-type]

    # measured perturbation size and bounds
    if sweeps:
        w = max(sweeps, key=lambda s: s.max_norm_excess)
        record("perturbation_within_eps", K.perturbation_within_eps(w.max_norm_excess, tol, f"{w.attack} ({w.norm})"))
        record("adversarial_within_bounds", K.within_bounds(max(s.max_bound_excess for s in sweeps), tol, c.bounds))
    record("eps_within_input_range", K.eps_within_input_range(_eps_too_large(c), c.bounds))

    sub = np.flatnonzero(c.cc)[: cfg["check_examples"]]
    if len(sub) == 0:
        res.check("gradients_not_masked", "warn", "No clean-correct example: nothing to attack, nothing checked.")
        return
    xs, ys, ids = c.x[sub], c.y[sub], c.index[sub]
    ones = np.ones(len(sub), dtype=bool)
    n = int(len(sub))

    losses = _attack_losses(configs)
    # float32_ce and margin are always measured: where plain cross-entropy's gradient is zero but the margin's
    # is not, the softmax saturated (the model is confident), which is not masking
    g = loss_gradient_stats(c.model, xs, ys, c.device, c.bs,
                            [x for ls in losses.values() for x in ls] + ["float32_ce", "margin"])
    blind = {a: int(np.logical_and.reduce([g[x]["zero"] for x in ls]).sum()) for a, ls in losses.items()}
    nonfinite = {a: int(np.logical_or.reduce([g[x]["nonfinite"] for x in ls]).sum()) for a, ls in losses.items()}
    saturated = int((g["float32_ce"]["zero"] & ~g["margin"]["zero"]).sum())
    details["gradients"] = {"n": n, "losses": losses, "blind": blind, "nonfinite": nonfinite,
                            "float32_ce_zero": int(g["float32_ce"]["zero"].sum()),
                            "zero_by_loss": {k: int(v["zero"].sum()) for k, v in g.items()},
                            "median_l1_by_loss": {k: _r(v["median_l1"], 6) for k, v in g.items()}}
    record("gradients_not_masked", K.gradients_not_masked(n, blind, nonfinite, losses, saturated))

    norms = [m for m in cfg["norm"] if any(a.norm == m for a in configs)]
    mono: dict[str, tuple[list[str], list[float]]] = {}
    conv, fg, rnd, ref = [], [], [], []
    for norm in norms:
        eps = cfg["eps"][norm]
        labels = [e.label for e in eps]
        indep, strong = [], []
        for e in eps:  # independent (non-nested) runs: the raw curve that nesting would hide
            one = pgd_config(cfg, norm, [e])
            r1 = S.pgd_sweep(c.model, one, xs, ys, ids, ones, c.bs, c.device, c.bounds, c.seed)
            alive = r1.eps_broken > e.value
            # the stronger PGD: twice the steps at each stride, one restart more, from fresh random starts, with
            # every loss (those the recipe left out too), on what the configured one left standing. On robust
            # models fresh restarts move more than extra steps do (BENCHMARKS.md), so both are added.
            r2 = S.pgd_sweep(c.model, stronger_pgd(one), xs, ys, ids, alive, c.bs, c.device, c.bounds, c.seed,
                             steps=2 * cfg["steps"], restarts=cfg["restarts"] + 1, stream="pgd-stronger")
            indep.append(float(np.mean(alive)))
            strong.append(float(np.mean(alive & (r2.eps_broken > e.value))))
        details[f"pgd_independent_{norm}"] = {"eps": labels, "steps": cfg["steps"], "accuracy": indep,
                                              "accuracy_stronger_pgd": strong, "n": n}
        mono[norm] = (labels, indep)
        diffs = [a - b for a, b in zip(indep, strong)]
        j = int(np.argmax(diffs))
        conv.append((diffs[j], f"{norm} eps {labels[j]}" if diffs[j] > 0 else f"{norm}, every eps", indep[j],
                     strong[j]))
        if norm == "linf":
            f = S.fgsm_sweep(c.model, AttackConfig("fgsm", norm, eps), xs, ys, ids, ones, c.bs, c.device, c.bounds)
            f_acc = R.robust_accuracy(f.eps_broken, [e.value for e in eps])
            gaps = [p - q for p, q in zip(indep, f_acc)]
            j = int(np.argmax(gaps))
            fg.append((float(gaps[j]), labels[j], indep[j], float(f_acc[j])))
            details["fgsm_independent_linf"] = {"eps": labels, "accuracy": [float(v) for v in f_acc]}
        if norm in worst:
            rb = random_ball_correct(c.model, c.x, c.y, c.index, norm, eps, c.seed, c.bounds, c.device, c.bs)
            r_acc = (rb & c.cc[:, None]).mean(axis=0)
            a_acc = R.robust_accuracy(worst[norm], [e.value for e in eps])
            gaps = [float(a - b) for a, b in zip(a_acc, r_acc)]
            j = int(np.argmax(gaps))
            rnd.append((gaps[j], f"{norm} eps {labels[j]}", float(a_acc[j]), float(r_acc[j])))
            details[f"random_noise_{norm}"] = {"eps": labels, "accuracy": [float(v) for v in r_acc]}
            r = _reference(c, norm, eps, worst[norm][sub], xs, ys, ids, details)
            if r is not None:
                ref.append(r)

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
    elif norms:
        res.check("reference_attack_agrees", "warn",
                  "Skipped: the reference attack (torchattacks' APGD) works in a box, and the model has no [model] "
                  "input_bounds. Nothing stronger than the configured attacks was compared; treat robust accuracy as "
                  "an upper bound.")
    c.res.tables["checks_detail"] = details


def _eps_too_large(c: _Ctx) -> list[str]:
    """The eps of the sweep whose ball holds every valid input (Linf: eps >= the input range; L2: eps >= the
    range times sqrt(input size), the diameter of the input box)."""
    if c.bounds is None:
        return []
    span = c.bounds[1] - c.bounds[0]
    d = int(np.prod(c.x.shape[1:])) if c.x.ndim > 1 else 1
    lim = {"linf": span, "l2": span * math.sqrt(d)}
    return [f"{norm} eps {e.label}" for norm, eps in c.cfg["eps"].items() for e in eps if e.value >= lim[norm]]


def _reference(c: _Ctx, norm: str, eps: list[Eps], reported: np.ndarray, xs: np.ndarray, ys: np.ndarray,
               ids: np.ndarray, details: dict[str, Any]) -> tuple[float, str, float, float, str] | None:
    """AutoAttack's gradient components (cheap preset budget) on the checked examples that the configured
    attacks left standing at each eps. Returns the largest share broken, with where and the accuracies."""
    import torch

    from audit.attacks.adapters import AutoAttackRunner, TamedLogits
    from audit.engine.precision import fp32_decisions
    from audit.seeding import stream_key

    if c.bounds is None:
        return None
    comps, _ = autoattack_components("cheap", c.k)
    comps = [comp for comp in comps if comp["component"] in REFERENCE_COMPONENTS]
    if c.k == 3:  # APGD-T needs 4 classes; the untargeted DLR loss works from 3
        comps.append({"component": "apgd-dlr", "class": "APGD", "loss": "dlr", "steps": 20, "n_restarts": 1,
                      "rho": 0.75})
    names = [comp["component"] for comp in comps]
    desc = " + ".join(f"{comp['component'].upper()} {comp['steps']} steps"
                      + (f", {comp['n_target_classes']} targets" if "n_target_classes" in comp else "") for comp in comps)
    if c.k < 4:
        desc += " (APGD-T needs at least 4 classes)"
    desc += ("; APGD-CE on the logits divided by their spread + 1 (the same decisions; its cross-entropy cannot "
             "saturate)")
    # APGD-CE on the tamed logits (plain float32 cross-entropy is blind on confident examples); the others on
    # the model's own logits (taming would bend APGD-T's scale-invariant DLR loss and weaken it)
    runners = [AutoAttackRunner(TamedLogits(c.model) if comp["component"] == "apgd-ce" else c.model, [comp], norm,
                                c.bounds, c.k) for comp in comps]
    chunk = 128
    out, before, after = [], [], []
    for e in eps:
        alive = np.flatnonzero(reported > e.value)
        broken = np.zeros(len(reported), dtype=bool)
        for start in range(0, len(alive), chunk):
            b = alive[start:start + chunk]
            for nm, runner in zip(names, runners):
                b = b[~broken[b]]
                if len(b) == 0:
                    break
                xb = torch.from_numpy(xs[b]).to(c.device)
                yb = torch.from_numpy(ys[b]).to(c.device)
                seed = stream_key(c.seed, "reference", nm, norm, e.label, int(ids[b[0]])) >> 1
                adv, _, _ = runner.run(xb, yb, e.value, [seed])
                with torch.no_grad(), fp32_decisions():
                    wrong = (c.model(adv).argmax(1) != yb).cpu().numpy()
                broken[b[wrong]] = True
        n = len(reported)
        before.append(float(np.mean(reported > e.value)))
        after.append(float(np.mean((reported > e.value) & ~broken)))
        out.append(float(broken.sum()) / n)
    details[f"reference_{norm}"] = {"attack": desc, "eps": [e.label for e in eps], "reported": before,
                                    "with_reference": after, "n": int(len(reported))}
    j = int(np.argmax(out))
    return out[j], f"{norm} eps {eps[j].label}" if out[j] > 0 else f"{norm}, every eps", before[j], after[j], desc


def _large_eps(c: _Ctx, sub: np.ndarray, details: dict[str, Any], record: Any) -> None:
    from audit.attacks import sweep as S

    cfg, res = c.cfg, c.res
    xs, ys, ids = c.x[sub], c.y[sub], c.index[sub]
    d = int(np.prod(c.x.shape[1:]))
    chance = float(np.bincount(ys, minlength=c.k).max() / len(ys))
    steps = max(cfg["steps"], 20)
    results = []
    for norm in cfg["norm"]:
        given = cfg["large_eps"].get(norm)
        if given is not None:
            e = given
        elif c.bounds is not None:
            half = 0.5 * (c.bounds[1] - c.bounds[0])
            v = half if norm == "linf" else half * math.sqrt(d)
            e = Eps(v, str(float(v)))
        else:
            res.check("large_eps_reaches_chance", "warn",
                      f"Skipped for {norm}: no input_bounds and no [robustness] large_eps, so no epsilon is known to be "
                      "large enough. Set large_eps to one at which any input can be moved onto any other.")
            continue
        one = AttackConfig("pgd", norm, [e], steps=steps, restarts=1, random_start=True, losses=tuple(cfg["losses"]),
                           targets=cfg["targets"])
        r = S.pgd_sweep(c.model, one, xs, ys, ids, np.ones(len(sub), bool), c.bs, c.device, c.bounds, c.seed,
                        stream="large-eps")
        acc = float(np.mean(r.eps_broken > e.value))
        details[f"large_eps_{norm}"] = {"eps": e.label, "steps": steps, "accuracy": acc, "chance": chance}
        results.append((norm, e.label, acc, chance))
    if results:
        record("large_eps_reaches_chance", K.large_eps_reaches_chance(results, cfg["chance_margin"], steps, len(sub)))


CHECK_IDS = ("perturbation_within_eps", "adversarial_within_bounds", "eps_within_input_range", "gradients_not_masked",
             "accuracy_non_increasing_in_eps", "pgd_stronger_than_fgsm", "large_eps_reaches_chance",
             "attack_stronger_than_noise", "pgd_converged", "reference_attack_agrees")

SUITE = Suite("robustness", SECTION.doc, SECTION, METRICS, run, needs_logits=True, check_ids=CHECK_IDS)
