"""Maps over the anatomy: per-voxel figures (spread, difference, displacement, Jacobian) coloured over the fixed
image in three orthogonal slices, with a colour bar, as inline SVG holding PNG pictures (one self-contained page).

Arrays are numpy order [z, y, x] on the fixed image's grid. Slices are drawn along the image's index axes, each
voxel as wide and tall as its spacing, so anisotropic (and oblique) images keep their proportions.
"""

from __future__ import annotations

import zlib
from html import escape

import numpy as np
import SimpleITK as sitk

from .displacement import displacement_array, to_voxel_units
from .svg import grey_levels, image_element, nice_ticks, tick_label

#: Below this fraction of the colour scale's top a value is transparent (the anatomy shows).
THRESHOLD = 0.02
#: Opacity of the colour over the grey image: from the threshold to the top of the scale.
OPACITY = (0.55, 0.9)
#: Sequential colour map (plasma's stops): no grey in it, so a coloured pixel is never mistaken for anatomy.
SEQUENTIAL = ((0.0, (13, 8, 135)), (0.25, (126, 3, 168)), (0.5, (204, 71, 120)), (0.75, (248, 149, 64)),
              (1.0, (240, 249, 33)))
#: Jacobian determinant: blue below 1 (compression), red above (expansion), transparent near 1.
DIVERGING = ((0.0, (33, 102, 172)), (0.5, (247, 247, 247)), (1.0, (178, 24, 43)))
FOLDING_COLOUR = (0, 200, 0)
OUTLINE_COLOUR = (0, 255, 255)
#: Size of the longest physical side of a slice picture, in pixels.
PICTURE_SIZE = 170
#: Longest side of a slice picture in stored pixels: larger slices are reduced in blocks (the page stays light).
MAXIMUM_PIXELS = 2 * PICTURE_SIZE
VIEWS = ("axial", "coronal", "sagittal")
_GAP, _LABEL, _BAR_WIDTH = 8, 16, 14


def slice_maps(fixed: sitk.Image, overlays: dict[str, np.ndarray], unit: str, title: str,
               mask: np.ndarray | None = None, vmax: float | None = None, slices="middle") -> str:
    """Each overlay over the fixed image in three orthogonal slices, all on ONE colour scale [0, vmax].

    ``vmax`` defaults to the largest finite value over every overlay (inside ``mask`` when given), so maps that
    are compared share the scale. ``slices``: "middle", "max" (through each overlay's largest value inside the
    mask, else inside the object: the fixed image above its mean) or an index (k, j, i) in numpy order. Values
    below a small fraction of vmax are transparent.
    """
    fixed_array = _fixed_array(fixed)
    arrays = {name: _checked(name, values, fixed_array.shape) for name, values in overlays.items()}
    if not arrays:
        raise ValueError("slice_maps needs at least one overlay")
    mask_array = None if mask is None else _checked("mask", mask, fixed_array.shape).astype(bool)
    if vmax is None:
        vmax = max((_finite_max(a, mask_array) for a in arrays.values()), default=0.0)
    if not (np.isfinite(vmax) and vmax >= 0):
        raise ValueError(f"the colour scale's top must be a finite number >= 0, not {vmax}")

    def colours(values):
        return _sequential(values, vmax)

    region = _object_region(fixed_array, mask_array)
    rows = [(name, _slice_index(values, region, slices), colours, values, np.asarray)
            for name, values in arrays.items()]
    bar = _colour_bar_sequential(vmax, unit)
    return _figure(fixed, fixed_array, rows, mask_array, title, bar,
                   f'data-vmax="{vmax:.6g}" data-unit="{escape(unit)}"')


