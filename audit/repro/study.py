"""`audit repro`: the seed and determinism study.

    recipe ─► child runs (fresh processes): seeds s0..s0+N-1, repeats of s0, one capture run of s0
          ─► same-seed comparison (bitwise), capture (alerts, latent hazards, batch size), seed statistics,
             churn, environment comparison
          ─► the first seed's report + a "repro" suite block + repro metric records ─► gates ─► outputs

Everything is computed from the children's report.json and examples.npz files; the study itself never
loads the model.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from audit.errors import AuditError, CheckpointError
from audit.repro import stats as S
from audit.repro.compare import OUTCOME_PREFIXES, compare_runs, metric_key, run_digests
from audit.repro.fingerprint import compare_fingerprints
from audit.repro.runs import ChildArgs, ChildRun, run_all
from audit.report.records import SuiteResult

STOCHASTIC_PARTS = ("attack random starts (PGD/AutoAttack restarts), noise draws, bootstrap resampling; "
                    "clean inference takes no seed")
FINE_TUNING = ("not covered: audit has no fine-tuning (harden) feature yet, so no training run is repeated. "
               "The 'training' phase of the op recording is one parameter-gradient pass in eval mode.")


@dataclass
class ReproOptions:
    recipe: Path | None
    model_path: Path
    out: Path = Path("out/repro")
    seeds: int | None = None
    repeats: int | None = None
    suites: list[str] = field(default_factory=list)
    seed: int | None = None
    device: str | None = None
    batch_size: int | None = None
    trust_checkpoint: bool = False
    compare: Path | None = None
    jobs: int | None = None
    quiet: bool = False
    argv: list[str] = field(default_factory=lambda: list(sys.argv))


# ---------------------------------------------------------------------------------------- helpers

_LOWER_TOKENS = {"nll", "ece", "mce", "brier", "error", "fpr", "fnr", "loss"}
_LOWER_NAMES = {"attack_success_rate"}
_LOWER_SUFFIXES = ("_difference", "_gap")
_NO_DIRECTION = {"prevalence", "majority_baseline", "selection_rate", "temperature"}


def orientation(name: str) -> str | None:
    """'higher' or 'lower' is better, or None (no direction): decides the worst seed. Lower is better for
    error-like metrics (a name with a token nll, ece, mce, brier, error, fpr, fnr or loss; attack success
    rate; differences and gaps between groups)."""
    if name in _NO_DIRECTION:
        return None
    if name in _LOWER_NAMES or name.endswith(_LOWER_SUFFIXES) or _LOWER_TOKENS & set(name.split("_")):
        return "lower"
    return "higher"


def load_compare_report(path: Path) -> dict[str, Any]:
    """A baseline report for --compare; it must hold an environment fingerprint."""
    from audit.report.build import read_report

    report = read_report(path, check_folder=False)
    if not isinstance(report.get("provenance", {}).get("fingerprint"), dict):
        raise AuditError(f"{path}: the report has no environment fingerprint (provenance.fingerprint); it was "
                         "made by an older audit: re-run the baseline with this version")
    return report


def _read_run(run: ChildRun) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from audit.engine.table import ExampleTable

    report = json.loads((run.out / "report.json").read_text(encoding="utf-8"))
    table = ExampleTable.load(run.out / "examples.npz")
    if table.meta.get("run_id") != report.get("run_id"):  # two runs wrote into this folder
        raise AuditError(f"repro run {run.label}: {run.out / 'examples.npz'} is from run {table.meta.get('run_id')} "
                         f"but report.json from run {report.get('run_id')}; re-run the study into an empty --out")
    return report, table.columns


def _r(v: float | None, digits: int = 10) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


# -------------------------------------------------------------------------------------------- study


def execute_repro(opts: ReproOptions, log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], int]:
    """Run the study and write the outputs. Returns (report, exit code). --out is held from the start (see
    ``audit.report.outdir``): any failure leaves a failure report there, never the previous study's."""
    from audit.report.outdir import RunFolder

    with RunFolder.open(opts.out, "repro", opts.argv, {"model": opts.model_path, "recipe": opts.recipe}) as folder:
        return _execute_repro(opts, folder, log)


