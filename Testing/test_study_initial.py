"""Studies with an initial transform (issue 11 §4): stored and fingerprinted with the study, passed to every run,
and the analysis' error and displacement describe the whole mapping ``initial(bspline(x))``."""

import json
import sys
import tempfile
import unittest
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from testdata import run_cli  # noqa: E402

from SpacingRegistrationLib.settings import RegistrationSettings  # noqa: E402
from SpacingRegistrationLib.study_runner import run_study, task_for  # noqa: E402
from SpacingRegistrationLib.study_spec import StudySpec  # noqa: E402
from SpacingRegistrationLib.study_store import StudyFolderError, open_study  # noqa: E402
from SpacingRegistrationLib.variability import analyse  # noqa: E402

SIZE = 28
#: The moving image is the fixed one shifted by 6 voxels (12 mm) in x: too far for a few BSpline iterations.
SHIFT_MM = (12.0, 0.0, 0.0)
SETTINGS = RegistrationSettings(scales_estimator="none", sampling_strategy="none",
                                reproducible=True).replace(lbfgs2={"number_of_iterations": 10})
#: Native and normalised units at the file's spacing and an override: the initial transform must follow each.
SPEC = StudySpec(settings=SETTINGS, spacings=(2.0, 5.0), repeats=1,
                 modes=("native-reproducible", "normalised-reproducible"))


def texture_windows(shift_voxels: int):
    """Two SIZE^3 windows of one smooth random texture, the second ``shift_voxels`` earlier in x: the fixed and the
    moving image of an exact shift (cut from a larger texture: nothing enters from outside at the border)."""
    noise = np.random.default_rng(7).normal(size=(SIZE, SIZE, SIZE + shift_voxels)).astype(np.float32)
    texture = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(noise), 2.0))
    windows = []
    for start in (shift_voxels, 0):
        image = sitk.GetImageFromArray(np.ascontiguousarray(texture[:, :, start:start + SIZE]))
        image.SetSpacing([2.0, 2.0, 2.0])
        image.SetOrigin((-5.0, 3.0, 7.0))
        windows.append(image)
    return windows


#: Fixed-to-moving truth x -> x + SHIFT: fixed(x) = moving(x + SHIFT).
TRUTH = sitk.TranslationTransform(3, SHIFT_MM)
FIXED, MOVING = texture_windows(int(SHIFT_MM[0] / 2.0))


