"""Figures of the fairness section: per attribute, group rates with intervals and disparity bars with
intervals (ratios next to the four-fifths line). Read from report.json only."""

from __future__ import annotations

from typing import Any

from audit.report.plots import interval_bars_svg

RATES = (("selection_rate", "selection rate"), ("tpr", "TPR"), ("fpr", "FPR"), ("precision", "precision"))
DIFFS = ("demographic_parity_difference", "equalized_odds_difference", "equal_opportunity_difference",
         "predictive_parity_difference")
RATIOS = ("demographic_parity_ratio", "equalized_odds_ratio", "disparate_impact_ratio")


def _label(name: str) -> str:
    return name.replace("_", " ").replace("difference", "diff.").replace("demographic", "dem.")


def figures(report: dict[str, Any]) -> dict[str, str]:
    s = report["suites"]["fairness"]
    out: dict[str, str] = {}
    for i, a in enumerate(s["tables"].get("attributes", [])):
        attr = a["attribute"]
        groups = [f"{g['group']} (n={g['n']})" for g in a["groups"]]
        muted = [g["small"] or g["n"] == 0 for g in a["groups"]]
        series = {}
        for key, label in RATES:
            series[label] = ([g[key]["value"] for g in a["groups"]], [g[key]["ci_low"] for g in a["groups"]],
                             [g[key]["ci_high"] for g in a["groups"]])
        out[f"rates-{i}"] = interval_bars_svg(groups, series, f"Group rates by {attr} (pale, hatched: below min. size)",
                                              f"fair-rates-{i}", xlabel="rate (95% interval)",
                                              muted=muted, width=4.8)
        d = {x["name"]: x for x in a["disparities"]}
        diffs = [n for n in DIFFS if n in d]
        out[f"diffs-{i}"] = interval_bars_svg(
            [_label(n) for n in diffs],
            {"difference": ([d[n]["value"] for n in diffs], [d[n]["ci_low"] for n in diffs],
                            [d[n]["ci_high"] for n in diffs])},
            f"Differences by {attr} (0 = parity; pale, hatched: inconclusive)", f"fair-diffs-{i}",
            xlabel="largest minus smallest group", muted=[bool(d[n]["inconclusive"]) for n in diffs], width=4.4)
        ratios = [n for n in RATIOS if n in d]
        thr = a["four_fifths"]["threshold"]
        out[f"ratios-{i}"] = interval_bars_svg(
            [_label(n) for n in ratios],
            {"ratio": ([d[n]["value"] for n in ratios], [d[n]["ci_low"] for n in ratios],
                       [d[n]["ci_high"] for n in ratios])},
            f"Ratios by {attr} (1 = parity; pale, hatched: inconclusive)", f"fair-ratios-{i}",
            xlabel="smallest over largest (DI: over the highest selection rate)", vlines=[(thr, f"{thr:g}")],
            muted=[bool(d[n]["inconclusive"]) for n in ratios], width=4.4)
    return out
