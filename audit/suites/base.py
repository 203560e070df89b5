"""What a suite is and what it is given.

A suite is three steps (torchmetrics' state/update/compute, with "concatenate rows" as the reduction):

1. ``validate(section, facts) -> plan``: the recipe section checked against the data's facts (attributes,
   shape, bounds, class count) before any suite does any work, so a typo in one suite's table is an exit 2
   before another suite spent an hour attacking. The plan is what ``fill`` and ``summarise`` use.
2. ``fill(fill_context, plan, positions, rows) -> Part``: per-example columns for the given rows only
   (positions in the data; ``rows`` is the table of their core columns), with the model in hand. A rank
   of a torchrun job fills its blocks; a resumed run fills only the blocks its cache lacks. Validity
   checks that need the model are work here too: as columns (``check:...``), or as mergeable partial
   results (``Part.partials``: e.g. the largest perturbation measured) that ``summarise`` reduces.
   Work on a subset chosen from the whole table (the checks' examples) is a second fill,
   ``fill_checks(fill_context, plan, positions, rows, task)``, over the tasks ``check_tasks`` lists from
   the complete table of the first: (rows, what to compute on them) pairs, dealt to ranks like blocks.
3. ``summarise(table, plan, facts, partials) -> SuiteResult``: metric records, checks, curves and tables
   from the complete table, with no model: pure (``audit.metrics`` holds the formulas).

Suites do not read each other's results or private config: a suite that crosses with another (fairness
with robustness) reads the other's columns, through their metadata (``ExampleTable.column_meta``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from audit.recipe.fields import Section
from audit.report.records import SuiteResult

if TYPE_CHECKING:  # heavy imports only for type checkers: `audit --help` must stay fast
    import numpy as np
    import torch

    from audit.engine.data import Dataset
    from audit.engine.table import ExampleTable, Part
    from audit.engine.wrapper import WrappedModel
    from audit.recipe.load import Recipe


class Progress(Protocol):
    def __call__(self, total: int, desc: str) -> Any: ...


HIGHER, LOWER, UNSET = "higher", "lower", "unset"


@dataclass(frozen=True)
class MetricSpec:
    """An entry of the metric catalogue: what a gate may name."""

    doc: str
    params: dict[str, str] = field(default_factory=dict)  # param name -> allowed values, in words
    # The metric summarises another metric (named by its ``metric`` param) and also takes that metric's
    # own params, e.g. repro.seed_std with { metric = "performance.f1", average = "macro" }.
    extra_params: bool = False
    # Params whose values form a closed set: a gate naming another value is a recipe error (exit 2).
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Which way is better: "higher" (accuracy), "lower" (ECE, a disparity) or None (no direction: prevalence,
    # a fitted temperature). `audit diff` calls a significant change improved/regressed only with a
    # direction (None: changed). Every catalogue entry sets it; UNSET is only the dataclass default, and a
    # test refuses it.
    better: str | None = "unset"
    # The range the metric can take, (low, high), None for an open end: (0, 1) for a proportion, (-1, 1) for
    # MCC, (0, None) for NLL; None: unbounded or not declared. Intervals over seeds are clipped to it.
    bounds: tuple[float | None, float | None] | None = None


UNIT = (0.0, 1.0)  # the bounds of a proportion or an area under a curve


def metric_bounds(suite: str, name: str) -> tuple[float | None, float | None] | None:
    """The declared range of ``suite.name`` from its suite's metric catalogue (None: none declared)."""
    from audit.suites import get_suite, suite_names

    if suite not in suite_names():
        return None
    spec = get_suite(suite).metrics.get(name)
    return None if spec is None else spec.bounds


@dataclass
class Facts:
    """What ``validate`` and ``summarise`` may know besides the table: the recipe and the data's shape,
    never the model or the inputs themselves."""

    recipe: "Recipe"
    seed: int
    num_classes: int
    class_names: list[str]
    input_bounds: tuple[float, float] | None
    input_shape: tuple[int, ...]
    input_absmax: float  # max |x| over the data (the float32 rounding scale of a perturbation)
    n: int
    attributes: list[str]  # sensitive attributes of the data
    categories: dict[str, list[str]]  # attribute -> its group names
    index: "np.ndarray"  # global index of every evaluated example, in table order
    batch_size: int
    # flat (N, F) data only, else None: feature names, one-hot and sensitive features, per-feature std and
    # range (``audit.attacks.threat.feature_facts``): what the tabular threat model is resolved from
    features: dict[str, Any] | None = None

    @property
    def where(self) -> str:
        return str(self.recipe.path)


@dataclass
class FillContext:
    """What ``fill`` is given: the model and the inputs (rows are taken by position)."""

    model: "WrappedModel"
    data: "Dataset"
    device: "torch.device"
    seed: int
    batch_size: int
    progress: Progress
    facts: Facts


def _as_is(cfg: dict[str, Any], facts: Facts) -> Any:  # noqa: ARG001 - the default validate
    return cfg


@dataclass(frozen=True)
class Suite:
    name: str
    doc: str
    section: Section
    metrics: dict[str, MetricSpec]
    summarise: Callable[["ExampleTable", Any, Facts, dict[str, list[dict[str, Any]]]], SuiteResult]
    validate: Callable[[dict[str, Any], Facts], Any] = _as_is
    # None: the suite needs only the core columns (label, logits, groups) that the clean pass fills
    fill: Callable[[FillContext, Any, "np.ndarray", "ExampleTable"], "Part"] | None = None
    check_tasks: Callable[["ExampleTable", Any], list[tuple["np.ndarray", Any]]] | None = None
    fill_checks: Callable[[FillContext, Any, "np.ndarray", "ExampleTable", Any], "Part"] | None = None
    # Suites whose numbers are wrong on a softmax output (attacks follow logit gradients) make the
    # core check logits_not_probabilities fail instead of warn.
    needs_logits: bool = False
    # A stronger plan to re-run fill, checks and summarise with when this run's result shows its own
    # measurement was too weak (robustness: an attack that has not converged), else None.
    escalate: Callable[[Any, SuiteResult, Facts], Any] | None = None
    # Ids of the validity checks the suite can record (what [validity] downgrade may name).
    check_ids: tuple[str, ...] = ()
    # A suite with its own command (``audit repro``): it declares a recipe section and metrics (so gates
    # can name them) but `audit run` never runs it; ``summarise`` is not called.
    command_only: bool = False
    # What its records' ``n`` counts. Gates that set no min_n get the default one (audit.report.gates
    # DEFAULT_MIN_N) only where n counts examples; a count of runs (repro: seeds) is not a sample size.
    n_counts: str = "examples"
