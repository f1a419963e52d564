"""The two plots of `crack-edge report`, as inline SVG text (nothing fetched, no plotting library):
the probability histogram and the map of photo positions.

The map is a plain projection of longitude/latitude (longitude scaled by the cosine of the middle
latitude, so that distances look right over a survey's few kilometres), with a scale bar and north
up; no map tiles. Captions come from results files: the caller escapes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.overlay import heat_colour

CRACK = "#d62728"
CLEAR = "#2ca02c"
METRES_PER_DEGREE = 111_320.0  # along a meridian, and along the equator
MAX_MAP_POINTS = 20_000  # a map of more points is thinned (cracks are always kept)


def hex_colour(probability: float) -> str:
    blue, green, red = heat_colour(probability)
    return f"#{red:02x}{green:02x}{blue:02x}"


def histogram(probabilities: list[float], threshold: float, bins: int = 20,
              width: int = 640, height: int = 220) -> str:
    """Bars of how many photos fall in each probability bin; bins at or above the threshold in
    the crack colour; the threshold as a dashed line."""
    counts = [0] * bins
    for p in probabilities:
        counts[min(int(p * bins), bins - 1)] += 1
    top = max(counts, default=0) or 1
    left, right, bottom, upper = 44, 10, 28, 12
    plot_w, plot_h = width - left - right, height - bottom - upper
    bar_w = plot_w / bins
    parts = [f'<svg id="histogram" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'aria-label="probability histogram">',
             f'<line x1="{left}" y1="{upper + plot_h}" x2="{left + plot_w}" y2="{upper + plot_h}" '
             'stroke="#444"/>']
    for i, count in enumerate(counts):
        low, high = i / bins, (i + 1) / bins
        bar_h = plot_h * count / top
        x, y = left + i * bar_w, upper + plot_h - bar_h
        colour = CRACK if low >= threshold else CLEAR
        parts.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" '
                     f'height="{bar_h:.1f}" fill="{colour}"><title>{low:.2f}-{high:.2f}: '
                     f'{count} photo(s)</title></rect>')
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + plot_w * value
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" font-size="11" '
                     f'text-anchor="middle">{value:g}</text>')
    parts.append(f'<text x="{left - 6}" y="{upper + 10}" font-size="11" '
                 f'text-anchor="end">{top}</text>')
    parts.append(f'<text x="{left - 6}" y="{upper + plot_h}" font-size="11" '
                 'text-anchor="end">0</text>')
    x = left + plot_w * threshold
    parts.append(f'<line x1="{x:.1f}" y1="{upper}" x2="{x:.1f}" y2="{upper + plot_h}" '
                 'stroke="#000" stroke-dasharray="4 3"><title>threshold '
                 f'{threshold:.3f}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class MapPoint:
    lat: float
    lon: float
    probability: float
    crack: bool
    caption: str  # shown on hover (already escaped)


def _nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 x 10^k metres not above ``metres``."""
    power = 10 ** math.floor(math.log10(metres))
    return next(step * power for step in (5, 2, 1) if step * power <= metres)


def point_map(points: list[MapPoint], width: int = 640, height: int = 440) -> str:
    """A dot per photo position, coloured by probability; cracks larger, ringed, drawn on top."""
    if len(points) > MAX_MAP_POINTS:
        cracks = [p for p in points if p.crack]
        others = [p for p in points if not p.crack]
        step = max(1, math.ceil(len(others) / max(1, MAX_MAP_POINTS - len(cracks))))
        points = cracks + others[::step]
    lat_mid = (min(p.lat for p in points) + max(p.lat for p in points)) / 2
    squash = max(math.cos(math.radians(lat_mid)), 0.01)
    xs = [p.lon * squash for p in points]
    ys = [p.lat for p in points]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-5)  # at least about a metre
    pad = 24
    scale = min(width - 2 * pad, height - 2 * pad) / span
    x0 = (min(xs) + max(xs)) / 2 - (width / 2) / scale
    y0 = (min(ys) + max(ys)) / 2 + (height / 2) / scale

    def at(x: float, y: float) -> tuple[float, float]:
        return (x - x0) * scale, (y0 - y) * scale

    parts = [f'<svg id="map" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="map of photo positions">',
             f'<rect width="{width}" height="{height}" fill="#f4f4f0" stroke="#999"/>']
    ordered = sorted(zip(points, xs, ys), key=lambda item: (item[0].crack, item[0].probability))
    for point, x, y in ordered:
        cx, cy = at(x, y)
        ring = ' stroke="#000" stroke-width="1.2"' if point.crack else ""
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{5 if point.crack else 3}" '
                     f'fill="{hex_colour(point.probability)}"{ring}><title>{point.caption}'
                     "</title></circle>")
    metres = (width - 2 * pad) / scale * METRES_PER_DEGREE
    bar = _nice_length(metres / 4)
    bar_px = bar / METRES_PER_DEGREE * scale
    label = f"{bar / 1000:g} km" if bar >= 1000 else f"{bar:g} m"
    parts.append(f'<line x1="{pad}" y1="{height - 14}" x2="{pad + bar_px:.1f}" y2="{height - 14}" '
                 f'stroke="#000" stroke-width="3"/><text x="{pad}" y="{height - 20}" '
                 f'font-size="11">{label}</text>')
    parts.append(f'<text x="{width - 16}" y="22" font-size="14" text-anchor="middle">N</text>'
                 f'<path d="M{width - 16} 26 l-5 12 h10 z" fill="#000"/>')
    parts.append("</svg>")
    return "".join(parts)


def legend(threshold: float) -> str:
    """Colour key for the map (heat colours from probability 0 to 1)."""
    stops = "".join(f'<span style="background:{hex_colour(i / 10)}"></span>' for i in range(11))
    return (f'<div class="legend">probability 0 <span class="ramp">{stops}</span> 1; ringed: at '
            f'or above the threshold {threshold:.3f}</div>')
