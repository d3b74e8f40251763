"""Small self-contained SVG charts for the HTML report (no plotting library needed).

Counts sit on integer axes from zero; a series spanning more than three decades gets a log axis, where an exact
zero (a bit-identical result) is drawn on its own labelled row instead of vanishing; legends name the study
modes in words. Pixel pictures (image slices) are embedded as PNG data written with zlib, so the page stays one
self-contained file.
"""

from __future__ import annotations

import base64
import math
import re
import struct
import zlib
from html import escape

import numpy as np

from .study_spec import THREADS, UNITS

WIDTH, HEIGHT = 560, 300
MARGIN = {"left": 70, "right": 150, "top": 30, "bottom": 45}
PLOT_WIDTH = WIDTH - MARGIN["left"] - MARGIN["right"]
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
#: Positive values spanning more than this ratio get a log axis (line_chart's log_y=None).
LOG_SPAN = 1e3
#: Label of the row where exact zeros of a log-axis chart are drawn.
ZERO_LABEL = "\u25c7 bit-identical (0)"
_UNIT_WORDS = {"native": "native units", "normalised": "normalised units"}
_THREAD_WORDS = {"default": "default threads", "reproducible": "one thread (reproducible)"}
#: Study modes in words, for legends and titles.
MODE_NAMES = {f"{units}-{threads}": f"{_UNIT_WORDS[units]}, {_THREAD_WORDS[threads]}"
              for units in UNITS for threads in THREADS}
_MODE_PATTERN = re.compile("|".join(sorted(map(re.escape, MODE_NAMES), key=len, reverse=True)))
_CHARACTER_WIDTH = 6.2  # px per character at font-size 11, to size the legend


def mode_name(text: str) -> str:
    """``text`` with every study mode identifier (``native-default``) replaced by its words."""
    return _MODE_PATTERN.sub(lambda match: MODE_NAMES[match.group(0)], str(text))


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    if high == low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    if integer:
        step = max(1, round(step))
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _log_ticks(low_exponent: float, high_exponent: float) -> list[float]:
    """Powers of ten between two exponents, thinned to at most seven."""
    exponents = list(range(math.ceil(low_exponent - 1e-9), math.floor(high_exponent + 1e-9) + 1))
    stride = max(1, math.ceil(len(exponents) / 7))
    return [10.0 ** e for e in exponents[::stride]]


