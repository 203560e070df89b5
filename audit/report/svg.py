"""A small inline-SVG chart writer for the HTML report: axes, ticks, lines, bars, bands, whiskers, legends.

Why not matplotlib: the report's charts are a few dozen lines and rectangles, and matplotlib cost more than
the computation they show (0.8 CPU s to import pyplot, then 0.1-0.4 s per figure to lay out and serialise;
a fairness section with three attributes took 2.8 s). Writing the SVG elements from the numbers costs
milliseconds, needs no font files, and the output is deterministic by construction (no hash salts, no
dates), small (text stays text) and offline.

Coordinates are SVG user units (about one CSS pixel at the figure's natural width); the page scales every
figure to its grid cell (``figure.plot svg { width: 100% }``). Text widths are estimated from the number of
characters (the page's sans-serif face; no font metrics), with a margin, for the layout only.
"""

from __future__ import annotations

import math
from html import escape
from typing import Iterable, Sequence

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
TEXT = "#222"
AXIS = "#555"

# The sizes matplotlib drew at (8 pt tick labels, 9 pt axis labels and titles at 100 dpi), in user units.
PT = 100 / 72  # one typographic point at the former figures' 100 dpi: line widths are given in points
TICK_SIZE = 11.0
LABEL_SIZE = 12.5
TITLE_SIZE = 12.5
LEGEND_SIZE = 10.5


