"""Fairness suite: group metrics, disparities with stratified-bootstrap intervals, the four-fifths verdict,
crossings with the other suites, and a "what would it take" threshold diagnostic.

Sensitive attributes come from the data (the table's ``group:<attr>`` columns). Each chosen attribute is
audited on its own and, with ``intersectional = true``, all of them together: that "attribute" is named
by joining the attribute names with ``&`` (e.g. ``"sex&age"``) and its groups by joining the values with
``" & "`` (e.g. ``"female & <25"``), in fairlearn's ``MetricFrame.by_group`` order.

Labels and predictions are binarised on ``positive_class``: the positive class of a binary task, or for a
multiclass task the class audited one-vs-rest (a prediction is "positive" when the argmax is that class).

Every number is computed by ``audit.metrics.fairness`` from per-group confusion counts (one bincount);
intervals come from posterior draws stratified by group (groups keep their sizes; Dirichlet with the Jeffreys
prior, so nothing collapses at 0 or 1), seeded. Disparity intervals are by default simultaneous: for two
groups the interval of their one difference, for more a band over the group rates projected onto the
disparity (see that module: the percentile bootstrap of a max-minus-min is biased upwards). Coverage:
bench/coverage.py.

An undefined rate in a present group (0/0, e.g. no positives for a TPR) makes every disparity that needs it
inconclusive, naming the group. The four-fifths rule compares each group with the highest selection rate.
Multiclass tasks: group_accuracy / group_error_rate are multiclass; every binarised record carries
``class = <positive_class>`` and the one-vs-rest accuracy is group_ovr_accuracy.

Metric records and how a gate names them (``attribute`` is an attribute name or the ``&``-joined
intersection; ``group`` a value of it, as listed in the report):

  group_selection_rate, group_accuracy, group_tpr, group_fpr, group_fnr, group_precision,
  group_fdr, group_for, group_base_rate          {attribute, group}; n = the rate's denominator
                                                  (multiclass: + class, except group_accuracy)
  group_error_rate                                {attribute, group}: 1 - group_accuracy
  group_ovr_accuracy                              {attribute, group, class}: multiclass tasks only
  group_impact_ratio                              {attribute, group}: selection rate / the highest one
  group_reference_ratio                           {attribute, group}: selection rate / [fairness] reference's
                                                  (when reference is not "highest")
  demographic_parity_difference, demographic_parity_ratio, equalized_odds_difference,
  equalized_odds_ratio, equal_opportunity_difference, predictive_parity_difference,
  disparate_impact_ratio (the four-fifths statistic)                       {attribute} (multiclass: + class)
  group_ece, group_ece_debiased, group_ece_reference  {attribute, group} (crossing with calibration)
  group_robust_accuracy                           {attribute, group, norm, eps} (when robustness ran)
  group_noise_accuracy                            {attribute, group, noise, level} (when robustness ran noise)
  postprocessed_accuracy, postprocessed_demographic_parity_difference,
  postprocessed_equalized_odds_difference         {attribute}: ThresholdOptimizer diagnostic (not applied)

A record resting on a group (or a rate denominator) below ``min_group_size`` carries
``inconclusive = "group 'x' of 'sex' has 12 < 30 examples"``, so a gate on it is inconclusive.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from audit.errors import RecipeError
from audit.metrics import calibration as CAL
from audit.metrics import fairness as F
from audit.metrics.bootstrap import clopper_pearson
from audit.recipe.fields import Field, FieldError, Section, p_bool, p_float, p_int, p_list, p_str
# _v: full precision for metric records; _r: rounded, for tables shown to people
from audit.report.records import SuiteResult, finite_or_none as _v, rounded as _r
from audit.seeding import rng
from audit.suites.base import UNIT, Facts, MetricSpec, Suite

CONSTRAINTS = ("demographic_parity", "equalized_odds", "true_positive_rate_parity", "false_positive_rate_parity",
               "false_negative_rate_parity", "true_negative_rate_parity")


def _p_reference(v: Any) -> str | dict[str, str]:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and all(isinstance(x, str) for x in v.values()):
        return dict(v)
    raise FieldError("expected 'largest', 'highest', a group name, or a table { attribute = \"group\" }")


def _p_class(v: Any) -> int | str:
    if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, int) and v < 0):
        raise FieldError("expected a class index >= 0 or a class name")
    return v


SECTION = Section(
    "fairness",
    "Group fairness over the data's sensitive attributes: per group n, selection rate, accuracy, TPR, FPR, "
    "FNR, precision, FDR and FOR; demographic parity, equalized odds, equal opportunity and predictive "
    "parity disparities and the four-fifths (disparate impact) verdict, with bootstrap intervals stratified "
    "by group. Groups smaller than min_group_size are shown but make the gates resting on them "
    "inconclusive. Crosses with the calibration (ECE per group) and robustness (robust and noise accuracy "
    "per group) results, and for binary tasks shows what per-group thresholds (fairlearn's "
    "ThresholdOptimizer) would give, as a diagnostic that is never applied.",
    (
        Field("attributes", "list of attribute names",
              "Sensitive attributes to audit (names from [data] sensitive). Default: all of them.",
              parse=p_list(p_str(), "attribute names", min_len=1, unique=True), example='["sex", "age"]'),
        Field("intersectional", "true | false",
              "Also audit the intersection of the chosen attributes; it is named by joining them with '&' "
              "(e.g. \"sex&age\") and its groups by joining values with ' & ' (e.g. \"female & <25\").",
              default=False, parse=p_bool, example="true"),
        Field("reference", "'largest' | 'highest' | group name | table attribute -> group",
              "A comparison group for group_reference_ratio (each group's selection rate over this group's, not "
              "capped): the largest group, the group with the highest selection rate, or a named group: a plain "
              "name applies to every attribute that has such a group (the others fall back to the highest, with a "
              "note); a table names one group per attribute, and a name that is not a group of its attribute is an "
              "error. The four-fifths rule (disparate_impact_ratio, group_impact_ratio) always compares with the "
              "highest selection rate, as 29 CFR 1607.4(D) states it, whatever this says.", default="highest",
              parse=_p_reference, example='{ sex = "male" }'),
        Field("positive_class", "class index or class name",
              "The favourable outcome. Binary tasks: default 1. Multiclass tasks must name the class to audit "
              "one-vs-rest (labels and predictions become 'is this class' / 'is not').",
              parse=_p_class, example='"good"'),
        Field("min_group_size", "integer >= 1",
              "Groups (or rate denominators, e.g. a group's positives for its TPR) below this size are shown "
              "but make the gates that rest on them inconclusive.", default=30, parse=p_int(1), example="30"),
        Field("bootstrap", "integer >= 0", "Posterior draws per group for the intervals (0: none): each group's "
              "confusion cells from Dirichlet(counts + 1/2), group sizes fixed, so a rate at exactly 0 or 1 still "
              "gets an interval. Group rates' intervals are also never narrower than the Clopper-Pearson exact "
              "interval on their denominator.",
              default=1000, parse=p_int(0), example="1000"),
        Field("confidence", "number in [0.5, 0.999]", "Level of the intervals.", default=0.95,
              parse=p_float(0.5, 0.999), example="0.95"),
        Field("interval", "'simultaneous' | 'percentile'",
              "Disparity intervals: simultaneous (default; contains its estimate): with two groups the interval of "
              "their one difference or log ratio, with more the projection of a simultaneous band over the group "
              "rates; or the plain percentile interval of the disparity's draws (biased upwards for max-minus-min).",
              default="simultaneous", parse=p_str(("simultaneous", "percentile"))),
        Field("four_fifths_threshold", "number in (0, 1]", "Threshold of the disparate impact ratio.",
              default=0.8, parse=p_float(0.0, 1.0, lo_open=True), example="0.8"),
        Field("threshold_optimizer", "true | false",
              "Binary tasks: fit fairlearn's ThresholdOptimizer on the model's scores (on a seeded half of "
              "the data, reported on the other half) to show what per-group thresholds would give. A "
              "diagnostic, never applied. With more than 20,000 distinct scores they are rounded to 3 decimals "
              "first (fairlearn searches every distinct score in Python; the rules are shown to 3 decimals).", default=True, parse=p_bool),
        Field("constraint", " | ".join(repr(c) for c in CONSTRAINTS), "The ThresholdOptimizer's constraint.",
              default="demographic_parity", parse=p_str(CONSTRAINTS), example='"equalized_odds"'),
    ),
    example='[fairness]\nattributes = ["sex", "age"]\nintersectional = true\nmin_group_size = 30\n'
            'reference = "highest"',
)

_ATTR = "a sensitive attribute, or the intersection \"a&b\" (with intersectional = true)"
_GROUP = "a group of that attribute (\"female\"; intersections \"female & <25\")"
_RATE_DOC = {
    "selection_rate": "Share predicted positive.",
    "accuracy": "Share predicted correctly (multiclass tasks: the multiclass accuracy, argmax == label; the "
                "one-vs-rest one is group_ovr_accuracy).",
    "tpr": "True positive rate (recall) among the group's positives.",
    "fpr": "False positive rate among the group's negatives.",
    "fnr": "False negative rate among the group's positives.",
    "precision": "Precision (PPV) among the group's positive predictions.",
    "fdr": "False discovery rate among the group's positive predictions.",
    "for": "False omission rate among the group's negative predictions.",
    "base_rate": "Share of actual positives (the label's prevalence in the group).",
}
_DISP_DOC = {
    "demographic_parity_difference": "Largest minus smallest group selection rate (0 = parity).",
    "demographic_parity_ratio": "Smallest over largest group selection rate (1 = parity).",
    "equalized_odds_difference": "The larger of the TPR and FPR max-minus-min differences (fairlearn's worst case).",
    "equalized_odds_ratio": "The smaller of the TPR and FPR min-over-max ratios.",
    "equal_opportunity_difference": "Largest minus smallest group TPR.",
    "predictive_parity_difference": "Largest minus smallest group precision.",
    "disparate_impact_ratio": "The four-fifths statistic: the smallest group selection rate over the highest one "
                              "(29 CFR 1607.4(D)); the rule flags adverse impact below four_fifths_threshold.",
}
# Which way is better for each group rate and disparity (`audit diff`'s improved/regressed): error-like
# rates and differences lower, accuracies and parity ratios higher (1 = parity; these ratios are at most
# 1), selection and base rates have no direction.
_BETTER = {"selection_rate": None, "accuracy": "higher", "tpr": "higher", "fpr": "lower", "fnr": "lower",
           "precision": "higher", "fdr": "lower", "for": "lower", "base_rate": None,
           "demographic_parity_difference": "lower", "demographic_parity_ratio": "higher",
           "equalized_odds_difference": "lower", "equalized_odds_ratio": "higher",
           "equal_opportunity_difference": "lower", "predictive_parity_difference": "lower",
           "disparate_impact_ratio": "higher"}
METRICS: dict[str, MetricSpec] = {}
_OVR = ("Multiclass tasks: one-vs-rest for positive_class, and the record carries class = that class.")
for _k, _d in _RATE_DOC.items():
    METRICS[f"group_{_k}"] = MetricSpec(_d + " n is the rate's denominator." + ("" if _k == "accuracy" else " " + _OVR),
                                        {"attribute": _ATTR, "group": _GROUP} |
                                        ({} if _k == "accuracy" else {"class": "positive_class (multiclass tasks)"}),
                                        better=_BETTER[_k], bounds=UNIT)
METRICS["group_impact_ratio"] = MetricSpec("Four-fifths ratio: the group's selection rate over the highest group "
                                           "selection rate (29 CFR 1607.4(D)); n is the group's size.",
                                           {"attribute": _ATTR, "group": _GROUP}, better="higher", bounds=UNIT)
METRICS["group_reference_ratio"] = MetricSpec("The group's selection rate over the [fairness] reference group's "
                                              "(not capped at 1; only when reference is not 'highest').",
                                              {"attribute": _ATTR, "group": _GROUP}, better=None)
METRICS["group_error_rate"] = MetricSpec("Share predicted wrongly (multiclass: argmax != label; binary: 1 - "
                                         "group_accuracy). n is the group's size.", {"attribute": _ATTR, "group": _GROUP}, better="lower")
METRICS["group_ovr_accuracy"] = MetricSpec("Multiclass tasks only: the one-vs-rest accuracy for positive_class "
                                           "(is / is not that class). n is the group's size.",
                                           {"attribute": _ATTR, "group": _GROUP, "class": "positive_class"}, better="higher")
for _k, _d in _DISP_DOC.items():
    METRICS[_k] = MetricSpec(_d + " Inconclusive when a group's rate is undefined (0/0; the group is named). n is "
                             "the thinnest denominator among the group rates it compares, so min_n guards its "
                             "smallest group. " + _OVR,
                             {"attribute": _ATTR, "class": "positive_class (multiclass tasks)"}, better=_BETTER[_k],
                             bounds=UNIT)  # differences of rates and min-over-max ratios both lie in [0, 1]
METRICS.update({
    "group_ece": MetricSpec("Top-label equal-width ECE within the group ([calibration] bins): the plug-in value, "
                            "which grows as the group shrinks; its interval is for the group's true ECE (bias-"
                            "corrected, may lie below the value; [calibration] interval_draws).",
                            {"attribute": _ATTR, "group": _GROUP}, bounds=UNIT, better="lower"),
    "group_ece_debiased": MetricSpec("The group's ECE with its upward bias removed (at least 0); interval as "
                                     "group_ece's.", {"attribute": _ATTR, "group": _GROUP}, bounds=UNIT, better="lower"),
    "group_ece_reference": MetricSpec("Mean ECE a perfectly calibrated model would show on this group's examples "
                                      "(interval: its 95% range; [calibration] reference_draws). A group ECE "
                                      "above this range is miscalibration beyond the group's noise.",
                                      {"attribute": _ATTR, "group": _GROUP}, bounds=UNIT, better=None),
    "group_robust_accuracy": MetricSpec("Worst-case robust accuracy within the group (when robustness ran).",
                                        {"attribute": _ATTR, "group": _GROUP, "norm": "'linf' | 'l2'",
                                         "eps": "an epsilon as [robustness] writes it"}, bounds=UNIT, better="higher"),
    "group_noise_accuracy": MetricSpec("Noise accuracy within the group (when robustness ran noise).",
                                       {"attribute": _ATTR, "group": _GROUP, "noise": "a noise kind",
                                        "level": "a level as [robustness] writes it"}, bounds=UNIT, better="higher"),
    "postprocessed_accuracy": MetricSpec("Diagnostic, not applied: accuracy of ThresholdOptimizer's per-group "
                                         "thresholds on the held-out half.", {"attribute": _ATTR}, bounds=UNIT, better="higher"),
    "postprocessed_demographic_parity_difference": MetricSpec(
        "Diagnostic, not applied: demographic parity difference under ThresholdOptimizer's thresholds.",
        {"attribute": _ATTR}, better="lower"),
    "postprocessed_equalized_odds_difference": MetricSpec(
        "Diagnostic, not applied: equalized odds difference under ThresholdOptimizer's thresholds.",
        {"attribute": _ATTR}, better="lower"),
})

INTERVAL_SENTENCE = (
    "Disparity intervals are simultaneous: the bootstrap of a largest-minus-smallest gap is biased upwards "
    "(with truly equal groups its percentile interval often excludes its own estimate), so with two groups "
    "each interval is that of their one difference (or ratio), and with more groups the range the disparity "
    "takes when every group's rate moves within a band that holds all groups' rates at once with 95% "
    "confidence (conservative).")
UNDEFINED_SENTENCE = (
    "A rate that is 0/0 in a group (e.g. a TPR where the group has no positives) is reported as undefined and "
    "left out of the disparities; fairlearn reports 0 there, which would make that group the worst one.")


# ------------------------------------------------------------------------------------------------ groups


def attribute_groups(table: Any, attributes: list[str], intersectional: bool
                     ) -> list[tuple[str, np.ndarray, list[str]]]:
    """(attribute key, codes, group names) for each audited attribute and, on request, their intersection."""
    out = []
    for a in attributes:
        out.append((a, np.asarray(table[f"group:{a}"], dtype=np.int64), list(table.categories[a])))
    if intersectional and len(attributes) >= 2:
        cols = [np.asarray(table[f"group:{a}"], dtype=np.int64) for a in attributes]
        # Intersect over the full category lists (not just the codes present), so empty combinations show.
        sizes = [len(table.categories[a]) for a in attributes]
        codes = np.zeros(len(cols[0]), dtype=np.int64)
        for c, s in zip(cols, sizes):
            codes = codes * s + c
        out.append(("&".join(attributes), codes, _intersection_names(table.categories, attributes)))
    return out


def _intersection_names(categories: dict[str, list[str]], attributes: list[str]) -> list[str]:
    """Names of every combination of the attributes' groups, in code order (the first attribute slowest)."""
    sizes = [len(categories[a]) for a in attributes]
    grids = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
    return [" & ".join(categories[a][int(g.ravel()[i])] for a, g in zip(attributes, grids))
            for i in range(int(np.prod(sizes)))]


