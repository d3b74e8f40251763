"""Bad settings and bad images get an error that names the problem."""

import contextlib
import gzip
import io
import shutil
import struct
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import testdata  # noqa: F401  (puts the library on sys.path)

from SpacingRegistrationLib import registration
from SpacingRegistrationLib.images import InputImageError, read_image
from SpacingRegistrationLib.settings import RegistrationSettings, SettingsError, from_dict, to_dict
from SpacingRegistrationLib.transform_files import TransformFileError, read_bspline, read_transform


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

    def test_the_one_grid_field_given_picks_the_grid_specification(self):
        self.assertEqual(from_dict({"grid_spacing_mm": 12.0}).grid_specification, "spacing_mm")
        self.assertEqual(from_dict({"grid_spacing_voxels": 8.0}).grid_specification, "spacing_voxels")
        self.assertEqual(from_dict({"mesh_size": [3, 3, 3]}).grid_specification, "mesh_size")
        explicit = from_dict({"grid_specification": "mesh_size", "grid_spacing_mm": 12.0})
        self.assertEqual((explicit.grid_specification, explicit.grid_spacing_mm), ("mesh_size", 12.0))
        with self.assertRaisesRegex(SettingsError, "mesh_size and grid_spacing_mm are both given"):
            from_dict({"mesh_size": [3, 3, 3], "grid_spacing_mm": 12.0})
        with self.assertRaisesRegex(SettingsError, "must be a JSON object"):
            from_dict([1, 2])


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
            self.assertIn("is not an NRRD file", str(caught.exception))



def write_formats(folder: Path, image: sitk.Image) -> dict:
    """``image`` in every file layout the project reads: name -> (file to read, file holding the voxels)."""
    layouts = {"nii": ("a.nii", False), "nii.gz": ("b.nii.gz", True), "hdr-img": ("c.hdr", False),
               "nrrd": ("d.nrrd", False), "nrrd-gzip": ("e.nrrd", True), "nhdr": ("f.nhdr", False),
               "nhdr-gzip": ("g.nhdr", True), "mha": ("h.mha", False), "mha-compressed": ("i.mha", True),
               "mhd": ("j.mhd", False), "mhd-compressed": ("k.mhd", True)}
    files = {}
    for name, (file_name, compressed) in layouts.items():
        path = folder / file_name
        sitk.WriteImage(image, str(path), useCompression=compressed)
        data = [p for p in folder.iterdir() if p.name.split(".")[0] == path.name.split(".")[0] and p != path]
        files[name] = (path, data[0] if data else path)
    return files


