"""Building a configured ``sitk.ImageRegistrationMethod`` from settings, and evaluating its metric."""

from __future__ import annotations

import contextlib

import SimpleITK as sitk

from .settings import RegistrationSettings

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
    "gaussian": sitk.sitkGaussian,
    "label_gaussian": sitk.sitkLabelGaussian,
    "hamming_windowed_sinc": sitk.sitkHammingWindowedSinc,
}
_SAMPLING = {
    "none": sitk.ImageRegistrationMethod.NONE,
    "regular": sitk.ImageRegistrationMethod.REGULAR,
    "random": sitk.ImageRegistrationMethod.RANDOM,
}
_LEARNING_RATE_ESTIMATION = {
    "never": sitk.ImageRegistrationMethod.Never,
    "once": sitk.ImageRegistrationMethod.Once,
    "each_iteration": sitk.ImageRegistrationMethod.EachIteration,
}


def configure_metric(method: sitk.ImageRegistrationMethod, settings: RegistrationSettings, dense: bool = False):
    """Mattes MI, sampling and interpolator; ``dense`` uses every voxel (no sampling)."""
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    strategy = "none" if dense else settings.sampling_strategy
    method.SetMetricSamplingStrategy(_SAMPLING[strategy])
    if strategy != "none":
        seed = sitk.sitkWallClock if settings.sampling_seed is None else settings.sampling_seed
        method.SetMetricSamplingPercentage(settings.sampling_percentage / 100.0, seed)
    method.SetInterpolator(_INTERPOLATORS[settings.interpolator])


def configure_optimizer(method: sitk.ImageRegistrationMethod, settings: RegistrationSettings):
    """Optimizer and scales estimator."""
    if settings.optimizer == "lbfgs2":
        o = settings.lbfgs2
        method.SetOptimizerAsLBFGS2(
            solutionAccuracy=o.solution_accuracy, numberOfIterations=o.number_of_iterations,
            hessianApproximateAccuracy=o.hessian_approximate_accuracy,
            deltaConvergenceDistance=o.delta_convergence_distance,
            deltaConvergenceTolerance=o.delta_convergence_tolerance,
            lineSearchMaximumEvaluations=o.line_search_maximum_evaluations,
            lineSearchMinimumStep=o.line_search_minimum_step, lineSearchMaximumStep=o.line_search_maximum_step,
            lineSearchAccuracy=o.line_search_accuracy)
    elif settings.optimizer == "lbfgsb":
        o = settings.lbfgsb
        method.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=o.gradient_convergence_tolerance, numberOfIterations=o.number_of_iterations,
            maximumNumberOfCorrections=o.maximum_number_of_corrections,
            maximumNumberOfFunctionEvaluations=o.maximum_number_of_function_evaluations,
            costFunctionConvergenceFactor=o.cost_function_convergence_factor)
    else:
        o = settings.gradient_descent
        method.SetOptimizerAsGradientDescent(
            learningRate=o.learning_rate, numberOfIterations=o.number_of_iterations,
            convergenceMinimumValue=o.convergence_minimum_value, convergenceWindowSize=o.convergence_window_size,
            estimateLearningRate=_LEARNING_RATE_ESTIMATION[o.estimate_learning_rate],
            maximumStepSizeInPhysicalUnits=o.maximum_step_size_in_physical_units)
    radius = settings.scales_central_region_radius
    if settings.scales_estimator == "physical_shift":
        method.SetOptimizerScalesFromPhysicalShift(radius, settings.scales_small_parameter_variation)
    elif settings.scales_estimator == "index_shift":
        method.SetOptimizerScalesFromIndexShift(radius, settings.scales_small_parameter_variation)
    elif settings.scales_estimator == "jacobian":
        method.SetOptimizerScalesFromJacobian(radius)


def work_units(settings: RegistrationSettings) -> int | None:
    """Work units for the method: one in reproducible mode, else the setting (None = SimpleITK's choice)."""
    return 1 if settings.reproducible else settings.number_of_work_units


def global_threads(settings: RegistrationSettings) -> int | None:
    """Global default thread count to impose during the run (None = leave it)."""
    return 1 if settings.reproducible else settings.number_of_threads


@contextlib.contextmanager
def global_thread_count(count: int | None):
    """Temporarily set SimpleITK's global default number of threads (process-wide, restored on exit)."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    if count is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def build_method(settings: RegistrationSettings, initial: sitk.Transform) -> sitk.ImageRegistrationMethod:
    """A registration method ready to ``Execute``; ``initial`` is optimised in place."""
    method = sitk.ImageRegistrationMethod()
    configure_metric(method, settings)
    configure_optimizer(method, settings)
    units = work_units(settings)
    if units is not None:
        method.SetNumberOfWorkUnits(units)
    method.SetInitialTransform(initial, inPlace=True)
    return method


def evaluate_metric(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform,
                    settings: RegistrationSettings) -> float:
    """Metric value at ``transform`` over every voxel (``MetricEvaluate`` ignores sampling)."""
    method = sitk.ImageRegistrationMethod()
    configure_metric(method, settings, dense=True)
    units = work_units(settings)
    if units is not None:
        method.SetNumberOfWorkUnits(units)
    method.SetInitialTransform(sitk.Transform(transform), inPlace=False)
    with global_thread_count(global_threads(settings)):
        return method.MetricEvaluate(fixed, moving)