def _execute_repro(opts: ReproOptions, folder: Any, log: Callable[[str], None] | None) -> tuple[dict[str, Any], int]:
    import re

    from audit.engine.table import ExampleTable
    from audit.recipe import load_recipe
    from audit.report.build import regate
    from audit.runner import choose_suites, import_torch, make_progress

    import_torch()  # Ctrl-C-safe (the recipe's robustness section imports it)
    if opts.recipe is None:
        raise AuditError("--recipe is required with MODEL (e.g. audit repro model.safetensors --recipe "
                         "recipes/digits.toml --seeds 5)")
    if opts.device is not None and not re.match(r"^(auto|cpu|cuda(:\d+)?)$", opts.device):
        raise AuditError(f"--device {opts.device}: expected auto, cpu, cuda or cuda:N")
    t0 = time.perf_counter()
    created = folder.created
    recipe = load_recipe(opts.recipe)
    cfg = dict(recipe.section("repro"))
    n_seeds = cfg["seeds"] if opts.seeds is None else opts.seeds
    if n_seeds < 2:
        raise AuditError(f"--seeds {n_seeds}: a spread needs at least 2 seeds (e.g. --seeds 5)")
    repeats = cfg["repeats"] if opts.repeats is None else opts.repeats
    if repeats < 1:
        raise AuditError(f"--repeats {repeats}: at least 1 same-seed repeat is needed to test repeatability")
    jobs = cfg["jobs"] if opts.jobs is None else opts.jobs
    if jobs < 1:
        raise AuditError(f"--jobs {jobs}: expected 1 or more")
    from audit.loading.files import require_file

    require_file(opts.model_path, "model file", CheckpointError)
    suites = choose_suites(recipe, opts.suites)  # validates --suite before any process starts
    baseline = load_compare_report(opts.compare) if opts.compare is not None else None
    s0 = opts.seed if opts.seed is not None else recipe.section("run")["seed"]
    seeds = [s0 + i for i in range(n_seeds)]

    runs_dir = opts.out / "runs"
    seed_runs = [ChildRun("seed", s, runs_dir / f"seed-{s}", f"seed {s}") for s in seeds]
    repeat_runs = [ChildRun("repeat", s0, runs_dir / f"seed-{s0}-repeat-{i + 1}", f"seed {s0} repeat {i + 1}")
                   for i in range(repeats)]
    capture_run = ChildRun("capture", s0, runs_dir / f"seed-{s0}-capture", f"seed {s0} capture", capture=True) \
        if cfg["capture"] else None
    others = seed_runs[1:] + repeat_runs + ([capture_run] if capture_run else [])
    args = ChildArgs(opts.model_path.resolve(), opts.recipe.resolve(), list(opts.suites), opts.device,
                     opts.batch_size, opts.trust_checkpoint)

    total = 1 + len(others)
    progress = make_progress(opts.quiet)
    bar = progress(total=total, desc="repro runs")
    done = [0]

    def on_done(r: ChildRun) -> None:
        done[0] += 1
        bar.update(1)
        if log is not None and not opts.quiet:
            log(f"repro: run {done[0]}/{total} {r.label}: exit {r.exit_code} ({r.seconds:.1f} s)")

    from audit.engine.progress import phase_of, release_all

    try:
        with phase_of(progress, f"repro: {total} runs of `audit run`, {jobs} at a time"):
            # The first seed alone first: a bad model or data fails fast, before N more processes start.
            run_all(seed_runs[:1], args, 1, on_done)
            run_all(others, args, jobs, on_done)
    finally:
        bar.close()
        release_all()

    base_report, base_cols = _read_run(seed_runs[0])
    res = SuiteResult("repro")
    res.config = {
        "seeds": seeds, "base_seed": s0, "repeats": repeats, "capture": bool(cfg["capture"]),
        "suites": base_report.get("suites_run", suites), "confidence": cfg["confidence"],
        "target_half_width": cfg["target_half_width"], "tolerance": cfg["tolerance"], "jobs": jobs,
        "batch_invariance": bool(cfg["batch_invariance"]) and bool(cfg["capture"]),
        "stochastic_parts": STOCHASTIC_PARTS, "fine_tuning": FINE_TUNING,
        "isolation": "every run is a fresh `python -m audit run` process",
    }
    res.tables["runs"] = [r.to_json() | {"verdict": _verdict_of(r)} for r in seed_runs + repeat_runs +
                          ([capture_run] if capture_run else [])]

    same = _same_seed(res, base_report, base_cols, repeat_runs, cfg)
    det = _capture(res, base_report, base_cols, capture_run) if capture_run else None
    seed_data = [(r.seed, *_read_run(r)) if r is not seed_runs[0] else (r.seed, base_report, base_cols)
                 for r in seed_runs]
    spread = _seed_stats(res, base_report, seed_data, cfg)
    env_changes = _compare(res, base_report, baseline, opts.compare) if baseline is not None else None
    res.tables["fingerprint"] = base_report["provenance"].get("fingerprint", {})
    res.tables["advice"] = advise(same, det, spread, base_report, env_changes)
    res.notes.extend(f"{a['title']}. {a['text']}" for a in res.tables["advice"] if a.get("note"))

    report = dict(base_report)
    report["provenance"] = dict(base_report["provenance"], command=opts.argv, created=created)
    report["suites"] = dict(base_report["suites"])
    report["suites"]["repro"] = {"config": res.config, "curves": res.curves, "tables": res.tables, "notes": res.notes}
    report["metrics"] = list(base_report["metrics"]) + [m.to_json() for m in res.metrics]
    report["suites_run"] = list(base_report.get("suites_run", [])) + ["repro"]
    report["suites_excused"] = [s for s in base_report.get("suites_excused", []) if s != "repro"]  # it ran here
    report["timing"] = dict(base_report.get("timing", {}), repro_total_s=round(time.perf_counter() - t0, 3))
    report = regate(report, recipe.gates, recipe.section("validity")["downgrade"])
    report = folder.write(report, ExampleTable.load(seed_runs[0].out / "examples.npz"))
    return report, report["exit_code"]


