"""Plain-text diagnosis of a registration result and of a control grid, for the command line and logs."""

from __future__ import annotations

from .diagnostics import STOP_REASON_TEXT
from .grid import GridGeometry
from .registration import RegistrationResult


def _vector(values, digits: int = 6) -> str:
    return "[" + ", ".join(f"{v:.{digits}g}" for v in values) + "]"


def describe_grid(geometry: GridGeometry) -> str:
    """Control points, domain and image extent, with counts and warnings."""
    lines = [
        f"Control grid: mesh {list(geometry.mesh_size)}, {list(geometry.points_per_axis)} control points per axis",
        f"  grid origin {_vector(geometry.grid_origin, 10)} mm, grid spacing {_vector(geometry.grid_spacing, 10)} mm",
        f"  transform domain origin {_vector(geometry.domain_origin, 10)} mm, "
        f"size {_vector(geometry.domain_physical_dimensions, 10)} mm",
    ]
    for axis, positions in zip("xyz", geometry.axis_positions):
        lines.append(f"  control points along {axis} (grid frame): {_vector(positions, 10)}")
    lines.append(f"  inside the image extent: {geometry.inside_count}, outside: {geometry.outside_count} "
                 f"(per axis inside: {list(geometry.inside_per_axis)})")
    lines.append(f"  image inside the transform domain: {geometry.coverage:.1%}")
    lines.extend(f"  WARNING: {w}" for w in geometry.warnings)
    return "\n".join(lines)


def _inputs_lines(result: RegistrationResult) -> list[str]:
    """The pyramid's iterations per level, the mask and the initial transform, when used."""
    s = result.settings
    lines = []
    if len(s.shrink_factors) > 1 or s.shrink_factors != (1,) or any(s.smoothing_sigmas):
        levels = "; ".join(f"level {n} (shrink {f}, sigma {g:g} voxels): {runs}" for n, (f, g, runs) in
                           enumerate(zip(s.shrink_factors, s.smoothing_sigmas, result.iterations_per_level)))
        lines.append(f"  pyramid, iterations per libLBFGS run by level: {levels} (the line above is the last level)")
    if result.masked:
        lines.append("  fixed-image mask: the metric and the statistics below use its voxels only")
    if result.initial_transform is not None:
        lines.append(f"  initial transform: {result.initial_transform.GetName()} composed before the BSpline; "
                     "displacement, plausibility and error describe the whole mapping")
    return lines


def describe_result(result: RegistrationResult) -> str:
    """The diagnosis: what ran, how it stopped, what moved, and the warnings that apply."""
    s = result.settings
    mode = ", ".join(name for name, on in (("normalised units", s.normalised_units),
                                           ("reproducible", s.reproducible)) if on) or "native"
    lines = [
        "CANCELLED: partial result" if result.cancelled else "Registration finished",
        f"  spacing {_vector(result.spacing)} mm, mode: {mode}, optimizer {s.optimizer}, scales {s.scales_estimator}, "
        f"sampling {s.sampling_strategy} {s.sampling_percentage:g} % seed {s.sampling_seed}",
        f"  iterations per libLBFGS run: {result.iterations_per_run} (total {sum(result.iterations_per_run)})",
        *_inputs_lines(result),
        f"  stop: {STOP_REASON_TEXT[result.stop_reason]} - '{result.stop_description}'",
        f"  moved: {result.moved}; largest coefficient {abs(result.coefficients_voxels).max():.4g} voxels "
        f"({abs(result.coefficients_mm).max():.4g} mm)",
        f"  metric reported {result.metric_reported:.10g}, re-evaluated at the result {result.metric_reevaluated:.10g}",
    ]
    if result.plausibility is not None:
        p = result.plausibility
        lines.append(f"  plausibility metric: identity {p.metric_identity:.6g} -> result {p.metric_result:.6g} "
                     f"(improvement {p.improvement:.4g}; {p.evaluation}); min Jacobian determinant "
                     f"{p.min_jacobian_determinant:.4g}")
    if result.displacement is not None:
        d = result.displacement
        lines.append(f"  displacement: mean {d.mean_voxels:.4g} / max {d.max_voxels:.4g} voxels "
                     f"(mean {d.mean_mm:.4g} / max {d.max_mm:.4g} mm) over {d.voxels} voxels")
    if result.error is not None:
        e, i = result.error.recovered, result.error.identity
        lines.append(f"  error against the known deformation ({result.error.region}, {result.error.voxels} voxels): "
                     f"mean {e.mean_voxels:.4g} / 95th percentile {e.p95_voxels:.4g} / max {e.max_voxels:.4g} voxels "
                     f"(mean {e.mean_mm:.4g} mm); doing nothing: mean {i.mean_voxels:.4g} / max {i.max_voxels:.4g} "
                     f"voxels; result / nothing {result.error.relative_to_identity:.3g}")
    lbfgs = result.optimizer.get("lbfgs2", {})
    if lbfgs.get("gradient_slope_ratio") is not None:  # None when the slope probes were skipped
        lines.append(f"  first trial step {lbfgs['first_trial_step_voxels']:.4g} voxels; gradient/slope ratio "
                     f"{lbfgs['gradient_slope_ratio']:.4g}; lineSearchAccuracy x ratio {lbfgs['sufficient_decrease_load']:.3g}")
    t = result.timing
    lines.append(f"  time {t['total_s']:.3g} s wall, {t['cpu_s']:.3g} s CPU; initialisation {t['initialisation_s']:.3g} s, "
                 f"{t['per_iteration_s']:.3g} s per iteration")
    threads = result.threading
    lines.append(f"  threads: {threads['threader']} threader, global default {threads['global_default_threads']}, "
                 f"work units {threads['work_units']}")
    lines.extend(f"  WARNING: {w}" for w in result.warnings)
    return "\n".join(lines)
