"""The engine: one BSpline registration, observed iteration by iteration, with its diagnosis."""

from __future__ import annotations

import io
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import SimpleITK as sitk

from . import diagnostics, images, initial_transforms, masks, method, probes, resources, truth as truths
from .displacement import FieldStatistics, displacement_array, field_statistics, minimum_jacobian_determinant
from .grid import GridGeometry, grid_geometry, initial_bspline
from .settings import RegistrationSettings, SettingsError, to_dict

#: Fewest voxels per axis a pyramid level may leave (a shrink factor beyond that is refused before any work).
MINIMUM_LEVEL_VOXELS = 4


class CancelToken(Protocol):
    """Anything with ``is_set()`` (``threading.Event``, ``multiprocessing.Event``)."""

    def is_set(self) -> bool: ...


class Cancelled(Exception):
    """Raised inside the iteration callback to abort ``Execute`` at once."""


class RegistrationFailedError(RuntimeError):
    """ITK stopped the registration with an exception; the message says why in one sentence."""


@dataclass(frozen=True)
class IterationRecord:
    """One optimizer iteration event."""

    event_index: int
    lbfgs_run: int
    iteration: int
    metric: float
    step_max_voxels: float
    convergence_value: float
    learning_rate: float
    scales_min: float
    scales_max: float
    wall_time: float
    #: Pyramid level (0 = the coarsest; always 0 with one level); ``lbfgs_run`` and ``iteration`` restart per level.
    level: int = 0


@dataclass(frozen=True)
class Plausibility:
    """Is the result better than doing nothing, and is it a valid deformation?"""

    metric_identity: float
    metric_result: float
    evaluation: str
    improvement: float
    max_displacement_voxels: float
    image_size_voxels: tuple[int, ...]
    min_jacobian_determinant: float
    folding: bool


@dataclass
class RegistrationResult:
    """Everything a run produced. ``transform`` is in the physical units of the registered images
    (after any spacing override), whatever mode ran; ``cancelled`` results are partial."""

    transform: sitk.BSplineTransform
    settings: RegistrationSettings
    spacing: tuple[float, ...]
    normalisation_factor: float
    coefficients_mm: np.ndarray
    coefficients_voxels: np.ndarray
    trace: list[IterationRecord]
    #: Iterations per libLBFGS run of the last pyramid level (the one the stop description describes).
    iterations_per_run: list[int]
    stop_description: str
    stop_reason: str
    moved: bool
    metric_reported: float
    metric_reevaluated: float
    timing: dict[str, float]
    threading: dict[str, object]
    versions: dict[str, str]
    grid: GridGeometry
    displacement: FieldStatistics | None
    plausibility: Plausibility | None
    optimizer: dict[str, object]
    cancelled: bool = False
    warnings: list[str] = field(default_factory=list)
    error: truths.RegistrationError | None = None
    #: The initial transform composed before the BSpline, in the same physical units as ``transform``.
    initial_transform: sitk.Transform | None = None
    #: Whether a fixed-image mask restricted the metric and the statistics.
    masked: bool = False
    #: Iterations per libLBFGS run, for each pyramid level (coarse to fine).
    iterations_per_level: list[list[int]] = field(default_factory=list)

    @property
    def mapping(self) -> sitk.Transform:
        """The whole fixed-to-moving mapping: ``initial(bspline(x))`` (a CompositeTransform) with an initial
        transform, else the BSpline. The displacement statistics, plausibility and error describe this mapping."""
        return initial_transforms.whole_mapping(self.initial_transform, self.transform)

    def summary(self) -> dict:
        """JSON-ready summary (no arrays, no transform)."""
        return {
            "settings": to_dict(self.settings),
            "spacing": list(self.spacing),
            "normalisation_factor": self.normalisation_factor,
            "cancelled": self.cancelled,
            "moved": self.moved,
            "stop_description": self.stop_description,
            "stop_reason": self.stop_reason,
            "iterations_per_run": self.iterations_per_run,
            "iterations_per_level": self.iterations_per_level,
            "metric_reported": self.metric_reported,
            "metric_reevaluated": self.metric_reevaluated,
            "max_coefficient_mm": float(np.abs(self.coefficients_mm).max()),
            "max_coefficient_voxels": float(np.abs(self.coefficients_voxels).max()),
            "displacement": self.displacement.as_dict() if self.displacement else None,
            "plausibility": vars(self.plausibility) if self.plausibility else None,
            "optimizer": self.optimizer,
            "timing": self.timing,
            "threading": self.threading,
            "versions": self.versions,
            "grid": self.grid.summary(),
            "warnings": self.warnings,
            "error": self.error.as_dict() if self.error else None,
            "initial_transform": self.initial_transform.GetName() if self.initial_transform is not None else None,
            "masked": self.masked,
        }