class FileIntegrityTest(unittest.TestCase):
    """read_image: every layout reads back exactly when whole; the same file one byte short is refused as
    truncated, naming the file (ITK alone reads a short NIfTI as zeros and calls a short MetaImage missing)."""

    @classmethod
    def setUpClass(cls):
        cls.folder = Path(tempfile.mkdtemp())
        cls.image = sitk.Cast(blob((9, 8, 7)) * 1000, sitk.sitkInt16)
        cls.image.SetSpacing((1.5, 2.0, 2.5))
        cls.files = write_formats(cls.folder, cls.image)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)

    def test_whole_files_read_back_exactly(self):
        for name, (path, _) in self.files.items():
            with self.subTest(name):
                image = read_image(path)
                np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(self.image))
                np.testing.assert_allclose(image.GetSpacing(), self.image.GetSpacing())

    def test_one_byte_short_is_refused_in_every_layout(self):
        for name, (path, data) in self.files.items():
            for cut in (1, data.stat().st_size // 2):
                with self.subTest(name, cut=cut), tempfile.TemporaryDirectory() as scratch:
                    copy = Path(shutil.copytree(self.folder, Path(scratch) / "copy"))
                    damaged = copy / data.name
                    damaged.write_bytes(damaged.read_bytes()[:-cut])
                    before = damaged.read_bytes()
                    with self.assertRaises(InputImageError) as caught:
                        read_image(copy / path.name, "fixed image")
                    message = str(caught.exception)
                    self.assertIn("truncated", message)
                    self.assertIn(str(copy / path.name), message)
                    self.assertNotIn("No such file", message)
                    self.assertEqual(len(message.splitlines()), 1)
                    self.assertEqual(damaged.read_bytes(), before)

    def test_command_line_and_study_inputs_refuse_a_truncated_file(self):
        """spacingreg register: exit status 2 and one line for each layout cut short; a study given a cut file
        creates no folder."""
        from SpacingRegistrationLib import cli
        from SpacingRegistrationLib.study_runner import run_study
        from testdata import SMALL_STUDY

        for name, (path, data) in self.files.items():
            with self.subTest(name), tempfile.TemporaryDirectory() as scratch:
                copy = Path(shutil.copytree(self.folder, Path(scratch) / "copy"))
                (copy / data.name).write_bytes((copy / data.name).read_bytes()[:-1])
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    status = cli.main(["register", "--fixed", str(copy / path.name), "--moving",
                                       str(copy / path.name), "--quiet"])
                self.assertEqual(status, 2)
                self.assertEqual(len(err.getvalue().strip().splitlines()), 1, err.getvalue())
                self.assertIn(f"fixed image file {copy / path.name} is truncated", err.getvalue())
                with self.assertRaisesRegex(InputImageError, "moving image file .* is truncated"):
                    run_study(SMALL_STUDY, self.files["nii"][0], copy / path.name, Path(scratch) / "study",
                              executor="sequential")
                self.assertFalse((Path(scratch) / "study").exists())

    def test_a_real_pet_gate_cut_short_is_refused(self):
        """The real mouse FDG PET gate (gzip NRRD, 40^3 float): whole it reads; 64 bytes short it is refused with
        the count of bytes, before ITK."""
        from testdata import SHARED_DATA

        real = SHARED_DATA / "mouse_fdg_pet_gate_R.nrrd"
        if not real.is_file():
            self.skipTest(f"{real} is not on this machine")
        self.assertEqual(read_image(real).GetSize(), (40, 40, 40))
        with tempfile.TemporaryDirectory() as scratch:
            cut = Path(scratch) / real.name
            cut.write_bytes(real.read_bytes()[:-64])
            with self.assertRaisesRegex(InputImageError, r"is truncated: its gzip stream ends early \(\d+ of 256000"):
                read_image(cut)

    def test_multi_member_and_padded_gzip_read_and_a_cut_one_does_not(self):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            sitk.WriteImage(self.image, str(folder / "plain.nii"))
            raw = (folder / "plain.nii").read_bytes()
            (folder / "members.nii.gz").write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
            (folder / "padded.nii.gz").write_bytes(gzip.compress(raw) + bytes(64))
            (folder / "cut_after_voxels.nii.gz").write_bytes(gzip.compress(raw)[:-4])
            for name in ("members.nii.gz", "padded.nii.gz"):
                with self.subTest(name):
                    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(folder / name)),
                                                  sitk.GetArrayFromImage(self.image))
            with self.assertRaisesRegex(InputImageError, "lacks its end and checksum"):
                read_image(folder / "cut_after_voxels.nii.gz")

    def test_the_data_half_of_a_pair_is_checked_through_its_header(self):
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(shutil.copytree(self.folder, Path(scratch) / "copy"))
            np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(copy / "c.img")),
                                          sitk.GetArrayFromImage(self.image))
            (copy / "c.img").write_bytes((copy / "c.img").read_bytes()[:-1])
            with self.assertRaisesRegex(InputImageError, "c.img is truncated"):
                read_image(copy / "c.img")

    def test_the_count_of_missing_bytes_is_given(self):
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "short.nii"
            sitk.WriteImage(self.image, str(path))
            path.write_bytes(path.read_bytes()[:-100])
            voxel_bytes = 9 * 8 * 7 * 2
            with self.assertRaisesRegex(InputImageError, rf"truncated \({voxel_bytes - 100} of {voxel_bytes} bytes"):
                read_image(path)

    def test_not_an_image_empty_folder_missing_data_file(self):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            for name in ("notes.nii", "notes.nii.gz", "notes.nrrd", "notes.mha", "notes.xyz"):
                (folder / name).write_text("this is not an image")
            (folder / "empty.nii.gz").write_bytes(b"")
            (folder / "folder.nrrd").mkdir()
            sitk.WriteImage(self.image, str(folder / "lost.mhd"))
            (folder / "lost.raw").unlink()
            cases = {"notes.nii": "is not a NIfTI", "notes.nii.gz": "gzip", "notes.nrrd": "is not an NRRD file",
                     "notes.mha": "is not a MetaImage file", "notes.xyz": "is not an image in a format",
                     "empty.nii.gz": "is empty (0 bytes)", "folder.nrrd": "is a folder",
                     "lost.mhd": "data file", "absent.nii": "file not found"}
            for name, expected in cases.items():
                with self.subTest(name), self.assertRaises(InputImageError) as caught:
                    read_image(folder / name, "moving image")
                self.assertIn(expected, str(caught.exception))
                self.assertIn(name, str(caught.exception))
                self.assertEqual(len(str(caught.exception).splitlines()), 1)


