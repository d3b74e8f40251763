"""Displacement fields of a transform on an image grid: statistics in mm and voxels, folding, differences."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class FieldStatistics:
    """Magnitude statistics of a vector field (mm and voxel units) over the voxels of a mask."""

    voxels: int
    mean_mm: float
    max_mm: float
    percentiles_mm: dict[int, float]
    mean_voxels: float
    max_voxels: float
    percentiles_voxels: dict[int, float]

    def as_dict(self) -> dict:
        return asdict(self)


def displacement_array(transform: sitk.Transform, reference: sitk.Image) -> np.ndarray:
    """Displacement T(x) - x at every voxel of ``reference``, LPS mm, numpy order [z, y, x, component]."""
    field = sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, reference.GetSize(), reference.GetOrigin(),
        reference.GetSpacing(), reference.GetDirection())
    return sitk.GetArrayFromImage(field)


def to_voxel_units(vectors_mm: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """Physical vectors expressed along the image's index axes, in voxels of ``reference``."""
    dimension = reference.GetDimension()
    direction = np.asarray(reference.GetDirection()).reshape(dimension, dimension)
    return (vectors_mm @ direction) / np.asarray(reference.GetSpacing())


def field_statistics(vectors_mm: np.ndarray, reference: sitk.Image, mask: np.ndarray | None = None) -> FieldStatistics:
    """Statistics of vector magnitudes inside ``mask`` (numpy order, same grid as ``reference``)."""
    if mask is not None and mask.shape != vectors_mm.shape[:-1]:
        raise ValueError(f"mask shape {mask.shape} does not match the field's grid {vectors_mm.shape[:-1]}")
    if mask is not None and not mask.any():
        raise ValueError("the mask selects no voxel")
    selected = vectors_mm.reshape(-1, vectors_mm.shape[-1]) if mask is None else vectors_mm[mask]
    mm = np.linalg.norm(selected, axis=-1)
    voxels = np.linalg.norm(to_voxel_units(selected, reference), axis=-1)
    return FieldStatistics(
        voxels=len(selected),
        mean_mm=float(mm.mean()), max_mm=float(mm.max()),
        percentiles_mm={p: float(v) for p, v in zip(PERCENTILES, np.percentile(mm, PERCENTILES))},
        mean_voxels=float(voxels.mean()), max_voxels=float(voxels.max()),
        percentiles_voxels={p: float(v) for p, v in zip(PERCENTILES, np.percentile(voxels, PERCENTILES))})


def minimum_jacobian_determinant(vectors_mm: np.ndarray, reference: sitk.Image) -> float:
    """Smallest determinant of the Jacobian of x + u(x) over the grid (<= 0 means folding)."""
    field = sitk.GetImageFromArray(vectors_mm, isVector=True)
    field.CopyInformation(reference)
    determinant = sitk.DisplacementFieldJacobianDeterminant(field)
    return float(sitk.GetArrayViewFromImage(determinant).min())


def voxel_difference(vectors_a_mm: np.ndarray, reference_a: sitk.Image,
                     vectors_b_mm: np.ndarray, reference_b: sitk.Image) -> np.ndarray:
    """Difference a - b in voxel units, each field in its own image's voxels (grids of equal size).

    Two registrations of the same images at different spacings are compared this way: a result in
    voxels does not depend on the spacing if the registration is spacing-invariant.
    """
    if reference_a.GetSize() != reference_b.GetSize():
        raise ValueError(f"cannot compare fields on grids of different size: "
                         f"{list(reference_a.GetSize())} vs {list(reference_b.GetSize())}")
    return to_voxel_units(vectors_a_mm, reference_a) - to_voxel_units(vectors_b_mm, reference_b)
