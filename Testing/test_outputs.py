"""Output folders that fail (issue 13 §3): a read-only folder (as a non-root user, and a read-only mount), a full
disk (a small tmpfs), a path that is a file. One line and exit status 2 on the command line, a named error in the
library and the module logic; nothing half-written; results finished before are kept byte-identical."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import SimpleITK as sitk

from testdata import FAST_SETTINGS as FAST
from test_robustness import blob, folder_digest, run_cli

from SpacingRegistrationLib import cli
from SpacingRegistrationLib.study_runner import run_study
from SpacingRegistrationLib.study_spec import StudySpec
from SpacingRegistrationLib.study_store import StudyFolderError, open_study

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
QUICK = ("--quiet", "--scales-estimator", "none", "--lbfgs2-number-of-iterations", 1)
TWO_RUNS = StudySpec(settings=FAST.replace(lbfgs2={"number_of_iterations": 1}), spacings=(1.0, 2.0), repeats=1,
                     modes=("native-reproducible",))


@contextlib.contextmanager
def small_filesystem(test: unittest.TestCase, size: str = "512k", read_only: bool = False):
    """A tmpfs of ``size`` mounted on a new folder (read-only if asked); the test is skipped, saying why, where the
    sandbox forbids mounting."""
    mount_point = Path(tempfile.mkdtemp(prefix="sr-mount-"))
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        mount_point.rmdir()
        test.skipTest(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        mount_point.rmdir()


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``folder`` up, then free ``leave`` bytes."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as stream, contextlib.suppress(OSError):
        while True:
            stream.write(b"\0" * 4096)
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def input_pair(folder: Path) -> tuple[Path, Path]:
    fixed, moving = folder / "fixed.nrrd", folder / "moving.nrrd"
    sitk.WriteImage(blob((16, 16, 16)), str(fixed))
    sitk.WriteImage(blob((16, 16, 16), shift=1.5), str(moving))
    return fixed, moving


class OutputFolderTest(unittest.TestCase):
    def setUp(self):
        self.folder = Path(tempfile.mkdtemp(prefix="sr-out-"))
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.folder.chmod(0o755)  # the non-root user must reach the inputs
        self.fixed, self.moving = input_pair(self.folder)
        self.inputs = {p: p.read_bytes() for p in (self.fixed, self.moving)}

    def tearDown(self):
        for path, data in self.inputs.items():
            self.assertEqual(path.read_bytes(), data)  # inputs unchanged

    def register(self, output):
        return run_cli("register", "--fixed", self.fixed, "--moving", self.moving, "--output", output, *QUICK)

    def assert_refused(self, status, err, expected):
        self.assertEqual(status, 2, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(expected, err)

    def run_as_nobody(self, *command):
        """``spacingreg`` run as uid/gid 65534 with no groups (tests run as root, for whom permissions do not stop
        reads or writes)."""
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            self.skipTest("needs root and setpriv to run the command line as another user")
        return subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-m",
             "SpacingRegistrationLib.cli", *map(str, command)],
            capture_output=True, text=True, cwd="/", timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT / "SpacingRegistration"), "HOME": "/tmp"})

    def test_unreadable_input_as_a_non_root_user(self):
        self.moving.chmod(0o600)
        completed = self.run_as_nobody("register", "--fixed", self.fixed, "--moving", self.moving, *QUICK)
        self.assert_refused(completed.returncode, completed.stderr,
                            f"moving image file {self.moving} cannot be read: permission denied")

    def test_read_only_folder_as_a_non_root_user(self):
        """The CLI run as nobody against a folder it may not write: refused before registering."""
        out = self.folder / "results"
        out.mkdir(mode=0o755)
        for command in (["register", "--fixed", self.fixed, "--moving", self.moving, "--output", out, *QUICK],
                        ["study", "--fixed", self.fixed, "--moving", self.moving, "--output", out / "study",
                         "--executor", "sequential", "--spacings", 1, "--repeats", 1]):
            with self.subTest(command[0]):
                completed = self.run_as_nobody(*command)
                self.assert_refused(completed.returncode, completed.stderr,
                                    "not writable" if command[0] == "register" else "cannot write the study")
                self.assertIn(str(out), completed.stderr)
        self.assertEqual(list(out.iterdir()), [])

    def test_read_only_mount(self):
        """Root is refused by a read-only filesystem: the command line and a study say so in one line."""
        with small_filesystem(self, read_only=True) as mount:
            status, _, err = self.register(mount / "results")
            self.assert_refused(status, err, "not writable")
            status, _, err = run_cli("study", "--fixed", self.fixed, "--moving", self.moving, "--output",
                                     mount / "study", "--executor", "sequential", "--spacings", 1, "--repeats", 1)
            self.assert_refused(status, err, "cannot write the study")
            self.assertEqual(list(mount.iterdir()), [])

    def test_full_disk_keeps_earlier_results_and_leaves_nothing_half_written(self):
        with small_filesystem(self) as mount:
            out = mount / "results"
            status, _, err = self.register(out)
            self.assertEqual(status, 0, err)
            before = folder_digest(out)
            self.assertEqual(sorted(before), ["result.html", "result.json", "trace.csv", "transform.tfm"])
            fill(mount, leave=2048)  # less than one result (the transform alone is about 9 kB)
            status, _, err = self.register(out)
            self.assert_refused(status, err, f"cannot write the results to {out}: No space left on device")
            self.assertEqual(folder_digest(out), before)  # the earlier results, whole; no .part file

    def test_write_result_to_a_file_path(self):
        blocker = self.folder / "blocker"
        blocker.write_text("a file")
        result = cli.run(sitk.ReadImage(str(self.fixed)), sitk.ReadImage(str(self.moving)),
                         FAST.replace(lbfgs2={"number_of_iterations": 1}))
        with self.assertRaisesRegex(cli.OutputFolderError, f"cannot write the results to {blocker}"):
            cli.write_result(result, blocker)
        self.assertEqual(blocker.read_text(), "a file")


class StudyFullDiskTest(unittest.TestCase):
    def test_study_on_a_disk_that_fills_keeps_finished_runs_and_resumes(self):
        with small_filesystem(self, size="1m") as mount:
            folder = mount / "study"
            fixed, moving = blob((16, 16, 16)), blob((16, 16, 16), shift=1.5)
            filled = []

            def fill_after_first_run(done, total, row):
                if not filled:
                    filled.append(fill(mount, leave=1024))

            with self.assertRaises(StudyFolderError) as caught:
                run_study(TWO_RUNS, fixed, moving, folder, executor="sequential", progress=fill_after_first_run)
            message = str(caught.exception)
            self.assertIn("No space left on device", message)
            self.assertIn("1 finished run(s) are kept", message)
            self.assertEqual(len(message.splitlines()), 1)
            self.assertFalse([p for p in folder.rglob("*") if ".part" in p.name])
            store = open_study(folder)
            self.assertEqual(len(store.rows), 1)
            self.assertEqual(store.dropped_lines, 0)
            self.assertTrue(store.runs_path.read_text().endswith("\n"))
            filled[0].unlink()
            outcome = run_study(TWO_RUNS, fixed, moving, folder, executor="sequential")
            self.assertTrue(outcome.finished)
            self.assertEqual(len(outcome.skipped), 1)


class ModuleLogicOutputTest(unittest.TestCase):
    """SpacingRegistrationLogic.runStudy into a read-only folder: a named error, the scene unchanged."""

    def test_run_study_into_a_read_only_mount(self):
        sys.path.insert(0, str(ROOT / "SpacingRegistration"))
        import SpacingRegistration
        from SpacingRegistrationLib.mrml import bridge

        scene = bridge.createScene()
        logic = SpacingRegistration.SpacingRegistrationLogic(scene=scene)
        fixed = bridge.volumeNodeFromImage(scene, blob((16, 16, 16)), "fixed")
        moving = bridge.volumeNodeFromImage(scene, blob((16, 16, 16), shift=1.5), "moving")
        count = scene.GetNumberOfNodes()
        with small_filesystem(self, read_only=True) as mount:
            # the logic runs studies as jobs in a child process: the job's error carries the same one-line message
            with self.assertRaisesRegex(Exception, f"cannot write the study to {mount / 'study'}"):
                logic.runStudy(fixed, moving, TWO_RUNS, mount / "study", executor="sequential")
            self.assertEqual(list(mount.iterdir()), [])
        self.assertEqual(scene.GetNumberOfNodes(), count)


if __name__ == "__main__":
    unittest.main()