class TransformFileTest(unittest.TestCase):
    """read_transform / read_bspline: a text transform file cut anywhere is refused (ITK alone reads a BSpline that
    lost its FixedParameters line on a default grid); other formats' errors are one line naming the file."""

    @classmethod
    def setUpClass(cls):
        cls.folder = Path(tempfile.mkdtemp())
        image = blob((12, 12, 12))
        cls.bspline = sitk.BSplineTransformInitializer(image, [2, 2, 2])
        cls.bspline.SetParameters(np.linspace(-1, 1, cls.bspline.GetNumberOfParameters()).tolist())
        cls.text = cls.folder / "bspline.tfm"
        sitk.WriteTransform(cls.bspline, str(cls.text))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)

    def test_a_whole_file_reads_back(self):
        for suffix in (".tfm", ".h5"):
            with self.subTest(suffix):
                path = self.folder / f"whole{suffix}"
                sitk.WriteTransform(self.bspline, str(path))
                transform = read_bspline(path)
                self.assertEqual(transform.GetParameters(), self.bspline.GetParameters())
                self.assertEqual(transform.GetFixedParameters(), self.bspline.GetFixedParameters())

    def test_cut_anywhere_is_refused(self):
        data = self.text.read_bytes()
        parameters_line = data.index(b"Parameters:")
        for cut in (len(data) - 3, data.index(b"FixedParameters:") + 5, parameters_line + 40, 60):
            with self.subTest(cut=cut):
                path = self.folder / "cut.tfm"
                path.write_bytes(data[:cut])
                with self.assertRaisesRegex(TransformFileError, "is truncated") as caught:
                    read_bspline(path, "truth")
                self.assertIn(f"truth file {path}", str(caught.exception))
        binary = self.folder / "cut.h5"
        sitk.WriteTransform(self.bspline, str(binary))
        binary.write_bytes(binary.read_bytes()[:-200])
        with self.assertRaisesRegex(TransformFileError, f"transform file {binary} could not be read as a transform"):
            read_bspline(binary)

    def test_other_bad_transform_files(self):
        (self.folder / "junk.tfm").write_text("junk")
        (self.folder / "empty.tfm").write_text("")
        sitk.WriteTransform(sitk.AffineTransform(3), str(self.folder / "affine.tfm"))
        for name, expected in (("junk.tfm", "is not an ITK transform file"), ("empty.tfm", "is empty"),
                               ("absent.tfm", "not found"), ("affine.tfm", "not a BSpline transform")):
            with self.subTest(name), self.assertRaisesRegex(TransformFileError, expected):
                read_bspline(self.folder / name)
        self.assertEqual(read_transform(self.folder / "affine.tfm").GetName(), "AffineTransform")

    def test_command_line_grid(self):
        from SpacingRegistrationLib import cli

        image = self.folder / "image.nrrd"
        sitk.WriteImage(blob((12, 12, 12)), str(image))
        cut = self.folder / "grid_cut.tfm"
        cut.write_bytes(self.text.read_bytes()[:-10])
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = cli.main(["grid", "--image", str(image), "--transform", str(cut)])
        self.assertEqual(status, 2)
        self.assertEqual(err.getvalue().strip(), f"spacingreg grid: error: transform file {cut} is truncated: "
                                                 "transform 0 (BSplineTransform_double_3_3) has 13 of 18 fixed parameters")


def nrrd_with_header(path: Path, directions: str, origin: str = "(0,0,0)", sizes=(6, 6, 6)):
    """A float NRRD whose header lines are written by hand (SimpleITK refuses to write these geometries)."""
    values = np.random.default_rng(0).random(int(np.prod(sizes))).astype("<f4")
    path.write_bytes(f"NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\n"
                     f"sizes: {' '.join(map(str, sizes))}\nspace directions: {directions}\nendian: little\n"
                     f"encoding: raw\nspace origin: {origin}\n\n".encode() + values.tobytes())
    return path


