"""Error of a recovered registration against a known deformation (a "truth").

Convention (SimpleITK's): the registration transform maps fixed points to moving points, T(x) = x + u(x),
and the truth is such a u on the fixed image's grid, in LPS mm. A truth comes from a transform file (any
SimpleITK transform, displacement-field transforms included) or from a displacement image (a 3-component
vector image, LPS mm, on any grid: it is resampled onto the fixed grid, zero outside its own extent).

With a spacing override the run registered images of spacing s: the recovered field is taken in voxels of
the image it registered, the truth in voxels of the native image, and millimetres are the native image's.
A spacing-invariant registration therefore has the same error at every spacing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .displacement import displacement_array, field_statistics, to_voxel_units
from .images import InputImageError, read_image
from .transform_files import read_transform

#: File name endings read as transforms; anything else is read as a displacement image.
TRANSFORM_SUFFIXES = (".tfm", ".txt", ".mat", ".h5", ".hdf5", ".xfm")
#: Two grids whose geometry differs by less than this (mm, or direction entries) are the same grid.
SAME_GRID_TOLERANCE = 1e-9


class TruthError(InputImageError):
    """A known deformation cannot be used; the message names the file or value and the problem."""


@dataclass(frozen=True)
class Truth:
    """The known displacement u on the fixed image's native grid (numpy order [z, y, x, component], LPS mm)."""

    field_mm: np.ndarray
    reference: sitk.Image
    source: str

    def as_image(self) -> sitk.Image:
        """u as a vector float64 image on the fixed grid (what a study folder stores)."""
        image = sitk.GetImageFromArray(self.field_mm, isVector=True)
        image.CopyInformation(self.reference)
        return image


@dataclass(frozen=True)
class ErrorFigures:
    """Magnitude of an error field over a region: mean, 95th percentile and max, in voxels and mm."""

    mean_voxels: float
    p95_voxels: float
    max_voxels: float
    mean_mm: float
    p95_mm: float
    max_mm: float


@dataclass(frozen=True)
class RegistrationError:
    """Error of the recovered field and of doing nothing (identity, i.e. the truth's own magnitude)."""

    recovered: ErrorFigures
    identity: ErrorFigures
    region: str
    voxels: int
    source: str

    @property
    def relative_to_identity(self) -> float:
        """Mean error of the result over the mean error of doing nothing: below 1 is better than nothing."""
        return self.recovered.mean_voxels / self.identity.mean_voxels if self.identity.mean_voxels else float("inf")

    def as_dict(self) -> dict:
        return {**asdict(self), "relative_to_identity": self.relative_to_identity}


def load_truth(path, fixed: sitk.Image) -> Truth:
    """Read a transform file or a displacement image (through the project's checked readers: a truncated or
    damaged file is refused) and express it on ``fixed``'s grid."""
    path = Path(path)
    if not path.is_file():
        raise TruthError(f"truth file not found: {path}")
    try:
        if path.name.lower().endswith(TRANSFORM_SUFFIXES):
            return truth_from_transform(read_transform(path, "truth"), fixed, str(path))
        return truth_from_image(read_image(path, "truth"), fixed, str(path))
    except TruthError:
        raise
    except InputImageError as error:
        raise TruthError(str(error)) from None


def truth_from_transform(transform: sitk.Transform, fixed: sitk.Image, source: str = "transform") -> Truth:
    """u(x) = T(x) - x at every voxel of ``fixed``."""
    if transform.GetDimension() != fixed.GetDimension():
        raise TruthError(f"truth {source} is a {transform.GetDimension()}D transform; the images are "
                         f"{fixed.GetDimension()}D")
    field = displacement_array(transform, fixed)
    return _checked(Truth(field, _geometry(fixed), source))


