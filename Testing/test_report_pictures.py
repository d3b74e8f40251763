"""The report's pictures: maps over the anatomy (decoded back from their PNGs) and charts that read (integer count
axes from zero, log axes with bit-identical zeros shown as such, modes in words, restart markers, grid over the
image)."""

import base64
import re
import struct
import unittest
import zlib

import numpy as np
import SimpleITK as sitk

import testdata  # noqa: F401  (puts the library on sys.path)

from SpacingRegistrationLib import anatomy_maps, svg

SIZE = (12, 10, 8)  # x, y, z
SPACING = (1.0, 1.5, 3.0)


def decode_png(data: bytes) -> np.ndarray:
    """Pixels of a PNG written with filter type 0 (what svg.png_bytes writes), chunk CRCs checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    position, chunks = 8, {}
    while position < len(data):
        length, = struct.unpack(">I", data[position:position + 4])
        kind, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        crc, = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind}"
        chunks[kind] = chunks.get(kind, b"") + body
        position += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and b"IEND" in chunks
    channels = {0: 1, 2: 3, 6: 4}[colour_type]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * channels)
    assert not raw[:, 0].any(), "a scanline uses a filter"
    return raw[:, 1:].reshape(height, width, channels)


def pictures(fragment: str) -> list[tuple[dict, np.ndarray]]:
    """(attributes, pixels) of every embedded PNG image, in document order."""
    found = []
    for tag in re.findall(r"<image [^>]*>", fragment):
        attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
        payload = attributes["href"].split("base64,", 1)[1]
        found.append((attributes, decode_png(base64.b64decode(payload))))
    return found


def fixed_image(direction=None) -> sitk.Image:
    """A smooth grey ramp (no two neighbours equal), anisotropic."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in SIZE[::-1]], indexing="ij")
    image = sitk.GetImageFromArray((10 + x + 3 * y + 5 * z).astype(np.float32))
    image.SetSpacing(SPACING)
    if direction is not None:
        image.SetDirection(direction)
    return image


def block(value: float) -> np.ndarray:
    """``value`` on a 4x4x4 block around the centre, zero elsewhere (numpy order)."""
    overlay = np.zeros(SIZE[::-1])
    overlay[2:6, 3:7, 4:8] = value
    return overlay


def is_grey(pixel) -> bool:
    return pixel[0] == pixel[1] == pixel[2]


def chroma(pixel) -> int:
    return int(max(pixel[:3])) - int(min(pixel[:3]))


def y_tick_values(chart: str) -> list[float]:
    return [float(t) for t in re.findall(r'class="y-tick"[^>]*>([^<]*)<', chart)]


