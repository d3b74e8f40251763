"""Tests of SpacingRegistrationLib.mrml.rendering: offscreen slice and 3D pictures of a real (headless) MRML scene.

Pixels are checked against the geometry: grid models must appear, in their display colours, where
sliceRasToPixel puts their RAS coordinates (within PIXEL_TOLERANCE), and nowhere else.
"""

import testdata  # noqa: F401

import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpacingRegistrationLib.mrml import bridge, rendering
from SpacingRegistrationLib.grid import grid_geometry

#: Slice lines are drawn 2 px (boxes) or 1 px (lattice planes) wide next to the predicted position.
PIXEL_TOLERANCE = 2
#: Per-channel tolerance (0..255) for the flat colours of slice intersections (no multisampling).
COLOUR_TOLERANCE = 3
#: Off-centre sphere (LPS mm) so that a flipped or shifted slice image shows.
SPHERE_CENTRE_LPS = (14.0, 23.0, 20.0)
SPHERE_RADIUS_MM = 8.0
MARGIN = 0.1
GRID_KEYS = tuple(bridge.GRID_COLORS)


def sphereImage() -> sitk.Image:
    """40^3 voxels of 1 mm, origin 0: a bright sphere on a dark background."""
    index = np.indices((40, 40, 40), dtype=float)  # z, y, x
    distance = np.sqrt(sum((index[2 - axis] - SPHERE_CENTRE_LPS[axis]) ** 2 for axis in range(3)))
    return sitk.GetImageFromArray(np.where(distance <= SPHERE_RADIUS_MM, 1000.0, 0.0).astype(np.float32))


def colourMask(picture: np.ndarray, key: str) -> np.ndarray:
    """Pixels showing the flat display colour of grid model ``key``."""
    colour = np.round(np.asarray(bridge.GRID_COLORS[key]) * 255)
    return np.all(np.abs(picture.astype(float) - colour) <= COLOUR_TOLERANCE, axis=2)


def shadedMask(picture: np.ndarray, key: str) -> np.ndarray:
    """Pixels of a lit surface in the display colour of ``key``: the colour scaled by the shading."""
    colour = np.asarray(bridge.GRID_COLORS[key])
    pixels = picture.astype(float)
    brightness = np.linalg.norm(pixels, axis=2)
    cosine = pixels @ colour / np.maximum(brightness, 1e-9) / np.linalg.norm(colour)
    return (cosine > 0.99) & (brightness > 40)


def nearLines(shape, columns=(), rows=()) -> np.ndarray:
    """Pixels within PIXEL_TOLERANCE of the given vertical (columns) and horizontal (rows) lines."""
    rowIndex, columnIndex = np.indices(shape[:2])
    near = np.zeros(shape[:2], dtype=bool)
    for column in columns:
        near |= np.abs(columnIndex - column) <= PIXEL_TOLERANCE + 0.5
    for row in rows:
        near |= np.abs(rowIndex - row) <= PIXEL_TOLERANCE + 0.5
    return near


