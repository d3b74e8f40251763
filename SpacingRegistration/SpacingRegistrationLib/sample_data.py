"""Sample data: the MNI152 2009a template, a synthetic PET-like pair with a known deformation, and the
real mouse FDG PET gates.

Geometry follows SimpleITK/ITK: physical points and displacement vectors are in LPS millimetres.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

NILEARN_VERSION = "0.14.1"
MNI152_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
MNI152_KEYS = ("t1", "gm", "wm")
MOUSE_FILES = ("mouse_fdg_pet_gate_T.nrrd", "mouse_fdg_pet_gate_R.nrrd")

GREY_ACTIVITY = 4.0
WHITE_ACTIVITY = 1.0
BACKGROUND_ACTIVITY = 0.1
TISSUE_THRESHOLD = 0.5
BRAIN_THRESHOLD = 0.1
MARGIN_VOXELS = 2
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

# Low-frequency modes of the known deformation: (LPS component, wave vector, phase, weight), on
# coordinates normalised to [-1, 1] over the brain's bounding box. Integer wave vectors make each
# mode zero-mean over that box.
DEFORMATION_MODES = (
    (0, (0, 1, 1), 0.4, 1.0),
    (0, (2, 0, 0), 1.1, 0.5),
    (1, (1, 0, -1), 1.3, 1.0),
    (1, (1, 2, 0), 0.2, 0.5),
    (2, (1, 1, 0), 2.1, 1.0),
    (2, (0, 0, 2), 0.7, 0.5),
)


@dataclass(frozen=True)
class SamplePair:
    """A fixed/moving pair on one grid and the true displacement u (fixed grid, LPS mm)."""

    fixed: sitk.Image
    moving: sitk.Image
    displacement: sitk.Image
    description: str


def default_cache_dir() -> Path:
    """$SPACINGREG_CACHE if set, else ~/.cache/SpacingRegistration."""
    env = os.environ.get("SPACINGREG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "SpacingRegistration"


def fetch_mni152(cache_dir=None) -> dict[str, Path]:
    """Paths of the MNI152 2009a 't1', 'gm' and 'wm' maps, extracted once from the nilearn wheel."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    paths = {key: cache / MNI152_FILE.format(key) for key in MNI152_KEYS}
    if not all(path.is_file() for path in paths.values()):
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            _extract_from_wheel(_download_nilearn_wheel(Path(tmp)), paths)
    return paths


