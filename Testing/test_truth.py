"""Error against a known deformation: the figures, the truth inputs, the run, the study and the report."""

import contextlib
import csv
import io
import json
import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from testdata import FAST_SETTINGS, SMALL_STUDY, pet_like_pair

from SpacingRegistrationLib import cli, registration
from SpacingRegistrationLib.report import ERROR_GROUP_COLUMNS, ERROR_RUN_COLUMNS, write_report
from SpacingRegistrationLib.study_runner import run_study
from SpacingRegistrationLib.study_store import StudyFolderError, create_or_open, open_study
from SpacingRegistrationLib.truth import (TruthError, error_of_transform, load_truth, truth_from_image,
                                          truth_from_transform)
from SpacingRegistrationLib.variability import analyse


def oblique_image(size=(12, 10, 8), spacing=(1.5, 2.0, 2.5)) -> sitk.Image:
    """A small image with anisotropic spacing, an offset origin and a rotated direction."""
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin((-7.0, 3.0, 11.0))
    angle = 0.3
    image.SetDirection((np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0))
    return image


def physical_points(image: sitk.Image) -> np.ndarray:
    """Voxel centres in LPS mm, numpy order [z, y, x, 3], computed with numpy alone."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()], indexing="ij"), axis=-1)
    index = np.transpose(index, (2, 1, 0, 3)).astype(float)
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    return np.asarray(image.GetOrigin()) + index @ matrix.T


def smooth_field(image: sitk.Image) -> np.ndarray:
    """A known smooth displacement (mm) on the image's grid."""
    p = physical_points(image)
    return np.stack([1.2 * np.sin(p[..., 1] / 6.0), 0.8 * np.cos(p[..., 2] / 5.0) + 0.3,
                     0.5 * np.sin((p[..., 0] + p[..., 2]) / 7.0)], axis=-1)


