"""What a CI job reads: the verdict as one JSON object (``--format json``), GitHub Actions annotations and
the job summary. Pure functions of the report (renderers read only the report); the CLI prints them.

GitHub's workflow commands (https://docs.github.com/actions/reference/workflow-commands-for-github-actions)
are lines ``::error title=T::MESSAGE`` on stdout. Their escaping is GitHub's own (the runner decodes it,
as actions/toolkit's ``escapeData`` and ``escapeProperty`` encode it): in the message ``%``, CR and LF become
``%25``, ``%0D``, ``%0A``; in a property (the title) also ``:`` and ``,`` (``%3A``, ``%2C``), which would
otherwise end the property.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from audit.report.gates import gate_blocks

VERDICT_SCHEMA = "audit.verdict/1"

NO_GATES = "no gates: nothing was checked"


def no_gates_line(report: dict[str, Any]) -> str | None:
    """``"no gates: nothing was checked"`` when the report holds no gate (its verdict then says only that
    the evaluation was valid), else None."""
    return NO_GATES if not report.get("gates") else None


def gate_reason(g: dict[str, Any]) -> str:
    """Why a gate has its status, in one line: the comparison for pass/fail, the reason otherwise."""
    return " ".join(str(g.get("message") or "").split())


def check_fix(c: dict[str, Any]) -> str:
    """What to do about a failed validity check. Its message says what was measured, what it means and
    (for most checks) what to fix; the way to accept it anyway is the same for every check."""
    return (f"fix the cause the message names, or, if you accept it, add \"{c['id']}\" to [validity] downgrade "
            "in the recipe (the check then warns instead of failing)")


def verdict_json(report: dict[str, Any], command: str, paths: Mapping[str, Path | str | None]) -> dict[str, Any]:
    """The one JSON object ``--format json`` prints on stdout: the verdict, every gate, the checks that
    did not pass, and the files written (only those that exist)."""
    gates = [{"id": g["id"], "metric": g["metric"], "params": g["params"], "status": g["status"],
              "blocking": gate_blocks(g), "severity": g["severity"], "value": g["value"], "use": g["use"],
              "op": g["op"], "threshold": g["threshold"], "n": g.get("n"), "reason": gate_reason(g)}
             for g in report.get("gates", [])]
    checks = [{"id": c["id"], "suite": c.get("suite", "core"), "status": c["status"],
               "message": " ".join(str(c.get("message", "")).split()),
               **({"fix": check_fix(c)} if c["status"] == "fail" else {})}
              for c in report.get("checks", []) if c["status"] != "pass"]
    out: dict[str, Any] = {
        "schema": VERDICT_SCHEMA,
        "command": command,
        "run_id": report.get("run_id"),
        "verdict": report.get("verdict"),
        "passed": bool(report.get("passed")),
        "exit_code": report.get("exit_code"),
        "gates": gates,
        "failed_gates": [g["id"] for g in gates if g["blocking"]],
        "failed_checks": [c for c in checks if c["status"] == "fail"],
        "warnings": [c for c in checks if c["status"] != "fail"],
        "no_gates": not gates,
        "notes": [NO_GATES] if not gates else [],
        "reports": {k: str(v) for k, v in paths.items() if v is not None and Path(v).is_file()},
    }
    if report.get("regated"):
        out["regated"] = report["regated"]
    return out


def error_json(command: str, message: str, code: int) -> dict[str, Any]:
    """``--format json`` for a command that stopped with an error: still one object on stdout."""
    return {"schema": VERDICT_SCHEMA, "command": command, "verdict": "error", "passed": False, "exit_code": code,
            "error": message, "gates": [], "failed_gates": [], "failed_checks": [], "warnings": [],
            "no_gates": None, "notes": [], "reports": {}}


# ------------------------------------------------------------------------------------------------ GitHub


def escape_data(text: str) -> str:
    """A workflow command's message, escaped as GitHub decodes it."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (``title=...``): the message's escapes plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _command(kind: str, title: str, message: str) -> str:
    return f"::{kind} title={escape_property(title)}::{escape_data(message)}"


def annotations(report: dict[str, Any], command: str = "run") -> list[str]:
    """``::error`` for each failed validity check and each blocking gate that failed, could not be
    evaluated or did not run; ``::warning`` for each inconclusive gate (its title says whether it blocks),
    each non-blocking failed gate (severity warn), and when there are no gates at all."""
    lines = []
    for c in report.get("checks", []):
        if c["status"] == "fail":
            lines.append(_command("error", f"audit {command}: validity check {c['id']} failed",
                                  f"{c.get('message', '')} To accept it: {check_fix(c)}."))
    for g in report.get("gates", []):
        what = f"gate {g['id']}: {g['status'].upper()}"
        value = "undefined" if g["value"] is None else f"{g['value']:.4g}"
        body = f"{g['metric']} {g['use']} = {value}, needs {g['op']} {g['threshold']:g}"
        if g.get("message"):
            body += f" ({gate_reason(g)})"
        effect = "blocking" if gate_blocks(g) else "not blocking"
        if g["status"] == "inconclusive":  # undecided, not failed: a warning, whose title says if it blocks
            lines.append(_command("warning", f"audit {command}: {what} ({effect})", body))
        elif gate_blocks(g):
            lines.append(_command("error", f"audit {command}: {what}", body))
        elif g["status"] in ("fail", "error") or (g["status"] == "not_run" and not g.get("excused")):
            lines.append(_command("warning", f"audit {command}: {what} ({effect})", body))
    if not report.get("gates") and report.get("run_status", "finished") == "finished":
        lines.append(_command("warning", f"audit {command}: no gates", NO_GATES + " (the recipe has no [[gates]])"))
    return lines


def in_github_actions(env: Mapping[str, str] | None = None) -> bool:
    """GitHub's runner sets GITHUB_ACTIONS=true in every step."""
    return (os.environ if env is None else env).get("GITHUB_ACTIONS") == "true"


def append_step_summary(markdown: str, env: Mapping[str, str] | None = None) -> Path | None:
    """Append ``markdown`` to the job summary file GitHub names in GITHUB_STEP_SUMMARY (None when unset).
    Appended, never overwritten: other steps of the job write there too."""
    from audit.errors import AuditError

    name = (os.environ if env is None else env).get("GITHUB_STEP_SUMMARY")
    if not name:
        return None
    path = Path(name)
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as e:
        raise AuditError(f"GITHUB_STEP_SUMMARY={path}: cannot append the job summary ({e.strerror or e})") from None
    return path
