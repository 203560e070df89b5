"""Calibration suite: ECE (equal-width and equal-mass bins, top-label and class-wise), MCE, Brier, NLL,
reliability diagrams with per-bin counts, the ECE a perfectly calibrated model would show at this n, and
temperature scaling as a held-out diagnostic (never applied to the model or to any other number).

Reads only the core columns of the per-example table (label, logits); every number is a call into the
pure functions of ``audit.metrics.calibration``.

Metric records and how a gate names them:

  ece, mce                     {binning, kind}: binning = "equal_width" | "equal_mass",
                               kind = "top_label" | "classwise" (a gate must give both)
  ece                          ci = an interval for the population ECE of these bins (bias-corrected: it
                               may lie below the plug-in value, which is biased upwards)
  ece_debiased                 {binning, kind}: the plug-in ECE minus its estimated upward bias, at least 0;
                               ci = the same interval as ece
  ece_reference                {binning, kind}: mean ECE of a perfectly calibrated model with these
                               probabilities at this n; ci = its 95% range (labels drawn from the model's
                               own probabilities, seeded)
  brier                        {} multiclass Brier score sum_k (p_k - 1[y = k])^2, in [0, 2]
  nll                          {} negative log-likelihood (natural log) from the logits
  temperature                  {} T fitted by NLL on the fit split
  ece_before_temperature,      {} top-label equal-width ECE / NLL on the evaluation split at T = 1 and
  ece_after_temperature,          at the fitted T (a diagnostic: what temperature scaling would give)
  nll_before_temperature,
  nll_after_temperature

e.g. ``metric = "ece"``, ``params = { binning = "equal_width", kind = "top_label" }``, ``op = "<="``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import RecipeError
from audit.metrics import calibration as K
from audit.recipe.fields import Field, FieldError, Section, p_bool, p_float, p_int, p_list, p_str
# _v: full precision for metric records; _r: rounded, for tables shown to people
from audit.report.records import SuiteResult, finite_or_none as _v, rounded as _r
from audit.seeding import rng
from audit.suites.base import UNIT, Facts, MetricSpec, Suite

BINNINGS = {"equal_width": "uniform", "equal_mass": "quantile"}
KINDS = ("top_label", "classwise")


def _p_choices(choices: tuple[str, ...], what: str):
    lst = p_list(p_str(choices), what, min_len=1, unique=True)

    def parse(v: Any) -> list[str]:
        return lst([v] if isinstance(v, str) else v)

    return parse


def _post(c: dict[str, Any]) -> None:
    if c["temperature_fit_indices"] is not None and not c["temperature_scaling"]:
        raise FieldError("temperature_fit_indices needs temperature_scaling = true")


SECTION = Section(
    "calibration",
    "Expected calibration error (equal-width and equal-mass bins, top-label and class-wise), MCE, Brier, NLL "
    "and reliability diagrams with per-bin counts. Next to every ECE: the ECE a perfectly calibrated model "
    "would show at this sample size (labels drawn from the model's own probabilities, seeded), so signal can "
    "be told from noise. Temperature scaling is fitted by NLL on a held-out split and judged on the rest, "
    "as a diagnostic: it is never applied to the model or to any other number in the report.",
    (
        Field("bins", "integer >= 2", "Number of bins for ECE, MCE and the reliability diagrams.", default=15,
              parse=p_int(2), example="15"),
        Field("binning", "list of 'equal_width' | 'equal_mass'",
              "Binnings to report: equal-width bins (lo, hi] on [0, 1], or equal-mass bins of n/bins examples "
              "each (sorted by confidence).", default=["equal_width", "equal_mass"],
              parse=_p_choices(tuple(BINNINGS), "binnings"), example='["equal_width", "equal_mass"]'),
        Field("kind", "list of 'top_label' | 'classwise'",
              "top_label: the confidence of the predicted class against its accuracy (Guo et al. 2017); "
              "classwise: every class's probability against that class's frequency, averaged over classes "
              "(Kull et al. 2019).", default=["top_label", "classwise"], parse=_p_choices(KINDS, "kinds"),
              example='["top_label"]'),
        Field("interval_draws", "integer >= 0",
              "Posterior draws for the ECE interval and the debiased ECE (0: neither is computed).", default=1000,
              parse=p_int(0), example="1000"),
        Field("reference_draws", "integer >= 0",
              "Label draws for the perfectly-calibrated reference ECE (0: not computed).", default=1000,
              parse=p_int(0), example="1000"),
        Field("confidence", "number in [0.5, 0.999]", "Level of the reference interval.", default=0.95,
              parse=p_float(0.5, 0.999), example="0.95"),
        Field("temperature_scaling", "true | false",
              "Fit a temperature on a held-out split and report ECE/NLL/Brier before and after on the rest "
              "(diagnostic only).", default=True, parse=p_bool),
        Field("temperature_fit_fraction", "number in [0.05, 0.95]",
              "Fraction of the examples (a seeded random split) used to fit the temperature; the rest "
              "evaluates it.", default=0.5, parse=p_float(0.05, 0.95), example="0.5"),
        Field("temperature_fit_indices", "path",
              "A calibration split named by the user instead of the random split: a .npy or text file of "
              "global example indices (the 'index' column of examples.npz; the file is relative to the recipe) "
              "that fit the temperature; every other example evaluates it. Indices of examples outside the "
              "evaluated split are ignored, and the report says how many.", parse=p_str(what="a path"), example='"calib_indices.txt"'),
    ),
    post=_post,
    example="[calibration]\nbins = 15\nbinning = [\"equal_width\", \"equal_mass\"]\nreference_draws = 1000",
)

_BIN = "'equal_width' | 'equal_mass'"
_KIND = "'top_label' | 'classwise'"
_BIN_KIND = {"binning": ("equal_width", "equal_mass"), "kind": ("top_label", "classwise")}
METRICS = {
    "ece": MetricSpec("Expected calibration error (sum over bins of bin share times |accuracy - confidence|): the "
                      "plug-in value, biased upwards by noise; read it next to ece_reference, the ECE of a perfectly "
                      "calibrated model at this n. Its interval is for the population ECE of these bins (bias-"
                      "corrected, so it may lie below the value); gate on ci_high to bound the miscalibration.",
                      {"binning": _BIN, "kind": _KIND}, choices=_BIN_KIND, bounds=UNIT, better="lower"),
    "ece_debiased": MetricSpec("The ECE with its upward bias removed (2 x plug-in - mean of posterior draws, at least 0; "
                               "Kumar, Liang & Ma 2019): the better point estimate of the population ECE, and the "
                               "fair one to gate with use = 'value'. Interval: the same as ece's.",
                               {"binning": _BIN, "kind": _KIND}, choices=_BIN_KIND, bounds=UNIT, better="lower"),
    "mce": MetricSpec("Maximum calibration error: the largest |accuracy - confidence| over non-empty bins "
                      "(class-wise: the largest over every class's bins; driven by the thinnest bin).", {"binning": _BIN, "kind": _KIND}, choices=_BIN_KIND, bounds=UNIT, better="lower"),
    "ece_reference": MetricSpec("Mean ECE a perfectly calibrated model with these probabilities would show "
                                "at this n (interval: its 95% range over seeded label draws).",
                                {"binning": _BIN, "kind": _KIND}, choices=_BIN_KIND, bounds=UNIT, better=None),
    "brier": MetricSpec("Multiclass Brier score sum_k (p_k - 1[y = k])^2, averaged over examples, in [0, 2] "
                        "(twice scikit-learn's binary brier_score_loss).", bounds=(0.0, 2.0), better="lower"),
    "nll": MetricSpec("Negative log-likelihood (cross-entropy, natural log) of the true labels.", bounds=(0.0, None), better="lower"),
    "temperature": MetricSpec("Temperature T fitted by NLL on the fit split (T > 1: the model is overconfident). "
                              "Diagnostic; never applied. Inconclusive (with the reason) when the fit split does "
                              "not determine T: no misclassified fit example (NLL then falls as T -> 0), T at the "
                              "search bound [0.01, 100], or a T that makes the evaluation split's NLL clearly worse (paired: "
                              "by more than 2 standard errors and 5%).", better=None),
    "ece_before_temperature": MetricSpec("Top-label equal-width ECE on the temperature evaluation split, T = 1.", bounds=UNIT, better="lower"),
    "ece_after_temperature": MetricSpec("Top-label equal-width ECE on the temperature evaluation split after "
                                        "dividing the logits by the fitted T.", bounds=UNIT, better="lower"),
    "nll_before_temperature": MetricSpec("NLL on the temperature evaluation split, T = 1.", bounds=(0.0, None), better="lower"),
    "nll_after_temperature": MetricSpec("NLL on the temperature evaluation split at the fitted T.", bounds=(0.0, None), better="lower"),
}


def _bins_json(b: K.ReliabilityBins) -> dict[str, Any]:
    return {"lower": [_r(x) for x in b.lower], "upper": [_r(x) for x in b.upper],
            "count": [int(c) for c in b.count], "mean_confidence": [_r(x) for x in b.mean_confidence],
            "accuracy": [_r(x) for x in b.accuracy], "ece": _r(b.ece), "mce": _r(b.mce), "n": int(b.n)}


def validate(cfg: dict[str, Any], facts: Facts) -> dict[str, Any]:
    """The fit split's index file is read and checked here, before any work."""
    plan = dict(cfg)
    plan["_fit_indices"], plan["_outside"] = None, 0
    if cfg["temperature_fit_indices"]:
        plan["_fit_indices"], plan["_outside"] = _fit_indices(facts, cfg["temperature_fit_indices"])
    return plan


