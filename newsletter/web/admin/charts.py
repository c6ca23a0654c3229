"""Charts drawn on the server as SVG: nothing is loaded from the network, nothing
runs in the browser (the console's CSP allows no script), and the colours come
from the console's stylesheet, so the same chart follows light and dark mode.
Each chart is an image with a title for screen readers; the page also prints the
numbers as a table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape


def _nice_max(value: int) -> int:
    """The smallest 1/2/5 x 10^k at or above ``value`` (at least 1): round axis ticks."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def line_chart(days: Sequence[dt.date], series: Mapping[str, Sequence[int]], *, title: str,
               width: int = 640, height: int = 220) -> Markup:
    """One polyline per series over the days, a y axis with 0 / half / max, dates
    on the x axis, and a legend. Series are styled by class ``s-<name>``."""
    left, right, top, bottom = 40, 8, 10, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_max(max((max(v) for v in series.values() if len(v)), default=0))
    n = max(len(days), 2)

    def x(i: int) -> float:
        return left + plot_w * i / (n - 1)

    def y(v: int) -> float:
        return top + plot_h * (1 - v / peak)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    for v in (0, peak // 2 if peak > 1 else 0, peak):
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(v):.1f}" '
                     f'y2="{y(v):.1f}"/>')
        parts.append(f'<text class="axis" x="{left - 4}" y="{y(v) + 4:.1f}" '
                     f'text-anchor="end">{v}</text>')
    for i, d in enumerate(days):
        if (len(days) - 1 - i) % 7 == 0:  # weekly, ending on the last day
            anchor = "end" if i == len(days) - 1 else "middle"
            parts.append(f'<text class="axis" x="{x(i):.1f}" y="{top + plot_h + 14}" '
                         f'text-anchor="{anchor}">{d:%m-%d}</text>')
    for name, values in series.items():
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline class="line s-{escape(name)}" points="{points}"/>')
    lx = left
    for name in series:
        parts.append(f'<rect class="key s-{escape(name)}" x="{lx}" y="{height - 16}" '
                     f'width="10" height="10"/>')
        parts.append(f'<text class="axis" x="{lx + 14}" y="{height - 7}">{escape(name)}</text>')
        lx += 24 + 8 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(values: Sequence[int], *, title: str, width: int = 640, height: int = 90
              ) -> Markup:
    """Small bars, one per day: subscriber growth."""
    top, bottom = 6, 16
    peak = _nice_max(max(values, default=0))
    n = max(len(values), 1)
    bw = width / n
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    plot_h = height - top - bottom
    for i, v in enumerate(values):
        h = plot_h * v / peak
        parts.append(f'<rect class="bar" x="{i * bw + 1:.1f}" y="{top + plot_h - h:.1f}" '
                     f'width="{max(bw - 2, 1):.1f}" height="{h:.1f}"/>')
    parts.append(f'<text class="axis" x="0" y="{height - 3}">max {peak} a day</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def progress_bar(percent: int, label: str) -> Markup:
    """A progress bar as SVG (a <progress> element needs no script either, but its
    colours cannot follow the stylesheet in every browser)."""
    p = max(0, min(100, percent))
    return Markup(f'<svg class="progress" viewBox="0 0 100 6" preserveAspectRatio="none" '
                  f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
                  f'<rect class="track" width="100" height="6"/>'
                  f'<rect class="fill" width="{p}" height="6"/></svg>')
