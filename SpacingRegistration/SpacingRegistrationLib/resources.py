"""Memory: what a registration will need, estimated from the image sizes and the control grid before it starts,
against what the machine has available.

The estimate adds what is alive at the peak of :func:`registration.run` (bytes per voxel):

- the inputs: each image as given, its float32 cast when it is not float32, the spacing-override copy and the
  normalised-units copy when those modes are on (4 bytes each);
- the Mattes metric's gradient of the moving image: one ``CovariantVector<double, 3>`` per voxel (24 bytes);
- the dense displacement field on the fixed grid and the statistics made from it: the float64 x3 array
  (24 bytes), its conversion to voxel units (two 24-byte temporaries) and the magnitudes (8 bytes) — the
  Jacobian-determinant copy comes later and is smaller than these temporaries;
- the transform's parameters: the optimizer's LBFGS memory (2 x hessian-approximate-accuracy vectors and a
  few more) and the joint-PDF derivatives of Mattes (bins x bins x parameters doubles, about three copies per
  work unit: this is what grows with the mesh — 80 MB a copy for a [8,8,8] mesh, 410 MB for [16,16,16]);
- a fixed allowance for ITK's buffers (64 MiB).

Measured peaks of the process (ru_maxrss, float32 cubes, mesh [2,2,2], Linux, SimpleITK 2.5): about 91-97
bytes per voxel for equal fixed and moving images, against 104 here; ``Testing/test_robustness.py`` checks that
the estimate stays above the measured peak and below twice it.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import re
import subprocess
import warnings
from dataclasses import dataclass

import SimpleITK as sitk

from .grid import mesh_size_for
from .settings import RegistrationSettings

GIB = 1024 ** 3
#: Allowance for ITK's own buffers, thread pools and small images.
FIXED_OVERHEAD_BYTES = 64 * 1024 ** 2
GRADIENT_BYTES_PER_VOXEL = 24
DISPLACEMENT_BYTES_PER_VOXEL = 24 + 2 * 24 + 8
COPY_BYTES_PER_VOXEL = 4
#: Copies of the joint-PDF derivatives (bins x bins x parameters doubles) per work unit; measured on a 64^3
#: image: about 1.6 with one work unit, 5.3-5.6 with two (mesh [8,8,8] and [16,16,16]).
JOINT_PDF_COPIES_PER_WORK_UNIT = 3


class ResourceError(ValueError):
    """The machine has too little memory for a registration; the message gives both figures."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of one registration, with the parts it adds up."""

    parts: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.parts.values())


class _Geometry:
    """Size and spacing of an image without its voxels (what :func:`grid.mesh_size_for` reads)."""

    def __init__(self, size, spacing):
        self.size, self.spacing = tuple(size), tuple(spacing)

    def GetSize(self):  # noqa: N802 - the SimpleITK name
        return self.size

    def GetSpacing(self):  # noqa: N802
        return self.spacing


def registration_mesh_size(size, spacing, settings: RegistrationSettings) -> list[int]:
    """Mesh intervals per axis the registration will use on an image of ``size`` and ``spacing``."""
    if settings.spacing_override is not None:
        spacing = [settings.spacing_override] * len(size)
    return mesh_size_for(_Geometry(size, spacing), settings)


def estimate_registration_bytes(fixed_size, moving_size, mesh_size, settings: RegistrationSettings | None = None,
                                fixed_pixel_bytes: int = 4, moving_pixel_bytes: int = 4,
                                threads: int | None = None) -> MemoryEstimate:
    """Peak bytes of one registration of images of these sizes (voxels per axis) with this mesh.

    ``*_pixel_bytes`` are the bytes per voxel of the images as given (4 for float32; a non-float32 image adds
    its float32 cast). Nothing is allocated: sizes of any magnitude can be asked about.
    """
    settings = settings or RegistrationSettings()
    fixed_voxels, moving_voxels = math.prod(int(n) for n in fixed_size), math.prod(int(n) for n in moving_size)
    copies = (settings.spacing_override is not None) + bool(settings.normalised_units)
    inputs = sum(voxels * (pixel_bytes + COPY_BYTES_PER_VOXEL * (copies + (pixel_bytes != 4)))
                 for voxels, pixel_bytes in ((fixed_voxels, fixed_pixel_bytes), (moving_voxels, moving_pixel_bytes)))
    parameters = len(fixed_size) * math.prod(int(m) + 3 for m in mesh_size)
    if threads is None:
        threads = 1 if settings.reproducible else (settings.number_of_work_units or settings.number_of_threads
                                                     or sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())
    lbfgs_vectors = 2 * settings.lbfgs2.hessian_approximate_accuracy + 4
    return MemoryEstimate(parts={
        "inputs": inputs,
        "metric gradient": moving_voxels * GRADIENT_BYTES_PER_VOXEL,
        "displacement field and statistics": fixed_voxels * DISPLACEMENT_BYTES_PER_VOXEL,
        "optimizer": 8 * parameters * lbfgs_vectors,
        "joint PDF derivatives": 8 * parameters * settings.histogram_bins ** 2 * JOINT_PDF_COPIES_PER_WORK_UNIT
                                 * max(1, threads),
        "fixed overhead": FIXED_OVERHEAD_BYTES,
    })


