"""What a study is: the same registration at several spacings, repeated, in several modes.

A mode is a pair (units, threads): units ``native`` (the spacing override as the report's user did it) or
``normalised`` (the spacing-invariant recipe); threads ``default`` (SimpleITK's work units) or
``reproducible`` (one work unit). Each (mode, spacing, repeat) is one independent run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .settings import RegistrationSettings, SettingsError, from_dict, to_dict

UNITS = ("native", "normalised")
THREADS = ("default", "reproducible")
SEED_POLICIES = ("fixed", "per_repeat")


@dataclass(frozen=True)
class Run:
    """One registration of the study."""

    run_id: str
    mode: str
    spacing: float
    repeat: int
    seed: int | None
    settings: RegistrationSettings


@dataclass(frozen=True)
class StudySpec:
    """Spacings x repeats x modes of one base registration.

    ``seeds`` lists one sampling seed per repeat; without it ``seed_policy`` decides: ``fixed`` uses the
    base settings' seed for every repeat (the report's set-up: differences then come from threads alone),
    ``per_repeat`` uses seed, seed + 1, ...
    """

    settings: RegistrationSettings = field(default_factory=RegistrationSettings)
    spacings: tuple[float, ...] = (1.0, 4.0, 10.0)
    repeats: int = 3
    seeds: tuple[int, ...] | None = None
    seed_policy: str = "fixed"
    modes: tuple[str, ...] = ("native-default", "native-reproducible", "normalised-reproducible")
    reference_spacing: float | None = None

    def __post_init__(self):
        validate(self)

    @property
    def reference(self) -> float:
        """Spacing the others are compared with (default: the first)."""
        return self.spacings[0] if self.reference_spacing is None else self.reference_spacing

    def seed_for(self, repeat: int) -> int | None:
        if self.seeds is not None:
            return self.seeds[repeat]
        base = self.settings.sampling_seed
        if base is None or self.seed_policy == "fixed":
            return base
        return base + repeat

    def runs(self) -> list[Run]:
        """Every run, in a fixed order (mode, spacing, repeat)."""
        result = []
        for mode in self.modes:
            units, threads = mode.split("-")
            for spacing in self.spacings:
                for repeat in range(self.repeats):
                    seed = self.seed_for(repeat)
                    settings = self.settings.replace(
                        spacing_override=spacing, normalised_units=units == "normalised",
                        reproducible=threads == "reproducible", sampling_seed=seed,
                        number_of_work_units=None if threads == "reproducible" else self.settings.number_of_work_units)
                    result.append(Run(run_id=run_id(mode, spacing, repeat), mode=mode, spacing=spacing,
                                      repeat=repeat, seed=seed, settings=settings))
        return result

    def to_dict(self) -> dict:
        return {"settings": to_dict(self.settings), "spacings": list(self.spacings), "repeats": self.repeats,
                "seeds": None if self.seeds is None else list(self.seeds), "seed_policy": self.seed_policy,
                "modes": list(self.modes), "reference_spacing": self.reference_spacing}


def spec_from_dict(values: dict) -> StudySpec:
    """Inverse of :meth:`StudySpec.to_dict`; unknown keys are an error."""
    known = {"settings", "spacings", "repeats", "seeds", "seed_policy", "modes", "reference_spacing"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown study field(s): {', '.join(unknown)}")
    values = dict(values)
    if "settings" in values:
        values["settings"] = from_dict(values["settings"])
    for name in ("spacings", "seeds", "modes"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return StudySpec(**values)


def run_id(mode: str, spacing: float, repeat: int) -> str:
    """A file-name-safe identifier, e.g. ``native-default_s4_r0`` or ``normalised-reproducible_s0.1_r2``."""
    return f"{mode}_s{spacing:g}_r{repeat}"


def validate(spec: StudySpec):
    """Raise :class:`SettingsError` naming the first invalid field."""
    if not spec.spacings:
        raise SettingsError("the study needs at least one spacing")
    for spacing in spec.spacings:
        if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) or not math.isfinite(spacing) \
                or spacing <= 0:
            raise SettingsError(f"study spacings must be > 0, got {spacing!r}")
    if len(set(spec.spacings)) != len(spec.spacings):
        raise SettingsError(f"duplicate spacing in the study: {list(spec.spacings)}")
    if not isinstance(spec.repeats, int) or isinstance(spec.repeats, bool) or spec.repeats < 1:
        raise SettingsError(f"repeats must be an integer >= 1, got {spec.repeats!r}")
    if spec.seeds is not None and len(spec.seeds) != spec.repeats:
        raise SettingsError(f"seeds must list one seed per repeat ({spec.repeats}), got {len(spec.seeds)}")
    if spec.seed_policy not in SEED_POLICIES:
        raise SettingsError(f"seed_policy must be one of {SEED_POLICIES}, got {spec.seed_policy!r}")
    if not spec.modes:
        raise SettingsError("the study needs at least one mode")
    for mode in spec.modes:
        units, _, threads = mode.partition("-")
        if units not in UNITS or threads not in THREADS:
            raise SettingsError(f"mode must be <units>-<threads> with units in {UNITS} and threads in {THREADS}, "
                                f"got {mode!r}")
    if len(set(spec.modes)) != len(spec.modes):
        raise SettingsError(f"duplicate mode in the study: {list(spec.modes)}")
    if spec.reference_spacing is not None and spec.reference_spacing not in spec.spacings:
        raise SettingsError(f"reference_spacing {spec.reference_spacing} is not one of the spacings")
    spec.runs()  # builds every run's settings, which validates them
