"""The module's logic without the Slicer base class (MRML: slicer and vtk, no qt), shared by the panel, the web app,
the Python console and the tests; the module's SpacingRegistrationLogic is ScriptedLoadableModuleLogic plus this
class (the pattern of SlicerMONAIAuto3DSeg, whose Logic drives MONAIAuto3DSegLib).

Every method takes explicit nodes and a RegistrationSettings (or a dict of its fields). The scene is taken from
the nodes, else from the constructor's ``scene``, else slicer.mrmlScene. Long work runs in a child process
(jobs.py): ``startRegistration``/``startStudy`` return a Job that the caller polls; ``finishRegistration``/
``finishStudy`` turn its outputs into nodes on the caller's (main) thread. ``register`` and ``runStudy`` do both
and wait, for the console, scripts and tests.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from .. import describe, images, jobs, masks, registration, resources, result_page
from . import bridge, study_nodes
from ..diagnosis_rows import WARNING_ROW, diagnosis_rows
from ..grid import grid_geometry, initial_bspline, mesh_size_for
from ..settings import RegistrationSettings, from_dict
from ..study_store import create_or_open
from ..volume_units import transform_in_volume_units

#: Models drawn by showControlGrid are named "<prefix> <part>"; showing a grid again replaces them.
GRID_NAME_PREFIX = "SpacingRegistration grid"
#: Node attribute holding the name prefix of a grid model (to find and replace earlier grid models).
GRID_ATTRIBUTE = "SpacingRegistration.GridPrefix"
#: Table-node attribute holding the JSON summary of the registration (RegistrationResult.summary()).
SUMMARY_ATTRIBUTE = "SpacingRegistration.Summary"
#: Table-node attribute holding the plain-text diagnosis (describe.describe_result).
DESCRIPTION_ATTRIBUTE = "SpacingRegistration.Description"
#: Table-node attribute holding the path of the registration's result page (result_page.py), when one was kept.
RESULT_PAGE_ATTRIBUTE = "SpacingRegistration.ResultPage"
#: Node-reference role from the output transform to its diagnosis table.
DIAGNOSIS_REFERENCE_ROLE = "spacingRegistrationDiagnosis"
#: Diagnosis-table columns.
TABLE_COLUMNS = ("Name", "Value")


def pythonExecutable() -> str:
    """The interpreter of child jobs: PythonSlicer inside the Slicer application (as SlicerElastix and
    MONAIAuto3DSeg find it), else this Python."""
    if hasattr(slicer, "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def childEnvironment():
    """Environment of child jobs: Slicer's startup environment inside the app (what launchConsoleProcess uses;
    PythonSlicer sets up its own paths), else this process's."""
    if hasattr(slicer, "app") and hasattr(slicer.util, "startupEnvironment"):
        return slicer.util.startupEnvironment()
    return None


