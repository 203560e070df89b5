"""A Markdown summary for a CI job page (e.g. $GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from typing import Any

from audit.report.gates import gate_blocks

ICON = {"pass": "✅", "fail": "❌", "inconclusive": "❔", "not_run": "⏭", "error": "⚠️", "warn": "⚠️"}


def gate_line(g: dict[str, Any]) -> str:
    value = "undefined" if g["value"] is None else f"{g['value']:.4g}"
    if gate_blocks(g):
        blocking = " (blocking)"
    elif g["status"] == "not_run":
        blocking = f" ({g['message']})"
    elif g["status"] != "pass":
        blocking = " (not blocking)"
    else:
        blocking = ""
    line = f"gate {g['id']}: {g['status'].upper()}{blocking} — {g['use']} = {value}, needs {g['op']} {g['threshold']:g}"
    if g["status"] in ("error", "inconclusive") or (g["status"] == "not_run" and gate_blocks(g)):
        line += f": {g['message']}"  # why it could not be decided, where the user reads it first
    return line


def render_markdown(report: dict[str, Any]) -> str:
    v = report["verdict"]
    lines = [f"## audit: {'PASS ✅' if v == 'pass' else 'FAIL ❌' if v == 'fail' else 'INVALID EVALUATION ⚠️'}", ""]
    model = report.get("model", {})
    data = report.get("data", {})
    lines.append(f"Model `{model.get('path', '?')}` ({model.get('format', '?')}, sha256 `{str(model.get('sha256', ''))[:12]}`), "
                 f"{data.get('n', '?')} examples, exit code {report['exit_code']}.")
    lines.append("")
    if report["gates"]:
        lines += ["| gate | status | value | threshold | n |", "|---|---|---|---|---|"]
        for g in report["gates"]:
            value = "—" if g["value"] is None else f"{g['value']:.4g}"
            lines.append(f"| `{g['id']}` | {ICON.get(g['status'], '')} {g['status']} | {value} ({g['use']}) | "
                         f"{g['op']} {g['threshold']:g} | {g['n'] if g['n'] is not None else '—'} |")
        lines.append("")
    bad = [c for c in report["checks"] if c["status"] != "pass"]
    if bad:
        lines.append("**Validity checks**")
        lines.append("")
        for c in bad:
            lines.append(f"- {ICON[c['status']]} `{c['id']}` ({c['status']}): {c['message']}")
        lines.append("")
    for name, s in report["suites"].items():
        for note in s.get("notes", []):
            lines.append(f"- **{name}**: {note}")
    return "\n".join(lines).rstrip() + "\n"
