"""The reproducibility suite: run by ``audit repro`` (``audit.repro.study``), never by ``audit run``.

It is registered as a command-only suite so that its recipe section ([repro]) is validated and
documented like every other, and its metrics are in the catalogue that [[gates]] may name.

Metric records (suite "repro"):

  bitwise_identical            {}         1 when every same-seed repeat reproduced the first run bitwise
  within_tolerance             {}         1 when every repeat is within [repro] tolerance
  max_abs_logit_diff           {}         largest |delta logit| between a repeat and the first run
  prediction_flips             {}         most predictions that changed in one repeat
  outcome_flips                {}         most per-example attack/noise outcomes that changed in one repeat
  metrics_changed              {}         most metric records that changed in one repeat
  nondeterministic_ops         {} | {phase}   ops that raised PyTorch's nondeterminism alert on this device
  latent_cuda_hazards          {} | {phase}   ops the model runs that PyTorch documents as nondeterministic on CUDA
  batch_invariance_max_abs_diff  {}       largest |delta logit| between batch size 1 and the configured one
  batch_invariance_flips       {}         predictions that differ between batch size 1 and the configured one
  seed_mean / seed_std / seed_min / seed_max / seed_worst / seeds_needed
                               {metric, ...that metric's params}   across seeds; seed_mean carries the
                                                                   t-interval as ci_low/ci_high
  prediction_churn             {}         mean fraction of predictions that differ between two seeds
  outcome_churn                {column}   the same for a per-example outcome column (robust:..., noise:...)
"""

from __future__ import annotations

from typing import Any

from audit.errors import RecipeError
from audit.recipe.fields import Field, Section, p_bool, p_float, p_int
from audit.report.records import SuiteResult
from audit.suites.base import MetricSpec, Suite

SECTION = Section(
    "repro",
    "Settings of `audit repro`: the audit's stochastic parts (attack random starts, noise draws, bootstrap) "
    "run under several seeds and repeated under one seed, each in a fresh process, plus a capture run under "
    "torch.use_deterministic_algorithms(True, warn_only=True) that names nondeterministic ops. `audit run` "
    "ignores this section. Gates on repro metrics go in the same [[gates]] list (metric = \"repro.NAME\").",
    (
        Field("seeds", "integer >= 2", "Seeds to run when --seeds is not given: the master seed, then the next "
              "ones (seed, seed + 1, ...).", default=5, parse=p_int(2, 1000), example="5"),
        Field("repeats", "integer >= 1",
              "Extra runs of the first seed (fresh processes) compared bitwise with its first run.", default=2,
              parse=p_int(1, 100), example="2"),
        Field("capture", "true | false",
              "One more run of the first seed under deterministic-algorithms warn-only mode, recording every "
              "nondeterminism alert with its op and phase, the ops the model runs (latent CUDA hazards) and "
              "the batch-size probe.", default=True, parse=p_bool),
        Field("batch_invariance", "true | false",
              "In the capture run, compare logits computed one example at a time with the configured batch "
              "size.", default=True, parse=p_bool),
        Field("batch_invariance_examples", "integer >= 1", "Examples in the batch-size probe.", default=256,
              parse=p_int(1), example="256"),
        Field("tolerance", "number >= 0",
              "within_tolerance holds when no logit and no metric moves by more than this between same-seed "
              "runs and no prediction flips.", default=0.0, parse=p_float(0.0), example="1e-6"),
        Field("confidence", "number in [0.5, 0.999]", "Level of the across-seed t-intervals.", default=0.95,
              parse=p_float(0.5, 0.999), example="0.95"),
        Field("target_half_width", "number > 0",
              "For seeds_needed: the half-width of the across-seed interval you want for each metric, in the "
              "metric's own units (0.01 is one percentage point of an accuracy; the same number applies to NLL "
              "or a temperature, so read their seeds_needed with that in mind). The count plugs in the observed "
              "seed-to-seed std, itself uncertain with few seeds.",
              default=0.01, parse=p_float(0.0, lo_open=True), example="0.005"),
        Field("jobs", "integer >= 1",
              "Runs at once (each is its own process). More than one saves time on machines with spare cores; "
              "on one GPU keep 1.", default=1, parse=p_int(1, 64), example="2"),
    ),
    example='[repro]\nseeds = 5\nrepeats = 2\ntarget_half_width = 0.005\n\n[[gates]]\nmetric = "repro.bitwise_identical"\n'
            'op = ">="\nthreshold = 1\n\n[[gates]]\nmetric = "repro.seed_std"\n'
            'params = { metric = "robustness.robust_accuracy", norm = "linf", eps = "8/255" }\nop = "<="\n'
            'threshold = 0.01',
)