def displacement_maps(fixed: sitk.Image, field_voxels_magnitude: np.ndarray, jacobian: np.ndarray,
                      title: str = "Displacement and Jacobian determinant", mask: np.ndarray | None = None,
                      unit: str = "voxels", slices="middle") -> str:
    """One registration over the anatomy: displacement magnitude and Jacobian determinant (folding, <= 0, in a
    distinct colour), each with its own colour bar."""
    magnitude = slice_maps(fixed, {"displacement magnitude": field_voxels_magnitude}, unit,
                           f"{title}: displacement magnitude", mask=mask, slices=slices)
    fixed_array = _fixed_array(fixed)
    determinant = _checked("jacobian", jacobian, fixed_array.shape)
    mask_array = None if mask is None else _checked("mask", mask, fixed_array.shape).astype(bool)
    finite = determinant[np.isfinite(determinant) & (True if mask_array is None else mask_array)]
    span = max(float(np.abs(finite - 1).max()) if finite.size else 0.0, 0.05)
    folding = folding_count(determinant, mask_array)
    index = _slice_index(-determinant if folding else np.abs(determinant - 1), _object_region(fixed_array, mask_array),
                         slices)
    rows = [("Jacobian determinant", index, lambda values: _diverging(values, span), determinant, _jacobian_salience)]
    jacobian_map = _figure(fixed, fixed_array, rows, mask_array, f"{title}: Jacobian determinant "
                           f"({folding} folding voxel{'s' if folding != 1 else ''})",
                           _colour_bar_jacobian(span), f'data-folding="{folding}"')
    return magnitude + jacobian_map


def transform_maps(transform: sitk.Transform, fixed: sitk.Image, title: str = "Registration",
                   mask: np.ndarray | None = None, slices="middle") -> str:
    """:func:`displacement_maps` of a transform on the fixed image's grid: |T(x) - x| in voxels and the Jacobian
    determinant of x -> T(x)."""
    magnitude, jacobian = displacement_and_jacobian(transform, fixed)
    return displacement_maps(fixed, magnitude, jacobian, title, mask=mask, slices=slices)


def displacement_and_jacobian(transform: sitk.Transform, fixed: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """|T(x) - x| in voxels of ``fixed`` and the Jacobian determinant of x -> T(x), numpy order on its grid."""
    vectors_mm = displacement_array(transform, fixed)
    magnitude = np.linalg.norm(to_voxel_units(vectors_mm, fixed), axis=-1)
    field = sitk.GetImageFromArray(vectors_mm, isVector=True)
    field.CopyInformation(fixed)
    del vectors_mm
    return magnitude, sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))


def folding_count(jacobian: np.ndarray, mask: np.ndarray | None = None) -> int:
    """Voxels (inside ``mask`` when given) where the Jacobian determinant is <= 0: the deformation folds there."""
    return int(((np.asarray(jacobian) <= 0) & (True if mask is None else np.asarray(mask, dtype=bool))).sum())


def axial_background(image: sitk.Image) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """The middle axial slice of ``image`` ([y, x]) and the physical x and y of its first and last columns' and
    rows' outer edges, for :func:`svg.grid_picture`'s background (exact for axis-aligned images)."""
    array = _volume(sitk.GetArrayFromImage(image))
    k = array.shape[0] // 2
    size = image.GetSize()
    index = [0.0] * image.GetDimension()
    if image.GetDimension() == 3:
        index[2] = float(k)

    def edge(i_x: float, i_y: float):
        point = list(index)
        point[0], point[1] = i_x, i_y
        return image.TransformContinuousIndexToPhysicalPoint(point)

    first, last_x, last_y = edge(-0.5, -0.5), edge(size[0] - 0.5, -0.5), edge(-0.5, size[1] - 0.5)
    return array[k].astype(float), (first[0], last_x[0]), (first[1], last_y[1])


def _volume(array: np.ndarray) -> np.ndarray:
    """A 2D image as a volume of one slice."""
    return array[None] if array.ndim == 2 else array