def _verdict_of(r: ChildRun) -> str:
    return {0: "pass", 1: "fail", 4: "invalid"}.get(r.exit_code or 0, "error")


def _same_seed(res: SuiteResult, base_report: dict[str, Any], base_cols: dict[str, np.ndarray],
               repeat_runs: list[ChildRun], cfg: dict[str, Any]) -> dict[str, Any]:
    n = len(base_cols["pred"])
    digests = {f"seed {base_report['provenance']['seed']}": run_digests(base_cols, base_report["metrics"])}
    rows = []
    comps = []
    for r in repeat_runs:
        rep, cols = _read_run(r)
        c = compare_runs(base_cols, base_report["metrics"], cols, rep["metrics"])
        comps.append(c)
        digests[r.label] = run_digests(cols, rep["metrics"])
        rows.append({"label": r.label, "identical": c["identical"], "max_abs_logit_diff": c["max_abs_logit_diff"],
                     "prediction_flips": c["prediction_flips"], "outcome_flips": c["outcome_flips"],
                     "metrics_changed": c["metrics_changed"], "max_abs_metric_diff": _r(c["max_abs_metric_diff"]),
                     "columns_differ": [x["column"] for x in c["columns"] if not x["identical"]],
                     "changed_metrics": [dict(m, abs_diff=_r(m["abs_diff"])) for m in c["changed_metrics"][:12]]})
    identical = all(c["identical"] for c in comps)
    tol = cfg["tolerance"]

    def mx(key: str) -> float:
        vals = [c[key] for c in comps if c[key] is not None]
        return float(max(vals)) if vals else 0.0

    within = all((c["max_abs_logit_diff"] or 0.0) <= tol and c["max_abs_metric_diff"] <= tol
                 and not c["prediction_flips"] and not c["outcome_flips"] for c in comps)
    k = len(comps)
    res.metric("bitwise_identical", 1.0 if identical else 0.0, k)
    res.metric("within_tolerance", 1.0 if within else 0.0, k)
    res.metric("max_abs_logit_diff", mx("max_abs_logit_diff"), n)
    res.metric("prediction_flips", mx("prediction_flips"), n)
    res.metric("outcome_flips", mx("outcome_flips"), n)
    res.metric("metrics_changed", mx("metrics_changed"), len(base_report["metrics"]))
    inference_check = next((c for c in base_report["checks"] if c["id"] == "inference_deterministic"), None)
    res.tables["same_seed"] = {"bitwise_identical": identical, "within_tolerance": within, "repeats": rows,
                               "digests": digests, "max_abs_logit_diff": mx("max_abs_logit_diff"),
                               "prediction_flips": int(mx("prediction_flips")),
                               "outcome_columns": sorted(c for c in base_cols if c.startswith(OUTCOME_PREFIXES)),
                               "within_run_check": inference_check}
    return res.tables["same_seed"]


