"""The study report: one self-contained HTML page with plots, plus CSV and JSON holding every number."""

from __future__ import annotations

import csv
import json
from html import escape
from pathlib import Path

import SimpleITK as sitk

from . import svg
from .grid import grid_geometry
from .images import read_image, with_spacing
from .study_store import StudyStore
from .variability import StudyAnalysis, total_iterations

RUN_COLUMNS = ("run_id", "mode", "spacing", "repeat", "seed", "moved", "stop_reason", "iterations_per_run",
               "iterations", "metric_reported", "metric_reevaluated", "max_coefficient_voxels",
               "max_displacement_voxels", "min_jacobian_determinant", "sufficient_decrease_load",
               "first_trial_step_voxels", "work_units", "time_s")
GROUP_COLUMNS = ("mode", "spacing", "runs", "moved", "never_moved", "bitwise_identical", "iterations_min",
                 "iterations_max", "stop_reasons", "metric_reported_relative_spread",
                 "metric_reevaluated_relative_spread", "spread_voxels_mean", "spread_voxels_max", "spread_mm_max",
                 "relative_spread", "difference_from_reference_voxels_max", "sufficient_decrease_load",
                 "first_trial_step_voxels")
#: Added to the run and group tables when the study has a known deformation.
ERROR_FIGURES = ("mean_voxels", "p95_voxels", "max_voxels", "mean_mm", "p95_mm", "max_mm")
ERROR_RUN_COLUMNS = tuple(f"error_{name}" for name in ERROR_FIGURES) + ("error_relative_to_identity",)
ERROR_GROUP_COLUMNS = tuple(f"error_{name}" for name in ERROR_FIGURES) + (
    "error_worst_mean_voxels", "error_worst_seed", "identity_error_mean_voxels")


def run_columns(analysis: StudyAnalysis) -> tuple[str, ...]:
    return RUN_COLUMNS + (ERROR_RUN_COLUMNS if analysis.truth else ())


def group_columns(analysis: StudyAnalysis) -> tuple[str, ...]:
    return GROUP_COLUMNS + (ERROR_GROUP_COLUMNS if analysis.truth else ())


def number(value) -> str:
    """How every number appears in the HTML (tests compare it with the JSON)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def run_record(row: dict, error: dict | None = None) -> dict:
    """The per-run numbers of one JSONL row, with its error against the known deformation if given."""
    summary = row["summary"]
    lbfgs = summary["optimizer"].get("lbfgs2", {})
    plausibility = summary["plausibility"] or {}
    return {
        "run_id": row["run_id"], "mode": row["mode"], "spacing": row["spacing"], "repeat": row["repeat"],
        "seed": row["seed"], "moved": summary["moved"], "stop_reason": summary["stop_reason"],
        "iterations_per_run": summary["iterations_per_run"], "iterations": total_iterations(summary),
        "metric_reported": summary["metric_reported"], "metric_reevaluated": summary["metric_reevaluated"],
        "max_coefficient_voxels": summary["max_coefficient_voxels"],
        "max_displacement_voxels": plausibility.get("max_displacement_voxels"),
        "min_jacobian_determinant": plausibility.get("min_jacobian_determinant"),
        "sufficient_decrease_load": lbfgs.get("sufficient_decrease_load"),
        "first_trial_step_voxels": lbfgs.get("first_trial_step_voxels"),
        "work_units": summary["threading"]["work_units"] or summary["threading"]["global_default_threads"],
        "time_s": summary["timing"]["total_s"],
    } | ({} if error is None else {
        **{f"error_{name}": error["recovered"][name] for name in ERROR_FIGURES},
        "error_relative_to_identity": error["relative_to_identity"]})


def group_record(group, identity: dict | None = None) -> dict:
    """The per-group numbers shown in the report's main table (``identity``: the error of doing nothing)."""
    return {
        "mode": group.mode, "spacing": group.spacing, "runs": len(group.runs), "moved": group.moved,
        "never_moved": group.never_moved, "bitwise_identical": group.bitwise_identical,
        "iterations_min": group.iterations["min"], "iterations_max": group.iterations["max"],
        "stop_reasons": ", ".join(f"{k} {v}" for k, v in sorted(group.stop_reasons.items())),
        "metric_reported_relative_spread": group.metric_reported["relative_spread"],
        "metric_reevaluated_relative_spread": group.metric_reevaluated["relative_spread"],
        "spread_voxels_mean": group.spread_voxels["mean"], "spread_voxels_max": group.spread_voxels["max"],
        "spread_mm_max": group.spread_mm["max"], "relative_spread": group.relative_spread,
        "difference_from_reference_voxels_max": group.difference_from_reference_voxels.get("max"),
        "sufficient_decrease_load": group.sufficient_decrease_load,
        "first_trial_step_voxels": group.first_trial_step_voxels,
    } | ({} if group.error is None else {
        **{f"error_{name}": group.error[name] for name in ERROR_FIGURES},
        "error_worst_mean_voxels": group.error["worst_mean_voxels"], "error_worst_seed": group.error["worst_seed"],
        "identity_error_mean_voxels": None if identity is None else identity["mean_voxels"]})


