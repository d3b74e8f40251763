"""The fixed-image mask: which voxels the metric samples and the statistics describe.

A mask is a file, a ``sitk.Image`` (a labelmap: any non-zero voxel is inside) or a numpy boolean array in numpy
order on the fixed image's voxel grid. An image whose grid differs from the fixed image's (other size, spacing,
origin or direction, e.g. a segmentation exported on its own geometry) is resampled onto the fixed grid with
nearest neighbour in physical space, as Slicer does with a labelmap; what counts is where it lies, not its voxel
count. A mask that then selects no fixed voxel is refused with one error naming the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .images import InputImageError, read_image

#: Tolerance (relative to the spacing) under which two grids count as the same grid.
GRID_TOLERANCE = 1e-4


def fixed_mask(mask, fixed: sitk.Image) -> sitk.Image:
    """``mask`` as a ``sitkUInt8`` 0/1 image on ``fixed``'s grid (same geometry), checked non-empty."""
    if isinstance(mask, (str, Path)):
        mask = read_image(mask, "mask")
    if isinstance(mask, np.ndarray):
        expected = tuple(reversed(fixed.GetSize()))
        if mask.shape != expected:
            raise InputImageError(f"the mask array's shape {mask.shape} differs from the fixed image's {expected} "
                                  "(numpy order z, y, x)")
        image = sitk.GetImageFromArray(np.asarray(mask != 0, dtype=np.uint8))
        image.CopyInformation(fixed)
    elif isinstance(mask, sitk.Image):
        if mask.GetNumberOfComponentsPerPixel() != 1:
            raise InputImageError(f"the mask has {mask.GetNumberOfComponentsPerPixel()} components per voxel; "
                                  "a mask is a scalar labelmap (non-zero = inside)")
        if mask.GetDimension() != fixed.GetDimension():
            raise InputImageError(f"the mask is {mask.GetDimension()}D but the fixed image is {fixed.GetDimension()}D")
        image = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
        if not same_grid(image, fixed):
            image = sitk.Resample(image, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    else:
        raise InputImageError(f"a mask is a file, an image or a numpy array, not {type(mask).__name__}")
    if not sitk.GetArrayViewFromImage(image).any():
        raise InputImageError("the mask selects no voxel of the fixed image (empty, or it lies outside the fixed "
                              "image's extent)")
    return image


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Same size, and spacing, origin and direction equal within :data:`GRID_TOLERANCE`."""
    if a.GetSize() != b.GetSize():
        return False
    spacing = np.asarray(b.GetSpacing())
    return bool(np.allclose(a.GetSpacing(), spacing, rtol=GRID_TOLERANCE, atol=0)
                and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=GRID_TOLERANCE * spacing.min())
                and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=GRID_TOLERANCE))


def on_work_grid(mask: sitk.Image, work_fixed: sitk.Image) -> sitk.Image:
    """The mask with the work image's geometry (after a spacing override or normalised units): same voxels."""
    result = sitk.Image(mask)
    result.CopyInformation(work_fixed)
    return result


def as_array(mask: sitk.Image | None) -> np.ndarray | None:
    """Numpy-order boolean array of a mask image (None stays None), for the statistics."""
    return None if mask is None else sitk.GetArrayFromImage(mask).astype(bool)
