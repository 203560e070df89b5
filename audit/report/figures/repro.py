"""Figures of the repro section: the spread of each seed-dependent metric across seeds."""

from __future__ import annotations

from typing import Any

from audit.report.plots import PALETTE, _fig, to_svg

MAX_METRICS = 12


def figures(report: dict[str, Any]) -> dict[str, str]:
    seeds = report["suites"]["repro"]["tables"].get("seeds") or {}
    rows = {r["key"]: r for r in seeds.get("metrics", [])}
    varying = [rows[k] for k in seeds.get("varying", [])[:MAX_METRICS] if k in rows]
    if not varying:
        return {}
    return {"spread": spread_svg(varying, seeds["seeds"])}


def spread_svg(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    """One line per metric: each seed's value relative to the mean over seeds, in percent (a dot; metrics of
    different scales share the axis), the worst seed in red, and the t-interval of the mean as a grey bar."""
    rows = [r for r in rows if r["mean"]]  # relative to a zero mean is undefined
    fig, ax = _fig(6.4, 0.9 + 0.34 * max(1, len(rows)))
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        mean = r["mean"]

        def rel(v: float, mean: float = mean) -> float:
            return 100.0 * (v - mean) / abs(mean)

        if r["ci_low"] is not None:
            ax.plot([rel(r["ci_low"]), rel(r["ci_high"])], [y, y], color="#999", lw=3, alpha=0.5,
                    solid_capstyle="butt")
        for s, v in zip(seeds, r["values"]):
            if v is None:
                continue
            worst = s == r["worst_seed"]
            ax.plot([rel(v)], [y], "o", ms=4.5 if worst else 3.5, color="#d62728" if worst else PALETTE[0],
                    alpha=0.9)
    ax.axvline(0, color="#555", lw=0.8)
    ax.set_yticks(range(len(rows)), [r["key"] for r in rows][::-1], fontsize=7)
    ax.set_xlabel("% from the mean over seeds (red: worst seed; grey: interval of the mean)", fontsize=8)
    ax.set_title(f"Metrics that vary across {len(seeds)} seeds", fontsize=9)
    return to_svg(fig, "repro-spread")
