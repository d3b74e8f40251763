"""Variability of a study: per (mode, spacing) across repeats, and across spacings in voxel units.

Displacement fields are compared in voxels of the image each run registered, so results at different
spacings are comparable: a spacing-invariant registration gives the same voxel field at every spacing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .displacement import displacement_array, to_voxel_units
from .images import read_image, with_spacing
from .study_diagnosis import diagnose
from .study_store import StudyStore


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


@dataclass
class StudyAnalysis:
    """Every group's figures and the diagnosis drawn from them."""

    reference_spacing: float
    groups: list[GroupStatistics]
    statements: list[dict]

    def group(self, mode: str, spacing: float) -> GroupStatistics:
        return next(g for g in self.groups if g.mode == mode and g.spacing == spacing)

    def as_dict(self) -> dict:
        return {"reference_spacing": self.reference_spacing, "groups": [asdict(g) for g in self.groups],
                "statements": self.statements}


def _summary(values) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    return {"min": float(values.min()), "max": float(values.max()), "mean": mean,
            "std": float(values.std()), "relative_spread": float((values.max() - values.min()) / abs(mean))
            if mean != 0 else 0.0}


def analyse(store: StudyStore, output: Path | None = None, mask: np.ndarray | None = None) -> StudyAnalysis:
    """Figures per (mode, spacing) over the finished runs; spread maps saved under ``output`` if given."""
    fixed = read_image(store.fixed_path)
    spec = store.spec
    mean_fields: dict[tuple[str, float], np.ndarray] = {}
    groups = []
    for mode in spec.modes:
        for spacing in spec.spacings:
            rows = [store.rows[run.run_id] for run in spec.runs()
                    if run.mode == mode and run.spacing == spacing and run.run_id in store.rows]
            if not rows:
                continue
            group, mean_field = _group(store, fixed, mode, spacing, rows, output, mask)
            groups.append(group)
            mean_fields[(mode, spacing)] = mean_field
    for group in groups:
        reference = mean_fields.get((group.mode, spec.reference))
        if reference is not None:
            difference = np.linalg.norm(mean_fields[(group.mode, group.spacing)] - reference, axis=-1)
            inside = difference if mask is None else difference[mask]
            group.difference_from_reference_voxels = {"mean": float(inside.mean()), "max": float(inside.max())}
    analysis = StudyAnalysis(spec.reference, groups, [])
    analysis.statements = diagnose(analysis)
    return analysis


def _group(store, fixed, mode, spacing, rows, output, mask):
    reference = with_spacing(fixed, spacing)
    transforms = [store.read_transform(row["run_id"]) for row in rows]
    parameters = [np.asarray(t.GetParameters()) for t in transforms]
    voxel_fields = np.stack([to_voxel_units(displacement_array(t, reference), reference) for t in transforms])
    mean_field = voxel_fields.mean(axis=0)
    spread = np.linalg.norm(voxel_fields - mean_field, axis=-1).max(axis=0)
    select = (lambda a: a) if mask is None else (lambda a: a[mask])
    mean_magnitude = float(select(np.linalg.norm(mean_field, axis=-1)).mean())
    spread_inside = select(spread)
    summaries = [row["summary"] for row in rows]
    lbfgs = [s["optimizer"].get("lbfgs2", {}) for s in summaries]
    loads = [x["sufficient_decrease_load"] for x in lbfgs if "sufficient_decrease_load" in x]
    steps = [x["first_trial_step_voxels"] for x in lbfgs if "first_trial_step_voxels" in x]
    totals = [sum(s["iterations_per_run"]) for s in summaries]
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
    if output is not None:
        group.spread_map = str(_write_spread_map(spread, fixed, Path(output), mode, spacing))
    return group, mean_field


def _write_spread_map(spread: np.ndarray, fixed: sitk.Image, output: Path, mode: str, spacing: float) -> Path:
    """Per-voxel spread (voxels) across repeats, on the fixed image's native grid."""
    output.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(spread.astype(np.float32))
    image.CopyInformation(fixed)
    path = output / f"spread_{mode}_s{spacing:g}.nrrd"
    sitk.WriteImage(image, str(path), True)
    return path
