"""Standard inputs of registration tools (issue 11 §4): a fixed-image mask for the metric, an initial transform
composed before the BSpline, a multi-resolution pyramid; engine and command line, good and bad inputs."""

import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import testdata  # noqa: E402  (puts the library on the path)
from testdata import run_cli  # noqa: E402

from SpacingRegistrationLib import initial_transforms, masks, registration  # noqa: E402
from SpacingRegistrationLib.describe import describe_result  # noqa: E402
from SpacingRegistrationLib.diagnosis_rows import diagnosis_rows  # noqa: E402
from SpacingRegistrationLib.images import InputImageError  # noqa: E402
from SpacingRegistrationLib.settings import RegistrationSettings  # noqa: E402
from SpacingRegistrationLib.variability import total_iterations  # noqa: E402

SIZE = 28
GATE = testdata.SHARED_DATA / "mouse_fdg_pet_gate_T.nrrd"
#: Dense metric, no scales estimator, a few iterations: cheap and deterministic.
SETTINGS = RegistrationSettings(scales_estimator="none", sampling_strategy="none",
                                reproducible=True).replace(lbfgs2={"number_of_iterations": 20})


def blobs(centres, spacing=2.0):
    """Gaussian blobs (sigma 2.5 voxels) at voxel ``centres`` (x, y, z) on a SIZE^3 grid."""
    z, y, x = np.mgrid[:SIZE, :SIZE, :SIZE].astype(float)
    values = sum(np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * 2.5 ** 2)) for cx, cy, cz in centres)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing([spacing] * 3)
    image.SetOrigin((-5.0, 3.0, 7.0))
    return image


def ball(centre, radius=6):
    z, y, x = np.mgrid[:SIZE, :SIZE, :SIZE]
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius ** 2


def x_displacement_voxels(result, fixed, voxel):
    field = sitk.TransformToDisplacementField(result.mapping, sitk.sitkVectorFloat64, fixed.GetSize(),
                                              fixed.GetOrigin(), fixed.GetSpacing(), fixed.GetDirection())
    return sitk.GetArrayFromImage(field)[voxel[2], voxel[1], voxel[0], 0] / fixed.GetSpacing()[0]


#: Blob A moves +2 voxels in x, blob B -2: a mask around one blob must make the run follow that blob.
A, B = (8, 14, 14), (20, 14, 14)
FIXED = blobs([A, B])
MOVING = blobs([(10, 14, 14), (18, 14, 14)])


def affine_pair():
    """A moving image made from the fixed one by a known affine; returns (moving, fixed-to-moving affine)."""
    warp = sitk.AffineTransform(3)
    warp.SetMatrix([1, 0.05, 0, -0.05, 1, 0, 0, 0, 1])
    warp.SetTranslation((3.0, -2.0, 1.0))
    warp.SetCenter((20.0, 30.0, 35.0))
    moving = sitk.Resample(FIXED, FIXED, warp, sitk.sitkLinear, 0.0)  # moving(y) = fixed(warp(y))
    return moving, warp.GetInverse()  # so fixed(x) = moving(warp^-1(x)): the fixed-to-moving truth


