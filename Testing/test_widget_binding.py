"""The panel's binding code (SpacingRegistrationWidget) driven headless: stand-ins for the Qt widgets and the parameter
node, the real logic, workflow, child-process jobs and MRML scene.

Desktop Slicer cannot run here, so the widget's setup (loadUI, connectGui, QTimer) is not exercised; what is left of
the widget (its button, timer and refresh handlers) runs here against plain attribute holders, so a typo or a wrong
state in that code fails a test. Only what only the Slicer application provides (error dialogs, the plots module's
layout switch) is recorded instead of shown.
"""

import testdata

import os
import shutil
import tempfile
import time
import types
import unittest
from pathlib import Path
from unittest import mock

import slicer
import slicer.util

import SpacingRegistration
from SpacingRegistrationLib import parameters
from SpacingRegistrationLib.mrml import bridge
from SpacingRegistrationLib.settings import RegistrationSettings
from SpacingRegistrationLib.workflow import Workflow


class Widget(types.SimpleNamespace):
    """A Qt widget's properties as plain attributes, plus the calls the widget code makes."""

    def setRange(self, low, high):
        self.range = (low, high)

    def setValue(self, value):
        self.value = value

    def setVisible(self, visible):
        self.visible = visible

    def clear(self):
        self.items = []

    def addItem(self, text):
        self.items.append(text)


class Timer:
    def __init__(self):
        self.active = False

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


class ParameterNode(types.SimpleNamespace):
    """What the widget reads and writes of SpacingRegistrationParameterNode."""

    def getValue(self, name):
        return getattr(self, name)

    def setValue(self, name, value):
        setattr(self, name, value)


def ui():
    names = ("applyButton", "showGridButton", "hideGridButton", "runStudyButton", "openReportButton", "progressBar",
             "statusLabel", "studyProgressBar", "studyStatusLabel", "gridCountsLabel", "gridWarningsLabel",
             "warningsTextEdit", "resultsCollapsibleButton", "runAccuracyCheckButton", "accuracyProgressBar",
             "accuracyStatusLabel", "accuracyRankingTextEdit", "adviceTextEdit", "recommendationComboBox",
             "applyRecommendationButton", "openResultPageButton")
    return types.SimpleNamespace(**{name: Widget(text="", enabled=False, collapsed=True, plainText="", items=[],
                                                 currentIndex=0) for name in names})


