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
#: ``physical_shift_fast``: the physical-shift estimator on the central voxel (radius 0) with a parameter variation
#: too small to move any point, so that ITK finds no parameter that shifts a voxel and uses scales of exactly 1.
#:
#: Why this is the reported set-up's registration at a fraction of the cost (ITK 5.4 source):
#: - For a BSpline, RegistrationParameterScalesFromShiftBase::EstimateScales fills every scale with one value c,
#:   the smallest largest shift above machine epsilon that a change of one parameter by the variation causes over
#:   the central region's (2r+1)^3 voxels: parameters x (2r+1)^3 x 2 transformed points, 375 x 1331 x 2 for mesh
#:   [2,2,2] and r = 5, about 1.4 s whatever the image size; LBFGS2Optimizerv4::EvaluateCost runs it at every
#:   metric evaluation (m_EstimateScalesAtEachIteration), plus twice in StartOptimization.
#: - EvaluateCost hands libLBFGS (gradient / c) x learning rate; the learning rate is re-estimated while the
#:   iteration counter is 0 as spacing / (largest shift of gradient / c over every voxel), so c cancels: the
#:   handed gradient is gradient x spacing / (its largest shift), whatever c is, as long as c does not change
#:   afterwards.
#: - c is often set by a parameter whose weight at the region's voxels is tiny, so its shift is a difference of
#:   two point coordinates at rounding level: c then jumps between evaluations (by a factor 2 at 1e-15 mm) and
#:   the handed gradient with it. With scales of exactly 1 the estimator costs 375 x 2 points per evaluation, c
#:   cannot jump, and the learning-rate estimate that carries the normalisation is ITK's own, unchanged.
#: A run without an estimator is a different registration: EstimateLearningRate returns at once and the raw
#: gradient is handed over. Not bit-identical: g / c rounds differently, and where the reported set-up's c jumps
#: its path parts from this one. ITK warns at each estimation that no parameter moves a voxel: that is the
#: mechanism, so the warning is muted during such runs (:func:`fast_scales_warning_muted`).
FAST_CENTRAL_REGION_RADIUS = 0
#: Parameter variation of ``physical_shift_fast`` (mm of one coefficient): every shift it causes is below machine
#: epsilon (the coefficient plus 1e-30 is the coefficient), which is ITK's test for "moves no voxel".
FAST_PARAMETER_VARIATION = 1e-30

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
    set_scales_estimator(method, settings.scales_estimator, central_region_radius(settings),
                         parameter_variation(settings))


def central_region_radius(settings: RegistrationSettings) -> int:
    """The central region radius the scales estimator runs with."""
    return FAST_CENTRAL_REGION_RADIUS if settings.scales_estimator == "physical_shift_fast" \
        else settings.scales_central_region_radius


def parameter_variation(settings: RegistrationSettings) -> float:
    """The small parameter variation the scales estimator runs with."""
    return FAST_PARAMETER_VARIATION if settings.scales_estimator == "physical_shift_fast" \
        else settings.scales_small_parameter_variation


@contextlib.contextmanager
def fast_scales_warning_muted(estimator: str):
    """ITK's warnings muted while a ``physical_shift_fast`` run executes: ITK would print "Variation in any
    parameter won't change a voxel position" after every metric evaluation, and that is how its scales become 1."""
    if estimator != "physical_shift_fast":
        yield
        return
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def set_scales_estimator(method: sitk.ImageRegistrationMethod, estimator: str, radius: int, variation: float):
    """Set the optimizer's scales estimator by its settings name ("none": none)."""
    if estimator in ("physical_shift", "physical_shift_fast"):
        method.SetOptimizerScalesFromPhysicalShift(radius, variation)
    elif estimator == "index_shift":
        method.SetOptimizerScalesFromIndexShift(radius, variation)
    elif estimator == "jacobian":
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
    configure_pyramid(method, settings)
    return method


def configure_pyramid(method: sitk.ImageRegistrationMethod, settings: RegistrationSettings):
    """Shrink factors and smoothing sigmas per level; sigmas in voxels (spacing-invariant). The default single
    full-resolution, unsmoothed level is SimpleITK's own default and is left untouched."""
    if settings.shrink_factors == (1,) and settings.smoothing_sigmas == (0.0,):
        return
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors))
    method.SetSmoothingSigmasPerLevel([float(v) for v in settings.smoothing_sigmas])
    method.SetSmoothingSigmasAreSpecifiedInPhysicalUnits(False)

