"""Inline SVG plots for the HTML report, drawn with matplotlib from report.json data only.

SVGs are made deterministic (fixed hash salt per figure, no date metadata) and small (text stays text).
"""

from __future__ import annotations

import io
import re
from typing import Any, Sequence

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    # Labels are user text (class names, group values, file names): a "$" must print as a dollar sign, not
    # start mathtext (whose parser raises on unbalanced or invalid math, and so would lose the whole report).
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return matplotlib, plt


def to_svg(fig: Any, name: str) -> str:
    matplotlib, plt = _mpl()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"audit-{name}"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG in HTML needs neither
    # ids are per document in HTML: make each figure's ids unique
    svg = re.sub(r'id="([^"]+)"', lambda m: f'id="{name}-{m.group(1)}"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{name}-{m.group(1)})", svg)
    svg = re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#{name}-{m.group(1)}"', svg)
    svg = re.sub(r'width="[\d.]+pt" height="[\d.]+pt"', 'style="max-width:100%;height:auto"', svg, count=1)
    return f'<figure class="plot" aria-label="{name}">{svg}</figure>'


def _fig(w: float = 4.6, h: float = 3.6):
    _, plt = _mpl()
    fig, ax = plt.subplots(figsize=(w, h), dpi=100)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    return fig, ax


def confusion_matrix_svg(labels: Sequence[str], counts: Sequence[Sequence[int]], name: str = "confusion") -> str:
    import numpy as np

    cm = np.asarray(counts, dtype=float)
    k = len(labels)
    size = min(7.0, 2.2 + 0.42 * k)
    fig, ax = _fig(size, size * 0.9)
    row = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, row, out=np.zeros_like(cm), where=row > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    for i in range(k):
        for j in range(k):
            if cm[i, j] or i == j:
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7 if k > 8 else 9,
                        color="white" if frac[i, j] > 0.6 else "#222")
    ax.set_xticks(range(k), labels, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true", fontsize=9)
    ax.set_title("Confusion matrix (colour: row-normalised recall)", fontsize=9)
    ax.spines[["left", "bottom"]].set_visible(False)
    return to_svg(fig, name)


def curves_svg(series: list[dict[str, Any]], x: str, y: str, xlabel: str, ylabel: str, title: str, name: str,
               diagonal: bool = False, baseline_key: str | None = None, value_key: str | None = None,
               value_label: str = "") -> str:
    fig, ax = _fig()
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        label = str(s.get("class", s.get("label", i)))
        if value_key and s.get(value_key) is not None:
            label += f" ({value_label}{s[value_key]:.3f})"
        ax.plot(s[x], s[y], color=colour, lw=1.3, label=label, drawstyle="steps-post" if not diagonal else "default")
        if baseline_key and s.get(baseline_key) is not None and len(series) <= 2:
            ax.axhline(s[baseline_key], color=colour, lw=0.8, ls=":", alpha=0.8)
    if diagonal:
        ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--", label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.02)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6.5, frameon=False, loc="lower right" if diagonal else "lower left", ncol=1 if len(series) < 6 else 2)
    return to_svg(fig, name)


def line_svg(xs: Sequence[float], ys_by_label: dict[str, Sequence[float | None]], xlabel: str, ylabel: str, title: str,
             name: str, bands: dict[str, tuple[Sequence[float | None], Sequence[float | None]]] | None = None,
             ylim: tuple[float, float] | None = (0.0, 1.02)) -> str:
    """Generic line plot (e.g. accuracy vs epsilon), with optional interval bands."""
    fig, ax = _fig()
    for i, (label, ys) in enumerate(ys_by_label.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(a, b) for a, b in zip(xs, ys) if b is not None]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.3, color=colour, label=label)
        if bands and label in bands:
            lo, hi = bands[label]
            tri = [(a, low, high) for a, low, high in zip(xs, lo, hi) if low is not None and high is not None]
            if tri:
                ax.fill_between([t[0] for t in tri], [t[1] for t in tri], [t[2] for t in tri], color=colour, alpha=0.15, lw=0)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return to_svg(fig, name)


def interval_bars_svg(categories: Sequence[str], series: dict[str, tuple[Sequence[float | None], Sequence[float | None],
                                                                        Sequence[float | None]]],
                      title: str, name: str, xlabel: str = "", xlim: tuple[float, float] | None = (0.0, 1.0),
                      vlines: Sequence[tuple[float, str]] = (), muted: Sequence[bool] | None = None,
                      width: float = 4.6) -> str:
    """Horizontal grouped bars with interval whiskers: one row per category (top to bottom), one bar per
    series ({label: (values, lows, highs)}; None = not shown). ``muted[i]`` draws category i hatched and
    pale (e.g. a group below the minimum size), ``vlines`` adds reference lines (x, label)."""
    import numpy as np

    cats = list(categories)
    k = max(1, len(series))
    h = min(9.0, 1.0 + 0.28 * len(cats) * k + 0.15 * len(cats))
    fig, ax = _fig(width, h)
    step = 0.8 / k
    ys = np.arange(len(cats))[::-1].astype(float)
    for j, (label, (vals, lows, highs)) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        off = (j - (k - 1) / 2) * step
        for i, v in enumerate(vals):
            if v is None:
                ax.text(0.002 if not xlim else xlim[0] + 0.01 * (xlim[1] - xlim[0]), ys[i] - off, "undefined",
                        fontsize=6.5, va="center", color="#777")
                continue
            pale = bool(muted is not None and muted[i])
            ax.barh(ys[i] - off, v, height=step * 0.9, color=colour, alpha=0.35 if pale else 0.85,
                    hatch="///" if pale else None, edgecolor=colour if pale else "none", lw=0.5,
                    label=label if i == 0 else None)
            lo, hi = lows[i], highs[i]
            if lo is not None and hi is not None:
                ax.errorbar(v, ys[i] - off, xerr=[[max(v - lo, 0)], [max(hi - v, 0)]], fmt="none", ecolor="#222",
                            elinewidth=0.9, capsize=2.2)
    for x, lab in vlines:
        ax.axvline(x, color="#cf222e", lw=0.9, ls="--")
        ax.text(x, ys[0] + 0.55, f" {lab}", color="#cf222e", fontsize=7, va="bottom", ha="left")
    ax.set_yticks(ys, cats)
    ax.tick_params(axis="y", labelsize=8)
    if xlim:
        ax.set_xlim(*xlim)
    ax.set_ylim(-0.6, len(cats) - 0.4 + (0.35 if vlines else 0))
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16 if xlabel else -0.08),
                  ncol=min(4, len(series)))
    ax.grid(axis="x", color="#eee", lw=0.6)
    ax.set_axisbelow(True)
    return to_svg(fig, name)
