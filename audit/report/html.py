"""report.html: one self-contained offline file (inline CSS and SVG, no scripts, fonts or CDNs),
rendered with jinja2 from report.json alone."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from audit.report.gates import gate_blocks


def templates_dir() -> Path:
    """templates/ ships inside the wheel as audit/templates; in a source checkout it sits at the top level."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "templates", here.parent / "templates"):
        if (cand / "report.html.j2").is_file():
            return cand
    raise FileNotFoundError("report templates not found (expected audit/templates or ./templates)")


def _figures(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    out = {}
    for name in report["suites"]:
        try:
            mod = importlib.import_module(f"audit.report.figures.{name}")
        except ModuleNotFoundError:
            continue
        out[name] = mod.figures(report)
    return out


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def render_html(report: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    tdir = templates_dir()
    env = Environment(loader=FileSystemLoader(str(tdir)), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    env.globals["gate_blocks"] = gate_blocks
    env.globals["section_template"] = lambda name: (
        f"sections/{name}.html.j2" if (tdir / "sections" / f"{name}.html.j2").is_file() else "sections/generic.html.j2")
    if report.get("run_status") in ("failed", "incomplete"):  # the run stopped before any result
        return env.get_template("failed.html.j2").render(r=report)
    findings = worst_findings(report)
    return env.get_template("report.html.j2").render(r=report, figures=_figures(report), findings=findings,
                                                     suite_order=suite_order(report))


def suite_order(report: dict[str, Any]) -> list[str]:
    """Sections in run order (report.json sorts its keys), then any section added after the run (repro)."""
    ran = [s for s in report.get("suites_run", []) if s in report["suites"]]
    return ran + [s for s in report["suites"] if s not in ran]


def worst_findings(report: dict[str, Any]) -> list[dict[str, str]]:
    """What a reviewer must read first: failed checks, blocking gates, trusted-checkpoint warnings, notes."""
    out = []
    for c in report["checks"]:
        if c["status"] == "fail":
            out.append({"level": "bad", "text": f"Invalid evaluation — {c['id']}: {c['message']}"})
    for g in report["gates"]:
        if gate_blocks(g):
            out.append({"level": "bad", "text": f"Gate {g['id']} {g['status']}: {g['message']}"})
    for c in report["checks"]:
        if c["status"] == "warn":
            out.append({"level": "warn", "text": f"{c['id']}: {c['message']}"})
    for g in report["gates"]:
        if not gate_blocks(g) and g["status"] not in ("pass", "not_run"):
            out.append({"level": "warn", "text": f"Gate {g['id']} {g['status']} (not blocking): {g['message']}"})
    for name in suite_order(report):
        for note in report["suites"][name].get("notes", []):
            out.append({"level": "warn", "text": f"{name}: {note}"})
    return out
