"""Field-by-field validation of a report.json read by ``audit gate``.

A report is an input like any other: a hand-edited or truncated file must be one line naming the field
(``metrics[3].value``) and what it should be, exit 2, never a TypeError deep in the gate code (exit 3).
Only what gating and rendering read is checked; unknown extra keys are allowed (newer minor versions).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from audit.errors import ReportError

OPS = (">=", "<=", ">", "<")
USES = ("value", "ci_low", "ci_high")
CHECK_STATUS = ("pass", "warn", "fail")


class _Where:
    def __init__(self, path: str | Path):
        self.path = path

    def fail(self, field: str, what: str) -> ReportError:
        return ReportError(f"{self.path}: malformed report: {field} {what}; re-create the report with "
                           "`audit run` (report.json is not meant to be edited by hand)")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num_or_null(w: _Where, field: str, v: Any) -> None:
    if v is not None and not _is_number(v):
        raise w.fail(field, f"is {v!r}: expected a finite number or null")


def _string(w: _Where, field: str, v: Any) -> None:
    if not isinstance(v, str) or not v:
        raise w.fail(field, f"is {v!r}: expected a non-empty string")


def _params(w: _Where, field: str, v: Any) -> None:
    if not isinstance(v, dict):
        raise w.fail(field, f"is {v!r}: expected an object of parameters ({{}} for none)")
    for k, x in v.items():
        if not (isinstance(x, (str, int, float, bool)) or x is None) or (isinstance(x, float) and not math.isfinite(x)):
            raise w.fail(f"{field}.{k}", f"is {x!r}: expected a string, number or boolean")


def _list_of(w: _Where, field: str, v: Any, kind: type = dict) -> list[Any]:
    if not isinstance(v, list):
        raise w.fail(field, "is missing or not a list")
    for i, item in enumerate(v):
        if not isinstance(item, kind):
            raise w.fail(f"{field}[{i}]", f"is {item!r}: expected {'an object' if kind is dict else 'a string'}")
    return v


def _has(w: _Where, field: str, item: dict[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in item]
    if missing:
        raise w.fail(field, f"lacks {', '.join(missing)}")


def validate_metric(w: _Where, i: int, m: dict[str, Any]) -> None:
    f = f"metrics[{i}]"
    _has(w, f, m, ("suite", "name", "params", "value", "n"))
    _string(w, f"{f}.suite", m["suite"])
    _string(w, f"{f}.name", m["name"])
    _params(w, f"{f}.params", m["params"])
    for key in USES:
        _num_or_null(w, f"{f}.{key}", m.get(key))
    n = m["n"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise w.fail(f"{f}.n", f"is {n!r}: expected a count (an integer >= 0)")
    inc = m.get("inconclusive")
    if inc is not None and not isinstance(inc, (str, bool)):
        raise w.fail(f"{f}.inconclusive", f"is {inc!r}: expected a reason (a string)")


def validate_check(w: _Where, i: int, c: dict[str, Any]) -> None:
    f = f"checks[{i}]"
    _has(w, f, c, ("id", "status"))
    _string(w, f"{f}.id", c["id"])
    if c["status"] not in CHECK_STATUS:
        raise w.fail(f"{f}.status", f"is {c['status']!r}: expected one of {', '.join(CHECK_STATUS)}")
    if not isinstance(c.get("message", ""), str):
        raise w.fail(f"{f}.message", f"is {c['message']!r}: expected a string")
    if not isinstance(c.get("downgraded", False), bool):
        raise w.fail(f"{f}.downgraded", f"is {c['downgraded']!r}: expected true or false")


GATE_KEYS = ("id", "suite", "name", "params", "op", "threshold", "use", "severity")


def validate_stored_gate(w: _Where, i: int, g: dict[str, Any]) -> None:
    """A gate of ``recipe.gates`` (what `audit gate` without --recipe applies): as the recipe loader would
    have produced it."""
    f = f"recipe.gates[{i}]"
    _has(w, f, g, GATE_KEYS)
    for key in ("id", "suite", "name"):
        _string(w, f"{f}.{key}", g[key])
    _params(w, f"{f}.params", g["params"])
    if g["op"] not in OPS:
        raise w.fail(f"{f}.op", f"is {g['op']!r}: expected one of {', '.join(OPS)}")
    if not _is_number(g["threshold"]):
        raise w.fail(f"{f}.threshold", f"is {g['threshold']!r}: expected a finite number")
    if g["use"] not in USES:
        raise w.fail(f"{f}.use", f"is {g['use']!r}: expected one of {', '.join(USES)}")
    if g["severity"] not in ("error", "warn"):
        raise w.fail(f"{f}.severity", f"is {g['severity']!r}: expected 'error' or 'warn'")
    min_n = g.get("min_n")
    if min_n is not None and (not isinstance(min_n, int) or isinstance(min_n, bool) or min_n < 1):
        raise w.fail(f"{f}.min_n", f"is {min_n!r}: expected an integer >= 1 or null")
    if g.get("inconclusive", "fail") not in ("fail", "pass"):
        raise w.fail(f"{f}.inconclusive", f"is {g['inconclusive']!r}: expected 'fail' or 'pass'")


def validate_report(report: dict[str, Any], path: str | Path) -> None:
    """Every field ``audit gate`` reads, with its type and allowed values."""
    w = _Where(path)
    if not isinstance(report.get("suites"), dict):
        raise w.fail("suites", "is missing or not an object")
    for name, s in report["suites"].items():
        if not isinstance(s, dict):
            raise w.fail(f"suites.{name}", f"is {s!r}: expected an object")
        notes = s.get("notes", [])
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise w.fail(f"suites.{name}.notes", "is not a list of strings")
    for i, m in enumerate(_list_of(w, "metrics", report.get("metrics"))):
        validate_metric(w, i, m)
    for i, c in enumerate(_list_of(w, "checks", report.get("checks"))):
        validate_check(w, i, c)
    for key in ("suites_excused", "suites_run"):
        if key in report:
            _list_of(w, key, report[key], str)
    for key in ("model", "data", "provenance"):
        if key in report and not isinstance(report[key], dict):
            raise w.fail(key, f"is {report[key]!r}: expected an object")
    if "run_id" in report and not isinstance(report["run_id"], str):
        raise w.fail("run_id", f"is {report['run_id']!r}: expected a string")
    validate_gallery(w, report)


# The per-example gallery (audit.suites.gallery): `audit gate --out` re-renders report.html from it.
_GALLERY = {"adversarial": ("robustness", ("index", "label", "pred", "confidence", "attack", "norm", "eps", "eps_value",
                                           "amplify", "clean", "adversarial", "perturbation"),
                            ("clean", "adversarial", "perturbation")),
            "errors": ("performance", ("index", "y", "label", "pred", "confidence", "image"), ("image",))}


def _image(w: _Where, field: str, v: Any, nullable: bool) -> None:
    import base64
    import binascii

    if v is None and nullable:
        return
    if not isinstance(v, dict) or not isinstance(v.get("b64"), str) or not isinstance(v.get("shape"), list):
        raise w.fail(field, "is not an image ({b64, shape})")
    shape = v["shape"]
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape) \
            or shape[2] not in (1, 3):
        raise w.fail(f"{field}.shape", f"is {shape!r}: expected [height, width, 1 or 3]")
    try:
        size = len(base64.b64decode(v["b64"], validate=True))
    except (binascii.Error, ValueError):
        raise w.fail(f"{field}.b64", "is not base64") from None
    if size != shape[0] * shape[1] * shape[2]:
        raise w.fail(f"{field}.b64", f"holds {size} bytes: expected {shape[0] * shape[1] * shape[2]} for shape {shape}")


def validate_gallery(w: _Where, report: dict[str, Any]) -> None:
    """suites.<suite>.tables.gallery: lists of examples whose numbers are numbers and images decode."""
    for key, (suite, keys, images) in _GALLERY.items():
        tables = report["suites"].get(suite, {}).get("tables", {})
        g = tables.get("gallery") if isinstance(tables, dict) else None
        if g is None or key not in g:
            continue
        field = f"suites.{suite}.tables.gallery.{key}"
        for i, item in enumerate(_list_of(w, field, g[key])):
            _has(w, f"{field}[{i}]", item, keys)
            for k in ("confidence", "eps_value", "amplify"):
                if k in item and not _is_number(item[k]):
                    raise w.fail(f"{field}[{i}].{k}", f"is {item[k]!r}: expected a finite number")
            for k in images:
                _image(w, f"{field}[{i}].{k}", item[k], nullable=key == "errors")
            feats = item.get("features")
            if feats is not None and (not isinstance(feats, list) or not all(_is_number(v) for v in feats)):
                raise w.fail(f"{field}[{i}].features", "is not a list of finite numbers")


def validate_stored_recipe(report: dict[str, Any], path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The stored recipe's gates and [validity] downgrades, validated (for `audit gate` without --recipe)."""
    w = _Where(path)
    recipe = report.get("recipe")
    if not isinstance(recipe, dict) or not isinstance(recipe.get("gates"), list):
        raise ReportError(f"{path}: the report holds no recipe with gates; pass --recipe with the gates to apply")
    gates = _list_of(w, "recipe.gates", recipe["gates"])
    for i, g in enumerate(gates):
        validate_stored_gate(w, i, g)
    sections = recipe.get("sections", {})
    if not isinstance(sections, dict):
        raise w.fail("recipe.sections", "is not an object")
    validity = sections.get("validity", {})
    if not isinstance(validity, dict):
        raise w.fail("recipe.sections.validity", "is not an object")
    downgrade = _list_of(w, "recipe.sections.validity.downgrade", validity.get("downgrade", []), str)
    return gates, list(downgrade)
