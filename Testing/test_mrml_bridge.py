"""Tests of SpacingRegistrationLib.mrml.bridge against a real (headless) vtkMRMLScene."""

import os
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SpacingRegistration"))

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from SpacingRegistrationLib.mrml import bridge
from SpacingRegistrationLib.grid import grid_geometry

TOLERANCE_MM = 1e-6


def rotatedImage(pixelType=sitk.sitkFloat32, size=(14, 11, 9)) -> sitk.Image:
    """Small random image with anisotropic spacing, an off-axis rotation and a non-zero origin."""
    rng = np.random.default_rng(3)
    array = rng.normal(100.0, 30.0, size[::-1])
    image = sitk.GetImageFromArray(array)
    image = sitk.Cast(image, pixelType) if pixelType != sitk.sitkFloat64 else image
    image.SetSpacing((1.5, 2.25, 3.1))
    image.SetOrigin((12.5, -7.25, 30.0))
    image.SetDirection(sitk.VersorTransform((0.3, -0.5, 0.8), 0.7).GetMatrix())
    return image


def randomBSpline(image: sitk.Image, meshSize=(3, 2, 4), seed=7) -> sitk.BSplineTransform:
    """Cubic BSpline over a padded copy of ``image``'s extent with random coefficients (up to a few mm)."""
    transform = sitk.BSplineTransformInitializer(image, list(meshSize))
    rng = np.random.default_rng(seed)
    transform.SetParameters(rng.normal(0.0, 2.0, transform.GetNumberOfParameters()).tolist())
    return transform


def pointsInDomain(transform: sitk.BSplineTransform, count: int, seed=11) -> np.ndarray:
    """Random LPS points strictly inside the transform domain."""
    rng = np.random.default_rng(seed)
    origin = np.asarray(transform.GetTransformDomainOrigin())
    extent = np.asarray(transform.GetTransformDomainPhysicalDimensions())
    direction = np.asarray(transform.GetTransformDomainDirection()).reshape(3, 3)
    return origin + (rng.uniform(0.01, 0.99, (count, 3)) * extent) @ direction.T


def rasThroughNode(node, lpsPoints: np.ndarray) -> np.ndarray:
    transformFromParent = node.GetTransformFromParent()
    return np.array([transformFromParent.TransformPoint(p) for p in bridge.lpsToRas(lpsPoints).tolist()])


def rasThroughSitk(transform: sitk.Transform, lpsPoints: np.ndarray) -> np.ndarray:
    return bridge.lpsToRas([transform.TransformPoint(p) for p in lpsPoints.tolist()])


def pointsArray(node) -> np.ndarray:
    points = node.GetPolyData().GetPoints()
    return numpy_support.vtk_to_numpy(points.GetData()).astype(float) if points else np.zeros((0, 3))


class VolumeTest(unittest.TestCase):
    def setUp(self):
        self.scene = bridge.createScene()

    def assertSameImage(self, actual: sitk.Image, expected: sitk.Image):
        self.assertEqual(actual.GetPixelID(), expected.GetPixelID())
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(actual), sitk.GetArrayViewFromImage(expected))
        np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), rtol=0, atol=1e-12)

    def test_round_trip_preserves_voxels_and_geometry(self):
        for pixelType in (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkInt16, sitk.sitkUInt8):
            with self.subTest(pixelType=sitk.GetPixelIDValueAsString(pixelType)):
                image = rotatedImage(pixelType)
                node = bridge.volumeNodeFromImage(self.scene, image, "volume")
                self.assertEqual(node.GetClassName(), "vtkMRMLScalarVolumeNode")
                self.assertIsNotNone(node.GetDisplayNode())
                self.assertIsNotNone(self.scene.GetNodeByID(node.GetDisplayNode().GetColorNodeID()))
                self.assertSameImage(bridge.imageFromVolumeNode(node), image)

    def test_ijk_to_ras_is_lps_geometry_flipped(self):
        image = rotatedImage()
        node = bridge.volumeNodeFromImage(self.scene, image, "volume")
        ijkToRas = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(ijkToRas)
        for index in [(0, 0, 0), (13, 0, 0), (3, 10, 8), (13, 10, 8)]:
            ras = ijkToRas.MultiplyPoint((*index, 1.0))[:3]
            lps = image.TransformIndexToPhysicalPoint(index)
            np.testing.assert_allclose(ras, bridge.lpsToRas(lps), rtol=0, atol=1e-12)
        self.assertEqual(node.GetImageData().GetDimensions(), image.GetSize())

    def test_rejects_vector_images(self):
        vector = sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3)
        with self.assertRaises(ValueError):
            bridge.volumeNodeFromImage(self.scene, vector, "vector")


