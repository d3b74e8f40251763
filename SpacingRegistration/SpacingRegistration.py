"""Spacing Registration: the scripted module (panel, logic and self-test) over SpacingRegistrationLib.

The file holds only the Slicer classes of the Extension Wizard template: ``SpacingRegistration`` (module
description), ``SpacingRegistrationParameterNode`` (parameterNodeWrapper, only where qt exists, built from the
settings' field metadata), ``SpacingRegistrationWidget`` (the panel: binds the .ui to a workflow.Workflow),
``SpacingRegistrationLogic`` (ScriptedLoadableModuleLogic plus logic.RegistrationLogic, the MONAIAuto3DSeg
pattern) and one short ``SpacingRegistrationTest``; the other tests are in Testing/. Registrations and studies run
in a child process (SpacingRegistrationLib/jobs.py) that the panel polls with a QTimer.

The file also imports in a headless Python with slicer-core only (no qt, no slicer.app): the Logic and Test
classes then fall back to plain base classes and work on the scene of the nodes they are given.
"""

import logging
import pathlib
import unittest
from typing import Annotated

import numpy as np
import SimpleITK as sitk
import vtk

import slicer
import slicer.util

# --- Optional parts of the Slicer application: absent in a headless slicer-core Python. ---------------------------
try:
    import ctk  # noqa: F401  (the .ui's ctk widgets)
    import qt
except ImportError:  # headless: no Qt
    ctk = qt = None

try:
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
except ImportError:  # headless: minimal stand-ins with the parts this file uses

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = self.__class__.__name__

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent
            self.moduleName = self.__class__.__name__[:-len("Widget")]

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = self.__class__.__name__[:-len("Logic")]
            self.isSingletonParameterNode = True

    ScriptedLoadableModuleTest = unittest.TestCase

try:
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
except ImportError:  # headless: parameterNodeWrapper imports qt
    parameterNodeWrapper = None

try:
    from slicer.i18n import tr as _
except ImportError:  # headless

    def _(text):
        return text

try:
    from slicer.util import VTKObservationMixin
except ImportError:  # pragma: no cover - every slicer-core so far has it

    class VTKObservationMixin:
        def __init__(self):
            pass

from SpacingRegistrationLib import parameters, reload_order
from SpacingRegistrationLib.mrml import bridge
from SpacingRegistrationLib.mrml.logic import RegistrationLogic
from SpacingRegistrationLib.settings import RegistrationSettings
from SpacingRegistrationLib.workflow import POLL_SECONDS, Workflow

#
# SpacingRegistration
#