_PHASE = "'inference' | 'attack_gradient' | 'training' (default: all phases)"
_PHASES = {"phase": ("inference", "attack_gradient", "training")}
_OF = ('the summarised metric as "suite.name" (e.g. "performance.accuracy"), plus that metric\'s own params '
       '(e.g. average = "macro")')

METRICS = {
    "bitwise_identical": MetricSpec(
        "1 when every same-seed repeat (a fresh process) reproduced the first run bitwise: SHA-256 of every "
        "per-example column (logits, predictions, attack and noise outcomes) and of every metric record; "
        "else 0. n = the number of repeats.", better="higher"),
    "within_tolerance": MetricSpec(
        "1 when no same-seed repeat moved a logit or a metric by more than [repro] tolerance and no prediction "
        "flipped; else 0.", better="higher"),
    "max_abs_logit_diff": MetricSpec("Largest |delta logit| between a same-seed repeat and the first run.", better="lower"),
    "prediction_flips": MetricSpec("Most predictions that changed between a same-seed repeat and the first run.", better="lower"),
    "outcome_flips": MetricSpec("Most per-example attack/noise outcomes that changed between a same-seed repeat "
                                "and the first run.", better="lower"),
    "metrics_changed": MetricSpec("Most metric records (value or interval) that changed between a same-seed "
                                  "repeat and the first run.", better="lower"),
    "nondeterministic_ops": MetricSpec(
        "Distinct ops that raised PyTorch's nondeterminism alert on this device in the capture run "
        "(torch.use_deterministic_algorithms(True, warn_only=True)).", {"phase": _PHASE}, choices=_PHASES, better="lower"),
    "latent_cuda_hazards": MetricSpec(
        "Distinct ops the model runs (forward, input gradient, parameter gradient) that PyTorch documents as "
        "nondeterministic on CUDA: hazards for a GPU run, found on any device.", {"phase": _PHASE}, choices=_PHASES, better="lower"),
    "batch_invariance_max_abs_diff": MetricSpec(
        "Largest |delta logit| between batch size 1 and the configured batch size (capture run).", better="lower"),
    "batch_invariance_flips": MetricSpec("Predictions that differ between batch size 1 and the configured batch "
                                         "size (capture run).", better="lower"),
    "seed_mean": MetricSpec("Mean of a metric across seeds; ci_low/ci_high: its Student-t interval at [repro] "
                            "confidence.", {"metric": _OF}, extra_params=True, better=None),
    "seed_std": MetricSpec("Sample standard deviation (n - 1) of a metric across seeds.", {"metric": _OF},
                           extra_params=True, better="lower"),
    "seed_min": MetricSpec("Smallest value of a metric across seeds.", {"metric": _OF}, extra_params=True, better=None),
    "seed_max": MetricSpec("Largest value of a metric across seeds.", {"metric": _OF}, extra_params=True, better=None),
    "seed_worst": MetricSpec("The metric's value under its worst seed (lowest where higher is better, highest "
                             "where lower is better, else farthest from the mean).", {"metric": _OF},
                             extra_params=True, better=None),
    "seeds_needed": MetricSpec("Seeds needed for the metric's t-interval half-width to reach [repro] "
                               "target_half_width, given the observed spread.", {"metric": _OF}, extra_params=True, better="lower"),
    "prediction_churn": MetricSpec("Mean over pairs of seeds of the fraction of examples whose prediction "
                                   "differs.", better="lower"),
    "outcome_churn": MetricSpec("Mean over pairs of seeds of the fraction of examples whose per-example outcome "
                                "differs.", {"column": "an examples.npz column, e.g. \"robust:worst:linf:eps_broken\""}, better="lower"),
}


def summarise(table: Any, cfg: Any, facts: Any, partials: Any = None) -> SuiteResult:  # pragma: no cover - guarded by choose_suites
    raise RecipeError("the repro suite is run by `audit repro`, not `audit run`")


SUITE = Suite("repro", SECTION.doc, SECTION, METRICS, summarise, command_only=True, n_counts="runs")