class WidgetBindingTest(unittest.TestCase):
    def setUp(self):
        self.scene = bridge.createScene()
        pair = testdata.pet_like_pair()
        fixed = bridge.volumeNodeFromImage(self.scene, pair.fixed, "fixed")
        moving = bridge.volumeNodeFromImage(self.scene, pair.moving, "moving")
        self.folder = Path(tempfile.mkdtemp(prefix="spacingreg-widget-"))
        self.addCleanup(shutil.rmtree, self.folder, True)
        values = parameters.parameter_values_from_settings(RegistrationSettings())
        values.update(scalesEstimator="none", lbfgs2NumberOfIterations=3, studySpacings="1, 4", studyRepeats=1,
                      studyModeNativeDefault=False, studyModeNativeReproducible=True, studyModeNormalisedDefault=False,
                      studyModeNormalisedReproducible=False)
        self.node = ParameterNode(fixedVolume=fixed, movingVolume=moving, outputTransform=None, diagnosisTable=None,
                                  fixedMask=None, initialTransform=None,
                                  studyFolder=self.folder / "study", **values)
        widget = SpacingRegistration.SpacingRegistrationWidget.__new__(SpacingRegistration.SpacingRegistrationWidget)
        widget.ui, widget._parameterNode, widget._pollTimer, widget._shownErrors = ui(), self.node, Timer(), 0
        widget._shownRecommendations = None
        widget.logic = SpacingRegistration.SpacingRegistrationLogic(scene=self.scene)
        widget.workflow = Workflow(widget.logic)
        self.widget = widget
        self.errors, self.charts = [], []
        patches = [mock.patch.object(slicer.util, "errorDisplay", create=True,
                                     side_effect=lambda text, **_: self.errors.append(text)),
                   mock.patch.object(slicer, "modules", create=True, new=types.SimpleNamespace(plots=types.SimpleNamespace(
                       logic=lambda: types.SimpleNamespace(ShowChartInLayout=self.charts.append))))]
        for patch in patches:
            patch.start()
            self.addCleanup(patch.stop)

    def runTimer(self, seconds=120):
        """What the QTimer does: call the poll handler until the widget stops the timer."""
        deadline = time.monotonic() + seconds
        while self.widget._pollTimer.active:
            self.assertLess(time.monotonic(), deadline, "the job did not end")
            self.widget._onPollTimer()
            time.sleep(0.02)

    def test_apply_becomes_cancel_and_the_result_fills_the_panel(self):
        w, u = self.widget, self.widget.ui
        w._refresh()
        self.assertEqual((u.applyButton.text, u.applyButton.enabled), ("Apply", True))
        self.assertFalse(u.openResultPageButton.enabled)
        w.onApplyButton()
        self.assertEqual(u.applyButton.text, "Cancel")
        self.assertTrue(w._pollTimer.active)
        self.runTimer()
        self.assertEqual(self.errors, [])
        self.assertTrue(u.statusLabel.text.startswith("Finished: "), u.statusLabel.text)
        self.assertEqual((u.applyButton.text, u.applyButton.enabled), ("Apply", True))
        self.assertEqual(u.progressBar.value, 1000)
        self.assertIs(self.node.outputTransform.GetScene(), self.scene)
        self.assertEqual(self.node.diagnosisTable.GetClassName(), "vtkMRMLTableNode")
        self.assertFalse(u.resultsCollapsibleButton.collapsed)
        self.assertIn("control points inside the image", u.gridCountsLabel.text)
        self.assertTrue(u.openResultPageButton.enabled)
        opened = []
        desktop = types.SimpleNamespace(QDesktopServices=types.SimpleNamespace(openUrl=opened.append),
                                        QUrl=types.SimpleNamespace(fromLocalFile=lambda path: f"file://{path}"))
        with mock.patch.object(SpacingRegistration, "qt", desktop):
            w.onOpenResultPageButton()
        self.assertEqual(opened, [f"file://{w.workflow.resultPage}"])
        self.assertIn('class="anatomy-map"', w.workflow.resultPage.read_text())

        count = self.scene.GetNumberOfNodes()
        w.onApplyButton()  # again into the same nodes: refilled, not added
        self.runTimer()
        self.assertEqual(self.scene.GetNumberOfNodes(), count)

    def test_cancel_and_bad_settings(self):
        w, u = self.widget, self.widget.ui
        self.node.lbfgs2NumberOfIterations = 0
        self.node.lbfgs2SolutionAccuracy = "1e-30"
        self.node.scalesEstimator = "physical_shift"
        count = self.scene.GetNumberOfNodes()
        w.onApplyButton()
        self.assertEqual(u.progressBar.range, (0, 0))  # no iteration limit: a busy indicator
        w.onApplyButton()  # Cancel
        self.assertIn(u.applyButton.text, ("Cancelling...", "Apply"))
        self.runTimer(10)
        self.assertTrue(u.statusLabel.text.startswith("Cancelled: no result"), u.statusLabel.text)
        self.assertEqual(self.scene.GetNumberOfNodes(), count)

        self.node.lbfgs2SolutionAccuracy = "small"
        w.onApplyButton()
        self.runTimer(10)
        message = ("Cannot start the registration: lbfgs2SolutionAccuracy (lbfgs2.solution_accuracy) must be a number, "
                   "got 'small'")
        self.assertEqual(self.errors, [message])
        w.onApplyButton()  # the same mistake again: shown again
        self.assertEqual(self.errors, [message, message])

    def test_study_runs_on_the_pool_and_shows_its_report(self):
        w, u = self.widget, self.widget.ui
        w.onRunStudyButton()
        self.assertEqual(u.runStudyButton.text, "Cancel study")
        self.runTimer(240)
        self.assertEqual(self.errors, [])
        self.assertRegex(u.studyStatusLabel.text, r"^2 runs; report: .*report\.html$")
        self.assertTrue(u.openReportButton.enabled)
        self.assertEqual(u.runStudyButton.text, "Run study")
        self.assertEqual(len(self.charts), 1)
        self.assertIs(self.charts[0].GetScene(), self.scene)
        self.assertTrue(os.path.isfile(w.workflow.study["reportPaths"]["html"]))

    def test_accuracy_check_becomes_cancel_and_a_recommendation_sets_its_parameters(self):
        w, u = self.widget, self.widget.ui
        w._refresh()
        self.assertEqual((u.runAccuracyCheckButton.text, u.runAccuracyCheckButton.enabled), ("Check accuracy", True))
        self.assertFalse(u.applyRecommendationButton.enabled)
        with mock.patch.object(w.workflow, "startAccuracyCheck", wraps=w.workflow.startAccuracyCheck) as start:
            w.onRunAccuracyCheckButton()
        self.assertEqual(start.call_args.args[0], self.node.fixedVolume)
        self.assertEqual(start.call_args.args[1].lbfgs2.number_of_iterations, 3)  # the panel's settings
        self.assertEqual(u.runAccuracyCheckButton.text, "Cancel check")
        w.onRunAccuracyCheckButton()  # Cancel
        self.assertIn(u.runAccuracyCheckButton.text, ("Cancelling check...", "Check accuracy"))
        self.runTimer(60)
        self.assertEqual(self.errors, [])
        self.assertEqual(u.runAccuracyCheckButton.text, "Check accuracy")
        self.assertIn("ancelled", u.accuracyStatusLabel.text)
        # A finished check's advice (set as the workflow sets it): the combo lists what can be applied.
        w.workflow.recommendations = [{"kind": "warning", "text": "a warning", "changes": {}},
                                      {"kind": "recommended", "text": "use 25 % sampling",
                                       "changes": {"sampling_percentage": 25.0}}]
        w._refresh()
        self.assertEqual(u.recommendationComboBox.items, ["recommended: sampling_percentage = 25.0"])
        self.assertIn("- use 25 % sampling", u.adviceTextEdit.plainText)
        self.assertTrue(u.applyRecommendationButton.enabled)
        before = {name: self.node.getValue(name) for name in parameters.SETTING_PARAMETERS}
        w.onApplyRecommendationButton()
        after = {name: self.node.getValue(name) for name in parameters.SETTING_PARAMETERS}
        self.assertEqual({name for name in before if before[name] != after[name]}, {"samplingPercentage"})
        self.assertEqual(after["samplingPercentage"], 25.0)


if __name__ == "__main__":
    unittest.main()