class RegistrationLogic:
    """Registration, control grid and study on MRML nodes; see the module docstring.

    ``resultPagesFolder`` keeps each registration's result page (the job folders are removed); default: a
    SpacingRegistration folder in Slicer's temporary folder, else a new temporary folder.
    """

    def __init__(self, scene=None, resultPagesFolder=None) -> None:
        self._scene = scene
        self.resultPagesFolder = None if resultPagesFolder is None else Path(resultPagesFolder)
        self.lastTransformNode = None
        self.lastTableNode = None

    def sceneFor(self, *nodes):
        """The scene of the first node that has one, else the logic's scene, else slicer.mrmlScene."""
        for node in nodes:
            if node is not None and node.GetScene() is not None:
                return node.GetScene()
        scene = self._scene if self._scene is not None else getattr(slicer, "mrmlScene", None)
        if scene is None:
            raise ValueError("no MRML scene: pass nodes that are in a scene or RegistrationLogic(scene=...)")
        return scene

    @staticmethod
    def settingsFrom(settings=None) -> RegistrationSettings:
        """RegistrationSettings from None (defaults), a RegistrationSettings or a dict of its fields."""
        if settings is None:
            return RegistrationSettings()
        if isinstance(settings, RegistrationSettings):
            return settings
        if isinstance(settings, dict):
            return from_dict(settings)
        raise TypeError(f"settings must be a RegistrationSettings or a dict, got {type(settings).__name__}")

    @staticmethod
    def _checkVolumeNode(node, role: str):
        if node is None:
            raise ValueError(f"The {role} volume is not set.")
        if not node.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError(f"The {role} volume must be a scalar volume node, got {node.GetClassName()}.")
        if node.GetImageData() is None:
            raise ValueError(f"The {role} volume '{node.GetName()}' has no image data.")

    def imagesFromVolumeNodes(self, fixedVolumeNode, movingVolumeNode):
        """Copies of the two volumes as SimpleITK images (LPS); the nodes are not modified."""
        self._checkVolumeNode(fixedVolumeNode, "fixed")
        self._checkVolumeNode(movingVolumeNode, "moving")
        return bridge.imageFromVolumeNode(fixedVolumeNode), bridge.imageFromVolumeNode(movingVolumeNode)

    @staticmethod
    def geometryImageFromVolumeNode(volumeNode) -> sitk.Image:
        """A UInt8 SimpleITK image with the volume's size, spacing, origin and direction (LPS), without its voxels."""
        imageData = volumeNode.GetImageData() if volumeNode is not None else None
        if imageData is None:
            raise ValueError("The volume has no image data." if volumeNode is not None else "The volume is not set.")
        image = sitk.Image([int(n) for n in imageData.GetDimensions()], sitk.sitkUInt8)
        directions = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASDirectionMatrix(directions)
        direction = np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)])
        image.SetSpacing(volumeNode.GetSpacing())
        image.SetOrigin(bridge.lpsToRas(volumeNode.GetOrigin()).tolist())
        image.SetDirection((bridge.LPS_TO_RAS @ direction).ravel().tolist())
        return image

    # --- registration ---------------------------------------------------------------------------------------------

    @classmethod
    def computeRegistration(cls, fixedImage, movingImage, settings=None, progress=None, cancel=None):
        """The engine alone, in this process (no MRML): registration.run -> RegistrationResult."""
        return registration.run(fixedImage, movingImage, cls.settingsFrom(settings), progress=progress, cancel=cancel)

    def maskImageFromNode(self, maskNode, fixedVolumeNode) -> sitk.Image:
        """The fixed-image mask of a labelmap or scalar volume node (non-zero = inside), or of a segmentation node
        (its visible segments exported, by Slicer's segmentations logic, to a labelmap on the fixed volume's
        geometry; the scratch labelmap is removed again). The engine resamples a mask on another grid."""
        if maskNode.IsA("vtkMRMLScalarVolumeNode"):
            if maskNode.GetImageData() is None:
                raise ValueError(f"The mask '{maskNode.GetName()}' has no image data.")
            return bridge.imageFromVolumeNode(maskNode)
        if not maskNode.IsA("vtkMRMLSegmentationNode"):
            raise ValueError("The mask must be a labelmap, scalar volume or segmentation node, got "
                             f"{maskNode.GetClassName()} '{maskNode.GetName()}'.")
        scene = self.sceneFor(maskNode, fixedVolumeNode)
        before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SpacingRegistration mask (scratch)")
        try:
            exported = slicer.vtkSlicerSegmentationsModuleLogic.ExportVisibleSegmentsToLabelmapNode(
                maskNode, labelmap, fixedVolumeNode)
            if not exported or labelmap.GetImageData() is None:
                raise ValueError(f"The segmentation '{maskNode.GetName()}' could not be exported to a labelmap "
                                 "(does it have visible segments?).")
            return bridge.imageFromVolumeNode(labelmap)
        finally:  # the labelmap and what the export made for it (display nodes, colour table)
            for node in [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]:
                if node.GetID() not in before:
                    scene.RemoveNode(node)

    @staticmethod
    def checkInitialTransformNode(node) -> None:
        """One clear error unless ``node`` is a transform node that is linear (through its parents)."""
        if not node.IsA("vtkMRMLTransformNode") or not node.IsTransformToWorldLinear():
            kind = node.GetClassName() if not node.IsA("vtkMRMLTransformNode") else "a non-linear transform"
            raise ValueError("The initial transform must be a linear transform node (e.g. the rigid or affine result "
                             f"of General Registration), got {kind} '{node.GetName()}'.")

    def startRegistration(self, fixedVolumeNode, movingVolumeNode, settings=None, jobFolder=None, maskNode=None,
                          initialTransformNode=None) -> jobs.Job:
        """Start the registration in a child process and return its Job (poll it; then finishRegistration).

        ``maskNode`` (labelmap, scalar volume or segmentation) restricts the metric and statistics to the fixed
        volume's voxels inside it; ``initialTransformNode`` (linear; the moving volume is aligned when placed under
        it) is composed before the BSpline. Bad settings, volumes, mask or initial transform raise here, before any
        process starts and with the scene unchanged. ``job.inputs`` keeps the volume nodes, ``job.initialMatrix``
        the initial transform's fixed-to-moving RAS matrix (or None).
        """
        settings = self.settingsFrom(settings)
        fixedImage, movingImage = self.imagesFromVolumeNodes(fixedVolumeNode, movingVolumeNode)
        images.check_pair(fixedImage, movingImage)
        mask, initial, initialMatrix = self._maskAndInitialTransform(maskNode, initialTransformNode, fixedVolumeNode,
                                                                     fixedImage)
        resources.check_registration_memory(fixedImage, movingImage, settings)
        job = jobs.start_registration(fixedImage, movingImage, settings, folder=jobFolder, python=pythonExecutable(),
                                      environment=childEnvironment(), mask=mask, initial_transform=initial)
        job.inputs = (fixedVolumeNode, movingVolumeNode)
        job.initialMatrix = initialMatrix
        return job

    def _maskAndInitialTransform(self, maskNode, initialTransformNode, fixedVolumeNode, fixedImage):
        """(mask on the fixed grid, initial transform (LPS, fixed to moving), its RAS TransformFromWorld matrix) of
        the optional mask and initial transform nodes, each None when not given; a wrong node raises ValueError."""
        initial, initialMatrix = None, None
        if initialTransformNode is not None:
            self.checkInitialTransformNode(initialTransformNode)
            initial = bridge.sitkAffineFromTransformNode(initialTransformNode)
            initialMatrix = vtk.vtkMatrix4x4()
            initialTransformNode.GetMatrixTransformFromWorld(initialMatrix)
        mask = None
        if maskNode is not None:
            mask = masks.fixed_mask(self.maskImageFromNode(maskNode, fixedVolumeNode), fixedImage)
        return mask, initial, initialMatrix

    def finishRegistration(self, job: jobs.Job, outputTransformNode=None, outputTableNode=None):
        """(RegistrationResult, transformNode, tableNode) of a finished job (main thread); None if it was cancelled.

        A failed job raises its one-sentence reason (jobs.JobError, or the input error the child reported:
        SettingsError, InputImageError, ResourceError, StudyFolderError); the scene is then unchanged.
        """
        if job.state == jobs.CANCELLED:
            return None
        result = job.registration_result()
        fixedVolumeNode, movingVolumeNode = job.inputs
        page = self._keepResultPage(job)
        transformNode, tableNode = self.createOutputNodes(result, fixedVolumeNode, movingVolumeNode,
                                                          outputTransformNode, outputTableNode,
                                                          initialMatrix=getattr(job, "initialMatrix", None))
        tableNode.SetAttribute(RESULT_PAGE_ATTRIBUTE, "" if page is None else str(page))
        return result, transformNode, tableNode

    def _keepResultPage(self, job: jobs.Job):
        """A copy of the job's result page in ``resultPagesFolder`` (a new file per run), or None when the job
        wrote none or it cannot be kept (logged: the registration's nodes matter more than its page)."""
        source = job.folder / jobs.OUTPUT_FOLDER / result_page.PAGE_NAME
        if not source.is_file():
            return None
        target = None
        try:
            if self.resultPagesFolder is None:
                self.resultPagesFolder = (Path(slicer.app.temporaryPath) / "SpacingRegistration"
                                          if hasattr(slicer, "app") else
                                          Path(tempfile.mkdtemp(prefix="SpacingRegistration-results-")))
            self.resultPagesFolder.mkdir(parents=True, exist_ok=True)
            handle, target = tempfile.mkstemp(prefix="registration-", suffix=".html", dir=self.resultPagesFolder)
            os.close(handle)
            shutil.copyfile(source, target)
        except OSError as error:
            if target is not None:
                Path(target).unlink(missing_ok=True)
            logging.warning("The result page of the registration could not be kept: %s", error)
            return None
        return Path(target)

    @staticmethod
    def resultPageOfTableNode(tableNode):
        """The result page (a Path) of the registration a diagnosis table describes, or None when it has none (or
        its file is gone, e.g. a temporary folder cleaned since)."""
        path = tableNode.GetAttribute(RESULT_PAGE_ATTRIBUTE) if tableNode is not None else None
        return Path(path) if path and Path(path).is_file() else None

    def register(self, fixedVolumeNode, movingVolumeNode, settings=None, outputTransformNode=None, progress=None,
                 cancel=None, outputTableNode=None, maskNode=None, initialTransformNode=None):
        """Register the moving volume to the fixed one (child process, waited for); fill (or create) a BSpline
        transform node and a diagnosis table node. The volume nodes are not modified (parent transforms of the
        volumes are ignored).

        ``progress`` is called with each job event (dicts, see jobs.py); setting ``cancel`` (a threading.Event)
        stops the child. Returns the RegistrationResult, or None when cancelled (no node is made); the output nodes
        are ``self.lastTransformNode`` and ``self.lastTableNode``. Bad inputs raise before any node is made; a
        failed child raises as finishRegistration says. ``maskNode`` and ``initialTransformNode``: see
        startRegistration.
        """
        job = self.startRegistration(fixedVolumeNode, movingVolumeNode, settings, maskNode=maskNode,
                                     initialTransformNode=initialTransformNode)
        try:
            job.run_to_end(progress, cancel)
            finished = self.finishRegistration(job, outputTransformNode, outputTableNode)
        finally:
            job.remove_folder()
        return None if finished is None else finished[0]

    def createOutputNodes(self, result, fixedVolumeNode=None, movingVolumeNode=None, outputTransformNode=None,
                          outputTableNode=None, scene=None, initialMatrix=None):
        """(transformNode, tableNode) for a RegistrationResult (main thread).

        With an initial transform (``initialMatrix``: its fixed-to-moving RAS matrix) the node holds the whole
        mapping, initial(bspline(x)), as one composite (vtkGeneralTransform) TransformFromParent, still in a
        BSpline transform node (the panel's output selector and parameter take that class): placing the moving volume
        under this one node aligns it, as without an initial transform, and the user's initial transform node is
        untouched (making it the BSpline's child instead would change the user's node).

        The transform node (given, else a new vtkMRMLBSplineTransformNode) gets the result as its
        TransformFromParent: set it as the moving volume's parent transform to see the moving volume aligned.
        After a spacing override the transform is converted back to the volumes' units when they share one
        isotropic spacing (see volume_units.transform_in_volume_units). The table node (given, else new) gets
        (Name, Value) rows
        of the diagnosis and one "warning" row per warning; its attributes keep the JSON summary and the text.
        """
        if scene is None:
            scene = self.sceneFor(outputTransformNode, outputTableNode, fixedVolumeNode, movingVolumeNode)
        transform, unitsNote, unitWarnings = result.transform, "", []
        if result.settings.spacing_override is not None:
            if fixedVolumeNode is None or movingVolumeNode is None:
                unitWarnings = ["The registration ran with a spacing override and the volumes were not given: "
                                "the output transform is in the override units."]
            else:
                transform, unitsNote, unitWarnings = transform_in_volume_units(
                    result.transform, result.settings.spacing_override,
                    fixedVolumeNode.GetSpacing(), bridge.lpsToRas(fixedVolumeNode.GetOrigin()),
                    movingVolumeNode.GetSpacing(), bridge.lpsToRas(movingVolumeNode.GetOrigin()))
        frameWarnings = [
            f"The {role} volume '{node.GetName()}' is under the transform '{node.GetParentTransformNode().GetName()}'; "
            "the registration used its voxels in its own frame, ignoring that transform."
            for role, node in (("fixed", fixedVolumeNode), ("moving", movingVolumeNode))
            if node is not None and node.GetParentTransformNode() is not None]

        # The BSpline is built in a scratch scene by the bridge, then moved into the output node.
        scratch = slicer.vtkMRMLScene()
        scratchNode = bridge.bsplineTransformNodeFromSitk(scratch, transform, "scratch")
        if outputTransformNode is None:
            baseName = (f"{movingVolumeNode.GetName()}-to-{fixedVolumeNode.GetName()} BSpline"
                        if fixedVolumeNode is not None and movingVolumeNode is not None else "SpacingRegistration BSpline")
            outputTransformNode = scene.AddNewNodeByClass("vtkMRMLBSplineTransformNode",
                                                          scene.GenerateUniqueName(baseName))
        whole = scratchNode.GetTransformFromParent()
        if initialMatrix is not None:
            linear = vtk.vtkTransform()
            linear.SetMatrix(initialMatrix)
            whole = vtk.vtkGeneralTransform()
            whole.PostMultiply()  # applied in the order concatenated: the BSpline first, then the initial
            whole.Concatenate(scratchNode.GetTransformFromParent())
            whole.Concatenate(linear)
        outputTransformNode.SetAndObserveTransformFromParent(whole)
        outputTransformNode.CreateDefaultDisplayNodes()
        del scratchNode, scratch

        if outputTableNode is None:
            outputTableNode = scene.AddNewNodeByClass(
                "vtkMRMLTableNode", scene.GenerateUniqueName(f"{outputTransformNode.GetName()} diagnosis"))
        rows = diagnosis_rows(result)
        if unitsNote:
            rows.insert(3, ("output transform units", unitsNote))
        rows += [(WARNING_ROW, w) for w in unitWarnings + frameWarnings]
        self._fillTable(outputTableNode, rows)
        outputTableNode.SetAttribute(SUMMARY_ATTRIBUTE, json.dumps(result.summary(), default=_jsonDefault))
        outputTableNode.SetAttribute(DESCRIPTION_ATTRIBUTE, describe.describe_result(result))
        outputTransformNode.SetNodeReferenceID(DIAGNOSIS_REFERENCE_ROLE, outputTableNode.GetID())
        self.lastTransformNode, self.lastTableNode = outputTransformNode, outputTableNode
        return outputTransformNode, outputTableNode

    @staticmethod
    def _fillTable(tableNode, rows) -> None:
        wasModified = tableNode.StartModify()
        tableNode.RemoveAllColumns()
        table = tableNode.GetTable()
        for name in TABLE_COLUMNS:
            column = vtk.vtkStringArray()
            column.SetName(name)
            table.AddColumn(column)
        for name, value in rows:
            row = tableNode.AddEmptyRow()
            tableNode.SetCellText(row, 0, str(name))
            tableNode.SetCellText(row, 1, str(value))
        if hasattr(tableNode, "SetLocked"):
            tableNode.SetLocked(True)  # a record of the run, not for editing
        tableNode.EndModify(wasModified)

    @staticmethod
    def diagnosisFromTableNode(tableNode) -> list:
        """(name, value) rows of a diagnosis table."""
        return [(tableNode.GetCellText(row, 0), tableNode.GetCellText(row, 1))
                for row in range(tableNode.GetNumberOfRows())]

    @classmethod
    def warningsFromTableNode(cls, tableNode) -> list:
        """The warnings recorded in a diagnosis table."""
        return [value for name, value in cls.diagnosisFromTableNode(tableNode) if name == WARNING_ROW]

    # --- control grid ---------------------------------------------------------------------------------------------

    def controlGridGeometry(self, volumeNode, meshSize=None, transformNode=None, settings=None):
        """GridGeometry of the control grid over a volume, in the volume's own frame (no node is created).

        The grid is the one the registration starts from with ``settings`` (mesh size or control-point spacing;
        after a spacing override the mesh is computed as the engine does), or ``meshSize`` intervals per axis,
        or the grid of an existing BSpline ``transformNode``.
        """
        image = self.geometryImageFromVolumeNode(volumeNode)
        if transformNode is not None:
            return grid_geometry(bridge.sitkBSplineFromTransformNode(transformNode), image)
        settings = self.settingsFrom(settings)
        if meshSize is not None:
            settings = settings.replace(grid_specification="mesh_size", mesh_size=[int(m) for m in meshSize])
        elif settings.spacing_override is not None and settings.grid_specification != "mesh_size":
            registered = images.with_spacing(image, settings.spacing_override)
            settings = settings.replace(grid_specification="mesh_size", mesh_size=mesh_size_for(registered, settings))
        return grid_geometry(initial_bspline(image, settings), image)

    def showControlGrid(self, volumeNode, meshSize=None, transformNode=None, settings=None,
                        namePrefix=GRID_NAME_PREFIX):
        """(dict of model nodes, GridGeometry): draw the control grid over a volume, replacing the grid models
        drawn earlier with the same name prefix. The models follow the volume's parent transform."""
        geometry = self.controlGridGeometry(volumeNode, meshSize=meshSize, transformNode=transformNode,
                                            settings=settings)
        scene = self.sceneFor(volumeNode)
        self.hideControlGrid(namePrefix=namePrefix, scene=scene)
        nodes = bridge.controlGridModelNodes(scene, geometry, namePrefix)
        for node in nodes.values():
            node.SetAttribute(GRID_ATTRIBUTE, namePrefix)
            node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        return nodes, geometry

    def hideControlGrid(self, namePrefix=None, scene=None) -> int:
        """Remove the grid models (of one name prefix, or all) with their display and storage nodes; their count."""
        if scene is None:
            scene = self.sceneFor()
        models = [scene.GetNthNodeByClass(i, "vtkMRMLModelNode")
                  for i in range(scene.GetNumberOfNodesByClass("vtkMRMLModelNode"))]
        models = [m for m in models if m.GetAttribute(GRID_ATTRIBUTE) is not None
                  and (namePrefix is None or m.GetAttribute(GRID_ATTRIBUTE) == namePrefix)]
        for model in models:
            attached = [model.GetNthDisplayNode(i) for i in range(model.GetNumberOfDisplayNodes())]
            attached += [model.GetNthStorageNode(i) for i in range(model.GetNumberOfStorageNodes())]
            scene.RemoveNode(model)
            for node in attached:
                if node is not None and scene.IsNodePresent(node):
                    scene.RemoveNode(node)
        return len(models)


    # --- studies --------------------------------------------------------------------------------------------------

    def startStudy(self, fixedVolumeNode, movingVolumeNode, spec, outputFolder, executor="pool", workers=None,
                   scheduler=None, jobFolder=None, maskNode=None, initialTransformNode=None) -> jobs.Job:
        """Start (or resume) a study in a child process on ``executor`` (default: a process pool, one per core).

        ``maskNode`` and ``initialTransformNode`` (see startRegistration) are stored with the study, as
        ``spacingreg study --mask/--initial-transform`` store them, and every run uses them; resuming a study need
        not name them again, and naming others than it was made with is refused. Bad volumes, mask or initial
        transform, too little memory and a study folder that holds another study or cannot be written raise here,
        as their own errors, before any process starts (the study folder is created here, resumed by the child).
        """
        fixedImage, movingImage = self.imagesFromVolumeNodes(fixedVolumeNode, movingVolumeNode)
        images.check_pair(fixedImage, movingImage)
        mask, initial, _matrix = self._maskAndInitialTransform(maskNode, initialTransformNode, fixedVolumeNode,
                                                               fixedImage)
        if executor != "dask":  # Dask workers check their own memory
            concurrent = 1 if executor == "sequential" else min(workers or os.cpu_count() or 1, len(spec.runs()))
            for run in spec.runs():
                resources.check_registration_memory(fixedImage, movingImage, run.settings, concurrent=concurrent)
        create_or_open(outputFolder, spec, fixedImage, movingImage, mask=mask, initial_transform=initial)
        job = jobs.start_study(fixedImage, movingImage, spec, outputFolder, executor=executor, workers=workers,
                               scheduler=scheduler, folder=jobFolder, python=pythonExecutable(),
                               environment=childEnvironment())
        job.inputs = (fixedVolumeNode, movingVolumeNode)
        return job

    def finishStudy(self, job: jobs.Job, scene=None):
        """(store, analysis or None, report paths or None, dict of new nodes) of an ended study job (main thread).

        A cancelled study keeps its finished runs (in the store) and makes no nodes; a failed one raises as
        finishRegistration says.
        """
        store, analysis, reportPaths = job.study_result()
        nodes = {}
        if analysis is not None:
            nodes = self.createStudyNodes(store, analysis, reportPaths, scene=scene if scene is not None
                                          else self.sceneFor(*(job.inputs or ())))
        return store, analysis, reportPaths, nodes

    def createStudyNodes(self, store, analysis, reportPaths, scene=None, prefix="Study") -> dict:
        """New table, plot chart and spread-map volume nodes for a study (main thread)."""
        return study_nodes.createStudyNodes(scene if scene is not None else self.sceneFor(), store, analysis,
                                            reportPaths, prefix)

    def runStudy(self, fixedVolumeNode, movingVolumeNode, spec, outputFolder, progress=None, cancel=None,
                 executor="pool", maskNode=None, initialTransformNode=None):
        """The study on two volume nodes, waited for: (Job, dict of new nodes). ``progress`` gets every job event;
        setting ``cancel`` stops it, keeping the finished runs. ``maskNode``, ``initialTransformNode``: see
        startStudy."""
        job = self.startStudy(fixedVolumeNode, movingVolumeNode, spec, outputFolder, executor=executor,
                              maskNode=maskNode, initialTransformNode=initialTransformNode)
        try:
            job.run_to_end(progress, cancel)
            return job, {} if job.state == jobs.CANCELLED and job.result is None else self.finishStudy(job)[3]
        finally:
            job.remove_folder()

    # --- accuracy check -------------------------------------------------------------------------------------------

    def startAccuracyCheck(self, fixedVolumeNode, settings=None, outputFolder=None, candidates=None, seeds=4,
                           amplitudeVoxels=3.0, maskVolumeNode=None, executor="pool", jobFolder=None) -> jobs.Job:
        """Start the accuracy check (accuracy.check_accuracy) of ``settings`` on the fixed volume in a child process
        and return its Job; ``job.accuracy_result()`` is the accuracy.CheckOutcome. Bad options raise here."""
        import tempfile
        from dataclasses import asdict

        from .. import accuracy

        self._checkVolumeNode(fixedVolumeNode, "fixed")
        options = accuracy.CheckOptions(amplitude_voxels=amplitudeVoxels, seeds=seeds)
        image = bridge.imageFromVolumeNode(fixedVolumeNode)
        mask = None if maskVolumeNode is None else bridge.imageFromVolumeNode(maskVolumeNode)
        folder = outputFolder or tempfile.mkdtemp(prefix="SpacingRegistrationAccuracy-")
        job = jobs.start_accuracy_check(image, self.settingsFrom(settings), folder, candidates=candidates,
                                        options=asdict(options), mask=mask, executor=executor, folder=jobFolder,
                                        python=pythonExecutable(), environment=childEnvironment())
        job.inputs = (fixedVolumeNode,)
        return job

    def checkAccuracy(self, fixedVolumeNode, settings=None, outputFolder=None, candidates=None, seeds=4,
                      amplitudeVoxels=3.0, maskVolumeNode=None, executor="pool", progress=None, cancel=None):
        """The accuracy check of ``settings`` on the fixed volume, waited for: candidates ranked by their error
        against a known synthetic deformation of it, with advice. Returns accuracy.CheckOutcome (``ranking``,
        ``recommendations``, ``paths`` of the ranking files). ``outputFolder`` (default: a new temporary folder) is
        resumed when it holds the same check; ``progress(candidate, done, total, row)`` follows each finished run
        (``row`` holds its ``run_id``); ``cancel`` keeps the finished runs. Runs in a child process
        (startAccuracyCheck)."""
        job = self.startAccuracyCheck(fixedVolumeNode, settings, outputFolder, candidates, seeds, amplitudeVoxels,
                                      maskVolumeNode, executor)

        def onEvent(event):
            if progress is not None and event["event"] == "run":
                progress(event["candidate"], event["done"], event["total"], {"run_id": event["run_id"]})

        try:
            job.run_to_end(onEvent, cancel)
            return job.accuracy_result()
        finally:
            job.remove_folder()

    @staticmethod
    def applyRecommendation(settingsOrParameterValues, recommendation):
        """Apply a recommendation (advice.Recommendation or its dict): to a RegistrationSettings, a new one; to the
        panel's parameter values (a dict, parameter names), a copy in which exactly the parameters it names changed."""
        from .. import advice, parameters

        if isinstance(settingsOrParameterValues, RegistrationSettings):
            return advice.apply_recommendation(settingsOrParameterValues, recommendation)
        values = dict(settingsOrParameterValues)
        changed = advice.apply_recommendation(parameters.settings_from_parameter_values(values), recommendation)
        newValues = parameters.parameter_values_from_settings(changed)
        changes = recommendation.changes if isinstance(recommendation, advice.Recommendation) else recommendation["changes"]
        paths = advice.changed_paths(changes)
        values.update({name: newValues[name] for name, path in parameters.SETTING_PARAMETERS.items() if path in paths})
        return values


def _jsonDefault(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


#
# SpacingRegistrationTest
#
