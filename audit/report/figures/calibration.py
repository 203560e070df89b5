"""Figures of the calibration section: reliability diagrams with per-bin counts, and the reliability
curve before and after temperature scaling. Read from report.json only."""

from __future__ import annotations

from typing import Any

from audit.report.plots import GREY, PALETTE, RED, _left_margin
from audit.report.svg import LABEL_SIZE, TICK_SIZE, Chart, nice_ticks, text_width, tick_labels

_MIN_W = 0.012  # narrowest bar drawn (an equal-mass bin can be a sliver): still visible
MIN_COUNT = 10  # a bin with fewer examples is drawn faintly: its accuracy is one or two examples' outcome
UNDER = "#7b5aa6"  # the gap where accuracy exceeds confidence (inside the bar): its own colour, in the legend
FAINT = 0.3


def display_bins(b: dict[str, Any]) -> list[dict[str, Any]]:
    """The bins as drawn: non-empty bins, with neighbours merged while together they span less than the
    narrowest drawable bar (a confident model's equal-mass bins pile up near confidence 1, many with the same
    range; drawn one by one they overlap into a sliver). A merged bin's accuracy and mean confidence are its
    bins' count-weighted means, which is exactly the accuracy and mean confidence of their pooled examples
    (each bin's accuracy is correct/count), so the drawing re-groups the report's numbers, it computes no new
    statistic."""
    out: list[dict[str, Any]] = []
    for lo, hi, cnt, conf, acc in zip(b["lower"], b["upper"], b["count"], b["mean_confidence"], b["accuracy"]):
        if not cnt or acc is None or conf is None:
            continue
        lo = conf if lo is None else lo
        hi = conf if hi is None else hi
        last = out[-1] if out else None
        if last is not None and hi - last["lower"] < _MIN_W and lo - last["upper"] < _MIN_W:
            n = last["count"] + cnt
            last.update(upper=max(hi, last["upper"]), count=n, bins=last["bins"] + 1,
                        accuracy=(last["accuracy"] * last["count"] + acc * cnt) / n,
                        mean_confidence=(last["mean_confidence"] * last["count"] + conf * cnt) / n)
        else:
            out.append({"lower": lo, "upper": hi, "count": cnt, "accuracy": acc, "mean_confidence": conf, "bins": 1})
    return out