class SpacingRegistration(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Spacing Registration")
        self.parent.categories = ["Registration"]
        self.parent.dependencies = []
        self.parent.contributors = ["SpacingRegistration developers"]
        self.parent.helpText = _("""
BSpline registration (SimpleITK: BSplineTransformInitializer, Mattes mutual information, LBFGS2) with every setting
exposed and a diagnosis of why the result came out as it did: iterations of each libLBFGS run, the real stop
reason, whether the transform moved, the metric at the result, the unit-dependent line-search quantities and the
control grid against the image. <b>Reproducible</b> mode gives bit-identical repeats; <b>normalised units</b> makes
the result independent of the voxel spacing.
See the <a href="https://github.com/SpacingRegistration/SlicerSpacingRegistration">documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Built on SimpleITK and 3D Slicer. The module layout follows the Slicer Extension Wizard template (Jean-Christophe
Fillion-Robin, Kitware; Andras Lasso, PerkLab; Steve Pieper, Isomics) and the SlicerElastix module (Andras Lasso).
""")


#
# SpacingRegistrationParameterNode
#


def parameterNodeAnnotations() -> dict:
    """name -> (type annotation, default) of every panel parameter, from parameters.parameter_fields()."""
    from slicer import (vtkMRMLBSplineTransformNode, vtkMRMLLabelMapVolumeNode, vtkMRMLLinearTransformNode,
                        vtkMRMLScalarVolumeNode, vtkMRMLTableNode)

    nodeTypes = {cls.__name__: cls for cls in (vtkMRMLBSplineTransformNode, vtkMRMLLabelMapVolumeNode,
                                               vtkMRMLLinearTransformNode, vtkMRMLScalarVolumeNode, vtkMRMLTableNode)}
    members = {}
    for field in parameters.parameter_fields():
        if field.kind == "node":
            members[field.name] = (nodeTypes[field.default], None)
        elif field.kind == "path":
            members[field.name] = (pathlib.Path, pathlib.Path.home() / "SpacingRegistrationStudy")
        elif field.kind == "choice":
            members[field.name] = (Annotated[str, Choice(field.choices)], field.default)
        elif field.range is not None:
            members[field.name] = (Annotated[{"int": int, "float": float}[field.kind], WithinRange(*field.range)],
                                   field.default)
        else:
            members[field.name] = ({"bool": bool, "str": str}[field.kind], field.default)
    return members


if parameterNodeWrapper is not None:
    _members = parameterNodeAnnotations()
    #: The panel's parameters (PARAMETER_NAMES), declared once in the settings' metadata; see parameters.py.
    SpacingRegistrationParameterNode = parameterNodeWrapper(type("SpacingRegistrationParameterNode", (), {
        "__module__": __name__, "__annotations__": {name: kind for name, (kind, _d) in _members.items()},
        **{name: default for name, (_k, default) in _members.items() if default is not None}}))


#
# SpacingRegistrationWidget
#


class SpacingRegistrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: the parameter node bound to the .ui, and a workflow.Workflow (which starts the child-process
    jobs and owns every text shown) polled by a QTimer. Apply becomes Cancel while a registration runs.

    Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.workflow = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._pollTimer = None
        self._shownErrors = 0
        self._shownRecommendations = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpacingRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui connects the root's mrmlSceneChanged(vtkMRMLScene*) to every MRML widget's setMRMLScene.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SpacingRegistrationLogic()
        self.workflow = Workflow(self.logic)
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(int(POLL_SECONDS * 1000))
        self._pollTimer.connect("timeout()", self._onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.showGridButton.connect("clicked(bool)", self.onShowGridButton)
        self.ui.hideGridButton.connect("clicked(bool)", self.onHideGridButton)
        self.ui.restoreDefaultsButton.connect("clicked(bool)", self.onRestoreDefaultsButton)
        self.ui.runStudyButton.connect("clicked(bool)", self.onRunStudyButton)
        self.ui.openReportButton.connect("clicked(bool)", self.onOpenReportButton)
        self.ui.openResultPageButton.connect("clicked(bool)", self.onOpenResultPageButton)
        self.ui.runAccuracyCheckButton.connect("clicked(bool)", self.onRunAccuracyCheckButton)
        self.ui.applyRecommendationButton.connect("clicked(bool)", self.onApplyRecommendationButton)
        self.ui.diagnosisTableSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._showWarningsOfTable)
        self.initializeParameterNode()
        self._refresh()

    def onReload(self) -> None:
        """Reload the SpacingRegistrationLib submodules too (reloadScriptedModule re-executes only this file)."""
        with slicer.util.tryWithErrorDisplay(_("Failed to reload the SpacingRegistrationLib submodules.")):
            reload_order.reload_library()
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed: stop the child processes."""
        if self.workflow is not None:
            self.workflow.cancelRegistration()
            self.workflow.cancelStudy()
            self.workflow.cancelAccuracyCheck()
        if self._pollTimer is not None:
            self._pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.workflow.cancelRegistration()  # its volume nodes go away: no output for this run
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixedVolume:
            self._parameterNode.fixedVolume = slicer.mrmlScene.GetNthNodeByClass(0, "vtkMRMLScalarVolumeNode")
        if not self._parameterNode.movingVolume:
            self._parameterNode.movingVolume = slicer.mrmlScene.GetNthNodeByClass(1, "vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Every bound widget carries the dynamic property SlicerParameterName in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    # --- binding ----------------------------------------------------------------------------------------------------

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._refresh()
        if not self._parameterNode:
            return
        specification = self._parameterNode.gridSpecification
        for widget in (self.ui.meshSizeXSpinBox, self.ui.meshSizeYSpinBox, self.ui.meshSizeZSpinBox):
            widget.enabled = specification == "mesh_size"
        self.ui.gridSpacingMmSpinBox.enabled = specification == "spacing_mm"
        self.ui.gridSpacingVoxelsSpinBox.enabled = specification == "spacing_voxels"
        optimizer = self._parameterNode.optimizer
        self.ui.lbfgs2GroupBox.setVisible(optimizer == "lbfgs2")
        self.ui.lbfgsbGroupBox.setVisible(optimizer == "lbfgsb")
        self.ui.gradientDescentGroupBox.setVisible(optimizer == "gradient_descent")

    def _refresh(self) -> None:
        """Copy the workflow's state to the widgets (the only place the panel shows work)."""
        w, node = self.workflow, self._parameterNode
        haveVolumes = bool(node and node.fixedVolume and node.movingVolume)
        if w.registrationRunning:
            cancelling = w.registrationJob.cancel_requested
            self.ui.applyButton.text = _("Cancelling...") if cancelling else _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the registration (nothing is added to the scene)")
            self.ui.applyButton.enabled = not cancelling
        else:
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.toolTip = _("Register the moving volume to the fixed volume")
            self.ui.applyButton.enabled = haveVolumes
        self.ui.showGridButton.enabled = bool(node and node.fixedVolume)
        if w.studyRunning:
            cancelling = w.studyJob.cancel_requested
            self.ui.runStudyButton.text = _("Cancelling study...") if cancelling else _("Cancel study")
            self.ui.runStudyButton.enabled = not cancelling
        else:
            self.ui.runStudyButton.text = _("Run study")
            self.ui.runStudyButton.enabled = haveVolumes
        self.ui.progressBar.setRange(0, 0 if w.progress is None else 1000)  # (0, 0): busy indicator
        self.ui.progressBar.setValue(int(1000 * (w.progress or 0)))
        self.ui.statusLabel.text = w.status
        self.ui.studyProgressBar.setRange(0, 1000)
        self.ui.studyProgressBar.setValue(int(1000 * w.studyProgress))
        self.ui.studyStatusLabel.text = w.studyStatus
        self.ui.gridCountsLabel.text = w.gridSummary
        self.ui.gridWarningsLabel.text = w.gridWarnings
        self.ui.warningsTextEdit.plainText = w.warningsText
        self.ui.openReportButton.enabled = w.study is not None
        self.ui.openResultPageButton.enabled = w.resultPage is not None
        self._refreshAccuracy()
        if w.errorCount != self._shownErrors:  # each failure once, in a dialog
            self._shownErrors = w.errorCount
            slicer.util.errorDisplay(w.error, detailedText=w.errorDetails or None)

    def _refreshAccuracy(self) -> None:
        w, node = self.workflow, self._parameterNode
        if w.accuracyRunning:
            cancelling = w.accuracyJob.cancel_requested
            self.ui.runAccuracyCheckButton.text = _("Cancelling check...") if cancelling else _("Cancel check")
            self.ui.runAccuracyCheckButton.enabled = not cancelling
        else:
            self.ui.runAccuracyCheckButton.text = _("Check accuracy")
            self.ui.runAccuracyCheckButton.enabled = bool(node and node.fixedVolume)
        self.ui.accuracyProgressBar.setRange(0, 1000)
        self.ui.accuracyProgressBar.setValue(int(1000 * w.accuracyProgress))
        self.ui.accuracyStatusLabel.text = w.accuracyStatus
        self.ui.accuracyRankingTextEdit.plainText = w.rankingText
        self.ui.adviceTextEdit.plainText = w.adviceText
        if w.recommendations is not self._shownRecommendations:  # refill only on a new check: keep the choice
            self._shownRecommendations = w.recommendations
            self.ui.recommendationComboBox.clear()
            for _index, label in w.appliableRecommendations:
                self.ui.recommendationComboBox.addItem(label)
        self.ui.applyRecommendationButton.enabled = bool(w.appliableRecommendations) and not w.accuracyRunning

    def _onPollTimer(self) -> None:
        w = self.workflow
        hadOutputs, hadStudy = w.outputs, w.study
        if w.poll():
            if w.outputs is not hadOutputs and self._parameterNode is not None:
                self._parameterNode.outputTransform, self._parameterNode.diagnosisTable = w.outputs
            if w.study is not hadStudy and w.study["nodes"].get("charts"):
                slicer.modules.plots.logic().ShowChartInLayout(w.study["nodes"]["charts"][0])  # a plot layout
            if w.outputs is not hadOutputs or w.study is not hadStudy:
                self.ui.resultsCollapsibleButton.collapsed = False
        if not (w.registrationRunning or w.studyRunning or w.accuracyRunning):
            self._pollTimer.stop()
        self._refresh()

    def _settings(self) -> RegistrationSettings:
        values = {name: self._parameterNode.getValue(name) for name in parameters.SETTING_PARAMETERS}
        return parameters.settings_from_parameter_values(values)

    # --- actions ----------------------------------------------------------------------------------------------------

    def onApplyButton(self) -> None:
        if self.workflow.registrationRunning:
            self.workflow.cancelRegistration()
        else:
            node = self._parameterNode
            try:
                settings = self._settings()
            except ValueError as error:
                self.workflow.fail("Cannot start the registration", error)
            else:
                self.workflow.startRegistration(node.fixedVolume, node.movingVolume, settings,
                                                node.outputTransform, node.diagnosisTable, node.fixedMask,
                                                node.initialTransform)
            self._pollTimer.start()
        self._refresh()

    def onRunStudyButton(self) -> None:
        if self.workflow.studyRunning:
            self.workflow.cancelStudy()
        else:
            node = self._parameterNode
            values = {name: node.getValue(name) for name in (*parameters.SETTING_PARAMETERS, *parameters.STUDY_PARAMETERS)}
            try:
                spec = parameters.study_spec_from_parameter_values(values)
            except ValueError as error:
                self.workflow.fail("Cannot start the study", error)
            else:
                self.workflow.startStudy(node.fixedVolume, node.movingVolume, spec, str(node.studyFolder),
                                         maskNode=node.fixedMask, initialTransformNode=node.initialTransform)
            self._pollTimer.start()
        self._refresh()

    def onRunAccuracyCheckButton(self) -> None:
        if self.workflow.accuracyRunning:
            self.workflow.cancelAccuracyCheck()
        else:
            try:
                settings = self._settings()
            except ValueError as error:
                self.workflow.fail("Cannot start the accuracy check", error)
            else:
                self.workflow.startAccuracyCheck(self._parameterNode.fixedVolume, settings)
            self._pollTimer.start()
        self._refresh()

    def onApplyRecommendationButton(self) -> None:
        choices = self.workflow.appliableRecommendations
        position = self.ui.recommendationComboBox.currentIndex
        if 0 <= position < len(choices):
            values = {name: self._parameterNode.getValue(name) for name in parameters.SETTING_PARAMETERS}
            for name, value in self.workflow.applyRecommendation(choices[position][0], values).items():
                self._parameterNode.setValue(name, value)
        self._refresh()

    def onShowGridButton(self) -> None:
        try:
            settings = self._settings()
        except ValueError as error:
            self.workflow.fail("Cannot show the grid", error)
        else:
            self.workflow.showGrid(self._parameterNode.fixedVolume, settings)
        self._refresh()

    def onHideGridButton(self) -> None:
        self.workflow.hideGrid(scene=slicer.mrmlScene)
        self._refresh()

    def _showWarningsOfTable(self, tableNode=None) -> None:
        self.workflow.showDiagnosisTable(tableNode)
        self._refresh()

    def onRestoreDefaultsButton(self) -> None:
        with slicer.util.NodeModify(self._parameterNode):
            for name, value in parameters.parameter_values_from_settings(RegistrationSettings()).items():
                self._parameterNode.setValue(name, value)

    def onOpenReportButton(self) -> None:
        if self.workflow.study is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.workflow.study["reportPaths"]["html"])))

    def onOpenResultPageButton(self) -> None:
        if self.workflow.resultPage is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.workflow.resultPage)))


