"""Input images: reading, checking, and the unit changes the modes apply (spacing override, normalised units)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .image_files import ImageFileError, verify_image_file


class InputImageError(ValueError):
    """An input image cannot be registered; the message names the image and the problem."""


def check_image_file(path, role: str = "image") -> Path:
    """Refuse, without reading the voxels into memory, a file that is missing, a folder, empty, unreadable, or holds
    fewer voxel bytes than its header promises (see :mod:`image_files`). Front ends that load files another way
    (Slicer's volume loaders) call this first."""
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"{role} file not found: {path}")
    try:
        verify_image_file(path)
    except ImageFileError as error:
        raise InputImageError(f"{role} file {path} {error}") from None
    except PermissionError:
        raise InputImageError(f"{role} file {path} cannot be read: permission denied") from None
    except OSError as error:
        raise InputImageError(f"{role} file {path} cannot be read: {error.strerror or error}") from None
    return path


def read_image(path, role: str = "image") -> sitk.Image:
    """Read an image file after :func:`check_image_file`; any problem is one :class:`InputImageError` naming the
    file (truncated, empty, a folder, unreadable, not an image, unsupported pixel type, odd header)."""
    path = check_image_file(path, role)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputImageError(f"{role} file {path} {_itk_reason(str(error))}") from None
    check_header(image, f"{role} file {path}")
    return image


def _itk_reason(message: str) -> str:
    """ITK's exception text as the problem it names, without source locations or misleading errno text."""
    if "Unable to determine ImageIO reader" in message or "Could not create IO object" in message:
        return "is not an image in a format SimpleITK reads"
    if "Refusing to change spacing" in message:
        return f"has a zero or negative spacing in its header ({message.strip().splitlines()[-1].strip()[:200]})"
    if "_nrrdSpaceVectorParse" in message:
        return "has a malformed or non-finite (NaN/inf) vector in its NRRD header"
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if any("pixel type" in line.lower() or "pixeltype" in line.lower() for line in lines):
        detail = next(line for line in lines if "pixel" in line.lower())
        return f"has an unsupported pixel type ({detail.split('ERROR:')[-1].strip()[:200]})"
    meaningful = [line for line in lines if not line.startswith(("Reason:", "Exception thrown", "/"))
                  and "No such file or directory" not in line]
    reason = meaningful[-1] if meaningful else "unknown reason"
    reason = re.sub(r"^.*?(ITK ERROR|sitk::ERROR):\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", reason)
    return f"could not be read as an image ({reason[:300]})"


#: Largest deviation of the direction matrix's D^T D from the identity.
ORTHONORMAL_TOLERANCE = 1e-4


def check_header(image: sitk.Image, what: str = "image"):
    """Refuse geometry a registration cannot use: spacing, origin or direction that is not finite, spacing that is
    not positive, and a direction matrix that is not orthonormal (a sheared or scaled grid). Files rarely get this
    far with such values (ITK refuses zero spacing and reads a negative one as a flipped direction); images made
    in memory can."""
    spacing, origin = np.array(image.GetSpacing()), np.array(image.GetOrigin())
    dimension = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(dimension, dimension)
    for name, values in (("spacing", spacing), ("origin", origin), ("direction", direction)):
        if not np.isfinite(values).all():
            raise InputImageError(f"{what} has a non-finite {name}: {values.ravel().tolist()}")
    if not (spacing > 0).all():
        raise InputImageError(f"{what} spacing must be positive and finite, got {spacing.tolist()}")
    if np.abs(direction.T @ direction - np.eye(dimension)).max() > ORTHONORMAL_TOLERANCE:
        raise InputImageError(f"{what} has a direction matrix that is not orthonormal (a sheared or scaled grid: "
                              f"{_rounded(direction.ravel())}); resample it onto an orthogonal grid first")


def check_image(image: sitk.Image, role: str = "image") -> sitk.Image:
    """Return ``image`` as float32 after checking it can drive a 3D intensity registration."""
    if image.GetDimension() != 3:
        raise InputImageError(f"{role} must be 3D, got a {image.GetDimension()}D image")
    check_header(image, role)
    if image.GetNumberOfComponentsPerPixel() != 1 or "complex" in image.GetPixelIDTypeAsString():
        raise InputImageError(f"{role} must have scalar pixels, got {image.GetPixelIDTypeAsString()}")
    size = image.GetSize()
    if min(size) < 1 or int(np.prod(size)) < 8:
        raise InputImageError(f"{role} is empty or too small to register: size {list(size)}")
    if min(size) < 4:
        raise InputImageError(f"{role} needs at least 4 voxels along every axis for a cubic BSpline, got size {list(size)}")
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
