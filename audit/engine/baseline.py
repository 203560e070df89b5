"""The core check ``better_than_baseline``: is the model any better than a predictor that ignores its input?

A model evaluated on inputs it was not trained for (its mean/std normalisation forgotten, the feature
columns in another order, the labels mapped to other classes) does not crash: it predicts one class for
nearly every row, or worse than chance, and every other number of the report (robust accuracy, group
disparities, calibration) is then a number about garbage. This check says so before anyone reads them.

The rule, from the labels y and the predictions of the clean pass (K' = classes present in y):

- **constant** (fail): one class takes at least ``CONSTANT_SHARE`` (99%) of the predictions while it is at
  most ``CONSTANT_LABEL_SHARE`` (95%) of the labels: the predictions collapsed where the labels did not
  (then the model finds at most 20% of the other classes' examples). Under heavier imbalance (the class is
  over 95% of the labels, a fraud or churn set) the same collapse fails when the model finds none of the
  other classes' examples, and warns when it finds at most ``CONSTANT_OTHER_RECALL`` (20%) of them: a
  rare-class model that weak may still be real, one that finds none ignores its input as far as this data
  can tell. Either way it needs at least ``MIN_OTHER`` (30, the gates' default min_n) examples of the other
  classes; with fewer, the pattern is only a warning (four rows predicted alike say little).
- **worse than chance** (fail): balanced accuracy's one-sided upper confidence bound is below 1/K'. Any
  predictor that ignores its input, whatever its class frequencies q, has expected recall q_c on class c,
  so expected balanced accuracy sum_c q_c / K' = 1/K' exactly; a model confidently below that is
  anti-correlated with its labels (typically: a wrong label mapping). The bound is
  BA + z * sqrt(sum_c p_c (1 - p_c) / n_c) / K', with p_c = (k_c + 1/2) / (n_c + 1) (the Jeffreys-smoothed
  recall of class c: k_c correct of its n_c examples, so that a recall of 0 or 1 still has a spread) and z
  the standard normal quantile at ``confidence`` (one-sided); under an input-ignoring predictor it fires
  with probability about 1 - confidence (tests/test_tabular_threat.py measures it by simulation).
- **no better than the majority baseline** (warn): the upper end of accuracy's two-sided Clopper-Pearson
  interval at ``confidence`` is at most the majority class's share (always predicting that class would
  do as well). A warning, not a failure: under class imbalance a useful model with a low threshold can
  score below the majority share on accuracy while its balanced accuracy is high; the message gives both.

Both failures make the evaluation invalid (exit 4) unless ``[validity] downgrade`` lists
``better_than_baseline``: a model no better than a constant makes every other number meaningless, but a
deliberately trivial baseline model may be audited on purpose.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from audit.metrics.bootstrap import clopper_pearson
from audit.report.records import Check

CHECK_ID = "better_than_baseline"
CONSTANT_SHARE = 0.99
CONSTANT_LABEL_SHARE = 0.95
MIN_OTHER = 30
CONSTANT_OTHER_RECALL = 0.2

CAUSES = ("Common causes: the normalisation the model was trained with is missing ([model] mean and std, e.g. the "
          "training set's per-feature mean and std for a tabular model, unless the model carries its own scaler); "
          "the inputs are in another order than in training ([data] features, [model] input_shape, a one-hot "
          "category order: [data] categorical); the labels are mapped to other classes ([data] label_values, "
          "[model] class_names); or the checkpoint is not the trained model. Fix the recipe and re-run; every other "
          "number in this report is meaningless until this check passes (to audit a deliberately trivial model, "
          "[validity] downgrade = [\"better_than_baseline\"]).")


def balanced_accuracy_upper(y: np.ndarray, pred: np.ndarray, k: int, confidence: float = 0.95
                            ) -> tuple[float, float, int]:
    """(balanced accuracy, its one-sided upper bound at ``confidence``, classes present). See the module
    docstring for the formula."""
    n_c = np.bincount(y, minlength=k).astype(np.float64)
    k_c = np.bincount(y[pred == y], minlength=k).astype(np.float64)
    present = n_c > 0
    kp = int(present.sum())
    if kp == 0:
        return float("nan"), float("nan"), 0
    r = k_c[present] / n_c[present]
    p = (k_c[present] + 0.5) / (n_c[present] + 1.0)
    ba = float(r.mean())
    se = float(np.sqrt(np.sum(p * (1 - p) / n_c[present]))) / kp
    return ba, ba + NormalDist().inv_cdf(confidence) * se, kp


def better_than_baseline(y: np.ndarray, pred: np.ndarray, class_names: list[str], confidence: float = 0.95) -> Check:
    """The check from labels and predictions (both integer class indices, one per example)."""
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    k = len(class_names)
    n = len(y)
    if n == 0:
        return Check(CHECK_ID, "pass", "No examples: nothing to compare with a baseline.")
    labels = np.bincount(y, minlength=k)
    preds = np.bincount(pred, minlength=k)
    top = int(np.argmax(preds))
    top_share = preds[top] / n
    top_label_share = labels[top] / n
    major = int(np.argmax(labels))
    majority = labels[major] / n
    correct = int((pred == y).sum())
    acc = correct / n
    lo, hi = (float(v) for v in clopper_pearson(correct, n, confidence))
    ba, ba_hi, kp = balanced_accuracy_upper(y, pred, k, confidence)
    pct = f"{confidence:.0%}"
    facts = (f"accuracy {acc:.3f} ({pct} interval {lo:.3f}-{hi:.3f}) against {majority:.3f} for always predicting "
             f"'{class_names[major]}'; balanced accuracy {ba:.3f} (upper bound {ba_hi:.3f}) against {1 / kp:.3f} for "
             f"any predictor that ignores its input; '{class_names[top]}' is {top_share:.1%} of the predictions and "
             f"{top_label_share:.1%} of the labels ({n} examples)")
    other = n - int(labels[top])
    found = int(((pred == y) & (y != top)).sum())  # the other classes' examples the model gets right
    other_recall = found / other if other else 1.0
    if kp >= 2 and top_share >= CONSTANT_SHARE and other_recall <= CONSTANT_OTHER_RECALL:
        few = other < MIN_OTHER
        balanced = top_label_share <= CONSTANT_LABEL_SHARE
        status = "warn" if few or not (balanced or found == 0) else "fail"
        why = (f"; only {other} examples of the other classes (fewer than {MIN_OTHER}), so this is a warning, not "
               "a failure. " if few else
               ". " if status == "fail" else
               f"; under this imbalance ('{class_names[top]}' is {top_label_share:.1%} of the labels) it still finds "
               f"{found} of them, so this is a warning, not a failure. ")
        return Check(CHECK_ID, status,
                     f"The model predicts '{class_names[top]}' for {preds[top]} of {n} examples ({top_share:.1%}) and "
                     f"finds {found} of the {other} examples of the other classes (rule: one class for at least "
                     f"{CONSTANT_SHARE:.0%} of the predictions and at most {CONSTANT_OTHER_RECALL:.0%} of the others "
                     f"found; a failure when that class is at most {CONSTANT_LABEL_SHARE:.0%} of the labels or none "
                     f"are found): its predictions are (nearly) constant, so it is no better than a model that "
                     f"ignores its input ({facts}){why}" + CAUSES, value=float(top_share))
    if kp >= 2 and ba_hi < 1.0 / kp:
        return Check(CHECK_ID, "fail",
                     f"The model is worse than chance: balanced accuracy {ba:.3f} has a one-sided {pct} upper bound "
                     f"{ba_hi:.3f} below {1 / kp:.3f}, the balanced accuracy of every predictor that ignores its input "
                     f"(rule: upper bound < 1/K). Its predictions run against the labels ({facts}). " + CAUSES,
                     value=float(ba))
    if kp >= 2 and hi <= majority:
        return Check(CHECK_ID, "warn",
                     f"Accuracy is no better than the majority baseline (rule: the upper end of accuracy's {pct} "
                     f"Clopper-Pearson interval, {hi:.3f}, is at most the majority share {majority:.3f}): {facts}. If "
                     "balanced accuracy is well above chance, the model trades accuracy for the rarer classes (a "
                     "threshold or class-weight choice); if not, check the inputs. " + CAUSES, value=float(acc))
    return Check(CHECK_ID, "pass",
                 f"Better than a predictor that ignores its input: {facts}. (Fails when one class takes at least "
                 f"{CONSTANT_SHARE:.0%} of the predictions, or balanced accuracy's upper bound is below 1/K; warns when "
                 "accuracy's upper bound is at most the majority share.)", value=float(acc))
