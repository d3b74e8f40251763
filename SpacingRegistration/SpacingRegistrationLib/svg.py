"""Small self-contained SVG charts for the HTML report (no plotting library needed)."""

from __future__ import annotations

import math
from html import escape

import numpy as np

WIDTH, HEIGHT = 560, 300
MARGIN = {"left": 70, "right": 150, "top": 30, "bottom": 45}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high == low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


class _Axes:
    """Maps data to pixels; linear or log10 on x."""

    def __init__(self, xs, ys, log_x=False):
        xs = [math.log10(x) for x in xs] if log_x else list(xs)
        self.log_x = log_x
        self.x_low, self.x_high = min(xs), max(xs)
        self.y_low, self.y_high = min(ys), max(ys)
        if self.x_high == self.x_low:
            self.x_low, self.x_high = self.x_low - 0.5, self.x_high + 0.5
        if self.y_high == self.y_low:
            pad = abs(self.y_low) * 0.1 or 1.0
            self.y_low, self.y_high = self.y_low - pad, self.y_high + pad
        self.plot_width = WIDTH - MARGIN["left"] - MARGIN["right"]
        self.plot_height = HEIGHT - MARGIN["top"] - MARGIN["bottom"]

    def x(self, value: float) -> float:
        value = math.log10(value) if self.log_x else value
        return MARGIN["left"] + (value - self.x_low) / (self.x_high - self.x_low) * self.plot_width

    def y(self, value: float) -> float:
        return MARGIN["top"] + (self.y_high - value) / (self.y_high - self.y_low) * self.plot_height

    def frame(self, title: str, x_label: str, y_label: str) -> list[str]:
        left, top = MARGIN["left"], MARGIN["top"]
        parts = [f'<rect x="{left}" y="{top}" width="{self.plot_width}" height="{self.plot_height}" '
                 'fill="none" stroke="#444"/>',
                 f'<text x="{left}" y="18" font-weight="bold">{escape(title)}</text>',
                 f'<text x="{left + self.plot_width / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>',
                 f'<text transform="translate(14,{top + self.plot_height / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>']
        for tick in _ticks(self.y_low, self.y_high):
            parts.append(f'<line x1="{left - 4}" x2="{left}" y1="{self.y(tick):.1f}" y2="{self.y(tick):.1f}" stroke="#444"/>'
                         f'<text x="{left - 6}" y="{self.y(tick) + 4:.1f}" text-anchor="end">{tick:.4g}</text>')
        x_ticks = [10 ** t for t in _ticks(self.x_low, self.x_high)] if self.log_x else _ticks(self.x_low, self.x_high)
        for tick in x_ticks:
            parts.append(f'<line y1="{top + self.plot_height}" y2="{top + self.plot_height + 4}" x1="{self.x(tick):.1f}" '
                         f'x2="{self.x(tick):.1f}" stroke="#444"/><text x="{self.x(tick):.1f}" '
                         f'y="{top + self.plot_height + 17}" text-anchor="middle">{tick:.4g}</text>')
        return parts


def _svg(parts: list[str], width: int = WIDTH, height: int = HEIGHT) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
            f'font-size="11">' + "".join(parts) + "</svg>")


def _legend(names: list[str]) -> list[str]:
    x = WIDTH - MARGIN["right"] + 10
    return [f'<rect x="{x}" y="{MARGIN["top"] + 16 * i}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{x + 14}" y="{MARGIN["top"] + 9 + 16 * i}">{escape(name)}</text>'
            for i, name in enumerate(names)]