def _capture(res: SuiteResult, base_report: dict[str, Any], base_cols: dict[str, np.ndarray],
             run: ChildRun) -> dict[str, Any]:
    rep, cols = _read_run(run)
    det = rep.get("determinism") or {}
    alerts = det.get("alerts", [])
    hazards = det.get("latent_hazards", [])
    phases = ("inference", "attack_gradient", "training")
    n_run, n_rec = len(cols["pred"]), int(det.get("hazard_examples") or 0)  # examples each count rests on
    res.metric("nondeterministic_ops", float(len({a["op"] for a in alerts})), n_run)
    res.metric("latent_cuda_hazards", float(len({h["op"] for h in hazards})), n_rec)
    for ph in phases:
        res.metric("nondeterministic_ops", float(len({a["op"] for a in alerts if a["phase"] == ph})), n_run, phase=ph)
        res.metric("latent_cuda_hazards", float(len({h["op"] for h in hazards if h["phase"] == ph})), n_rec, phase=ph)
    bi = det.get("batch_invariance")
    if bi is not None:
        res.metric("batch_invariance_max_abs_diff", bi["max_abs_diff"], bi["examples"])
        res.metric("batch_invariance_flips", float(bi["flips"]), bi["examples"])
    # Does deterministic mode itself change the numbers on this device? (capture run vs the first run)
    c = compare_runs(base_cols, base_report["metrics"], cols, rep["metrics"])
    by_op: dict[str, dict[str, Any]] = {}
    for hz in hazards:
        row = by_op.setdefault(hz["op"], {k: v for k, v in hz.items() if k != "phase"} | {"phases": []})
        row["phases"].append(hz["phase"])
    out = {"alerts": alerts, "latent_hazards": hazards, "latent_by_op": list(by_op.values()),
           "ops": det.get("ops", {}), "batch_invariance": bi,
           "hazard_table": det.get("hazard_table"), "hazard_examples": det.get("hazard_examples"),
           "mode": det.get("mode"),
           "vs_default_mode": {"identical": c["identical"], "max_abs_logit_diff": c["max_abs_logit_diff"],
                               "prediction_flips": c["prediction_flips"], "metrics_changed": c["metrics_changed"]}}
    res.tables["determinism"] = out
    return out


