"""Registration settings: every knob of the reported set-up, validated.

The defaults reproduce the set-up of the original report (mesh [2,2,2], Mattes MI with 50 bins, REGULAR
sampling at 2.5 % with a fixed seed, LBFGS2, scales from physical shift); every optimizer argument
defaults to SimpleITK's own default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

SAMPLING_STRATEGIES = ("none", "regular", "random")
OPTIMIZERS = ("lbfgs2", "lbfgsb", "gradient_descent")
#: ``physical_shift_fast``: the physical-shift estimator on the central voxel only (radius 0) with scales of exactly 1,
#: the fast equivalent of ``physical_shift`` for a BSpline (see method.FAST_CENTRAL_REGION_RADIUS).
SCALES_ESTIMATORS = ("none", "physical_shift", "physical_shift_fast", "index_shift", "jacobian")
INTERPOLATORS = ("linear", "nearest", "bspline", "gaussian", "label_gaussian", "hamming_windowed_sinc")
GRID_SPECIFICATIONS = ("mesh_size", "spacing_mm", "spacing_voxels")
LEARNING_RATE_ESTIMATIONS = ("never", "once", "each_iteration")
#: Display kinds of a setting: a spin box or number field, text for values spanning many decades, a list, a check box,
#: text holding one number per pyramid level ("4, 2, 1").
DISPLAY_KINDS = ("number", "scientific", "choice", "check", "levels")
#: Most pyramid levels accepted.
MAXIMUM_LEVELS = 8


class SettingsError(ValueError):
    """A setting is outside what the registration accepts; the message names it."""


def setting(default, label: str, *, unit: str = "", range: tuple | None = None, choices: tuple | None = None,
            none=None, none_text: str = "", display: str | None = None, parameter: str | None = None):
    """A settings field with what every surface shows of it (dataclasses field metadata, read by field_info).

    ``range`` bounds the number a panel accepts; ``none`` is the panel value standing for None (shown as
    ``none_text``); ``display`` is one of DISPLAY_KINDS (default from the value); ``parameter`` overrides the
    camelCase parameter name derived from the field path.
    """
    if display is None:
        display = ("choice" if choices else "check" if isinstance(default, bool) else "number")
    metadata = {"label": label, "unit": unit, "display": display}
    metadata.update({key: value for key, value in (("range", range), ("choices", choices), ("parameter", parameter))
                     if value is not None})
    if none is not None:
        metadata.update(none=none, none_text=none_text)
    return field(default=default, metadata=metadata)


def field_info(path: str) -> dict:
    """Metadata of a settings field by path: ``"histogram_bins"``, ``"lbfgs2.line_search_accuracy"`` or
    ``"mesh_size.0"`` (one axis); includes its ``name`` and ``default``."""
    first, _dot, rest = path.partition(".")
    fields = {f.name: f for f in dataclasses.fields(RegistrationSettings)}
    if first not in fields:
        raise SettingsError(f"unknown setting {path!r}")
    chosen = fields[first]
    if rest and not rest.isdigit():
        nested = {f.name: f for f in dataclasses.fields(chosen.default_factory)}
        if rest not in nested:
            raise SettingsError(f"unknown setting {path!r}")
        chosen = nested[rest]
    default = chosen.default
    if rest.isdigit():
        default = default[int(rest)]
    return {"name": path, "default": default, **chosen.metadata}


def leaf_paths() -> list[str]:
    """Every settings field path that holds one value (nested optimizer fields and mesh axes expanded)."""
    paths = []
    for f in dataclasses.fields(RegistrationSettings):
        if f.default_factory is not dataclasses.MISSING:
            paths += [f"{f.name}.{g.name}" for g in dataclasses.fields(f.default_factory)]
        elif f.name == "mesh_size":
            paths += [f"mesh_size.{axis}" for axis in range(3)]
        else:
            paths.append(f.name)
    return paths


@dataclass(frozen=True)
class Lbfgs2Settings:
    """Arguments of ``SetOptimizerAsLBFGS2``, SimpleITK's defaults."""

    solution_accuracy: float = setting(1e-5, "solution accuracy", display="scientific")
    number_of_iterations: int = setting(0, "iterations (0: until converged)", range=(0, 1000000))
    hessian_approximate_accuracy: int = setting(6, "Hessian approximate accuracy", range=(1, 100))
    delta_convergence_distance: int = setting(0, "delta convergence distance", range=(0, 1000))
    delta_convergence_tolerance: float = setting(1e-5, "delta convergence tolerance", display="scientific")
    line_search_maximum_evaluations: int = setting(40, "line search maximum evaluations", range=(1, 10000))
    line_search_minimum_step: float = setting(1e-20, "line search minimum step", display="scientific")
    line_search_maximum_step: float = setting(1e20, "line search maximum step", display="scientific")
    line_search_accuracy: float = setting(1e-4, "line search accuracy", display="scientific")


