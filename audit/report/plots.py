"""Inline SVG plots for the HTML report, drawn from report.json data only (see audit.report.svg for why they
are written by hand rather than with matplotlib).

Every function returns ``<figure class="plot" aria-label=NAME><svg ...></svg></figure>``; NAME is unique in
the report and prefixes every id inside the figure. The output depends on the arguments alone.
"""

from __future__ import annotations

from typing import Any, Sequence

from audit.report.svg import (LABEL_SIZE, TICK_SIZE, Axes, Chart, auto_limits, blues, nice_ticks, text_width,
                              tick_labels)

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
RED = "#cf222e"
GREY = "#999"


def _left_margin(ytick_labels: Sequence[str], ylabel: str, size: float = TICK_SIZE) -> float:
    widest = max((text_width(s, size) for s in ytick_labels), default=0.0)
    return 12 + widest + (LABEL_SIZE + 8 if ylabel else 0)


def _unit_axes(chart: Chart, xlabel: str, ylabel: str, xlim: tuple[float, float], ylim: tuple[float, float],
               bottom_extra: float = 0.0) -> tuple[Axes, list[float], list[float]]:
    """Axes filling ``chart`` under its title, with room for tick labels and axis labels."""
    xt = nice_ticks(*xlim)
    yt = nice_ticks(*ylim)
    left = _left_margin(tick_labels(yt), ylabel)
    top = 28 if chart.title else 10
    bottom = 16 + TICK_SIZE + (LABEL_SIZE + 8 if xlabel else 0) + bottom_extra
    ax = chart.axes(left, top, chart.width - left - 14, chart.height - top - bottom, xlim, ylim)
    return ax, xt, yt


def confusion_matrix_svg(labels: Sequence[str], counts: Sequence[Sequence[int]], name: str = "confusion") -> str:
    """Counts in every non-empty cell (and on the diagonal), coloured by the row-normalised fraction
    (recall of the true class): matplotlib's 'Blues' from 0 to 1."""
    k = len(labels)
    labels = [str(s) for s in labels]
    title = "Confusion matrix (colour: row-normalised recall)"
    left = _left_margin(labels, "true")
    widest = max((text_width(s, TICK_SIZE) for s in labels), default=0.0)
    cell = max(18.0, min(110.0, 360.0 / max(k, 1)))  # about the former figure's size, legible up to k = 20
    rotate = widest > 0.9 * cell  # names wider than a column are turned 45 degrees
    bottom = 16 + (widest * 0.71 + 6 if rotate else TICK_SIZE) + LABEL_SIZE + 8
    width = max(left + cell * k + 16, text_width(title, LABEL_SIZE) + 20)
    left += (width - (left + cell * k + 16)) / 2  # centred under a wider title
    chart = Chart(name, width, 30 + cell * k + bottom, title)
    chart.title_text(title)
    ax = chart.axes(left, 30, cell * k, cell * k, (-0.5, k - 0.5), (k - 0.5, -0.5))
    fsize = 12.0 if k <= 8 else max(6.0, min(9.5, 0.3 * cell))
    for i, row in enumerate(counts):
        total = sum(row)
        for j, c in enumerate(row):
            frac = c / total if total else 0.0
            ax.rect(j - 0.5, i - 0.5, j + 0.5, i + 0.5, blues(frac))
            if c or i == j:
                ax.text(j, i, int(c), size=fsize, anchor="middle", colour="#fff" if frac > 0.6 else "#222")
    ax.frame(list(range(k)), list(range(k)), "predicted", "true", xtick_labels=labels, ytick_labels=labels,
             rotate_x=rotate, spines=False)
    return chart.to_html()


def curves_svg(series: list[dict[str, Any]], x: str, y: str, xlabel: str, ylabel: str, title: str, name: str,
               diagonal: bool = False, baseline_key: str | None = None, value_key: str | None = None,
               value_label: str = "") -> str:
    """Step curves (ROC, PR) on the unit square, one colour per series, the value (AUC, AP) in the
    legend; ``diagonal`` adds the chance line, ``baseline_key`` a dotted line per series (for one or two)."""
    chart = Chart(name, 460, 360, title)
    chart.title_text(title)
    ax, xt, yt = _unit_axes(chart, xlabel, ylabel, (-0.01, 1.01), (-0.01, 1.02))
    entries = []
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        label = str(s.get("class", s.get("label", i)))
        if value_key and s.get(value_key) is not None:
            label += f" ({value_label}{s[value_key]:.3f})"
        ax.line(s[x], s[y], colour, 1.3, step=not diagonal)
        entries.append(("line", colour, label))
        if baseline_key and s.get(baseline_key) is not None and len(series) <= 2:
            ax.hline(s[baseline_key], colour, 0.8, dash="1.2 1.8", opacity=0.8)
    if diagonal:
        ax.line([0, 1], [0, 1], GREY, 0.8, dash="4 2")
        entries.append(("dashed", GREY, "chance"))
    ax.frame(xt, yt, xlabel, ylabel)
    ax.legend(entries, "lower right" if diagonal else "lower left", ncol=1 if len(series) < 6 else 2, size=9)
    return chart.to_html()


