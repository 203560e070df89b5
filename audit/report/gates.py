"""Gates: compare report metrics with recipe thresholds, and turn checks and gates into an exit code.

Pure functions of report records, so ``audit gate report.json`` reaches exactly the verdict the run did.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Collection

from audit.errors import ExitCode

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}

# A gate that sets no min_n is inconclusive below this many examples: a metric of a handful of examples
# (one example: accuracy 1.0) says nothing a release could stand on. Applies where a record's n counts
# examples (every suite of `audit run`; not repro, whose n counts seeds). `min_n = 1` turns it off.
DEFAULT_MIN_N = 30


def default_min_n(suite: str) -> int | None:
    """The min_n of a gate on ``suite`` that sets none: DEFAULT_MIN_N where the suite's records count
    examples in ``n`` (its ``Suite.n_counts``), else None."""
    from audit.suites import get_suite, suite_names

    if suite in suite_names() and get_suite(suite).n_counts != "examples":
        return None
    return DEFAULT_MIN_N


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            if v.count("/") == 1:  # an epsilon written as a fraction, "8/255": its value as the recipe parses it
                num, den = v.split("/")
                return float(num) / float(den)
            return float(v)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def same_param(a: Any, b: Any) -> bool:
    """Params match as strings ("8/255" names "8/255"), or as numbers when both are numbers (a gate's
    eps = 1 names the record's "1.0", eps = 0.25 the record's "1/4")."""
    if str(a) == str(b):
        return True
    x, y = _as_number(a), _as_number(b)
    return x is not None and y is not None and x == y


def _params_match(record_params: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(k in record_params and same_param(record_params[k], v) for k, v in wanted.items())


def find_metric(metrics: list[dict[str, Any]], suite: str, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Records of ``suite.name`` whose params include ``params``. With no params given, records without
    params are preferred (e.g. ``accuracy`` over a per-group accuracy)."""
    cands = [m for m in metrics if m["suite"] == suite and m["name"] == name and _params_match(m["params"], params)]
    if len(cands) > 1:
        exact = [m for m in cands if set(m["params"]) == set(params)]
        if exact:
            cands = exact
    return cands


def _quote(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def closest_value(value: Any, valid: list[Any]) -> Any | None:
    """The valid value a mistyped one most likely meant: the same number written another way (0.03137 for
    "8/255", within 0.5 %), else the closest spelling (difflib); None when nothing is close."""
    import difflib

    x = _as_number(value)
    if x is not None:  # a number is only ever "meant" as the same number (1 vs 11 is no typo to guess at)
        near = [(abs(_as_number(v) - x), v) for v in valid if _as_number(v) is not None]
        near = [(d, v) for d, v in near if d <= 5e-3 * max(abs(x), 1e-12)]
        return min(near, key=lambda dv: dv[0])[1] if near else None
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1, cutoff=0.6)
    return next((v for v in valid if str(v) == close[0]), None) if close else None


def describe_valid(param: str, value: Any, valid: list[Any], scope: str = "") -> str:
    """``eps = 0.03137 is not one of the values there: '2/255', '8/255'; did you mean '8/255' (= 0.03137)?``"""
    listed = ", ".join(_quote(v) for v in valid)
    line = f"{param} = {_quote(value)} is not one of the values {scope or 'there'}: {listed}"
    near = closest_value(value, valid)
    if near is not None:
        num = _as_number(near)
        same = f" (= {num:.6g})" if isinstance(near, str) and num is not None and str(near) != f"{num:g}" else ""
        line += f"; did you mean {_quote(near)}{same}?"
    return line


def unmatched_params(params: dict[str, Any], records: list[dict[str, Any]]) -> str | None:
    """Why ``params`` select none of ``records`` (the records of one metric), naming the valid values of the
    parameter at fault; None when the metric has no record at all (then nothing names a valid value: the
    metric was not measured, which is not a typo in params).

    For each parameter, the values it takes among the records that match the gate's other parameters
    (eps of the gate's norm); failing that, among all the metric's records."""
    if not records:
        return None
    for k, v in params.items():
        others = {p: w for p, w in params.items() if p != k}
        scoped = [r for r in records if k in r["params"] and _params_match(r["params"], others)]
        pool = scoped or [r for r in records if k in r["params"]]
        if not pool:
            keys = sorted({p for r in records for p in r["params"]})
            return (f"no record of it has a {k!r} parameter (its records' parameters: "
                    f"{', '.join(keys) if keys else 'none'})")
        valid = list(dict.fromkeys(r["params"][k] for r in pool))
        if not any(same_param(v, a) for a in valid):
            scope = ("with " + ", ".join(f"{p} = {_quote(w)}" for p, w in others.items())) if scoped and others \
                else "in this report"
            return describe_valid(k, v, valid, scope)
    keysets = list(dict.fromkeys(tuple(sorted(r["params"])) for r in records))
    listed = " or ".join("(" + ", ".join(k) + ")" if k else "(none)" for k in keysets[:8])
    return (f"each value exists, but no record has these params together ({', '.join(params)}); its records have "
            f"the params {listed}")


