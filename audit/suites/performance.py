"""Performance suite: accuracy and the numbers that do not mislead under class imbalance, PR/ROC.

Reads only the core columns of the per-example table (label, logits). All count metrics come from one
confusion matrix. Their intervals come from posterior draws of that matrix, Dirichlet(cm + a Jeffreys-type
prior) (``audit.metrics.bootstrap.dirichlet_draws``: a Bayesian bootstrap that does not collapse at 0 or 1;
no row is resampled), widened to contain the estimate, and for proportions (accuracy, per-class precision
and recall) to the Clopper-Pearson interval where that is wider. A class's AUROC interval is a Jeffreys
interval on its effective n (DeLong and Hanley-McNeil; ``audit.metrics.classification.auroc_interval``);
AP and the averages use a row bootstrap joined with a Jeffreys interval on their effective n; the bootstrap
resamples counts of distinct (score, label) cells, sorted once per class, with one joint row resample across
classes, in chunks of replicates (``audit.metrics.classification.ranking_bootstrap``: memory O(n + 2M
elements), never replicates x n). Coverage of each: bench/coverage.py.

Each record's n is the count its precision rests on: all rows for accuracy, MCC and micro averages; a
class's examples for its recall, its predictions for its precision, the smaller of the two for its F1;
the thinnest class for balanced accuracy and macro/weighted averages; min(positives, negatives) for AUROC
and AP.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audit.errors import RecipeError
from audit.metrics import classification as C
from audit.metrics.bootstrap import (dirichlet_draws, jeffreys_cell_prior, jeffreys_interval, posterior_interval,
                                     widen_to_exact)
from audit.recipe.fields import Field, Section, p_float, p_int
# _v: full precision for metric records; _r: rounded, for tables shown to people
from audit.report.records import SuiteResult, finite_or_none as _v, rounded as _r
from audit.seeding import rng
from audit.suites import gallery
from audit.suites.base import UNIT, Facts, MetricSpec, Suite

SECTION = Section(
    "performance",
    "Accuracy, balanced accuracy, MCC, precision/recall/F1, confusion matrix, ROC and PR curves with AUROC "
    "and average precision (binary, or one-vs-rest for multiclass), with seeded bootstrap intervals.",
    (
        Field("bootstrap", "integer >= 0", "Posterior draws of the confusion matrix for the count metrics' 95% "
              "intervals (0: none): Dirichlet over its cells with a Jeffreys-type prior (1/2 on the diagonal, "
              "1/(2(K-1)) off it), so a metric at exactly 0 or 1 still gets an interval. Accuracy's and per-class "
              "precision/recall's intervals are also never narrower than the Clopper-Pearson exact interval.",
              default=1000, parse=p_int(0), example="1000"),
        Field("bootstrap_ranking", "integer >= 0",
              "Row-bootstrap replicates for average precision and the macro/weighted AUROC and AP (0: no ranking "
              "intervals). A class's own AUROC interval is analytic (Jeffreys on DeLong/Hanley-McNeil effective n).",
              default=200, parse=p_int(0), example="200"),
        Field("confidence", "number in [0.5, 0.999]", "Level of the bootstrap intervals.", default=0.95,
              parse=p_float(0.5, 0.999), example="0.95"),
        Field("positive_class", "integer >= 0", "Binary tasks: the positive class for ROC/PR, AUROC and AP.",
              default=1, parse=p_int(0), example="1"),
        Field("imbalance_ratio", "number >= 1",
              "Warn that accuracy misleads when the largest class outnumbers the smallest by this factor.",
              default=3.0, parse=p_float(1.0), example="3.0"),
        Field("curve_points", "integer >= 10", "Points kept per ROC/PR curve in the report.", default=200,
              parse=p_int(10)),
    ),
    example="[performance]\nbootstrap = 1000\npositive_class = 1",
)

_AVG = "'macro' | 'weighted' | 'micro' (or use class)"
_AVG_RANK = "'macro' | 'weighted' (or use class)"
_CLASS = "a class name (see [model] class_names; default the class index as a string)"
_AVGS = ("macro", "weighted", "micro")
_AVGS_RANK = ("macro", "weighted")

METRICS = {
    "accuracy": MetricSpec("Fraction of examples predicted correctly. n: all examples.", bounds=UNIT, better="higher"),
    "balanced_accuracy": MetricSpec("Mean recall over the classes present (robust to imbalance). n: the smallest "
                                    "class's examples.", bounds=UNIT, better="higher"),
    "mcc": MetricSpec("Matthews correlation coefficient (multiclass form), in [-1, 1]. n: all examples.", bounds=(-1.0, 1.0), better="higher"),
    "majority_baseline": MetricSpec("Accuracy of always predicting the most frequent class.", bounds=UNIT, better=None),
    "precision": MetricSpec("Precision. n: a class's predictions (macro/weighted: the fewest of any class; micro: "
                            "all examples).", {"average": _AVG, "class": _CLASS}, choices={"average": _AVGS}, bounds=UNIT, better="higher"),
    "recall": MetricSpec("Recall (true positive rate). n: a class's examples (macro/weighted: the smallest class; "
                         "micro: all examples).", {"average": _AVG, "class": _CLASS}, choices={"average": _AVGS}, bounds=UNIT, better="higher"),
    "f1": MetricSpec("F1 score. n: the smaller of a class's examples and predictions (averages: the smallest such).",
                     {"average": _AVG, "class": _CLASS}, choices={"average": _AVGS}, bounds=UNIT, better="higher"),
    "auroc": MetricSpec("Area under the ROC curve (binary: of positive_class; multiclass: one-vs-rest). n: the smaller "
                        "of the class's positives and negatives (averages: the smallest over classes).",
                        {"average": _AVG_RANK, "class": _CLASS}, choices={"average": _AVGS_RANK}, bounds=UNIT, better="higher"),
    "average_precision": MetricSpec("Average precision (area under the PR curve); its chance level is the "
                                    "prevalence. n: as for auroc.", {"average": _AVG_RANK, "class": _CLASS},
                                    choices={"average": _AVGS_RANK}, bounds=UNIT, better="higher"),
    "prevalence": MetricSpec("Share of examples in a class: the average precision of a random scorer.",
                             {"class": _CLASS}, bounds=UNIT, better=None),
}


def _cell_prior(cm: np.ndarray) -> np.ndarray:
    """The Jeffreys-type prior of :func:`audit.metrics.bootstrap.jeffreys_cell_prior`, without mass in the
    rows of classes that have no true example (their recall is undefined in the estimate, so it must stay
    undefined in every draw) or on classes that occur neither as label nor as prediction (scikit-learn's
    averages leave them out)."""
    prior = jeffreys_cell_prior(cm.shape[0])
    prior[cm.sum(axis=1) == 0, :] = 0.0
    absent = (cm.sum(axis=1) + cm.sum(axis=0)) == 0
    prior[:, absent] = 0.0
    return prior


def _ap_effective_n(boot: np.ndarray, point: float, floor: int) -> float:
    """Effective n of a class's AP for its Jeffreys interval: the geometric mean of ``A (1 - A) / var`` (the
    replicates' variance; at least ``floor``) and ``floor``
    (min(positives, negatives)). The row bootstrap of AP understates its spread near 1 and at small n (the
    estimator is biased there; 91.8-92.8% coverage in bench/coverage.py), and unlike the AUROC it has no
    variance bound to lean on, so its effective n is pulled towards the count it rests on."""
    ok = boot[np.isfinite(boot)]
    var = float(ok.var(ddof=1)) if ok.size > 1 else 0.0
    m = max(int(floor), 1)
    return float(np.sqrt(C.effective_n(point, var, m) * m))


def class_names(ctx_names: list[str] | None, k: int) -> list[str]:
    return list(ctx_names) if ctx_names else [str(i) for i in range(k)]


def validate(cfg: dict[str, Any], facts: Facts) -> dict[str, Any]:
    k = facts.num_classes
    if k == 2 and cfg["positive_class"] > 1:
        raise RecipeError(f"{facts.where}: [performance] positive_class = {cfg['positive_class']}: a binary "
                          "task has classes 0 and 1")
    if k > 2 and "positive_class" in facts.recipe.raw.get("performance", {}):  # set for nothing: say so
        raise RecipeError(f"{facts.where}: [performance] positive_class = {cfg['positive_class']}: only binary "
                          f"tasks use it; this task has {k} classes, and ROC/PR are one-vs-rest for every class")
    return cfg


def summarise(table: Any, cfg: dict[str, Any], facts: Facts, partials: Any = None) -> SuiteResult:
    res = evaluate(table["label"], table["pred"], table.probs, facts.class_names, cfg, facts.seed)
    errors = gallery.errors_table((partials or {}).get("performance.checks", []))
    if errors:  # the report's gallery of confident errors (recorded by gallery.fill_errors)
        res.tables["gallery"] = {"errors": errors}
    return res


def evaluate(y: np.ndarray, pred: np.ndarray, probs: np.ndarray, names: list[str], cfg: dict[str, Any],
             seed: int) -> SuiteResult:
    """The whole suite as a pure function of labels, predictions and probabilities."""
    k = len(names)
    n = len(y)
    res = SuiteResult("performance")
    conf = cfg["confidence"]
    cm = C.confusion_matrix(y, pred, k)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    draws = None
    if cfg["bootstrap"] > 0:
        draws = dirichlet_draws(cm, _cell_prior(cm), cfg["bootstrap"], rng(seed, "performance", "confusion"), axes=2)

    def add(name: str, fn, proportion: bool = False, n_rec: int = n, **params: Any) -> float:
        value = float(fn(cm))
        ci = None
        if draws is not None:
            lo, hi = posterior_interval(fn(draws), value, conf)
            if proportion:  # a share of n examples: never narrower than the exact interval
                lo, hi = widen_to_exact(lo, hi, value, n, conf)
            ci = (float(lo), float(hi))
        res.metric(name, value, int(n_rec), ci, **params)
        return value

    # n of each record: the count its precision rests on (a class's recall on its examples, a precision on
    # the predictions of that class; an average on its thinnest class).
    seen = support > 0
    either = (support + predicted) > 0
    n_recall = int(support[seen].min()) if seen.any() else 0
    n_precision = int(predicted[either].min()) if either.any() else 0
    n_f1 = int(np.minimum(support, predicted)[either].min()) if either.any() else 0
    acc = add("accuracy", C.accuracy, proportion=True)
    bal = add("balanced_accuracy", C.balanced_accuracy, n_rec=n_recall)
    add("mcc", C.mcc)
    majority = support.max() / n
    res.metric("majority_baseline", float(majority), n)

    n_avg = {"precision": n_precision, "recall": n_recall, "f1": n_f1}
    n_cls = {"precision": predicted, "recall": support, "f1": np.minimum(support, predicted)}
    for name in ("precision", "recall", "f1"):
        for avg in ("macro", "weighted", "micro"):
            add(name, lambda m, name=name, avg=avg: C.precision_recall_f1(m)[name][avg],
                n_rec=n if avg == "micro" else n_avg[name], average=avg)
        per_class = C.precision_recall_f1(cm)[name]["per_class"]
        per_class_ci = None
        if draws is not None:
            per_class_ci = posterior_interval(C.precision_recall_f1(draws)[name]["per_class"], per_class, conf)
            if name != "f1":  # recall: a share of the class's examples; precision: of its predictions
                per_class_ci = widen_to_exact(*per_class_ci, per_class, n_cls[name], conf)
        for i in range(k):
            ci = None if per_class_ci is None else (float(per_class_ci[0][i]), float(per_class_ci[1][i]))
            res.metric(name, float(per_class[i]) if support[i] + predicted[i] > 0 else None, int(n_cls[name][i]),
                       ci, **{"class": names[i]})

    au, ap = _ranking(res, y, probs, names, cfg, seed)

    res.tables["confusion_matrix"] = {"labels": names, "counts": cm.tolist()}
    prf = C.precision_recall_f1(cm)
    res.tables["per_class"] = [
        {"class": names[i], "support": int(support[i]), "predicted": int(cm[:, i].sum()),
         "precision": _r(prf["precision"]["per_class"][i]),
         "recall": _r(prf["recall"]["per_class"][i]),
         "f1": _r(prf["f1"]["per_class"][i]),
         "auroc": _r(au[i]), "average_precision": _r(ap[i]), "prevalence": _r(support[i] / n)}
        for i in range(k)
    ]
    res.config = {"num_classes": k, "class_names": names, "bootstrap": cfg["bootstrap"],
                  "bootstrap_ranking": cfg["bootstrap_ranking"], "confidence": conf,
                  "positive_class": names[cfg["positive_class"]] if k == 2 else None,
                  "interval": "count metrics: central interval of Dirichlet posterior draws of the confusion matrix "
                              "(Jeffreys-type prior), at least Clopper-Pearson for proportions; AUROC: Jeffreys interval "
                              "on the DeLong / Hanley-McNeil effective n; AP and averages: row bootstrap joined with a "
                              "Jeffreys interval on their effective n",
                  "n_rule": "n = the count a record's precision rests on: predictions for a precision, the class's "
                            "examples for a recall, min(positives, negatives) for AUROC and AP, the thinnest class "
                            "for balanced accuracy and macro/weighted averages, all rows otherwise"}
    present = support[support > 0]
    ratio = float(present.max() / present.min()) if len(present) else 1.0
    res.tables["class_balance"] = {"support": support.tolist(), "imbalance_ratio": ratio}
    if ratio >= cfg["imbalance_ratio"] or acc - bal > 0.05:
        big = names[int(np.argmax(support))]
        res.notes.append(
            f"Class imbalance: the largest class outnumbers the smallest {ratio:.1f} to 1, and always predicting "
            f"'{big}' would already score {majority:.1%} accuracy. Accuracy ({acc:.1%}) overstates how well the "
            f"model separates the classes: read balanced accuracy ({bal:.1%}), MCC and the per-class recall.")
    missing = [names[i] for i in range(k) if support[i] == 0]
    if missing:
        res.notes.append(f"No examples of class {', '.join(missing)} in the data: their recall, AUROC and "
                         "average precision are undefined and left out of the averages.")
    return res


def _ranking(res: SuiteResult, y: np.ndarray, probs: np.ndarray, names: list[str], cfg: dict[str, Any],
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """AUROC, AP, prevalence and the ROC/PR curves: binary on positive_class, else one-vs-rest."""
    k = len(names)
    n = len(y)
    conf = cfg["confidence"]
    classes = [cfg["positive_class"]] if k == 2 else list(range(k))
    support = np.array([(y == c).sum() for c in range(k)])
    B = cfg["bootstrap_ranking"]
    au = np.full(k, np.nan)
    ap = np.full(k, np.nan)
    au_boot = np.full((B, k), np.nan)
    ap_boot = np.full((B, k), np.nan)
    if B > 0:  # one joint row resample for every class, as counts of distinct (score, label) cells, in chunks
        au_boot[:, classes], ap_boot[:, classes] = C.ranking_bootstrap(y, probs, classes, B,
                                                                       rng(seed, "performance", "ranking"))
    curves: dict[str, Any] = {"roc": [], "pr": []}
    for c in classes:
        yc = y == c
        sc = probs[:, c]
        au[c] = C.auroc_binary(yc, sc)
        ap[c] = C.average_precision_binary(yc, sc)
        if 0 < yc.sum() < n:
            fpr, tpr = C.roc_points(yc, sc)  # in numpy: scikit-learn's import costs more than the curves
            rec, prec = C.pr_points(yc, sc)
            fx, ty = C.downsample_curve(fpr, tpr, cfg["curve_points"])
            rx, py = C.downsample_curve(rec, prec, cfg["curve_points"])
            curves["roc"].append({"class": names[c], "fpr": fx, "tpr": ty, "auc": _r(au[c])})
            curves["pr"].append({"class": names[c], "recall": rx, "precision": py, "ap": _r(ap[c]),
                                 "prevalence": round(float(yc.mean()), 6)})
    res.curves.update(curves)

    m_pair = np.minimum(support, n - support)  # what a ranking metric of class c rests on

    def boot_ci(boot: np.ndarray, point: float, floor: int, var_floor: float = 0.0, average: bool = False
                ) -> tuple[float, float] | None:
        """AP and the averages: the percentile interval of the row bootstrap, joined with a Jeffreys
        interval on the effective n of the spread (the replicates' variance, at least ``var_floor``; n
        floored at ``floor``, the thinner side of the classes involved), so that it neither collapses at 1
        nor misses the skew near it."""
        if B == 0 or not np.isfinite(point):
            return None
        lo, hi = posterior_interval(boot, point, conf)
        if average:  # an average's spread: its replicates', at least what its classes' own intervals imply
            ok = boot[np.isfinite(boot)]
            m_eff = C.effective_n(point, max(float(ok.var(ddof=1)) if ok.size > 1 else 0.0, var_floor), max(floor, 1))
        else:
            m_eff = _ap_effective_n(boot, point, floor)
        jlo, jhi = jeffreys_interval(point * m_eff, m_eff, conf)
        return float(min(lo, jlo)), float(max(hi, jhi))

    # Each class's variance as its own interval sees it: A (1 - A) / n_eff (AUROC: DeLong and Hanley-McNeil;
    # AP: its replicates, floored at min(positives, negatives)). An average's bootstrap variance is never
    # taken below the variance these imply for independent classes, so a rare class whose replicates
    # understate its spread (few positives, a near-perfect AUROC) cannot make the average look surer.
    var_au = np.full(k, np.nan)
    var_ap = np.full(k, np.nan)
    au_ci: dict[int, tuple[float, float] | None] = {}
    for c in classes:
        m_au = C.auroc_effective_n(y == c, probs[:, c])
        au_ci[c] = C.auroc_interval(y == c, probs[:, c], conf) if B > 0 else None
        var_au[c] = au[c] * (1 - au[c]) / m_au if np.isfinite(m_au) and m_au > 0 else np.nan
        m_ap = _ap_effective_n(ap_boot[:, c], ap[c], int(m_pair[c]))
        var_ap[c] = ap[c] * (1 - ap[c]) / m_ap if np.isfinite(ap[c]) else np.nan
    for c in classes:
        res.metric("auroc", _v(au[c]), int(m_pair[c]), au_ci[c], **{"class": names[c]})
        res.metric("average_precision", _v(ap[c]), int(m_pair[c]), boot_ci(ap_boot[:, c], ap[c], int(m_pair[c])),
                   **{"class": names[c]})
        res.metric("prevalence", float(support[c] / n), int(n), None, **{"class": names[c]})
    if k > 2:
        scored = support > 0
        m_min = int(m_pair[scored].min()) if scored.any() else 0
        for avg in ("macro", "weighted"):
            for name, point, boot, var_c in (("auroc", au, au_boot, var_au), ("average_precision", ap, ap_boot, var_ap)):
                value = C.average_over_classes(point, support)[avg]
                bvals = np.array([C.average_over_classes(boot[b], support)[avg] for b in range(B)])
                ok = np.isfinite(point) & np.isfinite(var_c)
                w = np.where(ok, 1.0 if avg == "macro" else support.astype(np.float64), 0.0)
                var_floor = float((w**2 * np.where(ok, var_c, 0.0)).sum() / w.sum()**2) if w.sum() > 0 else 0.0
                res.metric(name, _v(value), m_min, boot_ci(bvals, value, m_min, var_floor, average=True), average=avg)
    else:
        c = classes[0]
        for avg in ("macro", "weighted"):  # one class scored: the averages are that class's value
            res.metric("auroc", _v(au[c]), int(m_pair[c]), au_ci[c], average=avg)
            res.metric("average_precision", _v(ap[c]), int(m_pair[c]), boot_ci(ap_boot[:, c], ap[c], int(m_pair[c])),
                       average=avg)
    return au, ap


SUITE = Suite("performance", SECTION.doc, SECTION, METRICS, summarise, validate=validate,
              check_tasks=gallery.error_tasks, fill_checks=gallery.fill_errors)
