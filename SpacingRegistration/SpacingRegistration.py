"""Spacing Registration: the scripted module (panel, logic and self-test) over SpacingRegistrationLib.

The module follows the Extension Wizard template: ``SpacingRegistration`` (module description),
``SpacingRegistrationParameterNode`` (parameterNodeWrapper, only where qt exists), ``SpacingRegistrationWidget``
(the panel), ``SpacingRegistrationLogic`` (GUI-free, callable from the Python console with explicit nodes) and
``SpacingRegistrationTest``.

The file also imports in a headless Python with slicer-core only (no qt, no slicer.app): the Logic and Test
classes then fall back to plain base classes and work on the scene of the nodes they are given.
"""

import ast
import importlib
import json
import logging
import os
import pathlib
import sys
import tempfile
import threading
import traceback
import unittest
from typing import Annotated

import numpy as np
import SimpleITK as sitk
import vtk

import slicer
import slicer.util

# --- Optional parts of the Slicer application: absent in a headless slicer-core Python. ---------------------------
try:
    import ctk
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

        def resourcePath(self, filename):
            return os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", filename)

        def setup(self):
            pass

        def onReload(self):
            pass

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

from SpacingRegistrationLib import (describe, images, mrml_bridge, registration, report, study_nodes, study_runner,
                                    variability)
from SpacingRegistrationLib.diagnostics import STOP_REASON_TEXT
from SpacingRegistrationLib.grid import grid_geometry, initial_bspline, mesh_size_for
from SpacingRegistrationLib.settings import (
    GRID_SPECIFICATIONS,
    INTERPOLATORS,
    OPTIMIZERS,
    SAMPLING_STRATEGIES,
    SCALES_ESTIMATORS,
    RegistrationSettings,
    SettingsError,
    from_dict,
    to_dict,
)

#: Models drawn by showControlGrid are named "<prefix> <part>"; showing a grid again replaces them.
GRID_NAME_PREFIX = "SpacingRegistration grid"
#: Node attribute holding the name prefix of a grid model (to find and replace earlier grid models).
GRID_ATTRIBUTE = "SpacingRegistration.GridPrefix"
#: Table-node attribute holding the JSON summary of the registration (RegistrationResult.summary()).
SUMMARY_ATTRIBUTE = "SpacingRegistration.Summary"
#: Table-node attribute holding the plain-text diagnosis (describe.describe_result).
DESCRIPTION_ATTRIBUTE = "SpacingRegistration.Description"
#: Node-reference role from the output transform to its diagnosis table.
DIAGNOSIS_REFERENCE_ROLE = "spacingRegistrationDiagnosis"
#: Diagnosis-table columns and the row name of each warning.
TABLE_COLUMNS = ("Name", "Value")
WARNING_ROW = "warning"
#: Milliseconds between two polls of a running registration by the panel.
POLL_INTERVAL_MS = 25
#: Seconds of each poll spent waiting on the worker. Slicer's main thread holds the GIL while Qt idles (PythonQt runs
#: without thread support), so a Python worker thread only runs while the main thread runs Python or waits: without
#: this slice a registration ran 6.7x slower in a simulation (GIL held between ticks), with it 1.4x.
WORKER_SLICE_SECONDS = 0.015

# --- Parameters of the panel ----------------------------------------------------------------------------------------
#: Parameter-node parameters that hold nodes.
NODE_PARAMETERS = ("fixedVolume", "movingVolume", "outputTransform", "diagnosisTable")

#: Parameter -> RegistrationSettings field ("a.b" for nested optimizer settings, "mesh_size.0" for one axis).
#: Every field of RegistrationSettings has a parameter (and so a widget).
SETTING_PARAMETERS = {
    "gridSpecification": "grid_specification",
    "meshSizeX": "mesh_size.0",
    "meshSizeY": "mesh_size.1",
    "meshSizeZ": "mesh_size.2",
    "gridSpacingMm": "grid_spacing_mm",
    "gridSpacingVoxels": "grid_spacing_voxels",
    "histogramBins": "histogram_bins",
    "samplingStrategy": "sampling_strategy",
    "samplingPercentage": "sampling_percentage",
    "samplingSeed": "sampling_seed",
    "interpolator": "interpolator",
    "optimizer": "optimizer",
    "lbfgs2SolutionAccuracy": "lbfgs2.solution_accuracy",
    "lbfgs2NumberOfIterations": "lbfgs2.number_of_iterations",
    "lbfgs2HessianApproximateAccuracy": "lbfgs2.hessian_approximate_accuracy",
    "lbfgs2DeltaConvergenceDistance": "lbfgs2.delta_convergence_distance",
    "lbfgs2DeltaConvergenceTolerance": "lbfgs2.delta_convergence_tolerance",
    "lbfgs2LineSearchMaximumEvaluations": "lbfgs2.line_search_maximum_evaluations",
    "lbfgs2LineSearchMinimumStep": "lbfgs2.line_search_minimum_step",
    "lbfgs2LineSearchMaximumStep": "lbfgs2.line_search_maximum_step",
    "lbfgs2LineSearchAccuracy": "lbfgs2.line_search_accuracy",
    "lbfgsbGradientConvergenceTolerance": "lbfgsb.gradient_convergence_tolerance",
    "lbfgsbNumberOfIterations": "lbfgsb.number_of_iterations",
    "lbfgsbMaximumNumberOfCorrections": "lbfgsb.maximum_number_of_corrections",
    "lbfgsbMaximumNumberOfFunctionEvaluations": "lbfgsb.maximum_number_of_function_evaluations",
    "lbfgsbCostFunctionConvergenceFactor": "lbfgsb.cost_function_convergence_factor",
    "gradientDescentLearningRate": "gradient_descent.learning_rate",
    "gradientDescentNumberOfIterations": "gradient_descent.number_of_iterations",
    "gradientDescentConvergenceMinimumValue": "gradient_descent.convergence_minimum_value",
    "gradientDescentConvergenceWindowSize": "gradient_descent.convergence_window_size",
    "gradientDescentEstimateLearningRate": "gradient_descent.estimate_learning_rate",
    "gradientDescentMaximumStepSize": "gradient_descent.maximum_step_size_in_physical_units",
    "scalesEstimator": "scales_estimator",
    "scalesCentralRegionRadius": "scales_central_region_radius",
    "scalesSmallParameterVariation": "scales_small_parameter_variation",
    "numberOfThreads": "number_of_threads",
    "numberOfWorkUnits": "number_of_work_units",
    "spacingOverride": "spacing_override",
    "normalisedUnits": "normalised_units",
    "reproducible": "reproducible",
}
#: Parameters shown as text because their values span many decades (1e-20 .. 1e20); any float notation is accepted.
SCIENTIFIC_PARAMETERS = (
    "lbfgs2SolutionAccuracy", "lbfgs2DeltaConvergenceTolerance", "lbfgs2LineSearchMinimumStep",
    "lbfgs2LineSearchMaximumStep", "lbfgs2LineSearchAccuracy", "lbfgsbGradientConvergenceTolerance",
    "lbfgsbCostFunctionConvergenceFactor", "gradientDescentConvergenceMinimumValue",
)
#: Parameter value standing for the setting None (the spin boxes show it with their specialValueText).
NONE_VALUES = {"samplingSeed": -1, "numberOfThreads": 0, "numberOfWorkUnits": 0, "spacingOverride": 0.0}
#: Study-section parameters (the study modes are units-threads pairs, one check box each).
STUDY_MODE_PARAMETERS = {
    "studyModeNativeDefault": "native-default",
    "studyModeNativeReproducible": "native-reproducible",
    "studyModeNormalisedDefault": "normalised-default",
    "studyModeNormalisedReproducible": "normalised-reproducible",
}
STUDY_PARAMETERS = ("studySpacings", "studyRepeats", *STUDY_MODE_PARAMETERS, "studyFolder")
#: Every parameter of SpacingRegistrationParameterNode.
PARAMETER_NAMES = (*NODE_PARAMETERS, *SETTING_PARAMETERS, *STUDY_PARAMETERS)


