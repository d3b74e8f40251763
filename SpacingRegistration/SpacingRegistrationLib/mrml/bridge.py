"""Bridge between SimpleITK (LPS) objects and MRML (RAS) nodes: volumes, BSpline transforms, grid models, .mrb.

SimpleITK/ITK physical space is LPS and Slicer's is RAS: points, direction rows and displacement vectors
change sign in x and y. Works headless (slicer-core) and inside Slicer; needs no ``slicer.app``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util
import vtk
from vtk.util import numpy_support

from ..grid import GridGeometry

#: LPS <-> RAS: diag(-1, -1, 1) (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: Quad faces of a box whose 8 corners are ordered as GridGeometry's: corner index = 4 i + 2 j + k.
BOX_FACES = ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3))
#: Display colours (RGB) of the grid models.
GRID_COLORS = {
    "controlPointsInside": (0.1, 0.8, 0.1),
    "controlPointsOutside": (1.0, 0.35, 0.0),
    "lattice": (0.55, 0.55, 0.85),
    "latticePlanes": (0.3, 0.6, 1.0),
    "domainBox": (1.0, 0.85, 0.0),
    "imageExtentBox": (0.0, 0.8, 0.9),
}
#: Control-point sphere radius as a fraction of the smallest control-point spacing.
POINT_RADIUS_FRACTION = 0.08


def lpsToRas(points) -> np.ndarray:
    """Points or vectors (..., 3) from LPS to RAS (the same flip maps RAS to LPS)."""
    return np.asarray(points, dtype=float) * LPS_TO_RAS.diagonal()


def createScene() -> slicer.vtkMRMLScene:
    """New scene with Slicer's default colour tables (the colour logic is kept alive on the scene)."""
    scene = slicer.vtkMRMLScene()
    colorLogic = slicer.vtkMRMLColorLogic()
    colorLogic.SetMRMLScene(scene)
    scene.colorLogic = colorLogic  # deleting the logic removes its colour nodes from the scene
    return scene


def volumeNodeFromImage(scene, image: sitk.Image, name: str) -> slicer.vtkMRMLScalarVolumeNode:
    """New scalar volume node (with display node) holding a copy of a 3D single-component image."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("volumeNodeFromImage needs a 3D scalar image")
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))
    node.SetSpacing(*image.GetSpacing())
    node.SetOrigin(*lpsToRas(image.GetOrigin()))
    node.SetIJKToRASDirectionMatrix(_matrix4x4(LPS_TO_RAS @ np.reshape(image.GetDirection(), (3, 3))))
    node.CreateDefaultDisplayNodes()
    return node


def imageFromVolumeNode(volumeNode) -> sitk.Image:
    """Copy of a scalar volume node's voxels (native type) with its LPS geometry; parent transforms are ignored."""
    if volumeNode.GetImageData() is None or volumeNode.GetImageData().GetNumberOfScalarComponents() != 1:
        raise ValueError(f"{volumeNode.GetName()} has no single-component image data")
    image = sitk.GetImageFromArray(np.array(slicer.util.arrayFromVolume(volumeNode)))
    directions = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASDirectionMatrix(directions)
    image.SetSpacing(volumeNode.GetSpacing())
    image.SetOrigin(lpsToRas(volumeNode.GetOrigin()).tolist())
    image.SetDirection((LPS_TO_RAS @ _array3x3(directions)).ravel().tolist())
    return image


def bsplineTransformNodeFromSitk(scene, transform: sitk.Transform, name: str) -> slicer.vtkMRMLBSplineTransformNode:
    """New BSpline transform node equivalent to a 3D cubic SimpleITK BSpline, as Slicer's ITK reader builds it.

    The ITK BSpline maps fixed (LPS) points to moving points, so it becomes the node's TransformFromParent:
    ``node.GetTransformFromParent().TransformPoint(ras(p)) == ras(transform.TransformPoint(p))`` inside the
    transform domain (outside it ITK is the identity while VTK keeps evaluating the spline).
    """
    bspline = sitk.BSplineTransform(transform)
    if bspline.GetDimension() != 3 or bspline.GetOrder() != 3:
        raise ValueError("only 3D cubic BSpline transforms have an MRML equivalent")
    fixed = np.asarray(bspline.GetFixedParameters(), dtype=float)
    size = fixed[:3].astype(int)
    coefficients = vtk.vtkImageData()
    coefficients.SetExtent(0, size[0] - 1, 0, size[1] - 1, 0, size[2] - 1)
    coefficients.SetSpacing(*fixed[6:9])
    coefficients.SetOrigin(*lpsToRas(fixed[3:6]))
    vectors = lpsToRas(np.reshape(bspline.GetParameters(), (3, -1)).T)  # ITK: all x, all y, all z
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(vectors), deep=True, array_type=vtk.VTK_DOUBLE)
    coefficients.GetPointData().SetScalars(scalars)

    transformVtk = slicer.vtkOrientedBSplineTransform()
    transformVtk.SetBorderModeToZero()
    transformVtk.SetCoefficientData(coefficients)
    transformVtk.SetGridDirectionMatrix(_matrix4x4(LPS_TO_RAS @ fixed[9:].reshape(3, 3)))
    node = scene.AddNewNodeByClass("vtkMRMLBSplineTransformNode", name)
    node.SetAndObserveTransformFromParent(transformVtk)
    node.CreateDefaultDisplayNodes()
    return node


