"""Side measurements of a registration's metric: the optimizer's own sampled value, the descent direction,
and the slope along it. Each probe is a short extra ``ImageRegistrationMethod`` run with the same metric.

``MetricEvaluate`` ignores the sampling settings (it evaluates every voxel), so the value the optimizer
sees is read from a one-iteration gradient descent with learning rate 0 instead.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .method import (configure_metric, fast_scales_warning_muted, global_thread_count, global_threads,
                     parameter_variation, set_scales_estimator, work_units)
from .settings import RegistrationSettings


@dataclass(frozen=True)
class MetricInputs:
    """What the registration's metric sees besides the images and the BSpline: the fixed-image mask (on the
    registered fixed grid) and the moving initial transform composed before the BSpline. Probes use the same, so
    every value they measure is the run's own metric."""

    fixed_mask: sitk.Image | None = None
    moving_initial: sitk.Transform | None = None
    #: (shrink factor, smoothing sigma in voxels) of the pyramid level the probes evaluate; None: full resolution.
    #: The run's own probes use its last level, so the re-evaluated metric is comparable with the reported one.
    level: tuple[int, float] | None = None

    def apply(self, method: sitk.ImageRegistrationMethod):
        """Set the mask and the initial transform on ``method`` (not the level: the run sets its own pyramid)."""
        if self.fixed_mask is not None:
            method.SetMetricFixedMask(self.fixed_mask)
        if self.moving_initial is not None:
            method.SetMovingInitialTransform(self.moving_initial)

    def apply_level(self, method: sitk.ImageRegistrationMethod):
        if self.level is not None and self.level != (1, 0.0):
            method.SetShrinkFactorsPerLevel([int(self.level[0])])
            method.SetSmoothingSigmasPerLevel([float(self.level[1])])
            method.SetSmoothingSigmasAreSpecifiedInPhysicalUnits(False)


#: The fixed sample set of the plausibility check: REGULAR sampling of this percentage with this seed, the same
#: points for the identity and the result, independent of the optimizer's own samples.
PLAUSIBILITY_SAMPLING_PERCENTAGE = 5.0
PLAUSIBILITY_SAMPLING_SEED = 20240229


def _probe(fixed, moving, transform, settings, learning_rate: float,
           gradient_filters: bool = True, inputs: MetricInputs | None = None) -> tuple[float, np.ndarray]:
    """Metric value at ``transform`` and the position after one plain gradient step of ``learning_rate``.

    ``gradient_filters`` False skips the metric's whole-image gradient filters: the value is the same to the bit
    (Mattes MI's value does not use image gradients), only the derivative changes, so value probes save them.
    """
    method = sitk.ImageRegistrationMethod()
    configure_metric(method, settings)
    if not gradient_filters:
        method.SetMetricUseFixedImageGradientFilter(False)
        method.SetMetricUseMovingImageGradientFilter(False)
    method.SetOptimizerAsGradientDescent(learningRate=learning_rate, numberOfIterations=1,
                                         estimateLearningRate=method.Never)
    units = work_units(settings)
    if units is not None:
        method.SetNumberOfWorkUnits(units)
    method.SetInitialTransform(sitk.BSplineTransform(transform), inPlace=False)
    if inputs is not None:
        inputs.apply(method)
        inputs.apply_level(method)
    seen = {}
    method.AddCommand(sitk.sitkIterationEvent,
                      lambda: seen.update(value=method.GetMetricValue(), position=method.GetOptimizerPosition()))
    try:
        with global_thread_count(global_threads(settings)):
            method.Execute(fixed, moving)
    finally:
        method.RemoveAllCommands()  # the command's lambda holds the method: a cycle the collector cannot see
    return seen["value"], np.asarray(seen["position"])


def sampled_metric(fixed, moving, transform: sitk.BSplineTransform, settings: RegistrationSettings,
                   inputs: MetricInputs | None = None) -> float:
    """The metric exactly as the optimizer evaluates it (same sampling set) at ``transform``."""
    return _probe(fixed, moving, transform, settings, learning_rate=0.0, gradient_filters=False, inputs=inputs)[0]


def plausibility_metric(fixed, moving, transform: sitk.BSplineTransform, settings: RegistrationSettings,
                        inputs: MetricInputs | None = None) -> float:
    """The metric at ``transform`` on the plausibility check's fixed sample set (see PLAUSIBILITY_SAMPLING_*)."""
    sample = settings.replace(sampling_strategy="regular", sampling_percentage=PLAUSIBILITY_SAMPLING_PERCENTAGE,
                              sampling_seed=PLAUSIBILITY_SAMPLING_SEED)
    return _probe(fixed, moving, transform, sample, learning_rate=0.0, gradient_filters=False, inputs=inputs)[0]