def summarise(table: Any, plan: dict[str, Any], facts: Facts, partials: Any = None) -> SuiteResult:  # noqa: ARG001
    fit_mask = None if plan["_fit_indices"] is None else np.isin(table["index"], plan["_fit_indices"])
    res = evaluate(table["logits"], table["label"], plan, facts.seed, facts.num_classes, fit_mask)
    outside = plan["_outside"]
    if outside:
        # Said, not dropped quietly: a file for the whole data set is fine, but a 1-based or other-split
        # file would fit the temperature on a different set than the user believes.
        res.notes.append(f"temperature_fit_indices: {outside} of the listed indices name no evaluated example "
                         "(not in this split) and were ignored; indices are the 'index' column of examples.npz.")
    return res


def _undetermined_temperature(temp: K.TemperatureDiagnostic, errors_fit: int, worse: str | None) -> str | None:
    """Why the fitted T says nothing (None when it is usable). With no misclassified fit example the NLL
    keeps falling as T -> 0, so the optimiser stops at its bound; with a handful of examples one confident
    error can pull T anywhere. The held-out split is the judge: a T that clearly worsens its NLL
    (``worse``, from :func:`_clearly_worse`) does not generalise."""
    lo, hi = K.TEMPERATURE_BOUNDS
    fit = f"the fit split ({temp.n_fit} examples, {errors_fit} misclassified)"
    if errors_fit == 0:
        # every term log(1 + sum_j exp((z_j - z_y) / T)) then falls monotonically to 0 as T -> 0: the
        # optimiser stops wherever the NLL underflows, so the T it returns is arbitrary
        return f"{fit} has no error, so its NLL keeps falling as T -> 0 and determines no temperature"
    if temp.temperature <= lo * 1.001 or temp.temperature >= hi / 1.001:
        return f"T = {temp.temperature:.3g} is at the search bound [{lo:g}, {hi:g}]: {fit} does not determine a temperature"
    if worse is not None:
        return (f"the fitted T = {temp.temperature:.3g} makes the evaluation split's NLL clearly worse "
                f"({temp.nll_before:.4g} -> {temp.nll_after:.4g}, {worse}): {fit} is too small or unlike the rest")
    return None


