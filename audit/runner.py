"""`audit run`: recipe -> model and data -> per-example table -> suites -> report -> gates -> outputs."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import AuditError, InvalidEvaluation, RecipeError
from audit.recipe import Recipe, load_recipe
from audit.recipe.fields import suggest
from audit.report.records import Check


@dataclass
class RunOptions:
    recipe: Path
    model_path: Path
    out: Path = Path("out")
    suites: list[str] = field(default_factory=list)
    seed: int | None = None
    device: str | None = None
    batch_size: int | None = None
    quiet: bool = False
    trust_checkpoint: bool = False
    argv: list[str] = field(default_factory=lambda: list(sys.argv))


def make_progress(quiet: bool):
    """A tqdm factory writing to stderr; silent under --quiet or when stderr is not a terminal."""
    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()

    def progress(total: int, desc: str):
        return tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, leave=False, dynamic_ncols=True)

    return progress


def choose_suites(recipe: Recipe, requested: list[str]) -> list[str]:
    from audit.suites import get_suite, suite_names

    known = suite_names()
    for s in requested:
        if s not in known:
            raise RecipeError(f"--suite {s}: unknown suite {suggest(s, known)}")
    # Command-only suites (repro) have their own command; they name metrics for gates but never run here.
    for s in requested or recipe.section("run")["suites"] or []:
        if get_suite(s).command_only:
            where = f"--suite {s}" if requested else f"{recipe.path}: [run] suites"
            raise RecipeError(f"{where}: the {s!r} suite is not run by `audit run`; use `audit {s}`")
    if requested:
        chosen = set(requested)
    elif recipe.section("run")["suites"]:
        chosen = set(recipe.section("run")["suites"])
    else:
        chosen = {s for s in known if s in recipe.present and not get_suite(s).command_only} or {"performance"}
    return [s for s in known if s in chosen]  # registry order


def excused_suites(recipe: Recipe, requested: list[str], chosen: list[str]) -> list[str]:
    """Suites whose gates may go unchecked in this run: those left out on purpose (--suite or [run] suites)
    and command-only ones (repro, from `audit repro`). A gate on any other suite that did not run blocks:
    a recipe that gates on robustness without a [robustness] table is a mistake, not a pass."""
    from audit.suites import get_suite, suite_names

    deliberate = bool(requested) or bool(recipe.section("run")["suites"])
    return [s for s in suite_names() if s not in chosen and (deliberate or get_suite(s).command_only)]


def execute(opts: RunOptions) -> tuple[dict[str, Any], int]:
    """Run the audit and write the outputs. Returns (report, exit code).

    --out is opened (locked, the previous run moved aside, a "did not finish" placeholder written) before
    anything else, so that any failure from here on, a bad --device as much as NaN logits, leaves a failure
    report instead of the previous model's."""
    from audit.report.outdir import RunFolder

    with RunFolder.open(opts.out, "run", opts.argv, {"model": opts.model_path, "recipe": opts.recipe}) as folder:
        return _execute(opts, folder)


def _execute(opts: RunOptions, folder: Any) -> tuple[dict[str, Any], int]:
    import re

    from audit.engine.inference import build_table, predict_logits, probe_model
    from audit.engine.wrapper import WrappedModel, resolve_device
    from audit.loading.data import load_data
    from audit.loading.model import load_checkpoint
    from audit.report.build import assemble
    from audit.report.provenance import provenance
    from audit.repro.capture import DeterminismCapture
    from audit.suites import RunContext, get_suite

    if opts.device is not None and not re.match(r"^(auto|cpu|cuda(:\d+)?)$", opts.device):
        raise AuditError(f"--device {opts.device}: expected auto, cpu, cuda or cuda:N")
    # AUDIT_DETERMINISM_CAPTURE=1 (set by `audit repro` for its capture run): deterministic algorithms in
    # warn-only mode, alerts recorded per phase, report["determinism"]. Otherwise a no-op.
    capture = DeterminismCapture.from_env()
    t0 = time.perf_counter()
    created = folder.created
    recipe = load_recipe(opts.recipe)
    run_cfg = recipe.section("run")
    seed = opts.seed if opts.seed is not None else run_cfg["seed"]
    device = resolve_device(opts.device or run_cfg["device"], None if opts.device else
                            f"{recipe.path}: [run] device = {run_cfg['device']!r}")
    batch_size = opts.batch_size or run_cfg["batch_size"]
    suites = choose_suites(recipe, opts.suites)
    model_cfg = recipe.section("model")
    progress = make_progress(opts.quiet)

    loaded = load_checkpoint(opts.model_path, model_cfg, recipe.base_dir, recipe.path, trust=opts.trust_checkpoint)
    data = load_data(recipe)
    model = WrappedModel(loaded.module, model_cfg["mean"], model_cfg["std"], model_cfg["input_bounds"],
                         model_cfg["num_classes"]).to(device)
    probe_model(model, data, device, model_cfg["num_classes"])

    timing: dict[str, float] = {}
    t = time.perf_counter()
    needs_logits = [n for n in suites if get_suite(n).needs_logits]
    with capture.phase("inference"):
        logits = predict_logits(model, data.x, device, batch_size, progress)
        _require_finite(logits, data.index)
        timing["inference_s"] = time.perf_counter() - t
        raw_logits = logits
        core_checks, logits = core_validity_checks(model, data, logits, device, batch_size, needs_logits)
    table = build_table(data, logits)
    if loaded.trusted:
        core_checks.append(Check("trusted_checkpoint", "warn",
                                 f"The checkpoint ({loaded.format}) was loaded with --trust-checkpoint: loading it "
                                 "could run code on this machine. Prefer a state_dict or safetensors file."))
    from_file = data.meta.get("categories_from_file")
    if from_file:
        listed = "; ".join(f"{k}: {', '.join(v)}" for k, v in from_file.items())
        core_checks.append(Check("one_hot_categories_pinned", "warn",
                                 f"The csv's one-hot categories were read from this file ({listed}). If the model "
                                 "was trained on a file with other categories, its inputs are shifted and every "
                                 "number here is wrong. Pin them in training's order: [data] categorical = "
                                 "{ column = [...] }."))

    ctx = RunContext(recipe=recipe, model=model, data=data, table=table, seed=seed, device=device,
                     batch_size=batch_size, progress=progress)
    results = []
    for name in suites:
        suite = get_suite(name)
        t = time.perf_counter()
        with capture.phase("attack_gradient" if suite.needs_logits else "inference", suite=name):
            result = suite.run(ctx, recipe.section(name))
        timing[f"{name}_s"] = time.perf_counter() - t
        timing.update({f"{name}.{part}_s": seconds for part, seconds in result.timing.items()})
        ctx.results[name] = result
        results.append(result)

    extra: dict[str, Any] = {"suites_run": suites}
    if capture.enabled:
        extra["determinism"] = capture.finish(model, data.x, device, batch_size, raw_logits, recipe.section("repro"))
    prov = provenance(device, opts.argv, seed)
    prov["created"] = created
    timing["total_s"] = time.perf_counter() - t0
    report = assemble(
        provenance=prov,
        model={**loaded.to_json(), "factory": model_cfg["factory"], "num_classes": model_cfg["num_classes"]},
        data={**data.meta, "class_names": model_cfg["class_names"] or [str(i) for i in range(model_cfg["num_classes"])]},
        recipe=recipe.to_json(),
        results=results,
        core_checks=core_checks,
        gates=recipe.gates,
        downgrade=recipe.section("validity")["downgrade"],
        timing={k: round(v, 3) for k, v in timing.items()},
        excused=excused_suites(recipe, opts.suites, suites),
        extra=extra,
    )
    report = folder.write(report, table)
    return report, report["exit_code"]


