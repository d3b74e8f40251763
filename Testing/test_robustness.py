"""Robustness (issue 6): bad inputs through the library, the command line and the module logic each get one clear
error and change nothing; cancels and kills keep every finished run and nothing half-written; resumed studies are
bit-identical; the memory estimate refuses what the machine cannot hold; repeated registrations do not leak.
docs/robustness.md maps each guarantee to the test that proves it."""

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from unittest import mock

import numpy as np
import SimpleITK as sitk

from testdata import FAST_SETTINGS as FAST, SMALL_STUDY as SPEC, pet_like_pair, pet_like_pair_files, run_cli

from SpacingRegistrationLib import registration, resources
from SpacingRegistrationLib.images import InputImageError, read_image
from SpacingRegistrationLib.resources import ResourceError
from SpacingRegistrationLib.settings import RegistrationSettings, SettingsError, to_dict
from SpacingRegistrationLib.study_runner import run_study
from SpacingRegistrationLib.study_spec import StudySpec
from SpacingRegistrationLib.study_store import StudyFolderError, image_fingerprint, open_study

ROOT = Path(__file__).resolve().parents[1]
MODES = SPEC.modes
#: A budget no registration fits in.
TINY = 1024


def blob(size=(16, 16, 16), shift=0.0):
    z, y, x = np.mgrid[:size[2], :size[1], :size[0]]
    values = np.exp(-((x - size[0] / 2 - shift) ** 2 + (y - size[1] / 2) ** 2 + (z - size[2] / 2) ** 2) / 20.0)
    return sitk.GetImageFromArray(values.astype(np.float32))


def with_array(image, change):
    values = sitk.GetArrayFromImage(image)
    change(values)
    result = sitk.GetImageFromArray(values)
    result.CopyInformation(image)
    return result


def rotated(image):
    """The same voxels with axes x and y swapped in the direction matrix."""
    result = sitk.Image(image)
    result.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return result


