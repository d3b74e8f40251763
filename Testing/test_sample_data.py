"""Tests of SpacingRegistrationLib.sample_data: MNI152 download, synthetic PET-like pair, mouse PET."""

import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SpacingRegistration"))

import numpy as np
import SimpleITK as sitk

from SpacingRegistrationLib import sample_data

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def warp_with_truth(pair: sample_data.SamplePair, image: sitk.Image) -> sitk.Image:
    """image resampled on the fixed grid through T(x) = x + u(x)."""
    transform = sitk.DisplacementFieldTransform(sitk.Image(pair.displacement))
    return sitk.Resample(image, pair.fixed, transform, sitk.sitkLinear)


def correlation(a: sitk.Image, b: sitk.Image) -> float:
    return float(np.corrcoef(array(a).ravel(), array(b).ravel())[0, 1])


def jacobian_determinant(displacement: sitk.Image) -> np.ndarray:
    """det(I + du/dx) per voxel, with du/dx in physical (LPS) coordinates."""
    u = array(displacement)
    by_index = np.stack(np.gradient(u, axis=(2, 1, 0)), axis=-1)
    index_to_physical = np.array(displacement.GetDirection()).reshape(3, 3) * displacement.GetSpacing()
    return np.linalg.det(np.eye(3) + by_index @ np.linalg.inv(index_to_physical))


class SampleDataTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mni = sample_data.fetch_mni152()
        cls.pair = cls.make()
        cls.clean = cls.make(fwhm_mm=0.0, mean_counts=None)

    @classmethod
    def make(cls, **kwargs) -> sample_data.SamplePair:
        return sample_data.make_pet_like_pair(cls.mni["gm"], cls.mni["wm"], **kwargs)

    def test_fetch_returns_the_template_files(self):
        self.assertEqual(set(self.mni), {"t1", "gm", "wm"})
        for path in self.mni.values():
            self.assertEqual(sitk.ReadImage(str(path)).GetSize(), (197, 233, 189))

    def test_fetch_uses_the_cache(self):
        times = {key: path.stat().st_mtime_ns for key, path in self.mni.items()}
        with mock.patch.object(sample_data.subprocess, "run", side_effect=AssertionError("downloaded")):
            paths = sample_data.fetch_mni152(self.mni["t1"].parent)
        self.assertEqual(paths, self.mni)
        self.assertEqual({key: path.stat().st_mtime_ns for key, path in paths.items()}, times)

    def test_fetch_reports_a_failed_download(self):
        with tempfile.TemporaryDirectory() as cache, \
                mock.patch.object(sample_data, "NILEARN_VERSION", "0.0.0"):
            with self.assertRaisesRegex(RuntimeError, r"nilearn==0\.0\.0.*exit code"):
                sample_data.fetch_mni152(cache)
            self.assertEqual(list(Path(cache).iterdir()), [])

    def test_geometry_at_4_mm(self):
        reference = sitk.ReadImage(str(self.mni["gm"]))
        for image in (self.pair.fixed, self.pair.moving, self.pair.displacement):
            self.assertEqual(image.GetSize(), self.pair.fixed.GetSize())
            self.assertEqual(image.GetOrigin(), self.pair.fixed.GetOrigin())
            self.assertEqual(image.GetSpacing(), (4.0, 4.0, 4.0))
            self.assertEqual(image.GetDirection(), reference.GetDirection())
        self.assertTrue(all(32 <= n <= 64 for n in self.pair.fixed.GetSize()), self.pair.fixed.GetSize())
        self.assertEqual(self.pair.fixed.GetPixelID(), sitk.sitkFloat32)
        self.assertEqual(self.pair.moving.GetPixelID(), sitk.sitkFloat32)
        self.assertEqual(self.pair.displacement.GetPixelID(), sitk.sitkVectorFloat64)
        self.assertEqual(self.pair.displacement.GetNumberOfComponentsPerPixel(), 3)

    def test_grid_stays_in_template_space(self):
        centre = self.pair.fixed.TransformContinuousIndexToPhysicalPoint(
            [(n - 1) / 2 for n in self.pair.fixed.GetSize()])
        self.assertLess(np.linalg.norm(centre), 40.0)  # the brain's centre is near the MNI origin

    def test_repeat_is_bit_identical(self):
        again = self.make()
        for name in ("fixed", "moving", "displacement"):
            np.testing.assert_array_equal(array(getattr(again, name)), array(getattr(self.pair, name)))
        self.assertEqual(again.description, self.pair.description)

    def test_seed_changes_only_the_noise(self):
        other = self.make(seed=1)
        np.testing.assert_array_equal(array(other.displacement), array(self.pair.displacement))
        self.assertFalse(np.array_equal(array(other.fixed), array(self.pair.fixed)))
        self.assertFalse(np.array_equal(array(other.moving), array(self.pair.moving)))

    def test_maximum_displacement_in_voxels(self):
        for pair, expected in ((self.pair, 3.0), (self.make(max_displacement_voxels=1.5, mean_counts=None), 1.5)):
            largest = np.linalg.norm(array(pair.displacement), axis=-1).max() / pair.fixed.GetSpacing()[0]
            self.assertAlmostEqual(largest, expected, delta=1e-6)

    def test_displacement_is_nearly_zero_mean(self):
        u = array(self.pair.displacement).reshape(-1, 3)
        self.assertLess(np.linalg.norm(u.mean(axis=0)), 0.1 * np.linalg.norm(u, axis=1).max())

    def test_deformation_does_not_fold(self):
        self.assertGreater(jacobian_determinant(self.pair.displacement).min(), 0.0)

    def test_folding_deformation_is_refused(self):
        with self.assertRaisesRegex(ValueError, "folds"):
            self.make(max_displacement_voxels=10.0)

    def test_true_transform_aligns_moving_to_fixed(self):
        for pair in (self.clean, self.pair):
            aligned = correlation(warp_with_truth(pair, pair.moving), pair.fixed)
            unaligned = correlation(pair.moving, pair.fixed)
            self.assertGreater(aligned, unaligned + 0.05, pair.description)
        self.assertGreater(correlation(warp_with_truth(self.clean, self.clean.moving), self.clean.fixed), 0.98)

    def test_intensity_change(self):
        brain = array(self.clean.fixed) >= 0.3
        for pair, change in ((self.pair, 0.9), (self.make(intensity_change=0.6), 0.6)):
            ratio = array(warp_with_truth(pair, pair.moving))[brain].sum() / array(pair.fixed)[brain].sum()
            self.assertAlmostEqual(ratio, change, delta=0.02)

    def test_noise_is_poisson_with_pet_like_counts(self):
        noisy = self.make(fwhm_mm=0.0)
        counts, expected = array(noisy.moving), array(self.clean.moving)
        np.testing.assert_array_equal(counts, np.round(counts))
        scale = counts.sum() / expected.sum()
        standardised = (counts - scale * expected) / np.sqrt(scale * expected)
        self.assertAlmostEqual(float(standardised.std()), 1.0, delta=0.05)
        tissue_probability = sitk.ReadImage(str(self.mni["gm"]), sitk.sitkFloat32) + sitk.ReadImage(
            str(self.mni["wm"]), sitk.sitkFloat32)
        tissue = array(sitk.Resample(tissue_probability, noisy.moving)) >= 0.5 * 255
        self.assertAlmostEqual(counts[tissue].mean() / 0.9, 50.0, delta=5.0)

    def test_blur_smooths(self):
        blurred = self.make(mean_counts=None)
        self.assertLess(np.abs(np.diff(array(blurred.fixed), axis=2)).mean(),
                        0.8 * np.abs(np.diff(array(self.clean.fixed), axis=2)).mean())

    def test_write_pair_round_trip(self):
        with tempfile.TemporaryDirectory() as tmp:
            paths = sample_data.write_pair(self.pair, Path(tmp) / "pair")
            self.assertEqual(set(paths), {"fixed", "moving", "displacement"})
            for name, path in paths.items():
                self.assertEqual(path.name, f"{name}.nrrd")
                written, original = sitk.ReadImage(str(path)), getattr(self.pair, name)
                np.testing.assert_array_equal(array(written), array(original))
                self.assertEqual(written.GetDirection(), original.GetDirection())
                self.assertEqual(written.GetOrigin(), original.GetOrigin())


@unittest.skipUnless(SHARED_DATA.is_dir(), f"shared PET data not found at {SHARED_DATA}")
class MousePetTest(unittest.TestCase):
    def test_loads_both_gates(self):
        fixed, moving = sample_data.load_mouse_pet(SHARED_DATA)
        for image, (low, high) in ((fixed, (0.86, 335.8)), (moving, (0.63, 262.6))):
            self.assertEqual(image.GetPixelID(), sitk.sitkFloat32)
            self.assertEqual(image.GetSize(), (40, 40, 40))
            np.testing.assert_allclose(image.GetSpacing(), (0.8, 0.8, 0.8))
            np.testing.assert_allclose([array(image).min(), array(image).max()], [low, high], atol=0.05)

    def test_missing_file_is_named(self):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "mouse_fdg_pet_gate_T.nrrd").symlink_to(SHARED_DATA / "mouse_fdg_pet_gate_T.nrrd")
            with self.assertRaisesRegex(FileNotFoundError, "mouse_fdg_pet_gate_R.nrrd"):
                sample_data.load_mouse_pet(tmp)


if __name__ == "__main__":
    unittest.main()
