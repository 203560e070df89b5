"""Same-seed comparison of two runs: SHA-256 of every per-example column and every metric record,
max |delta logit|, prediction flips, changed attack/noise outcomes and changed metrics.

Pure functions of two (ExampleTable, report.json) pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

OUTCOME_PREFIXES = ("robust:", "noise:")


def array_sha256(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order): equal digests <=> bitwise equal arrays."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def metric_key(m: dict[str, Any]) -> str:
    """``suite.name[k=v,...]`` with the params sorted: one key per metric record."""
    params = ",".join(f"{k}={m['params'][k]}" for k in sorted(m["params"]))
    return f"{m['suite']}.{m['name']}[{params}]"


def metric_sha256(m: dict[str, Any]) -> str:
    """SHA-256 of a record's numbers (value, ci_low, ci_high, n) as canonical JSON (floats as repr, so every
    bit of a double counts)."""
    nums = {k: (repr(float(m[k])) if isinstance(m[k], float) else m[k]) for k in ("value", "ci_low", "ci_high", "n")}
    return hashlib.sha256(json.dumps(nums, sort_keys=True).encode()).hexdigest()


def run_digests(columns: dict[str, np.ndarray], metrics: list[dict[str, Any]]) -> dict[str, str]:
    """The digests the report shows for one run: logits, predictions, attack/noise outcomes (all outcome
    columns together, in name order) and every metric record together."""
    out = {"logits": array_sha256(columns["logits"]) if "logits" in columns else None,
           "pred": array_sha256(columns["pred"]) if "pred" in columns else None}
    h = hashlib.sha256()
    for name in sorted(c for c in columns if c.startswith(OUTCOME_PREFIXES)):
        h.update(name.encode() + b"\0" + array_sha256(columns[name]).encode())
    out["outcomes"] = h.hexdigest()
    h = hashlib.sha256()
    for key, digest in sorted((metric_key(m), metric_sha256(m)) for m in metrics):
        h.update(key.encode() + b"\0" + digest.encode())
    out["metrics"] = h.hexdigest()
    return out


def _rows_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        neq = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    else:
        neq = a != b
    return neq.reshape(len(neq), -1).any(axis=1) if neq.ndim > 1 else neq


def _max_abs(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.dtype.kind not in "fiu" or b.dtype.kind not in "fiu":
        return None
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    both = np.isfinite(a64) & np.isfinite(b64)
    d = np.abs(a64[both] - b64[both])
    mismatch = ~both & ~((a64 == b64) | (np.isnan(a64) & np.isnan(b64)))  # inf vs finite, nan vs number
    if mismatch.any():
        return math.inf
    return float(d.max()) if d.size else 0.0


def compare_runs(base_cols: dict[str, np.ndarray], base_metrics: list[dict[str, Any]],
                 other_cols: dict[str, np.ndarray], other_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare a run with the base run of the same seed.

    Returns ``{identical, columns: [{column, identical, rows_differ, max_abs_diff}], max_abs_logit_diff,
    prediction_flips, outcome_flips, metrics_changed, changed_metrics: [{key, base, other, abs_diff}],
    max_abs_metric_diff}``. ``identical`` is the bitwise verdict: every column and every metric record
    hashes the same.
    """
    cols = []
    for name in sorted(set(base_cols) | set(other_cols)):
        if name not in base_cols or name not in other_cols:
            cols.append({"column": name, "identical": False, "rows_differ": None, "max_abs_diff": None,
                         "note": "only in " + ("the base run" if name in base_cols else "this run")})
            continue
        a, b = base_cols[name], other_cols[name]
        same = array_sha256(a) == array_sha256(b)
        if a.shape != b.shape:
            cols.append({"column": name, "identical": False, "rows_differ": None, "max_abs_diff": None,
                         "note": f"shape {a.shape} vs {b.shape}"})
            continue
        cols.append({"column": name, "identical": same, "rows_differ": 0 if same else int(_rows_differ(a, b).sum()),
                     "max_abs_diff": 0.0 if same else _max_abs(a, b)})
    by = {c["column"]: c for c in cols}
    outcome_rows = None
    if all(n in base_cols and n in other_cols and base_cols[n].shape == other_cols[n].shape
           for n in set(base_cols) | set(other_cols) if n.startswith(OUTCOME_PREFIXES)):
        names = [n for n in base_cols if n.startswith(OUTCOME_PREFIXES)]
        rows = np.zeros(len(base_cols["pred"]), dtype=bool)
        for n in names:
            rows |= _rows_differ(base_cols[n], other_cols[n])
        outcome_rows = int(rows.sum())

    bm = {metric_key(m): m for m in base_metrics}
    om = {metric_key(m): m for m in other_metrics}
    changed = []
    for key in sorted(set(bm) | set(om)):
        a, b = bm.get(key), om.get(key)
        if a is None or b is None or metric_sha256(a) != metric_sha256(b):
            diffs = []
            for f in ("value", "ci_low", "ci_high"):
                va, vb = (a or {}).get(f), (b or {}).get(f)
                if va is not None and vb is not None:
                    diffs.append(abs(float(va) - float(vb)))
                elif va != vb:
                    diffs.append(math.inf)
            changed.append({"key": key, "base": None if a is None else a["value"],
                            "other": None if b is None else b["value"],
                            "abs_diff": max(diffs) if diffs else 0.0})
    changed.sort(key=lambda c: (-c["abs_diff"], c["key"]))  # largest change first (inf: appeared/vanished)
    logits = by.get("logits", {})
    pred = by.get("pred", {})
    return {
        "identical": all(c["identical"] for c in cols) and not changed,
        "columns": cols,
        "max_abs_logit_diff": logits.get("max_abs_diff"),
        "prediction_flips": pred.get("rows_differ"),
        "outcome_flips": outcome_rows,
        "metrics_changed": len(changed),
        "max_abs_metric_diff": max((c["abs_diff"] for c in changed), default=0.0),
        "changed_metrics": changed,
    }