def folder_digest(folder: Path) -> dict:
    """Every file of a folder with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def bad_image_pairs(good, other):
    """(fixed, moving, expected message) for every kind of bad image pair."""
    vector = sitk.Compose([good, good, good])
    return [
        (good[:, :, 0], other[:, :, 1], "must be 3D, got a 2D image"),
        (sitk.JoinSeries([good, good]), sitk.JoinSeries([other, other]), "must be 3D, got a 4D image"),
        (vector, other, "fixed image must have scalar pixels"),
        (sitk.Image(good.GetSize(), sitk.sitkFloat32), other, "fixed image is constant"),
        (good, sitk.Image([1, 1, 1], sitk.sitkFloat32), "moving image is empty or too small"),
        (with_array(good, lambda v: v.__setitem__((3, 4, 5), np.nan)), other, "fixed image contains 1 NaN"),
        (good, with_array(other, lambda v: v.__setitem__((0, 0, 0), np.inf)), "moving image contains 1 NaN or infinite"),
        (good[:, :, 0], other, "differ in dimension: 2D vs 3D"),
        (good, rotated(other), "fixed and moving images have different directions"),
    ]


BAD_SETTINGS = [
    (dict(mesh_size=(0, 2, 2)), "mesh_size must be at least 1"),
    (dict(mesh_size=(2, -1, 2)), "mesh_size must be at least 1"),
    (dict(sampling_percentage=0), "sampling_percentage must be in (0, 100]"),
    (dict(sampling_percentage=150), "sampling_percentage must be in (0, 100]"),
    (dict(spacing_override=0.0), "spacing_override must be None or a spacing > 0"),
    (dict(spacing_override=-4.0), "spacing_override must be None or a spacing > 0"),
]


class LibraryBadInputTest(unittest.TestCase):
    """registration.run: every bad input is refused with one named error; the inputs are not modified."""

    def test_bad_images(self):
        good, other = blob(), blob(shift=1.5)
        for fixed, moving, expected in bad_image_pairs(good, other):
            with self.subTest(expected):
                before = [image_fingerprint(i) if i.GetNumberOfComponentsPerPixel() == 1 else None for i in (fixed, moving)]
                with self.assertRaises(InputImageError) as caught:
                    registration.run(fixed, moving, FAST)
                self.assertIn(expected, str(caught.exception))
                self.assertEqual(len(str(caught.exception).splitlines()), 1)
                after = [image_fingerprint(i) if i.GetNumberOfComponentsPerPixel() == 1 else None for i in (fixed, moving)]
                self.assertEqual(before, after)

    def test_bad_settings(self):
        for change, expected in BAD_SETTINGS:
            with self.subTest(expected), self.assertRaises(SettingsError) as caught:
                registration.run(blob(), blob(shift=1.5), FAST.replace(**change))
            self.assertIn(expected, str(caught.exception))

    def test_a_small_direction_difference_is_accepted(self):
        moving = blob(shift=1.5)
        moving.SetDirection((1.0, 1e-8, 0.0, -1e-8, 1.0, 0.0, 0.0, 0.0, 1.0))
        result = registration.run(blob(), moving, FAST.replace(lbfgs2={"number_of_iterations": 1}))
        self.assertFalse(result.cancelled)

    def test_files(self):
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, folder, True)
        truncated = folder / "truncated.nrrd"
        sitk.WriteImage(pet_like_pair().fixed, str(truncated))
        data = truncated.read_bytes()
        truncated.write_bytes(data[:len(data) // 2])
        compressed = folder / "truncated_gz.nrrd"
        sitk.WriteImage(pet_like_pair().fixed, str(compressed), useCompression=True)
        compressed.write_bytes(compressed.read_bytes()[:len(compressed.read_bytes()) // 2])
        text = folder / "notes.nrrd"
        text.write_text("this is not an image")
        cases = [(folder / "absent.nrrd", "file not found"), (truncated, "is truncated"),
                 (compressed, "is truncated"), (text, "is not an NRRD file")]
        for path, expected in cases:
            with self.subTest(path.name), self.assertRaises(InputImageError) as caught:
                read_image(path, "fixed image")
            self.assertIn(expected, str(caught.exception))
            self.assertIn(str(path), str(caught.exception))

    def test_study_specifications(self):
        for change, expected in [(dict(spacings=()), "at least one spacing"),
                                 (dict(spacings=(4.0, 4.0)), "duplicate spacing"),
                                 (dict(spacings=(0.0,)), "spacings must be > 0"),
                                 (dict(spacings=(-1.0,)), "spacings must be > 0")]:
            with self.subTest(expected), self.assertRaisesRegex(SettingsError, expected):
                StudySpec(settings=FAST, **change)


class MemoryEstimateTest(unittest.TestCase):
    def test_estimate_grows_with_voxels_and_mesh(self):
        small = resources.estimate_registration_bytes([64] * 3, [64] * 3, [2] * 3, FAST, threads=1).total_bytes
        large = resources.estimate_registration_bytes([2048] * 3, [2048] * 3, [2] * 3, FAST, threads=1).total_bytes
        fine = resources.estimate_registration_bytes([64] * 3, [64] * 3, [40] * 3, FAST, threads=1).total_bytes
        self.assertGreater(large, 100 * resources.GIB)  # 2048^3 voxels: about 800 GiB, nothing allocated
        self.assertGreater(fine, 20 * small)
        self.assertGreater(resources.available_memory_bytes(), 0)

    def test_run_refuses_before_starting(self):
        progress = []
        with self.assertRaises(ResourceError) as caught:
            registration.run(blob(), blob(shift=1.5), FAST, progress=progress.append, memory_limit_bytes=TINY)
        message = str(caught.exception)
        self.assertRegex(message, r"needs about \d+\.\d\d GiB, 0\.00 GiB available")
        self.assertEqual(progress, [])  # no iteration ran
        with self.assertRaises(ResourceError):  # a huge mesh against the machine's own memory
            registration.run(blob(), blob(shift=1.5), FAST.replace(mesh_size=(200, 200, 200)))

    def test_estimate_covers_the_measured_peak(self):
        """A 96^3 registration in a fresh process: the estimate is above its peak memory, and not absurdly."""
        script = (
            "import sys, SimpleITK as sitk\n"
            "def peak():  # VmHWM: a child's ru_maxrss may start at its parent's peak\n"
            "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
            "    return int(line.split()[1]) * 1024\n"
            f"sys.path.insert(0, {str(ROOT / 'SpacingRegistration')!r})\n"
            "from SpacingRegistrationLib import registration\n"
            "from SpacingRegistrationLib.settings import RegistrationSettings\n"
            "f = sitk.GaussianSource(sitk.sitkFloat32, [96] * 3, [24] * 3, [48] * 3, 1.0)\n"
            "m = sitk.GaussianSource(sitk.sitkFloat32, [96] * 3, [24] * 3, [50, 48, 48], 1.0)\n"
            "s = RegistrationSettings(scales_estimator='none', reproducible=True, mesh_size=(6, 6, 6))"
            ".replace(lbfgs2={'number_of_iterations': 1})\n"
            "base = peak()\n"
            "registration.run(f, m, s)\n"
            "print(peak() - base)\n")
        measured = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                      check=True).stdout.split()[-1])
        settings = RegistrationSettings(scales_estimator="none", reproducible=True, mesh_size=(6, 6, 6))
        estimate = resources.estimate_registration_bytes([96] * 3, [96] * 3, [6] * 3, settings).total_bytes
        self.assertGreater(estimate, measured)
        self.assertLess(estimate, 3 * measured)



MEMINFO = """MemTotal:       16314412 kB
MemFree:         1201232 kB
MemAvailable:    9876544 kB
Buffers:          200000 kB
Cached:          7000000 kB
"""
MEMINFO_OLD_KERNEL = "MemTotal: 4000000 kB\nMemFree: 1000 kB\nBuffers: 2000 kB\nCached: 3000 kB\n"
VM_STAT = """Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               12000.
Pages active:                            300000.
Pages inactive:                          250000.
Pages speculative:                         5000.
Pages throttled:                              0.
Pages wired down:                        150000.
Pages purgeable:                           8000.
"""


class FakeKernel32:
    """GlobalMemoryStatusEx as Windows fills it (ctypes structure through a pointer)."""

    def __init__(self, available, ok=True):
        self.available, self.ok = available, ok

    def GlobalMemoryStatusEx(self, pointer):  # noqa: N802 - the Windows name
        assert pointer.contents.dwLength == 64  # sizeof(MEMORYSTATUSEX) on Windows
        pointer.contents.ullAvailPhys = self.available
        return 1 if self.ok else 0


class MemoryPlatformTest(unittest.TestCase):
    """The memory guard on Linux, macOS and Windows (parsers on captured output, platform detection patched), and
    a warning, not a silent pass, where the figure is unknown."""

    def setUp(self):
        patcher = mock.patch.dict(sys.modules, {"psutil": None})  # the standard-library paths, psutil or not
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_parsers_on_captured_output(self):
        self.assertEqual(resources.parse_meminfo(MEMINFO), 9876544 * 1024)
        self.assertEqual(resources.parse_meminfo(MEMINFO_OLD_KERNEL), (1000 + 2000 + 3000) * 1024)
        self.assertIsNone(resources.parse_meminfo("garbage"))
        self.assertEqual(resources.parse_vm_stat(VM_STAT), (12000 + 250000) * 16384)
        self.assertIsNone(resources.parse_vm_stat("vm_stat: command failed"))
        self.assertEqual(resources.windows_available(FakeKernel32(6 * resources.GIB)), 6 * resources.GIB)
        self.assertIsNone(resources.windows_available(FakeKernel32(1, ok=False)))

    def test_each_platform_is_detected_and_read(self):
        completed = subprocess.CompletedProcess(["vm_stat"], 0, stdout=VM_STAT, stderr="")
        with mock.patch.object(resources.platform, "system", return_value="Darwin"), \
                mock.patch.object(resources.subprocess, "run", return_value=completed) as called:
            self.assertEqual(resources.read_available_memory(), resources.MemoryReading((12000 + 250000) * 16384, "vm_stat"))
        self.assertEqual(called.call_args[0][0], ["vm_stat"])
        kernel32 = FakeKernel32(3 * resources.GIB)
        with mock.patch.object(resources.platform, "system", return_value="Windows"), \
                mock.patch.object(resources.ctypes, "windll", mock.Mock(kernel32=kernel32), create=True):
            self.assertEqual(resources.available_memory_bytes(), 3 * resources.GIB)
        real = resources.read_available_memory()  # this machine (Linux)
        self.assertEqual(real.source, "/proc/meminfo")
        self.assertGreater(real.available_bytes, 0)

    def test_unknown_memory_warns_instead_of_passing_silently(self):
        with mock.patch.object(resources.platform, "system", return_value="Darwin"), \
                mock.patch.object(resources.subprocess, "run", side_effect=FileNotFoundError(2, "no vm_stat")):
            reading = resources.read_available_memory()
            self.assertIsNone(reading.available_bytes)
            self.assertIn("no vm_stat", reading.source)
            with self.assertWarnsRegex(resources.MemoryUnknownWarning, r"unknown \(Darwin: .*needs about"):
                result = registration.run(blob(), blob(shift=1.5), FAST.replace(lbfgs2={"number_of_iterations": 1}))
        self.assertFalse(result.cancelled)  # unknown memory does not refuse


class CommandLineBadInputTest(unittest.TestCase):
    """spacingreg: each bad input is one line on stderr, exit status 2, no traceback, no output written."""

    @classmethod
    def setUpClass(cls):
        cls.folder = Path(tempfile.mkdtemp())
        cls.fixed, cls.moving = pet_like_pair_files(cls.folder)
        for name, (fixed, moving, _) in zip("abcdefghi", bad_image_pairs(blob(), blob(shift=1.5))):
            sitk.WriteImage(fixed, str(cls.folder / f"{name}_fixed.nrrd"))
            sitk.WriteImage(moving, str(cls.folder / f"{name}_moving.nrrd"))
        truncated = cls.folder / "truncated.nrrd"
        truncated.write_bytes(cls.fixed.read_bytes()[:len(cls.fixed.read_bytes()) // 2])
        (cls.folder / "notes.nrrd").write_text("not an image")
        (cls.folder / "blocker").write_text("a file where a folder should be")
        (cls.folder / "empty_spec.json").write_text(json.dumps({"spacings": []}))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)

    def assert_one_line(self, arguments, expected):
        status, _, err = run_cli(*arguments)
        self.assertEqual(status, 2, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(expected, err)
        self.assertNotIn("Traceback", err)

    def test_bad_images_and_files(self):
        f = self.folder
        register = ("register", "--quiet", "--scales-estimator", "none", "--lbfgs2-number-of-iterations", 2)
        expectations = [expected for _, _, expected in bad_image_pairs(blob(), blob(shift=1.5))]
        for name, expected in zip("abcdefghi", expectations):
            if name == "e":  # a 1x1x1 image: SimpleITK writes it, it reads back as 2D or 3D depending on the IO
                continue
            with self.subTest(expected):
                self.assert_one_line(register + ("--fixed", f / f"{name}_fixed.nrrd", "--moving", f / f"{name}_moving.nrrd"),
                                     expected.split(" got")[0])
        for path, expected in [(f / "absent.nrrd", "file not found"), (f / "truncated.nrrd", "is truncated"),
                               (f / "notes.nrrd", "is not an NRRD file")]:
            with self.subTest(path.name):
                self.assert_one_line(register + ("--fixed", path, "--moving", self.moving), expected)

    def test_bad_settings_and_specifications(self):
        register = ("register", "--fixed", self.fixed, "--moving", self.moving, "--quiet")
        options = [("--mesh-size", 0, 2, 2), ("--mesh-size", 2, -1, 2), ("--sampling-percentage", 0),
                   ("--sampling-percentage", 150), ("--spacing-override", 0), ("--spacing-override", -4)]
        for option, (_, expected) in zip(options, BAD_SETTINGS):
            with self.subTest(option):
                self.assert_one_line(register + option, expected)
        study = ("study", "--fixed", self.fixed, "--moving", self.moving, "--executor", "sequential")
        self.assert_one_line(study + ("--output", self.folder / "s1", "--spacings", 4, 4), "duplicate spacing")
        self.assert_one_line(study + ("--output", self.folder / "s2", "--spec", self.folder / "empty_spec.json"),
                             "at least one spacing")
        (self.folder / "list.json").write_text("[1, 2]")
        self.assert_one_line(register + ("--settings", self.folder / "list.json"), "must hold a JSON object")
        self.assert_one_line(register + ("--mesh-size", 3, 3, 3, "--grid-spacing-mm", 12),
                             "mesh_size and grid_spacing_mm are both given")
        self.assert_one_line(study[:-2] + ("--output", self.folder / "s5", "--workers", 0),
                             "workers (pool processes) must be an integer >= 1")
        dask = ("--output", self.folder / "s4", "--executor", "dask")
        self.assert_one_line(study[:-2] + dask, "needs the address of a running Dask scheduler")
        self.assert_one_line(("accuracy", "--fixed", self.fixed, "--output", self.folder / "c1", "--executor", "dask"),
                             "needs the address of a running Dask scheduler")
        self.assertFalse(any((self.folder / name).exists() for name in ("s1", "s2", "s4", "s5", "c1")))

    def test_itk_failures_are_one_sentence(self):
        far = sitk.ReadImage(str(self.moving))
        far.SetOrigin([far.GetOrigin()[0] + 1000.0] + list(far.GetOrigin()[1:]))
        sitk.WriteImage(far, str(self.folder / "far.nrrd"))
        register = ("register", "--fixed", self.fixed, "--quiet", "--scales-estimator", "none",
                    "--lbfgs2-number-of-iterations", 2)
        self.assert_one_line(register + ("--moving", self.moving, "--sampling-percentage", 1e-5),
                             "the metric has too few samples")
        self.assert_one_line(register + ("--moving", self.folder / "far.nrrd"), "the images do not overlap enough")

    def test_unwritable_output(self):
        blocker = self.folder / "blocker"
        started = time.perf_counter()
        self.assert_one_line(("register", "--fixed", self.fixed, "--moving", self.moving, "--quiet",
                              "--output", blocker / "out"), "cannot be created")
        self.assert_one_line(("register", "--fixed", self.fixed, "--moving", self.moving, "--quiet",
                              "--output", blocker), "is not a folder")
        self.assertLess(time.perf_counter() - started, 5)  # refused before registering (the default takes ~a minute)
        self.assert_one_line(("study", "--fixed", self.fixed, "--moving", self.moving, "--executor", "sequential",
                              "--output", blocker / "study"), "cannot write the study")
        self.assertEqual(blocker.read_text(), "a file where a folder should be")

    def test_not_enough_memory(self):
        with mock.patch.object(resources, "available_memory_bytes", return_value=TINY):
            self.assert_one_line(("register", "--fixed", self.fixed, "--moving", self.moving, "--quiet"),
                                 "not enough memory: needs about")
            self.assert_one_line(("study", "--fixed", self.fixed, "--moving", self.moving, "--output",
                                  self.folder / "s3", "--workers", 2), "for 2 registrations at once")
        self.assertFalse((self.folder / "s3").exists())


class StudyFolderUnchangedTest(unittest.TestCase):
    """A finished study folder is byte-identical after every refused resume."""

    def test_refused_resumes_leave_the_folder_unchanged(self):
        folder = Path(tempfile.mkdtemp()) / "study"
        self.addCleanup(shutil.rmtree, folder.parent, True)
        pair = pet_like_pair()
        spec = StudySpec(settings=FAST, spacings=(4.0,), repeats=1, modes=("native-reproducible",))
        self.assertTrue(run_study(spec, pair.fixed, pair.moving, folder, executor="sequential").finished)
        before = folder_digest(folder)
        nan_moving = with_array(pair.moving, lambda v: v.__setitem__((1, 1, 1), np.nan))
        other = StudySpec(settings=FAST, spacings=(4.0, 8.0), repeats=1, modes=("native-reproducible",))
        cases = [
            (lambda: run_study(other, pair.fixed, pair.moving, folder, executor="sequential"), StudyFolderError),
            (lambda: run_study(spec, pair.moving, pair.fixed, folder, executor="sequential"), StudyFolderError),
            (lambda: run_study(spec, pair.fixed, nan_moving, folder, executor="sequential"), InputImageError),
            (lambda: run_study(spec, pair.fixed, rotated(pair.moving), folder, executor="sequential"), InputImageError),
            (lambda: run_study(spec, pair.fixed, pair.moving, folder, executor="sequential", memory_limit_bytes=TINY),
             ResourceError),
            (lambda: run_study(spec, pair.fixed, folder / "absent.nrrd", folder, executor="sequential"),
             InputImageError),
        ]
        for call, error in cases:
            with self.subTest(error.__name__), self.assertRaises(error):
                call()
            self.assertEqual(folder_digest(folder), before)

    def test_refused_new_study_creates_no_folder(self):
        folder = Path(tempfile.mkdtemp()) / "study"
        self.addCleanup(shutil.rmtree, folder.parent, True)
        pair = pet_like_pair()
        with self.assertRaises(ResourceError):
            run_study(SPEC, pair.fixed, pair.moving, folder, executor="pool", workers=2, memory_limit_bytes=TINY)
        with self.assertRaises(InputImageError):
            run_study(SPEC, pair.fixed, rotated(pair.moving), folder, executor="sequential")
        self.assertFalse(folder.exists())


class ModuleLogicBadInputTest(unittest.TestCase):
    """SpacingRegistrationLogic.register / runStudy: a ValueError naming the problem, the scene unchanged."""

    def setUp(self):
        sys.path.insert(0, str(ROOT / "SpacingRegistration"))
        import SpacingRegistration
        from SpacingRegistrationLib.mrml import bridge

        self.bridge = bridge
        self.scene = bridge.createScene()
        self.logic = SpacingRegistration.SpacingRegistrationLogic(scene=self.scene)
        self.folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.folder, True)

    def node(self, image, name):
        return self.bridge.volumeNodeFromImage(self.scene, image, name)

    def test_register_and_study_refuse_bad_inputs(self):
        good, other = blob((24, 24, 24)), blob((24, 24, 24), shift=1.5)
        fixed, moving = self.node(good, "fixed"), self.node(other, "moving")
        bad = {
            "constant": self.node(sitk.Image([24, 24, 24], sitk.sitkFloat32), "constant"),
            "NaN": self.node(with_array(other, lambda v: v.__setitem__((2, 2, 2), np.nan)), "nan"),
            "different directions": self.node(rotated(other), "rotated"),
            "at least 4 voxels": self.node(good[:, :, :2], "thin"),
        }
        count = self.scene.GetNumberOfNodes()
        for expected, node in bad.items():
            with self.subTest(expected), self.assertRaisesRegex(InputImageError, expected):
                self.logic.register(fixed, node, FAST)
        for change, expected in BAD_SETTINGS:
            with self.subTest(expected), self.assertRaises(SettingsError):
                self.logic.register(fixed, moving, {**to_dict(FAST), **change})
        with mock.patch.object(resources, "available_memory_bytes", return_value=TINY), \
                self.assertRaisesRegex(ResourceError, "not enough memory"):
            self.logic.register(fixed, moving, FAST)
        spec = StudySpec(settings=FAST, spacings=(4.0,), repeats=1, modes=("native-reproducible",))
        with self.assertRaisesRegex(InputImageError, "constant"):
            self.logic.runStudy(fixed, bad["constant"], spec, self.folder / "study")
        with self.assertRaisesRegex(StudyFolderError, "cannot write the study"):
            (self.folder / "blocker").write_text("x")
            self.logic.runStudy(fixed, moving, spec, self.folder / "blocker" / "study")
        with mock.patch.object(resources, "available_memory_bytes", return_value=TINY), \
                self.assertRaises(ResourceError):
            self.logic.runStudy(fixed, moving, spec, self.folder / "study")
        self.assertEqual(self.scene.GetNumberOfNodes(), count)
        self.assertFalse((self.folder / "study").exists())
        self.assertTrue(all(issubclass(e, ValueError) for e in (InputImageError, SettingsError, ResourceError,
                                                                 StudyFolderError)))


class CancelTest(unittest.TestCase):
    """Cancels at random points: a run returns a marked partial result; a study keeps only whole runs."""

    @classmethod
    def setUpClass(cls):
        cls.root = Path(tempfile.mkdtemp())
        cls.pair = pet_like_pair()
        cls.reference = cls.root / "reference"
        assert run_study(SPEC, cls.pair.fixed, cls.pair.moving, cls.reference, executor="sequential").finished

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def test_cancel_a_run_at_random_iterations(self):
        settings = FAST.replace(reproducible=True, lbfgs2={"number_of_iterations": 6})
        full = registration.run(self.pair.fixed, self.pair.moving, settings)
        for stop_at in random.Random(6).sample(range(1, len(full.trace)), 3):
            with self.subTest(stop_at=stop_at):
                cancel = threading.Event()

                def progress(record, stop_at=stop_at, cancel=cancel):
                    if record.event_index + 1 == stop_at:
                        cancel.set()

                partial = registration.run(self.pair.fixed, self.pair.moving, settings, progress=progress, cancel=cancel)
                self.assertTrue(partial.cancelled)
                self.assertEqual(partial.stop_reason, "cancelled")
                self.assertEqual(len(partial.trace), stop_at)
                self.assertTrue(partial.summary()["cancelled"])
                self.assertEqual([r.metric for r in partial.trace], [r.metric for r in full.trace[:stop_at]])

    def assert_whole(self, folder: Path, completed: int):
        """Every row parses and has its transform; no temporary file is left; finished rows are the reference's."""
        lines = (folder / "runs.jsonl").read_text().splitlines(keepends=True) if (folder / "runs.jsonl").exists() else []
        self.assertEqual(len(lines), completed)
        self.assertTrue(all(line.endswith("\n") for line in lines))
        rows = [json.loads(line) for line in lines]
        self.assertFalse(any(row["cancelled"] for row in rows))
        self.assertEqual(sorted(p.name for p in (folder / "transforms").iterdir()),
                         sorted(f"{row['run_id']}.tfm" for row in rows))
        self.assertEqual(list(folder.rglob("*.part*")), [])
        reference = open_study(self.reference)
        store = open_study(folder)
        self.assertEqual(store.dropped_lines, 0)
        for run_id in store.rows:
            np.testing.assert_array_equal(store.read_transform(run_id).GetParameters(),
                                          reference.read_transform(run_id).GetParameters())

    def test_cancel_a_study_at_random_times_then_resume(self):
        rng = random.Random(42)
        total = len(SPEC.runs())
        interrupted = []
        run_seconds = open_study(self.reference).rows[SPEC.runs()[0].run_id]["summary"]["timing"]["total_s"]
        for attempt in range(3):
            with self.subTest(attempt=attempt):
                folder = self.root / f"cancelled{attempt}"
                cancel = threading.Event()
                timer = threading.Timer(rng.uniform(0.2, 0.8) * total * run_seconds, cancel.set)
                timer.start()
                outcome = run_study(SPEC, self.pair.fixed, self.pair.moving, folder, executor="sequential",
                                    cancel=cancel)
                timer.cancel()
                self.assertTrue(outcome.cancelled or outcome.finished)
                interrupted.append(outcome.cancelled and len(outcome.completed) < total)
                self.assert_whole(folder, len(outcome.completed))
                resumed = run_study(SPEC, self.pair.fixed, self.pair.moving, folder, executor="sequential")
                self.assertTrue(resumed.finished)
                self.assertEqual(len(resumed.skipped) + len(resumed.completed), total)
                self.assert_whole(folder, total)
        self.assertTrue(any(interrupted), "no cancel landed inside the study")

    def test_cancel_a_pool_study_then_resume(self):
        folder = self.root / "cancelled_pool"
        cancel = threading.Event()

        def stop_after_first(done, total, row):
            cancel.set()

        outcome = run_study(SPEC, self.pair.fixed, self.pair.moving, folder, executor="pool", workers=2,
                            progress=stop_after_first, cancel=cancel)
        self.assertTrue(outcome.cancelled)
        self.assertGreaterEqual(len(outcome.completed), 1)
        self.assertLess(len(outcome.completed), len(SPEC.runs()))
        self.assert_whole(folder, len(outcome.completed))
        self.assertTrue(run_study(SPEC, self.pair.fixed, self.pair.moving, folder, executor="sequential").finished)
        self.assert_whole(folder, len(SPEC.runs()))


