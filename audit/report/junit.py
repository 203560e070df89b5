"""JUnit XML: one testcase per gate (and one per validity check), for CI test-report viewers."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from audit.report.gates import gate_blocks


def _run_id(suite: ET.Element, report: dict[str, Any]) -> None:
    """The id of the run that wrote the file (see audit.report.outdir), as a testsuite property."""
    if isinstance(report.get("run_id"), str):
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="audit-run-id", value=report["run_id"])


def render_failure_junit(report: dict[str, Any]) -> str:
    """A run that failed or did not finish: one errored testcase, so a CI test view shows it red."""
    root = ET.Element("testsuites", name="audit", tests="1", failures="0", errors="1")
    suite = ET.SubElement(root, "testsuite", name="audit.run", tests="1", failures="0", errors="1", skipped="0")
    _run_id(suite, report)
    case = ET.SubElement(suite, "testcase", classname="audit.run", name=str(report.get("command", "run")))
    code = report.get("exit_code")
    what = f"the run failed (exit {code})" if code is not None else "the run did not finish"
    ET.SubElement(case, "error", message=f"{what}: {report.get('error', '')}",
                  type=str(report.get("run_status"))).text = str(report.get("error", ""))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render_junit(report: dict[str, Any]) -> str:
    if report.get("run_status") in ("failed", "incomplete"):
        return render_failure_junit(report)
    root = ET.Element("testsuites", name="audit")
    gates = ET.SubElement(root, "testsuite", name="audit.gates")
    _run_id(gates, report)
    n_fail = n_skip = n_err = 0
    for g in report["gates"]:
        case = ET.SubElement(gates, "testcase", classname=f"audit.gates.{g['metric']}", name=g["id"])
        detail = (f"{g['metric']} {g['params'] or ''} {g['use']} = {_fmt(g['value'])} (n={g['n']}); "
                  f"required {g['op']} {g['threshold']:g}; status {g['status']}: {g['message']}")
        if g["status"] == "error" and gate_blocks(g):  # the gate itself is wrong (no record): a JUnit error
            n_err += 1
            ET.SubElement(case, "error", message=f"gate cannot be evaluated: {g['message']}",
                          type="error").text = detail
        elif gate_blocks(g):
            n_fail += 1
            kind = "inconclusive" if g["status"] == "inconclusive" else "gate failed"
            el = ET.SubElement(case, "failure", message=f"{kind}: {g['use']} {_fmt(g['value'])} "
                                                        f"vs {g['op']} {g['threshold']:g}", type=g["status"])
            el.text = detail
        elif g["status"] == "not_run":
            n_skip += 1
            ET.SubElement(case, "skipped", message=g["message"])
        else:
            if g["status"] != "pass":  # warn-severity failures and tolerated inconclusives stay visible
                ET.SubElement(case, "system-out").text = f"WARNING ({g['severity']}): {detail}"
    gates.set("tests", str(len(report["gates"])))
    gates.set("failures", str(n_fail))
    gates.set("errors", str(n_err))
    gates.set("skipped", str(n_skip))

    checks = ET.SubElement(root, "testsuite", name="audit.validity")
    _run_id(checks, report)
    c_fail = 0
    for c in report["checks"]:
        case = ET.SubElement(checks, "testcase", classname=f"audit.validity.{c.get('suite', 'core')}", name=c["id"])
        if c["status"] == "fail":
            c_fail += 1
            ET.SubElement(case, "failure", message=f"evaluation invalid: {c['id']}", type="invalid").text = c["message"]
        elif c["status"] == "warn":
            ET.SubElement(case, "system-out").text = f"WARNING: {c['message']}"
    checks.set("tests", str(len(report["checks"])))
    checks.set("failures", str(c_fail))
    checks.set("errors", "0")
    checks.set("skipped", "0")
    root.set("tests", str(len(report["gates"]) + len(report["checks"])))
    root.set("failures", str(n_fail + c_fail))
    root.set("errors", str(n_err))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _fmt(v: Any) -> str:
    return "undefined" if v is None else f"{v:.6g}"
