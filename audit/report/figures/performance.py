"""Figures of the performance section: confusion matrix, ROC and PR curves."""

from __future__ import annotations

from typing import Any

from audit.report.plots import confusion_matrix_svg, curves_svg


def figures(report: dict[str, Any]) -> dict[str, str]:
    s = report["suites"]["performance"]
    out = {}
    cm = s["tables"].get("confusion_matrix")
    if cm:
        out["confusion"] = confusion_matrix_svg(cm["labels"], cm["counts"], "perf-confusion")
    if s["curves"].get("roc"):
        binary = len(s["curves"]["roc"]) == 1
        out["roc"] = curves_svg(s["curves"]["roc"], "fpr", "tpr", "false positive rate", "true positive rate",
                                "ROC" + ("" if binary else " (one-vs-rest)"), "perf-roc", diagonal=True,
                                value_key="auc", value_label="AUC ")
    if s["curves"].get("pr"):
        binary = len(s["curves"]["pr"]) == 1
        out["pr"] = curves_svg(s["curves"]["pr"], "recall", "precision", "recall", "precision",
                               "Precision-recall" + ("" if binary else " (one-vs-rest)") + "; dotted: prevalence",
                               "perf-pr", baseline_key="prevalence", value_key="ap", value_label="AP ")
    return out
