"""Side measurements of a registration's metric: the optimizer's own sampled value, the descent direction,
and the slope along it. Each probe is a short extra ``ImageRegistrationMethod`` run with the same metric.

``MetricEvaluate`` ignores the sampling settings (it evaluates every voxel), so the value the optimizer
sees is read from a one-iteration gradient descent with learning rate 0 instead.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .method import configure_metric, global_thread_count, global_threads, work_units
from .settings import RegistrationSettings


def _probe(fixed, moving, transform, settings, learning_rate: float) -> tuple[float, np.ndarray]:
    """Metric value at ``transform`` and the position after one plain gradient step of ``learning_rate``."""
    method = sitk.ImageRegistrationMethod()
    configure_metric(method, settings)
    method.SetOptimizerAsGradientDescent(learningRate=learning_rate, numberOfIterations=1,
                                         estimateLearningRate=method.Never)
    units = work_units(settings)
    if units is not None:
        method.SetNumberOfWorkUnits(units)
    method.SetInitialTransform(sitk.BSplineTransform(transform), inPlace=False)
    seen = {}
    method.AddCommand(sitk.sitkIterationEvent,
                      lambda: seen.update(value=method.GetMetricValue(), position=method.GetOptimizerPosition()))
    try:
        with global_thread_count(global_threads(settings)):
            method.Execute(fixed, moving)
    finally:
        method.RemoveAllCommands()  # the command's lambda holds the method: a cycle the collector cannot see
    return seen["value"], np.asarray(seen["position"])


def sampled_metric(fixed, moving, transform: sitk.BSplineTransform, settings: RegistrationSettings) -> float:
    """The metric exactly as the optimizer evaluates it (same sampling set) at ``transform``."""
    return _probe(fixed, moving, transform, settings, learning_rate=0.0)[0]


def metric_gradient(fixed, moving, transform: sitk.BSplineTransform, settings: RegistrationSettings) -> np.ndarray:
    """ITK's metric derivative at ``transform`` (parameters order), as the optimizer receives it unscaled."""
    start = np.asarray(transform.GetParameters())
    return start - _probe(fixed, moving, transform, settings, learning_rate=1.0)[1]


def max_shift(transform: sitk.BSplineTransform, parameters: np.ndarray, image: sitk.Image) -> float:
    """Largest displacement (mm) over ``image``'s voxels of the BSpline with coefficients ``parameters``."""
    probe = sitk.BSplineTransform(transform)
    probe.SetParameters(parameters.tolist())
    field = sitk.TransformToDisplacementField(probe, sitk.sitkVectorFloat64, image.GetSize(), image.GetOrigin(),
                                              image.GetSpacing(), image.GetDirection())
    return float(np.linalg.norm(sitk.GetArrayViewFromImage(field), axis=-1).max())


def slope_along(fixed, moving, transform, direction: np.ndarray, settings, step_mm: float) -> float:
    """Central-difference derivative of the sampled metric along the unit parameter vector ``direction``."""
    start = np.asarray(transform.GetParameters())
    values = []
    for sign in (1.0, -1.0):
        moved = sitk.BSplineTransform(transform)
        moved.SetParameters((start + sign * step_mm * direction).tolist())
        values.append(sampled_metric(fixed, moving, moved, settings))
    return (values[0] - values[1]) / (2.0 * step_mm)
