"""Control-grid geometry: the report's 168^3 case, agreement with SimpleITK, coverage warnings."""

import unittest

import numpy as np
import SimpleITK as sitk

import testdata  # noqa: F401  (puts the library on sys.path)

from SpacingRegistrationLib.grid import grid_geometry, initial_bspline, mesh_size_for
from SpacingRegistrationLib.settings import RegistrationSettings

REPORTED_POSITIONS = (-84.75, -0.625, 83.5, 167.625, 251.75)


def cube(size=168, spacing=1.0):
    image = sitk.Image([size] * 3, sitk.sitkFloat32)
    image.SetSpacing([spacing] * 3)
    return image


class ReportedCaseTest(unittest.TestCase):
    def test_168_cube_mesh_2_gives_the_reported_numbers(self):
        image = cube()
        geometry = grid_geometry(sitk.BSplineTransformInitializer(image, [2, 2, 2]), image)
        self.assertEqual(geometry.points_per_axis, (5, 5, 5))
        self.assertEqual(geometry.grid_origin, (-84.75,) * 3)
        self.assertEqual(geometry.grid_spacing, (84.125,) * 3)
        self.assertEqual(geometry.domain_physical_dimensions, (168.25,) * 3)
        self.assertEqual(geometry.domain_origin, (-0.625,) * 3)
        for positions in geometry.axis_positions:
            self.assertEqual(positions, REPORTED_POSITIONS)
        # Voxel-corner extent [-0.5, 167.5]: only 83.5 is inside on each axis.
        self.assertEqual(geometry.inside_per_axis, (1, 1, 1))
        self.assertEqual((geometry.inside_count, geometry.outside_count), (1, 124))
        self.assertEqual(geometry.coverage, 1.0)
        self.assertTrue(any("124 of 125 control points" in w for w in geometry.warnings))

    def test_every_number_doubles_at_spacing_2(self):
        one = grid_geometry(sitk.BSplineTransformInitializer(cube(), [2, 2, 2]), cube())
        two = grid_geometry(sitk.BSplineTransformInitializer(cube(spacing=2.0), [2, 2, 2]), cube(spacing=2.0))
        self.assertEqual(two.axis_positions, tuple(tuple(2 * p for p in axis) for axis in one.axis_positions))
        self.assertEqual(two.domain_physical_dimensions, (336.5,) * 3)

    def test_control_points_agree_with_simpleitk(self):
        image = sitk.Image([30, 24, 20], sitk.sitkFloat32)
        image.SetSpacing([1.5, 2.0, 2.5])
        image.SetOrigin([10.0, -20.0, 5.0])
        rotation = sitk.VersorTransform([0.3, -0.2, 0.9], 0.4)
        image.SetDirection(rotation.GetMatrix())
        transform = sitk.BSplineTransformInitializer(image, [3, 2, 4])
        geometry = grid_geometry(transform, image)
        coefficients = transform.GetCoefficientImages()[0]
        size = coefficients.GetSize()
        expected = [coefficients.TransformIndexToPhysicalPoint([i, j, k])
                    for k in range(size[2]) for j in range(size[1]) for i in range(size[0])]
        np.testing.assert_allclose(geometry.control_points, expected, rtol=0, atol=1e-9)
        self.assertEqual(len(geometry.control_points), 6 * 5 * 7)
        self.assertEqual(geometry.inside_count + geometry.outside_count, 210)
        self.assertGreater(geometry.coverage, 0.99)


class OtherImageTest(unittest.TestCase):
    def test_transform_made_at_spacing_2_against_the_spacing_1_image(self):
        transform = sitk.BSplineTransformInitializer(cube(spacing=2.0), [2, 2, 2])
        geometry = grid_geometry(transform, cube())
        # Control points at -169.5, -1.25, 167, 335.25, 503.5: the domain [-1.25, 335.25] covers the image
        # [-0.5, 167.5], and only 167 lies inside it on each axis.
        self.assertEqual(geometry.axis_positions[0], (-169.5, -1.25, 167.0, 335.25, 503.5))
        self.assertEqual(geometry.coverage, 1.0)
        self.assertEqual(geometry.inside_per_axis, (1, 1, 1))
        self.assertEqual(geometry.inside_count, 1)

    def test_grid_that_misses_the_image_is_flagged(self):
        far = cube(size=40)
        far.SetOrigin([500.0, 0.0, 0.0])
        geometry = grid_geometry(sitk.BSplineTransformInitializer(far, [2, 2, 2]), cube(size=40))
        self.assertEqual(geometry.coverage, 0.0)
        self.assertEqual(geometry.inside_count, 0)
        self.assertIn("does not overlap the image", geometry.warnings[0])

    def test_partial_overlap_is_flagged_with_its_fraction(self):
        shifted = cube(size=40)
        shifted.SetOrigin([20.0, 0.0, 0.0])
        geometry = grid_geometry(sitk.BSplineTransformInitializer(shifted, [2, 2, 2]), cube(size=40))
        self.assertAlmostEqual(geometry.coverage, 0.5, delta=0.03)
        self.assertTrue(any("lies inside the transform domain" in w for w in geometry.warnings))


class GridSpecificationTest(unittest.TestCase):
    def test_mesh_from_control_point_spacing(self):
        image = cube(size=64, spacing=2.0)
        self.assertEqual(mesh_size_for(image, RegistrationSettings(grid_specification="spacing_mm", grid_spacing_mm=32.0)),
                         [4, 4, 4])
        self.assertEqual(mesh_size_for(image, RegistrationSettings(grid_specification="spacing_voxels",
                                                                   grid_spacing_voxels=8.0)), [8, 8, 8])
        transform = initial_bspline(image, RegistrationSettings(mesh_size=(3, 1, 2)))
        self.assertEqual(list(transform.GetTransformDomainMeshSize()), [3, 1, 2])


if __name__ == "__main__":
    unittest.main()
