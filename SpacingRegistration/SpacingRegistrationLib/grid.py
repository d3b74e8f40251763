"""BSpline control-grid geometry against an image: where the control points are and what they cover.

All coordinates are physical LPS (ITK's convention). A cubic BSpline with mesh size m has m + 3 control
points per axis; the transform domain (where ITK evaluates the spline; identity elsewhere) spans the m
mesh intervals starting one grid spacing after the grid origin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .settings import RegistrationSettings

#: Below this fraction of the image inside the transform domain the geometry is flagged.
MINIMUM_COVERAGE = 0.99
#: Coverage is computed on voxel centres subsampled to at most this many per axis.
COVERAGE_SAMPLES_PER_AXIS = 64


@dataclass(frozen=True)
class GridGeometry:
    """Control grid, transform domain and image extent, with counts and warnings.

    ``axis_positions[a]`` are the physical coordinates (axis a) of the control points along grid axis a
    through the grid origin: the report's "control points at -84.75, -0.625, ..." for an axis-aligned grid.
    """

    mesh_size: tuple[int, ...]
    points_per_axis: tuple[int, ...]
    grid_origin: tuple[float, ...]
    grid_spacing: tuple[float, ...]
    grid_direction: tuple[float, ...]
    axis_positions: tuple[tuple[float, ...], ...]
    control_points: np.ndarray = field(repr=False)
    control_points_inside: np.ndarray = field(repr=False)
    domain_origin: tuple[float, ...]
    domain_physical_dimensions: tuple[float, ...]
    domain_corners: np.ndarray = field(repr=False)
    image_corners: np.ndarray = field(repr=False)
    image_bounds_index: tuple[tuple[float, float], ...]
    inside_per_axis: tuple[int, ...]
    inside_count: int
    outside_count: int
    coverage: float
    warnings: tuple[str, ...]

    def summary(self) -> dict:
        """JSON-ready numbers (no per-point arrays)."""
        return {
            "mesh_size": list(self.mesh_size),
            "points_per_axis": list(self.points_per_axis),
            "grid_origin": list(self.grid_origin),
            "grid_spacing": list(self.grid_spacing),
            "grid_direction": list(self.grid_direction),
            "axis_positions": [list(p) for p in self.axis_positions],
            "domain_origin": list(self.domain_origin),
            "domain_physical_dimensions": list(self.domain_physical_dimensions),
            "image_bounds_index": [list(b) for b in self.image_bounds_index],
            "inside_per_axis": list(self.inside_per_axis),
            "inside_count": self.inside_count,
            "outside_count": self.outside_count,
            "coverage": self.coverage,
            "warnings": list(self.warnings),
        }


def mesh_size_for(image: sitk.Image, settings: RegistrationSettings) -> list[int]:
    """Mesh intervals per axis from the settings' grid specification (mesh size or control-point spacing)."""
    if settings.grid_specification == "mesh_size":
        return list(settings.mesh_size)
    extent_mm = [n * s for n, s in zip(image.GetSize(), image.GetSpacing())]
    if settings.grid_specification == "spacing_mm":
        return [max(1, round(e / settings.grid_spacing_mm)) for e in extent_mm]
    return [max(1, round(n / settings.grid_spacing_voxels)) for n in image.GetSize()]


def initial_bspline(image: sitk.Image, settings: RegistrationSettings) -> sitk.BSplineTransform:
    """Identity cubic BSpline over ``image`` from ``BSplineTransformInitializer``, as the report's user made it."""
    return sitk.BSplineTransformInitializer(image, mesh_size_for(image, settings))


