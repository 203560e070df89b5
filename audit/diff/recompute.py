"""Metric records recomputed from a per-example table, for any row weights: the paired comparison's engine.

For a metric record of a report (``{suite, name, params, value, ...}``) and the table of the same run,
:func:`definition` says how to compute that record from the table's columns with the project's own pure
metric functions (``audit.metrics``), as a function of row weights ``W`` (shape (B, n): how often each
example occurs in each of B resamples; ``W = 1`` is the data itself, and its value must equal the report's).
Two kinds:

- a **share** (:class:`Share`): a mean of per-example values over a subset of the examples (accuracy, robust
  accuracy at one eps, noise accuracy, a group's selection rate or TPR, Brier, NLL). When the values are 0/1
  and both models' subsets are the same examples, the comparison is McNemar's exact test;
- a **statistic** (:class:`Statistic`): anything else that is a function of the rows (balanced accuracy, MCC,
  F1, AUROC, ECE, a disparity between groups); compared by the paired bootstrap.

``None``: the record cannot be recomputed from the table (a value fitted on a split, a posterior-draw
estimate, a diagnostic); `audit diff` then compares it unpaired and says so. Metrics are found through this
one registry (:data:`RECOMPUTE`), keyed by ``suite.name``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from audit.metrics import calibration as K
from audit.metrics import classification as C
from audit.metrics import fairness as F
from audit.report.gates import same_param


@dataclass
class Share:
    """``sum_i W_i v_i [i in mask] / sum_i W_i [i in mask]``; ``binary``: v is 0/1."""

    values: np.ndarray
    mask: np.ndarray
    binary: bool

    def __call__(self, w: np.ndarray) -> np.ndarray:
        wm = w[:, self.mask].astype(np.float64)
        den = wm.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, wm @ self.values[self.mask].astype(np.float64) / np.maximum(den, 1e-300), np.nan)


@dataclass
class Statistic:
    fn: Callable[[np.ndarray], np.ndarray]

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(w), dtype=np.float64)


Definition = Share | Statistic


@dataclass
class View:
    """One run's aligned table and what its report says about classes, positive classes and bins."""

    columns: dict[str, np.ndarray]
    column_meta: dict[str, dict[str, Any]]
    categories: dict[str, list[str]]
    class_names: list[str]
    suites: dict[str, Any]  # report["suites"]: each suite's config
    cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.columns["label"])

    @property
    def k(self) -> int:
        return len(self.class_names)

    @property
    def label(self) -> np.ndarray:
        return self.columns["label"]

    @property
    def pred(self) -> np.ndarray:
        return self.columns["pred"]

    def probs(self) -> np.ndarray:
        if "probs" not in self.cache:
            self.cache["probs"] = K.softmax(np.asarray(self.columns["logits"], dtype=np.float64))
        return self.cache["probs"]

    def config(self, suite: str) -> dict[str, Any]:
        return (self.suites.get(suite) or {}).get("config") or {}

    def class_index(self, name: Any) -> int | None:
        for i, c in enumerate(self.class_names):
            if same_param(c, name):
                return i
        return None

    def group_names(self, attribute: str) -> np.ndarray | None:
        """Each example's group of ``attribute`` (an attribute, or ``a&b`` for an intersection, whose
        groups join the values with ``" & "`` as the fairness suite names them)."""
        key = ("groups", attribute)
        if key not in self.cache:
            parts = attribute.split("&")
            if not all(f"group:{a}" in self.columns and a in self.categories for a in parts):
                self.cache[key] = None
            else:
                names = [np.asarray(self.categories[a], dtype=object)[self.columns[f"group:{a}"].astype(np.int64)]
                         for a in parts]
                out = names[0]
                for more in names[1:]:
                    out = np.array([f"{x} & {y}" for x, y in zip(out, more)], dtype=object)
                self.cache[key] = out
        return self.cache[key]


def subset(view: View, params: dict[str, Any]) -> np.ndarray | None:
    """The examples a record's ``class`` / ``attribute`` + ``group`` params select (all without them);
    None when the params name a class or group the table does not have."""
    mask = np.ones(view.n, dtype=bool)
    if "class" in params:
        c = view.class_index(params["class"])
        if c is None:
            return None
        mask &= view.label == c
    if "group" in params:
        names = view.group_names(str(params.get("attribute", "")))
        if names is None:
            return None
        mask &= names == str(params["group"])
    return mask