def evaluate_gate(gate: dict[str, Any], metrics: list[dict[str, Any]], suites_run: list[str],
                  excused: Collection[str] = ()) -> dict[str, Any]:
    """One gate record ``{id, metric, params, op, threshold, use, value, status, ...}``.

    status: pass | fail | inconclusive (value undefined or n < min_n; min_n defaults to DEFAULT_MIN_N for
    records that count examples) | not_run (its suite did not run)
    | error (the recipe's params do not pick exactly one record). A not_run gate blocks like a failed one
    (a gate that cannot be checked must not pass silently) unless its suite is ``excused``: left out on
    purpose (--suite, [run] suites) or produced by another command (repro).
    """
    out = {
        "id": gate["id"], "metric": f"{gate['suite']}.{gate['name']}", "params": dict(gate["params"]),
        "op": gate["op"], "threshold": gate["threshold"], "use": gate["use"], "severity": gate["severity"],
        "min_n": gate.get("min_n") if gate.get("min_n") is not None else default_min_n(gate["suite"]),
        "inconclusive_counts_as": gate.get("inconclusive", "fail"),
        "value": None, "n": None, "status": "pass", "message": "",
    }
    # The suite whose records the gate needs: its own, or for repro.seed_std of "robustness.robust_accuracy"
    # the suite named in params (the study has that record only if robustness ran in its runs).
    target = gate["suite"]
    of = gate["params"].get("metric") if gate["suite"] == "repro" and "repro" in suites_run else None
    if isinstance(of, str) and "." in of:
        target = of.split(".", 1)[0]
    if target not in suites_run:
        if target in excused:
            why = ("it is checked by `audit repro`, not by `audit run`" if target == "repro"
                   else "left out on purpose")
            out.update(status="not_run", excused=True, missing_suite=target,
                       message=f"suite {target!r} was not part of this run ({why})")
        else:
            out.update(status="not_run", excused=False, missing_suite=target,
                       message=f"suite {target!r} did not run, so this gate cannot be checked: add a "
                               f"[{target}] table to the recipe or pass --suite {target}")
        return out
    found = find_metric(metrics, gate["suite"], gate["name"], gate["params"])
    if len(found) != 1:
        if not found:
            msg = f"no record of {out['metric']} with params {gate['params']}"
            same = [m for m in metrics if m["suite"] == gate["suite"] and m["name"] == gate["name"]]
            why = unmatched_params(gate["params"], same)
            if why is not None:  # the metric was measured: the params name something it was not measured for
                msg += f": {why}"
                out["params_mistake"] = True
            elif not same:
                msg += f": the {gate['suite']} suite recorded no {gate['name']} at all in this report (see its notes)"
        else:
            opts = "; ".join(str(m["params"]) for m in found[:6])
            msg = f"{len(found)} records of {out['metric']} match; add params to pick one: {opts}"
            out["params_mistake"] = True
        out.update(status="error", message=msg)
        return out
    rec = found[0]
    value = rec[gate["use"]]
    out["value"], out["n"], out["params"] = value, rec["n"], dict(rec["params"])
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        why = (f"the record has no {gate['use']}: no interval was computed for it (a bootstrap of 0, or a metric "
               "reported without one)") if gate["use"] != "value" else "the metric is undefined"
        out.update(status="inconclusive", message=why)
        return out
    if rec.get("inconclusive"):
        out.update(status="inconclusive", message=rec["inconclusive"])
        return out
    if out["min_n"] is not None and rec["n"] < out["min_n"]:
        default = "" if gate.get("min_n") is not None else " (the default for a gate that sets none)"
        out.update(status="inconclusive", message=f"n = {rec['n']} < min_n = {out['min_n']}{default}")
        return out
    ok = _OPS[gate["op"]](value, gate["threshold"])
    label = gate["use"] if gate["use"] != "value" else "value"
    out["status"] = "pass" if ok else "fail"
    out["message"] = f"{label} {value:.6g} {gate['op']} {gate['threshold']:g}: {'holds' if ok else 'does not hold'}"
    return out


def gate_blocks(g: dict[str, Any]) -> bool:
    """Does this gate record fail the run? (warn gates never do; inconclusive counts per the gate.)"""
    if g["severity"] != "error":
        return False
    if g["status"] in ("fail", "error"):
        return True
    if g["status"] == "not_run":
        return not g.get("excused", False)
    return g["status"] == "inconclusive" and g.get("inconclusive_counts_as", "fail") == "fail"


def apply_downgrades(checks: list[dict[str, Any]], downgrade: list[str]) -> list[dict[str, Any]]:
    """Checks with the recipe's downgrades applied. A check downgraded earlier (in a saved report) starts
    again from its original 'fail', so `audit gate --recipe` with another recipe decides afresh."""
    out = []
    for c in checks:
        c = dict(c)
        if c.pop("downgraded", False):
            c["status"] = "fail"
        if c["status"] == "fail" and c["id"] in downgrade:
            c["status"] = "warn"
            c["downgraded"] = True
        out.append(c)
    return out


def verdict(checks: list[dict[str, Any]], gates: list[dict[str, Any]]) -> tuple[str, ExitCode]:
    """invalid (a validity check failed: exit 4) > fail (a blocking gate: exit 1) > pass (exit 0)."""
    if any(c["status"] == "fail" for c in checks):
        return "invalid", ExitCode.INVALID
    if any(gate_blocks(g) for g in gates):
        return "fail", ExitCode.GATE_FAILED
    return "pass", ExitCode.OK