def _download_nilearn_wheel(dest: Path) -> Path:
    """Download the pinned nilearn wheel (no dependencies) into dest with pip."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"nilearn=={NILEARN_VERSION}", "-d", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob("nilearn-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = "\n".join(result.stderr.strip().splitlines()[-10:])
        raise RuntimeError(f"downloading the nilearn=={NILEARN_VERSION} wheel with pip failed "
                           f"(exit code {result.returncode}): {tail}")
    return wheels[0]


def _extract_from_wheel(wheel: Path, paths: dict[str, Path]) -> None:
    """Copy the template files out of the wheel; each file appears only once complete."""
    with zipfile.ZipFile(wheel) as archive:
        for path in paths.values():
            partial = path.with_name(path.name + ".part")
            with archive.open(f"nilearn/datasets/data/{path.name}") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.replace(path)


def make_pet_like_pair(gm_path, wm_path, voxel_size_mm=4.0, max_displacement_voxels=3.0,
                       intensity_change=0.9, fwhm_mm=6.0, mean_counts=50.0, seed=0) -> SamplePair:
    """Synthetic FDG-PET-like pair from MNI152 grey/white-matter maps with a known smooth deformation.

    activity = 4*gm + 1*wm + 0.1 (relative units), anti-aliased at 1 mm and sampled on an isotropic
    grid of voxel_size_mm covering the brain's bounding box plus ceil(max_displacement_voxels) + 2
    voxels. The grid keeps the MNI file's physical space and direction (diag(-1, -1, 1) in LPS).

    - fixed(x) = activity(x + u(x)), moving(x) = intensity_change * activity(x), so the true
      registration transform (fixed points to moving points, as sitk.ImageRegistrationMethod
      estimates) is T(x) = x + u(x) = sitk.DisplacementFieldTransform(sitk.Image(displacement)).
    - u: fixed sum of low-frequency sinusoids, zero-mean over the brain box, scaled so that
      max |u| = max_displacement_voxels voxels on the grid; ValueError if it would fold.
    - Both images are blurred with a Gaussian of fwhm_mm (0: no blur), then get independent Poisson
      noise from numpy.random.default_rng(seed) with mean_counts expected counts per voxel averaged
      over tissue (gm + wm >= 0.5) of the noise-free activity (None: no noise). The deformation
      does not depend on the seed; the output is bit-identical for the same arguments.
    """
    gm, wm = _read_probability(gm_path), _read_probability(wm_path)
    brain, activity = gm + wm, _activity(gm, wm)
    centre, half_extent = _brain_box(brain)
    margin = int(np.ceil(max_displacement_voxels)) + MARGIN_VOXELS
    grid = _output_grid(gm, centre, half_extent, voxel_size_mm, margin)
    displacement = _displacement_field(grid, centre, half_extent,
                                       max_displacement_voxels * voxel_size_mm)
    _check_no_folding(displacement)
    smooth = _anti_alias(activity, voxel_size_mm)
    warp = sitk.DisplacementFieldTransform(sitk.Image(displacement))
    fixed = _blur(_resample(smooth, grid, warp), fwhm_mm)
    moving = _blur(_resample(smooth, grid, sitk.Transform()) * intensity_change, fwhm_mm)
    if mean_counts is not None:
        scale = mean_counts / _mean_tissue_activity(activity, brain)
        rng = np.random.default_rng(seed)
        fixed, moving = _poisson(fixed, scale, rng), _poisson(moving, scale, rng)
    noise = ("no noise" if mean_counts is None
             else f"Poisson noise ({mean_counts:g} mean tissue counts, seed {seed})")
    description = (f"PET-like pair from MNI152 2009a GM/WM: {voxel_size_mm:g} mm voxels, size "
                   f"{grid.GetSize()}, max |u| {max_displacement_voxels:g} voxels, moving = "
                   f"{intensity_change:g} x activity, FWHM {fwhm_mm:g} mm, {noise}")
    return SamplePair(fixed, moving, displacement, description)


def _read_probability(path) -> sitk.Image:
    """A tissue map as float32 probabilities in [0, 1] (the files store 0..255)."""
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    return image / 255.0 if sitk.GetArrayViewFromImage(image).max() > 1.0 else image


def _activity(gm: sitk.Image, wm: sitk.Image) -> sitk.Image:
    """FDG-like activity in relative units."""
    return GREY_ACTIVITY * gm + WHITE_ACTIVITY * wm + BACKGROUND_ACTIVITY


def _mean_tissue_activity(activity: sitk.Image, brain: sitk.Image) -> float:
    """Mean activity over voxels that are mostly grey or white matter (brain = gm + wm)."""
    tissue = sitk.GetArrayViewFromImage(brain) >= TISSUE_THRESHOLD
    return float(sitk.GetArrayViewFromImage(activity)[tissue].mean())


def _brain_box(brain: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half extent (LPS mm) of the bounding box of brain >= BRAIN_THRESHOLD."""
    nonzero = np.nonzero(sitk.GetArrayViewFromImage(brain) >= BRAIN_THRESHOLD)
    low = [float(axis.min()) - 0.5 for axis in reversed(nonzero)]
    high = [float(axis.max()) + 0.5 for axis in reversed(nonzero)]
    corners = np.array([brain.TransformContinuousIndexToPhysicalPoint(c) for c in (low, high)])
    return corners.mean(axis=0), np.abs(corners[1] - corners[0]) / 2.0


def _output_grid(reference: sitk.Image, centre, half_extent, voxel_size_mm, margin) -> sitk.Image:
    """Empty isotropic float32 grid centred on the box, in the reference's direction."""
    size = np.ceil(2.0 * half_extent / voxel_size_mm).astype(int) + 2 * margin
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    origin = centre - direction @ ((size - 1) / 2.0 * voxel_size_mm)
    grid = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    grid.SetSpacing([float(voxel_size_mm)] * 3)
    grid.SetOrigin([float(x) for x in origin])
    grid.SetDirection(reference.GetDirection())
    return grid