def eps_column(view: View, kind: str, params: dict[str, Any]) -> tuple[np.ndarray, float] | None:
    """(eps_broken column, eps value) of a robust-accuracy record: the attack's column (the worst case
    over attacks without an ``attack`` param) and the eps its metadata lists under the record's label."""
    name = f"robust:{params.get('attack', 'worst')}:{params.get('norm')}:eps_broken"
    meta = view.column_meta.get(name)
    if name not in view.columns or not meta or meta.get("kind") != kind:
        return None
    for label, value in zip(meta.get("eps", []), meta.get("eps_values", [])):
        if same_param(label, params.get("eps")):
            return view.columns[name], float(value)
    return None


# ------------------------------------------------------------------------------------------ per suite


_CM_CELLS = 20_000_000  # confusion-matrix cells held at once (B x K x K): 160 MB of float64


def _cms(view: View, w: np.ndarray) -> np.ndarray:
    """(B, K, K) confusion matrices of weighted rows, ``cm_b[t, p] = sum_i W_bi [y_i = t, pred_i = p]``: one
    bincount over ``b K^2 + y K + pred`` (no one-hot matrix, so K = 1000 classes costs no n x K^2 array)."""
    k2 = view.k * view.k
    flat = view.label.astype(np.int64) * view.k + view.pred.astype(np.int64)
    keys = (flat[None, :] + k2 * np.arange(len(w))[:, None]).ravel()
    return np.bincount(keys, weights=w.astype(np.float64).ravel(), minlength=len(w) * k2).reshape(len(w), view.k, view.k)