def _fixed_array(fixed: sitk.Image) -> np.ndarray:
    if fixed.GetNumberOfComponentsPerPixel() != 1 or fixed.GetDimension() not in (2, 3):
        raise ValueError(f"the maps are drawn over a scalar 2D or 3D image, not a {fixed.GetDimension()}D image "
                         f"with {fixed.GetNumberOfComponentsPerPixel()} components per voxel")
    return _volume(sitk.GetArrayViewFromImage(fixed))


def _checked(name: str, values, shape) -> np.ndarray:
    """``values`` (array or image) as a volume of the fixed grid's shape; not copied (maps can be large)."""
    values = _volume(sitk.GetArrayViewFromImage(values) if isinstance(values, sitk.Image) else np.asarray(values))
    if values.shape != tuple(shape):
        raise ValueError(f"the map '{name}' has shape {values.shape}, not the fixed image's {tuple(shape)} "
                         "(numpy order [z, y, x])")
    return values


def _finite_max(values: np.ndarray, mask: np.ndarray | None) -> float:
    selected = values[np.isfinite(values) & (True if mask is None else mask)]
    return float(selected.max()) if selected.size else 0.0


def _object_region(fixed_array: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """Where slices "through the largest value" look first: the mask, else the object (fixed image above its mean),
    so that a maximum in the background at the image's edge does not give a slice with no anatomy in it."""
    if mask is not None:
        return mask
    inside = fixed_array > fixed_array.mean()
    return inside if inside.any() else None


def _slice_index(values: np.ndarray, mask: np.ndarray | None, slices) -> tuple[int, int, int]:
    if isinstance(slices, str) and slices == "middle":
        return tuple(n // 2 for n in values.shape)
    if isinstance(slices, str) and slices == "max":
        finite = np.isfinite(values)
        scored = np.where(finite & (True if mask is None else mask), values, -np.inf)
        if not (scored > 0).any():  # nothing to show inside the region: the largest value anywhere
            scored = np.where(finite, values, -np.inf)
        if not np.isfinite(scored).any():
            return tuple(n // 2 for n in values.shape)
        return tuple(int(i) for i in np.unravel_index(np.argmax(scored), values.shape))
    if isinstance(slices, str) or len(slices) != 3 or not all(0 <= int(s) < n for s, n in zip(slices, values.shape)):
        raise ValueError(f"slices must be 'middle', 'max' or an index (k, j, i) inside {values.shape}, not {slices!r}")
    return tuple(int(s) for s in slices)


def _views(volume: np.ndarray, index) -> list[np.ndarray]:
    """Axial [y, x], coronal [z, x] and sagittal [z, y] slices through ``index``, z drawn upwards."""
    k, j, i = index
    return [volume[k], volume[::-1, j, :], volume[::-1, :, i]]


def _view_sizes(shape, spacing, scale: float) -> list[tuple[float, float]]:
    """Picture (width, height) in pixels of each view: physical extent times ``scale``."""
    nz, ny, nx = shape
    sx, sy, sz = (tuple(spacing) + (1.0,))[:3]
    return [(nx * sx * scale, ny * sy * scale), (nx * sx * scale, nz * sz * scale), (ny * sy * scale, nz * sz * scale)]


def _interpolate(stops, level: np.ndarray) -> np.ndarray:
    positions = [p for p, _ in stops]
    return np.stack([np.interp(level, positions, [c[channel] for _, c in stops]) for channel in range(3)], axis=-1)


def _sequential(values: np.ndarray, vmax: float) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, opacity) of values on [0, vmax]; transparent below the threshold and where not finite."""
    values = np.asarray(values, dtype=float)
    level = np.clip(np.nan_to_num(values / vmax if vmax > 0 else np.zeros_like(values), nan=0.0), 0, 1)
    shown = np.isfinite(values) & (level >= THRESHOLD) & (vmax > 0)
    opacity = np.where(shown, OPACITY[0] + (OPACITY[1] - OPACITY[0]) * level, 0.0)
    return _interpolate(SEQUENTIAL, level), opacity


def _diverging(values: np.ndarray, span: float) -> tuple[np.ndarray, np.ndarray]:
    """Jacobian determinant around 1 on [1 - span, 1 + span]; folding (<= 0) opaque in its own colour."""
    values = np.asarray(values, dtype=float)
    level = np.clip(np.nan_to_num((values - 1) / span, nan=0.0), -1, 1)
    rgb = _interpolate(DIVERGING, (level + 1) / 2)
    folding = np.isfinite(values) & (values <= 0)
    rgb[folding] = FOLDING_COLOUR
    shown = np.isfinite(values) & (np.abs(level) >= THRESHOLD)
    opacity = np.where(shown, np.minimum(OPACITY[1], 2 * np.abs(level)), 0.0)  # near 1 (white) the anatomy shows
    return rgb, np.where(folding, 1.0, opacity)


def _reduce(picture: np.ndarray, step: int, salience=None) -> np.ndarray:
    """``picture`` in blocks of step x step pixels: their mean, or (``salience``) their most salient value, so a
    peak or a folding voxel of a large image stays visible."""
    if step <= 1:
        return picture
    rows, columns = -(-picture.shape[0] // step) * step, -(-picture.shape[1] // step) * step
    padded = np.pad(picture, ((0, rows - picture.shape[0]), (0, columns - picture.shape[1])), mode="edge")
    blocks = padded.reshape(rows // step, step, columns // step, step).swapaxes(1, 2).reshape(
        rows // step, columns // step, step * step)
    if salience is None:
        return blocks.astype(float).mean(axis=-1)
    score = np.nan_to_num(np.asarray(salience(blocks), dtype=float), nan=-np.inf)
    return np.take_along_axis(blocks, score.argmax(axis=-1)[..., None], axis=-1)[..., 0]


def _jacobian_salience(values: np.ndarray) -> np.ndarray:
    """Folding first, then the largest change of volume."""
    return np.where(values <= 0, np.inf, np.abs(values - 1))


def _outline(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (or on the picture's border)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _picture(grey: np.ndarray, rgb: np.ndarray, opacity: np.ndarray, outline: np.ndarray | None) -> np.ndarray:
    blended = grey[..., None] * (1 - opacity[..., None]) + rgb * opacity[..., None]
    if outline is not None:
        blended[outline] = OUTLINE_COLOUR
    return blended.round().clip(0, 255).astype(np.uint8)


def _figure(fixed: sitk.Image, fixed_array: np.ndarray, rows, mask, title: str, bar: list, attributes: str) -> str:
    """Rows of three slice pictures (label, slice index, colour function, values, salience for reducing large
    slices) and one colour bar; ``attributes`` go on the <svg> element (figures for tests and scripts)."""
    finite = fixed_array[np.isfinite(fixed_array)]
    window = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
    spacing = fixed.GetSpacing()
    shape = fixed_array.shape
    extents = [n * s for n, s in zip(shape[::-1], (tuple(spacing) + (1.0,))[:3])]
    scale = PICTURE_SIZE / max(extents)
    sizes = _view_sizes(shape, spacing, scale)
    views = range(1) if shape[0] == 1 else range(3)
    row_height = max(sizes[v][1] for v in views) + _LABEL
    parts = [f'<text x="0" y="14" font-weight="bold">{escape(title)}</text>']
    y = 24
    for name, index, colours, values, salience in rows:
        parts.append(f'<text x="0" y="{y + 11}">{escape(name)}</text>')
        x = 0.0
        for v in views:
            step = -(-max(_views(fixed_array, index)[v].shape) // MAXIMUM_PIXELS)
            outline = None if mask is None else _outline(_reduce(_views(mask, index)[v], step, np.asarray))
            # Per slice: a volume of colours would not fit in memory.
            rgb, opacity = colours(_reduce(_views(values, index)[v], step, salience))
            grey = grey_levels(_reduce(_views(fixed_array, index)[v], step), *window)
            pixels = _picture(grey, rgb, opacity, outline)
            width, height = sizes[v]
            position = ("k", "j", "i")[v]
            parts.append(image_element(pixels, x, y + _LABEL, width, height, f"slice {VIEWS[v]}"))
            parts.append(f'<text x="{x + 2:.1f}" y="{y + _LABEL + height - 3:.1f}" fill="#fff" font-size="9">'
                         f'{VIEWS[v]} {position}={index[v]}</text>')
            x += width + _GAP
        y += row_height + _GAP
    pictures_width = sum(sizes[v][0] + _GAP for v in views)
    bar_height = max(60.0, y - 24 - _GAP - _LABEL)
    parts.append(f'<g class="colour-bar" transform="translate({pictures_width + 6:.1f},{24 + _LABEL})">'
                 + "".join(_bar_parts(bar, bar_height)) + "</g>")
    width = pictures_width + 6 + _BAR_WIDTH + 110
    height = max(y, 24 + _LABEL + bar_height + 8 + 13 * len(bar[2]) + (16 if bar[3] else 0))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="anatomy-map" {attributes} '
            f'width="{width:.0f}" height="{height:.0f}" font-family="sans-serif" font-size="11">'
            + "".join(parts) + "</svg>")


def _bar_parts(bar: list, height: float) -> list[str]:
    """A colour bar [stops, ticks [(level, label)], caption lines, swatch (colour, label) or None] at 0,0."""
    stops, ticks, caption, swatch = bar
    gradient_id = f"bar{zlib.crc32(repr((stops, caption)).encode()):08x}"
    parts = [f'<defs><linearGradient id="{gradient_id}" x1="0" y1="1" x2="0" y2="0">'
             + "".join(f'<stop offset="{p:.3f}" stop-color="rgb{tuple(int(c) for c in colour)}"/>'
                       for p, colour in stops)
             + "</linearGradient></defs>",
             f'<rect x="0" y="0" width="{_BAR_WIDTH}" height="{height:.1f}" fill="url(#{gradient_id})" stroke="#444"/>']
    for level, label in ticks:
        y = height * (1 - level)
        parts.append(f'<line x1="{_BAR_WIDTH}" x2="{_BAR_WIDTH + 4}" y1="{y:.1f}" y2="{y:.1f}" stroke="#444"/>'
                     f'<text class="colour-bar-tick" x="{_BAR_WIDTH + 6}" y="{y + 4:.1f}">{escape(label)}</text>')
    for line, text in enumerate(caption):
        parts.append(f'<text class="colour-bar-caption" x="0" y="{height + 16 + 13 * line:.1f}">{escape(text)}</text>')
    if swatch:
        colour, text = swatch
        top = height + 10 + 13 * len(caption)
        parts.append(f'<rect x="0" y="{top:.1f}" width="{_BAR_WIDTH}" height="10" fill="rgb{colour}"/>'
                     f'<text x="{_BAR_WIDTH + 6}" y="{top + 9:.1f}">{escape(text)}</text>')
    return parts


def _colour_bar_sequential(vmax: float, unit: str) -> list:
    stops = [(p, c) for p, c in SEQUENTIAL]
    if vmax <= 0:
        return [stops, [(0.0, "0")], [unit, "all zero (bit-identical)"], None]
    ticks = [(t / vmax, tick_label(t)) for t in nice_ticks(0.0, vmax) if t < vmax * 0.9]
    ticks.append((1.0, f"{vmax:.3g} (max)"))
    return [stops, ticks, [unit, f"clear below {THRESHOLD * vmax:.2g}"], None]


def _colour_bar_jacobian(span: float) -> list:
    low, high = 1 - span, 1 + span
    ticks = [((t - low) / (high - low), tick_label(t)) for t in nice_ticks(low, high)]
    return [list(DIVERGING), ticks, ["Jacobian determinant", "1: volume kept"], (FOLDING_COLOUR, "folding (<= 0)")]