def _seed_stats(res: SuiteResult, base_report: dict[str, Any], seed_data: list[tuple[int, dict, dict]],
                cfg: dict[str, Any]) -> dict[str, Any]:
    from audit.suites.base import metric_bounds

    conf, h = cfg["confidence"], cfg["target_half_width"]
    seeds = [s for s, _, _ in seed_data]
    lookup = [{metric_key(m): m for m in rep["metrics"]} for _, rep, _ in seed_data]
    rows = []
    for m in base_report["metrics"]:
        key = metric_key(m)
        values = [lk[key]["value"] if key in lk else None for lk in lookup]
        st = S.seed_summary(values, conf, metric_bounds(m["suite"], m["name"]))
        ori = orientation(m["name"])
        wi = S.worst_index(values, ori)
        need = S.seeds_needed(st["std"], h, conf)
        params = {"metric": f"{m['suite']}.{m['name']}", **m["params"]}
        n = int(st["n"])
        ci = None if st["ci_low"] is None else (st["ci_low"], st["ci_high"])
        res.metric("seed_mean", st["mean"], n, ci, **params)
        res.metric("seed_std", st["std"], n, **params)
        res.metric("seed_min", st["min"], n, **params)
        res.metric("seed_max", st["max"], n, **params)
        res.metric("seed_worst", None if wi is None else values[wi], n, **params)
        res.metric("seeds_needed", None if need is None else float(need), n, **params)
        rows.append({"key": key, "suite": m["suite"], "name": m["name"], "params": m["params"], "n": n,
                     "values": [_r(v) for v in values], "mean": _r(st["mean"]), "std": _r(st["std"]),
                     "ci_low": _r(st["ci_low"]), "ci_high": _r(st["ci_high"]), "min": _r(st["min"]),
                     "max": _r(st["max"]), "orientation": ori, "worst_seed": None if wi is None else seeds[wi],
                     "worst": None if wi is None else _r(values[wi]), "seeds_needed": need})
    preds = [cols["pred"] for _, _, cols in seed_data]
    churn_rows = [{"column": "pred", "churn": S.pairwise_churn(preds), "unstable_fraction": S.unstable_fraction(preds)}]
    res.metric("prediction_churn", churn_rows[0]["churn"], len(preds[0]))
    outcome_cols = sorted(set.intersection(*[{c for c in cols if c.startswith(OUTCOME_PREFIXES)}
                                             for _, _, cols in seed_data]))
    for col in outcome_cols:
        vals = [cols[col] for _, _, cols in seed_data]
        row = {"column": col, "churn": S.pairwise_churn(vals), "unstable_fraction": S.unstable_fraction(vals)}
        churn_rows.append(row)
        res.metric("outcome_churn", row["churn"], len(vals[0]), column=col)
    varying = [r for r in rows if r["std"]]
    # widest relative spread first (std / |mean|), so metrics of different scales compare
    varying.sort(key=lambda r: -(r["std"] / abs(r["mean"]) if r["mean"] else r["std"]))
    # The recipe's gates under each seed: a gate whose status depends on the seed is decided by luck.
    gate_rows = []
    for g in base_report["gates"]:
        if g["metric"].startswith("repro."):
            continue  # decided by this study, not by one run
        per = [next((x for x in rep["gates"] if x["id"] == g["id"]), None) for _, rep, _ in seed_data]
        statuses = [None if x is None else x["status"] for x in per]
        gate_rows.append({"id": g["id"], "statuses": statuses, "values": [None if x is None else x["value"] for x in per],
                          "passes": statuses.count("pass"), "stable": len(set(statuses)) == 1,
                          "suite": g["metric"].split(".", 1)[0]})
    out = {"seeds": seeds, "confidence": conf, "target_half_width": h, "metrics": rows, "churn": churn_rows,
           "varying": [r["key"] for r in varying], "interval": "Student-t interval of the mean over seeds, clipped to the metric's range (an accuracy's stays within [0, 1])",
           "gates": gate_rows}
    res.tables["seeds"] = out
    return out


def _compare(res: SuiteResult, base_report: dict[str, Any], baseline: dict[str, Any], path: Path) -> list[dict]:
    now = base_report["provenance"].get("fingerprint", {})
    changes = compare_fingerprints(baseline["provenance"]["fingerprint"], now)
    bm = {metric_key(m): m for m in baseline["metrics"]}
    moved = []
    for m in base_report["metrics"]:
        b = bm.get(metric_key(m))
        if b is None or b["value"] is None or m["value"] is None or b["value"] == m["value"]:
            continue
        moved.append({"key": metric_key(m), "base": b["value"], "now": m["value"],
                      "abs_diff": abs(float(m["value"]) - float(b["value"]))})
    moved.sort(key=lambda d: -d["abs_diff"])
    res.tables["compare"] = {"base": str(path), "changes": changes, "metrics_moved": len(moved),
                             "top_moved": moved[:15],
                             "same_model": baseline.get("model", {}).get("sha256") == base_report["model"]["sha256"],
                             "same_data": baseline.get("data", {}).get("sha256") == base_report["data"]["sha256"],
                             "same_seed": baseline.get("provenance", {}).get("seed") == base_report["provenance"]["seed"]}
    return changes


# ------------------------------------------------------------------------------------------- advice