def _count_stat(view: View, w: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` of each weighted confusion matrix, (B,) or (B, K). The matrices of one set of weights are
    cached while they fit in :data:`_CM_CELLS` cells (every count metric reads the same ones); beyond that
    they are built and reduced in chunks of replicates."""
    per = max(1, _CM_CELLS // max(view.k * view.k, 1))
    if len(w) <= per:
        key = ("cm", id(w))
        if key not in view.cache:
            view.cache[key] = _cms(view, w)
            view.cache[("cm-w", id(w))] = w  # keep w alive while its id is a cache key
        return fn(view.cache[key])
    return np.concatenate([fn(_cms(view, w[i:i + per])) for i in range(0, len(w), per)])


def _ranking(view: View, w: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    key = ("rank", id(w), c)
    if key not in view.cache:
        view.cache[key] = C.ranking_replicates(view.label == c, view.probs()[:, c], w)
        view.cache[("rank-w", id(w))] = w
    return view.cache[key]


def _performance(view: View, name: str, params: dict[str, Any]) -> Definition | None:
    if (name == "accuracy" and not params) or (name in ("precision", "recall", "f1") and params == {"average": "micro"}):
        # micro averages of single-label predictions are the accuracy: the same test, so the same verdict
        return Share((view.pred == view.label).astype(np.float64), np.ones(view.n, bool), True)
    if name == "prevalence":
        c = view.class_index(params.get("class"))
        return None if c is None else Share((view.label == c).astype(np.float64), np.ones(view.n, bool), True)
    count_fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "balanced_accuracy": C.balanced_accuracy, "mcc": C.mcc,
        "majority_baseline": lambda cm: cm.sum(axis=-1).max(axis=-1) / cm.sum(axis=(-2, -1)),
    }
    if name in count_fns and not params:
        fn = count_fns[name]
        return Statistic(lambda w: _count_stat(view, w, fn))
    if name in ("precision", "recall", "f1"):
        if "average" in params and params["average"] in ("macro", "weighted", "micro"):
            avg = params["average"]
            return Statistic(lambda w: _count_stat(view, w, lambda cm: C.precision_recall_f1(cm)[name][avg]))
        c = view.class_index(params.get("class"))
        if c is None:
            return None
        return Statistic(lambda w: _count_stat(view, w, lambda cm: C.precision_recall_f1(cm)[name]["per_class"][:, c]))
    if name in ("auroc", "average_precision"):
        pick = 0 if name == "auroc" else 1
        k = view.k
        if k == 2:  # binary: the positive class only; its averages are that class's value
            c = view.class_index(view.config("performance").get("positive_class"))
            if c is None or ("class" in params and view.class_index(params["class"]) != c):
                return None
            return Statistic(lambda w: _ranking(view, w, c)[pick])
        if "class" in params:
            c = view.class_index(params["class"])
            return None if c is None else Statistic(lambda w: _ranking(view, w, c)[pick])
        avg = params.get("average")
        if avg not in ("macro", "weighted"):
            return None

        def averaged(w: np.ndarray) -> np.ndarray:
            per = np.stack([_ranking(view, w, c)[pick] for c in range(k)], axis=1)  # (B, K)
            onehot = np.zeros((view.n, k))
            onehot[np.arange(view.n), view.label.astype(np.int64)] = 1.0
            support = w.astype(np.float64) @ onehot  # (B, K) true counts of each resample
            ok = np.isfinite(per)
            if avg == "macro":
                with np.errstate(invalid="ignore", divide="ignore"):
                    return np.where(ok, per, 0.0).sum(1) / ok.sum(1)
            s = np.where(ok, support, 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(s.sum(1) > 0, (np.where(ok, per, 0.0) * s).sum(1) / s.sum(1), np.nan)

        return Statistic(averaged)
    return None


def _robustness(view: View, name: str, params: dict[str, Any]) -> Definition | None:
    mask = subset(view, params)
    if mask is None:
        return None
    clean = view.pred == view.label
    if name == "clean_accuracy":
        return Share(clean.astype(np.float64), mask, True)
    if name == "robust_accuracy":
        found = eps_column(view, "eps_broken", params)
        if found is None:
            return None
        col, eps = found
        return Share((col > eps).astype(np.float64), mask, True)
    if name == "attack_success_rate" and "class" not in params and "group" not in params:
        found = eps_column(view, "eps_broken", params)
        if found is None:
            return None
        col, eps = found
        return Share((col <= eps).astype(np.float64), clean.copy(), True)  # among the clean-correct
    if name == "noise_accuracy":
        col = f"noise:{params.get('noise')}:{params.get('level')}:correct"
        meta = view.column_meta.get(col)
        if col not in view.columns or not meta or not meta.get("draws"):
            return None
        draws = int(meta["draws"])
        return Share(view.columns[col].astype(np.float64) / draws, mask, draws == 1)
    return None


def _resampled_rows(w_row: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(w_row)), w_row.astype(np.int64))


def _calibration(view: View, name: str, params: dict[str, Any]) -> Definition | None:
    from audit.suites.calibration import BINNINGS

    y = view.label.astype(np.int64)
    if name == "brier" and not params:
        p = view.probs()
        per = np.einsum("ij,ij->i", p, p) - 2.0 * p[np.arange(view.n), y] + 1.0
        return Share(per, np.ones(view.n, bool), False)
    if name == "nll" and not params:
        return Share(K.nll_per_example(np.asarray(view.columns["logits"], np.float64), y), np.ones(view.n, bool), False)
    if name in ("ece", "mce") and params.get("binning") in BINNINGS and params.get("kind") in ("top_label", "classwise"):
        bins = view.config("calibration").get("bins")
        if not isinstance(bins, int):
            return None
        fn = K.ece if name == "ece" else K.mce
        strategy, kind = BINNINGS[params["binning"]], params["kind"]
        p = view.probs()

        def stat(w: np.ndarray) -> np.ndarray:
            # the bins move with the resample (equal-mass bins are quantiles of it): one call per replicate
            if len(w) == 1 and np.all(w == 1):
                return np.array([fn(p, y, bins, strategy, kind)])
            return np.array([fn(p[r], y[r], bins, strategy, kind) for r in map(_resampled_rows, w)])

        return Statistic(stat)
    return None


_RATES: dict[str, tuple[str, str | None, str | None]] = {
    # rate -> (per-example event, subset condition), with pos = predicted positive, yes = actually positive
    "selection_rate": ("pos", None, None), "accuracy": ("right", None, None), "error_rate": ("wrong", None, None),
    "tpr": ("pos", "yes", None), "fpr": ("pos", "no", None), "fnr": ("neg", "yes", None),
    "precision": ("yes", "pos", None), "fdr": ("no", "pos", None), "for": ("yes", "neg", None),
    "base_rate": ("yes", None, None),
}


def _events(view: View, positive: int) -> dict[str, np.ndarray]:
    pos = view.pred == positive
    yes = view.label == positive
    right = view.pred == view.label
    return {"pos": pos, "neg": ~pos, "yes": yes, "no": ~yes, "right": right, "wrong": ~right}


def _fairness(view: View, name: str, params: dict[str, Any]) -> Definition | None:
    cfg = view.config("fairness")
    positive = view.class_index(cfg.get("positive_class"))
    attribute = str(params.get("attribute", ""))
    groups = view.group_names(attribute)
    if positive is None or groups is None:
        return None
    if "class" in params and view.class_index(params["class"]) != positive:
        return None
    ev = _events(view, positive)

    def rate_share(rate: str, group: str) -> Share:
        event, cond, _ = _RATES[rate]
        mask = groups == group
        if cond is not None:
            mask = mask & ev[cond]
        return Share(ev[event].astype(np.float64), mask, True)

    present = sorted({str(g) for g in groups})
    rate = name[len("group_"):] if name.startswith("group_") else None
    if rate in _RATES and "group" in params:
        if rate != "accuracy" and view.k > 2:
            return None  # multiclass one-vs-rest rates: left to the unpaired comparison
        return rate_share(rate, str(params["group"]))
    if name == "group_robust_accuracy" and "group" in params:
        return _robustness(view, "robust_accuracy", params)
    if name == "group_noise_accuracy" and "group" in params:
        return _robustness(view, "noise_accuracy", params)

    if name == "group_ece" and "group" in params and isinstance(cfg.get("ece_bins"), int):
        rows = np.flatnonzero(groups == str(params["group"]))
        p, y, bins = view.probs()[rows], view.label[rows].astype(np.int64), cfg["ece_bins"]
        # the group's own rows, resampled with their weights (top-label, equal-width: as the suite computes it)
        return Statistic(lambda w: np.array([K.ece(p[r], y[r], bins, "uniform", "top_label")
                                             for r in map(_resampled_rows, w[:, rows])]))

    def rates(rate: str, w: np.ndarray) -> np.ndarray:  # (B, G)
        return np.stack([rate_share(rate, g)(w) for g in present], axis=1)

    if name == "group_impact_ratio" and "group" in params:
        g = present.index(str(params["group"])) if str(params["group"]) in present else None
        if g is None:
            return None
        return Statistic(lambda w: F._div(rates("selection_rate", w)[:, g], F._nanmax(rates("selection_rate", w))))
    disparities: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "demographic_parity_difference": lambda w: F.range_difference(rates("selection_rate", w)),
        "demographic_parity_ratio": lambda w: F.range_ratio(rates("selection_rate", w)),
        "disparate_impact_ratio": lambda w: F.range_ratio(rates("selection_rate", w)),
        "equal_opportunity_difference": lambda w: F.range_difference(rates("tpr", w)),
        "predictive_parity_difference": lambda w: F.range_difference(rates("precision", w)),
        "equalized_odds_difference": lambda w: np.fmax(F.range_difference(rates("tpr", w)),
                                                       F.range_difference(rates("fpr", w))),
        "equalized_odds_ratio": lambda w: np.fmin(F.range_ratio(rates("tpr", w)), F.range_ratio(rates("fpr", w))),
    }
    if name in disparities and "group" not in params and view.k == 2:
        return Statistic(disparities[name])
    return None


RECOMPUTE: dict[str, Callable[[View, str, dict[str, Any]], Definition | None]] = {
    "performance": _performance, "robustness": _robustness, "calibration": _calibration, "fairness": _fairness,
}


def definition(record: dict[str, Any], view: View) -> Definition | None:
    """How to recompute ``record`` from ``view`` (module docstring), or None."""
    fn = RECOMPUTE.get(record["suite"])
    if fn is None:
        return None
    try:
        return fn(view, record["name"], dict(record.get("params") or {}))
    except (KeyError, ValueError, IndexError):  # a column of an unexpected shape: not recomputable
        return None
