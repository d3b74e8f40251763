"""The module's logic on a real MRML scene (slicer-core): registrations and studies through the child-process job
controller, output nodes, control grid, saving, the panel's parameters, the workflow both front ends bind.

Moved out of the module file, which keeps one short self-test (test_module.py runs it).
"""

import testdata  # noqa: F401  (puts SpacingRegistration/ on sys.path)

import json
import logging
import os
import pathlib
import signal
import tempfile
import threading
import time
import unittest

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util

import SpacingRegistration
from SpacingRegistrationLib import images, jobs, parameters, reload_order
from SpacingRegistrationLib.mrml import bridge, logic, study_nodes
from SpacingRegistrationLib.grid import grid_geometry
from SpacingRegistrationLib.settings import RegistrationSettings, SettingsError, from_dict, to_dict
from SpacingRegistrationLib.study_spec import StudySpec
from SpacingRegistrationLib.study_store import open_study
from SpacingRegistrationLib.workflow import Workflow

MODULE_DIRECTORY = pathlib.Path(SpacingRegistration.__file__).resolve().parent


class LogicTest(unittest.TestCase):
    """SpacingRegistrationLogic (ScriptedLoadableModuleLogic + logic.RegistrationLogic) on a fresh scene."""

    #: Few iterations and no scales estimator: each registration takes well under a second.
    FAST = {"scales_estimator": "none", "lbfgs2": {"number_of_iterations": 5}, "reproducible": True}

    @classmethod
    def _fast(cls, **changes) -> RegistrationSettings:
        return from_dict({**cls.FAST, **changes})

    def setUp(self):
        self.scene = bridge.createScene()
        self.logic = SpacingRegistration.SpacingRegistrationLogic(scene=self.scene)

    def _say(self, message):
        logging.info(message)

    # --- data -----------------------------------------------------------------------------------------------------

    @staticmethod
    def _blobImage(shiftVoxels=0.0, size=24, spacing=2.0, origin=(-20.0, 10.0, 5.0)) -> sitk.Image:
        z, y, x = np.mgrid[:size, :size, :size].astype(float)
        c = (size - 1) / 2
        values = (100 * np.exp(-((x - c - shiftVoxels) ** 2 / 18 + (y - c) ** 2 / 30 + (z - c) ** 2 / 24))
                  + 50 * np.exp(-((x - 6) ** 2 + (y - 16) ** 2 + (z - 8) ** 2) / 8))
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.SetSpacing([spacing] * 3)
        image.SetOrigin(origin)
        return image

    def _volumePair(self, movingOrigin=(-20.0, 10.0, 5.0)):
        fixed = bridge.volumeNodeFromImage(self.scene, self._blobImage(0.0), "fixed blob")
        moving = bridge.volumeNodeFromImage(self.scene, self._blobImage(1.5, origin=movingOrigin), "moving blob")
        return fixed, moving

    @staticmethod
    def _domainPoints(transform, count=200, seed=5) -> np.ndarray:
        rng = np.random.default_rng(seed)
        origin = np.asarray(transform.GetTransformDomainOrigin())
        extent = np.asarray(transform.GetTransformDomainPhysicalDimensions())
        direction = np.asarray(transform.GetTransformDomainDirection()).reshape(3, 3)
        return origin + (rng.uniform(0.02, 0.98, (count, 3)) * extent) @ direction.T

    @staticmethod
    def _rasThroughNode(node, lpsPoints) -> np.ndarray:
        transformFromParent = node.GetTransformFromParent()
        return np.array([transformFromParent.TransformPoint(p) for p in bridge.lpsToRas(lpsPoints).tolist()])

    # --- settings <-> parameters ----------------------------------------------------------------------------------

    def test_parameters_cover_every_setting_with_its_default(self):
        self._say("Parameters <-> settings")
        fields = set()
        for name, value in to_dict(RegistrationSettings()).items():
            if isinstance(value, dict):
                fields.update(f"{name}.{sub}" for sub in value)
            elif name == "mesh_size":
                fields.update(f"mesh_size.{axis}" for axis in range(3))
            else:
                fields.add(name)
        self.assertEqual(set(parameters.SETTING_PARAMETERS.values()), fields)
        defaults = parameters.parameter_values_from_settings(RegistrationSettings())
        self.assertEqual(parameters.settings_from_parameter_values(defaults), RegistrationSettings())
        self.assertEqual(parameters.settings_from_parameter_values({}), RegistrationSettings())
        self.assertEqual(set(parameters.PARAMETER_NAMES), {*parameters.NODE_PARAMETERS, *parameters.SETTING_PARAMETERS,
                                                      *parameters.STUDY_PARAMETERS})

    def test_parameter_special_values_and_errors(self):
        values = {**parameters.parameter_values_from_settings(RegistrationSettings()), "samplingSeed": -1, "numberOfThreads": 0,
                  "spacingOverride": 0.0, "lbfgs2LineSearchAccuracy": " 2.5e-3 ", "meshSizeY": 4}
        settings = parameters.settings_from_parameter_values(values)
        self.assertIsNone(settings.sampling_seed)
        self.assertIsNone(settings.number_of_threads)
        self.assertIsNone(settings.spacing_override)
        self.assertEqual(settings.lbfgs2.line_search_accuracy, 0.0025)
        self.assertEqual(settings.mesh_size, (2, 4, 2))
        changed = from_dict({"sampling_seed": 7, "number_of_work_units": 1, "spacing_override": 4.0,
                             "lbfgs2": {"line_search_minimum_step": 3e-17}, "reproducible": True})
        self.assertEqual(parameters.settings_from_parameter_values(parameters.parameter_values_from_settings(changed)), changed)
        with self.assertRaisesRegex(SettingsError, "lbfgs2SolutionAccuracy"):
            parameters.settings_from_parameter_values({"lbfgs2SolutionAccuracy": "small"})
        with self.assertRaisesRegex(SettingsError, "mesh_size"):
            parameters.settings_from_parameter_values({"meshSizeX": 0})

    def test_study_parameters(self):
        self.assertEqual(parameters.parse_spacings("1, 4,10"), (1.0, 4.0, 10.0))
        self.assertEqual(parameters.parse_spacings("0.5 2"), (0.5, 2.0))
        for bad in ("", "1, x"):
            with self.assertRaises(SettingsError):
                parameters.parse_spacings(bad)
        values = {"studySpacings": "1, 4, 10", "studyRepeats": 2, "studyModeNativeDefault": True,
                  "studyModeNormalisedReproducible": True}
        self.assertEqual(parameters.study_modes_from_parameter_values(values), ("native-default", "normalised-reproducible"))
        spec = parameters.study_spec_from_parameter_values(values, self._fast())
        self.assertEqual(spec.spacings, (1.0, 4.0, 10.0))
        self.assertEqual(spec.repeats, 2)
        self.assertEqual(len(spec.runs()), 3 * 2 * 2)

    # --- registration ---------------------------------------------------------------------------------------------

    def test_register_creates_transform_and_diagnosis_table(self):
        self._say("Register a small synthetic pair")
        fixed, moving = self._volumePair()
        fixedArray = slicer.util.arrayFromVolume(fixed).copy()
        movingArray = slicer.util.arrayFromVolume(moving).copy()
        records = []
        result = self.logic.register(fixed, moving, self.FAST, progress=records.append)
        self.assertTrue(result.moved)
        self.assertGreater(len(records), 0)

        transformNode, tableNode = self.logic.lastTransformNode, self.logic.lastTableNode
        self.assertIsNotNone(transformNode)
        self.assertEqual(transformNode.GetClassName(), "vtkMRMLBSplineTransformNode")
        self.assertIs(transformNode.GetScene(), self.scene)
        points = self._domainPoints(result.transform)
        expected = bridge.lpsToRas([result.transform.TransformPoint(p) for p in points.tolist()])
        self.assertGreater(np.abs(expected - bridge.lpsToRas(points)).max(), 0.1)  # the transform moves points
        error = np.linalg.norm(self._rasThroughNode(transformNode, points) - expected, axis=1)
        self.assertLess(error.max(), 1e-6)

        rows = self.logic.diagnosisFromTableNode(tableNode)
        self.assertGreater(len(rows), 10)
        self.assertEqual(dict(rows)["moved"], "True")
        self.assertEqual(self.logic.warningsFromTableNode(tableNode), result.warnings)
        self.assertEqual(json.loads(tableNode.GetAttribute(logic.SUMMARY_ATTRIBUTE))["moved"], True)
        self.assertIs(transformNode.GetNodeReference(logic.DIAGNOSIS_REFERENCE_ROLE), tableNode)

        # the user's volume nodes are untouched
        self.assertIsNone(fixed.GetTransformNodeID())
        self.assertIsNone(moving.GetTransformNodeID())
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(fixed), fixedArray)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(moving), movingArray)

        # running again into the same nodes refills them instead of adding nodes
        count = self.scene.GetNumberOfNodes()
        self.logic.register(fixed, moving, self.FAST, outputTransformNode=transformNode, outputTableNode=tableNode)
        self.assertEqual(self.scene.GetNumberOfNodes(), count)
        self.assertEqual(len(self.logic.diagnosisFromTableNode(tableNode)), len(rows))

    def test_study_creates_tables_charts_spread_maps_and_report(self):
        self._say("Run a small study on the volumes")
        fixed, moving = self._volumePair()
        spec = StudySpec(settings=self.logic.settingsFrom(self.FAST), spacings=(1.0, 4.0), repeats=2,
                         modes=("native-default", "normalised-reproducible"))
        with tempfile.TemporaryDirectory() as folder:
            cancel = threading.Event()
            runs = []

            def progress(event):
                if event["event"] == "run":
                    runs.append(event["run_id"])
                    if len(runs) == 3:
                        cancel.set()

            first, nodes = self.logic.runStudy(fixed, moving, spec, folder, progress=progress, cancel=cancel)
            self.assertEqual(first.state, jobs.CANCELLED)
            self.assertEqual(nodes, {})
            kept = sorted(open_study(folder).rows)
            self.assertGreaterEqual(len(kept), 3)  # finished runs are kept (a fourth may finish before the stop)
            self.assertLess(len(kept), 8)
            self.assertTrue(set(runs) <= set(kept))
            second, nodes = self.logic.runStudy(fixed, moving, spec, folder)
            self.assertEqual(second.state, jobs.FINISHED)
            self.assertTrue(second.result["finished"])
            self.assertEqual(second.result["skipped"], len(kept))
            groups = nodes["groups"]
            self.assertEqual(groups.GetNumberOfRows(), 4)
            self.assertEqual(nodes["runs"].GetNumberOfRows(), 8)
            self.assertEqual(len(nodes["charts"]), 3)
            self.assertEqual(nodes["charts"][0].GetNumberOfPlotSeriesNodes(), 2)
            self.assertEqual(len(nodes["spreadMaps"]), 4)
            self.assertEqual(nodes["spreadMaps"][0].GetImageData().GetDimensions(),
                             fixed.GetImageData().GetDimensions())
            self.assertTrue(pathlib.Path(groups.GetAttribute(study_nodes.REPORT_ATTRIBUTE)).is_file())
            for node in [groups, nodes["runs"], *nodes["charts"], *nodes["spreadMaps"]]:
                self.assertIs(node.GetScene(), self.scene)

            path = bridge.saveSceneToMrb(self.scene, pathlib.Path(folder) / "study.mrb")
            loaded = bridge.loadSceneFromMrb(path)
        loadedGroups = loaded.GetNodeByID(groups.GetID())
        self.assertEqual([loadedGroups.GetCellText(r, c) for r in range(4) for c in range(5)],
                         [groups.GetCellText(r, c) for r in range(4) for c in range(5)])
        self.assertEqual(loadedGroups.GetAttribute(study_nodes.REPORT_ATTRIBUTE),
                         groups.GetAttribute(study_nodes.REPORT_ATTRIBUTE))
        chart = loaded.GetNodeByID(nodes["charts"][0].GetID())
        self.assertEqual(chart.GetNumberOfPlotSeriesNodes(), 2)
        spread = loaded.GetNodeByID(nodes["spreadMaps"][0].GetID())
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(spread),
                                      slicer.util.arrayFromVolume(nodes["spreadMaps"][0]))

    def test_spacing_override_transform_is_in_volume_units(self):
        self._say("Spacing override: the output transform maps the volumes themselves")
        fixed, moving = self._volumePair(movingOrigin=(-17.0, 8.0, 6.0))
        settings = self._fast(spacing_override=0.5)
        fixedImage, movingImage = self.logic.imagesFromVolumeNodes(fixed, moving)
        result = self.logic.computeRegistration(fixedImage, movingImage, settings)
        self.assertEqual(result.spacing, (0.5, 0.5, 0.5))
        transformNode, tableNode = self.logic.createOutputNodes(result, fixed, moving)
        self.assertEqual(self.logic.warningsFromTableNode(tableNode), result.warnings)
        self.assertIn("output transform units", dict(self.logic.diagnosisFromTableNode(tableNode)))

        # T(p) = O_m + f (T_override(O_f + (p - O_f) / f) - O_m) with f = volume spacing / override spacing
        factor, fixedOrigin, movingOrigin = 2.0 / 0.5, np.array(fixedImage.GetOrigin()), np.array(movingImage.GetOrigin())
        converted = bridge.sitkBSplineFromTransformNode(transformNode)
        points = self._domainPoints(converted)
        expected = np.array([movingOrigin + factor * (np.array(result.transform.TransformPoint(
            (fixedOrigin + (p - fixedOrigin) / factor).tolist())) - movingOrigin) for p in points])
        error = np.linalg.norm(self._rasThroughNode(transformNode, points) - bridge.lpsToRas(expected), axis=1)
        self.assertLess(error.max(), 1e-6)
        bounds = [converted.GetTransformDomainOrigin(), converted.GetTransformDomainPhysicalDimensions()]
        self.assertGreater(min(bounds[1]), 24 * 2.0)  # the domain covers the volume, not the override copy

    def test_bad_input_raises_clear_errors_and_adds_no_nodes(self):
        self._say("Bad inputs")
        fixed, moving = self._volumePair()
        constant = bridge.volumeNodeFromImage(self.scene, sitk.Image([24, 24, 24], sitk.sitkFloat32), "constant")
        count = self.scene.GetNumberOfNodes()
        with self.assertRaisesRegex(images.InputImageError, "constant"):
            self.logic.register(constant, moving, self.FAST)
        with self.assertRaisesRegex(SettingsError, "mesh_size"):
            self.logic.register(fixed, moving, {**self.FAST, "mesh_size": [0, 2, 2]})
        with self.assertRaisesRegex(SettingsError, "mesh_size"):
            self.logic.showControlGrid(fixed, meshSize=(0, 2, 2))
        with self.assertRaisesRegex(ValueError, "moving volume is not set"):
            self.logic.register(fixed, None, self.FAST)
        emptyVolume = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
        count += 1
        with self.assertRaisesRegex(ValueError, "no image data"):
            self.logic.register(fixed, emptyVolume, self.FAST)
        self.assertEqual(self.scene.GetNumberOfNodes(), count)

    # --- control grid ---------------------------------------------------------------------------------------------

    def test_show_control_grid_counts_and_replaces(self):
        self._say("Control grid")
        fixed, _moving = self._volumePair()
        count = self.scene.GetNumberOfNodes()
        nodes, geometry = self.logic.showControlGrid(fixed, meshSize=(2, 3, 2))
        image = bridge.imageFromVolumeNode(fixed)
        reference = grid_geometry(sitk.BSplineTransformInitializer(image, [2, 3, 2]), image)
        self.assertEqual(geometry.points_per_axis, (5, 6, 5))
        self.assertEqual((geometry.inside_count, geometry.outside_count),
                         (reference.inside_count, reference.outside_count))
        self.assertEqual(geometry.inside_count + geometry.outside_count, 5 * 6 * 5)
        inside = nodes["controlPointsInside"].GetPolyData().GetNumberOfPoints()
        outside = nodes["controlPointsOutside"].GetPolyData().GetNumberOfPoints()
        self.assertEqual(inside * geometry.outside_count, outside * geometry.inside_count)  # same points per sphere
        self.assertEqual(len(nodes), len(bridge.GRID_COLORS))
        afterFirst = self.scene.GetNumberOfNodes()
        self.assertEqual(afterFirst, count + 2 * len(nodes))  # models and their display nodes

        nodes, geometry = self.logic.showControlGrid(fixed, settings={"mesh_size": [2, 2, 2]})
        self.assertEqual(self.scene.GetNumberOfNodes(), afterFirst)  # replaced, not piled up
        self.assertEqual(geometry.points_per_axis, (5, 5, 5))
        self.assertTrue(all(self.scene.IsNodePresent(n) for n in nodes.values()))

        spacingGrid = self.logic.controlGridGeometry(fixed, settings={"grid_specification": "spacing_mm",
                                                                      "grid_spacing_mm": 12.0})
        self.assertEqual(spacingGrid.mesh_size, (4, 4, 4))  # 48 mm extent / 12 mm
        self.assertEqual(self.logic.hideControlGrid(scene=self.scene), len(nodes))
        self.assertEqual(self.scene.GetNumberOfNodes(), count)

    def test_geometry_image_matches_the_volume(self):
        fixed, _moving = self._volumePair()
        geometryImage = self.logic.geometryImageFromVolumeNode(fixed)
        image = bridge.imageFromVolumeNode(fixed)
        self.assertEqual(geometryImage.GetSize(), image.GetSize())
        np.testing.assert_allclose(geometryImage.GetOrigin(), image.GetOrigin(), atol=1e-12)
        np.testing.assert_allclose(geometryImage.GetSpacing(), image.GetSpacing(), atol=1e-12)
        np.testing.assert_allclose(geometryImage.GetDirection(), image.GetDirection(), atol=1e-12)

    # --- saving -----------------------------------------------------------------------------------------------------

    def test_outputs_round_trip_through_mrb(self):
        self._say("Save and reload the outputs (.mrb)")
        fixed, moving = self._volumePair()
        result = self.logic.register(fixed, moving, self.FAST)
        transformNode, tableNode = self.logic.lastTransformNode, self.logic.lastTableNode
        self.logic.showControlGrid(fixed)
        rows = self.logic.diagnosisFromTableNode(tableNode)
        with tempfile.TemporaryDirectory(prefix="SpacingRegistrationTest-") as directory:
            path = bridge.saveSceneToMrb(self.scene, pathlib.Path(directory) / "outputs.mrb")
            loaded = bridge.loadSceneFromMrb(path)
        loadedTransform = loaded.GetFirstNodeByName(transformNode.GetName())
        loadedTable = loaded.GetFirstNodeByName(tableNode.GetName())
        self.assertIsNotNone(loadedTransform)
        self.assertIsNotNone(loadedTable)
        points = self._domainPoints(result.transform, 100)
        error = np.linalg.norm(self._rasThroughNode(loadedTransform, points)
                               - self._rasThroughNode(transformNode, points), axis=1)
        self.assertLess(error.max(), 1e-6)
        self.assertEqual(self.logic.diagnosisFromTableNode(loadedTable), rows)
        self.assertEqual(json.loads(loadedTable.GetAttribute(logic.SUMMARY_ATTRIBUTE))["stop_reason"], result.stop_reason)
        self.assertEqual(loadedTransform.GetNodeReference(logic.DIAGNOSIS_REFERENCE_ROLE).GetName(), tableNode.GetName())
        gridModels = [loaded.GetNthNodeByClass(i, "vtkMRMLModelNode")
                      for i in range(loaded.GetNumberOfNodesByClass("vtkMRMLModelNode"))]
        self.assertEqual(sum(m.GetAttribute(logic.GRID_ATTRIBUTE) == logic.GRID_NAME_PREFIX for m in gridModels),
                         len(bridge.GRID_COLORS))

    # --- module -----------------------------------------------------------------------------------------------------

    def test_library_reload_order_puts_dependencies_first(self):
        order = reload_order.submodules_in_dependency_order()
        libraryDirectory = MODULE_DIRECTORY / "SpacingRegistrationLib"
        names = {".".join(p.relative_to(libraryDirectory).with_suffix("").parts) for p in libraryDirectory.rglob("*.py")}
        self.assertEqual(set(order), {n.removesuffix(".__init__") for n in names} - {"__init__"})
        for before, after in (("settings", "grid"), ("grid", "registration"), ("diagnostics", "registration"),
                              ("registration", "describe"), ("grid", "mrml.bridge"), ("mrml", "mrml.bridge"),
                              ("mrml.bridge", "mrml.study_nodes"), ("jobs", "mrml.logic"), ("parameters", "workflow")):
            self.assertLess(order.index(before), order.index(after), (before, after))

    def test_module_description(self):
        class Parent:
            path = str(MODULE_DIRECTORY / "SpacingRegistration.py")

        parent = Parent()
        SpacingRegistration.SpacingRegistration(parent)
        self.assertEqual(parent.title, "Spacing Registration")
        self.assertEqual(parent.categories, ["Registration"])