class SliceMapsTest(unittest.TestCase):
    def test_overlay_over_grey_anatomy_with_one_shared_colour_bar(self):
        fixed = fixed_image()
        fragment = anatomy_maps.slice_maps(fixed, {"high": block(0.8), "low": block(0.2)}, "voxels", "Spread")
        found = pictures(fragment)
        self.assertEqual(len(found), 6)  # two overlays x three orthogonal slices
        nx, ny, nz = SIZE
        self.assertEqual([p.shape[:2] for _, p in found[:3]], [(ny, nx), (nz, nx), (nz, ny)])
        axial_attributes, axial = found[0]
        # Aspect from the spacing: width / height of the axial picture = (nx * sx) / (ny * sy).
        self.assertAlmostEqual(float(axial_attributes["width"]) / float(axial_attributes["height"]),
                               nx * SPACING[0] / (ny * SPACING[1]), places=2)
        # Below the threshold: the fixed image in grey, brighter where the image is brighter.
        self.assertTrue(is_grey(axial[0, 0]) and is_grey(axial[ny - 1, nx - 1]))
        self.assertLess(int(axial[0, 0, 0]), int(axial[ny - 1, nx - 1, 0]))
        # Inside the block: coloured.
        self.assertGreater(chroma(axial[5, 6]), 60)
        # One colour bar for the call, its top labelled with the shared maximum.
        self.assertEqual(fragment.count('class="colour-bar"'), 1)
        self.assertIn("0.8 (max)", fragment)
        self.assertIn("voxels", fragment)
        # The same scale for both: the low overlay's block is drawn in another colour than the high one's.
        low_axial = found[3][1]
        self.assertGreater(chroma(low_axial[5, 6]), 30)
        self.assertGreater(np.abs(low_axial[5, 6].astype(int) - axial[5, 6].astype(int)).max(), 40)

    def test_explicit_vmax_is_the_scale_of_every_map(self):
        fragment = anatomy_maps.slice_maps(fixed_image(), {"a": block(0.5)}, "mm", "Difference", vmax=2.0)
        self.assertIn("2 (max)", fragment)
        self.assertNotIn("0.5 (max)", fragment)
        self.assertIn('data-vmax="2" data-unit="mm"', fragment)

    def test_mask_outline_is_drawn(self):
        mask = np.zeros(SIZE[::-1], bool)
        mask[1:7, 2:8, 2:10] = True
        found = pictures(anatomy_maps.slice_maps(fixed_image(), {"a": block(1.0)}, "voxels", "t", mask=mask))
        axial = found[0][1]
        outline = np.all(axial == anatomy_maps.OUTLINE_COLOUR, axis=-1)
        expected = np.zeros(outline.shape, bool)
        expected[2:8, 2:10] = True
        expected[3:7, 3:9] = False
        np.testing.assert_array_equal(outline, expected)

    def test_slices_through_the_largest_value(self):
        overlay = np.zeros(SIZE[::-1])
        overlay[1, 2, 3] = 1.0
        fragment = anatomy_maps.slice_maps(fixed_image(), {"a": overlay}, "voxels", "t", slices="max")
        self.assertIn("axial k=1", fragment)
        self.assertIn("coronal j=2", fragment)
        self.assertIn("sagittal i=3", fragment)
        self.assertGreater(chroma(pictures(fragment)[0][1][2, 3]), 60)

    def test_slices_through_the_largest_value_inside_the_object_before_the_background(self):
        overlay = np.zeros(SIZE[::-1])
        overlay[1, 2, 3] = 1.0  # larger, in the background (the ramp below its mean)
        overlay[6, 8, 10] = 0.5  # inside the object
        fragment = anatomy_maps.slice_maps(fixed_image(), {"a": overlay}, "voxels", "t", slices="max")
        self.assertEqual(re.findall(r"(?:axial|coronal|sagittal) [kji]=\d+", fragment),
                         ["axial k=6", "coronal j=8", "sagittal i=10"])
        mask = np.zeros(SIZE[::-1], bool)
        mask[:3, :4, :5] = True  # a mask overrides the object
        fragment = anatomy_maps.slice_maps(fixed_image(), {"a": overlay}, "voxels", "t", mask=mask, slices="max")
        self.assertIn("axial k=1", fragment)

    def test_all_zero_overlay_shows_only_anatomy_and_says_bit_identical(self):
        fragment = anatomy_maps.slice_maps(fixed_image(), {"a": np.zeros(SIZE[::-1])}, "voxels", "t")
        for _, pixels in pictures(fragment):
            self.assertTrue((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())
        self.assertIn("bit-identical", fragment)

    def test_oblique_image_keeps_slice_sizes(self):
        angle = 0.3
        direction = (np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1)
        found = pictures(anatomy_maps.slice_maps(fixed_image(direction), {"a": block(1.0)}, "voxels", "t"))
        self.assertEqual(found[2][1].shape[:2], (SIZE[2], SIZE[1]))

    def test_images_and_integer_or_boolean_maps_are_accepted(self):
        overlay = sitk.GetImageFromArray(block(3).astype(np.int16))
        found = pictures(anatomy_maps.slice_maps(fixed_image(), {"image": overlay, "flag": block(1) > 0}, "runs", "t"))
        self.assertGreater(chroma(found[0][1][5, 6]), 60)
        self.assertGreater(chroma(found[3][1][5, 6]), 30)

    def test_large_slices_are_reduced_and_keep_their_peak_and_folding(self):
        nx = anatomy_maps.MAXIMUM_PIXELS * 2 + 5
        fixed = sitk.GetImageFromArray(np.tile(np.arange(nx, dtype=np.float32), (3, 6, 1)))
        overlay = np.zeros((3, 6, nx))
        overlay[1, 3, 401] = 1.0
        found = pictures(anatomy_maps.slice_maps(fixed, {"a": overlay}, "voxels", "t"))
        axial = found[0][1]
        self.assertEqual(axial.shape[:2], (2, -(-nx // 3)))  # blocks of 3 x 3: at most MAXIMUM_PIXELS wide
        self.assertLessEqual(axial.shape[1], anatomy_maps.MAXIMUM_PIXELS)
        self.assertGreater(chroma(axial[1, 401 // 3]), 60)
        jacobian = np.ones((3, 6, nx))
        jacobian[1, 3, 401] = -1.0
        jacobian_axial = pictures(anatomy_maps.displacement_maps(fixed, overlay, jacobian))[3][1]
        self.assertEqual(tuple(jacobian_axial[1, 401 // 3, :3]), anatomy_maps.FOLDING_COLOUR)

    def test_wrong_shape_is_named(self):
        with self.assertRaisesRegex(ValueError, r"shape \(8, 10, 11\)"):
            anatomy_maps.slice_maps(fixed_image(), {"a": np.zeros((8, 10, 11))}, "voxels", "t")
        with self.assertRaisesRegex(ValueError, "scalar"):
            anatomy_maps.slice_maps(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), {"a": np.zeros((4, 4, 4))},
                                    "voxels", "t")
        with self.assertRaisesRegex(ValueError, "at least one overlay"):
            anatomy_maps.slice_maps(fixed_image(), {}, "voxels", "t")

    def test_displacement_and_jacobian_with_folding_in_its_own_colour(self):
        jacobian = np.ones(SIZE[::-1])
        jacobian[4, 5, 6] = -0.2
        jacobian[4, 5, 2] = 1.5
        fragment = anatomy_maps.displacement_maps(fixed_image(), block(2.0), jacobian)
        self.assertEqual(fragment.count('class="colour-bar"'), 2)
        self.assertIn('data-folding="1"', fragment)
        found = pictures(fragment)
        self.assertEqual(len(found), 6)
        jacobian_axial = found[3][1]
        self.assertEqual(tuple(jacobian_axial[5, 6, :3]), anatomy_maps.FOLDING_COLOUR)
        red, _, blue = jacobian_axial[5, 2, :3].astype(int)
        self.assertGreater(red - blue, 30)  # expansion: red
        self.assertTrue(is_grey(jacobian_axial[0, 0]))  # determinant 1: the anatomy

    def test_maps_of_a_transform(self):
        fixed = fixed_image()
        transform = sitk.BSplineTransformInitializer(fixed, [2, 2, 2])
        count = len(transform.GetParameters()) // 3
        transform.SetParameters([3.0] * count + [0.0] * 2 * count)  # 3 mm along x: 3 voxels of 1 mm
        fragment = anatomy_maps.transform_maps(transform, fixed, "One run")
        self.assertIn("3 (max)", fragment)
        self.assertIn('data-folding="0"', fragment)
        jacobian_axial = pictures(fragment)[3][1]
        self.assertTrue(is_grey(jacobian_axial[5, 6]))  # a translation keeps every volume


class ChartsTest(unittest.TestCase):
    def test_count_axis_starts_at_zero_with_integer_ticks_even_when_all_counts_are_zero(self):
        chart = svg.bar_chart(["1", "4", "10"], {"native-default": [0.0, 0.0, 0.0]}, "Runs that never moved", "runs")
        ticks = y_tick_values(chart)
        self.assertEqual(min(ticks), 0)
        self.assertTrue(all(t.is_integer() and t >= 0 for t in ticks), ticks)
        self.assertGreaterEqual(len(ticks), 2)
        chart = svg.bar_chart(["1", "4"], {"a": [3, 7]}, "counts", "runs")
        ticks = y_tick_values(chart)
        self.assertEqual(min(ticks), 0)
        self.assertTrue(all(t.is_integer() for t in ticks), ticks)

    def test_bars_of_means_start_at_zero(self):
        ticks = y_tick_values(svg.bar_chart(["1"], {"a": [10.5, 12.25]}, "mean", "iterations"))
        self.assertEqual(min(ticks), 0)
        self.assertIn('data-y-scale="linear"', svg.bar_chart(["1"], {"a": [10.5]}, "mean", "iterations"))

    def test_series_over_decades_gets_a_log_axis_and_zero_is_bit_identical(self):
        chart = svg.line_chart({"native-default": ([1, 4, 10], [1e-14, 0.2, 0.7]),
                                "normalised-reproducible": ([1, 4, 10], [0.0, 0.0, 1e-9])},
                               "Spread", "spacing (mm)", "max spread (voxels)", markers=True)
        self.assertIn('data-y-scale="log"', chart)
        self.assertEqual(chart.count('class="bit-identical"'), 2)
        self.assertIn(svg.ZERO_LABEL, chart)
        ticks = y_tick_values(chart)
        self.assertTrue(all(t > 0 for t in ticks), ticks)
        self.assertGreaterEqual(max(ticks) / min(ticks), 1e6)

    def test_series_within_three_decades_stays_linear(self):
        chart = svg.line_chart({"a": ([1, 2, 3], [0.1, 0.0, 20.0])}, "t", "x", "y")
        self.assertIn('data-y-scale="linear"', chart)
        self.assertNotIn('class="bit-identical"', chart)
        forced = svg.line_chart({"a": ([1, 2], [1e-9, 1.0])}, "t", "x", "y", log_y=False)
        self.assertIn('data-y-scale="linear"', forced)
        negative = svg.line_chart({"a": ([1, 2], [-1e-9, 1.0])}, "t", "x", "y")
        self.assertIn('data-y-scale="linear"', negative)

    def test_missing_values_and_non_positive_x_on_a_log_x_axis_are_left_out(self):
        chart = svg.line_chart({"a": ([0, 1, 10, 100], [1.0, float("nan"), 2.0, 3.0]), "b": ([1], [None])},
                               "t", "spacing", "y", log_x=True, markers=True)
        self.assertEqual(chart.count("<circle"), 2)
        self.assertIn("no data", svg.line_chart({"a": ([1], [float("nan")])}, "t", "x", "y"))

    def test_all_zero_series_has_no_negative_axis(self):
        chart = svg.line_chart({"a": ([1, 2, 3], [0.0, 0.0, 0.0])}, "Spread", "x", "voxels")
        self.assertEqual(min(y_tick_values(chart)), 0)
        self.assertIn("every value is 0 (bit-identical)", chart)

    def test_a_lone_point_is_drawn(self):
        chart = svg.line_chart({"a": ([1, 4], [0.0, 0.7]), "b": ([1, 4], [0.0, 1e-14])}, "t", "x", "y")
        self.assertIn('data-y-scale="log"', chart)
        self.assertEqual(chart.count("<circle"), 2)
        diamonds = re.findall(r'class="bit-identical" d="M([\d.]+),', chart)
        self.assertEqual(len(set(diamonds)), 2)  # side by side, not on top of each other

    def test_many_series_legend_fits(self):
        chart = svg.line_chart({f"s={s} r{r}": ([0, 1], [s, r]) for s in range(5) for r in range(5)}, "t", "x", "y")
        height = float(re.search(r'<svg [^>]*height="([\d.]+)"', chart).group(1))
        last = max(float(v) for v in re.findall(r'<g class="legend-entry"><rect x="[\d.]+" y="([\d.]+)"', chart))
        self.assertGreater(height, last + 10)

    def test_legends_name_modes_in_words(self):
        chart = svg.bar_chart(["1"], {"native-default": [1], "normalised-reproducible": [2]}, "t", "runs")
        legend = re.findall(r'<g class="legend-entry">.*?<text[^>]*>([^<]*)</text>', chart)
        self.assertEqual(legend, [svg.MODE_NAMES["native-default"], svg.MODE_NAMES["normalised-reproducible"]])
        self.assertEqual(svg.mode_name("Metric (native-reproducible)"),
                         "Metric (native units, one thread (reproducible))")
        self.assertEqual(set(svg.MODE_NAMES), {"native-default", "native-reproducible", "normalised-default",
                                               "normalised-reproducible"})

    def test_restart_marker_on_a_metric_trace(self):
        chart = svg.line_chart({"s=1 r0": (list(range(10)), [-0.1 * i for i in range(10)])}, "Metric", "event",
                               "metric", markers=[(6, "libLBFGS restart"), (99, "outside")])
        self.assertEqual(chart.count('class="event-marker"'), 1)
        self.assertIn("libLBFGS restart", chart)


class GridPictureTest(unittest.TestCase):
    def test_background_slice_under_the_lattice_the_right_way_up(self):
        background = np.arange(6 * 8, dtype=float).reshape(6, 8)  # rows along y, y increasing downwards in numpy
        chart = svg.grid_picture([-5, 0, 5, 10], [-5, 0, 5], (0.0, 8.0), (0.0, 6.0), (-2.0, 9.0), (-1.0, 7.0),
                                 "grid", background=background, background_extent=((0.0, 8.0), (0.0, 6.0)))
        found = pictures(chart)
        self.assertEqual(len(found), 1)
        attributes, pixels = found[0]
        self.assertEqual(pixels.shape[:2], (6, 8))
        # The first numpy row (smallest y) is drawn at the bottom, where y is smallest on the picture.
        grey = svg.grey_levels(background)
        np.testing.assert_array_equal(pixels[-1, :, 0], grey[0])
        self.assertLess(chart.index("<image"), chart.index("transform domain"))  # drawn under the lattice
        self.assertIn("transform domain", chart)

    def test_axial_background_of_a_real_image_orientation(self):
        image = fixed_image()
        image.SetOrigin((-3.0, 2.0, 0.0))
        slice_, x_extent, y_extent = anatomy_maps.axial_background(image)
        self.assertEqual(slice_.shape, (SIZE[1], SIZE[0]))
        self.assertAlmostEqual(x_extent[0], -3.5)
        self.assertAlmostEqual(x_extent[1], -3.0 + (SIZE[0] - 0.5) * SPACING[0])
        self.assertAlmostEqual(y_extent[1], 2.0 + (SIZE[1] - 0.5) * SPACING[1])


class PngTest(unittest.TestCase):
    def test_grey_rgb_and_rgba_round_trip(self):
        rng = np.random.default_rng(1)
        for shape in [(5, 7), (5, 7, 3), (5, 7, 4)]:
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            decoded = decode_png(svg.png_bytes(pixels))
            np.testing.assert_array_equal(decoded.reshape(pixels.shape), pixels)


if __name__ == "__main__":
    unittest.main()
