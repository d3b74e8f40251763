"""Bad settings and bad images get an error that names the problem."""

import tempfile
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import testdata  # noqa: F401  (puts the library on sys.path)

from SpacingRegistrationLib import registration
from SpacingRegistrationLib.images import InputImageError, read_image
from SpacingRegistrationLib.settings import RegistrationSettings, SettingsError, from_dict, to_dict


def blob(size=(16, 16, 16), pixel=sitk.sitkFloat32):
    z, y, x = np.mgrid[:size[2], :size[1], :size[0]]
    values = np.exp(-((x - size[0] / 2) ** 2 + (y - size[1] / 2) ** 2 + (z - size[2] / 2) ** 2) / 20.0)
    return sitk.Cast(sitk.GetImageFromArray(values.astype(np.float32)), pixel)


class SettingsErrorTest(unittest.TestCase):
    CASES = {
        "mesh_size": dict(mesh_size=(0, 2, 2)),
        "mesh_size must be three": dict(mesh_size=(2, 2)),
        "sampling_percentage": dict(sampling_percentage=0),
        "sampling_percentage ": dict(sampling_percentage=150),
        "spacing_override": dict(spacing_override=0.0),
        "spacing_override ": dict(spacing_override=-1.0),
        "histogram_bins": dict(histogram_bins=2),
        "sampling_strategy": dict(sampling_strategy="everything"),
        "optimizer": dict(optimizer="adam"),
        "scales_estimator": dict(scales_estimator="magic"),
        "reproducible mode needs a fixed sampling_seed": dict(reproducible=True, sampling_seed=None),
        "lbfgs2.line_search_accuracy": dict(lbfgs2={"line_search_accuracy": 0.7}),
        "number_of_work_units": dict(number_of_work_units=0),
        "unknown setting": dict(colour="red"),
        "unknown lbfgs2 setting": dict(lbfgs2={"speed": 2}),
    }

    def test_each_bad_setting_is_named(self):
        for expected, change in self.CASES.items():
            with self.subTest(expected), self.assertRaises(SettingsError) as caught:
                RegistrationSettings().replace(**change)
            self.assertIn(expected.strip(), str(caught.exception))

    def test_round_trip_through_a_dictionary(self):
        settings = RegistrationSettings().replace(mesh_size=(3, 4, 5), spacing_override=2.0,
                                                  lbfgs2={"number_of_iterations": 7})
        self.assertEqual(from_dict(to_dict(settings)), settings)
        self.assertEqual(settings.lbfgs2.number_of_iterations, 7)


class ImageErrorTest(unittest.TestCase):
    def assert_refused(self, fixed, moving, expected):
        with self.assertRaises(InputImageError) as caught:
            registration.run(fixed, moving, RegistrationSettings(scales_estimator="none"))
        self.assertIn(expected, str(caught.exception))

    def test_bad_images_are_named(self):
        good = blob()
        nan = sitk.GetArrayFromImage(good)
        nan[3, 4, 5] = np.nan
        infinite = sitk.GetArrayFromImage(good)
        infinite[0, 0, 0] = np.inf
        vector = sitk.Compose([good, good, good])
        complex_image = sitk.RealAndImaginaryToComplex(good, good)
        cases = [
            (sitk.Image([16, 16], sitk.sitkFloat32) + 1, good, "fixed and moving images differ in dimension"),
            (blob()[:, :, 0], blob()[:, :, 1], "must be 3D, got a 2D image"),
            (sitk.JoinSeries([good, good]), sitk.JoinSeries([good, good]), "must be 3D, got a 4D image"),
            (vector, good, "fixed image must have scalar pixels"),
            (good, complex_image, "moving image must have scalar pixels"),
            (sitk.Image([16, 16, 16], sitk.sitkFloat32), good, "fixed image is constant"),
            (good, sitk.Image([1, 1, 1], sitk.sitkFloat32), "moving image is empty or too small"),
            (good, sitk.Image([16, 16, 2], sitk.sitkFloat32), "at least 4 voxels along every axis"),
            (sitk.GetImageFromArray(nan), good, "fixed image contains 1 NaN or infinite voxel(s)"),
            (good, sitk.GetImageFromArray(infinite), "moving image contains 1 NaN or infinite voxel(s)"),
        ]
        for fixed, moving, expected in cases:
            with self.subTest(expected):
                self.assert_refused(fixed, moving, expected)

    def test_missing_and_unreadable_files(self):
        with tempfile.TemporaryDirectory() as folder:
            with self.assertRaises(InputImageError) as caught:
                read_image(Path(folder) / "absent.nrrd", "fixed image")
            self.assertIn("fixed image file not found", str(caught.exception))
            text = Path(folder) / "notes.nrrd"
            text.write_text("this is not an image")
            with self.assertRaises(InputImageError) as caught:
                read_image(text, "moving image")
            self.assertIn("could not be read as an image", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
