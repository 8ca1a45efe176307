"""A small line chart as server-rendered SVG: numbers and escaped labels only, nothing for a browser to run."""

from __future__ import annotations

from html import escape

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea")


def line_chart(labels: list[str], series: dict[str, list[int]], width: int = 640, height: int = 220) -> str:
    """One polyline per series over the same labels, a y axis from 0 to the largest value, and a legend."""
    left, right, top, bottom = 44, 12, 24, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([1, *(v for values in series.values() for v in values)])
    steps = max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return left + plot_w * i / steps

    def y(v: int) -> float:
        return top + plot_h * (1 - v / peak)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}"'
             f' viewBox="0 0 {width} {height}" role="img" aria-label="events over time">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']  # fmt: skip
    for fraction in (0, 0.5, 1):
        value = round(peak * fraction)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}"'
                     f' stroke="#e5e7eb"/><text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end"'
                     f' font-size="11" fill="#6b7280">{value}</text>')  # fmt: skip
    for i in sorted({0, len(labels) // 2, len(labels) - 1}) if labels else ():
        parts.append(f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle" font-size="11"'
                     f' fill="#6b7280">{escape(labels[i])}</text>')  # fmt: skip
    for n, (name, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline class="series" data-series="{escape(name)}" fill="none" stroke="{colour}"'
                     f' stroke-width="2" points="{points}"/>')  # fmt: skip
        # a dot per point: a series of one point (a message's first day) is still seen
        parts += [f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>' for i, v in enumerate(values)]
        parts.append(f'<rect x="{left + 110 * n}" y="6" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + 110 * n + 14}" y="15" font-size="12" fill="#111827">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
