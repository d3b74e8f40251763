"""Variability of a study: per (mode, spacing) across repeats, and across spacings in voxel units.

With a known deformation, every run's error against it and each group's summary of those errors.

Displacement fields are compared in voxels of the image each run registered, so results at different
spacings are comparable: a spacing-invariant registration gives the same voxel field at every spacing.

With an initial transform (common to every run of a study), the spread across repeats and the difference
between spacings are properties of the BSpline part, which is all the runs differ in; the mean displacement and
the error against a truth describe the whole mapping ``initial(bspline(x))``, as ``registration.run`` does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import initial_transforms
from .displacement import displacement_array, to_voxel_units
from .images import read_image, with_spacing
from .study_diagnosis import diagnose
from .study_store import StudyStore
from .truth import ErrorFigures, Truth, as_truth, error_of_voxel_field


@dataclass
class GroupStatistics:
    """One (mode, spacing) group: its repeats compared with each other and with the reference spacing."""

    mode: str
    spacing: float
    runs: list[str]
    seeds: list
    work_units: list
    moved: int
    never_moved: int
    first_line_search_failed: int
    bitwise_identical: bool
    metric_reported: dict[str, float]
    metric_reevaluated: dict[str, float]
    iterations: dict[str, object]
    stop_reasons: dict[str, int]
    sufficient_decrease_load: float | None
    first_trial_step_voxels: float | None
    mean_displacement_voxels: float
    spread_voxels: dict[str, float]
    spread_mm: dict[str, float]
    relative_spread: float
    difference_from_reference_voxels: dict[str, float] = field(default_factory=dict)
    spread_map: str | None = None
    difference_map: str | None = None
    error: dict | None = None


@dataclass
class StudyAnalysis:
    """Every group's figures and the diagnosis drawn from them."""

    reference_spacing: float
    groups: list[GroupStatistics]
    statements: list[dict]
    truth: dict | None = None
    run_errors: dict[str, dict] = field(default_factory=dict)
    #: The study's scales estimator and optimizer: physical_shift re-run at every LBFGS2 evaluation turns
    #: thread-order rounding into different paths.
    scales_estimator: str | None = None
    optimizer: str | None = None

    def group(self, mode: str, spacing: float) -> GroupStatistics:
        return next(g for g in self.groups if g.mode == mode and g.spacing == spacing)

    def as_dict(self) -> dict:
        return {"reference_spacing": self.reference_spacing, "groups": [asdict(g) for g in self.groups],
                "statements": self.statements, "truth": self.truth, "run_errors": self.run_errors,
                "scales_estimator": self.scales_estimator, "optimizer": self.optimizer}


def _summary(values) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    return {"min": float(values.min()), "max": float(values.max()), "mean": mean,
            "std": float(values.std()), "relative_spread": float((values.max() - values.min()) / abs(mean))
            if mean != 0 else 0.0}


def analyse(store: StudyStore, output: Path | None = None, mask: np.ndarray | None = None,
            truth=None) -> StudyAnalysis:
    """Figures per (mode, spacing) over the finished runs; spread maps, and each other spacing's difference map
    from the reference spacing, saved under ``output`` if given.

    ``truth`` (a known deformation: file, transform, displacement image or :class:`truth.Truth`; default:
    the one stored with the study) adds every run's error against it and each group's summary of them.
    """
    fixed = read_image(store.fixed_path)
    spec = store.spec
    known = store.truth(fixed) if truth is None else as_truth(truth, fixed)
    initial = store.initial_transform()
    run_errors: dict[str, dict] = {}
    mean_fields: dict[tuple[str, float], np.ndarray] = {}
    groups = []
    for mode in spec.modes:
        for spacing in spec.spacings:
            rows = [store.rows[run.run_id] for run in spec.runs()
                    if run.mode == mode and run.spacing == spacing and run.run_id in store.rows]
            if not rows:
                continue
            override = next(run.settings.spacing_override for run in spec.runs()
                            if run.mode == mode and run.spacing == spacing)
            group_initial = None if initial is None else initial_transforms.in_result_space(initial, fixed, override)
            group, mean_field = _group(store, fixed, mode, spacing, rows, output, mask, known, run_errors,
                                       group_initial)
            groups.append(group)
            mean_fields[(mode, spacing)] = mean_field
    for group in groups:
        reference = mean_fields.get((group.mode, spec.reference))
        if reference is not None:
            difference = np.linalg.norm(mean_fields[(group.mode, group.spacing)] - reference, axis=-1)
            inside = difference if mask is None else difference[mask]
            group.difference_from_reference_voxels = {"mean": float(inside.mean()), "max": float(inside.max())}
            if output is not None and group.spacing != spec.reference:
                group.difference_map = str(_write_map("difference", difference, fixed, Path(output), group.mode,
                                                      group.spacing))
    analysis = StudyAnalysis(spec.reference, groups, [], run_errors=run_errors,
                             scales_estimator=spec.settings.scales_estimator, optimizer=spec.settings.optimizer)
    if known is not None:
        identity = error_of_voxel_field(known, np.zeros_like(known.field_mm), mask)
        analysis.truth = {"source": known.source, "region": identity.region, "voxels": identity.voxels,
                          "identity": asdict(identity.identity)}
    analysis.statements = diagnose(analysis)
    return analysis