def plausibility_evaluation() -> str:
    """How :func:`plausibility_metric` evaluates, for the result."""
    return (f"sampled: the same {PLAUSIBILITY_SAMPLING_PERCENTAGE:g} % REGULAR sample (seed "
            f"{PLAUSIBILITY_SAMPLING_SEED}) for identity and result, independent of the optimizer's samples")


def metric_value_and_gradient(fixed, moving, transform: sitk.BSplineTransform, settings: RegistrationSettings,
                              inputs: MetricInputs | None = None) -> tuple[float, np.ndarray]:
    """The sampled metric and ITK's derivative at ``transform`` (parameters order), as the optimizer receives
    them unscaled."""
    start = np.asarray(transform.GetParameters())
    value, position = _probe(fixed, moving, transform, settings, learning_rate=1.0, inputs=inputs)
    return value, start - position


def scales_estimation_seconds(image: sitk.Image, settings: RegistrationSettings, radius: int) -> float:
    """Process CPU seconds of one scales estimation of ``settings``' estimator with central region ``radius``.

    ITK's cost for a BSpline is parameters x central-region voxels x 2 transformed points, whatever the image
    size, so it is timed on a small image with the same control grid, at radius min(radius, 2), and scaled by
    the number of central-region voxels ``image`` would give. Timed as the difference between a learning-rate-0
    gradient descent with and without the estimator (ITK estimates the scales twice when it starts).
    """
    from .grid import initial_bspline

    dimension = image.GetDimension()
    probe_radius = min(radius, 2)
    grid_settings = settings.replace(spacing_override=None, normalised_units=False)
    mesh = tuple(int(n) - 3 for n in initial_bspline(image, grid_settings).GetFixedParameters()[:dimension])
    per_probe_voxel = _estimation_seconds_per_voxel(mesh, image.GetDirection(), probe_radius, settings.scales_estimator,
                                                    parameter_variation(settings), settings.histogram_bins)
    voxels = int(np.prod([min(2 * radius + 1, n) for n in image.GetSize()]))
    return per_probe_voxel * voxels


@functools.lru_cache(maxsize=16)
def _estimation_seconds_per_voxel(mesh: tuple[int, ...], direction: tuple[float, ...], probe_radius: int,
                                  estimator: str, variation: float, bins: int) -> float:
    """Seconds of one estimation per central-region voxel (timed once per process for the same grid: a study's
    runs share it)."""
    dimension = len(mesh)
    small = sitk.Image([max(2 * probe_radius + 1, 6)] * dimension, sitk.sitkFloat32)
    small.SetDirection(direction)
    small = sitk.AdditiveGaussianNoise(small, 1.0, 0.0, 7)
    initial = sitk.BSplineTransformInitializer(small, list(mesh))
    seconds = []
    for with_estimator in (False, True):
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
        method.SetMetricUseFixedImageGradientFilter(False)
        method.SetMetricUseMovingImageGradientFilter(False)
        method.SetOptimizerAsGradientDescent(learningRate=0.0, numberOfIterations=1, estimateLearningRate=method.Never)
        if with_estimator:
            set_scales_estimator(method, estimator, probe_radius, variation)
        method.SetNumberOfWorkUnits(1)
        method.SetInitialTransform(sitk.BSplineTransform(initial), inPlace=False)
        with global_thread_count(1), fast_scales_warning_muted(estimator):
            start = time.process_time()
            method.Execute(small, small)
            seconds.append(time.process_time() - start)
    return max(seconds[1] - seconds[0], 0.0) / 2 / (2 * probe_radius + 1) ** dimension


def max_shift(transform: sitk.BSplineTransform, parameters: np.ndarray, image: sitk.Image) -> float:
    """Largest displacement (mm) over ``image``'s voxels of the BSpline with coefficients ``parameters``."""
    probe = sitk.BSplineTransform(transform)
    probe.SetParameters(parameters.tolist())
    field = sitk.TransformToDisplacementField(probe, sitk.sitkVectorFloat64, image.GetSize(), image.GetOrigin(),
                                              image.GetSpacing(), image.GetDirection())
    return float(np.linalg.norm(sitk.GetArrayViewFromImage(field), axis=-1).max())


def slope_along(fixed, moving, transform, direction: np.ndarray, settings, step_mm: float,
                inputs: MetricInputs | None = None) -> float:
    """Central-difference derivative of the sampled metric along the unit parameter vector ``direction``."""
    start = np.asarray(transform.GetParameters())
    values = []
    for sign in (1.0, -1.0):
        moved = sitk.BSplineTransform(transform)
        moved.SetParameters((start + sign * step_mm * direction).tolist())
        values.append(sampled_metric(fixed, moving, moved, settings, inputs))
    return (values[0] - values[1]) / (2.0 * step_mm)