class StudyInitialTransformTest(unittest.TestCase):
    def setUp(self):
        self.folder = Path(tempfile.mkdtemp())
        self.initial_file = self.folder / "shift.tfm"
        sitk.WriteTransform(TRUTH, str(self.initial_file))

    def study(self, name, initial=None, spec=SPEC):
        return run_study(spec, FIXED, MOVING, self.folder / name, executor="sequential", truth=TRUTH,
                         initial_transform=initial)

    def test_exact_initial_transform_gives_a_much_smaller_error_in_every_mode_and_spacing(self):
        with_initial = analyse(self.study("with", self.initial_file).store)
        without = analyse(self.study("without").store)
        self.assertEqual(len(with_initial.groups), 4)
        for group in with_initial.groups:
            other = without.group(group.mode, group.spacing)
            self.assertLess(group.error["mean_voxels"], 0.2, (group.mode, group.spacing))
            # Without it only normalised units recover part of the 6-voxel shift (about 0.3 voxels of error left).
            self.assertLess(group.error["mean_voxels"] * 5, other.error["mean_voxels"], (group.mode, group.spacing))
            # The whole mapping moves by the shift (6 voxels of the file), in voxels of the image each run registered.
            self.assertAlmostEqual(group.mean_displacement_voxels, 6.0, delta=0.3)
        # Identity's error is the truth's magnitude, with or without an initial transform.
        self.assertAlmostEqual(with_initial.truth["identity"]["mean_voxels"], 6.0, places=6)

    def test_spread_and_spacing_difference_describe_the_bspline_part(self):
        spec = replace(SPEC, spacings=(2.0,), modes=("native-reproducible",))
        store = self.study("with", self.initial_file, spec).store
        group = analyse(store).groups[0]
        bspline = sitk.TransformToDisplacementField(store.read_transform(group.runs[0]), sitk.sitkVectorFloat64,
                                                    FIXED.GetSize(), FIXED.GetOrigin(), FIXED.GetSpacing(),
                                                    FIXED.GetDirection())
        self.assertEqual(group.spread_voxels["max"], 0.0)  # one repeat: no spread, whatever the initial shift
        self.assertLess(np.abs(sitk.GetArrayFromImage(bspline)).max() / 2.0, 0.5)  # the BSpline itself stays small

    def test_stored_fingerprinted_resumed_without_naming_it_and_another_one_refused(self):
        output = self.folder / "study"
        spec = replace(SPEC, spacings=(2.0,), modes=("native-reproducible",))
        first = run_study(spec, FIXED, MOVING, output, executor="sequential", initial_transform=self.initial_file)
        stored = output / "inputs" / "initial.tfm"
        self.assertTrue(stored.is_file())
        self.assertIn("initial", json.loads((output / "study.json").read_text())["inputs"])
        self.assertEqual(task_for(spec.runs()[0], first.store)["initial_transform"], str(stored))
        self.assertEqual(first.store.initial_transform().GetParameters(), SHIFT_MM)

        resumed = run_study(spec, FIXED, MOVING, output, executor="sequential")  # not named again
        self.assertEqual(resumed.skipped, [spec.runs()[0].run_id])
        self.assertEqual(resumed.completed, [])

        other = self.folder / "other.tfm"
        sitk.WriteTransform(sitk.TranslationTransform(3, (11.0, 0.0, 0.0)), str(other))
        with self.assertRaises(StudyFolderError) as refused:
            run_study(spec, FIXED, MOVING, output, executor="sequential", initial_transform=other)
        self.assertIn(str(other), str(refused.exception))
        self.assertNotIn("\n", str(refused.exception))
        run_study(spec, FIXED, MOVING, self.folder / "plain", executor="sequential")
        with self.assertRaises(StudyFolderError):  # a study without one refuses one too
            run_study(spec, FIXED, MOVING, self.folder / "plain", executor="sequential",
                      initial_transform=self.initial_file)

    def test_replaced_or_damaged_stored_transform_is_refused_naming_the_file_and_restored_on_resume(self):
        output = self.folder / "study"
        spec = replace(SPEC, spacings=(2.0,), modes=("native-reproducible",))
        run_study(spec, FIXED, MOVING, output, executor="sequential", initial_transform=self.initial_file)
        stored = output / "inputs" / "initial.tfm"
        sitk.WriteTransform(sitk.TranslationTransform(3, (1.0, 0.0, 0.0)), str(stored))
        with self.assertRaises(StudyFolderError) as replaced:
            open_study(output)
        self.assertIn(str(stored), str(replaced.exception))
        stored.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: TranslationTransform_double_3_3\n")
        with self.assertRaises(StudyFolderError) as damaged:
            open_study(output)
        self.assertIn(str(stored), str(damaged.exception))
        self.assertNotIn("\n", str(damaged.exception))
        resumed = run_study(spec, FIXED, MOVING, output, executor="sequential", initial_transform=self.initial_file)
        self.assertEqual(resumed.store.repaired, ["inputs/initial.tfm"])
        self.assertEqual(open_study(output).initial_transform().GetParameters(), SHIFT_MM)

    def test_command_line_round_trip(self):
        fixed, moving, truth = self.folder / "fixed.nrrd", self.folder / "moving.nrrd", self.folder / "truth.tfm"
        sitk.WriteImage(FIXED, str(fixed))
        sitk.WriteImage(MOVING, str(moving))
        sitk.WriteTransform(TRUTH, str(truth))
        output = self.folder / "study"
        common = ("--fixed", fixed, "--moving", moving, "--output", output, "--spacings", 2, "--repeats", 1,
                  "--modes", "native-reproducible", "--executor", "sequential", "--scales-estimator", "none",
                  "--sampling-strategy", "none", "--lbfgs2-number-of-iterations", 10)
        status, out, err = run_cli("study", *common, "--truth", truth, "--initial-transform", self.initial_file)
        self.assertEqual(status, 0, err)
        self.assertTrue((output / "inputs" / "initial.tfm").is_file())
        status, out, err = run_cli("report", "--study", output, "--output", self.folder / "report")
        self.assertEqual(status, 0, err)
        analysis = json.loads((self.folder / "report" / "analysis.json").read_text())
        self.assertLess(analysis["groups"][0]["error_mean_voxels"], 0.2)
        self.assertAlmostEqual(analysis["groups"][0]["identity_error_mean_voxels"], 6.0, places=6)
        other = self.folder / "other.tfm"
        sitk.WriteTransform(sitk.TranslationTransform(3, (2.0, 0.0, 0.0)), str(other))
        status, out, err = run_cli("study", *common, "--initial-transform", other)
        self.assertEqual(status, 2)
        self.assertIn(str(other), err)


if __name__ == "__main__":
    unittest.main()
