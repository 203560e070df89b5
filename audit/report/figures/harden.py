"""Figures of the harden section: the training curves (validation and training accuracy, and the loss, per
epoch) and the trade-off (robust accuracy against eps, before and after, per norm). Report data only."""

from __future__ import annotations

from typing import Any

from audit.report.plots import line_svg


def figures(report: dict[str, Any]) -> dict[str, str]:
    t = report["suites"]["harden"]["tables"]
    hist = t["history"]
    epochs = [float(r["epoch"]) for r in hist]
    out = {"curves": line_svg(
        epochs, {"validation robust": [r["val_robust_accuracy"] for r in hist],
                 "validation clean": [r["val_clean_accuracy"] for r in hist],
                 "training robust": [r["train_robust_accuracy"] for r in hist],
                 "training clean": [r["train_clean_accuracy"] for r in hist]},
        "epoch (0 = the original model)", "accuracy",
        f"Training curves; best epoch {t['best_epoch']}", "harden-curves")}
    losses = [r["loss"] for r in hist]
    if any(v is not None for v in losses):
        top = max(v for v in losses if v is not None)
        out["loss"] = line_svg(epochs, {"training loss": losses}, "epoch", "loss", "Training loss per epoch",
                               "harden-loss", ylim=(0.0, top * 1.05 if top > 0 else 1.0))
    by_norm: dict[str, list[dict[str, Any]]] = {}
    for r in t["tradeoff"]:
        by_norm.setdefault(r["norm"], []).append(r)
    for norm, rows in by_norm.items():
        rows = [r for r in rows if r.get("eps_value") is not None]
        if not rows:
            continue
        rows.sort(key=lambda r: r["eps_value"])
        xs = [0.0] + [r["eps_value"] for r in rows]
        out[f"tradeoff_{norm}"] = line_svg(
            xs, {"before": [rows[0]["clean_before"]] + [r["before"] for r in rows],
                 "after": [rows[0]["clean_after"]] + [r["after"] for r in rows]},
            f"eps ({norm})", "accuracy", f"Robust accuracy before and after ({norm}); eps 0 = clean",
            f"harden-tradeoff-{norm}")
    return out
