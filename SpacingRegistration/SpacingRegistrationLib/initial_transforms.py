"""An initial transform (e.g. a rigid or affine General Registration result) composed before the BSpline.

It maps fixed points to moving points in the images' own (file) physical space, as ITK and Slicer's transform
files do. The method receives it as its *moving initial transform*, so the whole mapping is
``x -> initial(bspline(x))``: the BSpline is optimised on top of it, in the fixed image's space. Saved, the whole
mapping is a ``CompositeTransform`` [initial, bspline] (ITK applies the last-listed transform first).

The spacing override and normalised units register images whose physical coordinates are an affine map ``W`` of
the file's (override: ``o + D diag(s/spacing) D^T (x - o)``; normalised units: ``(x - o) / factor``). An initial
transform ``T`` then becomes ``W o T o W^-1``, which keeps its voxel-to-voxel meaning exactly, for any transform
type; nothing needs to be refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .settings import RegistrationSettings
from .transform_files import TransformFileError, read_transform


def load(value) -> sitk.Transform:
    """A transform from a file path (read with the whole-file checks) or a ``sitk.Transform`` (copied)."""
    if isinstance(value, (str, Path)):
        return read_transform(value, "initial transform").Downcast()
    if isinstance(value, sitk.Transform):
        if value.GetDimension() != 3:
            raise TransformFileError(f"the initial transform is {value.GetDimension()}D; the images are 3D")
        return sitk.Transform(value).Downcast()  # a copy, keeping its concrete type (the summary names it)
    raise TypeError(f"an initial transform is a file or a SimpleITK transform, not {type(value).__name__}")


def override_map(fixed: sitk.Image, spacing: float) -> sitk.AffineTransform:
    """Physical coordinates of ``fixed``'s file -> those after the spacing override ``spacing``."""
    dimension = fixed.GetDimension()
    direction = np.asarray(fixed.GetDirection()).reshape(dimension, dimension)
    scale = np.diag(spacing / np.asarray(fixed.GetSpacing()))
    matrix = direction @ scale @ direction.T
    return sitk.AffineTransform(matrix.ravel().tolist(), [0.0] * dimension, fixed.GetOrigin())


def normalised_map(factor: float, origin) -> sitk.AffineTransform:
    """Physical coordinates -> normalised units ``(x - origin) / factor``."""
    dimension = len(origin)
    matrix = (np.eye(dimension) / factor).ravel().tolist()
    return sitk.AffineTransform(matrix, [-float(o) for o in origin], origin)


def conjugate(transform: sitk.Transform, space_map: sitk.AffineTransform | None) -> sitk.Transform:
    """``transform`` expressed in the space ``space_map`` maps to: ``W o T o W^-1`` (``T`` itself when None)."""
    if space_map is None:
        return transform
    return sitk.CompositeTransform([space_map, transform, space_map.GetInverse()])


def in_result_space(initial: sitk.Transform, fixed: sitk.Image, spacing_override: float | None) -> sitk.Transform:
    """The initial transform in the space of a result registered with ``spacing_override`` (None: the file's),
    where that result's BSpline lives. ``fixed`` is the fixed image as read (before the override)."""
    if spacing_override is None:
        return initial
    return conjugate(initial, override_map(fixed, spacing_override))


def fingerprint(transform: sitk.Transform) -> str:
    """SHA-256 of a transform's type and parameters (every part of a composite), rounded to 12 significant digits:
    a transform written to a text file and read back keeps this fingerprint."""
    digest = hashlib.sha256()
    parts = [transform.GetNthTransform(i) for i in range(transform.GetNumberOfTransforms())] \
        if isinstance(transform, sitk.CompositeTransform) else [transform]
    for part in parts:
        part = part.Downcast() if type(part) is sitk.Transform else part
        values = [float(f"{v:.12g}") + 0.0 for v in (*part.GetParameters(), *part.GetFixedParameters())]
        digest.update(repr((part.GetName(), values)).encode())
    return digest.hexdigest()


def work_spaces(initial: sitk.Transform, fixed: sitk.Image, settings: RegistrationSettings, factor: float,
                origin) -> tuple[sitk.Transform, sitk.Transform]:
    """The initial transform in the result's space (after any spacing override) and in the optimiser's space
    (normalised units when on). ``fixed`` is the fixed image as read (before the override)."""
    result_space = in_result_space(initial, fixed, settings.spacing_override)
    work_space = conjugate(result_space, normalised_map(factor, origin)) if settings.normalised_units \
        else result_space
    return result_space, work_space


def whole_mapping(initial: sitk.Transform | None, bspline: sitk.BSplineTransform) -> sitk.Transform:
    """The whole fixed-to-moving mapping ``initial(bspline(x))`` (the BSpline alone without an initial transform),
    flattened: ITK's text transform files cannot hold a composite inside a composite (a converted or ``.h5``
    composite initial transform is one)."""
    if initial is None:
        return bspline
    mapping = sitk.CompositeTransform([initial, bspline])
    mapping.FlattenTransform()
    return mapping
