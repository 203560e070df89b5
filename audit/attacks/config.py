"""The attack configuration: names, norms, epsilons (with the labels gates use), step sizes, presets.

Epsilon labels. Every epsilon keeps a canonical string label, used as the ``eps`` param of metric records
and therefore by gates (which compare params as strings):

- written as a fraction string in the recipe ("8/255", "8 / 255"): the fraction without spaces, "8/255";
- written as a number (0.1, 1, 1.0): ``str(float(v))``, i.e. "0.1", "1.0".

So a gate names an epsilon exactly as the recipe's list does: ``params = { eps = "8/255" }`` or
``params = { eps = 0.1 }`` (a TOML number is turned into the same string).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from audit.attacks.losses import LOSS_DOC, LOSSES
from audit.recipe.fields import FieldError, p_number_or_fraction

ATTACKS = ("fgsm", "pgd", "autoattack")
NORMS = ("linf", "l2")
NOISES = ("gaussian", "uniform", "salt_pepper")
TORCHATTACKS_NORM = {"linf": "Linf", "l2": "L2"}


@dataclass(frozen=True, order=True)
class Eps:
    """An epsilon: its value and the label the report and gates use."""

    value: float
    label: str

    def __str__(self) -> str:
        return self.label


def eps_label(v: Any) -> str:
    """The canonical label of an epsilon (or noise level) as written in the recipe."""
    if isinstance(v, str):
        return "".join(v.split())
    return str(float(v))


def parse_eps(v: Any) -> Eps:
    value = p_number_or_fraction(0.0, lo_open=True)(v)
    return Eps(value, eps_label(v))


def _raw(v: Any) -> str | float:
    """The JSON-able form kept in the recipe: a fraction string without spaces, or a float."""
    return "".join(v.split()) if isinstance(v, str) else float(v)


def parse_eps_list(v: Any, what: str = "epsilons") -> list[str | float]:
    """A non-empty list of positive numbers or fraction strings; returned sorted ascending (JSON-able:
    strings without spaces, numbers as floats), distinct values. ``to_eps`` turns it into ``Eps``."""
    if not isinstance(v, list) or not v:
        raise FieldError(f'expected a non-empty list of {what} (numbers or fraction strings like "8/255")')
    out = []
    for i, x in enumerate(v):
        try:
            out.append((parse_eps(x), _raw(x)))
        except FieldError as e:
            raise FieldError(f"item {i}: {e}") from None
    out.sort(key=lambda t: t[0].value)
    vals = [e.value for e, _ in out]
    if len(set(vals)) != len(vals):
        raise FieldError(f"expected distinct {what} (two items have the same value)")
    return [r for _, r in out]


def to_eps(raw: list[Any]) -> list[Eps]:
    return sorted(parse_eps(v) for v in raw)


def by_norm(v: Any, parse: Callable[[Any], Any]) -> Any:
    """``parse(v)`` for one value that applies to every norm, or a table norm -> value, each parsed (an
    error names the norm)."""
    if not isinstance(v, dict):
        return parse(v)
    out = {}
    for k, x in v.items():
        if k not in NORMS:
            raise FieldError(f"unknown norm {k!r} (allowed: {', '.join(NORMS)})")
        try:
            out[k] = parse(x)
        except FieldError as e:
            raise FieldError(f"{k}: {e}") from None
    return out


def parse_eps_by_norm(v: Any) -> dict[str, list[str | float]] | list[str | float]:
    """A list (for the single norm given in ``norm``) or a table norm -> list."""
    return by_norm(v, parse_eps_list)


def _one_eps(x: Any) -> str | float:
    parse_eps(x)
    return _raw(x)


def parse_one_eps_by_norm(v: Any) -> dict[str, str | float] | str | float:
    return by_norm(v, _one_eps)


def parse_noise(v: Any) -> dict[str, list[str | float]]:
    """A table kind -> list of levels; an empty table turns noise robustness off."""
    if not isinstance(v, dict):
        raise FieldError('expected a table such as { gaussian = [0.05, 0.1], salt_pepper = [0.02] }')
    out = {}
    for k, lst in v.items():
        if k not in NOISES:
            raise FieldError(f"unknown noise {k!r} (allowed: {', '.join(NOISES)})")
        try:
            levels = parse_eps_list(lst, "levels")
        except FieldError as e:
            raise FieldError(f"{k}: {e}") from None
        if k == "salt_pepper" and any(e.value > 1 for e in to_eps(levels)):
            raise FieldError("salt_pepper levels are fractions of input values, in (0, 1]")
        out[k] = levels
    return out


# The default PGD step: a fixed fraction of eps that does not shrink with the number of steps, halved at
# half and at three quarters of the steps. Madry et al.'s 2.5 * eps / steps halves the step whenever the
# steps double, so "twice the steps" was the same walk in finer strides and the convergence check could not
# see a weak attack; a step tied to eps with a decay converges as the steps grow (the same idea as APGD's
# halving step from 2 eps, Croce & Hein 2020, on a fixed timetable). The first step is eps itself: any
# schedule of 2 or more steps then travels at least 2 eps, the ball's diameter, so a random start on the
# wrong side can still reach the far corner (0.25 eps with decay travels 1.7 eps in 10 steps and misses the
# exact optimum of a linear model). Measured on the digits CNNs (BENCHMARKS.md, "first step"): 1.0 eps is
# as strong as 0.5-2 eps on the bundled model and among the strongest on an adversarially trained one.
DEFAULT_STEP_FRACTION = 1.0
SCHEDULES = ("decay", "constant")


@dataclass(frozen=True)
class StepSize:
    """A PGD step size: ``value`` in input units, or ``value * eps`` when ``relative``."""

    value: float
    relative: bool

    def at(self, eps: float) -> float:
        return self.value * eps if self.relative else self.value

    def label(self) -> str:
        return f"{self.value:g} * eps" if self.relative else f"{self.value:g}"


DEFAULT_STEP = StepSize(DEFAULT_STEP_FRACTION, True)
_REL = re.compile(r"^(?:(?P<f>[0-9.eE+-]+(?:/[0-9.eE+-]+)?)\*)?eps(?:/(?P<d>[0-9.eE+-]+))?$")


def parse_step_size(v: Any) -> str | float | None:
    """'auto' (None), an absolute step (number or fraction string), or a fraction of eps written
    "0.25 * eps", "1/4 * eps" or "eps / 4". Returned JSON-able: None, a float, or the relative form without
    spaces ("0.25*eps")."""
    if v == "auto" or v is None:
        return None
    if isinstance(v, str) and "eps" in v:
        m = _REL.match("".join(v.split()))
        if not m:
            raise FieldError(f'{v!r} is not a step size: write "auto", a number, or a fraction of eps such as '
                             '"0.25 * eps" or "eps / 4"')
        try:
            f = p_number_or_fraction(0.0, lo_open=True)(m.group("f")) if m.group("f") else 1.0
            d = p_number_or_fraction(0.0, lo_open=True)(m.group("d")) if m.group("d") else 1.0
        except FieldError as e:
            raise FieldError(f"{v!r}: {e}") from None
        return f"{f / d!r}*eps"
    return float(p_number_or_fraction(0.0, lo_open=True)(v))


def parse_step_size_by_norm(v: Any) -> dict[str, str | float | None] | str | float | None:
    """One step size for every norm, or a table by norm (``{ linf = "eps / 4", l2 = 0.1 }``)."""
    return by_norm(v, parse_step_size)


def to_step_size(raw: str | float | None) -> StepSize:
    if raw is None:
        return DEFAULT_STEP
    if isinstance(raw, str):
        return StepSize(float(raw.split("*")[0]), True)
    return StepSize(float(raw), False)


def step_schedule(step: StepSize, eps: float, steps: int, schedule: str = "decay") -> list[float]:
    """The step size of each of ``steps`` iterations at ``eps``: constant, or ("decay") halved from step
    steps // 2 on and again from step 3 * steps // 4 on: the strides are fixed fractions of eps (eps,
    eps/2, eps/4 by default) whatever the number of steps, so doubling the steps doubles the iterations
    at every stride instead of shrinking them all (with 2.5 eps / steps, twice the steps was the same walk
    in half strides). Schedules of 1 or 2 steps are not halved and 3 steps once, so that the default first
    step of eps always travels at least the ball's diameter, 2 eps. (A schedule adding a finer stride each
    time the steps double was tried: at 40 steps it found fewer adversarial examples on an adversarially
    trained CNN, 0.408 against 0.383 robust accuracy at eps 0.2.)"""
    a = step.at(eps)
    if schedule == "constant" or steps < 3:
        return [a] * steps
    return [a * 0.5 ** ((t >= steps // 2) + (t >= (3 * steps) // 4 and steps >= 4)) for t in range(steps)]


@dataclass
class AttackConfig:
    """One attack as it ran (norm-specific). ``to_json`` is what the report prints."""

    name: str  # fgsm | pgd | autoattack
    norm: str
    eps: list[Eps]
    steps: int = 1
    step_size: StepSize = DEFAULT_STEP
    restarts: int = 1  # pgd: random restarts per loss
    random_start: bool = False
    losses: tuple[str, ...] = ("ce",)  # pgd: every restart runs each of them, in this order
    schedule: str = "decay"
    targets: int = 3  # pgd with loss "targeted": runs per restart, one per target class (at most k - 1)
    preset: str | None = None  # autoattack
    components: list[dict[str, Any]] = field(default_factory=list)  # autoattack: exact sub-attack settings
    chunk: int | None = None

    @property
    def key(self) -> str:
        return f"{self.name}:{self.norm}"

    def alphas(self, eps: float, steps: int | None = None) -> list[float]:
        return step_schedule(self.step_size, eps, steps or self.steps, self.schedule)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"attack": self.name, "norm": self.norm, "eps": [e.label for e in self.eps],
                             "eps_values": [e.value for e in self.eps]}
        if self.name == "fgsm":
            d.update(implementation="audit.attacks.adapters.FGSMAttack (torchattacks.FGSM subclass)",
                     loss="ce: " + LOSS_DOC["ce"] + "; summed over the batch", steps=1, random_start=False,
                     note="one gradient per example at the clean input, reused for every epsilon")
        elif self.name == "pgd":
            cls = "PGD" if self.norm == "linf" else "PGDL2"
            d.update(implementation=f"audit.attacks.adapters.PGDAttack (torchattacks.{cls} subclass)",
                     losses=list(self.losses), loss_doc={k: LOSS_DOC[k] for k in self.losses},
                     steps=self.steps, restarts=self.restarts, random_start=self.random_start,
                     **({"targets": self.targets} if "targeted" in self.losses else {}),
                     runs_per_example=self.restarts * sum(self.targets if x == "targeted" else 1 for x in self.losses),
                     runs="each restart runs every loss in turn (a fresh random start each"
                          + ("; the targeted loss once per target class" if "targeted" in self.losses else "")
                          + "); an example broken by one run is not attacked again: the result is the per-example "
                            "worst case over all runs",
                     step_size=self.step_size.label(), step_schedule=self.schedule,
                     # in the order of "eps" (a table keyed by label would be shown sorted as strings)
                     step_sizes=[f"{e.label}: " + ", ".join(f"{a:.4g}" for a in self.alphas(e.value))
                                 for e in self.eps],
                     success="an example counts as broken if any iterate (including the random start) is "
                             "misclassified; broken examples stop early",
                     random_start_seed="per example: f(master seed, 'pgd', norm, eps, restart, loss, global index)",
                     nesting="each eps attacks only the survivors of the smaller ones, each survivor exactly as "
                             "a fresh run at that eps would (same start and steps): never weaker than fresh runs")
        else:
            d.update(implementation="audit.attacks.adapters.AutoAttackRunner (torchattacks APGD, APGDT, FAB, "
                                    "Square run in sequence on the survivors, as torchattacks.MultiAttack does)",
                     preset=self.preset, components=self.components, chunk=self.chunk,
                     seed="per chunk: f(master seed, component, norm, eps, first global index of the chunk)")
        return d


# AutoAttack (Croce & Hein, ICML 2020). "standard" is the reference version=standard of fra31/auto-attack:
# APGD-CE (100 steps, 1 restart), APGD-T (100 steps, 9 target classes), FAB-T (100 steps, 9 target
# classes), Square (5000 queries, p_init 0.8). torchattacks' own AutoAttack uses 10-step defaults for
# APGD/APGD-T/FAB: we construct every component explicitly instead.
AUTOATTACK_PRESETS: dict[str, list[dict[str, Any]]] = {
    "standard": [
        {"component": "apgd-ce", "class": "APGD", "loss": "ce", "steps": 100, "n_restarts": 1, "rho": 0.75},
        {"component": "apgd-t", "class": "APGDT", "steps": 100, "n_restarts": 1, "n_target_classes": 9,
         "rho": 0.75},
        {"component": "fab-t", "class": "FAB", "multi_targeted": True, "steps": 100, "n_restarts": 1,
         "n_target_classes": 9, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9},
        {"component": "square", "class": "Square", "n_queries": 5000, "n_restarts": 1, "p_init": 0.8,
         "loss": "margin"},
    ],
    # A screening preset about 10x cheaper: fewer steps and targets, Square with 1000 queries, no FAB-T
    # (which the AutoAttack paper found adds little after APGD-T). Its robust accuracy is an upper bound
    # that the standard version may lower: do not report it as "AutoAttack".
    "cheap": [
        {"component": "apgd-ce", "class": "APGD", "loss": "ce", "steps": 20, "n_restarts": 1, "rho": 0.75},
        {"component": "apgd-t", "class": "APGDT", "steps": 20, "n_restarts": 1, "n_target_classes": 3,
         "rho": 0.75},
        {"component": "square", "class": "Square", "n_queries": 1000, "n_restarts": 1, "p_init": 0.8,
         "loss": "margin"},
    ],
}


def autoattack_components(preset: str, num_classes: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The components that will run for ``num_classes`` classes, and notes on what was adapted."""
    comps, notes = [], []
    for c in AUTOATTACK_PRESETS[preset]:
        c = dict(c)
        if "n_target_classes" in c:
            if c["class"] == "APGDT" and num_classes < 4:
                notes.append(f"{c['component']} skipped: its targeted DLR loss needs at least 4 classes "
                             f"(the model has {num_classes}), as in the reference implementation")
                continue
            if num_classes - 1 < c["n_target_classes"]:
                notes.append(f"{c['component']}: {num_classes - 1} target classes (all the model has) instead "
                             f"of {c['n_target_classes']}")
                c["n_target_classes"] = num_classes - 1
        comps.append(c)
    return comps, notes


def finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


__all__ = ["ATTACKS", "AUTOATTACK_PRESETS", "AttackConfig", "DEFAULT_STEP", "Eps", "LOSSES", "NOISES", "NORMS",
           "SCHEDULES", "StepSize", "asdict", "autoattack_components", "eps_label", "parse_step_size",
           "parse_step_size_by_norm", "step_schedule", "to_step_size", "parse_eps", "parse_eps_by_norm",
           "parse_eps_list", "parse_noise", "parse_one_eps_by_norm", "to_eps"]