class HeaderOdditiesTest(unittest.TestCase):
    """Odd headers: refused with a message naming the file and the oddity, or handled as docs/robustness.md says."""

    def test_refused_headers(self):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            cases = {
                "zero spacing": (nrrd_with_header(folder / "zero.nrrd", "(0,0,0) (0,1,0) (0,0,1)"), "zero or negative spacing"),
                "NaN direction": (nrrd_with_header(folder / "nan.nrrd", "(nan,0,0) (0,1,0) (0,0,1)"), "non-finite"),
                "inf origin": (nrrd_with_header(folder / "inf.nrrd", "(1,0,0) (0,1,0) (0,0,1)", "(inf,0,0)"), "non-finite"),
                "sheared": (nrrd_with_header(folder / "skew.nrrd", "(1,0,0) (1,1,0) (0,0,1)"), "not orthonormal"),
                "unsupported pixel type": (folder / "block.nrrd", "unsupported NRRD pixel type 'block'"),
            }
            (folder / "block.nrrd").write_bytes(b"NRRD0004\ntype: block\nblock size: 3\ndimension: 3\n"
                                                b"sizes: 2 2 2\nencoding: raw\n\n" + bytes(24))
            for label, (path, expected) in cases.items():
                with self.subTest(label), self.assertRaises(InputImageError) as caught:
                    read_image(path, "fixed image")
                self.assertIn(expected, str(caught.exception))
                self.assertIn(str(path), str(caught.exception))

    def test_spacings_itk_would_silently_read_as_one_millimetre(self):
        """NaN, infinite or zero spacing fields: ITK reads NIfTI's pixdim and NRRD's spacings as 1 mm."""
        raw = np.random.default_rng(0).random(216).astype("<f4").tobytes()
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            image = sitk.GetImageFromArray(np.random.default_rng(1).random((6, 6, 6)).astype(np.float32))
            image.SetSpacing((2.0, 2.0, 2.0))
            sitk.WriteImage(image, str(folder / "whole.nii"))
            header = (folder / "whole.nii").read_bytes()
            files = {}
            for label, value in (("nan", float("nan")), ("zero", 0.0), ("inf", float("inf"))):
                files[f"pixdim {label}"] = folder / f"pixdim_{label}.nii"
                files[f"pixdim {label}"].write_bytes(header[:80] + struct.pack("<f", value) + header[84:])
                files[f"nrrd spacings {label}"] = folder / f"spacings_{label}.nrrd"
                files[f"nrrd spacings {label}"].write_bytes(
                    f"NRRD0004\ntype: float\ndimension: 3\nsizes: 6 6 6\nspacings: {value} 1 1\nendian: little\n"
                    f"encoding: raw\n\n".encode() + raw)
                files[f"mha spacing {label}"] = folder / f"spacing_{label}.mha"
                files[f"mha spacing {label}"].write_bytes(
                    f"ObjectType = Image\nNDims = 3\nDimSize = 6 6 6\nElementSpacing = {value} 1 1\n"
                    f"ElementType = MET_FLOAT\nElementDataFile = LOCAL\n".encode() + raw)
            for label, path in files.items():
                with self.subTest(label), self.assertRaisesRegex(InputImageError, "NaN, infinite or zero spacing|NaN spacing"):
                    read_image(path)
            self.assertEqual(read_image(folder / "whole.nii").GetSpacing(), (2.0, 2.0, 2.0))

    def test_negative_spacing_in_a_file_becomes_a_flipped_direction(self):
        with tempfile.TemporaryDirectory() as scratch:
            image = read_image(nrrd_with_header(Path(scratch) / "neg.nrrd", "(-2,0,0) (0,1,0) (0,0,1)"))
        self.assertEqual(image.GetSpacing(), (2.0, 1.0, 1.0))
        self.assertEqual(image.GetDirection()[0], -1.0)

    def test_in_memory_geometry_oddities_are_refused_before_registering(self):
        good = blob()
        sheared = sitk.Image(good)
        sheared.SetDirection((1, 0.5, 0, 0, 1, 0, 0, 0, 1))
        nan_origin = sitk.Image(good)
        nan_origin.SetOrigin((float("nan"), 0, 0))
        for image, expected in ((sheared, "not orthonormal"), (nan_origin, "non-finite origin")):
            with self.subTest(expected), self.assertRaisesRegex(InputImageError, expected):
                registration.run(good, image, RegistrationSettings(scales_estimator="none"))

    def test_single_voxel_single_slice_4d_vector_complex_files(self):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            good = blob()
            cases = {
                "slice.nii.gz": (good[:, :, 3:4], "at least 4 voxels along every axis"),
                "voxel.nrrd": (good[2:3, 2:3, 2:3], "empty or too small"),
                "series.nii": (sitk.JoinSeries([good, good]), "differ in dimension: 4D vs 3D"),
                "vector.nrrd": (sitk.Compose([good, good]), "must have scalar pixels"),
                "complex.mha": (sitk.RealAndImaginaryToComplex(good, good), "must have scalar pixels"),
            }
            for name, (image, expected) in cases.items():
                sitk.WriteImage(image, str(folder / name))
                with self.subTest(name), self.assertRaisesRegex(InputImageError, expected):
                    registration.run(read_image(folder / name, "moving image"), good,
                                     RegistrationSettings(scales_estimator="none"))