def _clearly_worse(z: np.ndarray, y: np.ndarray, t: float) -> str | None:
    """Does T raise the held-out NLL materially and beyond noise? For a calibrated model T is near 1 and the
    held-out NLL goes up or down by chance, so a plain "after > before" would flag half of all good fits.
    Flagged: the mean per-example increase is more than 2 standard errors and more than 5% of the NLL
    at T = 1 (a paired comparison on the same examples)."""
    if len(y) < 2:
        return None
    before = K.nll_per_example(z, y)
    d = K.nll_per_example(z, y, t) - before
    base = float(before.mean())
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    if np.isfinite(mean) and mean > 2 * se and mean > 0.05 * base:
        return f"+{mean:.3g} per example, {mean / se:.1f} standard errors" if se > 0 else f"+{mean:.3g} per example"
    return None


def _fit_indices(facts: Facts, rel: str) -> tuple[np.ndarray, int]:
    """The fit split's global indices, and how many listed indices name no evaluated example."""
    path = facts.recipe.resolve(rel)
    where = f"{facts.where}: [calibration] temperature_fit_indices = {rel!r}"
    if not Path(path).is_file():
        raise RecipeError(f"{where}: file not found ({path})")
    try:
        idx = np.load(path, allow_pickle=False) if str(path).endswith(".npy") else np.loadtxt(path, dtype=np.int64, ndmin=1)
    except (ValueError, OSError) as e:
        raise RecipeError(f"{where}: expected a .npy array or a text file of integer example indices ({e})") from None
    idx = np.asarray(idx).reshape(-1)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise RecipeError(f"{where}: expected integer example indices, got {idx.dtype} values")
    idx = idx.astype(np.int64)
    mask = np.isin(facts.index, idx)
    outside = int(len(np.setdiff1d(idx, facts.index)))
    if not mask.any() or mask.all():
        raise RecipeError(f"{where}: the indices select {int(mask.sum())} of {len(mask)} evaluated examples; "
                          "both the fit and the evaluation split need examples")
    return facts.index[mask], outside


