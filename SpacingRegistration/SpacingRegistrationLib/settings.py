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
SCALES_ESTIMATORS = ("none", "physical_shift", "index_shift", "jacobian")
INTERPOLATORS = ("linear", "nearest", "bspline", "gaussian", "label_gaussian", "hamming_windowed_sinc")
GRID_SPECIFICATIONS = ("mesh_size", "spacing_mm", "spacing_voxels")


class SettingsError(ValueError):
    """A setting is outside what the registration accepts; the message names it."""


@dataclass(frozen=True)
class Lbfgs2Settings:
    """Arguments of ``SetOptimizerAsLBFGS2``, SimpleITK's defaults."""

    solution_accuracy: float = 1e-5
    number_of_iterations: int = 0
    hessian_approximate_accuracy: int = 6
    delta_convergence_distance: int = 0
    delta_convergence_tolerance: float = 1e-5
    line_search_maximum_evaluations: int = 40
    line_search_minimum_step: float = 1e-20
    line_search_maximum_step: float = 1e20
    line_search_accuracy: float = 1e-4


@dataclass(frozen=True)
class LbfgsbSettings:
    """Arguments of ``SetOptimizerAsLBFGSB`` (unbounded), SimpleITK's defaults."""

    gradient_convergence_tolerance: float = 1e-5
    number_of_iterations: int = 500
    maximum_number_of_corrections: int = 5
    maximum_number_of_function_evaluations: int = 2000
    cost_function_convergence_factor: float = 1e7


@dataclass(frozen=True)
class GradientDescentSettings:
    """Arguments of ``SetOptimizerAsGradientDescent``; learning rate estimated once by default."""

    learning_rate: float = 1.0
    number_of_iterations: int = 100
    convergence_minimum_value: float = 1e-6
    convergence_window_size: int = 10
    estimate_learning_rate: str = "once"
    maximum_step_size_in_physical_units: float = 0.0


@dataclass(frozen=True)
class RegistrationSettings:
    """Everything that decides a BSpline registration.

    Control grid: ``grid_specification`` picks which of ``mesh_size`` (intervals per axis),
    ``grid_spacing_mm`` or ``grid_spacing_voxels`` (control-point spacing) is used.
    Modes: ``spacing_override`` gives both images spacing [s,s,s] before registering (what the report's
    user did); ``normalised_units`` registers with spacing-1 images and scales the result back (the
    spacing-invariant recipe); ``reproducible`` runs the whole filter with one work unit.
    ``sampling_seed`` None means SimpleITK's wall-clock seed.
    """

    grid_specification: str = "mesh_size"
    mesh_size: tuple[int, int, int] = (2, 2, 2)
    grid_spacing_mm: float = 50.0
    grid_spacing_voxels: float = 50.0

    histogram_bins: int = 50
    sampling_strategy: str = "regular"
    sampling_percentage: float = 2.5
    sampling_seed: int | None = 1
    interpolator: str = "linear"

    optimizer: str = "lbfgs2"
    lbfgs2: Lbfgs2Settings = field(default_factory=Lbfgs2Settings)
    lbfgsb: LbfgsbSettings = field(default_factory=LbfgsbSettings)
    gradient_descent: GradientDescentSettings = field(default_factory=GradientDescentSettings)
    scales_estimator: str = "physical_shift"
    scales_central_region_radius: int = 5
    scales_small_parameter_variation: float = 0.01

    number_of_threads: int | None = None
    number_of_work_units: int | None = None

    spacing_override: float | None = None
    normalised_units: bool = False
    reproducible: bool = False

    def __post_init__(self):
        validate(self)

    def replace(self, **changes) -> RegistrationSettings:
        """A copy with some fields changed (nested optimizer settings may be given as dicts)."""
        return from_dict({**to_dict(self), **changes})


def to_dict(settings: RegistrationSettings) -> dict[str, Any]:
    """Plain JSON-ready dictionary."""
    values = dataclasses.asdict(settings)
    values["mesh_size"] = list(settings.mesh_size)
    return values


def from_dict(values: dict[str, Any]) -> RegistrationSettings:
    """Inverse of :func:`to_dict`; unknown keys are an error, missing keys keep their defaults."""
    known = {f.name for f in dataclasses.fields(RegistrationSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
    values = dict(values)
    nested = {"lbfgs2": Lbfgs2Settings, "lbfgsb": LbfgsbSettings, "gradient_descent": GradientDescentSettings}
    for name, cls in nested.items():
        if isinstance(values.get(name), dict):
            values[name] = _nested_from_dict(cls, name, values[name])
    if "mesh_size" in values:
        values["mesh_size"] = tuple(values["mesh_size"])
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
    _require(g.estimate_learning_rate in ("never", "once", "each_iteration"),
             f"gradient_descent.estimate_learning_rate must be never, once or each_iteration, got {g.estimate_learning_rate!r}")
    _require(isinstance(g.maximum_step_size_in_physical_units, (int, float)) and g.maximum_step_size_in_physical_units >= 0,
             f"gradient_descent.maximum_step_size_in_physical_units must be >= 0, got {g.maximum_step_size_in_physical_units!r}")