def as_image(field_mm: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(field_mm, isVector=True)
    image.CopyInformation(reference)
    return image


def numpy_figures(error_mm: np.ndarray, image: sitk.Image, mask=None) -> dict:
    """Mean, 95th percentile and max of the error, in mm and in voxels of ``image``, independently."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    voxels = np.einsum("...j,jk->...k", error_mm, direction) / np.asarray(image.GetSpacing())
    if mask is not None:
        error_mm, voxels = error_mm[mask], voxels[mask]
    mm, vox = np.sqrt((error_mm ** 2).sum(-1)).ravel(), np.sqrt((voxels ** 2).sum(-1)).ravel()
    return {"mean_mm": mm.mean(), "p95_mm": np.percentile(mm, 95), "max_mm": mm.max(),
            "mean_voxels": vox.mean(), "p95_voxels": np.percentile(vox, 95), "max_voxels": vox.max()}


class ErrorFiguresTest(unittest.TestCase):
    """The figures equal an independent numpy computation; doing nothing has the truth's own magnitude."""

    def setUp(self):
        self.image = oblique_image()
        self.field = smooth_field(self.image)
        self.truth = truth_from_image(as_image(self.field, self.image), self.image, "field")
        self.affine = sitk.AffineTransform(3)
        self.affine.SetMatrix((1.02, 0.01, 0.0, -0.015, 0.99, 0.02, 0.0, 0.01, 1.01))
        self.affine.SetTranslation((0.4, -0.7, 0.25))
        self.affine.SetCenter((2.0, 5.0, 14.0))

    def recovered_mm(self) -> np.ndarray:
        p = physical_points(self.image)
        matrix = np.asarray(self.affine.GetMatrix()).reshape(3, 3)
        centre = np.asarray(self.affine.GetCenter())
        return (p - centre) @ matrix.T + centre + np.asarray(self.affine.GetTranslation()) - p

    def assert_figures(self, figures, expected):
        for name, value in expected.items():
            self.assertAlmostEqual(getattr(figures, name), value, places=9, msg=name)

    def test_error_equals_numpy(self):
        error = error_of_transform(self.truth, self.affine, self.image)
        self.assert_figures(error.recovered, numpy_figures(self.recovered_mm() - self.field, self.image))
        self.assertEqual((error.region, error.voxels), ("image", int(np.prod(self.image.GetSize()))))

    def test_error_inside_a_mask_equals_numpy(self):
        mask = np.zeros(self.field.shape[:-1], bool)
        mask[2:6, 3:8, 1:9] = True
        error = error_of_transform(self.truth, self.affine, self.image, mask)
        self.assert_figures(error.recovered, numpy_figures(self.recovered_mm() - self.field, self.image, mask))
        self.assertEqual((error.region, error.voxels), ("mask", int(mask.sum())))

    def test_identity_error_is_the_truths_magnitude(self):
        error = error_of_transform(self.truth, sitk.Transform(3, sitk.sitkIdentity), self.image)
        expected = numpy_figures(self.field, self.image)
        self.assert_figures(error.identity, expected)
        self.assert_figures(error.recovered, expected)
        self.assertAlmostEqual(error.relative_to_identity, 1.0, places=12)

    def test_exact_result_has_zero_error(self):
        error = error_of_transform(self.truth, sitk.DisplacementFieldTransform(as_image(self.field, self.image)),
                                   self.image)
        self.assertLess(error.recovered.max_voxels, 1e-9)
        self.assertGreater(error.identity.mean_voxels, 0.1)

    def test_transform_file_and_displacement_image_agree(self):
        with tempfile.TemporaryDirectory() as folder:
            sitk.WriteTransform(self.affine, f"{folder}/affine.tfm")
            from_file = load_truth(f"{folder}/affine.tfm", self.image)
            field = sitk.TransformToDisplacementField(self.affine, sitk.sitkVectorFloat64, self.image.GetSize(),
                                                      self.image.GetOrigin(), self.image.GetSpacing(),
                                                      self.image.GetDirection())
            sitk.WriteImage(field, f"{folder}/field.nrrd")
            from_image = load_truth(f"{folder}/field.nrrd", self.image)
        np.testing.assert_allclose(from_file.field_mm, self.recovered_mm(), atol=1e-9)
        np.testing.assert_allclose(from_image.field_mm, self.recovered_mm(), atol=1e-9)

    def test_displacement_image_on_another_grid_is_resampled(self):
        # An affine displacement is linear in x, so linear resampling from a finer, shifted grid is exact.
        fine = oblique_image(size=(30, 26, 22), spacing=(0.75, 1.0, 1.25))
        fine.SetOrigin((-9.0, 1.0, 9.0))
        truth = truth_from_transform(self.affine, fine)
        resampled = truth_from_image(truth.as_image(), self.image)
        np.testing.assert_allclose(resampled.field_mm, self.recovered_mm(), atol=1e-9)


class BadTruthTest(unittest.TestCase):
    """Every bad truth gives one error naming the problem (and, in the CLI, one line and status 2)."""

    def setUp(self):
        self.folder = Path(tempfile.mkdtemp())
        self.image = oblique_image()

    def tearDown(self):
        shutil.rmtree(self.folder, ignore_errors=True)

    def bad_truths(self) -> dict[str, tuple[Path, str]]:
        scalar = self.folder / "scalar.nrrd"
        sitk.WriteImage(self.image, str(scalar))
        two_d = self.folder / "field2d.nrrd"
        sitk.WriteImage(sitk.Image([5, 5], sitk.sitkVectorFloat64, 2), str(two_d))
        two_components = self.folder / "two_components.nrrd"
        sitk.WriteImage(sitk.Image([5, 5, 5], sitk.sitkVectorFloat64, 2), str(two_components))
        transform_2d = self.folder / "rigid2d.tfm"
        sitk.WriteTransform(sitk.Euler2DTransform(), str(transform_2d))
        garbage = self.folder / "garbage.tfm"
        garbage.write_text("not a transform\n")
        not_an_image = self.folder / "garbage.nrrd"
        not_an_image.write_bytes(b"\x00\x01 nothing")
        truncated = self.folder / "truncated.nii"  # ITK reads the missing voxels of a cut NIfTI as zeros
        sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorFloat64, 3), str(truncated))
        truncated.write_bytes(truncated.read_bytes()[:-100])
        elsewhere = self.folder / "elsewhere.nrrd"  # a field whose grid lies beside the image, not on it
        field = sitk.Image([5, 5, 5], sitk.sitkVectorFloat64, 3)
        field.SetOrigin([self.image.GetOrigin()[0] + 1000.0] + list(self.image.GetOrigin()[1:]))
        sitk.WriteImage(field, str(elsewhere))
        return {"elsewhere": (elsewhere, "does not overlap the fixed image"),
                "truncated image": (truncated, "truncated"), "missing": (self.folder / "missing.nrrd", "not found"),
                "scalar": (scalar, "3 components"),
                "2D image": (two_d, "2D image"), "2 components": (two_components, "3 components"),
                "2D transform": (transform_2d, "2D transform"), "garbage transform": (garbage, "not an ITK transform file"),
                "garbage image": (not_an_image, "is not an NRRD file")}

    def test_bad_truth_files(self):
        for name, (path, words) in self.bad_truths().items():
            with self.subTest(name), self.assertRaises(TruthError) as caught:
                load_truth(path, self.image)
            self.assertIn(words, str(caught.exception))
            self.assertIn(str(path), str(caught.exception))

    def test_cli_register_with_a_bad_truth(self):
        pair = pet_like_pair()
        fixed, moving = self.folder / "fixed.nrrd", self.folder / "moving.nrrd"
        sitk.WriteImage(pair.fixed, str(fixed))
        sitk.WriteImage(pair.moving, str(moving))
        for name, (path, words) in self.bad_truths().items():
            stderr = io.StringIO()
            with self.subTest(name), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                status = cli.main(["register", "--fixed", str(fixed), "--moving", str(moving), "--truth", str(path),
                                   "--quiet", "--scales-estimator", "none"])
            self.assertEqual(status, 2, name)
            lines = stderr.getvalue().strip().splitlines()
            self.assertEqual(len(lines), 1, stderr.getvalue())
            self.assertIn("error:", lines[0])
            self.assertIn(words, lines[0])


