"""Transform files: read only whole ones.

ITK reads a text transform file (``.tfm``, ``.txt``) cut short without an error: a BSpline whose
``FixedParameters`` line was lost comes back on a default one-interval grid, and one cut inside its parameters
with fewer coefficients than its grid has. :func:`read_transform` checks, before ITK reads the file, that every
transform in a text file has both lines and, for a BSpline, as many coefficients as its grid promises; ITK's
exceptions (also for ``.h5`` and ``.mat``) become one line naming the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import SimpleITK as sitk

from .images import InputImageError


class TransformFileError(InputImageError):
    """A transform file cannot be used; the message names the file and the problem."""


TEXT_SUFFIXES = (".tfm", ".txt")


def read_transform(path, role: str = "transform") -> sitk.Transform:
    """The transform in ``path`` after the checks above; any problem is one :class:`TransformFileError`."""
    path = Path(path)
    if not path.exists():
        raise TransformFileError(f"{role} file not found: {path}")
    if path.is_dir():
        raise TransformFileError(f"{role} file {path} is a folder, not a transform file")
    try:
        if path.stat().st_size == 0:
            raise TransformFileError(f"{role} file {path} is empty (0 bytes)")
        if path.name.lower().endswith(TEXT_SUFFIXES):
            problem = _text_problem(path.read_text(encoding="latin-1"))
            if problem:
                raise TransformFileError(f"{role} file {path} {problem}")
    except PermissionError:
        raise TransformFileError(f"{role} file {path} cannot be read: permission denied") from None
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        reason = lines[-1].split("ERROR:")[-1].strip() if lines else "unknown reason"
        raise TransformFileError(f"{role} file {path} could not be read as a transform ({reason[:300]})") from None


def read_bspline(path, role: str = "transform") -> sitk.BSplineTransform:
    """:func:`read_transform`, refusing anything but a single BSpline transform."""
    transform = read_transform(path, role)
    try:
        return sitk.BSplineTransform(transform)
    except (RuntimeError, TypeError, ValueError):
        raise TransformFileError(f"{role} file {path} holds a {transform.GetName()}, not a BSpline transform") from None


def _text_problem(text: str) -> str:
    """Why an ITK text transform file is not whole ('' when it is)."""
    blocks, current = [], None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "Transform":
            current = {"type": value.strip()}
            blocks.append(current)
        elif current is not None and key in ("Parameters", "FixedParameters"):
            current[key] = value.split()
    if not blocks:
        return "is not an ITK transform file (no 'Transform:' line)"
    for number, block in enumerate(blocks):
        kind = block["type"]
        if kind.startswith("CompositeTransform"):
            continue
        missing = [key for key in ("Parameters", "FixedParameters") if key not in block]
        if missing:
            return f"is truncated: transform {number} ({kind}) has no {' or '.join(missing)} line"
        if kind.startswith("BSplineTransform"):
            dimension = int(kind.rsplit("_", 2)[-2]) if kind.rsplit("_", 2)[-2].isdigit() else 3
            fixed, parameters = block["FixedParameters"], block["Parameters"]
            expected_fixed = dimension * (3 + dimension)
            if len(fixed) != expected_fixed:
                return (f"is truncated: transform {number} ({kind}) has {len(fixed)} of {expected_fixed} fixed "
                        "parameters")
            try:
                points = math.prod(int(float(n)) for n in fixed[:dimension])
            except ValueError:
                return f"is damaged: transform {number} ({kind}) has a grid size that is not a number"
            if len(parameters) != dimension * points:
                return (f"is truncated: transform {number} ({kind}) has {len(parameters)} of {dimension * points} "
                        "coefficients")
    return ""
