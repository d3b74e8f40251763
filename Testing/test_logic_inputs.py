"""The fixed-image mask and the initial transform through the Logic (real slicer-core scene and nodes), the job's
child process and the Workflow."""

import testdata  # noqa: F401  (puts SpacingRegistration/ on sys.path)

import json
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

import SpacingRegistration
from SpacingRegistrationLib.mrml import bridge, logic

#: A shift of the moving blob far beyond what 5 BSpline iterations recover (voxels of 2 mm, along LPS x).
SHIFT_VOXELS, SPACING = 4.0, 2.0


def blob(shiftVoxels=0.0, size=32):
    z, y, x = np.mgrid[:size, :size, :size].astype(float)
    c = (size - 1) / 2
    values = (100 * np.exp(-((x - c - shiftVoxels) ** 2 / 18 + (y - c) ** 2 / 30 + (z - c) ** 2 / 24))
              + 50 * np.exp(-((x - 12 - shiftVoxels) ** 2 + (y - 20) ** 2 + (z - 12) ** 2) / 8))
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing([SPACING] * 3)
    image.SetOrigin((-20.0, 10.0, 5.0))
    return image


class LogicInputsTest(unittest.TestCase):
    FAST = {"scales_estimator": "none", "lbfgs2": {"number_of_iterations": 5}, "reproducible": True}

    def setUp(self):
        self.scene = bridge.createScene()
        self.logic = SpacingRegistration.SpacingRegistrationLogic(scene=self.scene)
        self.fixed = bridge.volumeNodeFromImage(self.scene, blob(0.0), "fixed")
        self.moving = bridge.volumeNodeFromImage(self.scene, blob(SHIFT_VOXELS), "moving")
        # fixed-to-moving in LPS is +SHIFT mm along x, i.e. -SHIFT mm along R in RAS
        self.shiftRas = np.array([-SHIFT_VOXELS * SPACING, 0.0, 0.0])

    def _linearNode(self, translationRas, name="initial"):
        node = self.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
        matrix = vtk.vtkMatrix4x4()
        for axis in range(3):
            matrix.SetElement(axis, 3, translationRas[axis])
        node.SetMatrixTransformFromParent(matrix)
        return node

    def _labelNode(self, low: int, high: int):
        """A labelmap on the fixed volume's geometry, 1 inside the cube [low, high) on every axis."""
        inside = np.zeros(slicer.util.arrayFromVolume(self.fixed).shape, np.uint8)
        inside[low:high, low:high, low:high] = 1
        label = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "label")
        slicer.util.updateVolumeFromArray(label, inside)
        label.CopyOrientation(self.fixed)
        return label, inside

    def _centralPointsRas(self):
        rng = np.random.default_rng(3)
        lps = np.array([-20.0, 10.0, 5.0]) + rng.uniform(26, 36, size=(100, 3))  # the main blob
        return lps, bridge.lpsToRas(lps)

    def _errorMm(self, node):
        _, ras = self._centralPointsRas()
        through = np.array([node.GetTransformFromParent().TransformPoint(p) for p in ras.tolist()])
        return np.linalg.norm(through - (ras + self.shiftRas), axis=1).mean()

    def test_initial_affine_from_node_is_fixed_to_moving_lps(self):
        node = self._linearNode(self.shiftRas)
        affine = bridge.sitkAffineFromTransformNode(node)
        np.testing.assert_allclose(affine.TransformPoint((1.0, 2.0, 3.0)), (1.0 + SHIFT_VOXELS * SPACING, 2.0, 3.0))

    def test_exact_initial_shift_reaches_child_and_output_holds_whole_mapping(self):
        without = self.logic.register(self.fixed, self.moving, self.FAST)
        errorWithout = self._errorMm(self.logic.lastTransformNode)
        initial = self._linearNode(self.shiftRas)
        result = self.logic.register(self.fixed, self.moving, self.FAST, initialTransformNode=initial)
        node = self.logic.lastTransformNode
        self.assertIsNotNone(result.initial_transform)
        self.assertEqual(node.GetClassName(), "vtkMRMLBSplineTransformNode")
        errorWith = self._errorMm(node)
        self.assertGreater(errorWithout, 1.5, (errorWithout, without.stop_reason))
        self.assertLess(errorWith, 0.6)
        self.assertLess(errorWith, errorWithout / 3, (errorWith, errorWithout))
        # the node is the engine's whole mapping initial(bspline(x)), point for point
        lps, ras = self._centralPointsRas()
        expected = bridge.lpsToRas([result.mapping.TransformPoint(p) for p in lps.tolist()])
        through = np.array([node.GetTransformFromParent().TransformPoint(p) for p in ras.tolist()])
        self.assertLess(np.abs(through - expected).max(), 1e-4)
        self.assertIsNone(initial.GetParentTransformNode())  # the user's node is untouched
        with tempfile.TemporaryDirectory() as folder:  # saved with the scene (.h5) and read back the same
            bridge.saveSceneToMrb(self.scene, Path(folder) / "scene.mrb")
            reloaded = bridge.loadSceneFromMrb(Path(folder) / "scene.mrb").GetFirstNodeByName(node.GetName())
            self.assertAlmostEqual(self._errorMm(reloaded), errorWith, places=6)

    def test_initial_transform_and_mask_files_are_in_the_job_folder(self):
        initial = self._linearNode(self.shiftRas)
        mask = slicer.util.arrayFromVolume(self.fixed) > 20
        label = bridge.volumeNodeFromImage(self.scene, sitk.GetImageFromArray(mask.astype(np.uint8)), "label")
        label.CopyOrientation(self.fixed)
        with tempfile.TemporaryDirectory() as folder:
            job = self.logic.startRegistration(self.fixed, self.moving, self.FAST, jobFolder=folder, maskNode=label,
                                               initialTransformNode=initial)
            job.wait(120)
            self.assertEqual(job.state, "finished", job.log_tail())
            written = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(folder) / "mask.nrrd")))
            np.testing.assert_array_equal(written.astype(bool), mask)
            self.assertTrue((Path(folder) / "initial.tfm").is_file())
            result = job.registration_result()
            self.assertTrue(result.masked)
            self.assertTrue((Path(folder) / "output" / "bspline.tfm").is_file())

    def test_mask_changes_the_result_and_segmentation_equals_its_labelmap(self):
        label, inside = self._labelNode(6, 18)
        plain = self.logic.register(self.fixed, self.moving, self.FAST)
        masked = self.logic.register(self.fixed, self.moving, self.FAST, maskNode=label)
        self.assertTrue(masked.masked)
        self.assertFalse(plain.masked)
        self.assertNotEqual(plain.transform.GetParameters(), masked.transform.GetParameters())

        segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
        self.assertTrue(slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, segmentation))
        nodesBefore = self.scene.GetNumberOfNodes()
        image = self.logic.maskImageFromNode(segmentation, self.fixed)
        self.assertEqual(self.scene.GetNumberOfNodes(), nodesBefore)  # the scratch labelmap is gone
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image) != 0, inside.astype(bool))

    def test_wrong_node_kinds_are_one_clear_error_and_add_no_node(self):
        table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", "not a mask")
        bspline = self.scene.AddNewNodeByClass("vtkMRMLBSplineTransformNode", "not linear")
        bspline.SetAndObserveTransformFromParent(
            bridge.bsplineTransformNodeFromSitk(slicer.vtkMRMLScene(), sitk.BSplineTransformInitializer(
                blob(), [2, 2, 2]), "b").GetTransformFromParent())
        nodesBefore = self.scene.GetNumberOfNodes()
        with self.assertRaisesRegex(ValueError, "The mask must be a labelmap.*vtkMRMLTableNode"):
            self.logic.register(self.fixed, self.moving, self.FAST, maskNode=table)
        with self.assertRaisesRegex(ValueError, "initial transform must be a linear transform node.*non-linear"):
            self.logic.register(self.fixed, self.moving, self.FAST, initialTransformNode=bspline)
        with self.assertRaisesRegex(ValueError, "initial transform must be a linear.*vtkMRMLScalarVolumeNode"):
            self.logic.register(self.fixed, self.moving, self.FAST, initialTransformNode=self.moving)
        self.assertEqual(self.scene.GetNumberOfNodes(), nodesBefore)

    def test_workflow_passes_mask_and_initial_transform(self):
        from SpacingRegistrationLib.workflow import Workflow

        label, inside = self._labelNode(8, 24)
        with tempfile.TemporaryDirectory() as folder:
            workflow = Workflow(self.logic, jobsFolder=folder)
            self.assertTrue(workflow.startRegistration(self.fixed, self.moving, self.FAST, maskNode=label,
                                                       initialTransformNode=self._linearNode(self.shiftRas)),
                            workflow.error)
            deadline = time.monotonic() + 120
            while workflow.registrationRunning and time.monotonic() < deadline:
                workflow.poll()
                time.sleep(0.05)
            self.assertIsNotNone(workflow.outputs, workflow.error)
            self.assertLess(self._errorMm(workflow.outputs[0]), 0.6)
            self.assertEqual(json.loads(workflow.outputs[1].GetAttribute(logic.SUMMARY_ATTRIBUTE))["masked"], True)
            self.assertFalse(workflow.startRegistration(self.fixed, self.moving, self.FAST,
                                                        initialTransformNode=self.moving))
            self.assertIn("linear transform node", workflow.error)

    def test_study_from_the_workflow_stores_and_uses_mask_and_initial_transform(self):
        from SpacingRegistrationLib.study_spec import StudySpec
        from SpacingRegistrationLib.study_store import StudyFolderError
        from SpacingRegistrationLib.workflow import Workflow

        label, inside = self._labelNode(8, 24)
        initial = self._linearNode(self.shiftRas)
        spec = StudySpec(settings=self.logic.settingsFrom(self.FAST), spacings=(2.0,), repeats=1,
                         modes=("native-reproducible",))
        with tempfile.TemporaryDirectory() as folder:
            study = Path(folder) / "study"
            workflow = Workflow(self.logic)
            self.assertTrue(workflow.startStudy(self.fixed, self.moving, spec, study, executor="sequential",
                                                maskNode=label, initialTransformNode=initial), workflow.error)
            deadline = time.monotonic() + 120
            while workflow.studyRunning and time.monotonic() < deadline:
                workflow.poll()
                time.sleep(0.05)
            self.assertIsNotNone(workflow.study, workflow.error)
            store = workflow.study["store"]
            np.testing.assert_array_equal(store.mask_array(), inside.astype(bool))  # stored as the CLI stores it
            stored = store.initial_transform()
            np.testing.assert_allclose(stored.TransformPoint((1.0, 2.0, 3.0)), (1.0 + SHIFT_VOXELS * SPACING, 2.0, 3.0),
                                       atol=1e-9)
            (row,) = store.rows.values()
            self.assertTrue(row["summary"]["masked"])  # every run used them
            self.assertIsNotNone(row["summary"]["initial_transform"])
            # the exact initial shift leaves the BSpline little to do: the whole mapping recovers the shift
            self.assertAlmostEqual(row["summary"]["displacement"]["mean_voxels"], SHIFT_VOXELS, delta=0.3)

            # Another initial transform on the same folder: one error, nothing started, the study unchanged.
            before = store.runs_path.read_bytes()
            other = self._linearNode(self.shiftRas / 2, "other")
            self.assertFalse(workflow.startStudy(self.fixed, self.moving, spec, study, maskNode=label,
                                                 initialTransformNode=other))
            self.assertIn("another initial transform", workflow.error)
            self.assertFalse(workflow.studyRunning)
            self.assertEqual(store.runs_path.read_bytes(), before)
            with self.assertRaisesRegex(ValueError, "The mask must be a labelmap"):
                self.logic.startStudy(self.fixed, self.moving, spec, Path(folder) / "new", maskNode=initial)
            self.assertFalse((Path(folder) / "new").exists())
            with self.assertRaises(StudyFolderError):
                self.logic.startStudy(self.fixed, self.moving, spec, study, initialTransformNode=other)


if __name__ == "__main__":
    unittest.main()