def _positive_class(cfg: dict[str, Any], names: list[str], where: str) -> int:
    k = len(names)
    pc = cfg["positive_class"]
    if pc is None:
        if k == 2:
            return 1
        raise RecipeError(f"{where} positive_class: the task has {k} classes; name the class to audit one-vs-rest, "
                          f"e.g. positive_class = {names[0]!r}")
    if isinstance(pc, str):
        if pc in names:
            return names.index(pc)
        if pc.isdigit() and int(pc) < k:
            return int(pc)
        raise RecipeError(f"{where} positive_class = {pc!r}: not a class (classes: {', '.join(names)})")
    if pc >= k:
        raise RecipeError(f"{where} positive_class = {pc}: the task has classes 0..{k - 1}")
    return int(pc)


def _reference(cfg: dict[str, Any], attr: str, names: list[str], notes: list[str]) -> int | str:
    ref = cfg["reference"]
    named = isinstance(ref, dict)
    if named:
        if attr not in ref:
            return "highest"
        ref = ref[attr]
    if ref in ("largest", "highest"):
        return ref
    if ref in names:
        return names.index(ref)
    if named:  # a table names one attribute's group: a name that is not one of its groups is a typo
        raise RecipeError(f"[fairness] reference: {ref!r} is not a group of '{attr}' (groups: {', '.join(names)})")
    notes.append(f"Reference group {ref!r} is not a group of '{attr}' ({', '.join(names)}): the group with the "
                 "highest selection rate is the reference instead.")
    return "highest"


