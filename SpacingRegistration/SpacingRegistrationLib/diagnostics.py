"""What a run's numbers mean: libLBFGS runs, stop reasons, unit-dependent quantities and plain-language warnings."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from . import method, probes

if TYPE_CHECKING:
    from .registration import IterationRecord, RegistrationResult
    from .settings import RegistrationSettings

#: ``GetOptimizerStopConditionDescription`` texts of ITK 5.4's LBFGS2Optimizerv4 and their categories.
LBFGS2_STOP_REASONS = {
    "Converged": "converged",
    "Already minimized": "converged",
    "Stopped": "stopped",
    "Reached maximum number of iterations": "maximum_iterations",
    "A rounding error occurred or line-search steps have an insufficient reduction": "line_search_failure",
    "LineSearch reached maximum umber of iterations": "line_search_failure",
    "LineSearch became bigger than the maximum linesearch step size": "line_search_failure",
    "LineSearch became smaller than the minimum linesearch step size": "line_search_failure",
    "A logic error occurred; alternatively the interval of uncertainty became too small": "line_search_failure",
    "Relative width of the interval of uncertainty is at most lbfgs_parameter_t::xtol": "line_search_failure",
    "Line-search routine requires more iterations": "line_search_failure",
}

STOP_REASON_TEXT = {
    "converged": "converged: the gradient test was met",
    "delta_test": "stopped by the delta (metric decrease) test",
    "maximum_iterations": "reached the maximum number of iterations",
    "line_search_failure": "a line search failed to find a sufficient decrease",
    "stopped": "stopped by a request",
    "cancelled": "cancelled by the user",
    "other": "stopped for another reason (see the stop description)",
}

#: Above this, ``lineSearchAccuracy`` times the gradient/slope ratio makes the first line search likely to fail.
SUFFICIENT_DECREASE_ALERT = 0.3
#: A largest displacement above this fraction of the image's smallest size is flagged as implausible.
IMPLAUSIBLE_DISPLACEMENT = 0.25
#: Largest displacement of the central-difference steps used to measure the slope, in voxels.
SLOPE_STEP_VOXELS = 0.05
#: Relative spread of the optimizer scales below which they count as uniform at rounding level.
ROUNDING_LEVEL = 1e-10


def classify_stop(optimizer: str, description: str) -> str:
    """Category of a stop description (see :data:`STOP_REASON_TEXT`)."""
    text = description.strip()
    if optimizer == "lbfgs2":
        if text == "Unknown status":
            return "delta_test"
        for known, category in LBFGS2_STOP_REASONS.items():
            if text.startswith(known):
                return category
        return "other"
    lowered = text.lower()
    if "maximum number of iterations" in lowered or "iterations" in lowered and "max" in lowered:
        return "maximum_iterations"
    if "converge" in lowered or "convergence" in lowered:
        return "converged"
    if "line search" in lowered or "linesearch" in lowered:
        return "line_search_failure"
    return "other"


def iterations_per_run(trace: list[IterationRecord]) -> list[int]:
    """Iteration events per libLBFGS run (LBFGS2 runs libLBFGS twice; the counter restarts at 0)."""
    counts: dict[int, int] = {}
    for record in trace:
        counts[record.lbfgs_run] = counts.get(record.lbfgs_run, 0) + 1
    return [counts[run] for run in sorted(counts)]


def restart_events(trace) -> list[int]:
    """Event indices where libLBFGS started again (LBFGS2's second run, or a new pyramid level), for the metric
    traces' markers; ``trace`` holds IterationRecords or their dicts (a study folder's stored trace)."""
    def key(record):
        record = record if isinstance(record, dict) else vars(record)
        return record.get("level", 0), record.get("lbfgs_run", 0)

    return [after["event_index"] if isinstance(after, dict) else after.event_index
            for before, after in zip(trace, trace[1:]) if key(after) != key(before)]


def scales_report(trace: list[IterationRecord]) -> dict[str, object]:
    """Were the optimizer scales uniform, and did they change during the run?"""
    lows = np.array([r.scales_min for r in trace])
    highs = np.array([r.scales_max for r in trace])
    if not trace or np.isnan(lows).all():
        return {"uniform_at_rounding_level": None, "changed_during_run": None, "first": None}
    spread = float(np.max((highs - lows) / np.maximum(np.abs(highs), np.finfo(float).tiny)))
    return {
        "first": [float(lows[0]), float(highs[0])],
        "relative_spread": spread,
        "uniform_at_rounding_level": spread < ROUNDING_LEVEL,
        "changed_during_run": bool(np.any(lows != lows[0]) or np.any(highs != highs[0])),
    }


def lbfgs2_report(fixed, moving, initial, settings: RegistrationSettings, final_position: np.ndarray,
                  inputs: probes.MetricInputs | None = None) -> dict:
    """The unit-dependent quantities of an LBFGS2 run, measured at the initial transform.

    ITK hands libLBFGS the metric gradient rescaled (when a scales estimator is set) so that its largest
    voxel shift is the smallest spacing s in mm; libLBFGS's first trial step has norm 1 in parameter units
    (mm); its sufficient-decrease test compares the actual decrease with ``lineSearchAccuracy`` times the
    handed gradient. ``gradient_slope_ratio`` is the handed gradient norm over the true slope of the sampled
    metric along the descent direction: ``sufficient_decrease_load`` = lineSearchAccuracy x ratio near 1
    means the first line search cannot succeed.
    """
    spacing = float(min(fixed.GetSpacing()))
    started = time.perf_counter()
    _value, gradient = probes.metric_value_and_gradient(fixed, moving, initial, settings, inputs)
    probe_seconds = time.perf_counter() - started
    norm = float(np.linalg.norm(gradient))
    threshold = settings.lbfgs2.solution_accuracy * max(1.0, float(np.linalg.norm(final_position)))
    report = {"maximum_step_mm": spacing, "metric_gradient_norm": norm, "gradient_probe_s": probe_seconds,
              "convergence_test": {"epsilon": settings.lbfgs2.solution_accuracy,
                                   "final_position_norm": float(np.linalg.norm(final_position)),
                                   "gradient_norm_must_fall_below": threshold}}
    if norm == 0.0:
        return {**report, "note": "the metric gradient is exactly zero at the start"}
    direction = -gradient / norm
    shift = probes.max_shift(initial, direction, fixed)
    handed = spacing / shift if settings.scales_estimator != "none" else norm
    report["convergence_test"]["initial_handed_gradient_norm"] = handed
    report.update(first_trial_step_voxels=shift / spacing, unit_parameter_shift_mm=shift, handed_gradient_norm=handed)
    if settings.scales_estimator == "none":
        # Without an estimator ITK hands libLBFGS the metric's own gradient: the ratio is 1 up to the accuracy of
        # the analytic derivative, so the two slope probes are skipped.
        return {**report, "slope_along_descent": None, "gradient_slope_ratio": None, "sufficient_decrease_load": None,
                "note": "no scales estimator: the metric's own gradient is handed over (gradient/slope ratio ~1, "
                        "not measured)"}
    slope = probes.slope_along(fixed, moving, initial, direction, settings, SLOPE_STEP_VOXELS * spacing / shift, inputs)
    ratio = handed / abs(slope) if slope != 0 else float("inf")
    return {**report,
            "slope_along_descent": slope,
            "gradient_slope_ratio": ratio,
            "sufficient_decrease_load": settings.lbfgs2.line_search_accuracy * ratio}


def estimator_report(fixed, settings: RegistrationSettings, scales: dict, optimisation_seconds: float,
                     evaluation_seconds: float | None) -> dict:
    """What the scales estimator cost the run, and whether its work changed anything.

    ITK 5.4's LBFGS2 re-runs the estimator after every metric evaluation (and twice at the start); one
    estimation E is timed (:func:`probes.scales_estimation_seconds`). Without a metric-evaluation event the
    number of evaluations is estimated as (run time - 2E) / (E + c), c being a learning-rate-0 probe of the run's
    metric (set-up + one evaluation, so at least one evaluation's cost); the share (evaluations + 2) x E / run
    time is therefore a lower estimate, and leaves out the step-scale estimation over every voxel that the
    learning-rate estimate adds while the iteration counter is 0.
    """
    radius = method.central_region_radius(settings)
    one = probes.scales_estimation_seconds(fixed, settings, radius)
    per_evaluation = one + (evaluation_seconds or 0.0)
    evaluations = max(0.0, optimisation_seconds - 2 * one) / per_evaluation if per_evaluation > 0 else 0.0
    share = min(1.0, (evaluations + 2) * one / optimisation_seconds) if optimisation_seconds > 0 else 0.0
    return {"estimator": settings.scales_estimator, "central_region_radius": radius,
            "one_estimation_s": one, "evaluations_estimated": evaluations, "share_of_registration": share,
            "uniform": scales.get("uniform_at_rounding_level"), "changed_during_run": scales.get("changed_during_run"),
            "evaluation": "one estimation timed on a small image with the same control grid, scaled to this image's "
                          "central region; share = (estimated evaluations + 2) x one estimation / run time"}


def optimizer_report(fixed, moving, initial, settings: RegistrationSettings, trace: list[IterationRecord],
                     final_position: np.ndarray, optimisation_seconds: float = 0.0,
                     inputs: probes.MetricInputs | None = None) -> dict:
    """Optimizer facts for the result: scales behaviour, for LBFGS2 the line-search quantities, and with a
    scales estimator its share of the ``optimisation_seconds``. ``inputs``: the run's mask and initial transform."""
    report = {"scales": scales_report(trace)}
    if settings.optimizer == "lbfgs2":
        report["lbfgs2"] = lbfgs2_report(fixed, moving, initial, settings, final_position, inputs)
    if settings.scales_estimator != "none":
        report["scales_estimator"] = estimator_report(fixed, settings, report["scales"], optimisation_seconds,
                                                      report.get("lbfgs2", {}).get("gradient_probe_s"))
    return report


def warnings_for(result: RegistrationResult) -> list[str]:
    """Plain-language warnings for each trap of the run (see docs/spacing-effect.md)."""
    s = result.settings
    messages = []
    lbfgs = result.optimizer.get("lbfgs2", {})
    load = lbfgs.get("sufficient_decrease_load")
    if result.cancelled:
        messages.append(f"Cancelled after {len(result.trace)} iteration(s): this is a partial result.")
    if not result.moved and not result.cancelled:
        reason = "the first line search failed" if not result.trace and result.stop_reason == "line_search_failure" \
            else f"the optimizer stopped with '{result.stop_description}'"
        messages.append(f"The transform never moved: every BSpline coefficient is exactly zero ({reason}). "
                        "Zero variability here is a registration that did not happen.")
    if load is not None and load >= SUFFICIENT_DECREASE_ALERT:
        messages.append(
            f"lineSearchAccuracy x gradient/slope ratio = {load:.3g} (failure near 1): LBFGS2 scales the gradient "
            f"so that its largest shift is {lbfgs['maximum_step_mm']:g} mm, so this grows with the spacing squared. "
            "Register in normalised units to remove the dependence.")
    runs = result.iterations_per_run
    if s.optimizer == "lbfgs2" and len(runs) > 1:
        messages.append(f"LBFGS2 ran libLBFGS {len(runs)} times ({' + '.join(map(str, runs))} iterations); "
                        "GetOptimizerIteration, the stop description and GetMetricValue describe only the last run.")
    if s.optimizer == "lbfgs2" and result.stop_reason == "line_search_failure" and result.moved:
        first = lbfgs.get("first_trial_step_voxels")
        step = f" (here {first:.3g} voxel)" if first is not None else ""
        messages.append("The run ended on a line-search failure, not on the convergence test: its path depends on "
                        f"libLBFGS's unit first step{step} and absolute tolerances, so on the spacing.")
    if result.stop_reason == "delta_test":
        messages.append("'Unknown status' is LBFGS2's delta test: with the negative Mattes value it fires after "
                        f"exactly deltaConvergenceDistance={s.lbfgs2.delta_convergence_distance} iterations.")
    if abs(result.metric_reported - result.metric_reevaluated) > 1e-9 * max(1.0, abs(result.metric_reevaluated)):
        messages.append(f"The reported metric {result.metric_reported:.10g} is not the value at the returned transform "
                        f"({result.metric_reevaluated:.10g}): after a failed line search it is the last rejected trial.")
    if result.threading.get("work_units") != 1 and result.threading.get("global_default_threads") != 1:
        messages.append("Several work units: Mattes MI adds per-thread derivatives in lock order, so repeats are not "
                        "bitwise repeatable and results change with the number of work units. Use reproducible mode.")
    if s.sampling_strategy != "none" and s.sampling_seed is None:
        messages.append("The sampling seed is the wall clock: every run samples different points.")
    scales = result.optimizer["scales"]
    estimator = result.optimizer.get("scales_estimator")
    if estimator is not None:
        uniform = {True: "its scales were uniform", False: "its scales were not uniform"}.get(
            scales.get("uniform_at_rounding_level"), "its scales are not known (no iteration completed)")
        text = (f"The {s.scales_estimator} scales estimator (central region radius {estimator['central_region_radius']}) "
                f"took about {estimator['share_of_registration']:.0%} of the registration ({estimator['one_estimation_s']:.3g} s "
                f"per estimation, re-run after every metric evaluation); {uniform}"
                + (f" ({scales['first'][0]:.3g})" if scales.get("first") else "") + ".")
        if s.scales_estimator == "physical_shift" and s.optimizer == "lbfgs2":
            text += (" scales_estimator='physical_shift_fast' runs the same estimator on the central voxel with a "
                     "uniform scale of exactly 1: the same algorithm at a fraction of the cost (ITK divides the "
                     "gradient by the uniform scale and its learning-rate estimate multiplies it back). Not "
                     "bit-identical: where this run's scale jumped at rounding level, its path parts from that one "
                     "(docs/fast-equivalent.md).")
        messages.append(text)
    if scales.get("changed_during_run"):
        messages.append("The optimizer scales changed during the run (at rounding level), which rescales the gradient.")
    plausibility = result.plausibility
    if plausibility is not None and result.moved:
        if plausibility.metric_result > plausibility.metric_identity:
            messages.append(f"The result is worse than the identity on the plausibility check's fixed sample "
                            f"({plausibility.metric_result:.6g} vs {plausibility.metric_identity:.6g}).")
        if plausibility.folding:
            messages.append(f"The deformation folds: the smallest Jacobian determinant is "
                            f"{plausibility.min_jacobian_determinant:.3g} (<= 0).")
        if plausibility.max_displacement_voxels > IMPLAUSIBLE_DISPLACEMENT * min(plausibility.image_size_voxels):
            messages.append(f"The largest displacement is {plausibility.max_displacement_voxels:.3g} voxels, more than "
                            f"{IMPLAUSIBLE_DISPLACEMENT:.0%} of the image's smallest size.")
    messages.extend(result.grid.warnings)
    return messages