@dataclass(frozen=True)
class LbfgsbSettings:
    """Arguments of ``SetOptimizerAsLBFGSB`` (unbounded), SimpleITK's defaults."""

    gradient_convergence_tolerance: float = setting(1e-5, "gradient convergence tolerance", display="scientific")
    number_of_iterations: int = setting(500, "iterations", range=(1, 1000000))
    maximum_number_of_corrections: int = setting(5, "maximum corrections", range=(1, 100))
    maximum_number_of_function_evaluations: int = setting(2000, "maximum function evaluations",
                                                          range=(1, 10000000))
    cost_function_convergence_factor: float = setting(1e7, "cost function convergence factor", display="scientific")


@dataclass(frozen=True)
class GradientDescentSettings:
    """Arguments of ``SetOptimizerAsGradientDescent``; learning rate estimated once by default."""

    learning_rate: float = setting(1.0, "learning rate", range=(1e-06, 1000000.0))
    number_of_iterations: int = setting(100, "iterations", range=(1, 1000000))
    convergence_minimum_value: float = setting(1e-6, "convergence minimum value", display="scientific")
    convergence_window_size: int = setting(10, "convergence window size", range=(1, 1000))
    estimate_learning_rate: str = setting("once", "estimate learning rate", choices=LEARNING_RATE_ESTIMATIONS)
    maximum_step_size_in_physical_units: float = setting(0.0, "maximum step size", unit="mm", range=(0.0, 1000000.0),
                                                         parameter="gradientDescentMaximumStepSize")


@dataclass(frozen=True)
class RegistrationSettings:
    """Everything that decides a BSpline registration.

    Pyramid: ``shrink_factors`` and ``smoothing_sigmas`` give one level each, coarse to fine (default one level at
    full resolution, unsmoothed: the reported set-up). Sigmas are in voxels of the full-resolution image, so a level
    smooths the same voxels whatever the spacing override or normalised units do to the physical units.
    Control grid: ``grid_specification`` picks which of ``mesh_size`` (intervals per axis),
    ``grid_spacing_mm`` or ``grid_spacing_voxels`` (control-point spacing) is used.
    Modes: ``spacing_override`` gives both images spacing [s,s,s] before registering (what the report's
    user did); ``normalised_units`` registers with spacing-1 images and scales the result back (the
    spacing-invariant recipe); ``reproducible`` runs the whole filter with one work unit.
    ``sampling_seed`` None means SimpleITK's wall-clock seed.
    """

    grid_specification: str = setting("mesh_size", "control grid given by", choices=GRID_SPECIFICATIONS)
    mesh_size: tuple[int, int, int] = setting((2, 2, 2), "mesh size", unit="intervals", range=(1, 100))
    grid_spacing_mm: float = setting(50.0, "control-point spacing", unit="mm", range=(0.01, 10000.0))
    grid_spacing_voxels: float = setting(50.0, "control-point spacing", unit="voxels", range=(0.5, 10000.0))

    histogram_bins: int = setting(50, "histogram bins", range=(5, 1024))
    sampling_strategy: str = setting("regular", "sampling", choices=SAMPLING_STRATEGIES)
    sampling_percentage: float = setting(2.5, "sampling percentage", unit="%", range=(0.01, 100.0))
    sampling_seed: int | None = setting(1, "seed", range=(-1, 2147483647), none=-1, none_text="wall clock")
    interpolator: str = setting("linear", "interpolator", choices=INTERPOLATORS)
    shrink_factors: tuple[int, ...] = setting((1,), "shrink factor per level", display="levels")
    smoothing_sigmas: tuple[float, ...] = setting((0.0,), "smoothing sigma per level", unit="voxels", display="levels")

    optimizer: str = setting("lbfgs2", "optimizer", choices=OPTIMIZERS)
    lbfgs2: Lbfgs2Settings = field(default_factory=Lbfgs2Settings)
    lbfgsb: LbfgsbSettings = field(default_factory=LbfgsbSettings)
    gradient_descent: GradientDescentSettings = field(default_factory=GradientDescentSettings)
    scales_estimator: str = setting("physical_shift", "scales estimator", choices=SCALES_ESTIMATORS)
    scales_central_region_radius: int = setting(5, "scales central region radius", unit="voxels", range=(1, 100))
    scales_small_parameter_variation: float = setting(0.01, "scales small parameter variation", range=(1e-06, 10.0))

    number_of_threads: int | None = setting(None, "threads", range=(0, 1024), none=0, none_text="default")
    number_of_work_units: int | None = setting(None, "work units", range=(0, 1024), none=0, none_text="default")

    spacing_override: float | None = setting(None, "spacing override", unit="mm", range=(0.0, 1000.0), none=0.0,
                                            none_text="off")
    normalised_units: bool = setting(False, "normalised units")
    reproducible: bool = setting(False, "reproducible")

    def __post_init__(self):
        validate(self)

    def replace(self, **changes) -> RegistrationSettings:
        """A copy with some fields changed (nested optimizer settings may be given as dicts)."""
        return from_dict({**to_dict(self), **changes})