class RegistrationErrorTest(unittest.TestCase):
    """The engine reports the error; a spacing override compares in voxels of each image."""

    @classmethod
    def setUpClass(cls):
        cls.pair = pet_like_pair()

    def run_at(self, spacing: float):
        settings = FAST_SETTINGS.replace(spacing_override=spacing, normalised_units=True, reproducible=True)
        return registration.run(self.pair.fixed, self.pair.moving, settings, truth=self.pair.displacement)

    def test_normalised_reproducible_error_does_not_depend_on_the_spacing(self):
        at_one, at_three = self.run_at(1.0), self.run_at(3.0)
        self.assertTrue(at_one.moved)
        for name in ("mean_voxels", "p95_voxels", "max_voxels", "mean_mm", "p95_mm", "max_mm"):
            self.assertAlmostEqual(getattr(at_one.error.recovered, name), getattr(at_three.error.recovered, name),
                                   places=9, msg=name)
        # The truth is measured in the native image (4 mm voxels), whatever spacing was registered.
        identity = at_one.error.identity
        self.assertAlmostEqual(identity.mean_mm, 4.0 * identity.mean_voxels, places=9)
        self.assertAlmostEqual(at_one.error.recovered.mean_mm, 4.0 * at_one.error.recovered.mean_voxels, places=9)
        self.assertEqual(at_three.summary()["error"], json.loads(json.dumps(at_three.summary()["error"])))
        self.assertNotEqual(at_one.error.recovered.mean_voxels, identity.mean_voxels)

    def test_error_equals_the_transforms_own_error(self):
        result = self.run_at(2.0)
        registered = sitk.Image(self.pair.fixed)
        registered.SetSpacing((2.0, 2.0, 2.0))
        recovered_mm = sitk.GetArrayFromImage(sitk.TransformToDisplacementField(
            result.transform, sitk.sitkVectorFloat64, registered.GetSize(), registered.GetOrigin(),
            registered.GetSpacing(), registered.GetDirection()))
        # Same voxel grid: recovered voxels (2 mm) minus truth voxels (4 mm), then native mm.
        error_mm = recovered_mm * 2.0 - sitk.GetArrayFromImage(self.pair.displacement)
        expected = numpy_figures(error_mm, self.pair.fixed)
        for name, value in expected.items():
            self.assertAlmostEqual(getattr(result.error.recovered, name), value, places=9, msg=name)

    def test_without_truth_no_error(self):
        result = registration.run(self.pair.fixed, self.pair.moving, FAST_SETTINGS.replace(reproducible=True))
        self.assertIsNone(result.error)
        self.assertIsNone(result.summary()["error"])


