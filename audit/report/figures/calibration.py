"""Figures of the calibration section: reliability diagrams with per-bin counts, and the reliability
curve before and after temperature scaling. Read from report.json only."""

from __future__ import annotations

from typing import Any

from audit.report.plots import PALETTE, _mpl, to_svg


def reliability_svg(b: dict[str, Any], title: str, name: str) -> str:
    """Accuracy per bin (bars over the bin's confidence range), the gap to the bin's mean confidence (red),
    the diagonal of perfect calibration, and below it the number of examples in each bin."""
    _, plt = _mpl()
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(4.6, 4.4), dpi=100, sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08})
    for a in (ax, axc):
        a.spines[["top", "right"]].set_visible(False)
        a.tick_params(labelsize=8)
    ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--", label="perfect calibration")
    first = True
    for lo, hi, cnt, conf, acc in zip(b["lower"], b["upper"], b["count"], b["mean_confidence"], b["accuracy"]):
        if not cnt or acc is None or conf is None:
            continue
        w = max((hi - lo) if hi is not None and lo is not None else 0.0, 0.012)
        x = lo if hi - lo >= 0.012 else conf - 0.006
        ax.bar(x, acc, width=w, align="edge", color=PALETTE[0], alpha=0.8, edgecolor="white", lw=0.5,
               label="accuracy" if first else None)
        ax.bar(x, conf - acc, bottom=acc, width=w, align="edge", color="#cf222e", alpha=0.25, edgecolor="#cf222e",
               lw=0.5, label="gap to confidence" if first else None)
        ax.plot([conf], [acc], marker="o", ms=2.5, color="#222")
        axc.bar(x, cnt, width=w, align="edge", color="#8c959f", edgecolor="white", lw=0.5)
        axc.text(x + w / 2, cnt, str(cnt), ha="center", va="bottom", fontsize=5.5, color="#333")
        first = False
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy", fontsize=9)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6.5, frameon=False, loc="upper left")
    axc.set_ylabel("count", fontsize=8)
    axc.set_xlabel("confidence (predicted class probability)", fontsize=9)
    top = max([c for c in b["count"] if c] or [1])
    axc.set_ylim(0, top * 1.3)
    return to_svg(fig, name)


def temperature_svg(before: dict[str, Any], after: dict[str, Any], t: float, name: str) -> str:
    _, plt = _mpl()
    fig, ax = plt.subplots(figsize=(4.6, 3.6), dpi=100)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--", label="perfect calibration")
    for i, (label, b) in enumerate((("before (T = 1)", before), (f"after (T = {t:.3g})", after))):
        pts = [(c, a, n) for c, a, n in zip(b["mean_confidence"], b["accuracy"], b["count"]) if n and c is not None]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=PALETTE[i * 2], lw=1.2, marker="o",
                ms=3, label=f"{label}, ECE {b['ece']:.3f}")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean confidence in bin", fontsize=9)
    ax.set_ylabel("accuracy in bin", fontsize=9)
    ax.set_title("Temperature scaling on the evaluation split (diagnostic)", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    return to_svg(fig, name)


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