class MemoryUnknownWarning(UserWarning):
    """This machine's available memory cannot be read: the memory check cannot refuse a run."""


@dataclass(frozen=True)
class MemoryReading:
    """Available memory and where it was read (or why it is unknown: ``available_bytes`` None)."""

    available_bytes: int | None
    source: str


def parse_meminfo(text: str) -> int | None:
    """Linux /proc/meminfo: MemAvailable (kernel 3.14+), else MemFree + Buffers + Cached."""
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if rest.split() and rest.split()[0].isdigit():
            values[name.strip()] = int(rest.split()[0]) * 1024
    if "MemAvailable" in values:
        return values["MemAvailable"]
    if "MemFree" in values:
        return values["MemFree"] + values.get("Buffers", 0) + values.get("Cached", 0)
    return None


def parse_vm_stat(text: str) -> int | None:
    """macOS ``vm_stat``: free + inactive pages (what psutil calls available) times the page size it prints."""
    page = re.search(r"page size of (\d+) bytes", text)
    pages = {name.strip().lower(): int(value) for name, value in re.findall(r"^([^:\n]+):\s+(\d+)\.?\s*$", text, re.M)}
    if not page or "pages free" not in pages or "pages inactive" not in pages:
        return None
    return (pages["pages free"] + pages["pages inactive"]) * int(page.group(1))


class _MemoryStatusEx(ctypes.Structure):
    _fields_ = [("dwLength", ctypes.c_uint32), ("dwMemoryLoad", ctypes.c_uint32),  # DWORD: 32 bits everywhere
                ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]


def windows_available(kernel32) -> int | None:
    """Windows: ``ullAvailPhys`` of GlobalMemoryStatusEx (``kernel32`` is ``ctypes.windll.kernel32``)."""
    status = _MemoryStatusEx()
    status.dwLength = ctypes.sizeof(_MemoryStatusEx)
    if not kernel32.GlobalMemoryStatusEx(ctypes.pointer(status)):
        return None
    return int(status.ullAvailPhys)


def read_available_memory(system: str | None = None) -> MemoryReading:
    """Memory this process can still use, on Linux, macOS and Windows, with the standard library (psutil when it
    happens to be installed). Never raises: an unknown figure says why."""
    try:
        import psutil  # optional, not a requirement
        return MemoryReading(int(psutil.virtual_memory().available), "psutil")
    except Exception:  # noqa: BLE001 - absent or failing: use the platform's own source
        pass
    system = system or platform.system()
    try:
        if system == "Linux":
            with open("/proc/meminfo") as stream:
                return MemoryReading(parse_meminfo(stream.read()), "/proc/meminfo")
        if system == "Darwin":
            output = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=10, check=True).stdout
            return MemoryReading(parse_vm_stat(output), "vm_stat")
        if system == "Windows":
            return MemoryReading(windows_available(ctypes.windll.kernel32), "GlobalMemoryStatusEx")
        return MemoryReading(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages (sysconf)")
    except (OSError, ValueError, AttributeError, subprocess.SubprocessError) as error:
        return MemoryReading(None, f"{system}: {error}")


def available_memory_bytes() -> int | None:
    """Available memory in bytes, or None when this machine does not say (see :func:`read_available_memory`)."""
    return read_available_memory().available_bytes


def _pixel_bytes(image: sitk.Image) -> int:
    return image.GetSizeOfPixelComponent() * image.GetNumberOfComponentsPerPixel()


def check_registration_memory(fixed: sitk.Image, moving: sitk.Image, settings: RegistrationSettings,
                              available_bytes: int | None = None, concurrent: int = 1) -> MemoryEstimate:
    """Raise :class:`ResourceError` when ``concurrent`` registrations of these images would need more than
    ``available_bytes`` (default: what the machine has available now). Reads only the images' geometry."""
    mesh = registration_mesh_size(fixed.GetSize(), fixed.GetSpacing(), settings)
    estimate = estimate_registration_bytes(fixed.GetSize(), moving.GetSize(), mesh, settings,
                                           _pixel_bytes(fixed), _pixel_bytes(moving))
    if available_bytes is None:
        available_bytes = available_memory_bytes()
    needed = estimate.total_bytes * concurrent
    if available_bytes is None:
        reading = read_available_memory()
        warnings.warn(f"available memory is unknown ({reading.source if reading.available_bytes is None else 'no figure'}):"
                      f" the memory check cannot refuse this registration, which needs about {needed / GIB:.2f} GiB",
                      MemoryUnknownWarning, stacklevel=2)
    elif needed > available_bytes:
        runs = f" for {concurrent} registrations at once" if concurrent > 1 else ""
        largest = max(estimate.parts, key=estimate.parts.get)
        raise ResourceError(
            f"not enough memory{runs}: needs about {needed / GIB:.2f} GiB, {available_bytes / GIB:.2f} GiB available "
            f"(fixed image {list(fixed.GetSize())}, moving image {list(moving.GetSize())}, mesh {mesh}; "
            f"largest part: {largest}); use smaller images, a coarser mesh or fewer workers")
    return estimate
