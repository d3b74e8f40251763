"""Offscreen pictures of MRML slice and 3D views (volume, grid models) without the Qt application.

Rebuilds what qMRMLSliceView and qMRMLThreeDView wire up, from slicer-core classes only: a slice view is a
``vtkMRMLSliceLogic`` (reslices the background volume into an RGBA image shown by a 2D image actor, the
job CTK's vtkLightBoxRendererManager does in the application) plus a ``vtkMRMLModelSliceDisplayableManager``
that draws the slice intersections of model display nodes visible in 2D. A 3D view is a view node with a
``vtkMRMLModelDisplayableManager``. Works headless and inside Slicer (no ``slicer.app``, no Qt).

The displayable managers are grouped by hand rather than through the process-wide displayable-manager
factories, which inside Slicer carry every GUI manager and would be changed for all views if registered to.
The temporary view, composite, slice-model and layout nodes live in the scene while a renderer is open and
are removed by ``close()``; their views have a parent layout node so Slicer's layout manager leaves them alone.

On Linux without a display, render windows are created with ``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``
unless that variable is set (it is unset again right after): EGL renders without an X server and spares VTK's
X-then-EGL fallback warning; with a display (the Slicer application) VTK's own choice stands. Each renderer
owns one offscreen window, ``Finalize()``-d by ``close()``: rendering many times in one process is stable.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import slicer
import slicer.util
import vtk
from vtk.util import numpy_support

ORIENTATIONS = ("Axial", "Coronal", "Sagittal")
#: Slice-view background (RGB 0..1) outside the volume: Slicer's slice-view black.
SLICE_BACKGROUND = (0.0, 0.0, 0.0)
#: 3D-view camera: Slicer's anterior view turned by this azimuth and elevation (degrees).
CAMERA_AZIMUTH, CAMERA_ELEVATION = 35.0, 25.0

_EGL_VARIABLE = "VTK_DEFAULT_OPENGL_WINDOW"


class _OffscreenView:
    """One offscreen render window, renderer and displayable-manager group, plus the scene nodes it added."""

    def __init__(self, scene, size):
        self.scene = scene
        self.size = (int(size[0]), int(size[1]))
        self._temporaryNodes = []
        self.layoutNode = self._addTemporaryNode(slicer.vtkMRMLLayoutNode(), "SpacingRegistrationOffscreen")
        if scene.GetFirstNodeByClass("vtkMRMLInteractionNode") is None:  # displayable managers warn without one
            self._addTemporaryNode(slicer.vtkMRMLInteractionNode(), "Interaction")

        added = (sys.platform.startswith("linux") and _EGL_VARIABLE not in os.environ
                 and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"))
        if added:
            os.environ[_EGL_VARIABLE] = "vtkEGLRenderWindow"
        try:
            self.renderWindow = vtk.vtkRenderWindow()
        finally:
            if added:
                del os.environ[_EGL_VARIABLE]
        self.renderWindow.SetOffScreenRendering(True)
        # As Slicer: no multisampling (depth peeling drops translucent lines with it; slice lines stay exact).
        self.renderWindow.SetMultiSamples(0)
        self.renderWindow.SetSize(*self.size)
        self.renderer = vtk.vtkRenderer()
        self.renderWindow.AddRenderer(self.renderer)
        # Displayable managers that observe interaction dereference the window's interactor.
        self.interactor = vtk.vtkGenericRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.renderWindow)
        self.displayableManagers = slicer.vtkMRMLDisplayableManagerGroup()
        self.displayableManagers.SetRenderer(self.renderer)

    def _addTemporaryNode(self, node, name: str):
        """Add ``node`` to the scene (removed again by close())."""
        node.SetName(self.scene.GenerateUniqueName(name))
        node.SetHideFromEditors(True)
        node.SetSaveWithScene(False)
        self.scene.AddNode(node)
        self._temporaryNodes.append(node)
        return node

    def _addViewNode(self, node, name: str):
        """Add a view node that Slicer's layout manager ignores (it has a parent layout node)."""
        node.SetLayoutName(self.scene.GenerateUniqueName(name))
        node.SetAndObserveParentLayoutNodeID(self.layoutNode.GetID())
        return self._addTemporaryNode(node, node.GetLayoutName())

    def render(self, outputPath=None) -> np.ndarray:
        """Render and return the picture as an (H, W, 3) uint8 RGB array, top row first; write PNG if asked."""
        self.renderWindow.Render()
        grabber = vtk.vtkWindowToImageFilter()
        grabber.SetInput(self.renderWindow)
        grabber.SetInputBufferTypeToRGB()
        grabber.ReadFrontBufferOff()
        grabber.Update()
        image = grabber.GetOutput()
        if outputPath is not None:
            writer = vtk.vtkPNGWriter()
            writer.SetFileName(os.fspath(outputPath))
            writer.SetInputData(image)
            writer.Write()
        width, height, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
        return np.ascontiguousarray(pixels[::-1])

    def close(self) -> None:
        """Detach from the scene, remove the temporary nodes and release the OpenGL context."""
        if self.renderWindow is None:
            return
        self.displayableManagers.SetMRMLDisplayableNode(None)
        self._releaseLogic()
        for node in reversed(self._temporaryNodes):
            if self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)
        self._temporaryNodes.clear()
        self.renderer.RemoveAllViewProps()
        self.interactor.SetRenderWindow(None)
        self.renderWindow.Finalize()
        self.renderWindow = self.renderer = self.interactor = self.displayableManagers = None

    def _releaseLogic(self) -> None:
        """Disconnect subclass logics from the scene, registering the nodes they added as temporary."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SliceViewRenderer(_OffscreenView):
    """Offscreen slice view of a scene: a background volume with the 2D-visible models' slice intersections.

    Use as a context manager; ``show`` sets orientation, volume and field of view, ``render`` takes the picture
    (again after any scene change), ``sliceNode`` maps RAS to pixels through ``sliceRasToPixel``.
    """

    def __init__(self, scene, size=(512, 512)):
        super().__init__(scene, size)
        self.sliceNode = scene.CreateNodeByClass("vtkMRMLSliceNode")
        self.sliceNode.UnRegister(None)  # CreateNodeByClass returns a new reference
        for name, preset in (("Axial", slicer.vtkMRMLSliceNode.GetAxialSliceToRASMatrix),
                             ("Coronal", slicer.vtkMRMLSliceNode.GetCoronalSliceToRASMatrix),
                             ("Sagittal", slicer.vtkMRMLSliceNode.GetSagittalSliceToRASMatrix)):
            if not self.sliceNode.HasSliceOrientationPreset(name):
                matrix = vtk.vtkMatrix3x3()
                preset(matrix)
                self.sliceNode.AddSliceOrientationPreset(name, matrix)
        self._addViewNode(self.sliceNode, "SpacingRegistrationSlice")
        self.sliceNode.SetDimensions(*self.size, 1)

        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLScene(scene)
        self.logic.SetSliceNode(self.sliceNode)
        self.renderer.SetBackground(*SLICE_BACKGROUND)
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        # The slice image (RGBA 0..255 after the volume display node's window/level), behind the overlays.
        self._imageMapper = vtk.vtkImageMapper()
        self._imageMapper.SetColorWindow(255)
        self._imageMapper.SetColorLevel(127.5)
        imageActor = vtk.vtkActor2D()
        imageActor.SetMapper(self._imageMapper)
        imageActor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(imageActor)
        self.displayableManagers.AddDisplayableManager(slicer.vtkMRMLModelSliceDisplayableManager())
        self.displayableManagers.SetMRMLDisplayableNode(self.sliceNode)

    def show(self, orientation: str, backgroundVolumeNode, sliceOffset: float | None = None,
             margin: float = 0.0) -> None:
        """Show ``backgroundVolumeNode`` in ``orientation``, fitted as Slicer's FitSliceToAll does.

        ``sliceOffset`` (mm along the slice normal) defaults to the volume centre snapped to a voxel centre;
        ``margin`` widens the fitted field of view by that fraction on each side.
        """
        if orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {ORIENTATIONS}, not {orientation!r}")
        self.logic.GetSliceCompositeNode().SetBackgroundVolumeID(
            backgroundVolumeNode.GetID() if backgroundVolumeNode is not None else None)
        self.sliceNode.SetOrientation(orientation)
        self.logic.FitSliceToAll(*self.size)
        if margin:
            fieldOfView = self.sliceNode.GetFieldOfView()
            scale = 1.0 + 2.0 * margin
            self.sliceNode.SetFieldOfView(fieldOfView[0] * scale, fieldOfView[1] * scale, fieldOfView[2])
        if sliceOffset is not None:
            self.logic.SetSliceOffset(sliceOffset)
        self.sliceNode.UpdateMatrices()

    def render(self, outputPath=None) -> np.ndarray:
        """Render the slice; see _OffscreenView.render."""
        # The logic replaces its output pipeline when the layers change (the application's view re-reads it too).
        self._imageMapper.SetInputConnection(self.logic.GetImageDataConnection())
        return super().render(outputPath)

    def _releaseLogic(self) -> None:
        for node in (self.logic.GetSliceModelNode(), self.logic.GetSliceModelDisplayNode(),
                     self.logic.GetSliceModelTransformNode(), self.logic.GetSliceCompositeNode()):
            if node is not None:
                self._temporaryNodes.append(node)
        self.logic.SetMRMLScene(None)
        self.logic = None


class ThreeDViewRenderer(_OffscreenView):
    """Offscreen 3D view of a scene's 3D-visible models, optionally with a volume's axial slice as a plane."""

    def __init__(self, scene, size=(512, 512)):
        super().__init__(scene, size)
        self.viewNode = self._addViewNode(scene.CreateNodeByClass("vtkMRMLViewNode"), "SpacingRegistration3D")
        self.viewNode.UnRegister(None)
        self.viewNode.SetBoxVisible(False)
        self.viewNode.SetAxisLabelsVisible(False)
        self.renderer.GradientBackgroundOn()
        self.renderer.SetBackground(*self.viewNode.GetBackgroundColor())
        self.renderer.SetBackground2(*self.viewNode.GetBackgroundColor2())
        self.renderer.SetUseDepthPeeling(True)
        self.displayableManagers.AddDisplayableManager(slicer.vtkMRMLModelDisplayableManager())
        self.displayableManagers.SetMRMLDisplayableNode(self.viewNode)
        self._sliceView = None

    def showVolumeSlice(self, volumeNode, orientation: str = "Axial", sliceOffset: float | None = None) -> None:
        """Show ``volumeNode``'s slice (through its centre by default) as a textured plane in this view."""
        if self._sliceView is None:
            self._sliceView = SliceViewRenderer(self.scene, self.size)
        self._sliceView.show(orientation, volumeNode, sliceOffset)
        self._sliceView.sliceNode.SetSliceVisible(True)
        self._sliceView.sliceNode.AddThreeDViewID(self.viewNode.GetID())

    def resetCamera(self) -> None:
        """Look from anterior-right-superior at everything shown, fitted to the view."""
        camera = self.renderer.GetActiveCamera()
        camera.SetFocalPoint(0.0, 0.0, 0.0)
        camera.SetPosition(0.0, 1.0, 0.0)
        camera.SetViewUp(0.0, 0.0, 1.0)
        camera.Azimuth(CAMERA_AZIMUTH)
        camera.Elevation(CAMERA_ELEVATION)
        camera.OrthogonalizeViewUp()
        self.renderer.ResetCamera()

    def render(self, outputPath=None) -> np.ndarray:
        """Render with the clipping range fitted to what is shown; see _OffscreenView.render."""
        self.renderer.ResetCameraClippingRange()
        return super().render(outputPath)

    def _releaseLogic(self) -> None:
        if self._sliceView is not None:
            self._sliceView.close()
            self._sliceView = None