def grid_geometry(transform: sitk.BSplineTransform, image: sitk.Image) -> GridGeometry:
    """Geometry of ``transform``'s control grid against ``image`` (the transform may come from any image)."""
    dimension = transform.GetDimension()
    order = transform.GetOrder()
    fixed = np.asarray(transform.GetFixedParameters(), dtype=float)
    points_per_axis = tuple(int(v) for v in fixed[:dimension])
    origin = fixed[dimension:2 * dimension]
    spacing = fixed[2 * dimension:3 * dimension]
    direction = fixed[3 * dimension:].reshape(dimension, dimension)
    mesh_size = tuple(n - order for n in points_per_axis)

    grid_index = np.stack(np.meshgrid(*[np.arange(n) for n in points_per_axis], indexing="ij"), axis=-1)
    grid_index = grid_index.transpose(list(range(dimension))[::-1] + [dimension]).reshape(-1, dimension)
    control_points = origin + (grid_index * spacing) @ direction.T
    axis_positions = tuple(tuple(float(origin[a] + direction[a, a] * k * spacing[a]) for k in range(points_per_axis[a]))
                           for a in range(dimension))

    lower = np.full(dimension, -0.5)
    upper = np.asarray(image.GetSize(), dtype=float) - 0.5
    point_index = _continuous_index(image, control_points)
    inside = np.all((point_index >= lower) & (point_index <= upper), axis=1)

    domain_origin = np.asarray(transform.GetTransformDomainOrigin(), dtype=float)
    domain_size = np.asarray(transform.GetTransformDomainPhysicalDimensions(), dtype=float)
    domain_corners = _box_corners(domain_origin, direction, domain_size)
    image_corners = _box_corners(np.asarray(image.TransformContinuousIndexToPhysicalPoint(lower.tolist())),
                                 np.asarray(image.GetDirection()).reshape(dimension, dimension),
                                 np.asarray(image.GetSpacing()) * np.asarray(image.GetSize()))
    coverage = _coverage(image, domain_origin, direction, domain_size)
    inside_per_axis = _inside_per_axis(image, points_per_axis, direction, inside)
    geometry_warnings = _warnings(coverage, int(inside.sum()), len(inside), mesh_size, order)

    return GridGeometry(
        mesh_size=mesh_size, points_per_axis=points_per_axis,
        grid_origin=tuple(origin.tolist()), grid_spacing=tuple(spacing.tolist()),
        grid_direction=tuple(direction.ravel().tolist()), axis_positions=axis_positions,
        control_points=control_points, control_points_inside=inside,
        domain_origin=tuple(domain_origin.tolist()), domain_physical_dimensions=tuple(domain_size.tolist()),
        domain_corners=domain_corners, image_corners=image_corners,
        image_bounds_index=tuple((-0.5, float(u)) for u in upper),
        inside_per_axis=inside_per_axis, inside_count=int(inside.sum()), outside_count=int((~inside).sum()),
        coverage=coverage, warnings=geometry_warnings)


def _continuous_index(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    dimension = image.GetDimension()
    direction = np.asarray(image.GetDirection()).reshape(dimension, dimension)
    offsets = points - np.asarray(image.GetOrigin())
    return (offsets @ np.linalg.inv(direction).T) / np.asarray(image.GetSpacing())


def _box_corners(origin: np.ndarray, direction: np.ndarray, size: np.ndarray) -> np.ndarray:
    dimension = len(origin)
    unit = np.array(np.meshgrid(*[[0.0, 1.0]] * dimension, indexing="ij")).reshape(dimension, -1).T
    return origin + (unit * size) @ direction.T


def _coverage(image: sitk.Image, domain_origin, direction, domain_size) -> float:
    """Fraction of the image's voxel centres that lie inside the transform domain."""
    axes = [np.unique(np.linspace(0, n - 1, min(n, COVERAGE_SAMPLES_PER_AXIS)).round()) for n in image.GetSize()]
    index = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, image.GetDimension())
    image_direction = np.asarray(image.GetDirection()).reshape(image.GetDimension(), -1)
    points = np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ image_direction.T
    in_grid = (points - domain_origin) @ np.linalg.inv(direction).T
    tolerance = 1e-9 * np.max(np.abs(domain_size))
    inside = np.all((in_grid >= -tolerance) & (in_grid <= domain_size + tolerance), axis=1)
    return float(inside.mean())


def _inside_per_axis(image, points_per_axis, direction, inside) -> tuple[int, ...]:
    """Control points inside the image extent along each grid axis (when grid and image axes align)."""
    dimension = len(points_per_axis)
    image_direction = np.asarray(image.GetDirection()).reshape(dimension, dimension)
    if not np.allclose(np.abs(image_direction.T @ direction), np.eye(dimension), atol=1e-6):
        return tuple(-1 for _ in range(dimension))
    shape = points_per_axis[::-1]
    inside_grid = inside.reshape(shape)
    counts = []
    for axis in range(dimension):
        numpy_axis = dimension - 1 - axis
        counts.append(int(np.any(inside_grid, axis=tuple(a for a in range(dimension) if a != numpy_axis)).sum()))
    return tuple(counts)


def _warnings(coverage: float, inside: int, total: int, mesh_size, order: int) -> tuple[str, ...]:
    messages = []
    if coverage == 0:
        messages.append("The transform domain does not overlap the image: the BSpline has no effect on it.")
    elif coverage < MINIMUM_COVERAGE:
        messages.append(f"Only {coverage:.0%} of the image lies inside the transform domain; "
                        "the transform is the identity on the rest.")
    if inside * 2 < total:
        messages.append(
            f"{total - inside} of {total} control points lie outside the image (a cubic BSpline with mesh "
            f"{list(mesh_size)} has mesh + {order} = {[m + order for m in mesh_size]} points per axis); "
            "they act on the image only through their support.")
    return tuple(messages)