def advise(same: dict[str, Any], det: dict[str, Any] | None, spread: dict[str, Any], base_report: dict[str, Any],
           env_changes: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """What a user should do, in plain words, tailored to what the study observed.

    Each item: {title, text, note}; items with note=True also go into the section's notes (and so into the
    summary card's worst findings and the Markdown summary)."""
    out: list[dict[str, Any]] = []
    device = base_report["provenance"].get("device", {}).get("type", "cpu")
    within = same.get("within_run_check") or {}
    alerts = (det or {}).get("alerts", [])
    hazards = (det or {}).get("latent_hazards", [])
    if same["bitwise_identical"]:
        out.append({"title": "Same-seed runs are bitwise identical", "note": False, "text":
                    "Every same-seed repeat, each in a fresh process, reproduced the first run bitwise: "
                    "logits, predictions, attack and noise outcomes and every metric. This holds for this machine "
                    "and software; another GPU, torch build or thread count can still change the last bits (keep "
                    "this report.json and compare with `audit repro --compare`)."})
    else:
        flips = same["prediction_flips"]
        out.append({"title": "Same-seed runs differ", "note": True, "text":
                    f"Runs with the same seed in fresh processes were not bitwise identical (max |delta logit| = "
                    f"{same['max_abs_logit_diff']:.3g}, up to {flips} prediction(s) flipped). Any number in this "
                    "report may change when the audit is re-run; fix the cause below before trusting gates that "
                    "sit close to their thresholds."})
        if within.get("status") in ("fail", "warn") and within.get("value", 0):
            out.append({"title": "The model is random at inference", "note": True, "text":
                        "Two inference passes over the same inputs inside one process already differ, so the "
                        "randomness is in the model's forward pass, not in the audit. Usual causes: dropout applied "
                        "unconditionally (F.dropout(x, p, training=True), or a custom layer that ignores "
                        "self.training), a module forced into train mode, sampling (torch.rand*, bernoulli, "
                        "multinomial) in forward, or stochastic depth. Use nn.Dropout or pass training=self.training "
                        "so that model.eval() turns it off; if the randomness is intended (MC dropout), seed it "
                        "inside the model from the input, or average many samples."})
        elif same["max_abs_logit_diff"] == 0 and not same["prediction_flips"]:
            out.append({"title": "Only attack/noise outcomes or metrics differ", "note": True, "text":
                        "The clean logits are identical, so inference is deterministic; the difference comes from a "
                        "later stage: attack gradients computed with nondeterministic kernels (atomics in backward "
                        "passes on GPU), a random stream not derived from the seed, or Python hash ordering. Set "
                        "PYTHONHASHSEED=0, enable torch.use_deterministic_algorithms(True) and look at the ops named "
                        "below."})
        else:
            out.append({"title": "Nondeterministic kernels", "note": True, "text":
                        "The logits differ between processes although the model is deterministic within one: the "
                        "kernels themselves are nondeterministic (parallel reductions with atomics, autotuned "
                        "algorithms). Call torch.use_deterministic_algorithms(True) before the audit"
                        + (", set CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment, "
                           "torch.backends.cudnn.benchmark = False and torch.backends.cudnn.deterministic = True"
                           if device == "cuda" else "")
                        + ", and fix the thread count (OMP_NUM_THREADS, MKL_NUM_THREADS and torch.set_num_threads) "
                        "to the same value on every run."})
    if alerts:
        names = ", ".join(sorted({f"{a['op']} ({a['phase']})" for a in alerts}))
        out.append({"title": "Ops without a deterministic implementation on this device", "note": True, "text":
                    f"Under torch.use_deterministic_algorithms(True, warn_only=True) PyTorch flagged: {names}. These "
                    "ops can give different results on every call; deterministic mode cannot fix them, it can only "
                    "raise an error. Replace them in the model (e.g. MaxUnpool by interpolation or a transposed "
                    "convolution, put_ by index_put_/scatter on unique indices), or accept the variation and gate "
                    "on the across-seed interval instead of a single run."})
    cuda_only = [h for h in hazards if h["devices"] == "cuda"]
    fp = base_report["provenance"].get("fingerprint", {})
    flags, env = fp.get("flags", {}), fp.get("env", {})
    if cuda_only and device == "cuda":
        missing = []
        if env.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
            missing.append("set CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment")
        if not flags.get("deterministic_algorithms"):
            missing.append("call torch.use_deterministic_algorithms(True)")
        if flags.get("cudnn_benchmark") or not flags.get("cudnn_deterministic"):
            missing.append("set torch.backends.cudnn.benchmark = False and torch.backends.cudnn.deterministic = True")
        if missing:
            names = ", ".join(sorted({h["op"] for h in cuda_only}))
            out.append({"title": "Documented CUDA nondeterminism in this model", "note": False, "text":
                        f"The model runs ops that PyTorch documents as nondeterministic on CUDA ({names}). "
                        + ("They happened to repeat here; " if same["bitwise_identical"] else "")
                        + "to make that a guarantee rather than luck: " + "; ".join(missing) + "."})
    if cuda_only and device != "cuda":
        names = ", ".join(sorted({h["op"] for h in cuda_only}))
        out.append({"title": "Latent GPU hazards", "note": False, "text":
                    f"This audit ran on {device}, but the model runs ops that PyTorch documents as nondeterministic "
                    f"on CUDA: {names}. Before auditing on a GPU: set CUBLAS_WORKSPACE_CONFIG=:4096:8 in the "
                    "environment, call torch.use_deterministic_algorithms(True), and set "
                    "torch.backends.cudnn.benchmark = False and torch.backends.cudnn.deterministic = True; ops marked "
                    "'raises' have no deterministic CUDA implementation."})
    bi = (det or {}).get("batch_invariance")
    if bi and not bi["identical"]:
        out.append({"title": "Results depend on the batch size", "note": bool(bi["flips"]), "text":
                    f"Logits computed one example at a time differ from batches of {bi['batch_size']} (max |delta| = "
                    f"{bi['max_abs_diff']:.3g}, {bi['flips']} of {bi['examples']} predictions flipped). Kernels pick "
                    "blocking and reduction order by shape, so the last bits move with the batch size"
                    + (" — and here predictions change" if bi["flips"] else "")
                    + ". Keep [run] batch_size fixed when comparing reports; a layer that mixes examples (batch norm "
                    "in train mode) would show larger differences."
                    + (" On this GPU, TF32 is allowed (torch.backends.cudnn.allow_tf32 / "
                       "torch.backends.cuda.matmul.allow_tf32, or float32 matmul precision below 'highest'), which "
                       "rounds float32 inputs to 10 mantissa bits and widens such differences; turn it off for "
                       "float32-exact results." if device == "cuda" and (
                           flags.get("cudnn_allow_tf32") or flags.get("cuda_matmul_allow_tf32")
                           or flags.get("float32_matmul_precision") not in (None, "highest")) else "")})
    unstable = [g for g in spread.get("gates", []) if not g["stable"]]
    if unstable:
        names = "; ".join(f"{g['id']} passes under {g['passes']} of {len(g['statuses'])} seeds" for g in unstable)
        out.append({"title": "Gates that depend on the seed", "note": True, "text":
                    f"{names}. A single `audit run` decides these gates by the luck of the seed. Gate on "
                    "repro.seed_worst or on repro.seed_mean with use = \"ci_low\" instead, or move the threshold "
                    "away from the metric's spread."})
    varying = spread["varying"]
    if varying:
        rows = {r["key"]: r for r in spread["metrics"]}
        top = rows[varying[0]]
        need = top["seeds_needed"]
        out.append({"title": "Metrics vary across seeds", "note": False, "text":
                    f"{len(varying)} metric record(s) change with the seed; the widest relative spread is {top['key']} "
                    f"(std {top['std']:.3g}, worst seed {top['worst_seed']}: {top['worst']:.4g}). Gate on the "
                    f"across-seed interval (repro.seed_mean with use = \"ci_low\") or on repro.seed_worst rather than "
                    f"one run; for a ±{spread['target_half_width']:g} interval on it you need "
                    f"{need if need is not None else 'very many'} seeds."})
    else:
        out.append({"title": "No metric varies across seeds", "note": False, "text":
                    "Every metric value is the same under every seed (only bootstrap intervals, if any, move): the "
                    "audit's randomness does not reach these numbers."})
    if env_changes:
        high = [c for c in env_changes if c["impact"] == "high"]
        first = env_changes[0]
        out.append({"title": "The environment changed since the baseline", "note": bool(high), "text":
                    f"{len(env_changes)} difference(s) from the baseline's environment; the most likely to matter: "
                    f"{first['key']} ({first['base']} -> {first['now']}: {first['why']}). Numbers that moved between "
                    "the two reports are more likely explained by these than by the model."})
    elif env_changes is not None:
        out.append({"title": "Same environment as the baseline", "note": False, "text":
                    "The environment fingerprint equals the baseline's: differences in the numbers come from the model, "
                    "the data, the recipe or the seed."})
    return out


def compare_environment(path: Path, device: str | None) -> list[dict[str, Any]]:
    """`audit repro --compare REPORT` without a model: this environment against the report's fingerprint."""
    from audit.engine.wrapper import resolve_device
    from audit.repro.fingerprint import fingerprint

    baseline = load_compare_report(path)
    return compare_fingerprints(baseline["provenance"]["fingerprint"], fingerprint(resolve_device(device or "auto")))