def childrenOf(pid: int) -> dict:
    """pid -> command line of the live processes whose parent is ``pid`` (Linux /proc)."""
    children = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return children


#: A registration that runs for minutes unless stopped (gradient descent, tiny steps, no convergence test).
LONG = {"scales_estimator": "none", "optimizer": "gradient_descent",
        "gradient_descent": {"number_of_iterations": 1000000, "learning_rate": 1e-6, "convergence_minimum_value": 1e-30,
                             "estimate_learning_rate": "never"}}


class LogicJobTest(unittest.TestCase):
    """The logic and the workflow over child-process jobs: what a panel or the web page sees."""

    def setUp(self):
        self.scene = bridge.createScene()
        self.logic = SpacingRegistration.SpacingRegistrationLogic(scene=self.scene)
        pair = testdata.pet_like_pair()
        self.fixed = bridge.volumeNodeFromImage(self.scene, pair.fixed, "fixed")
        self.moving = bridge.volumeNodeFromImage(self.scene, pair.moving, "moving")

    def _pollUntilEnd(self, workflow, seconds=120):
        deadline = time.monotonic() + seconds
        while workflow.registrationRunning or workflow.studyRunning:
            self.assertLess(time.monotonic(), deadline, "the job did not end")
            workflow.poll()
            time.sleep(0.05)

    def test_workflow_registration_reports_progress_and_makes_nodes(self):
        workflow = Workflow(self.logic)
        count = self.scene.GetNumberOfNodes()
        settings = from_dict({"scales_estimator": "none", "lbfgs2": {"number_of_iterations": 4}})
        self.assertTrue(workflow.startRegistration(self.fixed, self.moving, settings))
        self.assertEqual(workflow.status, "Initialising...")
        statuses = set()
        while workflow.registrationRunning:
            workflow.poll()
            statuses.add(workflow.status)
            time.sleep(0.02)
        self.assertTrue(any(s.startswith("iteration ") for s in statuses), statuses)
        self.assertEqual(workflow.error, "")
        self.assertTrue(workflow.status.startswith("Finished: "), workflow.status)
        self.assertEqual(workflow.progress, 1.0)
        transformNode, tableNode = workflow.outputs
        self.assertIs(transformNode.GetScene(), self.scene)
        self.assertEqual(self.scene.GetNumberOfNodes(), count + 3)  # transform, its display node, table
        self.assertIn("control points inside the image", workflow.gridSummary)
        self.assertEqual(dict(workflow.diagnosis)["moved"], "True")
        # The result page the child wrote is kept outside its (removed) job folder, and the table points to it.
        page = workflow.resultPage
        self.assertTrue(page.is_file())
        self.assertEqual(page.parent, self.logic.resultPagesFolder)
        self.assertEqual(tableNode.GetAttribute(logic.RESULT_PAGE_ATTRIBUTE), str(page))
        text = page.read_text()
        self.assertIn('data-moved="true" data-folding="0"', text)
        self.assertEqual(text.count('class="colour-bar"'), 2)
        workflow.showDiagnosisTable(None)
        self.assertIsNone(workflow.resultPage)
        workflow.showDiagnosisTable(tableNode)
        self.assertEqual(workflow.resultPage, page)
        page.unlink()  # a page cleaned away since: the table has none to show
        workflow.showDiagnosisTable(tableNode)
        self.assertIsNone(workflow.resultPage)

    def test_sigkilled_child_gives_one_clear_error_and_no_node(self):
        workflow = Workflow(self.logic)
        count = self.scene.GetNumberOfNodes()
        self.assertTrue(workflow.startRegistration(self.fixed, self.moving, from_dict(LONG)))
        job = workflow.registrationJob
        deadline = time.monotonic() + 60
        while not any(e["event"] == "iteration" for e in [job.last_progress or {"event": ""}]):
            workflow.poll()
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)
        os.kill(job.process.pid, signal.SIGKILL)
        self._pollUntilEnd(workflow, 10)
        self.assertEqual(job.state, jobs.FAILED)
        self.assertIn("Registration failed: The registration process was killed (SIGKILL", workflow.error)
        self.assertIn("left no result", workflow.error)
        self.assertEqual(workflow.status, "Registration failed.")
        self.assertIsNone(workflow.outputs)
        self.assertEqual(self.scene.GetNumberOfNodes(), count)
        with self.assertRaises(jobs.JobError):
            job.registration_result()

    def test_cancelled_registration_adds_nothing(self):
        workflow = Workflow(self.logic)
        count = self.scene.GetNumberOfNodes()
        workflow.startRegistration(self.fixed, self.moving, from_dict(LONG))
        while workflow.registrationJob.last_progress is None:
            workflow.poll()
            time.sleep(0.02)
        started = time.monotonic()
        workflow.cancelRegistration()
        self._pollUntilEnd(workflow, 5)
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertTrue(workflow.status.startswith("Cancelled: no result"), workflow.status)
        self.assertEqual(self.scene.GetNumberOfNodes(), count)

    def test_bad_input_is_refused_before_a_process_starts(self):
        workflow = Workflow(self.logic)
        self.assertFalse(workflow.startRegistration(self.fixed, None, RegistrationSettings()))
        self.assertEqual(workflow.error, "Cannot start the registration: The moving volume is not set.")
        self.assertFalse(workflow.registrationRunning)
        with self.assertRaisesRegex(SettingsError, "histogram_bins"):
            self.logic.startRegistration(self.fixed, self.moving, {"histogram_bins": 2})

    def test_study_from_the_logic_runs_on_several_processes(self):
        spec = StudySpec(settings=from_dict({"scales_estimator": "none", "lbfgs2": {"number_of_iterations": 40}}),
                         spacings=(1.0, 2.0, 3.0, 4.0), repeats=2, modes=("native-reproducible",))
        with tempfile.TemporaryDirectory() as folder:
            job = self.logic.startStudy(self.fixed, self.moving, spec, pathlib.Path(folder) / "study")
            self.addCleanup(job.remove_folder)
            workers, plan = set(), None
            while not job.done:
                for event in job.poll():
                    plan = event if event["event"] == "plan" else plan
                workers |= {pid for pid, command in childrenOf(job.process.pid).items() if "spawn_main" in command}
                time.sleep(0.05)
            job.poll()
            self.assertEqual(job.state, jobs.FINISHED, job.error)
            self.assertEqual((plan["executor"], plan["workers"]), ("pool", os.cpu_count()))
            self.assertGreaterEqual(len(workers), 2, "the study's runs were spread over pool worker processes")
            store, analysis, reportPaths, nodes = self.logic.finishStudy(job)
            self.assertEqual(len(store.rows), 8)
            self.assertEqual(nodes["runs"].GetNumberOfRows(), 8)
            self.assertTrue(pathlib.Path(reportPaths["html"]).is_file())

    def test_workflow_study_texts_and_nodes(self):
        workflow = Workflow(self.logic)
        spec = StudySpec(settings=from_dict({"scales_estimator": "none", "lbfgs2": {"number_of_iterations": 3}}),
                         spacings=(1.0, 4.0), repeats=2, modes=("native-reproducible",))
        with tempfile.TemporaryDirectory() as folder:
            self.assertTrue(workflow.startStudy(self.fixed, self.moving, spec, pathlib.Path(folder) / "study"))
            self.assertIn("Starting the study (4 runs)", workflow.studyStatus)
            statuses = []
            while workflow.studyRunning:
                if workflow.poll():
                    statuses.append(workflow.studyStatus)
                time.sleep(0.02)
            self.assertEqual(workflow.error, "")
            self.assertIn(f"0/4 runs on a pool of {os.cpu_count()} processes", statuses)
            self.assertTrue(any(s.startswith("4/4 runs (") for s in statuses), statuses)
            self.assertRegex(workflow.studyStatus, r"^4 runs; report: .*report\.html$")
            self.assertEqual(workflow.studyProgress, 1.0)
            self.assertEqual(workflow.study["nodes"]["runs"].GetNumberOfRows(), 4)
            self.assertEqual(workflow.warnings, [s["text"] for s in workflow.study["analysis"].statements])
            self.assertIs(workflow.study["nodes"]["groups"].GetScene(), self.scene)