def _formatScientific(value: float) -> str:
    return f"{value:.12g}"


def settingsFromParameterValues(values: dict) -> RegistrationSettings:
    """RegistrationSettings from parameter values (as the panel's parameter node holds them).

    Parameters missing from ``values`` keep the settings' defaults; values that are not settings are ignored.
    Raises SettingsError naming the parameter when a text field does not hold a number.
    """
    settings = to_dict(RegistrationSettings())
    for name, path in SETTING_PARAMETERS.items():
        if name not in values:
            continue
        value = values[name]
        if name in NONE_VALUES and value == NONE_VALUES[name]:
            value = None
        elif name in SCIENTIFIC_PARAMETERS:
            try:
                value = float(str(value).strip())
            except ValueError:
                raise SettingsError(f"{name} ({path}) must be a number, got {value!r}") from None
        _setPath(settings, path, value)
    return from_dict(settings)


def parameterValuesFromSettings(settings: RegistrationSettings) -> dict:
    """Inverse of settingsFromParameterValues: the value of every settings parameter."""
    values = to_dict(settings)
    result = {}
    for name, path in SETTING_PARAMETERS.items():
        value = _getPath(values, path)
        if value is None:
            value = NONE_VALUES[name]
        elif name in SCIENTIFIC_PARAMETERS:
            value = _formatScientific(value)
        result[name] = value
    return result


def _setPath(values: dict, path: str, value):
    first, _dot, rest = path.partition(".")
    if not rest:
        values[first] = value
    elif rest.isdigit():
        values[first] = list(values[first])
        values[first][int(rest)] = value
    else:
        values[first] = {**values[first], rest: value}


def _getPath(values: dict, path: str):
    first, _dot, rest = path.partition(".")
    if not rest:
        return values[first]
    if rest.isdigit():
        return values[first][int(rest)]
    return values[first][rest]


def parseSpacings(text: str) -> tuple:
    """Study spacings from text such as ``"1, 4, 10"`` or ``"0.5 1 2"`` (mm)."""
    parts = [p for p in str(text).replace(",", " ").replace(";", " ").split() if p]
    if not parts:
        raise SettingsError("the study needs at least one spacing")
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise SettingsError(f"study spacings must be numbers separated by commas or spaces, got {text!r}") from None


def studyModesFromParameterValues(values: dict) -> tuple:
    """The checked study modes, in the StudySpec order."""
    return tuple(mode for name, mode in STUDY_MODE_PARAMETERS.items() if values.get(name))


def studySpecFromParameterValues(values: dict, settings: RegistrationSettings | None = None):
    """A StudySpec (SpacingRegistrationLib.study_spec) from the Study section's parameter values."""
    from SpacingRegistrationLib.study_spec import StudySpec

    settings = settings if settings is not None else settingsFromParameterValues(values)
    return StudySpec(settings=settings, spacings=parseSpacings(values["studySpacings"]),
                     repeats=int(values["studyRepeats"]), modes=studyModesFromParameterValues(values))


def expectedIterations(settings: RegistrationSettings) -> int:
    """Iterations the optimizer is limited to (0 when unknown: LBFGS2 without a limit runs until it stops)."""
    if settings.optimizer == "lbfgs2":
        return settings.lbfgs2.number_of_iterations
    if settings.optimizer == "lbfgsb":
        return settings.lbfgsb.number_of_iterations
    return settings.gradient_descent.number_of_iterations


def _number(value, digits: int = 6) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}g}"


def _vector(values, digits: int = 6) -> str:
    return "[" + ", ".join(_number(v, digits) for v in values) + "]"


def diagnosisRows(result) -> list:
    """(name, value) text rows of a RegistrationResult's diagnosis, warnings last (one row each)."""
    s = result.settings
    mode = ", ".join(name for name, on in (("normalised units", s.normalised_units), ("reproducible", s.reproducible))
                     if on) or "native"
    rows = [
        ("status", "cancelled: partial result" if result.cancelled else "finished"),
        ("spacing registered (mm)", _vector(result.spacing)),
        ("spacing override (mm)", "off" if s.spacing_override is None else _number(s.spacing_override)),
        ("mode", mode),
        ("optimizer", s.optimizer),
        ("scales estimator", s.scales_estimator),
        ("sampling", f"{s.sampling_strategy} {s.sampling_percentage:g} % seed "
                     f"{'wall clock' if s.sampling_seed is None else s.sampling_seed}"),
        ("mesh size", str(list(result.grid.mesh_size))),
        ("iterations per libLBFGS run", f"{result.iterations_per_run} (total {sum(result.iterations_per_run)})"),
        ("stop reason", STOP_REASON_TEXT.get(result.stop_reason, result.stop_reason)),
        ("stop description", result.stop_description),
        ("moved", str(result.moved)),
        ("largest coefficient (voxels)", _number(np.abs(result.coefficients_voxels).max())),
        ("largest coefficient (mm)", _number(np.abs(result.coefficients_mm).max())),
        ("metric reported", _number(result.metric_reported, 10)),
        ("metric re-evaluated at the result", _number(result.metric_reevaluated, 10)),
    ]
    if result.plausibility is not None:
        p = result.plausibility
        rows += [
            ("dense metric at identity", _number(p.metric_identity)),
            ("dense metric at the result", _number(p.metric_result)),
            ("dense metric improvement", _number(p.improvement)),
            ("min Jacobian determinant", _number(p.min_jacobian_determinant)),
            ("folding", str(bool(p.folding))),
        ]
    if result.displacement is not None:
        d = result.displacement
        rows += [
            ("displacement mean / max (voxels)", f"{_number(d.mean_voxels, 4)} / {_number(d.max_voxels, 4)}"),
            ("displacement mean / max (mm)", f"{_number(d.mean_mm, 4)} / {_number(d.max_mm, 4)}"),
        ]
    lbfgs = result.optimizer.get("lbfgs2", {}) if isinstance(result.optimizer, dict) else {}
    if "gradient_slope_ratio" in lbfgs:
        rows += [
            ("first trial step (voxels)", _number(lbfgs["first_trial_step_voxels"], 4)),
            ("gradient/slope ratio", _number(lbfgs["gradient_slope_ratio"], 4)),
            ("lineSearchAccuracy x ratio", _number(lbfgs["sufficient_decrease_load"], 3)),
        ]
    g = result.grid
    rows += [
        ("control points inside / outside the image", f"{g.inside_count} / {g.outside_count}"),
        ("image inside the transform domain", f"{g.coverage:.1%}"),
    ]
    t = result.timing
    rows += [
        ("time wall / CPU (s)", f"{_number(t['total_s'], 3)} / {_number(t['cpu_s'], 3)}"),
        ("time per iteration (s)", _number(t["per_iteration_s"], 3)),
    ]
    threads = result.threading
    rows += [
        ("threads", f"{threads['threader']} threader, global default {threads['global_default_threads']}, "
                    f"work units {threads['work_units']}"),
        ("SimpleITK", str(result.versions.get("simpleitk", ""))),
    ]
    rows += [(WARNING_ROW, w) for w in result.warnings]
    return rows