ProgressCallback = Callable[[IterationRecord], None]


def run(fixed: sitk.Image, moving: sitk.Image, settings: RegistrationSettings | None = None,
        progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
        mask=None, memory_limit_bytes: int | None = None,
        truth=None, initial_transform=None) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with a cubic BSpline and diagnose the run.

    ``progress`` is called with each :class:`IterationRecord`; setting ``cancel`` stops the optimizer at
    its next iteration and returns a result with ``cancelled=True``. ``mask`` (a file, an image or a numpy-order
    array; see :mod:`masks`) restricts the metric (``SetMetricFixedMask``, also in every probe) and the
    displacement, plausibility and error statistics. ``initial_transform`` (a file or a transform, fixed to
    moving in the files' physical space; see :mod:`initial_transforms`) is composed before the BSpline:
    ``result.mapping`` is the whole mapping. Before any work, the peak memory is estimated and compared with
    ``memory_limit_bytes`` (default: the memory available on this machine): too little raises
    :class:`resources.ResourceError`. ``truth`` (a known deformation: file, transform, displacement image or
    :class:`truth.Truth`) adds the result's error against it, in ``result.error``.
    """
    settings = settings or RegistrationSettings()
    given = fixed, moving  # their pixel types count in the estimate (a cast to float32 is a copy)
    fixed, moving = images.check_pair(fixed, moving)
    resources.check_registration_memory(*given, settings, memory_limit_bytes)
    known = None if truth is None else truths.as_truth(truth, fixed)  # a bad truth fails before any work
    _check_pyramid(fixed, settings)
    mask_image = None if mask is None else masks.fixed_mask(mask, fixed)
    given_initial = None if initial_transform is None else initial_transforms.load(initial_transform)
    native_fixed = fixed
    if settings.spacing_override is not None:
        fixed = images.with_spacing(fixed, settings.spacing_override)
        moving = images.with_spacing(moving, settings.spacing_override)
    factor, origin = 1.0, fixed.GetOrigin()
    work_fixed, work_moving = fixed, moving
    if settings.normalised_units:
        factor = images.normalisation_factor(fixed)
        work_fixed = images.to_normalised_units(fixed, factor, origin)
        work_moving = images.to_normalised_units(moving, factor, origin)

    result_initial = work_initial = None
    if given_initial is not None:
        result_initial, work_initial = initial_transforms.work_spaces(given_initial, native_fixed, settings, factor,
                                                                      origin)
    inputs = probes.MetricInputs(None if mask_image is None else masks.on_work_grid(mask_image, work_fixed),
                                 work_initial, (settings.shrink_factors[-1], float(settings.smoothing_sigmas[-1])))

    initial = initial_bspline(work_fixed, settings)
    start_position = np.asarray(initial.GetParameters())
    registration = method.build_method(settings, initial)
    inputs.apply(registration)
    observer = _Observer(registration, work_fixed, start_position, progress, cancel)
    registration.AddCommand(sitk.sitkIterationEvent, observer.on_iteration)
    registration.AddCommand(sitk.sitkMultiResolutionIterationEvent, observer.on_level)

    cancelled = False
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    with method.global_thread_count(method.global_threads(settings)), \
            method.fast_scales_warning_muted(settings.scales_estimator):
        threading_setup = _threading_setup(registration)
        try:
            optimised = sitk.BSplineTransform(registration.Execute(work_fixed, work_moving))
        except RuntimeError as error:
            if not observer.cancelled:
                raise _failure(error, settings, work_fixed, inputs.fixed_mask) from error
            cancelled = True
            optimised = observer.last_transform(initial_bspline(work_fixed, settings))
        finally:
            observer.restore_stderr()
            # The command holds the observer, which holds the method: a cycle through C++ that Python's
            # garbage collector cannot see, leaking the method (and the metric's gradient image) every run.
            registration.RemoveAllCommands()
    end_wall, end_cpu = time.perf_counter(), time.process_time()

    stop_description = "cancelled by the user" if cancelled else registration.GetOptimizerStopConditionDescription()
    run_facts = {
        "trace": observer.trace, "stop_description": stop_description, "cancelled": cancelled,
        "levels": observer.levels_started,
        "metric_reported": registration.GetMetricValue(),
        "metric_reevaluated": probes.sampled_metric(work_fixed, work_moving, optimised, settings, inputs),
        "timing": _timing(observer.trace, start_wall, end_wall, end_cpu - start_cpu),
        "threading": threading_setup,
        "optimizer": diagnostics.optimizer_report(work_fixed, work_moving, initial_bspline(work_fixed, settings),
                                                  settings, observer.trace, np.asarray(optimised.GetParameters()),
                                                  end_wall - start_wall, inputs),
    }
    transform = images.bspline_from_normalised_units(optimised, factor, origin) if settings.normalised_units \
        else optimised
    statistics_mask = masks.as_array(mask_image)
    result_mask = None if mask_image is None else masks.on_work_grid(mask_image, fixed)
    result = _assemble(fixed, moving, transform, settings, factor, run_facts, statistics_mask,
                       probes.MetricInputs(result_mask, result_initial))
    if known is not None:
        result.error = truths.error_of_transform(known, result.mapping, fixed, statistics_mask)
    return result


def _failure(error: RuntimeError, settings: RegistrationSettings, fixed: sitk.Image,
             mask: sitk.Image | None) -> RegistrationFailedError:
    """ITK's exception as one sentence a user can act on. Mattes MI fails in three ways when it has almost no
    samples (an empty point set, a zero intensity range, no sample inside the moving image); with at least as
    many samples as histogram bins, no sample inside the moving image means the images do not overlap."""
    text = str(error)
    voxels = int(np.prod(fixed.GetSize())) if mask is None else int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    coarsest = voxels / max(settings.shrink_factors) ** fixed.GetDimension()
    samples = coarsest if settings.sampling_strategy == "none" else coarsest * settings.sampling_percentage / 100
    outside = "All samples map outside moving image" in text
    if samples < settings.histogram_bins and (outside or "Zero-valued spacing" in text
                                              or "VirtualSampledPointSet" in text):
        return RegistrationFailedError(
            f"the metric has too few samples: sampling {settings.sampling_percentage:g} % of {voxels} voxels"
            f"{' inside the mask' if mask is not None else ''} (coarsest level: about {samples:.3g} points) is fewer "
            f"than the {settings.histogram_bins} histogram bins; raise sampling_percentage")
    if outside:
        return RegistrationFailedError(
            "every metric sample maps outside the moving image: the images do not overlap enough (check their "
            "origins, directions and the initial transform) or the transform ran away")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return RegistrationFailedError(f"ITK stopped the registration: {lines[-1] if lines else type(error).__name__}")


class _Observer:
    """Records every iteration event; raises :class:`Cancelled` when asked to stop."""

    def __init__(self, registration, fixed, start_position: np.ndarray, progress, cancel):
        self.registration = registration
        self.fixed = fixed
        self.progress = progress
        self.cancel = cancel
        self.trace: list[IterationRecord] = []
        self.cancelled = False
        self.previous_position = start_position
        self.lbfgs_run = 0
        self.level = 0
        self.levels_started = 0
        self.saved_stderr = None
        self.started = time.perf_counter()

    def on_level(self):
        """ITK announces each pyramid level (the first included) before optimising it; the optimizer restarts."""
        self.level = self.levels_started
        self.levels_started += 1
        self.lbfgs_run = 0

    def on_iteration(self):
        r = self.registration
        position = np.asarray(r.GetOptimizerPosition())
        iteration = r.GetOptimizerIteration()
        if self.trace and self.trace[-1].level == self.level and iteration <= self.trace[-1].iteration:
            self.lbfgs_run += 1
        step = _max_voxels(position - self.previous_position, self.fixed)
        self.previous_position = position
        scales = np.asarray(r.GetOptimizerScales())
        record = IterationRecord(
            event_index=len(self.trace), lbfgs_run=self.lbfgs_run, iteration=iteration,
            metric=r.GetMetricValue(), step_max_voxels=step,
            convergence_value=r.GetOptimizerConvergenceValue(), learning_rate=r.GetOptimizerLearningRate(),
            scales_min=float(scales.min()) if scales.size else float("nan"),
            scales_max=float(scales.max()) if scales.size else float("nan"),
            wall_time=time.perf_counter() - self.started, level=self.level)
        self.trace.append(record)
        if self.progress is not None:
            self.progress(record)
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
            self.quiet_stderr()
            raise Cancelled("registration cancelled")

    def quiet_stderr(self):
        """SimpleITK prints the traceback of an exception raised in a callback; a cancel is not an error."""
        self.saved_stderr = sys.stderr
        sys.stderr = io.StringIO()

    def restore_stderr(self):
        if self.saved_stderr is not None:
            sys.stderr = self.saved_stderr
            self.saved_stderr = None

    def last_transform(self, initial: sitk.BSplineTransform) -> sitk.BSplineTransform:
        """The transform at the last observed position (the start when none was observed)."""
        partial = sitk.BSplineTransform(initial)
        partial.SetParameters(self.previous_position.tolist())
        return partial


def _max_voxels(parameter_change: np.ndarray, image: sitk.Image) -> float:
    """Largest control-point move in voxels (BSpline parameters are [all x, all y, all z] in mm)."""
    dimension = image.GetDimension()
    moves = parameter_change.reshape(dimension, -1).T
    direction = np.asarray(image.GetDirection()).reshape(dimension, dimension)
    return float(np.abs((moves @ direction) / np.asarray(image.GetSpacing())).max()) if moves.size else 0.0


def _threading_setup(registration: sitk.ImageRegistrationMethod) -> dict[str, object]:
    return {
        "threader": sitk.ProcessObject.GetGlobalDefaultThreader(),
        "global_default_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "method_threads": registration.GetNumberOfThreads(),
        "work_units": registration.GetNumberOfWorkUnits(),
    }


def _timing(trace: list[IterationRecord], start: float, end: float, cpu: float) -> dict[str, float]:
    total = end - start
    if not trace:
        return {"total_s": total, "cpu_s": cpu, "initialisation_s": total, "per_iteration_s": float("nan")}
    first = trace[0].wall_time
    per_iteration = (trace[-1].wall_time - first) / (len(trace) - 1) if len(trace) > 1 else float("nan")
    return {"total_s": total, "cpu_s": cpu, "initialisation_s": first, "per_iteration_s": per_iteration}


def _versions() -> dict[str, str]:
    return {"simpleitk": sitk.Version_VersionString(), "itk": sitk.Version_ITKVersionString(),
            "numpy": np.__version__, "python": platform.python_version()}


def _coefficients(transform: sitk.BSplineTransform, image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients as [component, z, y, x] arrays, in mm (LPS) and in voxels of ``image``."""
    mm = np.stack([sitk.GetArrayFromImage(c) for c in transform.GetCoefficientImages()])
    dimension = image.GetDimension()
    direction = np.asarray(image.GetDirection()).reshape(dimension, dimension)
    vectors = np.moveaxis(mm, 0, -1)
    voxels = np.moveaxis((vectors @ direction) / np.asarray(image.GetSpacing()), -1, 0)
    return mm, voxels


def _assemble(fixed, moving, transform, settings, factor, run_facts, mask, inputs) -> RegistrationResult:
    coefficients_mm, coefficients_voxels = _coefficients(transform, fixed)
    mapping = initial_transforms.whole_mapping(inputs.moving_initial, transform)
    field_mm = displacement_array(mapping, fixed)
    displacement = field_statistics(field_mm, fixed, mask)
    trace = run_facts["trace"]
    cancelled = run_facts["cancelled"]
    stop_description = run_facts["stop_description"]
    result = RegistrationResult(
        transform=transform, settings=settings, spacing=tuple(fixed.GetSpacing()), normalisation_factor=factor,
        coefficients_mm=coefficients_mm, coefficients_voxels=coefficients_voxels, trace=trace,
        iterations_per_run=_iterations_per_level(trace, run_facts["levels"])[-1],
        iterations_per_level=_iterations_per_level(trace, run_facts["levels"]), stop_description=stop_description,
        stop_reason="cancelled" if cancelled else diagnostics.classify_stop(settings.optimizer, stop_description),
        moved=bool(np.any(coefficients_mm != 0)), metric_reported=run_facts["metric_reported"],
        metric_reevaluated=run_facts["metric_reevaluated"], timing=run_facts["timing"],
        threading=run_facts["threading"], versions=_versions(), grid=grid_geometry(transform, fixed),
        displacement=displacement,
        plausibility=_plausibility(fixed, moving, transform, settings, field_mm, displacement, inputs),
        optimizer=run_facts["optimizer"], cancelled=cancelled, initial_transform=inputs.moving_initial,
        masked=inputs.fixed_mask is not None)
    result.warnings.extend(diagnostics.warnings_for(result))
    return result


def _iterations_per_level(trace: list[IterationRecord], levels: int) -> list[list[int]]:
    """Iterations per libLBFGS run for each pyramid level that started (an empty list: no iteration there)."""
    levels = max([levels, 1] + [record.level + 1 for record in trace])
    return [diagnostics.iterations_per_run([r for r in trace if r.level == level]) for level in range(levels)]


def _check_pyramid(fixed: sitk.Image, settings: RegistrationSettings):
    smallest = min(fixed.GetSize()) // max(settings.shrink_factors)
    if smallest < MINIMUM_LEVEL_VOXELS:
        raise SettingsError(f"shrink factor {max(settings.shrink_factors)} leaves {smallest} voxel(s) on the fixed "
                            f"image's smallest axis ({min(fixed.GetSize())} voxels); at least {MINIMUM_LEVEL_VOXELS} "
                            "are needed: use smaller shrink_factors")


def _plausibility(fixed, moving, transform, settings, field_mm, displacement, inputs) -> Plausibility:
    """Identity (doing nothing: no initial transform either) against the whole mapping, inside the mask."""
    identity = sitk.BSplineTransform(transform)
    identity.SetParameters([0.0] * len(transform.GetParameters()))
    metric_identity = probes.plausibility_metric(fixed, moving, identity, settings,
                                                 probes.MetricInputs(inputs.fixed_mask))
    metric_result = probes.plausibility_metric(fixed, moving, transform, settings, inputs)
    jacobian = minimum_jacobian_determinant(field_mm, fixed)
    return Plausibility(
        metric_identity=metric_identity, metric_result=metric_result, evaluation=probes.plausibility_evaluation(),
        improvement=metric_identity - metric_result, max_displacement_voxels=displacement.max_voxels,
        image_size_voxels=tuple(fixed.GetSize()), min_jacobian_determinant=jacobian, folding=jacobian <= 0)