def write_report(store: StudyStore, analysis: StudyAnalysis, folder) -> dict[str, Path]:
    """report.html, runs.csv, groups.csv and analysis.json in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [store.rows[run.run_id] for run in store.spec.runs() if run.run_id in store.rows]
    runs = [run_record(row, analysis.run_errors.get(row["run_id"])) for row in rows]
    identity = analysis.truth["identity"] if analysis.truth else None
    groups = [group_record(g, identity) for g in analysis.groups]
    paths = {"html": folder / "report.html", "runs_csv": folder / "runs.csv", "groups_csv": folder / "groups.csv",
             "json": folder / "analysis.json"}
    _write_csv(paths["runs_csv"], run_columns(analysis), runs)
    _write_csv(paths["groups_csv"], group_columns(analysis), groups)
    paths["json"].write_text(json.dumps({"spec": store.spec.to_dict(), "analysis": analysis.as_dict(),
                                         "groups": groups, "runs": runs,
                                         "traces": {row["run_id"]: row["trace"] for row in rows}},
                                        indent=1, default=float))
    paths["html"].write_text(_html(store, analysis, rows, runs, groups))
    return paths


def _write_csv(path: Path, columns, records):
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def _table(columns, records, table_id: str) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f'<td data-column="{c}">{escape(number(r[c]))}</td>' for c in columns) + "</tr>"
                   for r in records)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _plots(store: StudyStore, analysis: StudyAnalysis, rows: list[dict]) -> list[str]:
    spec = store.spec
    figures = []
    for mode in spec.modes:
        series = {f"s={row['spacing']:g} r{row['repeat']}": ([r["event_index"] for r in row["trace"]],
                                                            [r["metric"] for r in row["trace"]])
                  for row in rows if row["mode"] == mode}
        figures.append(svg.line_chart(series, f"Metric per iteration event ({mode})", "iteration event",
                                      "sampled metric"))
    categories = [f"{s:g}" for s in spec.spacings]

    def per_mode(value):
        return {mode: [next((value(g) for g in analysis.groups if g.mode == mode and g.spacing == s), float("nan"))
                       for s in spec.spacings] for mode in spec.modes}

    figures.append(svg.bar_chart(categories, per_mode(lambda g: g.iterations["mean"]),
                                 "Mean iterations per spacing", "iterations (all libLBFGS runs)"))
    figures.append(svg.bar_chart(categories, per_mode(lambda g: float(g.never_moved)),
                                 "Runs that never moved, per spacing", "runs"))
    log_x = min(spec.spacings) > 0 and max(spec.spacings) / min(spec.spacings) > 20
    spreads = {mode: (list(spec.spacings), values) for mode, values in per_mode(lambda g: g.spread_voxels["max"]).items()}
    figures.append(svg.line_chart(spreads, "Run-to-run spread vs spacing", "spacing (mm)", "max spread (voxels)",
                                  log_x=log_x, markers=True))
    differences = per_mode(lambda g: g.difference_from_reference_voxels.get("max", float("nan")))
    figures.append(svg.line_chart({m: (list(spec.spacings), v) for m, v in differences.items()},
                                  f"Difference from spacing {analysis.reference_spacing:g}", "spacing (mm)",
                                  "max difference (voxels)", log_x=log_x, markers=True))
    if analysis.truth:
        identity = analysis.truth["identity"]["mean_voxels"]
        errors = per_mode(lambda g: g.error["mean_voxels"] if g.error else float("nan"))
        figures.append(svg.line_chart({m: (list(spec.spacings), v) for m, v in errors.items()},
                                      "Error against the known deformation vs spacing", "spacing (mm)",
                                      "mean error over repeats (voxels)", log_x=log_x, markers=True,
                                      reference=(f"doing nothing {identity:.3g}", identity)))
    figures.append(_grid_figure(store, analysis.reference_spacing))
    for group in analysis.groups:
        if group.spread_map and group.spread_voxels["max"] > 0:
            spread = sitk.GetArrayFromImage(sitk.ReadImage(group.spread_map))
            figures.append(svg.heatmap(spread[spread.shape[0] // 2],
                                       f"Per-voxel spread, middle slice ({group.mode}, s={group.spacing:g})", "voxels"))
    return figures


def _grid_figure(store: StudyStore, spacing: float) -> str:
    """The reference spacing's grid against the image extent, in the x-y plane."""
    run = next(r for r in store.spec.runs() if r.spacing == spacing and r.run_id in store.rows)
    image = with_spacing(read_image(store.fixed_path), spacing)
    geometry = grid_geometry(store.read_transform(run.run_id), image)
    corners, domain = geometry.image_corners, geometry.domain_corners
    return svg.grid_picture(geometry.axis_positions[0], geometry.axis_positions[1],
                            (float(corners[:, 0].min()), float(corners[:, 0].max())),
                            (float(corners[:, 1].min()), float(corners[:, 1].max())),
                            (float(domain[:, 0].min()), float(domain[:, 0].max())),
                            (float(domain[:, 1].min()), float(domain[:, 1].max())),
                            f"Control grid at spacing {spacing:g}: {geometry.inside_count} of "
                            f"{geometry.inside_count + geometry.outside_count} control points inside the image")


