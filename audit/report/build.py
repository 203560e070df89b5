"""Assemble report.json from suite results, and read it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audit.errors import ExitCode, ReportError
from audit.report.gates import apply_downgrades, evaluate_gate, verdict
from audit.report.records import Check, SuiteResult

SCHEMA = "audit.report/1"


def assemble(*, provenance: dict[str, Any], model: dict[str, Any], data: dict[str, Any], recipe: dict[str, Any],
             results: list[SuiteResult], core_checks: list[Check], gates: list[dict[str, Any]],
             downgrade: list[str], timing: dict[str, Any], excused: list[str] | None = None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    metrics = [m.to_json() for r in results for m in r.metrics]
    checks = [c.to_json() for c in core_checks] + [c.to_json() for r in results for c in r.checks]
    checks = apply_downgrades(checks, downgrade)
    suites_run = [r.suite for r in results]
    gate_records = [evaluate_gate(g, metrics, suites_run, excused or []) for g in gates]
    status, code = verdict(checks, gate_records)
    report = {
        "suites_excused": sorted(excused or []),
        "schema": SCHEMA,
        "provenance": provenance,
        "model": model,
        "data": data,
        "recipe": recipe,
        "suites": {r.suite: {"config": r.config, "curves": r.curves, "tables": r.tables, "notes": r.notes}
                   for r in results},
        "metrics": metrics,
        "checks": checks,
        "gates": gate_records,
        "verdict": status,
        "exit_code": int(code),
        "passed": status == "pass",
        "timing": timing,
    }
    if extra:
        report.update(extra)
    return report


def regate(report: dict[str, Any], gates: list[dict[str, Any]], downgrade: list[str],
           new_gates: bool = False) -> dict[str, Any]:
    """Re-evaluate ``gates`` on a saved report (``audit gate``): the same functions as the run.

    ``new_gates``: the gates come from a recipe given now (``audit gate --recipe``). The run's choice to
    leave a suite out (--suite) excused the run's own gates, not these: a release gate on robustness must
    not pass on a report made with --suite performance. Gates of another command (repro.* on an `audit run`
    report) stay excused, as in the run, so a recipe with both kinds re-gates its run report; but a
    recipe none of whose gates can be checked on this report is refused (exit 2, see ``audit gate``).
    """
    checks = apply_downgrades(report["checks"], downgrade)
    suites_run = list(report["suites"])
    excused = report.get("suites_excused", [])
    if new_gates:
        excused = [s for s in excused if s == "repro"]
    gate_records = [evaluate_gate(g, report["metrics"], suites_run, excused) for g in gates]
    if new_gates:
        study = "repro" in suites_run
        for g in gate_records:
            if g["status"] == "not_run" and not g["excused"]:
                suite = g["missing_suite"]
                how = ("`audit repro`" if suite == "repro" else
                       f"`audit repro --suite {suite}`" if study else f"`audit run` including {suite} (--suite {suite})")
                g["message"] = f"suite {suite!r} is not in this report, so this gate cannot be checked: make the report with {how}"
    status, code = verdict(checks, gate_records)
    out = dict(report)
    # suites_excused: what these gates were judged with, so that re-gating the re-gated report with its own
    # stored gates (``audit gate --out``, then ``audit gate`` on what it wrote) reaches the same verdict
    out.update(checks=checks, gates=gate_records, verdict=status, exit_code=int(code), passed=status == "pass",
               suites_excused=sorted(excused))
    return out


def stamp_regated(result: dict[str, Any], previous: dict[str, Any], by: str, recipe: Any, recipe_sha256: str | None,
                  source: Any, gates: list[dict[str, Any]] | None, validity: dict[str, Any] | None) -> dict[str, Any]:
    """Record on a re-gated report what judged it (``regated``: the recipe, when, the run's own verdict), and,
    with gates given now, store them and their [validity] where the report's recipe keeps its gates: so that
    `audit gate` on the written report.json, without --recipe, reaches the same verdict, and the page and
    summary.md say that the report was re-gated. ``audit gate --out`` and ``audit.Report.gate`` both call it."""
    from datetime import datetime, timezone

    out = dict(result)
    out["regated"] = {"by": by, "recipe": str(recipe) if recipe is not None else None, "recipe_sha256": recipe_sha256,
                      "source": str(source) if source is not None else None,
                      "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "previous_verdict": previous["verdict"], "previous_exit_code": previous["exit_code"]}
    if gates is not None:
        sections = dict(out["recipe"].get("sections", {}), validity=validity)
        out["recipe"] = dict(out["recipe"], gates=gates, sections=sections)
    return out


def regate_with_recipe(report: dict[str, Any], gates: list[dict[str, Any]], downgrade: list[str], where: Any,
                       present: set[str] | list[str], report_name: Any = "this report") -> dict[str, Any]:
    """``regate`` with gates given now (`audit gate --recipe`, ``audit.Report.gate``), refusing, as input
    errors (exit 2), the mistakes that would otherwise read as a model failing: a gates file that checks
    nothing, gates none of which this report can hold, and a gate whose params select no record (an eps
    written 0.03137 where the sweep says "8/255", a group the data lacks), named with the valid values."""
    from audit.errors import AuditError

    if not gates and "validity" not in present:  # a wrong file in CI must not turn every gate off
        raise AuditError(f"{where}: the recipe has no [[gates]] and no [validity] table, so there is "
                         "nothing to check the report against")
    result = regate(report, gates, downgrade, new_gates=True)
    if gates and all(g.get("excused") for g in result["gates"]):
        # every gate belongs to something this report cannot hold (repro.* on an `audit run` report)
        raise AuditError(f"{where}: none of its gates can be checked on {report_name} (they need "
                         f"{', '.join(sorted({g['missing_suite'] for g in result['gates']}))}, which this report does "
                         "not contain); gate the report of the command that makes them (`audit repro`)")
    wrong = [g for g in result["gates"] if g["status"] == "error" and g.get("params_mistake")]
    if wrong:
        more = f" (and {len(wrong) - 1} more gate(s) like it)" if len(wrong) > 1 else ""
        raise AuditError(f"{where}: gate {wrong[0]['id']!r}: {wrong[0]['message']}{more}")
    return result


def dumps(report: dict[str, Any]) -> str:
    """Deterministic JSON: sorted keys, fixed separators, NaN refused (undefined numbers are null)."""
    return json.dumps(report, sort_keys=True, indent=1, allow_nan=False, default=_default) + "\n"


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_report(path: str | Path, check_folder: bool = True) -> dict[str, Any]:
    """A report.json, validated field by field (``audit.report.validate``). The report of a run that failed
    or did not finish is refused with that run's exit code (2 for a run that never finished), so gating it
    can never pass; with ``check_folder``, files beside it written by another run are refused too."""
    from audit.loading.files import require_file
    from audit.report.outdir import check_siblings
    from audit.report.validate import validate_report

    path = Path(path)
    require_file(path, "report file", ReportError)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a valid JSON report: {e}") from None
    except OSError as e:
        raise ReportError(f"{path}: cannot read the report ({e.strerror or e})") from None
    if not isinstance(report, dict) or "schema" not in report:
        raise ReportError(f"{path}: not an audit report (no 'schema' field)")
    major = str(report["schema"]).rsplit("/", 1)[-1]
    if not str(report["schema"]).startswith("audit.report/") or major != SCHEMA.rsplit("/", 1)[-1]:
        raise ReportError(f"{path}: report schema {report['schema']!r} is not supported (expected {SCHEMA!r}); "
                          "re-run the audit with this version")
    status = report.get("run_status", "finished")
    if status in ("failed", "incomplete"):
        code = report.get("exit_code")
        err = ReportError(
            f"{path}: audit {report.get('command', '?')} (run {report.get('run_id', '?')}) "
            + (f"failed (exit {code}): {report.get('error', '')}" if status == "failed" else
               f"did not finish: {report.get('error', '')}")
            + "; there is no result to gate: fix the error and run it again")
        err.exit_code = code if isinstance(code, int) and not isinstance(code, bool) and code > 1 else ExitCode.USAGE
        raise err
    if status != "finished":
        raise ReportError(f"{path}: malformed report: run_status is {status!r}: expected 'finished'")
    validate_report(report, path)
    if check_folder:
        check_siblings(path, report.get("run_id"))
    return report


GATE_KEYS = ("id", "suite", "name", "params", "op", "threshold", "use", "severity")


def stored_gates(report: dict[str, Any], path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The gates and downgrades of the recipe a report was made with (for `audit gate` without --recipe),
    validated: a hand-edited threshold is one line naming the field, not a crash."""
    from audit.report.validate import validate_stored_recipe

    return validate_stored_recipe(report, path)