#
# SpacingRegistrationLogic
#


class SpacingRegistrationLogic(ScriptedLoadableModuleLogic, RegistrationLogic):
    """ScriptedLoadableModuleLogic plus the library's RegistrationLogic (SpacingRegistrationLib/mrml/logic.py): GUI-free,
    every method takes explicit nodes, so it can be called from the Python console, tests and batch code.

    Uses ScriptedLoadableModuleLogic base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        RegistrationLogic.__init__(self, scene)

    def getParameterNode(self):
        return SpacingRegistrationParameterNode(super().getParameterNode())


#
# SpacingRegistrationTest
#


class SpacingRegistrationTest(ScriptedLoadableModuleTest):
    """The module's self-test: one registration through the logic (child process) into a real scene. The other
    tests of the logic, the job controller and the panel's parts are in Testing/. Finishes synchronously.

    Uses ScriptedLoadableModuleTest base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def setUp(self):
        scene = getattr(slicer, "mrmlScene", None)
        if scene is not None and hasattr(slicer, "app"):
            scene.Clear()
            self.scene = scene
        else:
            self.scene = bridge.createScene()

    def runTest(self):
        """Slicer's self-test entry."""
        self.setUp()
        self.test_register_creates_transform_and_diagnosis_table()

    @staticmethod
    def blobImage(shiftVoxels=0.0, size=24, spacing=2.0) -> sitk.Image:
        z, y, x = np.mgrid[:size, :size, :size].astype(float)
        c = (size - 1) / 2
        values = 100 * np.exp(-((x - c - shiftVoxels) ** 2 / 18 + (y - c) ** 2 / 30 + (z - c) ** 2 / 24))
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.SetSpacing([spacing] * 3)
        return image

    def test_register_creates_transform_and_diagnosis_table(self):
        logging.info("Register a small synthetic pair in a child process")
        logic = SpacingRegistrationLogic(scene=self.scene)
        fixed = bridge.volumeNodeFromImage(self.scene, self.blobImage(0.0), "fixed blob")
        moving = bridge.volumeNodeFromImage(self.scene, self.blobImage(1.5), "moving blob")
        events = []
        result = logic.register(fixed, moving, {"scales_estimator": "none", "lbfgs2": {"number_of_iterations": 5},
                                                "reproducible": True}, progress=events.append)
        self.assertTrue(result.moved)
        self.assertEqual([e["event"] for e in events][0], "started")
        self.assertEqual(events[-1], {"event": "end", "state": "finished", "error": None})
        self.assertGreater(sum(e["event"] == "iteration" for e in events), 0)
        transformNode, tableNode = logic.lastTransformNode, logic.lastTableNode
        self.assertEqual(transformNode.GetClassName(), "vtkMRMLBSplineTransformNode")
        self.assertIs(transformNode.GetScene(), self.scene)
        point = [-23.0, -23.0, 23.0]  # RAS of the image centre (LPS 23, 23, 23)
        self.assertGreater(np.linalg.norm(np.subtract(transformNode.GetTransformFromParent().TransformPoint(point),
                                                      point)), 0.01)
        self.assertEqual(dict(logic.diagnosisFromTableNode(tableNode))["moved"], "True")
