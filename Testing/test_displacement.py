"""Displacement statistics in mm and voxels, folding, and voxel-unit differences across spacings."""

import unittest

import numpy as np
import SimpleITK as sitk

import testdata  # noqa: F401  (puts the library on sys.path)

from SpacingRegistrationLib.displacement import (displacement_array, field_statistics, minimum_jacobian_determinant,
                                                 voxel_difference)


def image(spacing, size=(20, 18, 16)):
    result = sitk.Image(list(size), sitk.sitkFloat32)
    result.SetSpacing(list(spacing))
    return result


def constant_bspline(reference, shift_mm):
    """A BSpline whose coefficients all equal ``shift_mm``: a pure translation inside its domain."""
    transform = sitk.BSplineTransformInitializer(reference, [2, 2, 2])
    count = len(transform.GetParameters()) // 3
    transform.SetParameters([v for v in shift_mm for _ in range(count)])
    return transform


class StatisticsTest(unittest.TestCase):
    def test_translation_in_mm_and_voxels(self):
        reference = image((2.0, 1.0, 4.0))
        field = displacement_array(constant_bspline(reference, (2.0, 0.0, 0.0)), reference)
        stats = field_statistics(field, reference)
        self.assertAlmostEqual(stats.mean_mm, 2.0, places=9)
        self.assertAlmostEqual(stats.max_mm, 2.0, places=9)
        self.assertAlmostEqual(stats.mean_voxels, 1.0, places=9)  # 2 mm along x at 2 mm spacing
        self.assertEqual(stats.voxels, 20 * 18 * 16)
        self.assertAlmostEqual(minimum_jacobian_determinant(field, reference), 1.0, places=9)

    def test_mask_and_percentiles(self):
        reference = image((1.0, 1.0, 1.0))
        field = np.zeros((16, 18, 20, 3))
        field[..., 2] = np.linspace(0, 3, 20)  # z displacement growing along x
        mask = np.zeros((16, 18, 20), dtype=bool)
        mask[:, :, 10:] = True
        stats = field_statistics(field, reference, mask)
        self.assertEqual(stats.voxels, int(mask.sum()))
        self.assertAlmostEqual(stats.max_mm, 3.0)
        self.assertGreater(stats.percentiles_mm[50], 1.5)
        with self.assertRaisesRegex(ValueError, "selects no voxel"):
            field_statistics(field, reference, np.zeros_like(mask))

    def test_folding_is_detected(self):
        reference = image((1.0, 1.0, 1.0))
        field = np.zeros((16, 18, 20, 3))
        field[..., 0] = -2.0 * np.arange(20)  # x -> x - 2x: the map reverses orientation
        self.assertLess(minimum_jacobian_determinant(field, reference), 0)


class VoxelDifferenceTest(unittest.TestCase):
    def test_same_voxel_result_at_two_spacings_differs_by_zero(self):
        one, four = image((1.0, 1.0, 1.0)), image((4.0, 4.0, 4.0))
        field_one = displacement_array(constant_bspline(one, (0.5, -1.0, 0.25)), one)
        field_four = displacement_array(constant_bspline(four, (2.0, -4.0, 1.0)), four)
        self.assertLess(np.abs(voxel_difference(field_four, four, field_one, one)).max(), 1e-12)
        shifted = displacement_array(constant_bspline(four, (2.4, -4.0, 1.0)), four)
        np.testing.assert_allclose(voxel_difference(shifted, four, field_one, one)[..., 0], 0.1, atol=1e-12)

    def test_grids_of_different_size_are_refused(self):
        with self.assertRaisesRegex(ValueError, "different size"):
            voxel_difference(np.zeros((16, 18, 20, 3)), image((1, 1, 1)), np.zeros((8, 8, 8, 3)),
                             image((1, 1, 1), size=(8, 8, 8)))


if __name__ == "__main__":
    unittest.main()