class SceneMixin:
    """A scene with the sphere volume and the control-grid models of a mesh-2 BSpline over it."""

    @classmethod
    def setUpClass(cls):
        cls.image = sphereImage()
        cls.geometry = grid_geometry(sitk.BSplineTransformInitializer(cls.image, [2, 2, 2]), cls.image)
        cls.scene = bridge.createScene()
        cls.volume = bridge.volumeNodeFromImage(cls.scene, cls.image, "sphere")
        cls.models = bridge.controlGridModelNodes(cls.scene, cls.geometry, "grid")
        cls.directory = Path(tempfile.mkdtemp(prefix="test-rendering-"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.directory, ignore_errors=True)

    def hide(self, keys, setter="SetVisibility"):
        """Hide grid models for this test only."""
        for key in keys:
            display = self.models[key].GetDisplayNode()
            getattr(display, setter)(False)
            self.addCleanup(getattr(display, setter), True)


class SliceViewTest(SceneMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.view = rendering.SliceViewRenderer(cls.scene)

    @classmethod
    def tearDownClass(cls):
        cls.view.close()
        super().tearDownClass()

    def renderSlice(self, orientation="Axial", name=None):
        self.view.show(orientation, self.volume, margin=MARGIN)
        return self.view.render(self.directory / f"{name or orientation}.png")

    def toPixels(self, lpsPoints):
        return rendering.sliceRasToPixel(self.view.sliceNode, bridge.lpsToRas(lpsPoints))

    def boxOutline(self, corners, picture):
        """Predicted columns and rows of a box's outline in the current slice (box axes along the view's)."""
        pixels = self.toPixels(corners)
        return nearLines(picture.shape, columns=np.unique(pixels[:, 0].round(3)), rows=np.unique(pixels[:, 1].round(3)))

    def assertLineColour(self, picture, key, column=None, row=None, minimumFraction=0.8):
        """Colour ``key`` within PIXEL_TOLERANCE of a full-length vertical (column) or horizontal (row) line."""
        mask = colourMask(picture, key)
        position = column if column is not None else row
        band = slice(max(0, int(position) - PIXEL_TOLERANCE), int(position) + PIXEL_TOLERANCE + 1)
        hits = mask[:, band].any(axis=1) if column is not None else mask[band, :].any(axis=0)
        self.assertGreaterEqual(hits.mean(), minimumFraction, f"{key} line at {position:.1f} px: {hits.mean():.2f}")

    def test_volume_lands_where_the_geometry_predicts(self):
        picture = self.renderSlice()
        bright = np.all(picture > 200, axis=2)
        rows, columns = np.nonzero(bright)
        expected = self.toPixels(SPHERE_CENTRE_LPS)
        np.testing.assert_allclose([columns.mean(), rows.mean()], expected, atol=PIXEL_TOLERANCE)
        pixelsPerMm = picture.shape[1] / self.view.sliceNode.GetFieldOfView()[0]
        radius = np.sqrt(bright.sum() / np.pi) / pixelsPerMm
        self.assertAlmostEqual(radius, SPHERE_RADIUS_MM, delta=0.5)

    def test_image_extent_box_outline_at_predicted_pixels(self):
        picture = self.renderSlice()
        corners = self.toPixels(self.geometry.image_corners)
        for column in np.unique(corners[:, 0].round(3)):
            self.assertLineColour(picture, "imageExtentBox", column=column, minimumFraction=0.6)
        for row in np.unique(corners[:, 1].round(3)):
            self.assertLineColour(picture, "imageExtentBox", row=row, minimumFraction=0.6)
        outline = self.boxOutline(self.geometry.image_corners, picture)
        self.assertFalse((colourMask(picture, "imageExtentBox") & ~outline).any(), "box colour off its outline")

    def test_lattice_planes_show_as_lines_at_control_point_planes(self):
        self.hide(["domainBox", "imageExtentBox"])  # they run along the outer control-point planes
        picture = self.renderSlice(name="latticePlanes")
        positions = self.geometry.axis_positions  # control-point coordinates per LPS axis
        columns = self.toPixels([(x, 0.0, 20.0) for x in positions[0]])[:, 0]
        rows = self.toPixels([(0.0, y, 20.0) for y in positions[1]])[:, 1]
        columns = columns[(columns >= 0) & (columns < picture.shape[1])]
        rows = rows[(rows >= 0) & (rows < picture.shape[0])]
        self.assertEqual((len(columns), len(rows)), (3, 3))  # planes at -0.625, 19.5 and 39.625 mm
        for column in columns:
            self.assertLineColour(picture, "latticePlanes", column=column)
        for row in rows:
            self.assertLineColour(picture, "latticePlanes", row=row)
        lines = nearLines(picture.shape, columns, rows)
        self.assertFalse((colourMask(picture, "latticePlanes") & ~lines).any(), "lattice colour off the planes")

    def test_hidden_grid_models_leave_no_colour(self):
        for setter in ("SetVisibility", "SetVisibility2D"):
            with self.subTest(setter=setter):
                before = self.renderSlice()
                self.assertTrue(all(colourMask(before, key).any() for key in ("imageExtentBox", "latticePlanes")))
                self.hide(GRID_KEYS, setter)
                picture = self.renderSlice(name=f"hidden-{setter}")
                for key in GRID_KEYS:
                    self.assertFalse(colourMask(picture, key).any(), key)
                self.assertTrue(np.all(picture > 200, axis=2).any(), "the volume is still shown")
                self.doCleanups()

    def test_coronal_and_sagittal_show_the_box(self):
        for orientation in ("Coronal", "Sagittal"):
            with self.subTest(orientation=orientation):
                picture = self.renderSlice(orientation)
                corners = self.toPixels(self.geometry.image_corners)
                self.assertEqual(len(np.unique(corners[:, 0].round(3))), 2)  # the box is seen edge-on
                for column in np.unique(corners[:, 0].round(3)):
                    self.assertLineColour(picture, "imageExtentBox", column=column, minimumFraction=0.6)
                for row in np.unique(corners[:, 1].round(3)):
                    self.assertLineColour(picture, "imageExtentBox", row=row, minimumFraction=0.6)
                outline = self.boxOutline(self.geometry.image_corners, picture)
                self.assertFalse((colourMask(picture, "imageExtentBox") & ~outline).any())
                self.assertTrue(np.all(picture > 200, axis=2).any(), "the sphere is in the slice")

    def test_rejects_unknown_orientation(self):
        with self.assertRaises(ValueError):
            self.view.show("Oblique", self.volume)


class RenderFunctionsTest(SceneMixin, unittest.TestCase):
    def nodeIds(self):
        ids = set()
        for index in range(self.scene.GetNumberOfNodes()):
            node = self.scene.GetNthNode(index)
            if node.GetClassName() != "vtkMRMLSubjectHierarchyNode":  # a scene singleton, created on demand
                ids.add(node.GetID())
        return ids

    def test_render_slice_view_writes_png_and_matches_the_renderer(self):
        path = self.directory / "function-axial.png"
        picture = rendering.renderSliceView(self.scene, "Axial", self.volume, path, size=(320, 256), margin=MARGIN)
        self.assertEqual((picture.shape, picture.dtype), ((256, 320, 3), np.uint8))
        self.assertGreater(path.stat().st_size, 1000)
        with rendering.SliceViewRenderer(self.scene, (320, 256)) as view:
            view.show("Axial", self.volume, margin=MARGIN)
            np.testing.assert_array_equal(view.render(), picture)

    def test_slice_offset_moves_the_slice(self):
        inside = rendering.renderSliceView(self.scene, "Axial", self.volume, sliceOffset=SPHERE_CENTRE_LPS[2])
        outside = rendering.renderSliceView(self.scene, "Axial", self.volume, sliceOffset=35.0)
        self.assertTrue(np.all(inside > 200, axis=2).any())
        self.assertFalse(np.all(outside > 200, axis=2).any())

    def test_repeated_rendering_leaves_the_scene_as_found(self):
        before = self.nodeIds()
        pictures = [rendering.renderSliceView(self.scene, rendering.ORIENTATIONS[i % 3], self.volume, size=(128, 128))
                    for i in range(12)]
        rendering.render3DView(self.scene, size=(128, 128), volumeNode=self.volume)
        self.assertEqual(self.nodeIds(), before)
        for index in range(3, len(pictures)):
            np.testing.assert_array_equal(pictures[index], pictures[index - 3])

    def test_3d_view_shows_control_points_fitted(self):
        picture = rendering.render3DView(self.scene, self.directory / "3d.png")
        self.assertTrue((self.directory / "3d.png").exists())
        inside = shadedMask(picture, "controlPointsInside")
        outside = shadedMask(picture, "controlPointsOutside")
        self.assertGreater(inside.sum(), 20)  # the one control point inside the image
        self.assertGreater(outside.sum(), 1000)
        rows, columns = np.nonzero(outside)
        self.assertGreater(np.ptp(rows), 0.5 * picture.shape[0])  # camera fitted to the grid
        self.assertGreater(np.ptp(columns), 0.5 * picture.shape[1])
        self.assertFalse(np.all(picture > 240, axis=2).any(), "no volume slice unless asked for")

    def test_3d_view_hides_hidden_models_and_shows_the_volume_slice(self):
        self.hide(["controlPointsInside", "controlPointsOutside"], "SetVisibility3D")
        picture = rendering.render3DView(self.scene, self.directory / "3d-slice.png", volumeNode=self.volume)
        self.assertFalse(shadedMask(picture, "controlPointsOutside").any())
        self.assertFalse(shadedMask(picture, "controlPointsInside").any())
        self.assertTrue(np.all(picture > 240, axis=2).any(), "the sphere on the textured slice plane")


if __name__ == "__main__":
    unittest.main()