def _html(store, analysis, rows, runs, groups) -> str:
    statements = "".join(
        f"<li><b>{escape(s['kind'])}</b>: {escape(s['text'])}<br><small>{escape(json.dumps(s['figures'], default=float))}"
        f"</small></li>" for s in analysis.statements) or "<li>No finding: see the tables.</li>"
    figures = "".join(f"<figure>{f}</figure>" for f in _plots(store, analysis, rows))
    spec = escape(json.dumps(store.spec.to_dict(), indent=1))
    truth = ""
    if analysis.truth:
        identity = analysis.truth["identity"]
        truth = (f'<p id="truth">Known deformation: {escape(analysis.truth["source"])}. Errors are the distance '
                 f"between the recovered and the known displacement in voxels of each run's image (mm of the "
                 f"native image), over the {escape(analysis.truth['region'])} ({analysis.truth['voxels']} voxels). "
                 f"Doing nothing (identity): mean {number(identity['mean_voxels'])}, 95th percentile "
                 f"{number(identity['p95_voxels'])}, max {number(identity['max_voxels'])} voxels.</p>")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>SpacingRegistration study</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} figure{{display:inline-block;margin:8px}}
pre{{background:#f4f4f4;padding:8px;font-size:11px}}</style></head><body>
<h1>SpacingRegistration study</h1>
<p>{len(runs)} finished runs of {len(store.spec.runs())}; reference spacing {analysis.reference_spacing:g}.
Displacements are compared in voxels of each run's image; spread = per-voxel largest distance of a repeat
from the repeats' mean field.</p>{truth}
<h2>Diagnosis</h2><ul id="diagnosis">{statements}</ul>
<h2>Per spacing and mode</h2>{_table(group_columns(analysis), groups, "groups")}
<h2>Plots</h2>{figures}
<h2>Runs</h2>{_table(run_columns(analysis), runs, "runs")}
<h2>Specification</h2><pre>{spec}</pre>
</body></html>
"""