def line_svg(xs: Sequence[float], ys_by_label: dict[str, Sequence[float | None]], xlabel: str, ylabel: str, title: str,
             name: str, bands: dict[str, tuple[Sequence[float | None], Sequence[float | None]]] | None = None,
             ylim: tuple[float, float] | None = (0.0, 1.02), styles: dict[str, dict[str, Any]] | None = None) -> str:
    """Generic line plot with markers (e.g. accuracy vs epsilon), with optional interval bands; points
    whose value is None are skipped. ``styles[label]`` may set ``dash`` (an SVG dash array), ``width``,
    ``opacity`` and ``marker`` (False: none), and ``under`` (True: drawn first, beneath the others, so that a
    series equal to another, e.g. the worst case equal to PGD, shows as a wide pale line under it rather than
    hiding it). The legend keeps the given order."""
    chart = Chart(name, 460, 360, title)
    chart.title_text(title)
    if ylim is None:
        every = [v for ys in ys_by_label.values() for v in ys]
        for lo, hi in (bands or {}).values():
            every += list(lo) + list(hi)
        ylim = auto_limits(every)
    ax, xt, yt = _unit_axes(chart, xlabel, ylabel, auto_limits(xs), ylim)
    entries = []
    styles = styles or {}
    labels = list(ys_by_label)
    order = sorted(range(len(labels)), key=lambda i: not styles.get(labels[i], {}).get("under", False))
    for i in order:
        label, ys = labels[i], ys_by_label[labels[i]]
        colour = PALETTE[i % len(PALETTE)]
        pts = [(a, b) for a, b in zip(xs, ys) if b is not None]
        if not pts:
            continue
        st = styles.get(label, {})
        if bands and label in bands:
            lo, hi = bands[label]
            tri = [(a, low, high) for a, low, high in zip(xs, lo, hi) if low is not None and high is not None]
            if tri:
                ax.band([t[0] for t in tri], [t[1] for t in tri], [t[2] for t in tri], colour, 0.15)
        ax.line([p[0] for p in pts], [p[1] for p in pts], colour, st.get("width", 1.3), dash=st.get("dash"),
                opacity=st.get("opacity"), cap="round" if st.get("under") else None)
        if st.get("marker", True):
            ax.markers([p[0] for p in pts], [p[1] for p in pts], colour, st.get("r", 2.8))
    for i, label in enumerate(labels):
        if any(v is not None for v in ys_by_label[label]):
            st = styles.get(label, {})
            kind = "thick" if st.get("under") else ("dashed+marker" if st.get("dash") else "line+marker")
            entries.append((kind, PALETTE[i % len(PALETTE)], label))
    ax.frame(xt, yt, xlabel, ylabel)
    ax.legend(entries, "best")
    return chart.to_html()


def interval_bars_svg(categories: Sequence[str], series: dict[str, tuple[Sequence[float | None], Sequence[float | None],
                                                                        Sequence[float | None]]],
                      title: str, name: str, xlabel: str = "", xlim: tuple[float, float] | None = (0.0, 1.0),
                      vlines: Sequence[tuple[float, str]] = (), muted: Sequence[bool] | None = None,
                      width: float = 4.6) -> str:
    """Horizontal grouped bars with interval whiskers: one row per category (top to bottom), one bar per
    series ({label: (values, lows, highs)}; None = "undefined" written in the row). ``muted[i]`` draws
    category i hatched and pale (e.g. a group below the minimum size), ``vlines`` adds dashed reference
    lines (x, label). ``width`` is in inches of the former matplotlib figure (100 units each)."""
    cats = [str(c) for c in categories]
    n, k = len(cats), max(1, len(series))
    legend = len(series) > 1
    rows_h = max(30.0 * n, 100 * min(9.0, 1.0 + 0.28 * n * k + 0.15 * n) - 110)
    left = _left_margin(cats, "")
    top = 28 + (14 if vlines else 0)
    bottom = 16 + TICK_SIZE + (LABEL_SIZE + 8 if xlabel else 0) + (18 if legend else 0)
    chart = Chart(name, max(100 * width, left + 200), top + rows_h + bottom, title)
    chart.title_text(title)
    if xlim is None:
        every = [0.0] + [v for vals in series.values() for part in vals for v in part]
        xlim = auto_limits(every)
    ax = chart.axes(left, top, chart.width - left - 16, rows_h, xlim, (-0.6, n - 0.4))
    xt = [t for t in nice_ticks(*xlim) if xlim[0] - 1e-9 <= t <= xlim[1] + 1e-9]
    ax.frame(xt, None, xlabel, grid_x=True, spines=False)
    step = 0.8 / k
    entries = []
    for j, (label, (vals, lows, highs)) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        off = (j - (k - 1) / 2) * step
        entries.append(("rect", colour, label))
        for i, v in enumerate(vals):
            y = (n - 1 - i) - off
            if v is None:
                ax.text(xlim[0] + 0.01 * (xlim[1] - xlim[0]), y, "undefined", size=9, colour="#777")
                continue
            pale = bool(muted is not None and muted[i])
            ax.rect(0.0, y - step * 0.45, v, y + step * 0.45, colour, 0.35 if pale else 0.85, stroke=colour if pale else None, hatch=pale)
            lo, hi = lows[i], highs[i]
            if lo is not None and hi is not None:
                ax.whisker(y, min(lo, v), max(hi, v))
    for x, lab in vlines:
        xx = ax.px(x)
        chart.add(f'<line x1="{xx:.2f}" y1="{top - 12:.2f}" x2="{xx:.2f}" y2="{ax.bottom:.2f}" stroke="{RED}" '
                  'stroke-width="0.9" stroke-dasharray="4 2"/>')
        chart.text(xx + 3, top - 8, lab, size=9.5, colour=RED)
    # category labels and the left axis line
    for i, c in enumerate(cats):
        chart.text(left - 6, ax.py(n - 1 - i), c, size=TICK_SIZE, anchor="end")
    chart.add(f'<path d="M{left:.2f},{top:.2f}V{ax.bottom:.2f}H{ax.right:.2f}" stroke="#555" stroke-width="0.8" '
              'fill="none"/>')
    if legend:
        ax.legend(entries, "below", ncol=min(4, len(series)),
                  below=16 + TICK_SIZE + (LABEL_SIZE + 8 if xlabel else 0))
    return chart.to_html()