class BSplineTransformTest(unittest.TestCase):
    def setUp(self):
        self.scene = bridge.createScene()
        self.transform = randomBSpline(rotatedImage())
        self.node = bridge.bsplineTransformNodeFromSitk(self.scene, self.transform, "bspline")
        self.points = pointsInDomain(self.transform, 300)

    def test_transform_from_parent_matches_sitk_inside_domain(self):
        expected = rasThroughSitk(self.transform, self.points)
        self.assertGreater(np.abs(expected - bridge.lpsToRas(self.points)).max(), 1.0)  # non-trivial
        error = np.linalg.norm(rasThroughNode(self.node, self.points) - expected, axis=1)
        self.assertLess(error.max(), TOLERANCE_MM)

    def test_transform_to_parent_is_the_other_direction(self):
        transformToParent = self.node.GetTransformToParent()
        moved = np.array([transformToParent.TransformPoint(p) for p in bridge.lpsToRas(self.points).tolist()])
        error = np.linalg.norm(moved - rasThroughSitk(self.transform, self.points), axis=1)
        self.assertGreater(error.max(), 0.1)

    def test_node_class_and_vtk_transform(self):
        self.assertEqual(self.node.GetClassName(), "vtkMRMLBSplineTransformNode")
        self.assertTrue(self.node.GetTransformFromParent().IsA("vtkOrientedBSplineTransform"))

    def test_generic_sitk_transform_holding_a_bspline_is_accepted(self):
        node = bridge.bsplineTransformNodeFromSitk(self.scene, sitk.Transform(self.transform), "generic")
        error = np.linalg.norm(rasThroughNode(node, self.points) - rasThroughSitk(self.transform, self.points), axis=1)
        self.assertLess(error.max(), TOLERANCE_MM)

    def test_inverse_conversion_restores_parameters(self):
        restored = bridge.sitkBSplineFromTransformNode(self.node)
        np.testing.assert_allclose(restored.GetFixedParameters(), self.transform.GetFixedParameters(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(restored.GetParameters(), self.transform.GetParameters(), rtol=0, atol=1e-12)
        error = np.linalg.norm(rasThroughSitk(restored, self.points) - rasThroughSitk(self.transform, self.points), axis=1)
        self.assertLess(error.max(), TOLERANCE_MM)

    def test_non_bspline_node_is_rejected(self):
        linear = self.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "linear")
        with self.assertRaises(ValueError):
            bridge.sitkBSplineFromTransformNode(linear)


class ControlGridModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.image = rotatedImage()
        cls.geometry = grid_geometry(randomBSpline(cls.image, meshSize=(2, 3, 2)), cls.image)

    def setUp(self):
        self.scene = bridge.createScene()
        self.nodes = bridge.controlGridModelNodes(self.scene, self.geometry, "grid")

    def sphereCentres(self, node) -> np.ndarray:
        points = pointsArray(node)
        pointsPerSphere = 2 + (8 - 2) * 12  # poles + rings of the vtkSphereSource
        return points.reshape(-1, pointsPerSphere, 3).mean(axis=1)

    def test_all_models_with_display_nodes(self):
        self.assertEqual(set(self.nodes), set(bridge.GRID_COLORS))
        colors = set()
        for key, node in self.nodes.items():
            self.assertEqual(node.GetClassName(), "vtkMRMLModelNode")
            display = node.GetDisplayNode()
            self.assertIsNotNone(display, key)
            self.assertEqual(display.GetVisibility2D(), key != "lattice", key)
            colors.add(display.GetColor())
        self.assertEqual(len(colors), len(self.nodes))

    def test_control_points_at_ras_positions_and_counted(self):
        self.assertGreater(self.geometry.inside_count, 0)
        self.assertGreater(self.geometry.outside_count, 0)
        ras = bridge.lpsToRas(self.geometry.control_points)
        inside = self.geometry.control_points_inside
        for key, expected in (("controlPointsInside", ras[inside]), ("controlPointsOutside", ras[~inside])):
            centres = self.sphereCentres(self.nodes[key])
            np.testing.assert_allclose(centres, expected, rtol=0, atol=1e-9, err_msg=key)
        self.assertEqual(len(self.sphereCentres(self.nodes["controlPointsInside"])), self.geometry.inside_count)
        self.assertEqual(len(self.sphereCentres(self.nodes["controlPointsOutside"])), self.geometry.outside_count)

    def test_lattice_lines_join_neighbouring_control_points(self):
        polyData = self.nodes["lattice"].GetPolyData()
        ras = bridge.lpsToRas(self.geometry.control_points)
        np.testing.assert_allclose(pointsArray(self.nodes["lattice"]), ras, rtol=0, atol=1e-12)
        n = np.asarray(self.geometry.points_per_axis)
        self.assertEqual(polyData.GetNumberOfLines(), int(sum(np.prod(n) // n)))
        segments = []
        for cell in range(polyData.GetNumberOfCells()):
            ids = polyData.GetCell(cell).GetPointIds()
            line = ras[[ids.GetId(i) for i in range(ids.GetNumberOfIds())]]
            segments.extend(np.linalg.norm(np.diff(line, axis=0), axis=1))
        # BSplineTransformInitializer's grid direction is orthonormal only to ~5e-8
        offsets = np.abs(np.subtract.outer(segments, self.geometry.grid_spacing))
        self.assertLess(offsets.min(axis=1).max(), 1e-6)
        self.assertEqual(len(segments), int(sum(np.prod(n) // n * (n - 1))))

    def test_lattice_planes_are_quads_through_control_point_planes(self):
        polyData = self.nodes["latticePlanes"].GetPolyData()
        self.assertEqual(polyData.GetNumberOfPolys(), sum(self.geometry.points_per_axis))
        corners = pointsArray(self.nodes["latticePlanes"]).reshape(-1, 4, 3)
        ras = bridge.lpsToRas(self.geometry.control_points)
        for quad in corners:
            distances = np.linalg.norm(ras[:, None, :] - quad[None], axis=2).min(axis=0)
            np.testing.assert_allclose(distances, 0, atol=1e-9)
            normal = np.cross(quad[1] - quad[0], quad[3] - quad[0])
            np.testing.assert_allclose((quad - quad[0]) @ normal, 0, atol=1e-6)

    def test_boxes_are_closed_surfaces_through_the_corners(self):
        for key, cornersLps in (("domainBox", self.geometry.domain_corners),
                                ("imageExtentBox", self.geometry.image_corners)):
            corners = bridge.lpsToRas(cornersLps)
            polyData = self.nodes[key].GetPolyData()
            np.testing.assert_allclose(pointsArray(self.nodes[key]), corners, rtol=0, atol=1e-12, err_msg=key)
            bounds = np.array(polyData.GetBounds()).reshape(3, 2)
            np.testing.assert_allclose(bounds[:, 0], corners.min(axis=0), atol=1e-12, err_msg=key)
            np.testing.assert_allclose(bounds[:, 1], corners.max(axis=0), atol=1e-12, err_msg=key)
            self.assertEqual(polyData.GetNumberOfPolys(), 6)
            edges = vtk.vtkFeatureEdges()
            edges.SetInputData(polyData)
            edges.BoundaryEdgesOn()
            edges.NonManifoldEdgesOn()
            edges.FeatureEdgesOff()
            edges.ManifoldEdgesOff()
            edges.Update()
            self.assertEqual(edges.GetOutput().GetNumberOfCells(), 0, key)
            self.assertEqual(self.nodes[key].GetDisplayNode().GetRepresentation(),
                             slicer.vtkMRMLDisplayNode.WireframeRepresentation)


class MrbRoundTripTest(unittest.TestCase):
    def test_every_output_node_round_trips(self):
        image = rotatedImage()
        transform = randomBSpline(image)
        scene = bridge.createScene()
        volume = bridge.volumeNodeFromImage(scene, image, "fixed")
        bridge.bsplineTransformNodeFromSitk(scene, transform, "bspline")
        models = bridge.controlGridModelNodes(scene, grid_geometry(transform, image), "grid")
        points = pointsInDomain(transform, 100)

        with tempfile.TemporaryDirectory() as directory:
            path = bridge.saveSceneToMrb(scene, Path(directory) / "scene.mrb")
            self.assertGreater(path.stat().st_size, 0)
            loaded = bridge.loadSceneFromMrb(path)

        loadedVolume = loaded.GetFirstNodeByName("fixed")
        self.assertIsNotNone(loadedVolume)
        self.assertIsNotNone(loaded.GetNodeByID(loadedVolume.GetDisplayNode().GetColorNodeID()))
        loadedImage = bridge.imageFromVolumeNode(loadedVolume)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(loadedImage), sitk.GetArrayViewFromImage(image))
        np.testing.assert_allclose(loadedImage.GetOrigin(), image.GetOrigin(), atol=1e-9)
        np.testing.assert_allclose(loadedImage.GetDirection(), image.GetDirection(), atol=1e-9)
        np.testing.assert_allclose(loadedImage.GetSpacing(), image.GetSpacing(), atol=1e-9)
        self.assertEqual(volume.GetImageData().GetDimensions(), loadedVolume.GetImageData().GetDimensions())

        loadedTransform = loaded.GetFirstNodeByName("bspline")
        self.assertEqual(loadedTransform.GetClassName(), "vtkMRMLBSplineTransformNode")
        expected = rasThroughSitk(transform, points)
        self.assertLess(np.linalg.norm(rasThroughNode(loadedTransform, points) - expected, axis=1).max(), TOLERANCE_MM)
        restored = bridge.sitkBSplineFromTransformNode(loadedTransform)
        self.assertLess(np.linalg.norm(rasThroughSitk(restored, points) - expected, axis=1).max(), TOLERANCE_MM)

        for key, model in models.items():
            loadedModel = loaded.GetFirstNodeByName(model.GetName())
            self.assertIsNotNone(loadedModel, key)
            self.assertEqual(loadedModel.GetPolyData().GetNumberOfPoints(), model.GetPolyData().GetNumberOfPoints(), key)
            self.assertEqual(loadedModel.GetPolyData().GetNumberOfCells(), model.GetPolyData().GetNumberOfCells(), key)
            np.testing.assert_allclose(pointsArray(loadedModel), pointsArray(model), atol=1e-4, err_msg=key)
            self.assertEqual(loadedModel.GetDisplayNode().GetColor(), model.GetDisplayNode().GetColor(), key)
            self.assertEqual(loadedModel.GetDisplayNode().GetVisibility2D(), model.GetDisplayNode().GetVisibility2D())

    def test_unreadable_bundle_raises(self):
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "broken.mrb"
            path.write_bytes(b"not a zip archive")
            before = os.getcwd()
            with self.assertRaises(RuntimeError):
                bridge.loadSceneFromMrb(path)
            self.assertEqual(os.getcwd(), before)


if __name__ == "__main__":
    unittest.main()
