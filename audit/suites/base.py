"""What a suite is and what it is given.

A suite reads the wrapped model and the data, adds columns to the per-example table, and returns a
SuiteResult (metric records, validity checks, curves and tables for the renderers). Metrics themselves
are pure functions in ``audit.metrics``; suites only orchestrate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from audit.recipe.fields import Section
from audit.report.records import SuiteResult

if TYPE_CHECKING:  # heavy imports only for type checkers: `audit --help` must stay fast
    import torch

    from audit.engine.data import Dataset
    from audit.engine.table import ExampleTable
    from audit.engine.wrapper import WrappedModel
    from audit.recipe.load import Recipe


class Progress(Protocol):
    def __call__(self, total: int, desc: str) -> Any: ...


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


@dataclass
class RunContext:
    recipe: "Recipe"
    model: "WrappedModel"
    data: "Dataset"
    table: "ExampleTable"
    seed: int
    device: "torch.device"
    batch_size: int
    progress: Progress
    results: dict[str, SuiteResult] = field(default_factory=dict)  # suites that ran before, by name

    def section(self, name: str) -> dict[str, Any]:
        return self.recipe.section(name)


@dataclass(frozen=True)
class Suite:
    name: str
    doc: str
    section: Section
    metrics: dict[str, MetricSpec]
    run: Callable[[RunContext, dict[str, Any]], SuiteResult]
    # Suites whose numbers are wrong on a softmax output (attacks follow logit gradients) make the
    # core check logits_not_probabilities fail instead of warn.
    needs_logits: bool = False
    # Ids of the validity checks the suite can record (what [validity] downgrade may name).
    check_ids: tuple[str, ...] = ()
    # A suite with its own command (``audit repro``): it declares a recipe section and metrics (so gates
    # can name them) but `audit run` never runs it; ``run`` is not called.
    command_only: bool = False
    # What its records' ``n`` counts. Gates that set no min_n get the default one (audit.report.gates
    # DEFAULT_MIN_N) only where n counts examples; a count of runs (repro: seeds) is not a sample size.
    n_counts: str = "examples"