def transformInVolumeUnits(transform, spacingOverride, fixedSpacing, fixedOrigin, movingSpacing, movingOrigin):
    """``(transform, note, warnings)``: a result transform mapped back from override units to the volumes' own.

    A registration with a spacing override s ran on copies of the images with spacing [s, s, s] (origin and
    direction kept); its transform maps those copies, not the volumes. When both volumes have the same isotropic
    spacing v, the copies are the volumes scaled by s/v about their origins, and the transform in the volumes' units
    is again a BSpline: grid origin O_f + f (g - O_f), grid spacing f h, coefficients f c + (1 - f)(O_m - O_f) with
    f = v/s (exact inside the transform domain, by the partition of unity). Otherwise the transform is returned
    unchanged with a warning. Origins are LPS.
    """
    if spacingOverride is None:
        return transform, "", []
    fixedSpacing = np.asarray(fixedSpacing, dtype=float)
    movingSpacing = np.asarray(movingSpacing, dtype=float)
    reference = fixedSpacing[0]
    if not (np.allclose(fixedSpacing, reference, rtol=1e-9, atol=0)
            and np.allclose(movingSpacing, reference, rtol=1e-9, atol=0)):
        return transform, f"spacing override {spacingOverride:g} mm units (not converted)", [
            f"The registration ran with a spacing override of {spacingOverride:g} mm and the volumes do not share "
            f"one isotropic spacing (fixed {list(fixedSpacing)}, moving {list(movingSpacing)}): the output "
            "transform is in the override units and does not align the volumes in Slicer."]
    factor = reference / float(spacingOverride)
    bspline = sitk.BSplineTransform(transform)
    dimension = bspline.GetDimension()
    fixedOrigin = np.asarray(fixedOrigin, dtype=float)
    movingOrigin = np.asarray(movingOrigin, dtype=float)
    parameters = np.asarray(bspline.GetFixedParameters(), dtype=float)
    gridOrigin = parameters[dimension:2 * dimension]
    parameters[dimension:2 * dimension] = fixedOrigin + factor * (gridOrigin - fixedOrigin)
    parameters[2 * dimension:3 * dimension] *= factor
    coefficients = np.reshape(bspline.GetParameters(), (dimension, -1)) * factor
    coefficients += ((1.0 - factor) * (movingOrigin - fixedOrigin))[:, None]
    converted = sitk.BSplineTransform(dimension, bspline.GetOrder())
    converted.SetFixedParameters(parameters.tolist())
    converted.SetParameters(coefficients.ravel().tolist())
    return converted, f"converted from the {spacingOverride:g} mm override to the volumes' {reference:g} mm", []


def librarySubmodulesInDependencyOrder(libraryDirectory=None) -> list:
    """Names of the SpacingRegistrationLib submodules, each after the submodules it imports at module level."""
    libraryDirectory = pathlib.Path(libraryDirectory or pathlib.Path(__file__).resolve().parent / "SpacingRegistrationLib")
    dependencies = {}
    for path in sorted(libraryDirectory.glob("*.py")):
        if path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for statement in tree.body:  # module level only: TYPE_CHECKING blocks and functions do not count
            for node in ([statement] if not isinstance(statement, ast.Try) else statement.body):
                if isinstance(node, ast.ImportFrom) and node.level == 1:
                    names.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        dependencies[path.stem] = names
    order, placed = [], set()
    while len(order) < len(dependencies):
        ready = [n for n in sorted(dependencies) if n not in placed and dependencies[n] & set(dependencies) <= placed]
        if not ready:  # an import cycle: place the rest alphabetically
            ready = [n for n in sorted(dependencies) if n not in placed][:1]
        for name in ready:
            order.append(name)
            placed.add(name)
    return order


def reloadLibrary():
    """importlib.reload every loaded SpacingRegistrationLib submodule, dependencies first."""
    package = sys.modules.get("SpacingRegistrationLib")
    if package is None:
        return
    importlib.reload(package)
    for name in librarySubmodulesInDependencyOrder():
        module = sys.modules.get(f"SpacingRegistrationLib.{name}")
        if module is not None:
            importlib.reload(module)


class BackgroundJob:
    """Runs ``function(*args, progress=..., cancel=..., **kwargs)`` in a worker thread for a panel to poll.

    SimpleITK releases the GIL while it registers, so the main thread stays responsive. The worker must not
    touch MRML: the main thread reads the inputs before starting the job and creates the outputs after ``done``.
    Inside Slicer the main thread must also give the worker time to run Python code: ``wait(seconds)`` releases
    the GIL while it waits (see WORKER_SLICE_SECONDS).
    """

    def __init__(self, function, *args, **kwargs):
        self.cancelEvent = threading.Event()
        self.progressCount = 0
        self.lastProgress = None
        self.result = None
        self.error = None
        self.errorTraceback = ""
        self._function, self._args, self._kwargs = function, args, kwargs
        self._thread = threading.Thread(target=self._run, name="SpacingRegistration worker", daemon=True)
        self._started = False

    def start(self):
        self._started = True
        self._thread.start()
        return self

    def _onProgress(self, record):
        self.lastProgress = record
        self.progressCount += 1

    def _run(self):
        try:
            self.result = self._function(*self._args, progress=self._onProgress, cancel=self.cancelEvent, **self._kwargs)
        except BaseException as error:  # reported to the main thread
            self.error = error
            self.errorTraceback = traceback.format_exc()

    def cancel(self):
        self.cancelEvent.set()

    @property
    def cancelRequested(self) -> bool:
        return self.cancelEvent.is_set()

    @property
    def done(self) -> bool:
        return self._started and not self._thread.is_alive()

    def wait(self, timeout=None) -> bool:
        """Block until the job ends (or ``timeout`` seconds pass); True when it ended."""
        if self._started:
            self._thread.join(timeout)
        return self.done


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