# ------------------------------------------------------------------------------------------------ run


def validate(cfg: dict[str, Any], facts: Facts) -> dict[str, Any]:
    """Attributes, reference groups and the positive class checked against the data, before any work."""
    plan = dict(cfg)
    where = f"{facts.where}: [fairness]"
    available = list(facts.attributes)
    plan["_attributes"] = []
    if not available:
        return plan
    attributes = cfg["attributes"] or available
    for a in attributes:
        if a not in available:
            raise RecipeError(f"{where} attributes: {a!r} is not a sensitive attribute of the data "
                              f"(available: {', '.join(available)})")
    names = {a: list(facts.categories[a]) for a in attributes}
    if cfg["intersectional"] and len(attributes) >= 2:
        names["&".join(attributes)] = _intersection_names(facts.categories, attributes)
    _check_reference_table(cfg["reference"], names, where)
    plan["_attributes"] = list(attributes)
    plan["_positive"] = _positive_class(cfg, facts.class_names, where)
    calib = facts.recipe.section("calibration") if "calibration" in facts.recipe.sections else {"bins": 15}
    plan["_calibration"] = calib
    return plan


def summarise(table: Any, plan: dict[str, Any], facts: Facts, partials: Any = None) -> SuiteResult:  # noqa: ARG001
    res = SuiteResult("fairness")
    attributes = plan["_attributes"]
    if not attributes:
        res.notes.append("The data has no sensitive attributes, so no fairness metric could be measured. Name "
                         "them in [data] sensitive (csv: columns; npz: arrays).")
        res.check("sensitive_attributes", "warn",
                  "No sensitive attributes in the data: the fairness suite measured nothing. Add [data] sensitive "
                  "to audit groups; gates on fairness metrics find no record.")
        res.config = {"attributes": [], "positive_class": None}
        return res
    groups = attribute_groups(table, attributes, plan["intersectional"])
    if plan["intersectional"] and len(attributes) < 2:
        res.notes.append(f"intersectional = true has nothing to intersect: only one attribute ({attributes[0]}) "
                         "is audited.")
    calib = plan["_calibration"]
    extra = crossing_columns(table)
    return evaluate(table["label"], table["pred"], table.probs, groups,
                    facts.class_names, plan["_positive"], plan, facts.seed, ece_bins=int(calib.get("bins", 15)),
                    extra=extra, res=res, calib=calib)