def reliability_svg(b: dict[str, Any], title: str, name: str) -> str:
    """Accuracy per bin (blue bars over the bin's confidence range), the gap to the bin's mean confidence
    (pale red above the bar where confidence exceeds accuracy: over-confident; purple inside it where accuracy
    exceeds confidence: under-confident), the diagonal of perfect calibration, the mean confidence (dot), and
    below the number of examples in each bin. Bins with fewer than MIN_COUNT examples are faint; bins too
    narrow to draw apart are merged (:func:`display_bins`), their count labelled with the number of bins."""
    chart = Chart(name, 460, 460, title)
    chart.title_text(title)
    yt = nice_ticks(0, 1.02)
    left = _left_margin(tick_labels(yt), "accuracy")
    right = chart.width - 14
    top, main_h, gap = 28, 262, 8
    ax = chart.axes(left, top, right - left, main_h, (0.0, 1.0), (0.0, 1.02))
    bins = display_bins(b)
    cmax = max([d["count"] for d in bins] or [1]) * 1.3
    axc = chart.axes(left, top + main_h + gap, right - left, 440 - top - main_h - gap - 50, (0.0, 1.0), (0.0, cmax))
    ax.line([0, 1], [0, 1], GREY, 0.8, dash="4 2")
    faint = merged = under = over = unlabelled = False
    for d in bins:
        lo, hi, cnt, conf, acc = d["lower"], d["upper"], d["count"], d["mean_confidence"], d["accuracy"]
        w = max(hi - lo, _MIN_W)
        x = lo if hi - lo >= _MIN_W else min(max(conf - _MIN_W / 2, 0.0), 1.0 - _MIN_W)
        op = FAINT if cnt < MIN_COUNT else 1.0
        faint |= cnt < MIN_COUNT
        merged |= d["bins"] > 1
        ax.rect(x, 0, x + w, min(acc, conf), PALETTE[0], 0.85 * op, stroke="#fff")
        if acc > conf:  # under-confident: the part of the bar above the confidence
            ax.rect(x, conf, x + w, acc, UNDER, 0.85 * op, stroke="#fff")
            under = True
        elif conf > acc:  # over-confident: the missing part up to the confidence
            ax.rect(x, acc, x + w, conf, RED, 0.25 * op, stroke=RED, stroke_width=0.5)
            over = True
        ax.markers([conf], [acc if acc <= conf else conf], "#222", 2.2, opacity=op)
        axc.rect(x, 0, x + w, cnt, "#8c959f", op, stroke="#fff")
        label = f"{cnt}" + (f" ({d['bins']} bins)" if d["bins"] > 1 else "")
        # a count is written over its bar where it fits (equal-mass bins hold the same count, and narrow
        # ones would overprint each other); a label near an edge is anchored to stay inside the figure
        if axc.px(x + w) - axc.px(x) >= 1.6 * text_width(label, 7.5):
            cx = x + w / 2
            where = "end" if cx + 0.012 * len(label) > 1.0 else "start" if cx - 0.012 * len(label) < 0 else "middle"
            axc.text(x + w if where == "end" else x if where == "start" else cx, cnt, label, size=7.5, anchor=where,
                     colour="#333", baseline="text-after-edge")
        else:
            unlabelled = True
    ax.frame(None, yt, "", "accuracy")
    ct = [t for t in nice_ticks(0, cmax, 3) if t <= cmax]
    axc.frame(nice_ticks(0, 1), ct, "confidence (predicted class probability)", "count")
    entries = [("dashed", GREY, "perfect calibration"), ("rect", PALETTE[0], "accuracy"), ("marker", "#222", "mean confidence")]
    if over or not under:
        entries.append(("gap", RED, "confidence above accuracy"))
    if under:
        entries.append(("rect", UNDER, "accuracy above confidence"))
    ax.legend(entries, "upper left", size=9)
    notes = []
    if faint:
        notes.append(f"faint: fewer than {MIN_COUNT} examples")
    if merged:
        notes.append("bins too narrow to draw apart are merged")
    if unlabelled:
        notes.append("counts of narrow bars: report.json")
    if notes:
        chart.text(chart.width / 2, 452, "; ".join(notes), size=9.5, anchor="middle", colour="#57606a")
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
    few = False
    for i, (label, b) in enumerate((("before (T = 1)", before), (f"after (T = {t:.3g})", after))):
        pts = [(c, a, n) for c, a, n in zip(b["mean_confidence"], b["accuracy"], b["count"]) if n and c is not None]
        if not pts:
            continue
        colour = PALETTE[i * 2]
        # the line joins only bins with enough examples; a bin of one or two examples (accuracy 0 or 1) is a
        # faint dot off the line, so the curve does not zigzag through them
        solid = [p for p in pts if p[2] >= MIN_COUNT]
        thin = [p for p in pts if p[2] < MIN_COUNT]
        few |= bool(thin)
        if solid:
            ax.line([p[0] for p in solid], [p[1] for p in solid], colour, 1.2)
            ax.markers([p[0] for p in solid], [p[1] for p in solid], colour, 2.8)
        if thin:
            ax.markers([p[0] for p in thin], [p[1] for p in thin], colour, 2.4, opacity=0.45)
        entries.append(("line+marker", colour, f"{label}, ECE {b['ece']:.3f}"))
    if few:
        entries.append(("marker", "#bbb", f"faint: bins of < {MIN_COUNT} examples (not joined)"))
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