def evaluate(logits: np.ndarray, y: np.ndarray, cfg: dict[str, Any], seed: int, k: int | None = None,
             fit_mask: np.ndarray | None = None) -> SuiteResult:
    """The whole suite as a pure function of logits and labels."""
    with K.reuse_bins():  # every ECE, MCE, interval and reference of p bins it once per binning
        return _evaluate(logits, y, cfg, seed, k, fit_mask)


def _evaluate(logits: np.ndarray, y: np.ndarray, cfg: dict[str, Any], seed: int, k: int | None,
              fit_mask: np.ndarray | None) -> SuiteResult:
    res = SuiteResult("calibration")
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    p = K.softmax(z)
    m = cfg["bins"]
    conf_level = cfg["confidence"]
    draws = cfg["reference_draws"]
    rows = []
    eces = {(b, kd): K.ece(p, y, m, BINNINGS[b], kd) for b in cfg["binning"] for kd in cfg["kind"]}
    refs = {}
    if draws > 0 and n > 0:  # every binning and kind from one shared draw (see K.calibrated_references)
        refs = K.calibrated_references(p, m, tuple(BINNINGS[b] for b in cfg["binning"]), tuple(cfg["kind"]), draws,
                                       rng(seed, "calibration", "reference"), conf_level,
                                       observed={(BINNINGS[b], kd): e for (b, kd), e in eces.items()})
    for binning in cfg["binning"]:
        strategy = BINNINGS[binning]
        for kind in cfg["kind"]:
            e = eces[(binning, kind)]
            mc = K.mce(p, y, m, strategy, kind)
            est = K.ece_estimate(p, y, m, strategy, kind, cfg["interval_draws"],
                                 rng(seed, "calibration", "ece-interval", binning, kind), conf_level)
            ci = (est.ci_low, est.ci_high) if np.isfinite(est.ci_low) and np.isfinite(est.ci_high) else None
            res.metric("ece", _v(e), n, ci, binning=binning, kind=kind)
            if cfg["interval_draws"] > 0:
                res.metric("ece_debiased", _v(est.debiased), n, ci, binning=binning, kind=kind)
            res.metric("mce", _v(mc), n, None, binning=binning, kind=kind)
            row = {"binning": binning, "kind": kind, "ece": _r(e), "mce": _r(mc), "n": n,
                   "ece_debiased": _r(est.debiased), "ci_low": _r(ci[0]) if ci else None,
                   "ci_high": _r(ci[1]) if ci else None,
                   "reference_mean": None, "reference_low": None, "reference_high": None, "p_value": None,
                   "verdict": None}
            if refs:
                ref = refs[(strategy, kind)]
                res.metric("ece_reference", ref.mean, n, (ref.ci_low, ref.ci_high), binning=binning, kind=kind)
                row.update(reference_mean=_r(ref.mean), reference_low=_r(ref.ci_low),
                           reference_high=_r(ref.ci_high), p_value=_r(ref.p_value),
                           # beyond the reference's upper end by more than float rounding (see ECE_TIE)
                           verdict=("beyond noise" if e > ref.ci_high + K.ECE_TIE * max(1.0, abs(ref.ci_high))
                                    else "within noise"))
            rows.append(row)
    res.tables["ece"] = rows
    res.metric("brier", _v(K.brier_score(p, y)), n)
    res.metric("nll", _v(K.nll_from_logits(z, y)) if n else None, n)

    diagrams = {}
    for binning in cfg["binning"]:
        diagrams[binning] = _bins_json(K.reliability_diagram(p, y, m, BINNINGS[binning]))
    res.curves["reliability"] = diagrams

    temp = None
    from_recipe = fit_mask is not None
    if cfg["temperature_scaling"] and n >= 4:
        if fit_mask is None:  # a seeded random split: the first round(fraction * n) of a permutation fit T
            fit_mask = np.zeros(n, dtype=bool)
            fit_mask[rng(seed, "calibration", "temperature-split").permutation(n)[
                :int(round(cfg["temperature_fit_fraction"] * n))]] = True
        try:
            temp = K.temperature_scaling_diagnostic(z, y, fit_mask=fit_mask, n_bins=m, strategy="uniform")
        except ValueError as e:
            res.notes.append(f"Temperature scaling not fitted: {e}.")
    elif cfg["temperature_scaling"]:
        res.notes.append(f"Temperature scaling needs at least 4 examples ({n} here): not fitted.")
    if temp is not None:
        errors_fit = int(np.sum(z[fit_mask].argmax(1) != y[fit_mask]))
        ev = ~fit_mask
        why = _undetermined_temperature(temp, errors_fit, _clearly_worse(z[ev], y[ev], temp.temperature))
        res.metric("temperature", temp.temperature, temp.n_fit, None, why)
        for name, before, after in (("ece", temp.ece_before, temp.ece_after), ("nll", temp.nll_before, temp.nll_after)):
            res.metric(f"{name}_before_temperature", _v(before), temp.n_eval)
            res.metric(f"{name}_after_temperature", _v(after), temp.n_eval, None, why)
        if why:
            res.notes.append(f"Temperature scaling diagnostic: {why}. Its T and after-temperature numbers are "
                             "marked inconclusive; a larger calibration split (temperature_fit_fraction or "
                             "temperature_fit_indices, more data) is needed to say what temperature scaling would do.")
        z_ev, y_ev = z[ev], y[ev]
        res.tables["temperature"] = {
            "temperature": _r(temp.temperature), "n_fit": temp.n_fit, "n_eval": temp.n_eval,
            "split": "recipe (temperature_fit_indices)" if from_recipe else
                     f"seeded random split, {cfg['temperature_fit_fraction']:.0%} fit",
            "ece_before": _r(temp.ece_before), "ece_after": _r(temp.ece_after),
            "nll_before": _r(temp.nll_before), "nll_after": _r(temp.nll_after),
            "brier_before": _r(temp.brier_before), "brier_after": _r(temp.brier_after),
        }
        res.curves["temperature"] = {
            "before": _bins_json(K.reliability_diagram(K.softmax(z_ev), y_ev, m, "uniform")),
            "after": _bins_json(K.reliability_diagram(K.softmax(z_ev, temp.temperature), y_ev, m, "uniform")),
        }
        direction = ("not determined by the fit split" if why else
                     "overconfident (T > 1 softens it)" if temp.temperature > 1.05 else
                     "underconfident (T < 1 sharpens it)" if temp.temperature < 0.95 else "about right in scale")
        res.tables["temperature"].update(reading=direction, errors_fit=errors_fit, inconclusive=why)

    top = next((r for r in rows if r["binning"] == "equal_width" and r["kind"] == "top_label"), rows[0] if rows else None)
    if top and top["reference_high"] is not None and top["ece"] is not None and top["ece"] <= top["reference_high"]:
        res.notes.append(
            f"The {top['binning'].replace('_', '-')} top-label ECE ({top['ece']:.3f}) is within the range a perfectly "
            f"calibrated model shows at n = {n} ({top['reference_low']:.3f}–{top['reference_high']:.3f}): at this "
            "sample size it cannot be told apart from noise.")
    res.config = {
        "bins": m, "binning": list(cfg["binning"]), "kind": list(cfg["kind"]), "n": n,
        "num_classes": k if k is not None else int(z.shape[1]) if z.ndim == 2 else None,
        "reference_draws": draws, "confidence": conf_level,
        "temperature_scaling": cfg["temperature_scaling"],
        "binning_rule": "equal-width bins (lo, hi] with 0 in the first bin and a confidence of 1.0 in the last; "
                        "equal-mass bins of floor(n/bins) or ceil(n/bins) examples sorted by confidence",
        "reference_rule": "labels drawn from the model's own probabilities (a perfectly calibrated model by "
                          "construction), seeded, as exact per-bin hit counts (Poisson-binomial; multiclass "
                          "class-wise: a label per row); interval = central range of the drawn ECEs",
        "interval_draws": cfg["interval_draws"],
        "interval_rule": "ECE interval: for the population ECE of these bins, from posterior draws of each bin's mass and "
                         "accuracy (Dirichlet, Jeffreys-type prior), reflected around the estimate so that the upward "
                         "bias of the plug-in ECE is subtracted, and reaching 0 whenever a perfectly calibrated model "
                         "could show this ECE; debiased ECE = 2 x plug-in - mean of the draws (at least 0)",
    }
    return res


SUITE = Suite("calibration", SECTION.doc, SECTION, METRICS, summarise, validate=validate)