def _check_reference_table(ref: Any, gnames: dict[str, list[str]], where: str) -> None:
    """A reference table must name analysed attributes and, for each, one of its groups (a typo there would
    otherwise silently change every four-fifths ratio of that attribute)."""
    if not isinstance(ref, dict):
        return
    for attr, group in ref.items():
        if attr not in gnames:
            raise RecipeError(f"{where} reference: {attr!r} is not an analysed attribute "
                              f"(analysed: {', '.join(gnames)})")
        if group not in gnames[attr] and group not in ("largest", "highest"):
            raise RecipeError(f"{where} reference: {group!r} is not a group of {attr!r} "
                              f"(groups: {', '.join(gnames[attr])})")


def crossing_columns(table: Any) -> list[dict[str, Any]]:
    """Per-example correctness columns that another suite (robustness) left in the table, found through
    their metadata: one entry per (norm, eps) worst-case column and per (noise, level) column, as
    ``{metric, params, values (fraction correct per row)}``. Robust at eps means the worst-case breaking
    eps is larger than eps (0 for clean-wrong examples)."""
    out: list[dict[str, Any]] = []
    noise = []
    for name, meta in table.column_meta.items():
        if name not in table:
            continue
        if meta.get("kind") == "eps_broken" and meta.get("attack") == "worst":
            broken = np.asarray(table[name], dtype=np.float64)
            for label, value in sorted(zip(meta["eps"], meta["eps_values"]), key=lambda kv: kv[1]):
                out.append({"metric": "group_robust_accuracy", "params": {"norm": meta["norm"], "eps": str(label)},
                            "values": (broken > float(value)).astype(np.float64),
                            "label": f"robust acc. {meta['norm']} ε={label}"})
        elif meta.get("kind") == "noise_correct":
            noise.append({"metric": "group_noise_accuracy", "params": {"noise": meta["noise"], "level": str(meta["level"])},
                          "values": np.asarray(table[name], dtype=np.float64) / int(meta["draws"]),
                          "label": f"{meta['noise']} noise {meta['level']}"})
    return out + noise