def sitkBSplineFromTransformNode(node) -> sitk.BSplineTransform:
    """SimpleITK BSpline from a node whose TransformFromParent is a plain vtkOrientedBSplineTransform."""
    transformVtk = node.GetTransformFromParent()
    if transformVtk is None or not transformVtk.IsA("vtkOrientedBSplineTransform"):
        raise ValueError(f"{node.GetName()} has no BSpline as its TransformFromParent")
    transformVtk.Update()
    if transformVtk.GetInverseFlag() or transformVtk.GetBulkTransformMatrix() is not None:
        raise ValueError(f"{node.GetName()}: inverted BSplines and bulk transforms have no sitk.BSplineTransform")
    coefficients = transformVtk.GetCoefficientData()
    directions = transformVtk.GetGridDirectionMatrix()
    gridDirection = np.eye(3) if directions is None else _array3x3(directions)
    fixed = np.concatenate([coefficients.GetDimensions(), lpsToRas(coefficients.GetOrigin()),
                            coefficients.GetSpacing(), (LPS_TO_RAS @ gridDirection).ravel()])
    vectors = numpy_support.vtk_to_numpy(coefficients.GetPointData().GetScalars()).reshape(-1, 3)
    vectors = lpsToRas(vectors) * transformVtk.GetDisplacementScale()
    bspline = sitk.BSplineTransform(3, 3)
    bspline.SetFixedParameters(fixed.tolist())
    bspline.SetParameters(vectors.T.ravel().tolist())
    return bspline


def sitkAffineFromTransformNode(node) -> sitk.AffineTransform:
    """The fixed-to-moving (LPS) affine of a linear transform node, as Slicer writes it to an ITK file.

    The moving volume placed under ``node`` is aligned when ``node``'s TransformFromParent (in world, through its
    own parents) maps fixed RAS points to moving RAS points: that is the ITK (resampling) direction, as for the
    BSpline (see bsplineTransformNodeFromSitk)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetMatrixTransformFromWorld(matrix)
    homogeneous = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    flip = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS, its own inverse
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((flip @ homogeneous[:3, :3] @ flip).ravel().tolist())
    affine.SetTranslation((flip @ homogeneous[:3, 3]).tolist())
    return affine


def controlGridModelNodes(scene, geometry: GridGeometry, namePrefix: str,
                          pointRadius: float | None = None) -> dict[str, slicer.vtkMRMLModelNode]:
    """New model nodes (with display nodes) drawing a control grid in RAS, keyed as GRID_COLORS.

    Control points are spheres (``pointRadius`` defaults to POINT_RADIUS_FRACTION of the smallest grid
    spacing). The lattice is drawn twice: as lines for 3D views and as planes (quads) whose intersections
    show as lines in slice views. Boxes are closed surfaces: wireframe in 3D, outlines in slice views.
    """
    if pointRadius is None:
        pointRadius = POINT_RADIUS_FRACTION * min(geometry.grid_spacing)
    points = lpsToRas(geometry.control_points)
    inside = np.asarray(geometry.control_points_inside, dtype=bool)
    lattice = points.reshape(*geometry.points_per_axis[::-1], 3).transpose(2, 1, 0, 3)  # [i, j, k]
    polyData = {
        "controlPointsInside": _spheres(points[inside], pointRadius),
        "controlPointsOutside": _spheres(points[~inside], pointRadius),
        "lattice": _latticeLines(lattice),
        "latticePlanes": _latticePlanes(lattice),
        "domainBox": _box(lpsToRas(geometry.domain_corners)),
        "imageExtentBox": _box(lpsToRas(geometry.image_corners)),
    }
    names = {
        "controlPointsInside": "control points inside image", "controlPointsOutside": "control points outside image",
        "lattice": "lattice", "latticePlanes": "lattice planes", "domainBox": "transform domain",
        "imageExtentBox": "image extent",
    }
    nodes = {}
    for key, data in polyData.items():
        node = scene.AddNewNodeByClass("vtkMRMLModelNode", f"{namePrefix} {names[key]}")
        node.SetAndObservePolyData(data)
        node.CreateDefaultDisplayNodes()
        _styleGridDisplay(node.GetDisplayNode(), key)
        nodes[key] = node
    return nodes


def saveSceneToMrb(scene, path) -> Path:
    """Write the scene with all its data to a .mrb bundle, adding default storage nodes where missing."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLStorableNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLStorableNode")
        if node.GetSaveWithScene() and node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
    path = Path(path)
    messages = slicer.vtkMRMLMessageCollection()
    if not scene.WriteToMRB(str(path), None, messages):
        raise RuntimeError(f"Could not write {path}: {messages.GetAllMessagesAsString()}")
    return path