class MixedInputsTest(unittest.TestCase):
    """int16 against float32, different sizes and spacings, and a labelmap: valid inputs that register."""

    def test_different_pixel_types_sizes_and_spacings_register(self):
        fixed = sitk.Cast(blob((20, 18, 16)) * 1000, sitk.sitkInt16)
        fixed.SetSpacing((1.0, 1.2, 1.5))
        moving = blob((14, 16, 12))
        moving.SetSpacing((1.4, 1.3, 2.0))
        moving.SetOrigin((0.5, -0.5, 0.0))
        labels = sitk.Cast(blob((14, 16, 12)) * 5, sitk.sitkUInt8)  # labels 0-4 (a labelmap is used as intensities)
        labels.CopyInformation(moving)
        settings = RegistrationSettings(scales_estimator="none").replace(lbfgs2={"number_of_iterations": 3})
        result = registration.run(fixed, moving, settings)
        self.assertFalse(result.cancelled)
        self.assertTrue(result.moved)
        self.assertLess(result.metric_reevaluated, -0.5)
        self.assertEqual(len(result.trace), sum(result.iterations_per_run))
        # A labelmap is registered as intensities; when its plateaus leave Mattes without a gradient the result
        # says it never moved instead of passing for a registration.
        result = registration.run(fixed, labels, settings)
        self.assertFalse(result.cancelled)
        self.assertTrue(result.moved or any("never moved" in w for w in result.warnings), result.warnings)


    def test_the_module_logic_registers_an_int16_volume_against_a_float32_one(self):
        """The same through SpacingRegistrationLogic.register on volume nodes of a real MRML scene; the input
        nodes are unchanged."""
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SpacingRegistration"))
        import SpacingRegistration
        from SpacingRegistrationLib.mrml import bridge

        scene = bridge.createScene()
        logic = SpacingRegistration.SpacingRegistrationLogic(scene=scene)
        fixed_image = sitk.Cast(blob((20, 18, 16)) * 1000, sitk.sitkInt16)
        fixed_image.SetSpacing((1.0, 1.2, 1.5))
        moving_image = blob((14, 16, 12))
        moving_image.SetSpacing((1.4, 1.3, 2.0))
        fixed = bridge.volumeNodeFromImage(scene, fixed_image, "fixed")
        moving = bridge.volumeNodeFromImage(scene, moving_image, "moving")
        before = [bridge.imageFromVolumeNode(n) for n in (fixed, moving)]
        settings = RegistrationSettings(scales_estimator="none").replace(lbfgs2={"number_of_iterations": 3})
        result = logic.register(fixed, moving, settings)
        self.assertTrue(result.moved)
        self.assertIsNotNone(logic.lastTransformNode)
        for node, image in zip((fixed, moving), before):
            after = bridge.imageFromVolumeNode(node)
            np.testing.assert_array_equal(sitk.GetArrayViewFromImage(after), sitk.GetArrayViewFromImage(image))
            self.assertEqual(after.GetSpacing(), image.GetSpacing())


if __name__ == "__main__":
    unittest.main()