class StudyTruthTest(unittest.TestCase):
    """A study with a truth: error per run and group in the analysis, JSON, CSV and HTML; the truth is
    stored and fingerprinted; the report can measure against a truth given later."""

    @classmethod
    def setUpClass(cls):
        cls.root = Path(tempfile.mkdtemp())
        cls.pair = pet_like_pair()
        cls.truth_file = cls.root / "truth.nrrd"
        sitk.WriteImage(cls.pair.displacement, str(cls.truth_file))
        cls.folder = cls.root / "study"
        outcome = run_study(SMALL_STUDY, cls.pair.fixed, cls.pair.moving, cls.folder, executor="sequential",
                            truth=cls.truth_file)
        assert outcome.finished, outcome
        cls.store = open_study(cls.folder)
        cls.analysis = analyse(cls.store)
        cls.paths = write_report(cls.store, cls.analysis, cls.root / "report")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def test_rows_have_the_runs_own_error(self):
        self.assertEqual(sorted(self.analysis.run_errors), sorted(self.store.rows))
        truth = load_truth(self.truth_file, self.pair.fixed)
        for run in SMALL_STUDY.runs():
            registered = sitk.Image(self.pair.fixed)
            registered.SetSpacing([run.spacing] * 3)
            expected = error_of_transform(truth, self.store.read_transform(run.run_id), registered)
            self.assertAlmostEqual(self.analysis.run_errors[run.run_id]["recovered"]["mean_voxels"],
                                   expected.recovered.mean_voxels, places=12, msg=run.run_id)

    def test_groups_summarise_their_runs(self):
        identity = self.analysis.truth["identity"]["mean_voxels"]
        self.assertGreater(identity, 0.5)
        for group in self.analysis.groups:
            means = [self.analysis.run_errors[r]["recovered"]["mean_voxels"] for r in group.runs]
            self.assertAlmostEqual(group.error["mean_voxels"], float(np.mean(means)), places=12)
            self.assertEqual(group.error["worst_mean_voxels"], max(means))
            self.assertIn(group.error["worst_seed"], group.seeds)
        normalised = [g.error["mean_voxels"] for g in self.analysis.groups if g.mode == "normalised-reproducible"]
        self.assertAlmostEqual(normalised[0], normalised[1], places=9)

    def test_diagnosis_names_the_lowest_error(self):
        statement = next(s for s in self.analysis.statements if s["kind"] == "accuracy")
        best = min((g for g in self.analysis.groups if g.moved), key=lambda g: g.error["mean_voxels"])
        self.assertEqual(statement["figures"]["mean_voxels"], best.error["mean_voxels"])
        self.assertEqual(statement["figures"]["identity_mean_voxels"], self.analysis.truth["identity"]["mean_voxels"])
        self.assertIn(f"{best.error['mean_voxels']:.3g} voxels", statement["text"])
        self.assertIn("doing nothing", statement["text"])

    def test_json_csv_and_html_carry_the_errors(self):
        saved = json.loads(self.paths["json"].read_text())
        self.assertEqual(saved["analysis"]["truth"]["identity"]["mean_voxels"],
                         self.analysis.truth["identity"]["mean_voxels"])
        by_run = {r["run_id"]: r for r in saved["runs"]}
        for run_id, error in self.analysis.run_errors.items():
            self.assertEqual(by_run[run_id]["error_mean_voxels"], error["recovered"]["mean_voxels"])
        with self.paths["runs_csv"].open() as stream:
            rows = list(csv.DictReader(stream))
        self.assertTrue(set(ERROR_RUN_COLUMNS) <= set(rows[0]))
        self.assertEqual({float(r["error_p95_mm"]) for r in rows},
                         {e["recovered"]["p95_mm"] for e in self.analysis.run_errors.values()})
        with self.paths["groups_csv"].open() as stream:
            groups = list(csv.DictReader(stream))
        self.assertTrue(set(ERROR_GROUP_COLUMNS) <= set(groups[0]))
        html = self.paths["html"].read_text()
        for column in ERROR_GROUP_COLUMNS:
            self.assertIn(f'data-column="{column}"', html)
        self.assertIn('id="truth"', html)
        self.assertIn("Error against the known deformation vs spacing", html)
        self.assertIn('class="reference"', html)

    def test_truth_is_stored_and_fingerprinted(self):
        self.assertTrue(self.store.truth_path.is_file())
        other = sitk.Compose(*[sitk.VectorIndexSelectionCast(self.pair.displacement, i) * 0.5 for i in range(3)])
        with self.assertRaises(StudyFolderError):
            create_or_open(self.folder, SMALL_STUDY, self.pair.fixed, self.pair.moving, other)
        reopened = create_or_open(self.folder, SMALL_STUDY, self.pair.fixed, self.pair.moving)
        self.assertEqual(len(reopened.rows), len(SMALL_STUDY.runs()))

    def test_cli_study_with_truth(self):
        fixed, moving = self.root / "fixed.nrrd", self.root / "moving.nrrd"
        sitk.WriteImage(self.pair.fixed, str(fixed))
        sitk.WriteImage(self.pair.moving, str(moving))
        output = self.root / "cli_study"
        with contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.redirect_stderr(io.StringIO()):
            status = cli.main(["study", "--fixed", str(fixed), "--moving", str(moving), "--output", str(output),
                               "--truth", str(self.truth_file), "--spacings", "1", "--repeats", "1", "--modes",
                               "normalised-reproducible", "--executor", "sequential", "--scales-estimator", "none",
                               "--lbfgs2-number-of-iterations", "3"])
        self.assertEqual(status, 0)
        self.assertIn("Lowest error against the known deformation", printed.getvalue())
        saved = json.loads((output / "report" / "analysis.json").read_text())
        # The same settings, seed and one work unit as the shared study's run: the same error, to the bit.
        run_id = "normalised-reproducible_s1_r0"
        self.assertEqual(saved["runs"][0]["error_mean_voxels"],
                         self.analysis.run_errors[run_id]["recovered"]["mean_voxels"])
        self.assertTrue((output / "inputs" / "truth.nrrd").is_file())

    def test_report_with_another_truth_on_an_existing_study(self):
        zero = self.root / "zero.tfm"
        sitk.WriteTransform(sitk.TranslationTransform(3), str(zero))
        output = self.root / "zero_report"
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            status = cli.main(["report", "--study", str(self.folder), "--output", str(output), "--truth", str(zero)])
        self.assertEqual(status, 0)
        self.assertIn("Lowest error", printed.getvalue())
        # Against a zero truth doing nothing is exact, so every moved run is worse.
        self.assertIn("Every spacing and mode is worse than doing nothing", printed.getvalue())
        saved = json.loads((output / "analysis.json").read_text())
        self.assertEqual(saved["analysis"]["truth"]["identity"]["mean_voxels"], 0.0)
        for run in saved["runs"]:  # against a zero truth the error is the run's own displacement
            self.assertGreaterEqual(run["error_max_voxels"], 0.0)
            self.assertAlmostEqual(run["error_max_voxels"], run["max_displacement_voxels"],
                                   delta=1e-4 * run["max_displacement_voxels"])


if __name__ == "__main__":
    unittest.main()