def truth_from_image(image: sitk.Image, fixed: sitk.Image, source: str = "displacement image") -> Truth:
    """A displacement image (vector, LPS mm) resampled linearly onto ``fixed``'s grid (zero outside it)."""
    dimension = fixed.GetDimension()
    if image.GetDimension() != dimension:
        raise TruthError(f"truth {source} is a {image.GetDimension()}D image; the images are {dimension}D")
    if image.GetNumberOfComponentsPerPixel() != dimension or "complex" in image.GetPixelIDTypeAsString():
        raise TruthError(f"truth {source} must be a displacement image with {dimension} components per voxel "
                         f"(LPS mm), got {image.GetNumberOfComponentsPerPixel()} component(s) of "
                         f"{image.GetPixelIDTypeAsString()}")
    vectors = sitk.Cast(image, sitk.sitkVectorFloat64)
    if _same_grid(vectors, fixed):
        field = sitk.GetArrayFromImage(vectors)
    else:
        inside = sitk.Image(vectors.GetSize(), sitk.sitkUInt8) + 1
        inside.CopyInformation(vectors)
        covered = sitk.Resample(inside, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        if not sitk.GetArrayViewFromImage(covered).any():
            raise TruthError(f"truth {source} does not overlap the fixed image: its grid (origin "
                             f"{[round(v, 3) for v in vectors.GetOrigin()]} mm, size {list(vectors.GetSize())}) "
                             "lies outside the fixed image's extent")
        field = displacement_array(sitk.DisplacementFieldTransform(vectors), fixed)
    return _checked(Truth(field, _geometry(fixed), source))


def as_truth(value, fixed: sitk.Image) -> Truth:
    """A :class:`Truth` from a Truth, a file path, a transform or a displacement image."""
    if isinstance(value, Truth):
        if not _same_grid(value.reference, fixed):
            raise TruthError(f"truth {value.source} is on another grid than the fixed image")
        return value
    if isinstance(value, (str, Path)):
        return load_truth(value, fixed)
    if isinstance(value, sitk.Transform):
        return truth_from_transform(value, fixed)
    if isinstance(value, sitk.Image):
        return truth_from_image(value, fixed)
    raise TruthError(f"a truth must be a file, a transform or a displacement image, got {type(value).__name__}")


def error_of_transform(truth: Truth, transform: sitk.Transform, registered_fixed: sitk.Image,
                       mask: np.ndarray | None = None) -> RegistrationError:
    """Error of ``transform`` (in the units of ``registered_fixed``, the fixed image as registered)."""
    recovered_mm = displacement_array(transform, registered_fixed)
    return error_of_voxel_field(truth, to_voxel_units(recovered_mm, registered_fixed), mask)


def error_of_voxel_field(truth: Truth, recovered_voxels: np.ndarray,
                         mask: np.ndarray | None = None) -> RegistrationError:
    """Error of a recovered field given in voxels of the image it registered (same grid size as the truth)."""
    if recovered_voxels.shape != truth.field_mm.shape:
        raise TruthError(f"the recovered field's grid {recovered_voxels.shape[:-1]} differs from the truth's "
                         f"{truth.field_mm.shape[:-1]}")
    reference = truth.reference
    error_voxels = recovered_voxels - to_voxel_units(truth.field_mm, reference)
    recovered = _figures(field_statistics(_voxels_to_mm(error_voxels, reference), reference, mask))
    identity_statistics = field_statistics(truth.field_mm, reference, mask)
    return RegistrationError(recovered=recovered, identity=_figures(identity_statistics),
                             region="image" if mask is None else "mask", voxels=identity_statistics.voxels,
                             source=truth.source)


def _figures(statistics) -> ErrorFigures:
    return ErrorFigures(mean_voxels=statistics.mean_voxels, p95_voxels=statistics.percentiles_voxels[95],
                        max_voxels=statistics.max_voxels, mean_mm=statistics.mean_mm,
                        p95_mm=statistics.percentiles_mm[95], max_mm=statistics.max_mm)


def _voxels_to_mm(vectors_voxels: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """Inverse of :func:`displacement.to_voxel_units` (index-axis voxels to LPS mm)."""
    dimension = reference.GetDimension()
    direction = np.asarray(reference.GetDirection()).reshape(dimension, dimension)
    return (vectors_voxels * np.asarray(reference.GetSpacing())) @ direction.T


def _geometry(image: sitk.Image) -> sitk.Image:
    """An empty image with ``image``'s grid (the truth keeps only the geometry)."""
    geometry = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    geometry.CopyInformation(image)
    return geometry


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return a.GetSize() == b.GetSize() and all(
        np.allclose(x, y, rtol=0, atol=SAME_GRID_TOLERANCE)
        for x, y in ((a.GetSpacing(), b.GetSpacing()), (a.GetOrigin(), b.GetOrigin()),
                     (a.GetDirection(), b.GetDirection())))


def _checked(truth: Truth) -> Truth:
    if not np.isfinite(truth.field_mm).all():
        raise TruthError(f"truth {truth.source} has NaN or infinite displacements on the fixed grid")
    return truth