if parameterNodeWrapper is not None:
    from slicer import vtkMRMLBSplineTransformNode, vtkMRMLScalarVolumeNode, vtkMRMLTableNode

    @parameterNodeWrapper
    class SpacingRegistrationParameterNode:
        """The panel's parameters; defaults are RegistrationSettings' (the report's set-up).

        Parameter names are listed in PARAMETER_NAMES; SETTING_PARAMETERS maps them to settings fields. Values
        standing for None: samplingSeed -1 (wall clock), numberOfThreads / numberOfWorkUnits 0 (default),
        spacingOverride 0 (off). Tolerances and step bounds are text (any float notation).
        """

        # Inputs and outputs
        fixedVolume: vtkMRMLScalarVolumeNode
        movingVolume: vtkMRMLScalarVolumeNode
        outputTransform: vtkMRMLBSplineTransformNode
        diagnosisTable: vtkMRMLTableNode
        # Control grid
        gridSpecification: Annotated[str, Choice(GRID_SPECIFICATIONS)] = "mesh_size"
        meshSizeX: Annotated[int, WithinRange(1, 100)] = 2
        meshSizeY: Annotated[int, WithinRange(1, 100)] = 2
        meshSizeZ: Annotated[int, WithinRange(1, 100)] = 2
        gridSpacingMm: Annotated[float, WithinRange(0.01, 10000.0)] = 50.0
        gridSpacingVoxels: Annotated[float, WithinRange(0.5, 10000.0)] = 50.0
        # Registration
        histogramBins: Annotated[int, WithinRange(5, 1024)] = 50
        samplingStrategy: Annotated[str, Choice(SAMPLING_STRATEGIES)] = "regular"
        samplingPercentage: Annotated[float, WithinRange(0.01, 100.0)] = 2.5
        samplingSeed: Annotated[int, WithinRange(-1, 2147483647)] = 1
        interpolator: Annotated[str, Choice(INTERPOLATORS)] = "linear"
        optimizer: Annotated[str, Choice(OPTIMIZERS)] = "lbfgs2"
        lbfgs2SolutionAccuracy: str = "1e-05"
        lbfgs2NumberOfIterations: Annotated[int, WithinRange(0, 1000000)] = 0
        lbfgs2HessianApproximateAccuracy: Annotated[int, WithinRange(1, 100)] = 6
        lbfgs2DeltaConvergenceDistance: Annotated[int, WithinRange(0, 1000)] = 0
        lbfgs2DeltaConvergenceTolerance: str = "1e-05"
        lbfgs2LineSearchMaximumEvaluations: Annotated[int, WithinRange(1, 10000)] = 40
        lbfgs2LineSearchMinimumStep: str = "1e-20"
        lbfgs2LineSearchMaximumStep: str = "1e+20"
        lbfgs2LineSearchAccuracy: str = "0.0001"
        lbfgsbGradientConvergenceTolerance: str = "1e-05"
        lbfgsbNumberOfIterations: Annotated[int, WithinRange(1, 1000000)] = 500
        lbfgsbMaximumNumberOfCorrections: Annotated[int, WithinRange(1, 100)] = 5
        lbfgsbMaximumNumberOfFunctionEvaluations: Annotated[int, WithinRange(1, 10000000)] = 2000
        lbfgsbCostFunctionConvergenceFactor: str = "10000000"
        gradientDescentLearningRate: Annotated[float, WithinRange(1e-06, 1000000.0)] = 1.0
        gradientDescentNumberOfIterations: Annotated[int, WithinRange(1, 1000000)] = 100
        gradientDescentConvergenceMinimumValue: str = "1e-06"
        gradientDescentConvergenceWindowSize: Annotated[int, WithinRange(1, 1000)] = 10
        gradientDescentEstimateLearningRate: Annotated[str, Choice(("never", "once", "each_iteration"))] = "once"
        gradientDescentMaximumStepSize: Annotated[float, WithinRange(0.0, 1000000.0)] = 0.0
        scalesEstimator: Annotated[str, Choice(SCALES_ESTIMATORS)] = "physical_shift"
        scalesCentralRegionRadius: Annotated[int, WithinRange(1, 100)] = 5
        scalesSmallParameterVariation: Annotated[float, WithinRange(1e-06, 10.0)] = 0.01
        # Advanced
        numberOfThreads: Annotated[int, WithinRange(0, 1024)] = 0
        numberOfWorkUnits: Annotated[int, WithinRange(0, 1024)] = 0
        spacingOverride: Annotated[float, WithinRange(0.0, 1000.0)] = 0.0
        normalisedUnits: bool = False
        reproducible: bool = False
        # Study
        studySpacings: str = "1, 4, 10"
        studyRepeats: Annotated[int, WithinRange(1, 1000)] = 3
        studyModeNativeDefault: bool = True
        studyModeNativeReproducible: bool = True
        studyModeNormalisedDefault: bool = False
        studyModeNormalisedReproducible: bool = True
        studyFolder: pathlib.Path = pathlib.Path.home() / "SpacingRegistrationStudy"


#
# SpacingRegistrationWidget
#


class SpacingRegistrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: gathers settings from the parameter node, starts the engine in a worker thread, polls it with a
    QTimer and lets the logic create the MRML outputs on the main thread.

    Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobInputs = None
        self._expectedIterations = 0
        self._pollTimer = None
        self._studyJob = None
        self._studyPollTimer = None
        self._reportPath = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpacingRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui connects the root's mrmlSceneChanged(vtkMRMLScene*) to every MRML widget's setMRMLScene.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SpacingRegistrationLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._onPollTimer)
        self._studyPollTimer = qt.QTimer()
        self._studyPollTimer.setInterval(POLL_INTERVAL_MS)
        self._studyPollTimer.connect("timeout()", self._onStudyPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.showGridButton.connect("clicked(bool)", self.onShowGridButton)
        self.ui.hideGridButton.connect("clicked(bool)", self.onHideGridButton)
        self.ui.restoreDefaultsButton.connect("clicked(bool)", self.onRestoreDefaultsButton)
        self.ui.runStudyButton.connect("clicked(bool)", self.onRunStudyButton)
        self.ui.openReportButton.connect("clicked(bool)", self.onOpenReportButton)
        self.ui.diagnosisTableSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._showWarningsOfTable)

        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = ""

        self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the SpacingRegistrationLib submodules too (reloadScriptedModule re-executes only this file)."""
        with slicer.util.tryWithErrorDisplay(_("Failed to reload the SpacingRegistrationLib submodules.")):
            reloadLibrary()
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        if self._job is not None:
            self._job.cancel()
            self._job.wait(10.0)
        if self._pollTimer is not None:
            self._pollTimer.stop()
        if self._studyJob is not None:
            self._studyJob.cancel()
            self._studyJob.wait(10.0)
        if self._studyPollTimer is not None:
            self._studyPollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self._job.cancel()
            self._jobInputs = None  # the nodes go away: do not create outputs for this run
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

    # --- state of the controls ------------------------------------------------------------------------------------

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._updateButtons()
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

    def _updateButtons(self) -> None:
        """Apply becomes Cancel while a registration runs (as in SlicerElastix)."""
        if self._job is not None:
            cancelling = self._job.cancelRequested
            self.ui.applyButton.text = _("Cancelling...") if cancelling else _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the registration at its next iteration and keep the partial result")
            self.ui.applyButton.enabled = not cancelling
        else:
            self.ui.applyButton.text = _("Apply")
            node = self._parameterNode
            if self._studyJob is not None:
                self.ui.applyButton.toolTip = _("A study is running")
                self.ui.applyButton.enabled = False
            elif node and node.fixedVolume and node.movingVolume:
                self.ui.applyButton.toolTip = _("Register the moving volume to the fixed volume")
                self.ui.applyButton.enabled = True
            else:
                self.ui.applyButton.toolTip = _("Select the fixed and moving volumes")
                self.ui.applyButton.enabled = False
        canShowGrid = bool(self._parameterNode and self._parameterNode.fixedVolume)
        self.ui.showGridButton.enabled = canShowGrid
        if self._studyJob is not None:
            self.ui.runStudyButton.text = _("Cancelling study...") if self._studyJob.cancelRequested else _("Cancel study")
            self.ui.runStudyButton.enabled = not self._studyJob.cancelRequested
        else:
            self.ui.runStudyButton.text = _("Run study")
            self.ui.runStudyButton.enabled = self._job is None and bool(
                self._parameterNode and self._parameterNode.fixedVolume and self._parameterNode.movingVolume)

    def _parameterValues(self) -> dict:
        return {name: self._parameterNode.getValue(name) for name in (*SETTING_PARAMETERS, *STUDY_PARAMETERS)}

    # --- registration ---------------------------------------------------------------------------------------------

    def onApplyButton(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._updateButtons()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the registration."), waitCursor=True):
            settings = settingsFromParameterValues(self._parameterValues())
            fixedVolumeNode = self._parameterNode.fixedVolume
            movingVolumeNode = self._parameterNode.movingVolume
            # Main thread: copy the voxels out of MRML; the worker only sees SimpleITK images.
            fixedImage, movingImage = self.logic.imagesFromVolumeNodes(fixedVolumeNode, movingVolumeNode)
            job = BackgroundJob(SpacingRegistrationLogic.computeRegistration, fixedImage, movingImage, settings)
            self._expectedIterations = expectedIterations(settings)
            self.ui.progressBar.setRange(0, self._expectedIterations)  # (0, 0): busy indicator
            self.ui.progressBar.setValue(0)
            self.ui.statusLabel.text = _("Initialising...")
            self._jobInputs = (fixedVolumeNode, movingVolumeNode)
            self._job = job.start()
            self._pollTimer.start()
        self._updateButtons()

    def _onPollTimer(self) -> None:
        job = self._job
        if job is None:
            self._pollTimer.stop()
            return
        job.wait(WORKER_SLICE_SECONDS)  # lets the worker hold the GIL for a while (see WORKER_SLICE_SECONDS)
        record = job.lastProgress
        if record is not None:
            if self._expectedIterations:
                self.ui.progressBar.setRange(0, max(self._expectedIterations, job.progressCount))
                self.ui.progressBar.setValue(job.progressCount)
            self.ui.statusLabel.text = (f"iteration {record.iteration} (libLBFGS run {record.lbfgs_run + 1}), "
                                        f"metric {record.metric:.6g}, step {record.step_max_voxels:.3g} voxels")
        if not job.done:
            self._updateButtons()
            return
        self._pollTimer.stop()
        self._job = None
        inputs, self._jobInputs = self._jobInputs, None
        if self._expectedIterations == 0:
            self.ui.progressBar.setRange(0, 1)
        self.ui.progressBar.setValue(self.ui.progressBar.maximum)
        if job.error is not None:
            self.ui.statusLabel.text = _("Registration failed.")
            slicer.util.errorDisplay(_("Registration failed: {error}").format(error=job.error),
                                     detailedText=job.errorTraceback)
        elif inputs is not None and self._parameterNode is not None:
            with slicer.util.tryWithErrorDisplay(_("Failed to create the output nodes."), waitCursor=True):
                transformNode, tableNode = self.logic.createOutputNodes(
                    job.result, fixedVolumeNode=inputs[0], movingVolumeNode=inputs[1],
                    outputTransformNode=self._parameterNode.outputTransform,
                    outputTableNode=self._parameterNode.diagnosisTable)
                self._parameterNode.outputTransform = transformNode
                self._parameterNode.diagnosisTable = tableNode
                self._showResult(job.result)
        self._updateButtons()

    def _showResult(self, result) -> None:
        self.ui.statusLabel.text = (_("Cancelled: partial result.") if result.cancelled else
                                    _("Finished: {reason}.").format(reason=STOP_REASON_TEXT.get(result.stop_reason, "")))
        self._showGridSummary(result.grid)
        self._showWarnings(result.warnings)
        self.ui.resultsCollapsibleButton.collapsed = False

    def _showWarningsOfTable(self, tableNode=None) -> None:
        self._showWarnings(self.logic.warningsFromTableNode(tableNode) if tableNode else [])

    def _showWarnings(self, warnings) -> None:
        self.ui.warningsTextEdit.plainText = "\n\n".join(f"- {w}" for w in warnings) if warnings else _("No warnings.")

    # --- control grid ---------------------------------------------------------------------------------------------

    def onShowGridButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the control grid."), waitCursor=True):
            settings = settingsFromParameterValues(self._parameterValues())
            _nodes, geometry = self.logic.showControlGrid(self._parameterNode.fixedVolume, settings=settings)
            self._showGridSummary(geometry)

    def onHideGridButton(self) -> None:
        self.logic.hideControlGrid(scene=slicer.mrmlScene)

    def _showGridSummary(self, geometry) -> None:
        self.ui.gridCountsLabel.text = _(
            "{inside} control points inside the image, {outside} outside ({perAxis} per axis); "
            "image inside the transform domain: {coverage:.0%}").format(
            inside=geometry.inside_count, outside=geometry.outside_count,
            perAxis=list(geometry.points_per_axis), coverage=geometry.coverage)
        self.ui.gridWarningsLabel.text = "\n".join(geometry.warnings)

    def onRestoreDefaultsButton(self) -> None:
        with slicer.util.NodeModify(self._parameterNode):
            for name, value in parameterValuesFromSettings(RegistrationSettings()).items():
                self._parameterNode.setValue(name, value)

    # --- study ----------------------------------------------------------------------------------------------------

    def onRunStudyButton(self) -> None:
        if self._studyJob is not None:
            self._studyJob.cancel()
            self._updateButtons()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the study."), waitCursor=True):
            spec = studySpecFromParameterValues(self._parameterValues())
            fixedImage, movingImage = self.logic.imagesFromVolumeNodes(self._parameterNode.fixedVolume,
                                                                       self._parameterNode.movingVolume)
            folder = str(self._parameterNode.studyFolder)
            self.ui.studyProgressBar.setRange(0, len(spec.runs()))
            self.ui.studyProgressBar.setValue(0)
            self.ui.studyStatusLabel.text = _("Starting the study...")
            self._studyJob = BackgroundJob(computeStudyInWorker, fixedImage, movingImage, spec, folder).start()
            self._studyPollTimer.start()
        self._updateButtons()

    def _onStudyPollTimer(self) -> None:
        job = self._studyJob
        if job is None:
            self._studyPollTimer.stop()
            return
        job.wait(WORKER_SLICE_SECONDS)
        if job.lastProgress is not None:
            done, total, row = job.lastProgress
            self.ui.studyProgressBar.setRange(0, max(1, int(total)))
            self.ui.studyProgressBar.setValue(int(done))
            self.ui.studyStatusLabel.text = f"{done}/{total} runs ({row['run_id']})"
        if not job.done:
            return
        self._studyPollTimer.stop()
        self._studyJob = None
        if job.error is not None:
            self.ui.studyStatusLabel.text = _("Study failed.")
            slicer.util.errorDisplay(_("Study failed: {error}").format(error=job.error), detailedText=job.errorTraceback)
        else:
            outcome, analysis, reportPaths = job.result
            with slicer.util.tryWithErrorDisplay(_("Failed to create the study's nodes."), waitCursor=True):
                if analysis is not None:
                    nodes = self.logic.createStudyNodes(outcome.store, analysis, reportPaths, scene=slicer.mrmlScene)
                    self.ui.studyStatusLabel.text = _("{runs} runs; report: {report}").format(
                        runs=len(outcome.store.rows), report=reportPaths["html"])
                    self._showWarnings([statement["text"] for statement in analysis.statements])
                    self._reportPath = reportPaths["html"]
                    self.ui.openReportButton.enabled = True
                    slicer.modules.plots.logic().ShowChartInLayout(nodes["charts"][0])  # switches to a plot layout
                if outcome.cancelled:
                    self.ui.studyStatusLabel.text += _(" (cancelled: finished runs kept; run again to resume)")
        self._updateButtons()

    def onOpenReportButton(self) -> None:
        if self._reportPath is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self._reportPath)))


def computeStudyInWorker(fixedImage, movingImage, spec, folder, progress=None, cancel=None):
    """The study for a BackgroundJob: its progress gets one (done, total, row) tuple per finished run."""
    return SpacingRegistrationLogic.computeStudy(fixedImage, movingImage, spec, folder,
                                                 progress=lambda done, total, row: progress((done, total, row)),
                                                 cancel=cancel)


#
# SpacingRegistrationLogic
#


class SpacingRegistrationLogic(ScriptedLoadableModuleLogic):
    """GUI-free: every method takes explicit nodes and a RegistrationSettings (or a dict of its fields), so it can
    be called from the Python console, tests and batch code. The scene is taken from the nodes, else from the
    constructor's ``scene``, else slicer.mrmlScene.

    The registration is split for the panel: ``computeRegistration`` (pure SimpleITK, safe in a worker thread)
    and ``createOutputNodes`` (MRML, main thread); ``register`` does both.

    Uses ScriptedLoadableModuleLogic base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._scene = scene
        self.lastTransformNode = None
        self.lastTableNode = None

    def getParameterNode(self):
        return SpacingRegistrationParameterNode(super().getParameterNode())

    # --- helpers --------------------------------------------------------------------------------------------------

    def sceneFor(self, *nodes):
        """The scene of the first node that has one, else the logic's scene, else slicer.mrmlScene."""
        for node in nodes:
            if node is not None and node.GetScene() is not None:
                return node.GetScene()
        scene = self._scene if self._scene is not None else getattr(slicer, "mrmlScene", None)
        if scene is None:
            raise ValueError("no MRML scene: pass nodes that are in a scene or SpacingRegistrationLogic(scene=...)")
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
        return mrml_bridge.imageFromVolumeNode(fixedVolumeNode), mrml_bridge.imageFromVolumeNode(movingVolumeNode)

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
        image.SetOrigin(mrml_bridge.lpsToRas(volumeNode.GetOrigin()).tolist())
        image.SetDirection((mrml_bridge.LPS_TO_RAS @ direction).ravel().tolist())
        return image

    # --- registration ---------------------------------------------------------------------------------------------

    @staticmethod
    def computeRegistration(fixedImage, movingImage, settings=None, progress=None, cancel=None):
        """The engine alone (no MRML; safe in a worker thread): registration.run -> RegistrationResult."""
        return registration.run(fixedImage, movingImage, SpacingRegistrationLogic.settingsFrom(settings),
                                progress=progress, cancel=cancel)

    def register(self, fixedVolumeNode, movingVolumeNode, settings=None, outputTransformNode=None, progress=None,
                 cancel=None, outputTableNode=None):
        """Register the moving volume to the fixed one; fill (or create) a BSpline transform node and a diagnosis
        table node. The volume nodes are not modified (parent transforms of the volumes are ignored).

        ``progress`` is called with each registration.IterationRecord; setting ``cancel`` (a threading.Event)
        stops at the next iteration and keeps the partial result. Returns the RegistrationResult; the output
        nodes are ``self.lastTransformNode`` and ``self.lastTableNode``. Bad inputs raise before any node is made.
        """
        settings = self.settingsFrom(settings)
        fixedImage, movingImage = self.imagesFromVolumeNodes(fixedVolumeNode, movingVolumeNode)
        result = self.computeRegistration(fixedImage, movingImage, settings, progress=progress, cancel=cancel)
        self.createOutputNodes(result, fixedVolumeNode=fixedVolumeNode, movingVolumeNode=movingVolumeNode,
                               outputTransformNode=outputTransformNode, outputTableNode=outputTableNode)
        return result

    def createOutputNodes(self, result, fixedVolumeNode=None, movingVolumeNode=None, outputTransformNode=None,
                          outputTableNode=None, scene=None):
        """(transformNode, tableNode) for a RegistrationResult (main thread).

        The transform node (given, else a new vtkMRMLBSplineTransformNode) gets the result as its
        TransformFromParent: set it as the moving volume's parent transform to see the moving volume aligned.
        After a spacing override the transform is converted back to the volumes' units when they share one
        isotropic spacing (see transformInVolumeUnits). The table node (given, else new) gets (Name, Value) rows
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
                transform, unitsNote, unitWarnings = transformInVolumeUnits(
                    result.transform, result.settings.spacing_override,
                    fixedVolumeNode.GetSpacing(), mrml_bridge.lpsToRas(fixedVolumeNode.GetOrigin()),
                    movingVolumeNode.GetSpacing(), mrml_bridge.lpsToRas(movingVolumeNode.GetOrigin()))
        frameWarnings = [
            f"The {role} volume '{node.GetName()}' is under the transform '{node.GetParentTransformNode().GetName()}'; "
            "the registration used its voxels in its own frame, ignoring that transform."
            for role, node in (("fixed", fixedVolumeNode), ("moving", movingVolumeNode))
            if node is not None and node.GetParentTransformNode() is not None]

        # The BSpline is built in a scratch scene by the bridge, then moved into the output node.
        scratch = slicer.vtkMRMLScene()
        scratchNode = mrml_bridge.bsplineTransformNodeFromSitk(scratch, transform, "scratch")
        if outputTransformNode is None:
            baseName = (f"{movingVolumeNode.GetName()}-to-{fixedVolumeNode.GetName()} BSpline"
                        if fixedVolumeNode is not None and movingVolumeNode is not None else "SpacingRegistration BSpline")
            outputTransformNode = scene.AddNewNodeByClass("vtkMRMLBSplineTransformNode",
                                                          scene.GenerateUniqueName(baseName))
        outputTransformNode.SetAndObserveTransformFromParent(scratchNode.GetTransformFromParent())
        outputTransformNode.CreateDefaultDisplayNodes()
        del scratchNode, scratch

        if outputTableNode is None:
            outputTableNode = scene.AddNewNodeByClass(
                "vtkMRMLTableNode", scene.GenerateUniqueName(f"{outputTransformNode.GetName()} diagnosis"))
        rows = diagnosisRows(result)
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
            return grid_geometry(mrml_bridge.sitkBSplineFromTransformNode(transformNode), image)
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
        nodes = mrml_bridge.controlGridModelNodes(scene, geometry, namePrefix)
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

    @staticmethod
    def computeStudy(fixedImage, movingImage, spec, outputFolder, progress=None, cancel=None, executor="sequential"):
        """Run (or resume) a study into ``outputFolder`` and write its report (no MRML; safe in a worker thread).

        Returns (StudyOutcome, StudyAnalysis or None, report paths or None); the analysis is None while no run has
        finished. Inside the Slicer app use the sequential executor: a process pool would start Slicer itself.
        """
        outcome = study_runner.run_study(spec, fixedImage, movingImage, outputFolder, executor=executor,
                                         progress=progress, cancel=cancel)
        if not outcome.store.rows:
            return outcome, None, None
        reportFolder = pathlib.Path(outputFolder) / "report"
        analysis = variability.analyse(outcome.store, output=reportFolder / "spread_maps")
        return outcome, analysis, report.write_report(outcome.store, analysis, reportFolder)

    def createStudyNodes(self, store, analysis, reportPaths, scene=None, prefix="Study") -> dict:
        """New table, plot chart and spread-map volume nodes for a study (main thread)."""
        return study_nodes.createStudyNodes(scene if scene is not None else self.sceneFor(), store, analysis,
                                            reportPaths, prefix)

    def runStudy(self, fixedVolumeNode, movingVolumeNode, spec, outputFolder, progress=None, cancel=None,
                 executor="sequential"):
        """The study on two volume nodes: (StudyOutcome, dict of new nodes). Finished runs are kept on cancel."""
        scene = self.sceneFor(fixedVolumeNode, movingVolumeNode)
        fixedImage, movingImage = self.imagesFromVolumeNodes(fixedVolumeNode, movingVolumeNode)
        outcome, analysis, reportPaths = self.computeStudy(fixedImage, movingImage, spec, outputFolder, progress,
                                                           cancel, executor)
        nodes = {} if analysis is None else self.createStudyNodes(outcome.store, analysis, reportPaths, scene=scene)
        return outcome, nodes


def _jsonDefault(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


#
# SpacingRegistrationTest
#


class SpacingRegistrationTest(ScriptedLoadableModuleTest):
    """Tests of the logic and of the panel's pure parts; every test finishes synchronously.

    Runs in Slicer (self-test, ctest through the unittest loader) and headless under pytest.
    Uses ScriptedLoadableModuleTest base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    #: Few iterations and no scales estimator: each registration takes well under a second.
    FAST = {"scales_estimator": "none", "lbfgs2": {"number_of_iterations": 5}, "reproducible": True}

    @classmethod
    def _fast(cls, **changes) -> RegistrationSettings:
        return from_dict({**cls.FAST, **changes})

    def setUp(self):
        scene = getattr(slicer, "mrmlScene", None)
        if scene is not None and hasattr(slicer, "app"):
            scene.Clear()
            self.scene = scene
        else:
            self.scene = mrml_bridge.createScene()
        self.logic = SpacingRegistrationLogic(scene=self.scene)

    def runTest(self):
        """Slicer's self-test entry: setUp and every test_ method."""
        for name in sorted(n for n in dir(self) if n.startswith("test_") and callable(getattr(self, n))):
            self.setUp()
            getattr(self, name)()
            self.tearDown()

    def _say(self, message):
        delayDisplay = getattr(self, "delayDisplay", None)
        if delayDisplay is not None and hasattr(slicer, "app"):
            delayDisplay(message, msec=10)
        else:
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
        fixed = mrml_bridge.volumeNodeFromImage(self.scene, self._blobImage(0.0), "fixed blob")
        moving = mrml_bridge.volumeNodeFromImage(self.scene, self._blobImage(1.5, origin=movingOrigin), "moving blob")
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
        return np.array([transformFromParent.TransformPoint(p) for p in mrml_bridge.lpsToRas(lpsPoints).tolist()])

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
        self.assertEqual(set(SETTING_PARAMETERS.values()), fields)
        defaults = parameterValuesFromSettings(RegistrationSettings())
        self.assertEqual(settingsFromParameterValues(defaults), RegistrationSettings())
        self.assertEqual(settingsFromParameterValues({}), RegistrationSettings())
        self.assertEqual(set(PARAMETER_NAMES), {*NODE_PARAMETERS, *SETTING_PARAMETERS, *STUDY_PARAMETERS})

    def test_parameter_special_values_and_errors(self):
        values = {**parameterValuesFromSettings(RegistrationSettings()), "samplingSeed": -1, "numberOfThreads": 0,
                  "spacingOverride": 0.0, "lbfgs2LineSearchAccuracy": " 2.5e-3 ", "meshSizeY": 4}
        settings = settingsFromParameterValues(values)
        self.assertIsNone(settings.sampling_seed)
        self.assertIsNone(settings.number_of_threads)
        self.assertIsNone(settings.spacing_override)
        self.assertEqual(settings.lbfgs2.line_search_accuracy, 0.0025)
        self.assertEqual(settings.mesh_size, (2, 4, 2))
        changed = from_dict({"sampling_seed": 7, "number_of_work_units": 1, "spacing_override": 4.0,
                             "lbfgs2": {"line_search_minimum_step": 3e-17}, "reproducible": True})
        self.assertEqual(settingsFromParameterValues(parameterValuesFromSettings(changed)), changed)
        with self.assertRaisesRegex(SettingsError, "lbfgs2SolutionAccuracy"):
            settingsFromParameterValues({"lbfgs2SolutionAccuracy": "small"})
        with self.assertRaisesRegex(SettingsError, "mesh_size"):
            settingsFromParameterValues({"meshSizeX": 0})

    def test_study_parameters(self):
        self.assertEqual(parseSpacings("1, 4,10"), (1.0, 4.0, 10.0))
        self.assertEqual(parseSpacings("0.5 2"), (0.5, 2.0))
        for bad in ("", "1, x"):
            with self.assertRaises(SettingsError):
                parseSpacings(bad)
        values = {"studySpacings": "1, 4, 10", "studyRepeats": 2, "studyModeNativeDefault": True,
                  "studyModeNormalisedReproducible": True}
        self.assertEqual(studyModesFromParameterValues(values), ("native-default", "normalised-reproducible"))
        spec = studySpecFromParameterValues(values, self._fast())
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
        expected = mrml_bridge.lpsToRas([result.transform.TransformPoint(p) for p in points.tolist()])
        self.assertGreater(np.abs(expected - mrml_bridge.lpsToRas(points)).max(), 0.1)  # the transform moves points
        error = np.linalg.norm(self._rasThroughNode(transformNode, points) - expected, axis=1)
        self.assertLess(error.max(), 1e-6)

        rows = self.logic.diagnosisFromTableNode(tableNode)
        self.assertGreater(len(rows), 10)
        self.assertEqual(dict(rows)["moved"], "True")
        self.assertEqual(self.logic.warningsFromTableNode(tableNode), result.warnings)
        self.assertEqual(json.loads(tableNode.GetAttribute(SUMMARY_ATTRIBUTE))["moved"], True)
        self.assertIs(transformNode.GetNodeReference(DIAGNOSIS_REFERENCE_ROLE), tableNode)

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
        from SpacingRegistrationLib.study_spec import StudySpec

        spec = StudySpec(settings=self.logic.settingsFrom(self.FAST), spacings=(1.0, 4.0), repeats=2,
                         modes=("native-default", "normalised-reproducible"))
        with tempfile.TemporaryDirectory() as folder:
            cancel = threading.Event()
            first, nodes = self.logic.runStudy(fixed, moving, spec, folder,
                                               progress=lambda done, total, row: done == 3 and cancel.set(),
                                               cancel=cancel)
            self.assertTrue(first.cancelled)
            self.assertEqual(len(first.store.rows), 3)  # finished runs are kept
            outcome, nodes = self.logic.runStudy(fixed, moving, spec, folder)
            self.assertTrue(outcome.finished)
            self.assertEqual(len(outcome.skipped), 3)
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

            path = mrml_bridge.saveSceneToMrb(self.scene, pathlib.Path(folder) / "study.mrb")
            loaded = mrml_bridge.loadSceneFromMrb(path)
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
        converted = mrml_bridge.sitkBSplineFromTransformNode(transformNode)
        points = self._domainPoints(converted)
        expected = np.array([movingOrigin + factor * (np.array(result.transform.TransformPoint(
            (fixedOrigin + (p - fixedOrigin) / factor).tolist())) - movingOrigin) for p in points])
        error = np.linalg.norm(self._rasThroughNode(transformNode, points) - mrml_bridge.lpsToRas(expected), axis=1)
        self.assertLess(error.max(), 1e-6)
        bounds = [converted.GetTransformDomainOrigin(), converted.GetTransformDomainPhysicalDimensions()]
        self.assertGreater(min(bounds[1]), 24 * 2.0)  # the domain covers the volume, not the override copy

    def test_background_job_runs_and_cancels(self):
        self._say("Worker thread: progress, result, cancel")
        fixed, moving = self._volumePair()
        fixedImage, movingImage = self.logic.imagesFromVolumeNodes(fixed, moving)
        count = self.scene.GetNumberOfNodes()
        job = BackgroundJob(SpacingRegistrationLogic.computeRegistration, fixedImage, movingImage,
                            self._fast()).start()
        self.assertTrue(job.wait(120))
        self.assertIsNone(job.error, job.errorTraceback)
        self.assertGreater(job.progressCount, 0)
        self.assertFalse(job.result.cancelled)
        self.assertEqual(self.scene.GetNumberOfNodes(), count)  # the worker made no node
        self.logic.createOutputNodes(job.result, fixed, moving)
        self.assertEqual(self.scene.GetNumberOfNodes(), count + 3)  # transform + its display node + table

        cancelled = BackgroundJob(SpacingRegistrationLogic.computeRegistration, fixedImage, movingImage,
                                  self._fast())
        cancelled.cancel()  # set before the first iteration: stops there
        self.assertTrue(cancelled.start().wait(120))
        self.assertIsNone(cancelled.error, cancelled.errorTraceback)
        self.assertTrue(cancelled.result.cancelled)
        self.assertEqual(dict(diagnosisRows(cancelled.result))["status"], "cancelled: partial result")

        failing = BackgroundJob(SpacingRegistrationLogic.computeRegistration, fixedImage, movingImage,
                                {"mesh_size": [0, 2, 2]}).start()
        self.assertTrue(failing.wait(60))
        self.assertIsInstance(failing.error, SettingsError)

    def test_bad_input_raises_clear_errors_and_adds_no_nodes(self):
        self._say("Bad inputs")
        fixed, moving = self._volumePair()
        constant = mrml_bridge.volumeNodeFromImage(self.scene, sitk.Image([24, 24, 24], sitk.sitkFloat32), "constant")
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
        image = mrml_bridge.imageFromVolumeNode(fixed)
        reference = grid_geometry(sitk.BSplineTransformInitializer(image, [2, 3, 2]), image)
        self.assertEqual(geometry.points_per_axis, (5, 6, 5))
        self.assertEqual((geometry.inside_count, geometry.outside_count),
                         (reference.inside_count, reference.outside_count))
        self.assertEqual(geometry.inside_count + geometry.outside_count, 5 * 6 * 5)
        inside = nodes["controlPointsInside"].GetPolyData().GetNumberOfPoints()
        outside = nodes["controlPointsOutside"].GetPolyData().GetNumberOfPoints()
        self.assertEqual(inside * geometry.outside_count, outside * geometry.inside_count)  # same points per sphere
        self.assertEqual(len(nodes), len(mrml_bridge.GRID_COLORS))
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
        image = mrml_bridge.imageFromVolumeNode(fixed)
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
            path = mrml_bridge.saveSceneToMrb(self.scene, pathlib.Path(directory) / "outputs.mrb")
            loaded = mrml_bridge.loadSceneFromMrb(path)
        loadedTransform = loaded.GetFirstNodeByName(transformNode.GetName())
        loadedTable = loaded.GetFirstNodeByName(tableNode.GetName())
        self.assertIsNotNone(loadedTransform)
        self.assertIsNotNone(loadedTable)
        points = self._domainPoints(result.transform, 100)
        error = np.linalg.norm(self._rasThroughNode(loadedTransform, points)
                               - self._rasThroughNode(transformNode, points), axis=1)
        self.assertLess(error.max(), 1e-6)
        self.assertEqual(self.logic.diagnosisFromTableNode(loadedTable), rows)
        self.assertEqual(json.loads(loadedTable.GetAttribute(SUMMARY_ATTRIBUTE))["stop_reason"], result.stop_reason)
        self.assertEqual(loadedTransform.GetNodeReference(DIAGNOSIS_REFERENCE_ROLE).GetName(), tableNode.GetName())
        gridModels = [loaded.GetNthNodeByClass(i, "vtkMRMLModelNode")
                      for i in range(loaded.GetNumberOfNodesByClass("vtkMRMLModelNode"))]
        self.assertEqual(sum(m.GetAttribute(GRID_ATTRIBUTE) == GRID_NAME_PREFIX for m in gridModels),
                         len(mrml_bridge.GRID_COLORS))

    # --- module -----------------------------------------------------------------------------------------------------

    def test_library_reload_order_puts_dependencies_first(self):
        order = librarySubmodulesInDependencyOrder()
        libraryDirectory = pathlib.Path(__file__).resolve().parent / "SpacingRegistrationLib"
        self.assertEqual(set(order), {p.stem for p in libraryDirectory.glob("*.py")} - {"__init__"})
        for before, after in (("settings", "grid"), ("grid", "registration"), ("diagnostics", "registration"),
                              ("registration", "describe"), ("grid", "mrml_bridge")):
            self.assertLess(order.index(before), order.index(after), (before, after))

    def test_module_description(self):
        class Parent:
            path = os.path.abspath(__file__)

        if hasattr(slicer, "app"):  # the real module is already registered; check it instead
            parent = slicer.app.moduleManager().module("SpacingRegistration")
            title, categories = parent.title, list(parent.categories)
        else:
            parent = Parent()
            SpacingRegistration(parent)
            title, categories = parent.title, parent.categories
        self.assertEqual(title, "Spacing Registration")
        self.assertEqual(categories, ["Registration"])