class KillTest(unittest.TestCase):
    """SIGKILL of a whole `spacingreg study` after its first rows; rerunning it gives the uninterrupted bits."""

    def test_killed_study_resumes_bit_identical(self):
        root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root, True)
        pair = pet_like_pair()
        fixed, moving = root / "fixed.nrrd", root / "moving.nrrd"
        sitk.WriteImage(pair.fixed, str(fixed))
        sitk.WriteImage(pair.moving, str(moving))
        command = [str(ROOT / ".venv" / "bin" / "spacingreg"), "study", "--fixed", str(fixed), "--moving", str(moving),
                   "--spacings", "1", "4", "--repeats", "2", "--modes", *MODES, "--executor", "sequential",
                   "--scales-estimator", "none", "--lbfgs2-number-of-iterations", "3"]
        killed = root / "killed"
        process = subprocess.Popen(command + ["--output", str(killed)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        runs = killed / "runs.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if runs.is_file() and runs.read_text().count("\n") >= 1:
                break
            time.sleep(0.02)
        self.assertIsNone(process.poll(), "the study finished before it could be killed")
        process.send_signal(signal.SIGKILL)
        process.wait()
        rows_at_kill = len(open_study(killed).rows)
        self.assertGreaterEqual(rows_at_kill, 1)
        self.assertLess(rows_at_kill, len(SPEC.runs()))
        self.assertEqual(subprocess.run(command + ["--output", str(killed)], capture_output=True).returncode, 0)
        uninterrupted = root / "uninterrupted"
        self.assertEqual(subprocess.run(command + ["--output", str(uninterrupted)], capture_output=True).returncode, 0)
        a, b = open_study(killed), open_study(uninterrupted)
        self.assertEqual(sorted(a.rows), sorted(b.rows))
        self.assertEqual(len(a.rows), len(SPEC.runs()))
        for run_id in a.rows:
            self.assertEqual(a.transform_path(run_id).read_bytes(), b.transform_path(run_id).read_bytes(), run_id)
            self.assertEqual(a.rows[run_id]["summary"]["metric_reevaluated"],
                             b.rows[run_id]["summary"]["metric_reevaluated"])


class MemoryGrowthTest(unittest.TestCase):
    """100 registrations in one process: resident memory does not grow beyond noise."""

    def test_hundred_registrations_do_not_leak(self):
        sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))
        import bench_memory

        figures = bench_memory.measure(count=100)
        print(bench_memory.describe(figures))
        self.assertEqual(figures["count"], 100)
        self.assertLess(figures["growth_after_warmup_bytes"], 10 * 1024 ** 2)  # the leak fixed in issue 6 gave +26 MiB


if __name__ == "__main__":
    unittest.main()
