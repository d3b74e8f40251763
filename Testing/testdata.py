"""Small real-derived images shared by the engine tests (cached per process)."""

import contextlib
import functools
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SpacingRegistration"))

import SimpleITK as sitk

from SpacingRegistrationLib import cli, sample_data
from SpacingRegistrationLib.settings import RegistrationSettings
from SpacingRegistrationLib.study_spec import StudySpec

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Quick registrations: no scales estimator, 3 iterations per libLBFGS run.
FAST_SETTINGS = RegistrationSettings(scales_estimator="none").replace(lbfgs2={"number_of_iterations": 3})
#: The small reproducible study the study and robustness tests share (8 runs).
SMALL_STUDY = StudySpec(settings=FAST_SETTINGS, spacings=(1.0, 4.0), repeats=2,
                        modes=("native-reproducible", "normalised-reproducible"))


@functools.lru_cache(maxsize=None)
def _pet_like_pair(voxel_size_mm: float) -> sample_data.SamplePair:
    paths = sample_data.fetch_mni152()
    return sample_data.make_pet_like_pair(paths["gm"], paths["wm"], voxel_size_mm=voxel_size_mm)


def pet_like_pair(voxel_size_mm: float = 4.0) -> sample_data.SamplePair:
    """The MNI152-derived PET-like pair (about 47x56x49 voxels at 4 mm); images are fresh copies."""
    pair = _pet_like_pair(voxel_size_mm)
    return sample_data.SamplePair(sitk.Image(pair.fixed), sitk.Image(pair.moving),
                                  sitk.Image(pair.displacement), pair.description)


def pet_like_pair_files(folder: Path) -> tuple[Path, Path]:
    """The 4 mm pair written as fixed.nrrd and moving.nrrd into ``folder``."""
    pair = pet_like_pair()
    fixed, moving = folder / "fixed.nrrd", folder / "moving.nrrd"
    sitk.WriteImage(pair.fixed, str(fixed))
    sitk.WriteImage(pair.moving, str(moving))
    return fixed, moving


def run_cli(*arguments):
    """``spacingreg ARGUMENTS`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(a) for a in arguments])
    return status, out.getvalue(), err.getvalue()
