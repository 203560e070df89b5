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


def _env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    tdir = templates_dir()
    env = Environment(loader=FileSystemLoader(str(tdir)), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    env.filters["png_uri"] = png_uri
    env.globals["gate_blocks"] = gate_blocks
    env.globals["section_template"] = lambda name: (
        f"sections/{name}.html.j2" if (tdir / "sections" / f"{name}.html.j2").is_file() else "sections/generic.html.j2")
    return env


def render_html(report: dict[str, Any]) -> str:
    """report.html from a report (report.json's content): one offline page. The public entry point that
    `audit run` and `audit gate --out` call; its signature stays ``render_html(report) -> str``."""
    env = _env()
    if report.get("run_status") in ("failed", "incomplete"):  # the run stopped before any result
        return env.get_template("failed.html.j2").render(r=report)
    statuses = [c["status"] for c in report["checks"]]
    return env.get_template("report.html.j2").render(
        r=report, figures=_figures(report), findings=findings(report), suite_order=suite_order(report),
        toc_sub=toc_subsections(report), nbad=statuses.count("fail"), nwarn=statuses.count("warn"),
        has_gallery=_has_gallery(report), standalone=False)


def render_summary(report: dict[str, Any]) -> str:
    """The summary card alone (verdict, gates, worst findings, notes on the setup): an HTML fragment for a
    notebook's ``_repr_html_`` or an e-mail, its style scoped to ``.audit-summary`` (the page around it keeps
    its own). Same data as the card atop report.html; links to the report's sections are left out."""
    env = _env()
    tpl = env.from_string('{% include "summary_style.html.j2" %}<div class="audit-summary">'
                          '{% include "summary.html.j2" %}</div>')
    return tpl.render(r=report, findings=findings(report), standalone=True)


def toc_subsections(report: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Second-level entries of the table of contents: (anchor id, label) per suite, for parts that exist."""
    out: dict[str, list[tuple[str, str]]] = {}
    s = report["suites"]
    if "robustness" in s:
        rob = [("rob-eps", "By eps")]
        if s["robustness"]["curves"].get("accuracy_vs_noise"):
            rob.append(("rob-noise", "Noise"))
        out["robustness"] = rob
    if "fairness" in s:
        out["fairness"] = [(f"fair-{i}", f"By {a['attribute']}")
                           for i, a in enumerate(s["fairness"]["tables"].get("attributes", []))]
    if "calibration" in s and s["calibration"]["tables"].get("temperature"):
        out["calibration"] = [("cal-temperature", "Temperature")]
    return out


def _has_gallery(report: dict[str, Any]) -> bool:
    return any(report["suites"].get(n, {}).get("tables", {}).get("gallery") for n in ("performance", "robustness"))




def suite_order(report: dict[str, Any]) -> list[str]:
    """Sections in run order (report.json sorts its keys), then any section added after the run (repro)."""
    ran = [s for s in report.get("suites_run", []) if s in report["suites"]]
    return ran + [s for s in report["suites"] if s not in ran]


# A passing gate this close to its threshold is worth a look before the next release: its value within 1%
# of the threshold (0.005 for a threshold of 0), or, for a gate on the value, an interval that reaches it.
NEAR_REL, NEAR_ABS = 0.01, 0.005
MAX_MODEL_FINDINGS = 8


def findings(report: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """What the summary card lists, in three boxes:

    - ``problems``: what makes the verdict: failed validity checks and blocking gates (alert boxes);
    - ``model``: the worst things measured about the model, worst first: the largest robustness drops (per
      norm the steepest fall of robust accuracy between two eps of the grid, per noise kind the drop at its
      largest level), the worst group by each disparity, miscalibration beyond noise, the weakest class, and
      gates that pass within a small margin of failing (or that fail without blocking);
    - ``notes``: about the setup, not the model (a check's warning, a suite's note): a quiet box.

    Every item is read from the report as it is (values, groups and eps named in its tables)."""
    problems, model, notes = [], [], []
    for c in report["checks"]:
        if c["status"] == "fail":
            problems.append({"level": "bad", "text": f"Invalid evaluation — {c['id']}: {c['message']}"})
    for g in report["gates"]:
        if gate_blocks(g):
            problems.append({"level": "bad", "text": f"Gate {g['id']} {g['status']}: {g['message']}"})
    for c in report["checks"]:
        if c["status"] == "warn":
            notes.append({"level": "info", "text": f"{c['id']}: {c['message']}"})
    for name in suite_order(report):
        for note in report["suites"][name].get("notes", []):
            notes.append({"level": "info", "text": f"{name}: {note}"})
    ranked: list[tuple[float, dict[str, str]]] = []  # (severity, item): larger is worse
    for g in report["gates"]:
        if not gate_blocks(g) and g["status"] not in ("pass", "not_run"):
            ranked.append((2.0, {"level": "warn", "text": f"Gate {g['id']} {g['status']} (not blocking): {g['message']}"}))
        elif g["status"] == "pass" and _near(g, report["metrics"]):
            ranked.append((1.5, {"level": "warn", "text":
                                 f"Gate {g['id']} passes by a small margin: {g['use']} {fmt(g['value'])} against "
                                 f"{g['op']} {fmt(g['threshold'])}"}))
    ranked += _robustness_findings(report) + _fairness_findings(report) + _calibration_findings(report)
    ranked += _performance_findings(report)
    ranked.sort(key=lambda t: -t[0])  # stable: equal severities keep their suite order
    model = [item for _, item in ranked[:MAX_MODEL_FINDINGS]]
    return {"problems": problems, "model": model, "notes": notes}


def _near(g: dict[str, Any], metrics: list[dict[str, Any]]) -> bool:
    """A passing gate within a small margin of failing: see NEAR_REL; or gated on the value while the
    metric's interval reaches past the threshold (the pass is within the measurement's noise)."""
    v, t = g.get("value"), g.get("threshold")
    if not isinstance(v, (int, float)) or not isinstance(t, (int, float)) or isinstance(v, bool):
        return False
    if abs(v - t) <= (NEAR_REL * abs(t) if t else NEAR_ABS):
        return True
    if g.get("use") == "value" and "." in str(g.get("metric", "")):
        suite, name = g["metric"].split(".", 1)
        for m in metrics:
            if m["suite"] == suite and m["name"] == name and m["params"] == g.get("params", {}):
                lo, hi = m.get("ci_low"), m.get("ci_high")
                if lo is not None and hi is not None and lo <= t <= hi:
                    return True
    return False


def _robustness_findings(report: dict[str, Any]) -> list[tuple[float, dict[str, str]]]:
    s = report["suites"].get("robustness")
    if not s:
        return []
    out = []
    for cur in s["curves"].get("accuracy_vs_eps", []):
        accs = [cur["clean"]] + list(cur["series"].get("worst case", []))
        labels = ["clean"] + [f"eps {lab}" for lab in cur["labels"]]
        drops = [(accs[i] - accs[i + 1], i) for i in range(len(accs) - 1)
                 if accs[i] is not None and accs[i + 1] is not None]
        if not drops:
            continue
        d, i = max(drops)
        med = cur.get("median_breaking_eps_label") or (fmt(cur["median_breaking_eps"], 3)
                                                      if cur.get("median_breaking_eps") is not None else None)
        text = (f"Robust accuracy ({cur['norm']}) falls most from {labels[i]} to {labels[i + 1]}: "
                f"{pct(accs[i])} → {pct(accs[i + 1])} ({100 * d:.1f} points)")
        text += f"; half the clean-correct examples break by eps {med}" if med else "; more than half survive every eps"
        out.append((1.0 + d, {"level": "warn", "text": text, "href": "#rob-eps"}))
    for cur in s["curves"].get("accuracy_vs_noise", []):
        acc = [a for a in cur["accuracy"] if a is not None]
        if not acc or cur["clean"] is None:
            continue
        d = cur["clean"] - acc[-1]
        out.append((0.5 + d, {"level": "warn", "text":
                              f"{cur['noise'].replace('_', '-')} noise at level {cur['labels'][-1] if 'labels' in cur else cur['levels'][-1]}: "
                              f"accuracy {pct(acc[-1])}, {100 * d:.1f} points below clean", "href": "#rob-noise"}))
    return out


_DISPARITY_WORDS = {"demographic_parity_difference": "selection rate", "equalized_odds_difference": "TPR/FPR",
                    "equal_opportunity_difference": "TPR", "predictive_parity_difference": "precision"}


def _fairness_findings(report: dict[str, Any]) -> list[tuple[float, dict[str, str]]]:
    s = report["suites"].get("fairness")
    if not s:
        return []
    out = []
    for i, a in enumerate(s["tables"].get("attributes", [])):
        for d in a["disparities"]:
            if d.get("kind") != "difference" or d.get("value") is None or d.get("low_group") is None:
                continue
            what = _DISPARITY_WORDS.get(d["name"], d["name"])
            text = (f"By {a['attribute']}: {d['name'].replace('_', ' ')} {fmt(d['value'], 3)} "
                    f"({what}: {d['high_group']} highest, {d['low_group']} lowest)")
            if d.get("inconclusive"):
                text += " — inconclusive: a group below the minimum size"
            out.append((0.8 + float(d["value"]), {"level": "warn", "text": text, "href": f"#fair-{i}"}))
        ff = a.get("four_fifths") or {}
        if ff.get("status") == "fail":
            out.append((2.0, {"level": "warn", "text": f"By {a['attribute']}: four-fifths rule fails (group "
                              f"{ff.get('worst_group')}: ratio {fmt(ff.get('min_ratio'), 3)} < {fmt(ff.get('threshold'))})",
                              "href": f"#fair-{i}"}))
    return out


def _calibration_findings(report: dict[str, Any]) -> list[tuple[float, dict[str, str]]]:
    s = report["suites"].get("calibration")
    if not s:
        return []
    out = []
    for row in s["tables"].get("ece", []):
        if row.get("verdict") == "beyond noise":
            out.append((1.0 + float(row["ece"]), {"level": "warn", "text":
                        f"Miscalibrated beyond noise: {row['binning'].replace('_', '-')} {row['kind'].replace('_', '-')} "
                        f"ECE {fmt(row['ece'], 3)} (a calibrated model shows {fmt(row.get('reference_mean'), 3)} at n = {row['n']})"}))
    return out


def _performance_findings(report: dict[str, Any]) -> list[tuple[float, dict[str, str]]]:
    s = report["suites"].get("performance")
    if not s or not s["tables"].get("per_class"):
        return []
    rows = [r for r in s["tables"]["per_class"] if r.get("recall") is not None]
    if not rows:
        return []
    worst = min(rows, key=lambda r: r["recall"])
    return [(0.6 + (1 - worst["recall"]), {"level": "info", "text":
             f"Weakest class by recall: {worst['class']} ({pct(worst['recall'])} of {worst['support']}; "
             f"precision {fmt(worst.get('precision'), 3)})"})]


def worst_findings(report: dict[str, Any]) -> list[dict[str, str]]:
    """Every item of the summary card's boxes in one list (problems, then the model's, then the setup's)."""
    f = findings(report)
    return f["problems"] + f["model"] + f["notes"]


def png_uri(img: dict[str, Any]) -> str:
    """A gallery image (``audit.suites.gallery``: base64 of uint8 pixels, its height, width and channels)
    as a PNG data URI. The bytes are only re-framed (a PNG header, a zlib stream and CRCs), not computed."""
    from audit.report.png import data_uri

    return data_uri(img)