def num(v: float) -> str:
    """A coordinate with at most two decimals (a hundredth of a pixel is below what any screen shows)."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def text_width(s: str, size: float) -> float:
    """Estimated advance of ``s`` at font size ``size``: 0.6 em per character covers digits and most
    lower-case text of a sans-serif face (wide capitals are rarer than narrow letters)."""
    return 0.6 * size * len(s)


def esc(s: object) -> str:
    return escape(str(s), quote=True)


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick positions covering [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten, about
    ``target`` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, target)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    out = []
    k = first
    while k * step <= hi + step * 1e-9:
        out.append(round(k * step, 12))
        k += 1
    return out


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """The fewest decimals that tell every tick apart exactly (0, 0.2, 0.4 ... or 0.25, 0.5 ...)."""
    for d in range(0, 7):
        if all(abs(round(t, d) - t) < 1e-9 * max(1.0, abs(t)) for t in ticks):
            break
    out = []
    for t in ticks:
        s = f"{t:.{d}f}"
        out.append("0" if float(s) == 0 else s.replace("-", "\u2212"))
    return out


def auto_limits(values: Iterable[float | None], margin: float = 0.05) -> tuple[float, float]:
    """Data range padded by ``margin`` of its width on each side (matplotlib's default view); a single
    value gets a unit-wide window."""
    vs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vs:
        return 0.0, 1.0
    lo, hi = min(vs), max(vs)
    if hi == lo:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * margin
    return lo - pad, hi + pad


class Chart:
    """One SVG figure: a width × height canvas holding axes, text and definitions (clip paths, hatches),
    serialised by ``to_html`` as ``<figure class="plot" aria-label=NAME><svg ...>``. Ids are prefixed with
    the figure's name, which is unique in the report, so figures never share an id."""

    def __init__(self, name: str, width: float, height: float, title: str = "") -> None:
        self.name, self.width, self.height, self.title = name, width, height, title
        self.parts: list[str] = []
        self.defs: list[str] = []
        self._hatches: dict[str, str] = {}

    def add(self, element: str) -> None:
        self.parts.append(element)

    def text(self, x: float, y: float, s: object, size: float = TICK_SIZE, anchor: str = "start",
             colour: str = TEXT, rotate: float | None = None, weight: str | None = None,
             baseline: str = "central") -> None:
        attrs = f'x="{num(x)}" y="{num(y)}" font-size="{num(size)}"'
        if anchor != "start":
            attrs += f' text-anchor="{anchor}"'
        if baseline:
            attrs += f' dominant-baseline="{baseline}"'
        if colour != TEXT:
            attrs += f' fill="{colour}"'
        if weight:
            attrs += f' font-weight="{weight}"'
        if rotate is not None:
            attrs += f' transform="rotate({num(rotate)} {num(x)} {num(y)})"'
        self.add(f"<text {attrs}>{esc(s)}</text>")

    def title_text(self, s: str, x: float | None = None) -> None:
        """The title centred on top, shrunk to fit the figure's width if it is long (a long group name)."""
        size = min(TITLE_SIZE, (self.width - 8) / (0.6 * max(1, len(s))))
        self.text(self.width / 2 if x is None else x, 13, s, size=size, anchor="middle")

    def hatch(self, colour: str) -> str:
        """The id of a diagonal-hatch pattern in ``colour`` (one per colour per figure)."""
        if colour not in self._hatches:
            pid = f"{self.name}-hatch{len(self._hatches)}"
            self._hatches[colour] = pid
            self.defs.append(f'<pattern id="{pid}" patternUnits="userSpaceOnUse" width="5" height="5" '
                             f'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="5" stroke="{colour}" '
                             f'stroke-width="1.1"/></pattern>')
        return self._hatches[colour]

    def axes(self, left: float, top: float, width: float, height: float, xlim: tuple[float, float],
             ylim: tuple[float, float]) -> Axes:
        return Axes(self, left, top, width, height, xlim, ylim)

    def to_html(self) -> str:
        label = esc(self.title or self.name)
        defs = f"<defs>{''.join(self.defs)}</defs>" if self.defs else ""
        body = "\n".join(self.parts)
        return (f'<figure class="plot" aria-label="{esc(self.name)}">'
                f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {num(self.width)} {num(self.height)}" '
                f'style="max-width:100%;height:auto" role="img" font-family="{FONT}" fill="{TEXT}">'
                f"<title>{label}</title>{defs}\n{body}\n</svg></figure>")


class Axes:
    """A plot area of ``chart``: the pixel box (left, top, width, height) showing data limits xlim × ylim."""

    def __init__(self, chart: Chart, left: float, top: float, width: float, height: float,
                 xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
        self.chart = chart
        self.left, self.top, self.w, self.h = left, top, width, height
        self.xlim, self.ylim = (float(xlim[0]), float(xlim[1])), (float(ylim[0]), float(ylim[1]))
        self.clip_id = f"{chart.name}-clip{sum(1 for d in chart.defs if 'clipPath' in d)}"
        self._drawn: list[tuple[float, float]] = []  # pixel points of every mark, for legend placement "best"
        chart.defs.append(f'<clipPath id="{self.clip_id}"><rect x="{num(left)}" y="{num(top - 1)}" '
                          f'width="{num(width)}" height="{num(height + 2)}"/></clipPath>')

    # data -> user units
    def px(self, x: float) -> float:
        x0, x1 = self.xlim
        return self.left + (x - x0) / (x1 - x0) * self.w if x1 != x0 else self.left

    def py(self, y: float) -> float:
        y0, y1 = self.ylim
        return self.top + self.h - (y - y0) / (y1 - y0) * self.h if y1 != y0 else self.top + self.h

    @property
    def bottom(self) -> float:
        return self.top + self.h

    @property
    def right(self) -> float:
        return self.left + self.w

    # marks
    def _points(self, xs: Sequence[float], ys: Sequence[float], step: bool = False) -> str:
        pts = [(self.px(x), self.py(y)) for x, y in zip(xs, ys)]
        if step and len(pts) > 1:  # steps-post: hold each value until the next x
            stepped = [pts[0]]
            for (_, y0), (x1, y1) in zip(pts, pts[1:]):
                stepped += [(x1, y0), (x1, y1)]
            pts = stepped
        self._note(pts)
        return " ".join(f"{num(a)},{num(b)}" for a, b in pts)

    def _note(self, pts: Sequence[tuple[float, float]]) -> None:
        """Remember where marks are (each segment sampled at 8 points) so a legend can avoid them."""
        self._drawn += pts
        for (a, b), (c, d) in zip(pts, pts[1:]):
            self._drawn += [(a + (c - a) * t / 8, b + (d - b) * t / 8) for t in range(1, 8)]

    def line(self, xs: Sequence[float], ys: Sequence[float], colour: str, width: float = 1.3,
             dash: str | None = None, step: bool = False, opacity: float | None = None, clip: bool = True,
             cap: str | None = None) -> None:
        if not len(xs):
            return
        attrs = f'points="{self._points(xs, ys, step)}" fill="none" stroke="{colour}" stroke-width="{num(width * PT)}"'
        attrs += ' stroke-linejoin="round"'
        if dash:
            attrs += f' stroke-dasharray="{dash}"'
        if opacity is not None:
            attrs += f' stroke-opacity="{num(opacity)}"'
        if cap:
            attrs += f' stroke-linecap="{cap}"'
        if clip:
            attrs += f' clip-path="url(#{self.clip_id})"'
        self.chart.add(f"<polyline {attrs}/>")

    def markers(self, xs: Sequence[float], ys: Sequence[float], colour: str, r: float = 2.2,
                opacity: float | None = None) -> None:
        op = f' fill-opacity="{num(opacity)}"' if opacity is not None else ""
        self._drawn += [(self.px(x), self.py(y)) for x, y in zip(xs, ys)]
        for x, y in zip(xs, ys):
            self.chart.add(f'<circle cx="{num(self.px(x))}" cy="{num(self.py(y))}" r="{num(r)}" fill="{colour}"{op}/>')

    def band(self, xs: Sequence[float], lows: Sequence[float], highs: Sequence[float], colour: str,
             opacity: float = 0.15) -> None:
        """The area between two curves (an interval band)."""
        if not len(xs):
            return
        pts = [(self.px(x), self.py(v)) for x, v in zip(xs, highs)]
        pts += [(self.px(x), self.py(v)) for x, v in zip(reversed(list(xs)), reversed(list(lows)))]
        self._drawn += pts
        d = " ".join(f"{num(a)},{num(b)}" for a, b in pts)
        self.chart.add(f'<polygon points="{d}" fill="{colour}" fill-opacity="{num(opacity)}" stroke="none" '
                       f'clip-path="url(#{self.clip_id})"/>')

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: str, opacity: float | None = None,
             stroke: str | None = None, stroke_width: float = 0.5, hatch: bool = False, clip: bool = True) -> None:
        """A rectangle between data corners (x0, y0) and (x1, y1); ``hatch`` overlays diagonal lines in the
        stroke colour (a muted bar)."""
        a, b = sorted((self.px(x0), self.px(x1)))
        c, d = sorted((self.py(y0), self.py(y1)))
        geo = f'x="{num(a)}" y="{num(c)}" width="{num(b - a)}" height="{num(d - c)}"'
        op = f' fill-opacity="{num(opacity)}"' if opacity is not None else ""
        st = f' stroke="{stroke}" stroke-width="{num(stroke_width)}"' if stroke else ""
        if clip:
            geo += f' clip-path="url(#{self.clip_id})"'
        self.chart.add(f'<rect {geo} fill="{fill}"{op}{st if not hatch else ""}/>')
        if hatch:
            self.chart.add(f'<rect {geo} fill="url(#{self.chart.hatch(stroke or fill)})"{st}/>')

    def hline(self, y: float, colour: str, width: float = 0.8, dash: str | None = None,
              opacity: float | None = None) -> None:
        self.line([self.xlim[0], self.xlim[1]], [y, y], colour, width, dash, opacity=opacity)

    def vline(self, x: float, colour: str, width: float = 0.8, dash: str | None = None) -> None:
        self.line([x, x], [self.ylim[0], self.ylim[1]], colour, width, dash)

    def whisker(self, y: float, lo: float, hi: float, colour: str = TEXT, cap: float = 2.6,
                width: float = 0.9) -> None:
        """A horizontal interval lo..hi at height y with end caps of half-height ``cap`` units."""
        yy = self.py(y)
        a, b = self.px(lo), self.px(hi)
        self.chart.add(f'<path d="M{num(a)},{num(yy)}H{num(b)}M{num(a)},{num(yy - cap)}V{num(yy + cap)}'
                       f'M{num(b)},{num(yy - cap)}V{num(yy + cap)}" stroke="{colour}" stroke-width="{num(width * PT)}" '
                       f'fill="none" clip-path="url(#{self.clip_id})"/>')

    def text(self, x: float, y: float, s: object, **kw) -> None:
        self.chart.text(self.px(x), self.py(y), s, **kw)

    # furniture
    def frame(self, xticks: Sequence[float] | None = None, yticks: Sequence[float] | None = None,
              xlabel: str = "", ylabel: str = "", xtick_labels: Sequence[str] | None = None,
              ytick_labels: Sequence[str] | None = None, grid_x: bool = False, rotate_x: bool = False,
              spines: bool = True, tick_size: float = TICK_SIZE, ytick_size: float | None = None) -> None:
        """Left and bottom axis lines with outward ticks and their labels (top and right are left open, as
        the matplotlib figures had them), optional vertical grid lines, and the axis labels."""
        c = self.chart
        ysz = ytick_size or tick_size
        if xticks is not None:
            labels = list(xtick_labels) if xtick_labels is not None else tick_labels(xticks)
            for t, lab in zip(xticks, labels):
                x = self.px(t)
                if grid_x:
                    c.add(f'<line x1="{num(x)}" y1="{num(self.top)}" x2="{num(x)}" y2="{num(self.bottom)}" '
                          'stroke="#eee" stroke-width="0.6"/>')
                c.add(f'<line x1="{num(x)}" y1="{num(self.bottom)}" x2="{num(x)}" y2="{num(self.bottom + 3.5)}" '
                      f'stroke="{AXIS}" stroke-width="0.8"/>')
                if rotate_x:
                    c.text(x, self.bottom + 6, lab, size=tick_size, anchor="end", rotate=-45, baseline="hanging")
                else:
                    c.text(x, self.bottom + 6, lab, size=tick_size, anchor="middle", baseline="hanging")
        if yticks is not None:
            labels = list(ytick_labels) if ytick_labels is not None else tick_labels(yticks)
            for t, lab in zip(yticks, labels):
                y = self.py(t)
                c.add(f'<line x1="{num(self.left - 3.5)}" y1="{num(y)}" x2="{num(self.left)}" y2="{num(y)}" '
                      f'stroke="{AXIS}" stroke-width="0.8"/>')
                c.text(self.left - 6, y, lab, size=ysz, anchor="end")
        if spines:
            c.add(f'<path d="M{num(self.left)},{num(self.top)}V{num(self.bottom)}H{num(self.right)}" '
                  f'stroke="{AXIS}" stroke-width="0.8" fill="none"/>')
        if xlabel:
            extra = 0.0
            if rotate_x and xtick_labels is not None:
                extra = max((text_width(s, tick_size) for s in xtick_labels), default=0) * 0.71
            else:
                extra = tick_size if xticks is not None else 0
            # a label wider than the axes is centred on the figure instead, and shrunk if it is wider still
            size = min(LABEL_SIZE, (c.width - 8) / (0.6 * len(xlabel)))
            half = text_width(xlabel, size) / 2
            x = min(max(self.left + self.w / 2, half + 4), c.width - half - 4)
            c.text(x, self.bottom + 12 + extra + LABEL_SIZE / 2, xlabel, size=size, anchor="middle")
        if ylabel:
            widest = max((text_width(s, ysz) for s in (ytick_labels or tick_labels(yticks or []))), default=0)
            x = self.left - 10 - widest - LABEL_SIZE / 2
            c.text(x, self.top + self.h / 2, ylabel, size=LABEL_SIZE, anchor="middle", rotate=-90)

    def legend(self, entries: Sequence[tuple[str, str, str]], loc: str = "upper left", ncol: int = 1,
               size: float = LEGEND_SIZE, below: float = 0.0) -> None:
        """Entries (kind, colour, label), kind one of line, dashed, dotted, marker, line+marker, rect, hatch,
        band, in ``ncol`` columns at a corner of the axes (``loc``: upper/lower left/right) or centred under
        them ("below", ``below`` units under the axes' bottom), or "best": the corner whose box covers the
        fewest drawn points (matplotlib's rule, in its order of preference)."""
        if not entries:
            return
        c = self.chart
        rows = math.ceil(len(entries) / ncol)
        col_w = [0.0] * ncol
        for i, (_, _, lab) in enumerate(entries):
            col_w[i // rows] = max(col_w[i // rows], 22 + 0.85 * text_width(lab, size))  # spacing, not clipping
        total_w = sum(col_w) + 8 * (ncol - 1)
        line_h = size * 1.45
        total_h = rows * line_h
        def corner(where: str) -> tuple[float, float]:
            vert, hor = where.split()
            return (self.left + 8 if hor == "left" else self.right - total_w - 4,
                    self.top + 4 if vert == "upper" else self.bottom - total_h - 6)

        if loc == "below":
            x0, y0 = self.left + (self.w - total_w) / 2, self.bottom + below
        elif loc == "best":
            def covered(where: str) -> int:
                a, b = corner(where)
                return sum(1 for x, y in self._drawn if a - 3 <= x <= a + total_w + 3 and b - 3 <= y <= b + total_h + 3)

            x0, y0 = corner(min(("upper right", "upper left", "lower left", "lower right"), key=covered))
        else:
            x0, y0 = corner(loc)
        x = x0
        for col in range(ncol):
            for r in range(rows):
                i = col * rows + r
                if i >= len(entries):
                    break
                kind, colour, lab = entries[i]
                y = y0 + r * line_h + line_h / 2
                self._swatch(kind, colour, x, y)
                c.text(x + 22, y, lab, size=size)
            x += col_w[col] + 8

    def _swatch(self, kind: str, colour: str, x: float, y: float) -> None:
        c = self.chart
        if kind == "thick":  # a wide pale line (a series drawn beneath the others)
            c.add(f'<line x1="{num(x + 2)}" y1="{num(y)}" x2="{num(x + 15)}" y2="{num(y)}" stroke="{colour}" '
                  'stroke-width="6" stroke-opacity="0.35" stroke-linecap="round"/>')
        elif kind in ("line", "dashed", "dotted", "line+marker", "dashed+marker"):
            dash = {"dashed": ' stroke-dasharray="4 2"', "dotted": ' stroke-dasharray="1.2 1.8"',
                    "dashed+marker": ' stroke-dasharray="4 2"'}.get(kind, "")
            c.add(f'<line x1="{num(x)}" y1="{num(y)}" x2="{num(x + 17)}" y2="{num(y)}" stroke="{colour}" '
                  f'stroke-width="1.4"{dash}/>')
            if kind in ("line+marker", "dashed+marker"):
                c.add(f'<circle cx="{num(x + 8.5)}" cy="{num(y)}" r="2.2" fill="{colour}"/>')
        elif kind == "marker":
            c.add(f'<circle cx="{num(x + 8.5)}" cy="{num(y)}" r="2.6" fill="{colour}"/>')
        elif kind == "band":
            c.add(f'<rect x="{num(x)}" y="{num(y - 4)}" width="17" height="8" fill="{colour}" fill-opacity="0.25"/>')
        else:  # rect, hatch, gap
            op = {"rect": 0.85, "hatch": 0.35, "gap": 0.25}.get(kind, 0.85)
            c.add(f'<rect x="{num(x)}" y="{num(y - 4.5)}" width="17" height="9" fill="{colour}" '
                  f'fill-opacity="{op}"' + (f' stroke="{colour}" stroke-width="0.5"' if kind != "rect" else "") + "/>")
            if kind == "hatch":
                c.add(f'<rect x="{num(x)}" y="{num(y - 4.5)}" width="17" height="9" '
                      f'fill="url(#{c.hatch(colour)})"/>')


def blues(v: float) -> str:
    """matplotlib's 'Blues' colour map (ColorBrewer's nine blues, linearly interpolated) at v in [0, 1]."""
    stops = [(0xF7, 0xFB, 0xFF), (0xDE, 0xEB, 0xF7), (0xC6, 0xDB, 0xEF), (0x9E, 0xCA, 0xE1), (0x6B, 0xAE, 0xD6),
             (0x42, 0x92, 0xC6), (0x21, 0x71, 0xB5), (0x08, 0x51, 0x9C), (0x08, 0x30, 0x6B)]
    v = min(1.0, max(0.0, float(v) if math.isfinite(v) else 0.0)) * (len(stops) - 1)
    i = min(int(v), len(stops) - 2)
    f = v - i
    rgb = [round(a + (b - a) * f) for a, b in zip(stops[i], stops[i + 1])]
    return "#" + "".join(f"{c:02x}" for c in rgb)
