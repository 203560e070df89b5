"""The records a report is made of. Plain dataclasses that serialise to the JSON DESIGN.md describes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

CheckStatus = Literal["pass", "warn", "fail"]


def finite_or_none(v: Any) -> float | None:
    """A number at full precision, or None where it is undefined (JSON has no NaN/Inf: null)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def rounded(v: Any, digits: int = 6) -> float | None:
    """Like finite_or_none, rounded: for tables and curves shown to people (metric records keep full
    precision)."""
    v = finite_or_none(v)
    return None if v is None else round(v, digits)


_num = finite_or_none


@dataclass
class MetricRecord:
    """One number: ``{suite, name, params, value, ci_low, ci_high, n}``.

    ``params`` distinguishes records of the same name (e.g. ``{"average": "macro"}`` or
    ``{"class": "3"}``); ``n`` is the number of examples the value rests on.
    """

    suite: str
    name: str
    value: float | None
    n: int
    params: dict[str, Any] = field(default_factory=dict)
    ci_low: float | None = None
    ci_high: float | None = None
    # Why a gate on this record cannot decide (e.g. "group 'x' has 12 < 30 examples"); None when it can.
    inconclusive: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {
            "suite": self.suite,
            "name": self.name,
            "params": dict(self.params),
            "value": _num(self.value),
            "ci_low": _num(self.ci_low),
            "ci_high": _num(self.ci_high),
            "n": int(self.n),
        }
        if self.inconclusive:
            d["inconclusive"] = self.inconclusive
        return d


@dataclass
class Check:
    """A validity check of the evaluation itself: ``{id, suite, status, message}``.

    ``message`` says in plain words what was measured, what it means and what to do.
    A ``fail`` makes the evaluation invalid (exit 4) unless the recipe downgrades the check.
    """

    id: str
    status: CheckStatus
    message: str
    suite: str = "core"
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["value"] is None:
            d.pop("value")
        return d


@dataclass
class SuiteResult:
    """What a suite hands back: metric records, validity checks, and JSON-able material for renderers
    (curves, tables, the exact configuration that ran, plain-words notes)."""

    suite: str
    metrics: list[MetricRecord] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Wall-clock seconds of parts of the suite; they go to report["timing"], which determinism
    # comparisons leave out (everything else in a report must be the same for the same inputs and seed).
    timing: dict[str, float] = field(default_factory=dict)

    def metric(self, name: str, value: float | None, n: int, ci: tuple[float, float] | None = None,
               inconclusive: str | None = None, **params: Any) -> MetricRecord:
        rec = MetricRecord(self.suite, name, value, n, params,
                           None if ci is None else ci[0], None if ci is None else ci[1], inconclusive)
        self.metrics.append(rec)
        return rec

    def check(self, id: str, status: CheckStatus, message: str, value: Any = None) -> Check:
        c = Check(id, status, message, self.suite, value)
        self.checks.append(c)
        return c