class MaskTest(unittest.TestCase):
    def test_mask_restricts_the_metric_to_its_region(self):
        around_a = registration.run(FIXED, MOVING, SETTINGS, mask=ball(A))
        around_b = registration.run(FIXED, MOVING, SETTINGS, mask=ball(B))
        self.assertTrue(around_a.masked and around_b.masked)
        self.assertAlmostEqual(x_displacement_voxels(around_a, FIXED, A), 2.0, delta=0.6)
        self.assertAlmostEqual(x_displacement_voxels(around_b, FIXED, B), -2.0, delta=0.6)
        # Outside its mask each run follows the other blob's motion, not the true one: the metric ignored it.
        self.assertGreater(x_displacement_voxels(around_a, FIXED, B) - x_displacement_voxels(around_b, FIXED, B), 2.0)
        self.assertTrue(around_a.summary()["masked"])

    def test_mask_on_another_grid_is_resampled_by_position(self):
        coarse = sitk.Image([SIZE // 2] * 3, sitk.sitkUInt8)
        coarse.SetSpacing([4.0] * 3)
        coarse.SetOrigin(FIXED.GetOrigin())
        coarse[0:7, :, :] = 1  # coarse voxel j covers fixed voxels 2j-1 .. 2j+1: fixed x 0..13 (13 on the boundary)
        on_fixed = sitk.GetArrayFromImage(masks.fixed_mask(coarse, FIXED))
        self.assertEqual(on_fixed.shape, (SIZE,) * 3)
        self.assertTrue(on_fixed[:-1, :-1, :13].all())  # fixed voxel 27 lies on the coarse image's outer edge
        self.assertFalse(on_fixed[:, :, 15:].any())

    def test_bad_masks_are_refused_with_one_clear_error(self):
        with self.assertRaisesRegex(InputImageError, "selects no voxel"):
            masks.fixed_mask(np.zeros((SIZE,) * 3, bool), FIXED)
        outside = sitk.Image([4] * 3, sitk.sitkUInt8) + 1
        outside.SetOrigin((1000.0, 0.0, 0.0))
        with self.assertRaisesRegex(InputImageError, "outside the fixed image"):
            masks.fixed_mask(outside, FIXED)
        with self.assertRaisesRegex(InputImageError, "shape"):
            masks.fixed_mask(np.ones((3, 3, 3), bool), FIXED)
        with self.assertRaisesRegex(InputImageError, "components"):
            masks.fixed_mask(sitk.Image([SIZE] * 3, sitk.sitkVectorFloat32), FIXED)


class InitialTransformTest(unittest.TestCase):
    def test_exact_initial_transform_leaves_little_to_do_and_is_composed(self):
        moving, truth = affine_pair()
        result = registration.run(FIXED, moving, SETTINGS, initial_transform=truth, truth=truth)
        self.assertEqual(result.mapping.GetName(), "CompositeTransform")
        self.assertEqual(result.summary()["initial_transform"], "AffineTransform")
        self.assertIn("initial transform: AffineTransform composed before the BSpline", describe_result(result))
        self.assertLess(result.error.recovered.mean_voxels, 0.2 * result.error.identity.mean_voxels)
        self.assertLess(result.error.recovered.mean_voxels, 0.3)
        point = (10.0, 20.0, 30.0)
        self.assertTrue(np.allclose(result.mapping.TransformPoint(point),
                                    truth.TransformPoint(result.transform.TransformPoint(point))))

    def test_initial_transform_is_converted_into_override_and_normalised_units(self):
        moving, truth = affine_pair()
        fast = SETTINGS.replace(lbfgs2={"number_of_iterations": 5})
        override = registration.run(FIXED, moving, fast.replace(spacing_override=1.0), initial_transform=truth,
                                    truth=truth)
        normalised = registration.run(FIXED, moving, fast.replace(normalised_units=True), initial_transform=truth,
                                      truth=truth)
        # Spacing 2 overridden to 1 and normalised units (factor 2) are the same registration up to rounding.
        self.assertAlmostEqual(override.error.recovered.mean_voxels, normalised.error.recovered.mean_voxels, places=6)
        self.assertLess(override.error.recovered.mean_voxels, 0.3)

    def test_conjugation_keeps_the_voxel_to_voxel_meaning(self):
        _moving, truth = affine_pair()
        settings = RegistrationSettings(spacing_override=0.7, normalised_units=True)
        factor, origin = 0.7, FIXED.GetOrigin()
        _result_space, work_space = initial_transforms.work_spaces(truth, FIXED, settings, factor, origin)
        to_work = sitk.CompositeTransform([initial_transforms.normalised_map(factor, origin),
                                           initial_transforms.override_map(FIXED, 0.7)])
        native = FIXED.TransformContinuousIndexToPhysicalPoint((3.5, 7.0, 11.0))
        expected = to_work.TransformPoint(truth.TransformPoint(native))
        self.assertTrue(np.allclose(work_space.TransformPoint(to_work.TransformPoint(native)), expected))


class PyramidTest(unittest.TestCase):
    def test_two_level_pyramid_runs_two_levels_and_changes_the_result(self):
        fast = SETTINGS.replace(lbfgs2={"number_of_iterations": 5})
        single = registration.run(FIXED, MOVING, fast)
        pyramid = registration.run(FIXED, MOVING, fast.replace(shrink_factors=[2, 1], smoothing_sigmas=[1.0, 0.0]))
        self.assertEqual(single.iterations_per_level, [single.iterations_per_run])
        self.assertEqual(len(pyramid.iterations_per_level), 2)
        self.assertEqual(sorted({record.level for record in pyramid.trace}), [0, 1])
        # Each level restarts the optimizer: its own libLBFGS runs, each capped at 5 iterations.
        for runs in pyramid.iterations_per_level:
            self.assertTrue(all(1 <= count <= 5 for count in runs), pyramid.iterations_per_level)
        self.assertEqual(pyramid.iterations_per_run, pyramid.iterations_per_level[-1])
        self.assertEqual(sum(map(sum, pyramid.iterations_per_level)), len(pyramid.trace))
        self.assertFalse(np.array_equal(single.coefficients_mm, pyramid.coefficients_mm))
        self.assertEqual(pyramid.summary()["iterations_per_level"], pyramid.iterations_per_level)
        self.assertIn("level 1 (shrink 1, sigma 0 voxels)", describe_result(pyramid))
        self.assertNotIn("pyramid", describe_result(single))
        self.assertEqual(total_iterations(pyramid.summary()), len(pyramid.trace))  # study reports count every level
        self.assertIn(("iterations per level", str(pyramid.iterations_per_level)), diagnosis_rows(pyramid))

    def test_metric_is_re_evaluated_at_the_last_level(self):
        """A last level that is shrunk and smoothed: the re-evaluation uses it, so no false 'reported metric is not
        the value at the returned transform' warning."""
        result = registration.run(FIXED, MOVING, SETTINGS.replace(shrink_factors=[2, 2], smoothing_sigmas=[1.0, 1.0],
                                                                  lbfgs2={"number_of_iterations": 3}))
        self.assertEqual(result.metric_reported, result.metric_reevaluated)
        self.assertFalse([w for w in result.warnings if w.startswith("The reported metric")])

    def test_pyramid_settings_are_validated_with_one_clear_error(self):
        from SpacingRegistrationLib.settings import SettingsError
        for changes, expected in (({"shrink_factors": [2, 1]}, "one value per level"),
                                  ({"shrink_factors": [0]}, "integers >= 1"),
                                  ({"smoothing_sigmas": [-1.0]}, ">= 0"),
                                  ({"shrink_factors": [1.5]}, "integers >= 1")):
            with self.subTest(changes=changes), self.assertRaisesRegex(SettingsError, expected):
                SETTINGS.replace(**changes)
        self.assertEqual(RegistrationSettings().shrink_factors, (1,))  # the reported set-up: one level

    def test_panel_parameters_hold_one_number_per_level_as_text(self):
        from SpacingRegistrationLib import parameters
        from SpacingRegistrationLib.settings import SettingsError
        values = parameters.parameter_values_from_settings(SETTINGS.replace(shrink_factors=[4, 2, 1],
                                                                            smoothing_sigmas=[2.0, 1.0, 0.0]))
        self.assertEqual((values["shrinkFactors"], values["smoothingSigmas"]), ("4, 2, 1", "2, 1, 0"))
        settings = parameters.settings_from_parameter_values({**values, "shrinkFactors": "2 1",
                                                              "smoothingSigmas": "1.5, 0"})
        self.assertEqual((settings.shrink_factors, settings.smoothing_sigmas), ((2, 1), (1.5, 0.0)))
        with self.assertRaisesRegex(SettingsError, "shrinkFactors .*whole numbers"):
            parameters.settings_from_parameter_values({**values, "shrinkFactors": "2, 1.5"})


@unittest.skipUnless(GATE.is_file(), f"the real mouse PET gate is not at {GATE}")
class RealGateTest(unittest.TestCase):
    """The real mouse FDG PET gate: a crop on an oblique, anisotropic grid, and a mask drawn on the whole image."""

    def test_mask_of_the_whole_image_lands_on_the_crop_voxel_for_voxel(self):
        whole = sitk.ReadImage(str(GATE))
        body = whole > float(np.percentile(sitk.GetArrayViewFromImage(whole), 70))
        crop = whole[8:32, 8:32, 8:32]
        on_crop = sitk.GetArrayFromImage(masks.fixed_mask(body, crop))
        self.assertTrue(np.array_equal(on_crop, sitk.GetArrayFromImage(body[8:32, 8:32, 8:32]).astype(bool)))

    def test_initial_transform_on_an_oblique_grid_in_override_and_normalised_units(self):
        fixed = sitk.ReadImage(str(GATE))[8:32, 6:34, 10:30]
        fixed.SetSpacing((0.8, 1.1, 1.6))
        fixed.SetOrigin((-7.0, 3.0, 11.0))
        angle = 0.3
        fixed.SetDirection((np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0))
        centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
        warp = sitk.Euler3DTransform(centre, 0.02, -0.03, 0.05, (1.0, -1.5, 2.0))
        moving = sitk.Resample(fixed, fixed, warp, sitk.sitkLinear, 0.0)
        truth = warp.GetInverse()
        fast = SETTINGS.replace(lbfgs2={"number_of_iterations": 3})
        for changes in ({"spacing_override": 1.0}, {"normalised_units": True}):
            with self.subTest(**changes):
                result = registration.run(fixed, moving, fast.replace(**changes), initial_transform=truth, truth=truth)
                self.assertLess(result.error.recovered.mean_voxels, 0.25 * result.error.identity.mean_voxels)


class CommandLineTest(unittest.TestCase):
    def setUp(self):
        self.folder = Path(tempfile.mkdtemp())
        moving, self.truth = affine_pair()
        self.fixed, self.moving = self.folder / "fixed.nrrd", self.folder / "moving.nrrd"
        sitk.WriteImage(FIXED, str(self.fixed))
        sitk.WriteImage(moving, str(self.moving))
        self.initial = self.folder / "affine.tfm"
        sitk.WriteTransform(self.truth, str(self.initial))
        self.mask = self.folder / "mask.nrrd"
        mask = sitk.GetImageFromArray(ball((14, 14, 14), 10).astype(np.uint8))
        mask.CopyInformation(FIXED)
        sitk.WriteImage(mask, str(self.mask))

    def test_register_with_mask_and_initial_transform_round_trips(self):
        output = self.folder / "out"
        status, _out, err = run_cli("register", "--fixed", self.fixed, "--moving", self.moving, "--quiet",
                                    "--mask", self.mask, "--initial-transform", self.initial, "--output", output,
                                    "--scales-estimator", "none", "--sampling-strategy", "none",
                                    "--lbfgs2-number-of-iterations", "5")
        self.assertEqual(status, 0, err)
        summary = json.loads((output / "result.json").read_text())
        self.assertTrue(summary["masked"])
        self.assertEqual(summary["initial_transform"], "AffineTransform")
        whole = sitk.ReadTransform(str(output / "transform.tfm"))
        bspline = sitk.BSplineTransform(sitk.ReadTransform(str(output / "bspline.tfm")))
        composed = sitk.CompositeTransform([sitk.ReadTransform(str(self.initial)), bspline])
        for point in ((0.0, 10.0, 20.0), (30.0, 40.0, 50.0)):
            self.assertTrue(np.allclose(whole.TransformPoint(point), composed.TransformPoint(point), atol=1e-9))
        self.assertGreater(np.abs(np.asarray(bspline.GetParameters())).max(), 0.0)

    def test_register_with_a_pyramid_round_trips(self):
        output = self.folder / "pyramid"
        status, _out, err = run_cli("register", "--fixed", self.fixed, "--moving", self.moving, "--quiet",
                                    "--output", output, "--scales-estimator", "none", "--sampling-strategy", "none",
                                    "--lbfgs2-number-of-iterations", "3", "--shrink-factors", "2", "1",
                                    "--smoothing-sigmas", "1", "0")
        self.assertEqual(status, 0, err)
        summary = json.loads((output / "result.json").read_text())
        self.assertEqual(summary["settings"]["shrink_factors"], [2, 1])
        self.assertEqual(summary["settings"]["smoothing_sigmas"], [1.0, 0.0])
        self.assertEqual(len(summary["iterations_per_level"]), 2)
        levels = {row.split(",")[-1] for row in (output / "trace.csv").read_text().splitlines()[1:]}
        self.assertEqual(levels, {"0", "1"})

    def test_composite_initial_transform_in_override_mode_is_saved_whole(self):
        """An .h5 composite, conjugated into the spacing override's units: nested composites are flattened."""
        initial = self.folder / "initial.h5"
        sitk.WriteTransform(sitk.CompositeTransform([self.truth]), str(initial))
        output = self.folder / "override"
        status, _out, err = run_cli("register", "--fixed", self.fixed, "--moving", self.moving, "--quiet",
                                    "--initial-transform", initial, "--spacing-override", "1", "--output", output,
                                    "--scales-estimator", "none", "--lbfgs2-number-of-iterations", "2")
        self.assertEqual(status, 0, err)
        whole = sitk.ReadTransform(str(output / "transform.tfm"))
        bspline = sitk.ReadTransform(str(output / "bspline.tfm"))
        # In the override's units (spacing 1 instead of 2, same origin): x' = o + (x - o) / 2.
        origin = np.asarray(FIXED.GetOrigin())
        native = np.array([10.0, 20.0, 30.0])
        override = origin + (native - origin) / 2
        expected = origin + (np.asarray(self.truth.TransformPoint(
            origin + 2 * (np.asarray(bspline.TransformPoint(override.tolist())) - origin))) - origin) / 2
        self.assertTrue(np.allclose(whole.TransformPoint(override.tolist()), expected, atol=1e-9))

    def test_study_stores_the_mask_and_every_run_uses_it(self):
        study = self.folder / "study"
        common = ("study", "--fixed", self.fixed, "--moving", self.moving, "--output", study, "--spacings", "1",
                  "--repeats", "1", "--modes", "native-reproducible", "--executor", "sequential",
                  "--scales-estimator", "none", "--sampling-strategy", "none", "--lbfgs2-number-of-iterations", "2")
        status, _out, err = run_cli(*common, "--mask", self.mask)
        self.assertEqual(status, 0, err)
        self.assertIn("mask", json.loads((study / "study.json").read_text())["inputs"])
        stored = sitk.ReadImage(str(study / "inputs" / "mask.nrrd"))
        self.assertTrue(np.array_equal(sitk.GetArrayFromImage(stored), ball((14, 14, 14), 10).astype(np.uint8)))
        rows = [json.loads(line) for line in (study / "runs.jsonl").read_text().splitlines()]
        self.assertTrue(rows and all(row["summary"]["masked"] for row in rows))
        status, out, err = run_cli(*common)  # resuming need not name the mask again
        self.assertEqual(status, 0, err)
        self.assertIn("0 run(s) done now, 1 already finished", out)
        self.assertRegex(out, r"Diagnosis:\n  - ", "the diagnosis of a one-run study is never an empty list")
        other = self.folder / "other_mask.nrrd"
        mask = sitk.GetImageFromArray(ball((10, 14, 14), 5).astype(np.uint8))
        mask.CopyInformation(FIXED)
        sitk.WriteImage(mask, str(other))
        status, _out, err = run_cli(*common, "--mask", other)
        self.assertEqual(status, 2)
        self.assertIn("different study", err)

    def test_bad_inputs_give_one_line_and_status_2(self):
        empty = self.folder / "empty_mask.nrrd"
        sitk.WriteImage(sitk.Image([SIZE] * 3, sitk.sitkUInt8), str(empty))
        garbage = self.folder / "garbage.tfm"
        garbage.write_text("this is not a transform\n")
        cases = {"selects no voxel": ("--mask", empty), "not found": ("--mask", self.folder / "missing.nrrd"),
                 "initial transform file": ("--initial-transform", garbage),
                 "one value per level": ("--shrink-factors", "4", "2", "1", "--smoothing-sigmas", "1", "0"),
                 "smaller shrink_factors": ("--shrink-factors", "16", "--smoothing-sigmas", "0")}
        for expected, option in cases.items():
            status, _out, err = run_cli("register", "--fixed", self.fixed, "--moving", self.moving, "--quiet", *option)
            self.assertEqual(status, 2, err)
            self.assertIn(expected, err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertNotIn("Traceback", err)


if __name__ == "__main__":
    unittest.main()