def _require_finite(logits: np.ndarray, index: np.ndarray) -> None:
    """No metric means anything on NaN or infinite outputs (an overflowing softmax reads as perfectly
    calibrated, NaN breaks every sort): stop with one line, before any suite runs."""
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        first = np.flatnonzero(bad)[:3]
        kinds = [k for k, has in (("NaN", np.isnan(logits).any()), ("infinite", np.isinf(logits).any())) if has]
        raise InvalidEvaluation(
            f"the model outputs {' and '.join(kinds)} logits for {int(bad.sum())} of {len(logits)} examples "
            f"(example index {', '.join(str(int(index[i])) for i in first)}{', ...' if bad.sum() > 3 else ''}): "
            "no metric can be computed from them. Check the weights for NaN and the logits for float32 overflow")


CORE_CHECK_IDS = ("logits_not_probabilities", "inference_deterministic", "trusted_checkpoint",
                  "one_hot_categories_pinned")


def core_validity_checks(model: Any, data: Any, logits: np.ndarray, device: Any, batch_size: int,
                         needs_logits: list[str]) -> tuple[list[Check], np.ndarray]:
    """Checks of the evaluation that every suite relies on. Returns the checks and the logits to use:
    when the model outputs probabilities, their logarithm (so the table's softmax gives them back
    instead of squashing them a second time)."""
    from audit.engine.inference import looks_like_log_probabilities, looks_like_probabilities, predict_logits

    checks = []
    raw = logits
    if looks_like_probabilities(logits):
        status = "fail" if needs_logits else "warn"
        consequence = (f"The {', '.join(needs_logits)} suite needs logits: a softmax flattens input gradients, which "
                       "makes a model look robust. Remove the final softmax, or downgrade this check in [validity]."
                       if needs_logits else
                       "Attacks would need logits; for the metrics here the outputs are used as probabilities "
                       "(their logarithm serves as logits, so they are not squashed twice).")
        checks.append(Check(
            "logits_not_probabilities", status,
            "The model's outputs are probabilities (every row is in [0, 1] and sums to 1): it ends in a softmax. "
            + consequence))
        with np.errstate(divide="ignore"):
            logits = np.log(np.clip(logits.astype(np.float64), 1e-45, None)).astype(np.float32)
    elif looks_like_log_probabilities(logits):
        checks.append(Check("logits_not_probabilities", "pass",
                            "The outputs are log-probabilities (log_softmax): usable as logits."))
    else:
        checks.append(Check("logits_not_probabilities", "pass", "The model outputs logits (rows do not sum to 1)."))
    # A second pass over a slice: bitwise equal logits, or inference is random (dropout left on, sampling, ...).
    m = min(len(data.x), 1024)  # independent of batch size, so the report is too
    again = predict_logits(model, data.x[:m], device, batch_size)
    diff = float(np.max(np.abs(again - raw[:m]))) if m else 0.0
    if np.array_equal(again, raw[:m]):
        checks.append(Check("inference_deterministic", "pass",
                            f"Two inference passes over {m} examples gave bitwise identical logits.", value=0.0))
    else:
        flips = int((again.argmax(1) != raw[:m].argmax(1)).sum())
        checks.append(Check(
            "inference_deterministic", "fail",
            f"Two inference passes over the same {m} examples differ (max |delta logit| = {diff:.3g}, "
            f"{flips} predictions flipped): the model is random at inference (dropout in train mode, sampling, "
            "nondeterministic kernels). Every number in this report would change from run to run; make inference "
            "deterministic, or downgrade this check in [validity].", value=diff))
    return checks, logits