def tick_label(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")


class _Axes:
    """Maps data to pixels; linear or log10 on x and on y."""

    def __init__(self, xs, ys, log_x=False, log_y=False, y_from_zero=False, integer_y=False):
        xs = [math.log10(x) for x in xs] if log_x else list(xs)
        ys = [math.log10(y) for y in ys] if log_y else list(ys)
        self.log_x, self.log_y, self.integer_y = log_x, log_y, integer_y
        self.x_low, self.x_high = min(xs), max(xs)
        self.y_low, self.y_high = min(ys), max(ys)
        if y_from_zero:
            self.y_low, self.y_high = min(0.0, self.y_low), max(0.0, self.y_high)
            if self.y_high == self.y_low == 0:
                self.y_high = 1.0
        if self.x_high == self.x_low:
            self.x_low, self.x_high = self.x_low - 0.5, self.x_high + 0.5
        if self.y_high == self.y_low:
            pad = 0.5 if log_y else abs(self.y_low) * 0.1 or 1.0
            self.y_low, self.y_high = self.y_low - pad, self.y_high + pad
        self.plot_width = PLOT_WIDTH
        self.plot_height = HEIGHT - MARGIN["top"] - MARGIN["bottom"]

    def x(self, value: float) -> float:
        value = math.log10(value) if self.log_x else value
        return MARGIN["left"] + (value - self.x_low) / (self.x_high - self.x_low) * self.plot_width

    def y(self, value: float) -> float:
        value = math.log10(value) if self.log_y else value
        return MARGIN["top"] + (self.y_high - value) / (self.y_high - self.y_low) * self.plot_height

    def y_ticks(self) -> list[float]:
        if self.log_y:
            return _log_ticks(self.y_low, self.y_high)
        return nice_ticks(self.y_low, self.y_high, integer=self.integer_y)

    def frame(self, title: str, x_label: str, y_label: str, x_ticks: bool = True, x_shift: float = 0) -> list[str]:
        """Box, title, axis labels and ticks; ``x_shift`` moves the x ticks and label down (below a zero row)."""
        left, top = MARGIN["left"], MARGIN["top"]
        scale = "log" if self.log_y else "integer" if self.integer_y else "linear"
        parts = [f'<rect class="plot-area" data-y-scale="{scale}" data-y-low="{self.y_ticks()[0]:.6g}" x="{left}" '
                 f'y="{top}" width="{self.plot_width}" height="{self.plot_height}" fill="none" stroke="#444"/>',
                 f'<text x="{left}" y="18" font-weight="bold">{escape(mode_name(title))}</text>',
                 f'<text x="{left + self.plot_width / 2}" y="{HEIGHT - 8 + x_shift}" text-anchor="middle">{escape(x_label)}</text>',
                 f'<text transform="translate(14,{top + self.plot_height / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label + (" (log scale)" if self.log_y else ""))}</text>']
        for tick in self.y_ticks():
            parts.append(f'<line x1="{left - 4}" x2="{left}" y1="{self.y(tick):.1f}" y2="{self.y(tick):.1f}" stroke="#444"/>'
                         f'<text class="y-tick" x="{left - 6}" y="{self.y(tick) + 4:.1f}" '
                         f'text-anchor="end">{tick_label(tick)}</text>')
        if not x_ticks:
            return parts
        x_values = [10 ** t for t in nice_ticks(self.x_low, self.x_high)] if self.log_x else nice_ticks(self.x_low, self.x_high)
        for tick in x_values:
            bottom = top + self.plot_height + x_shift
            parts.append(f'<line y1="{bottom}" y2="{bottom + 4}" x1="{self.x(tick):.1f}" '
                         f'x2="{self.x(tick):.1f}" stroke="#444"/><text x="{self.x(tick):.1f}" '
                         f'y="{bottom + 17}" text-anchor="middle">{tick:.4g}</text>')
        return parts


def _svg(parts: list[str], width: float = WIDTH, height: float = HEIGHT, css_class: str = "chart") -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" width="{width:.0f}" height="{height:.0f}" '
            f'font-family="sans-serif" font-size="11">' + "".join(parts) + "</svg>")


def _legend_width(names: list[str]) -> float:
    return 30 + _CHARACTER_WIDTH * max([len(n) for n in names] + [0])


def _legend(names: list[str]) -> list[str]:
    x = MARGIN["left"] + PLOT_WIDTH + 10
    return [f'<g class="legend-entry"><rect x="{x}" y="{MARGIN["top"] + 16 * i}" width="10" height="10" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{x + 14}" y="{MARGIN["top"] + 9 + 16 * i}">'
            f'{escape(name)}</text></g>' for i, name in enumerate(names)]