def _small_msg(group: str, attr: str, n: int, m: int, what: str = "examples") -> str:
    return f"group '{group}' of '{attr}' has {n} < {m} {what}"


_DENOM_WORD = {"selection_rate": "examples", "accuracy": "examples", "base_rate": "examples",
               "tpr": "positives", "fnr": "positives", "fpr": "negatives", "precision": "positive predictions",
               "fdr": "positive predictions", "for": "negative predictions"}


def evaluate(y: np.ndarray, pred: np.ndarray, probs: np.ndarray, attrs: list[tuple[str, np.ndarray, list[str]]],
             class_names: list[str], pos: int, cfg: dict[str, Any], seed: int, *, ece_bins: int = 15,
             extra: list[dict[str, Any]] | None = None, res: SuiteResult | None = None,
             calib: dict[str, Any] | None = None) -> SuiteResult:
    """The whole suite as a pure function of labels, predictions, probabilities and group codes (``calib``:
    the [calibration] settings for the ECE per group; default 15 bins or ``ece_bins``, 1000 draws)."""
    res = res or SuiteResult("fairness")
    m = cfg["min_group_size"]
    k = len(class_names)
    binary = k == 2
    tables = []
    any_small, any_undefined = [], []
    for attr, codes, gnames in attrs:
        G = len(gnames)
        ref = _reference(cfg, attr, gnames, res.notes)
        fr = F.fairness_audit(y, pred, codes, G, pos_label=pos, min_group_size=m, reference=ref,
                              threshold=cfg["four_fifths_threshold"], n_boot=cfg["bootstrap"],
                              rng=rng(seed, "fairness", "bootstrap", attr), confidence=cfg["confidence"],
                              interval=cfg["interval"])
        den = F.rate_denominators(fr.counts)
        # Multiclass: the binarised rates are one-vs-rest for the audited class and say so (class = ...);
        # group_accuracy is the multiclass accuracy, so no name means two things.
        ovr = {} if binary else {"class": class_names[pos]}
        mc_acc = None if binary else _multiclass_accuracy(y, pred, codes, G, cfg["confidence"])
        show_ref = fr.reference >= 0 and ref != "highest"
        groups = []
        for g, gname in enumerate(gnames):
            row: dict[str, Any] = {"group": gname, "n": int(fr.n[g]), "small": bool(fr.small[g]),
                                   "reference": g == fr.four_fifths.reference}
            for rate in F.RATES:
                v = fr.rates[rate][g]
                lo, hi = fr.rate_ci[rate][0][g], fr.rate_ci[rate][1][g]
                d = int(den[rate][g])
                why = None
                if d < m:
                    why = _small_msg(gname, attr, int(fr.n[g]), m) if fr.n[g] < m else \
                        f"the {rate.replace('_', ' ')} of group '{gname}' of '{attr}' rests on {d} < {m} {_DENOM_WORD[rate]}"
                ci = (float(lo), float(hi)) if np.isfinite(lo) and np.isfinite(hi) else None
                if rate == "accuracy" and not binary:
                    res.metric("group_ovr_accuracy", _v(v), d, ci, why, attribute=attr, group=gname, **ovr)
                    v, lo, hi = mc_acc[0][g], mc_acc[1][g], mc_acc[2][g]
                    ci = (float(lo), float(hi)) if np.isfinite(lo) and np.isfinite(hi) else None
                    res.metric("group_accuracy", _v(v), d, ci, why, attribute=attr, group=gname)
                else:
                    res.metric(f"group_{rate}", _v(v), d, ci, why, attribute=attr, group=gname,
                               **({} if rate == "accuracy" else ovr))
                row[rate] = {"value": _r(v), "ci_low": _r(lo) if ci else None, "ci_high": _r(hi) if ci else None,
                             "n": d}
                if rate == "accuracy":
                    err_ci = None if ci is None else (1.0 - ci[1], 1.0 - ci[0])
                    res.metric("group_error_rate", _v(1.0 - v), d, err_ci, why, attribute=attr, group=gname)
            ratio = fr.four_fifths.ratios[g]
            thin = _small_msg(gname, attr, int(fr.n[g]), m) if fr.small[g] or fr.n[g] == 0 else None
            res.metric("group_impact_ratio", _v(ratio), int(fr.n[g]), None, thin, attribute=attr, group=gname, **ovr)
            row["impact_ratio"] = _r(ratio)
            if show_ref:
                res.metric("group_reference_ratio", _v(fr.reference_ratios[g]), int(fr.n[g]), None, thin,
                           attribute=attr, group=gname, **ovr)
                row["reference_ratio"] = _r(fr.reference_ratios[g])
            groups.append(row)
            if fr.small[g]:
                any_small.append(f"'{gname}' of '{attr}' (n = {int(fr.n[g])})")

        disp_rows = []
        n_present = int(fr.present.sum())
        for name in F.DISPARITIES:
            d = fr.disparities[name]
            why = None
            undefined_why = [f"the {r.upper() if len(r) == 3 else r.replace('_', ' ')} of group '{gnames[g]}' of "
                             f"'{attr}' is undefined ({because})" for g, r, because in F.undefined_rates(fr, name)]
            if n_present < 2:
                # One group compares with nothing: a ratio of 1 here is not evidence of parity.
                only = gnames[int(np.flatnonzero(fr.present)[0])] if n_present else "none"
                why = f"'{attr}' has a single group in the data ('{only}'): there is nothing to compare"
            elif undefined_why:
                # Left out, the group can only make the disparity look smaller than it is.
                why = "; ".join(undefined_why) + ": the disparity over the other groups may understate it"
            elif d.small_group_involved:
                thin = _thin_groups(fr, name, gnames, m)
                why = "; ".join(thin) if thin else f"a group of '{attr}' has fewer than {m} examples"
            ci = (d.ci_low, d.ci_high) if np.isfinite(d.ci_low) and np.isfinite(d.ci_high) else None
            res.metric(name, _v(d.value), d.n, ci, why, attribute=attr, **ovr)
            undefined = [gnames[g] for g in d.undefined_groups]
            if undefined:
                any_undefined.append(f"{name.replace('_', ' ')} of '{attr}' leaves out {', '.join(undefined)}")
            disp_rows.append({
                "name": name, "value": _r(d.value), "ci_low": _r(d.ci_low) if ci else None,
                "ci_high": _r(d.ci_high) if ci else None, "n": d.n,
                "high_group": gnames[d.high_group] if d.high_group >= 0 else None,
                "low_group": gnames[d.low_group] if d.low_group >= 0 else None,
                "inconclusive": why, "undefined_groups": undefined,
                "kind": "ratio" if name.endswith("ratio") else "difference"})
        ff = fr.four_fifths
        ff_status = ("inconclusive" if ff.small_group_involved or n_present < 2 else "pass" if ff.passed else "fail") \
            if np.isfinite(ff.min_ratio) else "undefined"
        entry = {
            "attribute": attr, "groups": groups, "disparities": disp_rows,
            "reference": gnames[fr.reference] if fr.reference >= 0 else None,
            "reference_rule": ref if isinstance(ref, str) else "named", "reference_shown": show_ref,
            "four_fifths": {"reference": gnames[ff.reference] if ff.reference >= 0 else None, "threshold": ff.threshold,
                            "min_ratio": _r(ff.min_ratio), "ci_low": _r(ff.ci_low), "ci_high": _r(ff.ci_high),
                            "worst_group": gnames[ff.worst_group] if ff.worst_group >= 0 else None,
                            "status": ff_status},
            "small_groups": [gnames[g] for g in np.flatnonzero(fr.small)],
            "empty_groups": [gnames[g] for g in np.flatnonzero(~fr.present)],
        }
        entry["crossing"] = _crossing(res, y, probs, codes, gnames, attr, fr, m, calib or {"bins": ece_bins},
                                      extra or [], seed, cfg["confidence"])
        if binary and cfg["threshold_optimizer"]:
            entry["optimizer"] = _threshold_optimizer(res, y, pred, probs, codes, gnames, attr, pos, cfg, seed)
        tables.append(entry)

    res.tables["attributes"] = tables
    if any_small:
        res.notes.append(f"Groups below min_group_size = {m}: {', '.join(any_small)}. They are shown, but every gate "
                         "resting on them is inconclusive.")
    if any_undefined:
        res.notes.append(UNDEFINED_SENTENCE + " Here: " + "; ".join(any_undefined) + ".")
    if not binary:
        res.notes.append(f"Multiclass task: group_accuracy and group_error_rate are the multiclass accuracy (argmax = "
                         f"label) per group; every other rate and disparity is one-vs-rest for class "
                         f"'{class_names[pos]}' (positive = predicted as that class) and its record says "
                         f"class = '{class_names[pos]}'; the one-vs-rest accuracy is group_ovr_accuracy. The "
                         "ThresholdOptimizer diagnostic needs a binary task and was skipped.")
    res.config = {
        "attributes": [a for a, _, _ in attrs], "positive_class": class_names[pos], "binary": binary,
        "min_group_size": m, "bootstrap": cfg["bootstrap"], "confidence": cfg["confidence"],
        "interval": cfg["interval"], "four_fifths_threshold": cfg["four_fifths_threshold"],
        "interval_note": INTERVAL_SENTENCE if cfg["interval"] == "simultaneous" else
        "Disparity intervals are percentile bootstrap intervals; for a largest-minus-smallest gap they are biased "
        "upwards and may exclude their own estimate.",
        "undefined_note": UNDEFINED_SENTENCE,
        "group_intervals": "central intervals of posterior draws per group (Dirichlet(counts + 1/2), group sizes "
                           "fixed), at least Clopper-Pearson on each rate's denominator",
        "ece_bins": ece_bins,
        "threshold_optimizer": bool(binary and cfg["threshold_optimizer"]), "constraint": cfg["constraint"],
    }
    return res