def loadSceneFromMrb(path, scene=None) -> slicer.vtkMRMLScene:
    """Read a .mrb bundle into ``scene`` (default: a new createScene()), unpacking through a temporary cache."""
    scene = createScene() if scene is None else scene
    messages = slicer.vtkMRMLMessageCollection()
    with tempfile.TemporaryDirectory(prefix="mrb-cache-") as cacheDirectory:
        cacheManager = slicer.vtkCacheManager()
        cacheManager.SetRemoteCacheDirectory(cacheDirectory)
        dataIOManager = slicer.vtkDataIOManager()
        dataIOManager.SetCacheManager(cacheManager)
        scene.SetDataIOManager(dataIOManager)
        workingDirectory = os.getcwd()  # ReadFromMRB changes it, and leaves it there when reading fails
        try:
            loaded = scene.ReadFromMRB(str(path), False, messages)
        finally:
            os.chdir(workingDirectory)
            scene.SetDataIOManager(None)
    if not loaded:
        raise RuntimeError(f"Could not read {path}: {messages.GetAllMessagesAsString()}")
    return scene


def _matrix4x4(matrix3x3: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(3):
        for column in range(3):
            matrix.SetElement(row, column, float(matrix3x3[row, column]))
    return matrix


def _array3x3(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(3)] for row in range(3)])


def _vtkPoints(points: np.ndarray) -> vtk.vtkPoints:
    vtkPoints = vtk.vtkPoints()
    vtkPoints.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(points, dtype=float).reshape(-1, 3), deep=True))
    return vtkPoints


def _cells(connectivity: list[list[int]]) -> vtk.vtkCellArray:
    cells = vtk.vtkCellArray()
    for cell in connectivity:
        cells.InsertNextCell(len(cell), cell)
    return cells


def _spheres(centres: np.ndarray, radius: float) -> vtk.vtkPolyData:
    """One sphere surface per centre (double-precision points)."""
    source = vtk.vtkSphereSource()
    source.SetRadius(radius)
    source.SetThetaResolution(12)
    source.SetPhiResolution(8)
    centresData = vtk.vtkPolyData()
    centresData.SetPoints(_vtkPoints(centres))
    glyphs = vtk.vtkGlyph3D()
    glyphs.SetSourceConnection(source.GetOutputPort())
    glyphs.SetInputData(centresData)
    glyphs.SetScaleModeToDataScalingOff()
    glyphs.SetOutputPointsPrecision(vtk.vtkAlgorithm.DOUBLE_PRECISION)
    glyphs.Update()
    return glyphs.GetOutput()


def _latticeLines(lattice: np.ndarray) -> vtk.vtkPolyData:
    """One polyline per row of control points along each grid axis; points are the control points."""
    ids = np.arange(lattice[..., 0].size).reshape(lattice.shape[:3], order="F")  # x fastest, as the points
    rows = []
    for axis in range(3):
        moved = np.moveaxis(ids, axis, -1)
        rows.extend(moved.reshape(-1, moved.shape[-1]).tolist())
    data = vtk.vtkPolyData()
    data.SetPoints(_vtkPoints(lattice.transpose(2, 1, 0, 3)))
    data.SetLines(_cells(rows))
    return data


def _latticePlanes(lattice: np.ndarray) -> vtk.vtkPolyData:
    """One quad per control-point plane of each axis, spanning the lattice in the other two axes."""
    corners = []
    for axis in range(3):
        for position in range(lattice.shape[axis]):
            plane = np.take(lattice, position, axis=axis)
            corners.extend([plane[0, 0], plane[-1, 0], plane[-1, -1], plane[0, -1]])
    data = vtk.vtkPolyData()
    data.SetPoints(_vtkPoints(np.array(corners)))
    data.SetPolys(_cells([[4 * q, 4 * q + 1, 4 * q + 2, 4 * q + 3] for q in range(len(corners) // 4)]))
    return data


def _box(corners: np.ndarray) -> vtk.vtkPolyData:
    """Closed six-quad surface through 8 corners ordered as GridGeometry's."""
    data = vtk.vtkPolyData()
    data.SetPoints(_vtkPoints(corners))
    data.SetPolys(_cells([list(face) for face in BOX_FACES]))
    return data


def _styleGridDisplay(display, key: str) -> None:
    display.SetColor(*GRID_COLORS[key])
    display.SetSliceIntersectionThickness(2)
    if key == "lattice":
        display.SetVisibility2D(False)  # line cells show only as dots in slice views
        display.SetLineWidth(2)
        display.SetOpacity(0.6)
        return
    display.SetVisibility2D(True)
    if key == "latticePlanes":
        display.SetVisibility3D(False)  # the lattice lines show it in 3D
        display.SetSliceIntersectionThickness(1)
    elif key in ("domainBox", "imageExtentBox"):
        display.SetRepresentation(slicer.vtkMRMLDisplayNode.WireframeRepresentation)
        display.SetLineWidth(2)