def to_dict(settings: RegistrationSettings) -> dict[str, Any]:
    """Plain JSON-ready dictionary."""
    values = dataclasses.asdict(settings)
    values["mesh_size"] = list(settings.mesh_size)
    values["shrink_factors"] = list(settings.shrink_factors)
    values["smoothing_sigmas"] = list(settings.smoothing_sigmas)
    return values


#: Each grid field and the grid_specification under which it defines the control grid.
GRID_FIELDS = {"mesh_size": "mesh_size", "grid_spacing_mm": "spacing_mm", "grid_spacing_voxels": "spacing_voxels"}


def from_dict(values: dict[str, Any]) -> RegistrationSettings:
    """Inverse of :func:`to_dict`; unknown keys are an error, missing keys keep their defaults. Without
    ``grid_specification``, the one grid field given (mesh size or a control-point spacing) picks it, so that a
    spacing asked for is never silently replaced by the default mesh."""
    if not isinstance(values, dict):
        raise SettingsError(f"settings must be a JSON object of name: value pairs, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(RegistrationSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
    values = dict(values)
    if "grid_specification" not in values:
        given = [name for name in GRID_FIELDS if name in values]
        if len(given) > 1:
            raise SettingsError(f"{' and '.join(given)} are both given: set grid_specification to one of "
                                f"{GRID_SPECIFICATIONS} to say which defines the control grid")
        if given:
            values["grid_specification"] = GRID_FIELDS[given[0]]
    nested = {"lbfgs2": Lbfgs2Settings, "lbfgsb": LbfgsbSettings, "gradient_descent": GradientDescentSettings}
    for name, cls in nested.items():
        if isinstance(values.get(name), dict):
            values[name] = _nested_from_dict(cls, name, values[name])
    for name in ("mesh_size", "shrink_factors", "smoothing_sigmas"):
        if isinstance(values.get(name), (list, tuple)):
            values[name] = tuple(values[name])
    return RegistrationSettings(**values)


def _nested_from_dict(cls, name: str, values: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown {name} setting(s): {', '.join(unknown)}")
    return cls(**values)


def _require(condition: bool, message: str):
    if not condition:
        raise SettingsError(message)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def validate(s: RegistrationSettings):
    """Raise :class:`SettingsError` naming the first invalid setting."""
    _require(s.grid_specification in GRID_SPECIFICATIONS,
             f"grid_specification must be one of {GRID_SPECIFICATIONS}, got {s.grid_specification!r}")
    _require(len(s.mesh_size) == 3 and all(_is_int(m) for m in s.mesh_size),
             f"mesh_size must be three integers, got {s.mesh_size!r}")
    _require(all(m >= 1 for m in s.mesh_size), f"mesh_size must be at least 1 on every axis, got {list(s.mesh_size)}")
    _require(_finite_positive(s.grid_spacing_mm), f"grid_spacing_mm must be > 0, got {s.grid_spacing_mm!r}")
    _require(_finite_positive(s.grid_spacing_voxels), f"grid_spacing_voxels must be > 0, got {s.grid_spacing_voxels!r}")
    _require(_is_int(s.histogram_bins) and s.histogram_bins >= 5,
             f"histogram_bins must be an integer >= 5, got {s.histogram_bins!r}")
    _require(s.sampling_strategy in SAMPLING_STRATEGIES,
             f"sampling_strategy must be one of {SAMPLING_STRATEGIES}, got {s.sampling_strategy!r}")
    _require(isinstance(s.sampling_percentage, (int, float)) and 0 < s.sampling_percentage <= 100,
             f"sampling_percentage must be in (0, 100], got {s.sampling_percentage!r}")
    _require(s.sampling_seed is None or (_is_int(s.sampling_seed) and 0 <= s.sampling_seed < 2**32),
             f"sampling_seed must be None (wall clock) or an integer in [0, 2^32), got {s.sampling_seed!r}")
    _require(s.interpolator in INTERPOLATORS, f"interpolator must be one of {INTERPOLATORS}, got {s.interpolator!r}")
    _validate_pyramid(s)
    _require(s.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {s.optimizer!r}")
    _require(s.scales_estimator in SCALES_ESTIMATORS,
             f"scales_estimator must be one of {SCALES_ESTIMATORS}, got {s.scales_estimator!r}")
    _require(_is_int(s.scales_central_region_radius) and s.scales_central_region_radius >= 1,
             f"scales_central_region_radius must be an integer >= 1, got {s.scales_central_region_radius!r}")
    _require(_finite_positive(s.scales_small_parameter_variation),
             f"scales_small_parameter_variation must be > 0, got {s.scales_small_parameter_variation!r}")
    for name in ("number_of_threads", "number_of_work_units"):
        value = getattr(s, name)
        _require(value is None or (_is_int(value) and value >= 1), f"{name} must be None or an integer >= 1, got {value!r}")
    _require(s.spacing_override is None or _finite_positive(s.spacing_override),
             f"spacing_override must be None or a spacing > 0, got {s.spacing_override!r}")
    _require(not (s.reproducible and s.sampling_strategy != "none" and s.sampling_seed is None),
             "reproducible mode needs a fixed sampling_seed (None means a new wall-clock seed every run)")
    _require(not (s.reproducible and s.number_of_work_units not in (None, 1)),
             f"reproducible mode runs one work unit; number_of_work_units={s.number_of_work_units} contradicts it")
    _validate_optimizer(s)


def _validate_pyramid(s: RegistrationSettings):
    shrink, sigmas = s.shrink_factors, s.smoothing_sigmas
    _require(isinstance(shrink, tuple) and 1 <= len(shrink) <= MAXIMUM_LEVELS
             and all(_is_int(f) and f >= 1 for f in shrink),
             f"shrink_factors must be 1 to {MAXIMUM_LEVELS} integers >= 1 (one per level), got {shrink!r}")
    _require(isinstance(sigmas, tuple) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and math.isfinite(v) and v >= 0 for v in sigmas),
             f"smoothing_sigmas must be numbers >= 0 (voxels, one per level), got {sigmas!r}")
    _require(len(shrink) == len(sigmas), f"shrink_factors and smoothing_sigmas must have one value per level: got "
                                         f"{len(shrink)} shrink factor(s) and {len(sigmas)} sigma(s)")


def _validate_optimizer(s: RegistrationSettings):
    lb = s.lbfgs2
    _require(_finite_positive(lb.solution_accuracy), f"lbfgs2.solution_accuracy must be > 0, got {lb.solution_accuracy!r}")
    for name in ("number_of_iterations", "delta_convergence_distance"):
        value = getattr(lb, name)
        _require(_is_int(value) and value >= 0, f"lbfgs2.{name} must be an integer >= 0, got {value!r}")
    for name in ("hessian_approximate_accuracy", "line_search_maximum_evaluations"):
        value = getattr(lb, name)
        _require(_is_int(value) and value >= 1, f"lbfgs2.{name} must be an integer >= 1, got {value!r}")
    for name in ("delta_convergence_tolerance", "line_search_minimum_step", "line_search_maximum_step"):
        value = getattr(lb, name)
        _require(_finite_positive(value), f"lbfgs2.{name} must be > 0, got {value!r}")
    _require(lb.line_search_minimum_step < lb.line_search_maximum_step,
             "lbfgs2.line_search_minimum_step must be smaller than line_search_maximum_step")
    _require(_finite_positive(lb.line_search_accuracy) and lb.line_search_accuracy < 0.5,
             f"lbfgs2.line_search_accuracy must be in (0, 0.5), got {lb.line_search_accuracy!r}")
    b = s.lbfgsb
    _require(_finite_positive(b.gradient_convergence_tolerance),
             f"lbfgsb.gradient_convergence_tolerance must be > 0, got {b.gradient_convergence_tolerance!r}")
    for name in ("number_of_iterations", "maximum_number_of_corrections", "maximum_number_of_function_evaluations"):
        value = getattr(b, name)
        _require(_is_int(value) and value >= 1, f"lbfgsb.{name} must be an integer >= 1, got {value!r}")
    _require(_finite_positive(b.cost_function_convergence_factor),
             f"lbfgsb.cost_function_convergence_factor must be > 0, got {b.cost_function_convergence_factor!r}")
    g = s.gradient_descent
    _require(_finite_positive(g.learning_rate), f"gradient_descent.learning_rate must be > 0, got {g.learning_rate!r}")
    for name in ("number_of_iterations", "convergence_window_size"):
        value = getattr(g, name)
        _require(_is_int(value) and value >= 1, f"gradient_descent.{name} must be an integer >= 1, got {value!r}")
    _require(_finite_positive(g.convergence_minimum_value),
             f"gradient_descent.convergence_minimum_value must be > 0, got {g.convergence_minimum_value!r}")
    _require(g.estimate_learning_rate in LEARNING_RATE_ESTIMATIONS,
             f"gradient_descent.estimate_learning_rate must be never, once or each_iteration, got {g.estimate_learning_rate!r}")
    _require(isinstance(g.maximum_step_size_in_physical_units, (int, float)) and g.maximum_step_size_in_physical_units >= 0,
             f"gradient_descent.maximum_step_size_in_physical_units must be >= 0, got {g.maximum_step_size_in_physical_units!r}")
