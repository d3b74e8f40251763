"""Study folders edited by hand (issue 13 §5): detected when opened, then repaired by redoing the affected runs or
refused with a message naming the file, through the library, the command line and the module logic."""

import json
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

import SimpleITK as sitk

from testdata import FAST_SETTINGS as FAST
from test_robustness import blob, folder_digest, run_cli

from SpacingRegistrationLib.study_runner import run_study
from SpacingRegistrationLib.study_spec import StudySpec
from SpacingRegistrationLib.study_store import StudyFolderError, open_study

ROOT = Path(__file__).resolve().parents[1]
SPEC = StudySpec(settings=FAST.replace(lbfgs2={"number_of_iterations": 2}), spacings=(1.0, 2.0), repeats=1,
                 modes=("native-reproducible",))
FIXED, MOVING = blob((16, 16, 16)), blob((16, 16, 16), shift=1.5)


class StudyHandEditTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = Path(tempfile.mkdtemp(prefix="sr-edit-"))
        cls.original = cls.root / "original"
        assert run_study(SPEC, FIXED, MOVING, cls.original, executor="sequential").finished
        cls.run_ids = [run.run_id for run in SPEC.runs()]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def copy(self) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self.root)) / "study"
        shutil.copytree(self.original, folder)
        return folder

    def assert_repaired(self, folder: Path, dropped: int, redone: list):
        store = open_study(folder)
        self.assertEqual(store.dropped_lines, dropped)
        outcome = run_study(SPEC, FIXED, MOVING, folder, executor="sequential")
        self.assertTrue(outcome.finished)
        self.assertEqual(sorted(outcome.completed), sorted(redone))
        for run_id in self.run_ids:  # reproducible mode: the redone runs equal the original ones, bit for bit
            self.assertEqual((folder / "transforms" / f"{run_id}.tfm").read_bytes(),
                             (self.original / "transforms" / f"{run_id}.tfm").read_bytes())
        self.assertEqual(len((folder / "runs.jsonl").read_text().splitlines()), len(self.run_ids))

    def assert_refused(self, folder: Path, call, expected: str, names: Path, error=StudyFolderError):
        before = folder_digest(folder)
        with self.assertRaises(error) as caught:
            call()
        self.assertIn(expected, str(caught.exception))
        self.assertIn(str(names), str(caught.exception))
        self.assertEqual(len(str(caught.exception).splitlines()), 1)
        self.assertEqual(folder_digest(folder), before)

    def test_deleted_transform_is_redone(self):
        folder = self.copy()
        (folder / "transforms" / f"{self.run_ids[1]}.tfm").unlink()
        self.assert_repaired(folder, dropped=1, redone=[self.run_ids[1]])

    def test_replaced_transform_is_redone(self):
        folder = self.copy()
        shutil.copy(folder / "transforms" / f"{self.run_ids[0]}.tfm", folder / "transforms" / f"{self.run_ids[1]}.tfm")
        self.assert_repaired(folder, dropped=1, redone=[self.run_ids[1]])

    def test_identical_duplicate_row_is_dropped(self):
        folder = self.copy()
        lines = (folder / "runs.jsonl").read_text().splitlines(keepends=True)
        (folder / "runs.jsonl").write_text("".join(lines + [lines[0]]))
        self.assert_repaired(folder, dropped=1, redone=[])

    def test_conflicting_duplicate_rows_are_both_dropped_and_redone(self):
        folder = self.copy()
        lines = (folder / "runs.jsonl").read_text().splitlines(keepends=True)
        edited = json.loads(lines[0])
        edited["summary"]["metric_reported"] = -99.0
        (folder / "runs.jsonl").write_text("".join(lines + [json.dumps(edited) + "\n"]))
        self.assert_repaired(folder, dropped=2, redone=[self.run_ids[0]])

    def test_edited_specification_is_refused(self):
        folder = self.copy()
        study_file = folder / "study.json"
        description = json.loads(study_file.read_text())
        description["spec"]["settings"]["histogram_bins"] = 64
        study_file.write_text(json.dumps(description, indent=2))
        edited = StudySpec(settings=SPEC.settings.replace(histogram_bins=64), spacings=SPEC.spacings, repeats=1,
                           modes=SPEC.modes)
        self.assert_refused(folder, lambda: open_study(folder), "was made with other settings (histogram_bins)",
                            folder / "runs.jsonl")
        self.assert_refused(folder, lambda: run_study(edited, FIXED, MOVING, folder, executor="sequential"),
                            "edited by hand", folder / "study.json")
        self.assert_refused(folder, lambda: run_study(SPEC, FIXED, MOVING, folder, executor="sequential"),
                            "holds a different study", folder)

    def test_damaged_study_file_is_refused(self):
        folder = self.copy()
        (folder / "study.json").write_text('{"spec": ')
        self.assert_refused(folder, lambda: run_study(SPEC, FIXED, MOVING, folder, executor="sequential"),
                            "is damaged", folder / "study.json")
        self.assert_refused(folder, lambda: open_study(folder), "is damaged", folder / "study.json")

    def test_replaced_input_is_refused_then_restored_from_the_original_images(self):
        for label, damage in (("replaced", lambda p: sitk.WriteImage(blob((16, 16, 16), shift=3.0), str(p))),
                              ("truncated", lambda p: p.write_bytes(p.read_bytes()[:-10]))):
            with self.subTest(label):
                folder = self.copy()
                moving = folder / "inputs" / "moving.nrrd"
                damage(moving)
                self.assert_refused(folder, lambda: open_study(folder), "is not the image this study was made with",
                                    moving)
                outcome = run_study(SPEC, FIXED, MOVING, folder, executor="sequential")
                self.assertEqual(outcome.store.repaired, ["inputs/moving.nrrd"])
                self.assertEqual(outcome.completed, [])
                self.assertEqual(open_study(folder).repaired, [])  # restored: the folder is whole again

    def test_oblique_images_reopen(self):
        """NRRD stores an oblique direction times the spacing: the inputs read back differ in the last bits and must
        still be recognised as the study's own, for resume and reports."""
        rotation = sitk.VersorTransform((0.0, 0.0, 1.0), 0.3).GetMatrix()
        fixed, moving = sitk.Image(FIXED), sitk.Image(MOVING)
        for image in (fixed, moving):
            image.SetDirection(rotation)
            image.SetSpacing((0.7, 1.3, 2.1))
        folder = Path(tempfile.mkdtemp(dir=self.root)) / "oblique"
        self.assertTrue(run_study(SPEC, fixed, moving, folder, executor="sequential").finished)
        self.assertNotEqual(sitk.ReadImage(str(folder / "inputs" / "fixed.nrrd")).GetDirection(), fixed.GetDirection())
        self.assertEqual(sorted(open_study(folder).rows), sorted(self.run_ids))
        resumed = run_study(SPEC, fixed, moving, folder, executor="sequential")
        self.assertEqual((resumed.completed, sorted(resumed.skipped)), ([], sorted(self.run_ids)))

    def test_command_line(self):
        folder = self.copy()
        (folder / "transforms" / f"{self.run_ids[0]}.tfm").unlink()
        fixed, moving = self.root / "fixed.nrrd", self.root / "moving.nrrd"
        sitk.WriteImage(FIXED, str(fixed))
        sitk.WriteImage(MOVING, str(moving))
        study = ("study", "--fixed", fixed, "--moving", moving, "--output", folder, "--executor", "sequential",
                 "--spec", self.root / "spec.json")
        (self.root / "spec.json").write_text(json.dumps(SPEC.to_dict()))
        status, out, err = run_cli(*study)
        self.assertEqual(status, 0, err)
        self.assertIn("1 run(s) done now, 1 already finished, 0 pending, 1 damaged row(s) dropped and redone", out)
        description = json.loads((folder / "study.json").read_text())
        description["spec"]["spacings"] = [1.0, 3.0]
        (folder / "study.json").write_text(json.dumps(description))
        before = folder_digest(folder)
        status, _, err = run_cli("report", "--study", folder)
        self.assertEqual(status, 2)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(f"{folder / 'runs.jsonl'}: the row of run native-reproducible_s2_r0 is not a run of the "
                      "specification", err)
        self.assertEqual(folder_digest(folder), before)

    def test_module_logic_refuses_an_edited_study_and_leaves_the_scene(self):
        sys.path.insert(0, str(ROOT / "SpacingRegistration"))
        import SpacingRegistration
        from SpacingRegistrationLib.mrml import bridge

        folder = self.copy()
        (folder / "runs.jsonl").write_text((folder / "runs.jsonl").read_text().replace('"repeat": 0', '"repeat": 5', 1))
        scene = bridge.createScene()
        logic = SpacingRegistration.SpacingRegistrationLogic(scene=scene)
        fixed = bridge.volumeNodeFromImage(scene, FIXED, "fixed")
        moving = bridge.volumeNodeFromImage(scene, MOVING, "moving")
        count = scene.GetNumberOfNodes()
        # the logic runs studies as jobs in a child process: the job's error carries the same one-line message
        self.assert_refused(folder, lambda: logic.runStudy(fixed, moving, SPEC, folder, executor="sequential"),
                            "has repeat 5", folder / "runs.jsonl", error=Exception)
        self.assertEqual(scene.GetNumberOfNodes(), count)


if __name__ == "__main__":
    unittest.main()
