"""A Markdown summary for a CI job page (e.g. $GITHUB_STEP_SUMMARY).

Every piece of user text (file names, gate and check ids, messages that quote class or group names) goes
through :func:`md_text` or :func:`md_code`, so a backtick, a pipe or an HTML tag in a file name cannot break
out of its code span or table cell, or inject markup into the job page.
"""

from __future__ import annotations

import re
from typing import Any

from audit.report.gates import gate_blocks

ICON = {"pass": "✅", "fail": "❌", "inconclusive": "❔", "not_run": "⏭", "error": "⚠️", "warn": "⚠️"}

# The characters that can open or close markup mid-line (emphasis, code, links, HTML, entities, GFM tables
# and strikethrough); each is escaped with a backslash. Line-start markup (#, -, 1.) cannot arise: user text
# never starts a line here.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def md_text(value: Any) -> str:
    """User text as literal Markdown text: one line, every markup character backslash-escaped (CommonMark
    treats a backslash before any ASCII punctuation as that literal character, also inside table cells)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def md_code(value: Any) -> str:
    """User text as an inline code span that nothing inside can close: the fence is one backtick longer than
    the longest run of backticks in the text (CommonMark 6.1), padded with spaces when the text starts or
    ends with a backtick. A pipe, which GitHub tables split cells on even inside code, becomes ``\\|``."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def run_id_line(report: dict[str, Any]) -> list[str]:
    """An invisible marker (an HTML comment) naming the run that wrote the file; see audit.report.outdir."""
    rid = report.get("run_id")
    return [f"<!-- audit-run-id: {rid} -->"] if isinstance(rid, str) else []


def gate_line(g: dict[str, Any]) -> str:
    """One line per gate for stderr (plain text: nothing is escaped here)."""
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


def render_failure_markdown(report: dict[str, Any]) -> str:
    """The summary of a run that failed or did not finish: it says so, first, and passes nothing."""
    head = "RUN FAILED ❌" if report["run_status"] == "failed" else "RUN DID NOT FINISH ❌"
    lines = run_id_line(report) + [f"## audit: {head}", ""]
    code = report.get("exit_code")
    lines.append(f"{md_code('audit ' + str(report.get('command', '')))} (run {md_code(report['run_id'])}) "
                 + (f"stopped with exit code {code}: " if code is not None else "has not finished: ")
                 + md_text(report.get("error", "")))
    lines.append("")
    for k, v in report.get("inputs", {}).items():
        lines.append(f"- {md_text(k)}: {md_code(v)}")
    lines.append("- no gate was evaluated: this run passes nothing")
    return "\n".join(lines).rstrip() + "\n"


def repro_verdict(report: dict[str, Any]) -> str | None:
    """The study's verdict in one plain line (``audit repro``'s report), None for any other report."""
    s = report.get("suites", {}).get("repro")
    if not s:
        return None
    same = s["tables"]["same_seed"]
    cfg = s["config"]
    verdict = "bitwise identical" if same["bitwise_identical"] else (
        f"NOT bitwise identical (max |delta logit| {same['max_abs_logit_diff']:.3g}, "
        f"{same['prediction_flips']} prediction flip(s))")
    seeds = s["tables"]["seeds"]
    return (f"{len(cfg['seeds'])} seeds, {cfg['repeats']} same-seed repeat(s): {verdict}; "
            f"{len(seeds['varying'])} of {len(seeds['metrics'])} metrics vary across seeds")


