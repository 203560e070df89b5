"""Figures of the calibration section: reliability diagrams with per-bin counts, and the reliability
curve before and after temperature scaling. Read from report.json only."""

from __future__ import annotations

from typing import Any

from audit.report.plots import GREY, PALETTE, RED, _left_margin
from audit.report.svg import LABEL_SIZE, TICK_SIZE, Chart, nice_ticks, tick_labels

_MIN_W = 0.012  # narrowest bar drawn (an equal-mass bin can be a sliver): still visible


def reliability_svg(b: dict[str, Any], title: str, name: str) -> str:
    """Accuracy per bin (bars over the bin's confidence range), the gap to the bin's mean confidence (red),
    the diagonal of perfect calibration, and below it the number of examples in each bin."""
    chart = Chart(name, 460, 440, title)
    chart.title_text(title)
    yt = nice_ticks(0, 1.02)
    left = _left_margin(tick_labels(yt), "accuracy")
    right = chart.width - 14
    top, main_h, gap = 28, 262, 8
    ax = chart.axes(left, top, right - left, main_h, (0.0, 1.0), (0.0, 1.02))
    counts = [c for c in b["count"] if c]
    cmax = max(counts or [1]) * 1.3
    axc = chart.axes(left, top + main_h + gap, right - left, 440 - top - main_h - gap - 50, (0.0, 1.0), (0.0, cmax))
    ax.line([0, 1], [0, 1], GREY, 0.8, dash="4 2")
    for lo, hi, cnt, conf, acc in zip(b["lower"], b["upper"], b["count"], b["mean_confidence"], b["accuracy"]):
        if not cnt or acc is None or conf is None:
            continue
        w = max((hi - lo) if hi is not None and lo is not None else 0.0, _MIN_W)
        x = lo if hi - lo >= _MIN_W else conf - _MIN_W / 2
        ax.rect(x, 0, x + w, acc, PALETTE[0], 0.8, stroke="#fff")
        ax.rect(x, acc, x + w, conf, RED, 0.25, stroke=RED)
        ax.markers([conf], [acc], "#222", 2.2)
        axc.rect(x, 0, x + w, cnt, "#8c959f", stroke="#fff")
        axc.text(x + w / 2, cnt, cnt, size=7.5, anchor="middle", colour="#333", baseline="text-after-edge")
    ax.frame(None, yt, "", "accuracy")
    ct = [t for t in nice_ticks(0, cmax, 3) if t <= cmax]
    axc.frame(nice_ticks(0, 1), ct, "confidence (predicted class probability)", "count")
    ax.legend([("dashed", GREY, "perfect calibration"), ("rect", PALETTE[0], "accuracy"),
               ("gap", RED, "gap to confidence")], "upper left", size=9)
    return chart.to_html()


def temperature_svg(before: dict[str, Any], after: dict[str, Any], t: float, name: str) -> str:
    """Accuracy against mean confidence per bin, before and after temperature scaling (ECE in the legend)."""
    title = "Temperature scaling on the evaluation split (diagnostic)"
    chart = Chart(name, 460, 360, title)
    chart.title_text(title)
    yt = nice_ticks(0, 1.02)
    left = _left_margin(tick_labels(yt), "accuracy in bin")
    top, bottom = 28, 16 + TICK_SIZE + LABEL_SIZE + 8
    ax = chart.axes(left, top, chart.width - left - 14, chart.height - top - bottom, (0.0, 1.0), (0.0, 1.02))
    ax.line([0, 1], [0, 1], GREY, 0.8, dash="4 2")
    entries = [("dashed", GREY, "perfect calibration")]
    for i, (label, b) in enumerate((("before (T = 1)", before), (f"after (T = {t:.3g})", after))):
        pts = [(c, a, n) for c, a, n in zip(b["mean_confidence"], b["accuracy"], b["count"]) if n and c is not None]
        if not pts:
            continue
        colour = PALETTE[i * 2]
        ax.line([p[0] for p in pts], [p[1] for p in pts], colour, 1.2)
        ax.markers([p[0] for p in pts], [p[1] for p in pts], colour, 2.8)
        entries.append(("line+marker", colour, f"{label}, ECE {b['ece']:.3f}"))
    ax.frame(nice_ticks(0, 1), yt, "mean confidence in bin", "accuracy in bin")
    ax.legend(entries, "upper left", size=9.5)
    return chart.to_html()


def figures(report: dict[str, Any]) -> dict[str, str]:
    s = report["suites"]["calibration"]
    out: dict[str, str] = {}
    for binning, b in s["curves"].get("reliability", {}).items():
        words = "equal-width" if binning == "equal_width" else "equal-mass"
        out[f"reliability-{binning}"] = reliability_svg(
            b, f"Reliability, {words} bins (top-label ECE {b['ece']:.3f}, n = {b['n']})", f"cal-rel-{binning}")
    t = s["curves"].get("temperature")
    if t:
        out["temperature"] = temperature_svg(t["before"], t["after"], s["tables"]["temperature"]["temperature"],
                                             "cal-temperature")
    return out
