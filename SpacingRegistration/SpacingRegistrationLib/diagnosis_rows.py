"""The diagnosis of a RegistrationResult as (name, value) text rows: the panel's table, the web page's table."""

from __future__ import annotations

import numpy as np

from .diagnostics import STOP_REASON_TEXT

#: Row name of each warning (one row per warning, after the figures).
WARNING_ROW = "warning"

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


def diagnosis_rows(result) -> list:
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
        *([("iterations per level", str(result.iterations_per_level))] if len(result.iterations_per_level) > 1 else []),
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
            ("plausibility metric at identity", _number(p.metric_identity)),
            ("plausibility metric at the result", _number(p.metric_result)),
            ("plausibility metric improvement", _number(p.improvement)),
            ("plausibility metric evaluation", p.evaluation),
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

