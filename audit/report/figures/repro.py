"""Figures of the repro section: the spread of each seed-dependent metric across seeds."""

from __future__ import annotations

from typing import Any

from audit.report.plots import PALETTE, _left_margin
from audit.report.svg import LABEL_SIZE, TICK_SIZE, Chart, auto_limits, nice_ticks

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

    def rel(v: float, mean: float) -> float:
        return 100.0 * (v - mean) / abs(mean)

    every = [0.0]
    for r in rows:
        every += [rel(v, r["mean"]) for v in r["values"] if v is not None]
        if r["ci_low"] is not None:
            every += [rel(r["ci_low"], r["mean"]), rel(r["ci_high"], r["mean"])]
    xlim = auto_limits(every)
    keys = [str(r["key"]) for r in rows]
    title = f"Metrics that vary across {len(seeds)} seeds"
    xlabel = "% from the mean over seeds (red: worst seed; grey: interval of the mean)"
    left = _left_margin(keys, "", size=9.5)
    top, bottom = 28, 16 + TICK_SIZE + LABEL_SIZE + 4
    n = max(1, len(rows))
    chart = Chart("repro-spread", max(640.0, left + 460), top + 34 * n + bottom, title)
    chart.title_text(title)
    ax = chart.axes(left, top, chart.width - left - 14, 34 * n, xlim, (-0.6, n - 0.4))
    ax.vline(0, "#555", 0.8)
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        mean = r["mean"]
        if r["ci_low"] is not None:
            ax.line([rel(r["ci_low"], mean), rel(r["ci_high"], mean)], [y, y], "#999", 3, opacity=0.5, cap="butt")
        for s, v in zip(seeds, r["values"]):
            if v is None:
                continue
            worst = s == r["worst_seed"]
            ax.markers([rel(v, mean)], [y], "#d62728" if worst else PALETTE[0], 3.6 if worst else 3.0, opacity=0.9)
    ax.frame(nice_ticks(*xlim), list(range(len(rows)))[::-1], xlabel, ytick_labels=keys, ytick_size=9.5)
    return chart.to_html()