def _multiclass_accuracy(y: np.ndarray, pred: np.ndarray, codes: np.ndarray, n_groups: int, confidence: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group multiclass accuracy ``#{argmax = label} / n_g`` and its Clopper-Pearson interval (the
    exact interval of a proportion of n_g examples; Clopper & Pearson, Biometrika 1934). NaN for an empty
    group."""
    correct = np.bincount(codes, weights=(np.asarray(pred) == np.asarray(y)).astype(np.float64), minlength=n_groups)
    n = np.bincount(codes, minlength=n_groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, correct / np.maximum(n, 1), np.nan)
    lo, hi = clopper_pearson(correct, n, confidence)
    return acc, lo, hi


def _thin_groups(fr: F.FairnessResult, name: str, gnames: list[str], m: int) -> list[str]:
    deps = F._DEPENDS[name]
    den = F.rate_denominators(fr.counts)
    out = []
    for g, gname in enumerate(gnames):
        for c in deps:
            if np.isfinite(fr.rates[c][g]) and den[c][g] < m:
                if fr.n[g] < m:
                    out.append(f"group '{gname}' has {int(fr.n[g])} < {m} examples")
                else:
                    out.append(f"the {c.replace('_', ' ')} of group '{gname}' rests on {int(den[c][g])} < {m} "
                               f"{_DENOM_WORD[c]}")
                break
    return out


# ------------------------------------------------------------------------------------------------ crossing


def _crossing(res: SuiteResult, y: np.ndarray, probs: np.ndarray, codes: np.ndarray, gnames: list[str], attr: str,
              fr: F.FairnessResult, m: int, calib: dict[str, Any], extra: list[dict[str, Any]], seed: int,
              confidence: float) -> dict[str, Any]:
    """ECE per group (always: plug-in with its interval, debiased, and the ECE a perfectly calibrated model
    would show on this group's examples) and robust / noise accuracy per group (when robustness ran).

    The calibrated reference matters most here: a plug-in ECE grows as a group shrinks (0.14 at n = 40,
    0.02 at n = 2000 for the same perfectly calibrated model), so group ECEs compare group sizes more than
    calibration unless read against their own reference."""
    bins = int(calib.get("bins", 15))
    draws = int(calib.get("interval_draws", 1000))
    ref_draws = int(calib.get("reference_draws", 1000))
    cols = [{"label": "ECE (top-label)", "metric": "group_ece", "params": {}},
            {"label": "debiased ECE", "metric": "group_ece_debiased", "params": {}},
            {"label": "calibrated reference", "metric": "group_ece_reference", "params": {}}] + \
        [{"label": e["label"], "metric": e["metric"], "params": e["params"]} for e in extra]
    rows = []
    n_g = np.bincount(codes, minlength=len(gnames))
    sums = [np.bincount(codes, weights=e["values"], minlength=len(gnames)) for e in extra]
    for g, gname in enumerate(gnames):
        mask = codes == g
        n = int(n_g[g])
        why = _small_msg(gname, attr, n, m) if n < m else None
        ref_mean = ref_lo = ref_hi = float("nan")
        if n:
            est = CAL.ece_estimate(probs[mask], y[mask], bins, n_draws=draws, confidence=confidence,
                                   rng=rng(seed, "fairness", "ece-interval", attr, gname))
            if ref_draws > 0:
                ref = CAL.calibrated_reference(probs[mask], bins, n_draws=ref_draws, confidence=confidence,
                                               rng=rng(seed, "fairness", "ece-reference", attr, gname))
                ref_mean, ref_lo, ref_hi = ref.mean, ref.ci_low, ref.ci_high
        else:
            est = CAL.ECEEstimate(float("nan"), float("nan"), float("nan"), float("nan"), 0, draws)
        ci = (est.ci_low, est.ci_high) if np.isfinite(est.ci_low) and np.isfinite(est.ci_high) else None
        res.metric("group_ece", _v(est.ece), n, ci, why, attribute=attr, group=gname)
        res.metric("group_ece_debiased", _v(est.debiased), n, ci, why, attribute=attr, group=gname)
        ref_ci = (ref_lo, ref_hi) if np.isfinite(ref_lo) and np.isfinite(ref_hi) else None
        res.metric("group_ece_reference", _v(ref_mean), n, ref_ci, why, attribute=attr, group=gname)
        vals = [_r(est.ece), _r(est.debiased), _r(ref_mean)]
        for spec, s in zip(extra, sums):
            v = s[g] / n if n else float("nan")
            res.metric(spec["metric"], _v(v), n, None, why, attribute=attr, group=gname, **spec["params"])
            vals.append(_r(v))
        rows.append({"group": gname, "n": n, "values": vals, "small": bool(n < m),
                     "ece_ci": [_r(ci[0]), _r(ci[1])] if ci else None,
                     "ece_reference_range": [_r(ref_lo), _r(ref_hi)] if ref_ci else None,
                     "ece_beyond_noise": bool(np.isfinite(ref_hi) and est.ece > ref_hi)})
    return {"columns": cols, "rows": rows}


# ------------------------------------------------------------------------------------- threshold optimizer


def _score_estimator() -> Any:
    """A prefit scikit-learn estimator whose single 'feature' is the model's own score P(positive):
    predict_proba returns it, so ThresholdOptimizer picks its thresholds on the model's scores."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class ModelScores(ClassifierMixin, BaseEstimator):
        def fit(self, X, y=None):  # noqa: ARG002 - the model is already trained
            self.classes_ = np.array([0, 1])
            return self

        def predict_proba(self, X):
            s = np.asarray(X, dtype=np.float64)[:, 0]
            return np.stack([1.0 - s, s], axis=1)

        def predict(self, X):
            return (np.asarray(X, dtype=np.float64)[:, 0] > 0.5).astype(int)

    return ModelScores().fit(None)


def _describe(op: Any) -> str:
    return f"score {op.operator} {op.threshold:.3f}" if np.isfinite(op.threshold) else \
        ("always" if (op.operator == ">" and op.threshold < 0) or (op.operator == "<" and op.threshold > 0) else "never")


# Above this many distinct scores the ThresholdOptimizer sees them rounded to 3 decimals (see there).
_OPTIMIZER_DISTINCT = 20_000


def _threshold_optimizer(res: SuiteResult, y: np.ndarray, pred: np.ndarray, probs: np.ndarray, codes: np.ndarray,
                         gnames: list[str], attr: str, pos: int, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """What per-group thresholds would give: fairlearn's ThresholdOptimizer fitted on a seeded half of the
    examples, its expected (randomised) decisions evaluated on the other half next to the model's own."""
    from fairlearn.postprocessing import ThresholdOptimizer

    n = len(y)
    perm = rng(seed, "fairness", "threshold-optimizer-split").permutation(n)
    fit = np.zeros(n, dtype=bool)
    fit[perm[: n // 2]] = True
    ev = ~fit
    yb = (np.asarray(y) == pos).astype(int)
    score = probs[:, pos].reshape(-1, 1)
    # fairlearn's threshold search walks every distinct score of every group in Python (about 30 us each:
    # 50 s at a million rows); on a 1e-3 grid (the precision the rules are shown with) there are at most
    # 1,001 per group. Only past _OPTIMIZER_DISTINCT distinct scores, where the search would dominate.
    rounded = len(np.unique(score)) > _OPTIMIZER_DISTINCT
    if rounded:
        score = np.round(score, 3)
    out: dict[str, Any] = {"constraint": cfg["constraint"], "objective": "accuracy", "n_fit": int(fit.sum()),
                           "n_eval": int(ev.sum()), "status": "ok", "message": "",
                           "scores_rounded": 3 if rounded else None}
    try:
        to = ThresholdOptimizer(estimator=_score_estimator(), constraints=cfg["constraint"], objective="accuracy_score",
                                prefit=True, predict_method="predict_proba")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            to.fit(score[fit], yb[fit], sensitive_features=codes[fit])
            q = to._pmf_predict(score[ev], sensitive_features=codes[ev])[:, 1]
    except Exception as e:  # noqa: BLE001 - a diagnostic must never break the audit
        out.update(status="skipped", message=f"ThresholdOptimizer could not be fitted: {' '.join(str(e).split())}")
        res.notes.append(f"'{attr}': {out['message']}")
        return out
    G = len(gnames)
    c_ev = codes[ev]
    y_ev = yb[ev]
    # Expected confusion counts of the randomised rule: P(yhat = 1) = q per example.
    exp_counts = np.zeros((G, 4))
    for cell, w in ((0, (1 - y_ev) * (1 - q)), (1, (1 - y_ev) * q), (2, y_ev * (1 - q)), (3, y_ev * q)):
        exp_counts[:, cell] = np.bincount(c_ev, weights=w, minlength=G)
    base_counts = F.group_confusion(yb[ev], (np.asarray(pred)[ev] == pos).astype(int), c_ev, G, pos_label=1)
    rows = []
    summary: dict[str, Any] = {}
    full: dict[str, dict[str, float]] = {}
    for label, counts in (("model", base_counts.astype(np.float64)), ("thresholds", exp_counts)):
        rates = F.group_rates(counts)
        present = counts.sum(1) > 0
        disp = F.disparities(rates)
        acc = float((counts[:, 0].sum() + counts[:, 3].sum()) / max(counts.sum(), 1))
        full[label] = {"accuracy": acc, **{d: float(disp[d]) for d in ("demographic_parity_difference",
                                                                       "equalized_odds_difference")}}
        summary[label] = {"accuracy": _r(acc),
                          "demographic_parity_difference": _r(disp["demographic_parity_difference"]),
                          "equalized_odds_difference": _r(disp["equalized_odds_difference"]),
                          "selection_rate": [_r(v) if p else None for v, p in zip(rates["selection_rate"], present)],
                          "tpr": [_r(v) for v in rates["tpr"]], "fpr": [_r(v) for v in rates["fpr"]]}
    interp = getattr(getattr(to, "interpolated_thresholder_", None), "interpolation_dict", {}) or {}
    for g, gname in enumerate(gnames):
        rule = interp.get(g)
        if rule is None:
            text = "no rule (group absent from the fit half)"
        else:
            parts = [f"{_describe(op)}" + (f" with prob. {p:.2f}" if p < 0.995 else "")
                     for p, op in ((rule.p0, rule.operation0), (rule.p1, rule.operation1)) if p >= 0.005]
            text = "; ".join(parts) or "never positive"
            if "p_ignore" in rule and rule.p_ignore > 0:
                text += f"; else (prob. {rule.p_ignore:.2f}) positive at rate {rule.prediction_constant:.2f}"
        rows.append({"group": gname, "rule": text,
                     "selection_rate_model": summary["model"]["selection_rate"][g],
                     "selection_rate_thresholds": summary["thresholds"]["selection_rate"][g],
                     "tpr_model": summary["model"]["tpr"][g], "tpr_thresholds": summary["thresholds"]["tpr"][g]})
    out.update(groups=rows, model=summary["model"], thresholds=summary["thresholds"])
    n_ev = int(ev.sum())
    for name, v in full["thresholds"].items():
        res.metric(f"postprocessed_{name}", _v(v), n_ev, None, attribute=attr)
    return out


SUITE = Suite("fairness", SECTION.doc, SECTION, METRICS, summarise, validate=validate, check_ids=("sensitive_attributes",))