def _physical_points(grid: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel centre, shape (z, y, x, 3)."""
    index = np.indices(grid.GetSize()[::-1], dtype=float)[::-1]
    matrix = np.array(grid.GetDirection()).reshape(3, 3) * np.array(grid.GetSpacing())
    return np.array(grid.GetOrigin()) + np.einsum("ij,j...->...i", matrix, index)


def _displacement_field(grid, centre, half_extent, max_mm) -> sitk.Image:
    """The known deformation u on the grid (vector float64, LPS mm), max |u| = max_mm."""
    p = (_physical_points(grid) - centre) / half_extent
    u = np.zeros_like(p)
    for component, wave_vector, phase, weight in DEFORMATION_MODES:
        u[..., component] += weight * np.sin(np.pi * (p @ np.array(wave_vector)) + phase)
    u *= max_mm / np.linalg.norm(u, axis=-1).max()
    field = sitk.GetImageFromArray(u, isVector=True)
    field.CopyInformation(grid)
    return field


def _check_no_folding(displacement: sitk.Image) -> None:
    """ValueError unless det(I + du/dx) > 0 at every voxel."""
    u = sitk.GetArrayFromImage(displacement)
    by_index = np.stack(np.gradient(u, axis=(2, 1, 0)), axis=-1)
    matrix = np.array(displacement.GetDirection()).reshape(3, 3) * np.array(displacement.GetSpacing())
    jacobian = np.linalg.det(np.eye(3) + by_index @ np.linalg.inv(matrix))
    if jacobian.min() <= 0.0:
        raise ValueError(f"the deformation folds (min Jacobian {jacobian.min():.3f}): "
                         "use a smaller max_displacement_voxels")


def _anti_alias(image: sitk.Image, voxel_size_mm: float) -> sitk.Image:
    """Gaussian with the variance of a voxel_size_mm box average (minus the input voxel's own)."""
    variance = [max(voxel_size_mm**2 - s**2, 0.0) / 12.0 for s in image.GetSpacing()]
    return sitk.DiscreteGaussian(image, variance=variance, maximumKernelWidth=64)


def _resample(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """Linear resampling onto the grid; outside the template the activity is background."""
    return sitk.Resample(image, grid, transform, sitk.sitkLinear, BACKGROUND_ACTIVITY, sitk.sitkFloat32)


def _blur(image: sitk.Image, fwhm_mm: float) -> sitk.Image:
    """Gaussian PET resolution of fwhm_mm (0: unchanged)."""
    if fwhm_mm == 0:
        return image
    return sitk.DiscreteGaussian(image, variance=(fwhm_mm * FWHM_TO_SIGMA) ** 2, maximumKernelWidth=64)


def _poisson(image: sitk.Image, scale: float, rng: np.random.Generator) -> sitk.Image:
    """Poisson counts with mean scale * image, as float32 on the same grid."""
    expected = scale * sitk.GetArrayViewFromImage(image).astype(np.float64)
    noisy = sitk.GetImageFromArray(rng.poisson(expected).astype(np.float32))
    noisy.CopyInformation(image)
    return noisy


def load_mouse_pet(data_dir) -> tuple[sitk.Image, sitk.Image]:
    """The mouse cardiac FDG PET gates (fixed = gate T, moving = gate R) as float32 images."""
    paths = [Path(data_dir) / name for name in MOUSE_FILES]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"mouse PET file not found: {path}")
    return tuple(sitk.ReadImage(str(path), sitk.sitkFloat32) for path in paths)


def write_pair(pair: SamplePair, out_dir) -> dict[str, Path]:
    """Write fixed.nrrd, moving.nrrd and displacement.nrrd (compressed) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = {"fixed": pair.fixed, "moving": pair.moving, "displacement": pair.displacement}
    paths = {name: out / f"{name}.nrrd" for name in images}
    for name, image in images.items():
        sitk.WriteImage(image, str(paths[name]), useCompression=True)
    return paths