def renderSliceView(scene, orientation: str, backgroundVolumeNode, outputPath=None, size=(512, 512),
                    sliceOffset: float | None = None, margin: float = 0.0) -> np.ndarray:
    """(H, W, 3) uint8 picture of a slice view: the volume with the slice intersections of 2D-visible models.

    Fitted to the volume like Slicer's FitSliceToAll (``margin``: extra field of view per side, as a fraction);
    ``sliceOffset`` defaults to the volume centre. Written as PNG to ``outputPath`` if given.
    """
    with SliceViewRenderer(scene, size) as view:
        view.show(orientation, backgroundVolumeNode, sliceOffset, margin)
        return view.render(outputPath)


def render3DView(scene, outputPath=None, size=(512, 512), volumeNode=None) -> np.ndarray:
    """(H, W, 3) uint8 picture of a 3D view of the 3D-visible models, camera fitted to them.

    With ``volumeNode``, its axial slice through the centre is shown as a plane (as Slicer's slice-in-3D).
    Written as PNG to ``outputPath`` if given.
    """
    with ThreeDViewRenderer(scene, size) as view:
        if volumeNode is not None:
            view.showVolumeSlice(volumeNode)
        view.resetCamera()
        return view.render(outputPath)


def sliceRasToPixel(sliceNode, ras) -> np.ndarray:
    """Where RAS points (..., 3) land in a rendered slice picture: (..., 2) continuous (column, row).

    Rows count from the top as in the arrays returned here; pixel ``[int(row), int(column)]`` contains the point.
    Model intersections are drawn at these positions (2 px lines cover the pixel before too); as in Slicer, the
    slice image samples each pixel at its lower-left corner, half a pixel off its centre.
    """
    rasToXY = np.linalg.inv(slicer.util.arrayFromVTKMatrix(sliceNode.GetXYToRAS()))
    ras = np.asarray(ras, dtype=float)
    xy = ras @ rasToXY[:2, :3].T + rasToXY[:2, 3]
    return np.stack([xy[..., 0], sliceNode.GetDimensions()[1] - xy[..., 1]], axis=-1)
