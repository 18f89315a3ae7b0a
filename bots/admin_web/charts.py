"""Small server-rendered SVG bar charts: no script and no asset from the internet needed."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["bar_chart"]

_W, _H, _PAD_L, _PAD_B, _PAD_T = 640, 180, 36, 22, 10


def bar_chart(title: str, days: Sequence[str], series: Sequence[tuple[str, Sequence[float], str]]) -> Markup:
    """Grouped bars per day: ``series`` is ``(label, values per day, css class)``.

    The figure carries a text summary (``<title>``, a legend with totals) for screen readers."""
    peak = max([1.0, *(v for _, values, _ in series for v in values)])
    width = (_W - _PAD_L - 4) / max(1, len(days))
    bar = max(1.0, (width - 2) / max(1, len(series)))
    totals = ", ".join(f"{label}: {sum(values):g}" for label, values, _ in series)
    parts = [f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(title)}: {totals}">',
             f"<title>{escape(title)}: {escape(totals)}</title>"]
    base = _H - _PAD_B
    for frac in (0.0, 0.5, 1.0):
        y = base - frac * (base - _PAD_T)
        parts.append(f'<line class="grid" x1="{_PAD_L}" x2="{_W}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="axis" x="{_PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end">{peak * frac:.3g}</text>')
    for i, day in enumerate(days):
        for j, (label, values, css) in enumerate(series):
            value = values[i]
            if value <= 0:
                continue
            h = value / peak * (base - _PAD_T)
            x = _PAD_L + i * width + 1 + j * bar
            parts.append(f'<rect class="{escape(css)}" x="{x:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}"><title>{escape(day)} {escape(label)}: {value:g}</title></rect>')
    if days:
        parts.append(f'<text class="axis" x="{_PAD_L}" y="{_H - 6}">{escape(days[0])}</text>'
                     f'<text class="axis" x="{_W}" y="{_H - 6}" text-anchor="end">{escape(days[-1])}</text>')
    parts.append("</svg>")
    legend = "".join(f'<li><span class="swatch {escape(css)}"></span>{escape(label)}: {sum(values):g}</li>'
                     for label, values, css in series)
    return Markup(f'<figure><figcaption>{escape(title)}</figcaption>{"".join(parts)}'
                  f'<ul class="legend">{legend}</ul></figure>')