def _chart(parts: list[str], names: list[str], height: float = HEIGHT) -> str:
    """The chart with its legend (mode identifiers in words), wide enough for the longest entry."""
    names = [mode_name(n) for n in names]
    width = max(WIDTH, MARGIN["left"] + PLOT_WIDTH + 10 + _legend_width(names))
    return _svg(parts + _legend(names), width=width, height=max(height, MARGIN["top"] + 16 * len(names) + 10))


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def line_chart(series: dict[str, tuple[list[float], list[float]]], title: str, x_label: str, y_label: str,
               log_x: bool = False, markers=False, reference: tuple[str, float] | None = None,
               log_y: bool | None = None) -> str:
    """One polyline per named series of (xs, ys); ``reference`` (label, y) adds a dashed horizontal line.

    ``markers``: True draws a dot at every point; a list of (x, label) draws a labelled vertical line at each x
    (the libLBFGS restart of a metric trace). ``log_y``: None chooses a log axis when the positive values span
    more than three decades; on a log axis exact zeros are drawn on a row of their own, labelled bit-identical.
    """
    def drawable(x, y) -> bool:
        return _finite(x) and _finite(y) and (x > 0 or not log_x)

    series = {name: tuple(zip(*[(x, y) for x, y in zip(xs, ys) if drawable(x, y)])) or ((), ())
              for name, (xs, ys) in series.items()}
    points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys)]
    if not points:
        return _svg([f'<text x="20" y="40">{escape(mode_name(title))}: no data</text>'], height=60)
    positive = [y for _, y in points if y > 0]
    if log_y is None:
        log_y = (bool(positive) and all(y >= 0 for _, y in points)
                 and max(positive) / min(positive) > LOG_SPAN)
    log_y = bool(log_y and positive)
    drawn_reference = reference is not None and _finite(reference[1]) and (reference[1] > 0 or not log_y)
    extra = [reference[1]] if drawn_reference else []
    shown = [p for p in points if p[1] > 0] if log_y else points
    zeros = [p for p in points if p[1] == 0] if log_y else []
    all_zero = all(y == 0 for _, y in points)  # everything bit-identical: an axis from 0, not from -1
    axes = _Axes([p[0] for p in points], [y for _, y in shown] + extra, log_x, log_y, y_from_zero=all_zero)
    zero_row = MARGIN["top"] + axes.plot_height + 14
    parts = axes.frame(title, x_label, y_label, x_shift=24 if zeros else 0)
    if zeros:
        parts.append(f'<text class="zero-row-label" x="{MARGIN["left"] + PLOT_WIDTH + 10}" y="{zero_row + 4}" '
                     f'fill="#555">{ZERO_LABEL}</text><line x1="{MARGIN["left"]}" x2="{MARGIN["left"] + PLOT_WIDTH}" '
                     f'y1="{zero_row}" y2="{zero_row}" stroke="#bbb" stroke-dasharray="2,3"/>')
    if extra:
        y = axes.y(extra[0])
        parts.append(f'<line class="reference" x1="{MARGIN["left"]}" x2="{MARGIN["left"] + axes.plot_width}" '
                     f'y1="{y:.1f}" y2="{y:.1f}" stroke="#555" stroke-dasharray="6,4"/>'
                     f'<text x="{MARGIN["left"] + axes.plot_width - 4}" y="{y - 4:.1f}" text-anchor="end" '
                     f'fill="#555">{escape(reference[0])}</text>')
    if markers and not isinstance(markers, bool):
        parts.extend(_event_markers(axes, markers))
    if all_zero:
        parts.append(_all_zero_note(axes))
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        for run in _runs(list(zip(xs, ys)), log_y):
            coordinates = " ".join(f"{axes.x(x):.1f},{axes.y(y):.1f}" for x, y in run)
            parts.append(f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            if len(run) == 1 and markers is not True:  # a lone point has no line to show it
                (x, y), = run
                parts.append(f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" r="3" fill="{colour}"/>')
        if markers is True:
            parts.extend(f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" r="3" fill="{colour}"/>'
                         for x, y in zip(xs, ys) if y > 0 or not log_y)
        if log_y:  # side by side where several series are bit-identical at the same x
            offset = (i - (len(series) - 1) / 2) * 4
            parts.extend(f'<path class="bit-identical" d="M{axes.x(x) + offset:.1f},{zero_row - 5} '
                         f'l5,5 l-5,5 l-5,-5 z" '
                         f'fill="none" stroke="{colour}" stroke-width="1.5"><title>{escape(mode_name(name))}: '
                         f'0 (bit-identical) at {x:g}</title></path>' for x, y in zip(xs, ys) if y == 0)
    return _chart(parts, list(series), height=HEIGHT + (24 if zeros else 0))


def metric_trace(series: dict[str, tuple[list[float], list[float]]], title: str, restarts=()) -> str:
    """Sampled metric per iteration event (one series per run), each libLBFGS restart (event index) marked."""
    return line_chart(series, title, "iteration event", "sampled metric", log_y=False,
                      markers=[(x, "libLBFGS restart") for x in restarts])


def _all_zero_note(axes: _Axes) -> str:
    return (f'<text class="all-zero" x="{MARGIN["left"] + axes.plot_width / 2}" '
            f'y="{MARGIN["top"] + axes.plot_height / 2}" '
            f'text-anchor="middle" fill="#555">every value is 0 (bit-identical)</text>')


def _runs(points: list[tuple[float, float]], log_y: bool) -> list[list[tuple[float, float]]]:
    """Consecutive points drawable on the axis (a zero on a log axis breaks the line)."""
    runs = [[]]
    for point in points:
        if log_y and point[1] <= 0:
            runs.append([])
        else:
            runs[-1].append(point)
    return [run for run in runs if run]


def _event_markers(axes: _Axes, markers) -> list[str]:
    """A dashed vertical line with its label at each (x, label) inside the x range."""
    parts = []
    top, bottom = MARGIN["top"], MARGIN["top"] + axes.plot_height
    for x, label in markers:
        value = math.log10(x) if axes.log_x and x > 0 else x
        if not (_finite(x) and axes.x_low <= value <= axes.x_high):
            continue
        px = axes.x(x)
        # near the right edge the label goes left of its line (not over the legend)
        near_right = px > MARGIN["left"] + 0.7 * axes.plot_width
        place = f'x="{px - 3:.1f}" text-anchor="end"' if near_right else f'x="{px + 3:.1f}"'
        parts.append(f'<g class="event-marker"><line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{bottom}" '
                     f'stroke="#9467bd" stroke-dasharray="4,3"/><text {place} y="{top + 11}" '
                     f'fill="#9467bd">{escape(label)}</text></g>')
    return parts


def bar_chart(categories: list[str], series: dict[str, list[float]], title: str, y_label: str,
              counts: bool | None = None) -> str:
    """Grouped bars: one group per category, one bar per series, on an axis from zero.

    ``counts`` (None: when every value is a non-negative whole number) puts integer ticks on the axis.
    """
    values = [v for vs in series.values() for v in vs if _finite(v)]
    if counts is None:
        counts = bool(values) and all(v >= 0 and float(v).is_integer() for v in values)
    axes = _Axes([0, len(categories)], values + [0.0], y_from_zero=True, integer_y=counts)
    parts = axes.frame(title, "", y_label, x_ticks=False)
    if values and all(v == 0 for v in values):
        parts.append(_all_zero_note(axes).replace(" (bit-identical)", ""))
    width = 0.8 / max(1, len(series))
    for i, (name, heights) in enumerate(series.items()):
        for j, height in enumerate(heights):
            if not _finite(height):
                continue
            left = axes.x(j + 0.1 + i * width)
            parts.append(f'<rect x="{left:.1f}" y="{min(axes.y(height), axes.y(0)):.1f}" '
                         f'width="{axes.x(width) - axes.x(0):.1f}" height="{abs(axes.y(0) - axes.y(height)):.1f}" '
                         f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(mode_name(name))}: {height:.6g}'
                         f'</title></rect>')
    for j, category in enumerate(categories):
        parts.append(f'<text x="{axes.x(j + 0.5):.1f}" y="{HEIGHT - MARGIN["bottom"] + 17}" '
                     f'text-anchor="middle">{escape(category)}</text>')
    return _chart(parts, list(series))


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG file of 8-bit pixels: [rows, columns] grey, [.., 3] RGB or [.., 4] RGBA (zlib, no dependency)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    rows, columns, channels = pixels.shape
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    scanlines = np.concatenate([np.zeros((rows, 1), np.uint8), pixels.reshape(rows, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", columns, rows, 8, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)) + chunk(b"IEND", b""))


def image_element(pixels: np.ndarray, x: float, y: float, width: float, height: float, css_class: str = "") -> str:
    """An SVG <image> showing ``pixels`` (see :func:`png_bytes`) stretched over the box, voxels kept sharp."""
    data = base64.b64encode(png_bytes(pixels)).decode("ascii")
    return (f'<image class="{css_class}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
            f'preserveAspectRatio="none" style="image-rendering:pixelated" href="data:image/png;base64,{data}"/>')


def grey_levels(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """8-bit grey of an image (window: the 1st to 99th percentile of its finite values unless given)."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if low is None or high is None:
        low, high = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
    scaled = (np.nan_to_num(values, nan=low) - low) / ((high - low) or 1.0)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def grid_picture(axis_positions_x, axis_positions_y, image_x: tuple[float, float], image_y: tuple[float, float],
                 domain_x: tuple[float, float], domain_y: tuple[float, float], title: str,
                 background: np.ndarray | None = None,
                 background_extent: tuple[tuple[float, float], tuple[float, float]] | None = None) -> str:
    """Control points (inside the image green, outside red), the image extent and the transform domain in one plane.

    ``background``: a 2D image slice, numpy order [y, x], drawn in grey under the lattice; ``background_extent``
    ((x0, x1), (y0, y1)) gives the physical outer edges of its first and last column and row (default: the image
    extent), so a reversed axis is drawn the right way round.
    """
    xs = list(axis_positions_x) + list(image_x) + list(domain_x)
    ys = list(axis_positions_y) + list(image_y) + list(domain_y)
    axes = _Axes(xs, ys)
    parts = axes.frame(title, "x (mm)", "y (mm)")
    if background is not None:
        (x0, x1), (y0, y1) = background_extent or ((min(image_x), max(image_x)), (min(image_y), max(image_y)))
        grey = grey_levels(background)
        grey = grey[:, ::-1] if x1 < x0 else grey
        grey = grey if y1 < y0 else grey[::-1]  # rows from the top of the picture (largest y) down
        left, right = sorted((axes.x(x0), axes.x(x1)))
        top, bottom = sorted((axes.y(y0), axes.y(y1)))
        parts.insert(0, image_element(grey, left, top, right - left, bottom - top, "background"))

    def box(x_range, y_range, colour, label):
        left, right = axes.x(x_range[0]), axes.x(x_range[1])
        top, bottom = axes.y(y_range[1]), axes.y(y_range[0])
        return (f'<rect x="{min(left, right):.1f}" y="{min(top, bottom):.1f}" width="{abs(right - left):.1f}" '
                f'height="{abs(bottom - top):.1f}" fill="none" stroke="{colour}" stroke-width="2">'
                f'<title>{label}</title></rect>')

    parts.append(box(domain_x, domain_y, "#1f77b4", "transform domain"))
    parts.append(box(image_x, image_y, "#000" if background is None else "#ff7f0e", "image extent"))
    for x in axis_positions_x:
        for y in axis_positions_y:
            inside = min(image_x) <= x <= max(image_x) and min(image_y) <= y <= max(image_y)
            parts.append(f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" r="4" stroke="#fff" stroke-width="0.7" '
                         f'fill="{"#2ca02c" if inside else "#d62728"}"/>')
    legend = ["image extent (black)" if background is None else "image extent (orange)", "transform domain (blue)",
              "control point inside (green)", "outside (red)"]
    x = MARGIN["left"] + PLOT_WIDTH + 10
    parts.extend(f'<text x="{x}" y="{MARGIN["top"] + 9 + 16 * i}">{escape(t)}</text>' for i, t in enumerate(legend))
    return _svg(parts)
