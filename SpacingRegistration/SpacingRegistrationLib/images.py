"""Input images: reading, checking, and the unit changes the modes apply (spacing override, normalised units)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


class InputImageError(ValueError):
    """An input image cannot be registered; the message names the image and the problem."""


def read_image(path, role: str = "image") -> sitk.Image:
    """Read an image file, with an error naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputImageError(f"{role} file not found: {path}")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputImageError(f"{role} file {path} could not be read as an image ({reason})") from None


def check_image(image: sitk.Image, role: str = "image") -> sitk.Image:
    """Return ``image`` as float32 after checking it can drive a 3D intensity registration."""
    if image.GetDimension() != 3:
        raise InputImageError(f"{role} must be 3D, got a {image.GetDimension()}D image")
    if image.GetNumberOfComponentsPerPixel() != 1 or "complex" in image.GetPixelIDTypeAsString():
        raise InputImageError(f"{role} must have scalar pixels, got {image.GetPixelIDTypeAsString()}")
    size = image.GetSize()
    if min(size) < 1 or int(np.prod(size)) < 8:
        raise InputImageError(f"{role} is empty or too small to register: size {list(size)}")
    if min(size) < 4:
        raise InputImageError(f"{role} needs at least 4 voxels along every axis for a cubic BSpline, got size {list(size)}")
    spacing = image.GetSpacing()
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputImageError(f"{role} spacing must be positive and finite, got {list(spacing)}")
    values = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(values)
    if not finite.all():
        raise InputImageError(f"{role} contains {int(values.size - finite.sum())} NaN or infinite voxel(s)")
    if values.min() == values.max():
        raise InputImageError(f"{role} is constant (every voxel is {float(values.flat[0])!r}): nothing to register")
    return image if image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(image, sitk.sitkFloat32)


def check_pair(fixed: sitk.Image, moving: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """Check both images: a dimension mismatch is named before the per-image checks, a direction mismatch after."""
    if fixed.GetDimension() != moving.GetDimension():
        raise InputImageError(
            f"fixed and moving images differ in dimension: {fixed.GetDimension()}D vs {moving.GetDimension()}D")
    fixed, moving = check_image(fixed, "fixed image"), check_image(moving, "moving image")
    # Spacing studies compare results in voxel units and the spacing override assumes one grid orientation.
    if not np.allclose(fixed.GetDirection(), moving.GetDirection(), rtol=0, atol=DIRECTION_TOLERANCE):
        raise InputImageError(
            f"fixed and moving images have different directions: {_rounded(fixed.GetDirection())} vs "
            f"{_rounded(moving.GetDirection())}; resample the moving image onto the fixed image's orientation first")
    return fixed, moving


#: Largest difference between direction-matrix entries of the fixed and moving images.
DIRECTION_TOLERANCE = 1e-6


def _rounded(values) -> list[float]:
    return [round(float(v), 6) + 0.0 for v in values]


def with_spacing(image: sitk.Image, spacing: float) -> sitk.Image:
    """A copy with isotropic spacing [s,s,s], origin and direction kept (what the report's user did)."""
    if not spacing > 0:
        raise InputImageError(f"spacing must be > 0, got {spacing!r}")
    result = sitk.Image(image)
    result.SetSpacing([float(spacing)] * image.GetDimension())
    return result


def normalisation_factor(image: sitk.Image) -> float:
    """The length that becomes one unit in normalised units: the image's smallest spacing."""
    return float(min(image.GetSpacing()))


def to_normalised_units(image: sitk.Image, factor: float, origin) -> sitk.Image:
    """A copy in normalised units: physical coordinates measured from ``origin`` and divided by ``factor``."""
    result = sitk.Image(image)
    result.SetSpacing([v / factor for v in image.GetSpacing()])
    result.SetOrigin([(v - o) / factor for v, o in zip(image.GetOrigin(), origin)])
    return result


def bspline_from_normalised_units(transform: sitk.BSplineTransform, factor: float, origin) -> sitk.BSplineTransform:
    """The physical BSpline T(x) = origin + factor * T_n((x - origin) / factor) of a normalised-units result:
    grid spacing and coefficients times ``factor``, grid origin mapped back."""
    dimension = transform.GetDimension()
    fixed = list(transform.GetFixedParameters())
    for axis in range(dimension):
        fixed[dimension + axis] = origin[axis] + fixed[dimension + axis] * factor
        fixed[2 * dimension + axis] *= factor
    result = sitk.BSplineTransform(dimension, transform.GetOrder())
    result.SetFixedParameters(fixed)
    result.SetParameters([p * factor for p in transform.GetParameters()])
    return result
