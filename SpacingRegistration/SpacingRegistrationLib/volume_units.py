"""A transform computed with a spacing override, mapped back to the volumes' own units."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def transform_in_volume_units(transform, spacing_override, fixed_spacing, fixed_origin, moving_spacing, moving_origin):
    """``(transform, note, warnings)``: a result transform mapped back from override units to the volumes' own.

    A registration with a spacing override s ran on copies of the images with spacing [s, s, s] (origin and
    direction kept); its transform maps those copies, not the volumes. When both volumes have the same isotropic
    spacing v, the copies are the volumes scaled by s/v about their origins, and the transform in the volumes' units
    is again a BSpline: grid origin O_f + f (g - O_f), grid spacing f h, coefficients f c + (1 - f)(O_m - O_f) with
    f = v/s (exact inside the transform domain, by the partition of unity). Otherwise the transform is returned
    unchanged with a warning. Origins are LPS.
    """
    if spacing_override is None:
        return transform, "", []
    fixed_spacing = np.asarray(fixed_spacing, dtype=float)
    moving_spacing = np.asarray(moving_spacing, dtype=float)
    reference = fixed_spacing[0]
    if not (np.allclose(fixed_spacing, reference, rtol=1e-9, atol=0)
            and np.allclose(moving_spacing, reference, rtol=1e-9, atol=0)):
        return transform, f"spacing override {spacing_override:g} mm units (not converted)", [
            f"The registration ran with a spacing override of {spacing_override:g} mm and the volumes do not share "
            f"one isotropic spacing (fixed {list(fixed_spacing)}, moving {list(moving_spacing)}): the output "
            "transform is in the override units and does not align the volumes in Slicer."]
    factor = reference / float(spacing_override)
    bspline = sitk.BSplineTransform(transform)
    dimension = bspline.GetDimension()
    fixed_origin = np.asarray(fixed_origin, dtype=float)
    moving_origin = np.asarray(moving_origin, dtype=float)
    parameters = np.asarray(bspline.GetFixedParameters(), dtype=float)
    grid_origin = parameters[dimension:2 * dimension]
    parameters[dimension:2 * dimension] = fixed_origin + factor * (grid_origin - fixed_origin)
    parameters[2 * dimension:3 * dimension] *= factor
    coefficients = np.reshape(bspline.GetParameters(), (dimension, -1)) * factor
    coefficients += ((1.0 - factor) * (moving_origin - fixed_origin))[:, None]
    converted = sitk.BSplineTransform(dimension, bspline.GetOrder())
    converted.SetFixedParameters(parameters.tolist())
    converted.SetParameters(coefficients.ravel().tolist())
    return converted, f"converted from the {spacing_override:g} mm override to the volumes' {reference:g} mm", []
