"""`audit diff`: what changed between two audits, as one JSON-able dict (diff.json).

Reads only report.json files and, where they can be paired, the examples.npz beside them (the per-example
table is the contract between two audits: rows aligned on the global example index). Two audits are
**paired** when both ran on the same data (equal ``data.sha256``), both folders kept an examples.npz that
belongs to their report (its ``meta:run_id`` is the report's ``run_id``), and the two tables hold the same
examples with the same labels. Then every metric that can be recomputed from the table
(``audit.diff.recompute``) is compared on the same examples: McNemar's exact test for a proportion of 0/1
outcomes (accuracy, robust accuracy at one eps, a group's rate), the paired bootstrap for the rest; and the
per-example flips are listed. Otherwise, and for metrics the table cannot recompute, the two reports'
values and intervals are compared unpaired (``audit.diff.stats.unpaired_verdict``), and the diff says why
nothing is paired.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from audit import __version__
from audit.diff import stats as S
from audit.diff.recompute import Definition, Share, View, definition
from audit.errors import AuditError, ExitCode, ReportError

SCHEMA = "audit.diff/1"
# A recomputed value is the report's when they agree to this (absolute, or relative to the value's size):
# the same functions on the same columns agree to the last bits; anything else means the table does not
# say what the report says, and the metric is not paired.
_SAME = 1e-9


class Audit:
    """One side of the comparison: its report, and its table when it can be paired (else why not)."""

    def __init__(self, role: str, path: Path, report: dict[str, Any], table: Any | None, table_note: str | None):
        self.role, self.path, self.report, self.table, self.table_note = role, path, report, table, table_note

    @property
    def run_id(self) -> str | None:
        return self.report.get("run_id")

    def describe(self) -> dict[str, Any]:
        model, data = self.report.get("model") or {}, self.report.get("data") or {}
        return {"path": str(self.path), "run_id": self.run_id, "model_sha256": model.get("sha256"),
                "model_path": model.get("path"), "data_sha256": data.get("sha256"), "n": data.get("n"),
                "examples": None if self.table is None else str(self.path.parent / "examples.npz"),
                "passed": self.report.get("passed"), "verdict": self.report.get("verdict")}


def report_path(path: str | Path) -> Path:
    """A report.json, or the folder holding one."""
    p = Path(path)
    return p / "report.json" if p.is_dir() else p


def load_audit(path: str | Path, role: str) -> Audit:
    """Read a side: the report validated by :func:`audit.report.build.read_report` (a missing file, a file
    that is no report, or the report of a run that failed or did not finish is exit 2), and examples.npz
    beside it when present and of the same run. A stale examples.npz (another run's) is no error: the
    comparison is then unpaired and says why. An examples.npz that cannot be read is an error."""
    from audit.engine.table import ExampleTable
    from audit.report.build import read_report

    rp = report_path(path)
    try:
        # the folder check would refuse a stale examples.npz; here it only makes the comparison unpaired
        report = read_report(rp, check_folder=False)
    except ReportError as e:
        e.exit_code = ExitCode.USAGE  # `audit diff` on a failed run's report is bad input, whatever that run's code
        raise ReportError(f"{role}: {e}") from None
    npz = rp.parent / "examples.npz"
    if not npz.exists():
        return Audit(role, rp, report, None, f"{role} has no examples.npz beside {rp.name} ({npz})")
    try:
        table = ExampleTable.load(npz)
        for col in ("index", "label", "pred", "logits"):
            if col not in table.columns:
                raise ValueError(f"no {col!r} column")
        if len(set(map(len, table.columns.values()))) != 1:
            raise ValueError("its columns have different lengths")
    except Exception as e:  # noqa: BLE001 - any damage (zip, pickle refused, a missing column) is one line
        raise ReportError(f"{role}: {npz}: cannot read the per-example table ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}); re-run the audit, or move the file away to compare "
                          "the reports unpaired") from None
    rid = table.meta.get("run_id")
    if not rid or rid != report.get("run_id"):  # a table that cannot show it is this run's is not paired
        who = f"run {rid}" if rid else "no run (it carries no run id)"
        return Audit(role, rp, report, None, f"{role}'s {npz} is stale: it is from {who}, but {rp.name} from run "
                                             f"{report.get('run_id')}")
    return Audit(role, rp, report, table, None)


def _validate_options(alpha: float, tolerance: float, bootstrap: int) -> None:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise AuditError(f"--alpha {alpha}: expected a number strictly between 0 and 1 (e.g. 0.05)")
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise AuditError(f"--tolerance {tolerance}: expected a number >= 0 (e.g. 0.01)")
    if not (isinstance(bootstrap, int) and bootstrap >= 1):
        raise AuditError(f"--bootstrap {bootstrap}: expected an integer >= 1 (e.g. 1000)")


def pairing(base: Audit, new: Audit) -> tuple[str | None, tuple[Any, Any] | None]:
    """(why the two cannot be paired, or None; the aligned tables when they can)."""
    sb, sn = (base.report.get("data") or {}).get("sha256"), (new.report.get("data") or {}).get("sha256")
    if not sb or not sn or sb != sn:
        return (f"different data: BASE's data SHA-256 is {str(sb)[:12]}..., NEW's {str(sn)[:12]}...; the "
                "examples are not the same, so nothing is paired" if sb and sn else
                "a report does not record its data's SHA-256, so the examples cannot be matched"), None
    for side in (base, new):
        if side.table_note:
            return side.table_note + "; without both per-example tables nothing is paired", None
    tb, tn = base.table, new.table
    if len(tb) != len(tn) or not np.array_equal(tb["index"], tn["index"]):
        return ("the two examples.npz do not hold the same examples (same data SHA-256, but different rows: a "
                "[data] limit or a resumed run?)"), None
    if not np.array_equal(tb["label"], tn["label"]):
        return "the two examples.npz disagree on the labels of the same examples", None
    return None, tb.align(tn)


def _view(audit: Audit, table: Any) -> View:
    r = audit.report
    names = list((r.get("data") or {}).get("class_names") or [])
    if not names:
        names = [str(i) for i in range(table["logits"].shape[1])]
    return View(table.columns, table.column_meta, table.categories, names, r.get("suites") or {})


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else math.nan


def _ci(rec: dict[str, Any]) -> tuple[float, float] | None:
    lo, hi = _num(rec.get("ci_low")), _num(rec.get("ci_high"))
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def _better(suite: str, name: str) -> str | None:
    """The catalogue's direction (``MetricSpec.better``); None for a metric no suite declares."""
    from audit.suites import get_suite, suite_names

    if suite not in suite_names():
        return None
    spec = get_suite(suite).metrics.get(name)
    better = getattr(spec, "better", None)
    return better if better in ("higher", "lower") else None


def _gated_keys(report: dict[str, Any]) -> dict[str, list[str]]:
    """metric key -> ids of the gates (of this report) that read it."""
    from audit.report.gates import find_metric
    from audit.repro.compare import metric_key

    out: dict[str, list[str]] = {}
    for g in report.get("gates") or []:
        suite, _, name = str(g.get("metric", "")).partition(".")
        for m in find_metric(report.get("metrics") or [], suite, name, g.get("params") or {}):
            out.setdefault(metric_key(m), []).append(str(g.get("id")))
    return out


def _agrees(point: float, value: float) -> bool:
    if not math.isfinite(point) or not math.isfinite(value):
        return not math.isfinite(point) and not math.isfinite(value)
    return abs(point - value) <= _SAME * max(1.0, abs(value))


def _finish_verdict(row: dict[str, Any], b: float, n: float, better: str | None, alpha: float, tolerance: float) -> None:
    ok = all(math.isfinite(v) for v in (row["ci_low"], row["ci_high"], row["p_value"]))
    row["verdict"] = S.paired_verdict(n - b, row["ci_low"], row["ci_high"], row["p_value"], better,
                                      alpha=alpha, tolerance=tolerance) if ok else S.INCONCLUSIVE
    if not ok:
        row["note"] = "no resample defines the difference"


def _finish_bootstrap(row: dict[str, Any], reps: np.ndarray, b: float, n: float, better: str | None, alpha: float,
                      tolerance: float) -> None:
    lo, hi, p = S.paired_bootstrap(reps, 1.0 - alpha)
    row.update(ci_low=lo, ci_high=hi, p_value=p, test="paired_bootstrap", paired=True,
               bootstrap={"replicates": int(len(reps)), "defined": int(np.isfinite(reps).sum())})
    _finish_verdict(row, b, n, better, alpha, tolerance)


def _forget(view: View, w: np.ndarray) -> None:
    """Drop the view's cached results of one chunk of weights (keys ``(what, id(w), ...)``), so that chunks
    do not accumulate in memory and a later array cannot reuse a stale id."""
    for key in [k for k in view.cache if isinstance(k, tuple) and len(k) >= 2 and k[1] == id(w)]:
        del view.cache[key]


def compare_metric(rb: dict[str, Any], rn: dict[str, Any], vb: View | None, vn: View | None,
                   weights: np.ndarray | None, alpha: float, tolerance: float,
                   defer: list[tuple[Any, ...]] | None = None) -> dict[str, Any]:
    """One metric's row of the diff (keys in ``compare_reports``'s docstring). With ``weights`` (B, n) the
    paired bootstrap is computed here; with ``weights=None`` and a ``defer`` list, the row and its two
    definitions are appended to ``defer`` and the caller fills in the bootstrap (``compare_metrics``: one
    pass over chunks of resamples for every metric)."""
    better = _better(rb["suite"], rb["name"])
    b, n = _num(rb.get("value")), _num(rn.get("value"))
    row: dict[str, Any] = {"base": None if math.isnan(b) else b, "new": None if math.isnan(n) else n,
                           "delta": None if math.isnan(b) or math.isnan(n) else n - b,
                           "base_ci": _ci(rb), "new_ci": _ci(rn), "n_base": rb.get("n"), "n_new": rn.get("n"),
                           "better": better, "note": None}
    if math.isnan(b) or math.isnan(n):
        row.update(ci_low=None, ci_high=None, p_value=None, test=None, paired=False, verdict=S.INCONCLUSIVE,
                   note=f"undefined in {'BASE' if math.isnan(b) else 'NEW'}" + (" and NEW" if math.isnan(b) and math.isnan(n) else ""))
        return row
    db: Definition | None = definition(rb, vb) if vb is not None else None
    dn: Definition | None = definition(rn, vn) if vn is not None else None
    why_unpaired = None
    if vb is not None and (db is None or dn is None):
        why_unpaired = "not recomputable from the per-example table (compared unpaired)"
    elif db is not None and dn is not None:
        ones = np.ones((1, vb.n), dtype=np.int64)
        pb, pn = float(db(ones)[0]), float(dn(ones)[0])
        if not (_agrees(pb, b) and _agrees(pn, n)):
            db = dn = None
            why_unpaired = (f"the value recomputed from examples.npz ({pb:.6g} / {pn:.6g}) is not the report's "
                            f"({b:.6g} / {n:.6g}); compared unpaired")
    if db is not None and dn is not None:
        if isinstance(db, Share) and isinstance(dn, Share) and db.binary and dn.binary and np.array_equal(db.mask, dn.mask):
            base_right, new_right = db.values[db.mask] > 0.5, dn.values[dn.mask] > 0.5
            nb, nc = S.discordant(base_right, new_right)
            m = int(db.mask.sum())
            lo, hi = S.mcnemar_interval(nb, nc, m, 1.0 - alpha)
            p = S.mcnemar_exact(nb, nc)
            row.update(ci_low=lo, ci_high=hi, p_value=p, test="mcnemar_exact", paired=True,
                       discordant={"base_only": nb, "new_only": nc, "n": m})
        elif weights is None and defer is not None:  # replicates filled in later, one pass over the chunks
            defer.append((row, db, dn, b, n, better))
            return row
        else:
            _finish_bootstrap(row, dn(weights) - db(weights), b, n, better, alpha, tolerance)
            return row
        _finish_verdict(row, b, n, better, alpha, tolerance)
        return row
    lo, hi = S.unpaired_interval(_ci(rb), _ci(rn))
    row.update(ci_low=lo, ci_high=hi, p_value=None, test="intervals_unpaired", paired=False,
               verdict=S.unpaired_verdict(b, n, _ci(rb), _ci(rn), better, tolerance=tolerance), note=why_unpaired)
    return row


def compare_metrics(base: Audit, new: Audit, views: tuple[View, View] | None, *, alpha: float, tolerance: float,
                    bootstrap: int, seed: int) -> list[dict[str, Any]]:
    """Every metric record of either report, matched by key (``audit.repro.compare.metric_key``)."""
    from audit.repro.compare import metric_key
    from audit.seeding import rng

    mb = {metric_key(m): m for m in base.report.get("metrics") or []}
    mn = {metric_key(m): m for m in new.report.get("metrics") or []}
    gated = _gated_keys(new.report)
    defer: list[tuple[Any, ...]] = []
    rows = []
    for key in list(mb) + [k for k in mn if k not in mb]:
        rec = mb.get(key) or mn[key]
        row: dict[str, Any] = {"suite": rec["suite"], "name": rec["name"], "params": dict(rec.get("params") or {}),
                               "key": key, "gated": key in gated, "gates": gated.get(key, [])}
        if key in mb and key in mn:
            vb, vn = views if views is not None else (None, None)
            before = len(defer)
            row.update(compare_metric(mb[key], mn[key], vb, vn, None, alpha, tolerance, defer))
            if len(defer) > before:  # its bootstrap is filled into this row after the loop
                defer[-1] = (row,) + defer[-1][1:]
        else:
            only = "BASE" if key in mb else "NEW"
            row.update(base=_num(rec["value"]) if key in mb else None, new=_num(rec["value"]) if key in mn else None,
                       delta=None, ci_low=None, ci_high=None, p_value=None, test=None, paired=False,
                       better=_better(rec["suite"], rec["name"]), verdict="not_compared",
                       note=f"only in {only}")
            for side in ("base", "new"):
                if isinstance(row[side], float) and math.isnan(row[side]):
                    row[side] = None
        rows.append(row)
    if defer and views is not None:
        # One set of resamples for every metric and both models (a paired bootstrap), generated chunk by chunk
        # (S.bootstrap_weight_chunks: the same resamples as S.bootstrap_weights) so that no (B, n) array exists.
        reps: list[list[np.ndarray]] = [[] for _ in defer]
        for w in S.bootstrap_weight_chunks(views[0].n, bootstrap, rng(seed, "diff", "paired-bootstrap")):
            for i, (_, db, dn, *_rest) in enumerate(defer):
                reps[i].append(dn(w) - db(w))
            for v in views:
                _forget(v, w)
        for (row, _, _, b, n, better), r in zip(defer, reps):
            _finish_bootstrap(row, np.concatenate(r), b, n, better, alpha, tolerance)
    return rows


# ------------------------------------------------------------------------------------------ flips


def _robust_columns(tb: Any, tn: Any) -> list[tuple[str, str, str, str, float]]:
    """(column, attack, norm, eps label, eps value) of every eps_broken column both tables hold with the
    same eps grid."""
    out = []
    for col, meta in tb.column_meta.items():
        if meta.get("kind") != "eps_broken" or col not in tb.columns or col not in tn.columns:
            continue
        other = tn.column_meta.get(col) or {}
        for label, value in zip(meta.get("eps", []), meta.get("eps_values", [])):
            if label in (other.get("eps") or []) and other["eps_values"][other["eps"].index(label)] == value:
                out.append((col, str(meta.get("attack")), str(meta.get("norm")), str(label), float(value)))
    return out


def _empty_counts(n: int) -> dict[str, Any]:
    return {"n": n, "correct_to_wrong": 0, "wrong_to_correct": 0, "robust_to_broken": {}, "broken_to_robust": {}}


def compute_flips(tb: Any, tn: Any, class_names: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-example changes between two aligned tables, and their counts overall, per class and per group.

    An example flips correct_to_wrong / wrong_to_correct when ``pred == label`` changes, and robust_to_broken
    / broken_to_robust at eps e of an attack column when ``eps_broken > e`` changes (the robustness suite's
    convention: ``audit.metrics.robustness.robust_correct``)."""
    y = tb["label"].astype(np.int64)
    right_b, right_n = tb["pred"] == y, tn["pred"] == y
    events: list[tuple[dict[str, Any], np.ndarray]] = [
        ({"what": "correct_to_wrong"}, right_b & ~right_n), ({"what": "wrong_to_correct"}, ~right_b & right_n)]
    for col, attack, norm, label, value in _robust_columns(tb, tn):
        rb, rn = tb[col] > value, tn[col] > value
        for what, mask in (("robust_to_broken", rb & ~rn), ("broken_to_robust", ~rb & rn)):
            events.append(({"what": what, "attack": attack, "norm": norm, "eps": label}, mask))
    groups = {attr: (tb[f"group:{attr}"].astype(np.int64), tb.categories[attr])
              for attr in tb.group_names() if attr in tb.categories}

    def name_of(c: int) -> str:
        return class_names[c] if 0 <= c < len(class_names) else str(c)

    total = _empty_counts(len(y))
    by_class = {name_of(c): _empty_counts(int((y == c).sum())) for c in range(len(class_names))}
    by_group = {attr: {g: _empty_counts(int((codes == i).sum())) for i, g in enumerate(names)}
                for attr, (codes, names) in groups.items()}
    changes_of: dict[int, list[dict[str, Any]]] = {}
    for ev, mask in events:
        rows = np.flatnonzero(mask)
        if not len(rows):
            continue
        for r in rows:
            changes_of.setdefault(int(r), []).append(ev)
        buckets = [(total, rows)]
        buckets += [(by_class.setdefault(name_of(c), _empty_counts(0)), rows[y[rows] == c]) for c in np.unique(y[rows])]
        for attr, (codes, names) in groups.items():
            buckets += [(by_group[attr][names[g]], rows[codes[rows] == g]) for g in np.unique(codes[rows])]
        for counts, sub in buckets:
            if ev["what"] in ("correct_to_wrong", "wrong_to_correct"):
                counts[ev["what"]] += int(len(sub))
            else:
                tag = f"{ev['attack']}:{ev['norm']}:{ev['eps']}"
                counts[ev["what"]][tag] = counts[ev["what"]].get(tag, 0) + int(len(sub))
    index = tb["index"]
    flips = []
    for r in sorted(changes_of):
        flips.append({"index": int(index[r]), "label": int(y[r]), "class": name_of(int(y[r])),
                      "groups": {attr: names[int(codes[r])] for attr, (codes, names) in groups.items()},
                      "pred_base": int(tb["pred"][r]), "pred_new": int(tn["pred"][r]),
                      "changes": changes_of[r]})
    return flips, {"total": total, "by_class": by_class, "by_group": by_group}


# ------------------------------------------------------------------------------------------ gates, environment


def compare_gates(base: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Each gate id of either report: status and value before and after (None where the report lacks it)."""
    gb = {str(g.get("id")): g for g in base.get("gates") or []}
    gn = {str(g.get("id")): g for g in new.get("gates") or []}
    out = []
    for gid in list(gb) + [g for g in gn if g not in gb]:
        a, z = gb.get(gid), gn.get(gid)
        g = z or a
        out.append({"id": gid, "metric": g.get("metric"), "params": g.get("params") or {}, "op": g.get("op"),
                    "threshold": g.get("threshold"), "severity": g.get("severity"),
                    "base_status": a.get("status") if a else None, "base_value": a.get("value") if a else None,
                    "new_status": z.get("status") if z else None, "new_value": z.get("value") if z else None,
                    "only_in": None if a and z else ("base" if a else "new"),
                    "changed": not (a and z and a.get("status") == z.get("status") and a.get("value") == z.get("value"))})
    return out


def _flatten(d: Any, prefix: str) -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


_ENV_KEYS = (("tool", ("provenance", "tool", "version")), ("python", ("provenance", "python")),
             ("platform", ("provenance", "platform")), ("seed", ("provenance", "seed")),
             ("model.sha256", ("model", "sha256")), ("model.format", ("model", "format")),
             ("model.factory", ("model", "factory")), ("model.num_parameters", ("model", "num_parameters")),
             ("data.sha256", ("data", "sha256")), ("data.n", ("data", "n")), ("data.source", ("data", "source")),
             ("data.split", ("data", "split")))


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def compare_environment(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What differs besides the numbers: the model and data digests, tool and package versions, device,
    seed and recipe (``differences``: ``{key, base, new}``), and the environment fingerprint ranked by
    likely impact (``fingerprint``: ``audit.repro.fingerprint.compare_fingerprints``)."""
    from audit.repro.fingerprint import compare_fingerprints

    diffs = []

    def add(key: str, a: Any, z: Any) -> None:
        if a != z:
            diffs.append({"key": key, "base": a, "new": z})

    for key, path in _ENV_KEYS:
        add(key, _get(base, path), _get(new, path))
    for prefix, path in (("packages", ("provenance", "packages")), ("device", ("provenance", "device")),
                         ("recipe", ("recipe", "sections"))):
        a, z = _flatten(_get(base, path) or {}, prefix), _flatten(_get(new, path) or {}, prefix)
        for key in sorted(set(a) | set(z)):
            add(key, a.get(key), z.get(key))
    fb, fn = _get(base, ("provenance", "fingerprint")), _get(new, ("provenance", "fingerprint"))
    fp = compare_fingerprints(fb, fn) if isinstance(fb, dict) and isinstance(fn, dict) else None
    return {"differences": diffs, "fingerprint": fp,
            "same_model": _get(base, ("model", "sha256")) == _get(new, ("model", "sha256")),
            "same_data": _get(base, ("data", "sha256")) == _get(new, ("data", "sha256"))}


# ------------------------------------------------------------------------------------------ the diff


def compare_reports(base: str | Path, new: str | Path, *, alpha: float = 0.05, tolerance: float = 0.01,
                    bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The diff of two audits (BASE, NEW: report.json files or their folders): the content of diff.json.

    Top level: ``schema``, ``paired`` (bool), ``unpaired_reason`` (None when paired), ``n_paired``,
    ``base`` / ``new`` ({path, run_id, model_sha256, data_sha256, ...}), ``options`` (alpha, tolerance,
    bootstrap, seed), ``metrics`` (one row per metric key: suite, name, params, key, base, new, delta =
    new - base, ci_low / ci_high (the difference's interval at 1 - alpha), p_value, test
    (mcnemar_exact | paired_bootstrap | intervals_unpaired), paired, better, verdict, gated, gates, note),
    ``counts`` (rows per verdict), ``flips`` and ``flip_counts`` (empty when unpaired), ``gates`` (gate
    changes) and ``environment``. Raises :class:`audit.errors.AuditError` (exit 2) on bad input."""
    _validate_options(alpha, tolerance, bootstrap)
    a, z = load_audit(base, "BASE"), load_audit(new, "NEW")
    reason, aligned = pairing(a, z)
    views = None
    flips: list[dict[str, Any]] = []
    flip_counts: dict[str, Any] = {}
    if aligned is not None:
        views = (_view(a, aligned[0]), _view(z, aligned[1]))
        flips, flip_counts = compute_flips(aligned[0], aligned[1], views[0].class_names)
    metrics = compare_metrics(a, z, views, alpha=alpha, tolerance=tolerance, bootstrap=bootstrap, seed=seed)
    counts = Counter(m["verdict"] for m in metrics)
    gated_regressed = [m["key"] for m in metrics if m["gated"] and m["verdict"] == S.REGRESSED]
    return _finite({
        "schema": SCHEMA,
        "tool": {"name": "audit", "version": __version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base": a.describe(), "new": z.describe(),
        "paired": aligned is not None,
        "unpaired_reason": reason,
        "n_paired": views[0].n if views is not None else 0,
        "class_names": list((z.report.get("data") or {}).get("class_names") or []),
        "options": {"alpha": alpha, "tolerance": tolerance, "bootstrap": bootstrap, "seed": seed},
        "counts": {v: counts.get(v, 0) for v in (*S.VERDICTS, "not_compared")},
        "gated_regressions": gated_regressed,
        "metrics": metrics,
        "flips": flips,
        "flip_counts": flip_counts,
        "gates": compare_gates(a.report, z.report),
        "environment": compare_environment(a.report, z.report),
    })


def _finite(o: Any) -> Any:
    """The diff with every undefined number (NaN, inf) as None and numpy scalars as Python ones: diff.json
    is strict JSON, as report.json is."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    return o


def diff_exit_code(diff: dict[str, Any], fail_on_regression: bool) -> int:
    """1 when ``fail_on_regression`` and a metric that a gate of NEW reads regressed; else 0."""
    return int(ExitCode.GATE_FAILED) if fail_on_regression and diff.get("gated_regressions") else int(ExitCode.OK)