def line_chart(series: dict[str, tuple[list[float], list[float]]], title: str, x_label: str, y_label: str,
               log_x: bool = False, markers: bool = False, reference: tuple[str, float] | None = None) -> str:
    """One polyline per named series of (xs, ys); ``reference`` (label, y) adds a dashed horizontal line."""
    points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if math.isfinite(y)]
    if not points:
        return _svg([f'<text x="20" y="40">{escape(title)}: no data</text>'], height=60)
    extra = [reference[1]] if reference is not None and math.isfinite(reference[1]) else []
    axes = _Axes([p[0] for p in points], [p[1] for p in points] + extra, log_x)
    parts = axes.frame(title, x_label, y_label)
    if extra:
        y = axes.y(extra[0])
        parts.append(f'<line class="reference" x1="{MARGIN["left"]}" x2="{MARGIN["left"] + axes.plot_width}" '
                     f'y1="{y:.1f}" y2="{y:.1f}" stroke="#555" stroke-dasharray="6,4"/>'
                     f'<text x="{MARGIN["left"] + axes.plot_width - 4}" y="{y - 4:.1f}" text-anchor="end" '
                     f'fill="#555">{escape(reference[0])}</text>')
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        coordinates = " ".join(f"{axes.x(x):.1f},{axes.y(y):.1f}" for x, y in zip(xs, ys) if math.isfinite(y))
        parts.append(f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        if markers:
            parts.extend(f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" r="3" fill="{colour}"/>'
                         for x, y in zip(xs, ys) if math.isfinite(y))
    return _svg(parts + _legend(list(series)))


def bar_chart(categories: list[str], series: dict[str, list[float]], title: str, y_label: str) -> str:
    """Grouped bars: one group per category, one bar per series."""
    values = [v for vs in series.values() for v in vs] + [0.0]
    axes = _Axes([0, len(categories)], values)
    parts = axes.frame(title, "", y_label)[:4]
    for tick in _ticks(axes.y_low, axes.y_high):
        parts.append(f'<text x="{MARGIN["left"] - 6}" y="{axes.y(tick) + 4:.1f}" text-anchor="end">{tick:.4g}</text>')
    width = 0.8 / max(1, len(series))
    for i, (name, heights) in enumerate(series.items()):
        for j, height in enumerate(heights):
            left = axes.x(j + 0.1 + i * width)
            parts.append(f'<rect x="{left:.1f}" y="{min(axes.y(height), axes.y(0)):.1f}" '
                         f'width="{axes.x(width) - axes.x(0):.1f}" height="{abs(axes.y(0) - axes.y(height)):.1f}" '
                         f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(name)}: {height:.6g}</title></rect>')
    for j, category in enumerate(categories):
        parts.append(f'<text x="{axes.x(j + 0.5):.1f}" y="{HEIGHT - MARGIN["bottom"] + 17}" '
                     f'text-anchor="middle">{escape(category)}</text>')
    return _svg(parts + _legend(list(series)))


def heatmap(values: np.ndarray, title: str, unit: str, pixel: int = 5) -> str:
    """A 2D array as white-to-red cells (the maximum labelled)."""
    rows, columns = values.shape
    high = float(values.max()) or 1.0
    parts = [f'<text x="0" y="14" font-weight="bold">{escape(title)}</text>']
    for r in range(rows):
        for c in range(columns):
            level = values[r, c] / high
            fade = int(255 * (1 - level))
            parts.append(f'<rect x="{c * pixel}" y="{20 + r * pixel}" width="{pixel}" height="{pixel}" '
                         f'fill="rgb(255,{fade},{fade})"/>')
    parts.append(f'<text x="0" y="{34 + rows * pixel}">white 0, red {high:.3g} {escape(unit)}</text>')
    return _svg(parts, width=max(columns * pixel, 240), height=40 + rows * pixel)


def grid_picture(axis_positions_x, axis_positions_y, image_x: tuple[float, float], image_y: tuple[float, float],
                 domain_x: tuple[float, float], domain_y: tuple[float, float], title: str) -> str:
    """Control points (inside the image green, outside red), the image extent and the transform domain in one plane."""
    xs = list(axis_positions_x) + list(image_x) + list(domain_x)
    ys = list(axis_positions_y) + list(image_y) + list(domain_y)
    axes = _Axes(xs, ys)
    parts = axes.frame(title, "x (mm)", "y (mm)")

    def box(x_range, y_range, colour, label):
        left, right = axes.x(x_range[0]), axes.x(x_range[1])
        top, bottom = axes.y(y_range[1]), axes.y(y_range[0])
        return (f'<rect x="{min(left, right):.1f}" y="{min(top, bottom):.1f}" width="{abs(right - left):.1f}" '
                f'height="{abs(bottom - top):.1f}" fill="none" stroke="{colour}" stroke-width="2">'
                f'<title>{label}</title></rect>')

    parts.append(box(domain_x, domain_y, "#1f77b4", "transform domain"))
    parts.append(box(image_x, image_y, "#000", "image extent"))
    for x in axis_positions_x:
        for y in axis_positions_y:
            inside = min(image_x) <= x <= max(image_x) and min(image_y) <= y <= max(image_y)
            parts.append(f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" r="4" '
                         f'fill="{"#2ca02c" if inside else "#d62728"}"/>')
    legend = ["image extent (black)", "transform domain (blue)", "control point inside (green)", "outside (red)"]
    x = WIDTH - MARGIN["right"] + 10
    parts.extend(f'<text x="{x}" y="{MARGIN["top"] + 9 + 16 * i}">{escape(t)}</text>' for i, t in enumerate(legend))
    return _svg(parts)
