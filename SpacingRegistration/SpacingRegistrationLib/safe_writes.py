"""Writing result files so that a full disk or a refused write is an error, never a short file taken for whole."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import SimpleITK as sitk

#: Below this much free space a failed write is put down to a full disk.
NEARLY_FULL_BYTES = 1024 ** 2


def write_transform(transform: sitk.Transform, path: Path):
    """Write ``transform`` to ``path`` and read it back: ITK's writer does not report a short write (a full disk),
    so a file that does not read back raises :class:`OSError` with the likely reason, and is removed."""
    path = Path(path)
    try:
        sitk.WriteTransform(transform, str(path))
        sitk.ReadTransform(str(path))
    except RuntimeError as error:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        raise write_error(path, error) from None


def write_error(path: Path, error: Exception) -> OSError:
    """The OSError behind a failed write of ``path``, judged from the folder when the writer did not say."""
    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < NEARLY_FULL_BYTES:
        code = errno.ENOSPC
    elif not os.access(folder, os.W_OK):
        code = errno.EACCES
    else:
        detail = str(error).strip().splitlines()[-1].strip() if str(error).strip() else type(error).__name__
        return OSError(errno.EIO, f"the file came out incomplete ({detail})", str(path))
    return OSError(code, os.strerror(code), str(path))
