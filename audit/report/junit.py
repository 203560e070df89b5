"""JUnit XML: one testcase per gate (and one per validity check), for CI test-report viewers."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from audit.report.gates import gate_blocks


def render_junit(report: dict[str, Any]) -> str:
    root = ET.Element("testsuites", name="audit")
    gates = ET.SubElement(root, "testsuite", name="audit.gates")
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