def total_iterations(summary: dict) -> int:
    """Iterations of a run summary over every pyramid level (``iterations_per_run`` holds the last level's)."""
    return sum(map(sum, summary.get("iterations_per_level") or [summary["iterations_per_run"]]))


def _group(store, fixed, mode, spacing, rows, output, mask, known: Truth | None, run_errors: dict,
           initial: sitk.Transform | None = None):
    """``initial``: the study's initial transform in this group's result space (see module docstring)."""
    reference = with_spacing(fixed, spacing)
    transforms = [store.read_transform(row["run_id"]) for row in rows]
    parameters = [np.asarray(t.GetParameters()) for t in transforms]
    voxel_fields = np.stack([to_voxel_units(displacement_array(t, reference), reference) for t in transforms])
    mean_field = voxel_fields.mean(axis=0)
    spread = np.linalg.norm(voxel_fields - mean_field, axis=-1).max(axis=0)
    mapping_fields = voxel_fields if initial is None else np.stack([
        to_voxel_units(displacement_array(initial_transforms.whole_mapping(initial, t), reference), reference)
        for t in transforms])
    select = (lambda a: a) if mask is None else (lambda a: a[mask])
    mean_magnitude = float(select(np.linalg.norm(mapping_fields.mean(axis=0), axis=-1)).mean())
    spread_inside = select(spread)
    summaries = [row["summary"] for row in rows]
    lbfgs = [s["optimizer"].get("lbfgs2", {}) for s in summaries]
    # A probe the run's facts made unnecessary is absent or None.
    loads = [x["sufficient_decrease_load"] for x in lbfgs if x.get("sufficient_decrease_load") is not None]
    steps = [x["first_trial_step_voxels"] for x in lbfgs if x.get("first_trial_step_voxels") is not None]
    totals = [total_iterations(s) for s in summaries]
    group = GroupStatistics(
        mode=mode, spacing=spacing, runs=[row["run_id"] for row in rows], seeds=[row["seed"] for row in rows],
        work_units=sorted({s["threading"]["work_units"] or s["threading"]["global_default_threads"] for s in summaries}),
        moved=sum(s["moved"] for s in summaries), never_moved=sum(not s["moved"] for s in summaries),
        first_line_search_failed=sum(not s["moved"] and not s["iterations_per_run"] for s in summaries),
        bitwise_identical=all(np.array_equal(p, parameters[0]) for p in parameters[1:]),
        metric_reported=_summary([s["metric_reported"] for s in summaries]),
        metric_reevaluated=_summary([s["metric_reevaluated"] for s in summaries]),
        iterations={**_summary(totals), "per_run": [s["iterations_per_run"] for s in summaries]},
        stop_reasons=dict(Counter(s["stop_reason"] for s in summaries)),
        sufficient_decrease_load=float(np.mean(loads)) if loads else None,
        first_trial_step_voxels=float(np.mean(steps)) if steps else None,
        mean_displacement_voxels=mean_magnitude,
        spread_voxels={"mean": float(spread_inside.mean()), "max": float(spread_inside.max())},
        spread_mm={"mean": float(spread_inside.mean() * spacing), "max": float(spread_inside.max() * spacing)},
        relative_spread=float(spread_inside.mean() / mean_magnitude) if mean_magnitude > 0 else 0.0)
    if known is not None:
        errors = [error_of_voxel_field(known, voxel_field, mask) for voxel_field in mapping_fields]
        run_errors.update((row["run_id"], error.as_dict()) for row, error in zip(rows, errors))
        group.error = _group_error([error.recovered for error in errors], group.seeds)
    if output is not None:
        group.spread_map = str(_write_map("spread", spread, fixed, Path(output), mode, spacing))
    return group, mean_field


def _group_error(errors: list[ErrorFigures], seeds: list) -> dict:
    """Each figure's mean over the repeats, and the worst repeat (largest mean error) with its seed."""
    summary = {name: float(np.mean([getattr(e, name) for e in errors])) for name in asdict(errors[0])}
    worst = int(np.argmax([e.mean_voxels for e in errors]))
    summary.update(worst_mean_voxels=errors[worst].mean_voxels, worst_mean_mm=errors[worst].mean_mm,
                   worst_seed=seeds[worst], best_mean_voxels=min(e.mean_voxels for e in errors))
    return summary


def _write_map(kind: str, values: np.ndarray, fixed: sitk.Image, output: Path, mode: str, spacing: float) -> Path:
    """A group's per-voxel ``kind`` (spread, difference) in voxels on the fixed image's native grid: every
    spacing's field has the fixed image's array shape, so the maps of all spacings overlay the same anatomy."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{kind}_{mode}_s{spacing:g}.nrrd"
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.CopyInformation(fixed)
    sitk.WriteImage(image, str(path), True)
    return path