def render_markdown(report: dict[str, Any], html_path: Any = None) -> str:
    """``html_path``: where the report's HTML page is (said in the summary), None when there is none."""
    if report.get("run_status") in ("failed", "incomplete"):
        return render_failure_markdown(report)
    v = report["verdict"]
    lines = run_id_line(report)
    lines += [f"## audit: {'PASS ✅' if v == 'pass' else 'FAIL ❌' if v == 'fail' else 'INVALID EVALUATION ⚠️'}", ""]
    model = report.get("model", {})
    data = report.get("data", {})
    lines.append(f"Model {md_code(model.get('path', '?'))} ({md_text(model.get('format', '?'))}, sha256 "
                 f"{md_code(str(model.get('sha256', ''))[:12])}), {md_text(data.get('n', '?'))} examples, exit code "
                 f"{report['exit_code']}.")
    lines.append("")
    regated = report.get("regated")
    if isinstance(regated, dict):
        by = regated.get("by") or "audit gate"
        src = regated.get("recipe") or ("gates given in Python" if by == "audit.Report.gate" else
                                        "the gates stored in the report")
        lines += [f"Gates re-evaluated by {md_code(by)} with {md_code(src)} on {md_text(regated.get('at', '?'))} "
                  f"(measured by run {md_code(report.get('run_id', '?'))}).", ""]
    if report["gates"]:
        lines += ["| gate | status | value | threshold | n |", "|---|---|---|---|---|"]
        for g in report["gates"]:
            value = "—" if g["value"] is None else f"{g['value']:.4g}"
            lines.append(f"| {md_code(g['id'])} | {ICON.get(g['status'], '')} {md_text(g['status'])} | {value} "
                         f"({md_text(g['use'])}) | {md_text(g['op'])} {g['threshold']:g} | "
                         f"{g['n'] if g['n'] is not None else '—'} |")
        lines.append("")
        why = [g for g in report["gates"] if g["status"] in ("inconclusive", "not_run", "error")]
        if why:
            lines += ["**Why gates were not decided**", ""]
            for g in why:
                effect = "blocking" if gate_blocks(g) else "not blocking"
                lines.append(f"- {md_code(g['id'])} {md_text(g['status'])} ({effect}): {md_text(g.get('message', ''))}")
            lines.append("")
    else:
        lines += ["**No gates: nothing was checked.** The recipe has no [[gates]]: this verdict rests on the "
                  "validity checks alone.", ""]
    repro = repro_verdict(report)
    if repro is not None:
        lines += [f"**Reproducibility**: {md_text(repro)}.", ""]
    bad = [c for c in report["checks"] if c["status"] != "pass"]
    if bad:
        lines.append("**Validity checks**")
        lines.append("")
        for c in bad:
            lines.append(f"- {ICON[c['status']]} {md_code(c['id'])} ({c['status']}): {md_text(c.get('message', ''))}")
        lines.append("")
    if "harden" in report["suites"]:
        lines += _harden_lines(report["suites"]["harden"])
    for name, s in report["suites"].items():
        for note in s.get("notes", []):
            lines.append(f"- **{md_text(name)}**: {md_text(note)}")
    if html_path is not None:
        lines += ["", f"Full report: {md_code(html_path)}"]
    return "\n".join(lines).rstrip() + "\n"


def _num(v: Any) -> str:
    return "—" if v is None else f"{v:.4g}"


def _harden_lines(h: dict[str, Any]) -> list[str]:
    """`audit harden`: what ran, the best epoch, and the trade-off (gains against clean accuracy lost)."""
    c, t = h["config"], h["tables"]
    threat = f"sigma {c['sigma']:g}" if c["method"] == "noise" else f"eps {c['eps_label']} ({c['norm']})"
    d = t["diff"]
    out = [f"**Hardening**: {md_text(c['method'])} at {md_text(threat)}, best epoch {t['best_epoch']} of "
           f"{len(t['history']) - 1}" + (f" ({md_text(t['stopped'])})" if t["stopped"] else "") + "; before/after "
           + ("paired on the same examples" if d["paired"] else f"NOT paired ({md_text(d['unpaired_reason'])})")
           + f", {d['flips']} per-example flip(s), see diff.md.", ""]
    if t["tradeoff"]:
        out += ["| norm | eps | robust accuracy before | after | gained [95% paired interval] | verdict | clean accuracy before → after |",
                "|---|---|---|---|---|---|---|"]
        for r in t["tradeoff"]:
            ci = f" [{_num(r['ci_low'])}, {_num(r['ci_high'])}]" if r["ci_low"] is not None else ""
            out.append(f"| {md_text(r['norm'])} | {md_text(r['eps'])} | {_num(r['before'])} | {_num(r['after'])} | "
                       f"{_num(r['gain'])}{ci} | {md_text(r['verdict'])} | {_num(r['clean_before'])} → "
                       f"{_num(r['clean_after'])} |")
        out.append("")
    clean = t.get("clean")
    if clean:
        out += [f"Clean accuracy {_num(clean['base'])} → {_num(clean['new'])} ({md_text(clean['verdict'])}, "
                f"{md_text(clean['test'])}, p = {_num(clean['p_value'])}).", ""]
    return out
