"""The study report: one self-contained HTML page with plots, plus CSV and JSON holding every number."""

from __future__ import annotations

import csv
import json
from html import escape
from pathlib import Path

import SimpleITK as sitk

from . import anatomy_maps, svg
from .advice import from_study
from .diagnostics import restart_events
from .grid import grid_geometry
from .images import read_image, with_spacing
from .study_diagnosis import NEGLIGIBLE_SPREAD_VOXELS
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


#: Table headers in words, with units (the CSV and JSON keep the field names).
COLUMN_LABELS = {
    "run_id": "run", "mode": "mode", "spacing": "spacing (mm)", "repeat": "repeat", "seed": "seed",
    "moved": "moved", "stop_reason": "stop reason", "iterations_per_run": "iterations per libLBFGS run",
    "iterations": "iterations", "metric_reported": "metric (reported)", "metric_reevaluated": "metric (re-evaluated)",
    "max_coefficient_voxels": "max coefficient (voxels)", "max_displacement_voxels": "max displacement (voxels)",
    "min_jacobian_determinant": "min Jacobian determinant",
    "sufficient_decrease_load": "line-search load (failure near 1)",
    "first_trial_step_voxels": "first trial step (voxels)", "work_units": "work units", "time_s": "time (s)",
    "runs": "runs", "never_moved": "runs that never moved", "bitwise_identical": "repeats bit-identical",
    "iterations_min": "iterations min", "iterations_max": "iterations max", "stop_reasons": "stop reasons",
    "metric_reported_relative_spread": "metric spread, reported (relative)",
    "metric_reevaluated_relative_spread": "metric spread, re-evaluated (relative)",
    "spread_voxels_mean": "run-to-run spread, mean (voxels)", "spread_voxels_max": "run-to-run spread, max (voxels)",
    "spread_mm_max": "run-to-run spread, max (mm)", "relative_spread": "spread / mean displacement",
    "difference_from_reference_voxels_max": "difference from the reference spacing, max (voxels)",
    **{f"error_{name}": "error, " + name.replace("_voxels", " (voxels)").replace("_mm", " (mm)")
       .replace("p95", "95th pct") for name in ERROR_FIGURES},
    "error_relative_to_identity": "error / doing nothing's",
    "error_worst_mean_voxels": "worst seed's mean error (voxels)",
    "error_worst_seed": "worst seed", "identity_error_mean_voxels": "doing nothing's mean error (voxels)",
}
#: Columns whose differences matter further down than three significant digits.
_PRECISE_COLUMNS = ("metric_reported", "metric_reevaluated")


def number(value) -> str:
    """A value at full precision, as the JSON holds it (each table cell's data-value; tests compare them)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    return repr(float(value)) if isinstance(value, float) else str(value)


def shown(value, column: str = "") -> str:
    """A value as people read it: three significant digits (five for metrics), yes/no, a dash for none."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.5g}" if column in _PRECISE_COLUMNS else f"{value:.3g}"
    if column == "mode":
        return svg.mode_name(value)
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
    """Labels with units and rounded values; each cell's data-value holds the full-precision number."""
    head = "".join(f'<th title="{escape(c)}">{escape(COLUMN_LABELS.get(c, c))}</th>' for c in columns)
    body = "".join("<tr>" + "".join(f'<td data-column="{c}" data-value="{escape(number(r[c]))}">'
                                    f"{escape(shown(r[c], c))}</td>" for c in columns) + "</tr>" for r in records)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _plots(store: StudyStore, analysis: StudyAnalysis, rows: list[dict]) -> list[str]:
    spec = store.spec
    figures = []
    for mode in spec.modes:
        series = {f"s={row['spacing']:g} r{row['repeat']}": ([r["event_index"] for r in row["trace"]],
                                                            [r["metric"] for r in row["trace"]])
                  for row in rows if row["mode"] == mode}
        restarts = sorted({x for row in rows if row["mode"] == mode for x in restart_events(row["trace"])})
        figures.append(svg.metric_trace(series, f"Metric per iteration event ({mode})", restarts))
    categories = [f"{s:g} mm" for s in spec.spacings]

    def per_mode(value):
        return {mode: [next((value(g) for g in analysis.groups if g.mode == mode and g.spacing == s), float("nan"))
                       for s in spec.spacings] for mode in spec.modes}

    figures.append(svg.bar_chart(categories, per_mode(lambda g: g.iterations["mean"]),
                                 "Mean iterations per spacing", "iterations (all libLBFGS runs)"))
    figures.append(svg.bar_chart(categories, per_mode(lambda g: g.never_moved),
                                 "Runs that never moved, per spacing", "runs", counts=True))
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
    figures.extend(maps for maps in (_spread_maps(store, analysis), _difference_maps(store, analysis)) if maps)
    return figures


def _spread_maps(store: StudyStore, analysis: StudyAnalysis) -> str:
    """Every group's per-voxel spread over the fixed image, on one shared colour scale (with the study's mask).
    Spreads of rounding size (at most NEGLIGIBLE_SPREAD_VOXELS) are left out: their map is noise."""
    overlays = {f"{svg.mode_name(g.mode)}, spacing {g.spacing:g}": sitk.GetArrayFromImage(sitk.ReadImage(g.spread_map))
                for g in analysis.groups if g.spread_map and g.spread_voxels["max"] > NEGLIGIBLE_SPREAD_VOXELS}
    if not overlays:
        return ""
    return anatomy_maps.slice_maps(read_image(store.fixed_path), overlays, "voxels",
                                   "Run-to-run spread per voxel (largest distance of a repeat from the repeats' mean)",
                                   mask=store.mask_array(), slices="middle")


def _difference_maps(store: StudyStore, analysis: StudyAnalysis) -> str:
    """Every other spacing's per-voxel difference from the reference spacing over the fixed image, on one shared
    colour scale in voxels (with the study's mask), and a caption saying what is compared.

    The slices go through each map's largest difference rather than the middle: the reader's question is where the
    reported maximum sits (it is often off-centre, where the two spacings' control grids disagree most), and
    middle slices can miss it. Differences of rounding size (at most NEGLIGIBLE_SPREAD_VOXELS) are named in words:
    their map would be empty on the shared scale.
    """
    compared = [g for g in analysis.groups if g.difference_map]
    if not compared:
        return ""
    reference = analysis.reference_spacing

    def largest(group) -> float:
        return group.difference_from_reference_voxels["max"]

    drawn = [g for g in compared if largest(g) > NEGLIGIBLE_SPREAD_VOXELS]
    mask = store.mask_array()
    overlays = {f"{svg.mode_name(g.mode)}: spacing {g.spacing:g} vs {reference:g}":
                sitk.GetArrayFromImage(sitk.ReadImage(g.difference_map)) for g in drawn}
    picture = anatomy_maps.slice_maps(read_image(store.fixed_path), overlays, "voxels",
                                      f"Difference from the reference spacing {reference:g} per voxel", mask=mask,
                                      slices="max") if overlays else ""
    caption = (f"Difference from the reference spacing {reference:g}: |mean displacement at a spacing \u2212 mean "
               f"displacement at spacing {reference:g}| per voxel, within each mode (means over the repeats), each "
               "field in voxels of its own run's image, so a spacing-invariant registration shows nothing."
               + (f" Slices through each map's largest difference inside "
                  f"{'the object (fixed image above its mean)' if mask is None else 'the mask'}."
                  if overlays else ""))
    negligible = [f"{svg.mode_name(g.mode)} at spacing {g.spacing:g} ("
                  + ("identical" if largest(g) == 0 else f"{largest(g):.2g} voxels") + ")"
                  for g in compared if largest(g) <= NEGLIGIBLE_SPREAD_VOXELS]
    if negligible:
        caption += (f" Not drawn, differences of rounding size (at most {NEGLIGIBLE_SPREAD_VOXELS:g} voxels): "
                    + "; ".join(negligible) + ".")
    return (f'{picture}<figcaption class="difference-maps" style="max-width:640px;font-size:12px">'
            f"{escape(caption)}</figcaption>")


def _grid_figure(store: StudyStore, spacing: float) -> str:
    """The reference spacing's grid against the image extent, in the x-y plane, over the middle axial slice."""
    run = next(r for r in store.spec.runs() if r.spacing == spacing and r.run_id in store.rows)
    image = with_spacing(read_image(store.fixed_path), spacing)
    geometry = grid_geometry(store.read_transform(run.run_id), image)
    corners, domain = geometry.image_corners, geometry.domain_corners
    background, extent_x, extent_y = anatomy_maps.axial_background(image)
    return svg.grid_picture(geometry.axis_positions[0], geometry.axis_positions[1],
                            (float(corners[:, 0].min()), float(corners[:, 0].max())),
                            (float(corners[:, 1].min()), float(corners[:, 1].max())),
                            (float(domain[:, 0].min()), float(domain[:, 0].max())),
                            (float(domain[:, 1].min()), float(domain[:, 1].max())),
                            f"Control grid at spacing {spacing:g}: {geometry.inside_count} of "
                            f"{geometry.inside_count + geometry.outside_count} control points inside the image",
                            background=background, background_extent=(extent_x, extent_y))


#: The summary box's questions, in the order a reader asks them, one line per diagnosis kind present.
SUMMARY_QUESTIONS = {"spacing_effect": "Does the result depend on the spacing?",
                     "normalised_units": "Do normalised units remove it?",
                     "threads": "Does it depend on the threads?",
                     "identity_run": "Did any run not move?",
                     "accuracy": "Which configuration is closest to the known deformation?"}


def _summary_lines(analysis: StudyAnalysis, advice: list) -> list[tuple[str, str, str]]:
    """(kind, question, answer with its figure) per diagnosis kind present, then the advice."""
    by_kind: dict[str, list[dict]] = {}
    for statement in analysis.statements:
        by_kind.setdefault(statement["kind"], []).append(statement)
    lines = []
    for kind, statements in sorted(by_kind.items(), key=lambda item: list(SUMMARY_QUESTIONS).index(item[0])
                                   if item[0] in SUMMARY_QUESTIONS else len(SUMMARY_QUESTIONS)):
        f = statements[0]["figures"]
        if kind == "spacing_effect":
            answer = (f"Yes: at spacing {f['spacing']:g} the result differs from spacing {f['reference_spacing']:g} "
                      f"by up to {f['max_difference_voxels']:.3g} voxels ({svg.mode_name(f['mode'])}).")
        elif kind == "normalised_units":
            answer = (f"{f['removed'].capitalize()}: across spacings normalised units differ by up to "
                      f"{f['max_difference_voxels']:.2g} voxels"
                      + ("" if f["native_max_difference_voxels"] is None
                         else f" (native units: {f['native_max_difference_voxels']:.3g})") + ".")
        elif kind == "threads":
            real = [s["figures"] for s in statements if not s["figures"]["negligible"]]
            worst = max(real or [s["figures"] for s in statements], key=lambda g: g["spread_max_voxels"])
            spacings = ", ".join(f"{s['figures']['spacing']:g}" for s in statements)
            answer = ((f"Yes: with several work units repeats with the same seed differ by up to "
                       f"{worst['spread_max_voxels']:.3g} voxels (spacing {worst['spacing']:g}, "
                       f"{worst['units']} units);"
                       f" with one work unit they are bit-identical." if real else
                       f"Only by rounding: repeats with the same seed differ by at most "
                       f"{worst['spread_max_voxels']:.2g} voxels, below {NEGLIGIBLE_SPREAD_VOXELS:g}.")
                      + f" Spacings: {spacings}.")
        elif kind == "identity_run":
            never = sum(s["figures"]["never_moved"] for s in statements)
            total = sum(s["figures"]["runs"] for s in statements)
            where = ", ".join(f"{svg.mode_name(s['figures']['mode'])} at {s['figures']['spacing']:g}"
                              for s in statements)
            answer = (f"Yes: {never} of {total} runs in those groups never moved ({where}); their zero variability is "
                      "a registration that did not happen.")
        else:  # accuracy
            if "mean_voxels" not in f:
                answer = (f"None: no run moved, so every error is doing nothing's "
                          f"({f['identity_mean_voxels']:.3g} voxels).")
            else:
                answer = (f"{svg.mode_name(f['mode'])} at spacing {f['spacing']:g}: mean error {f['mean_voxels']:.3g} "
                          f"voxels (95th percentile {f['p95_voxels']:.3g}, {f['mean_mm']:.3g} mm) against "
                          f"{f['identity_mean_voxels']:.3g} for doing nothing.")
                if len(f["worse_than_identity"]) == sum(1 for g in analysis.groups if g.moved):
                    answer = "None beats doing nothing. Best: " + answer
        lines.append((kind, SUMMARY_QUESTIONS.get(kind, kind), answer))
    if advice:
        recommended = next((r for r in advice if r.kind in ("recommended", "warning")), advice[0])
        others = sum(r.kind == "negligible" for r in advice)
        text = svg.mode_name(recommended.text).rstrip(".") + "." + (
            f" {others} other configuration(s) are as good within the seed-to-seed spread." if others else "")
        lines.append(("advice", "Which configuration to use, and why?", text))
    return lines


def _summary(analysis: StudyAnalysis, advice: list) -> str:
    lines = _summary_lines(analysis, advice)
    items = "".join(f'<li data-kind="{kind}"><b>{escape(question)}</b> {escape(answer)}</li>'
                    for kind, question, answer in lines) or "<li>No finding: see the tables.</li>"
    return f'<section id="summary"><h2>Summary</h2><ul>{items}</ul></section>'


def _statement_item(statement: dict) -> str:
    """A diagnosis statement in words, the JSON figures behind it folded away."""
    figures = escape(json.dumps(statement["figures"], indent=1, default=float))
    return (f'<li data-kind="{statement["kind"]}">{escape(svg.mode_name(statement["text"]))}'
            f"<details><summary>figures</summary><pre>{figures}</pre></details></li>")


def _html(store, analysis, rows, runs, groups) -> str:
    statements = "".join(map(_statement_item, analysis.statements)) or "<li>No finding: see the tables.</li>"
    advice = from_study(analysis) if analysis.truth else []
    advice_items = "".join(f'<li data-kind="{r.kind}">{escape(svg.mode_name(r.text))}</li>' for r in advice)
    figures = "".join(f"<figure>{f}</figure>" for f in _plots(store, analysis, rows))
    spec = escape(json.dumps(store.spec.to_dict(), indent=1))
    truth = ""
    if analysis.truth:
        identity = analysis.truth["identity"]
        truth = (f'<p id="truth">Known deformation: {escape(analysis.truth["source"])}. Errors are the distance '
                 f"between the recovered and the known displacement in voxels of each run's image (mm of the "
                 f"native image), over the {escape(analysis.truth['region'])} ({analysis.truth['voxels']} voxels). "
                 f"Doing nothing (identity): mean {shown(identity['mean_voxels'])}, 95th percentile "
                 f"{shown(identity['p95_voxels'])}, max {shown(identity['max_voxels'])} voxels.</p>")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>SpacingRegistration study</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} figure{{display:inline-block;margin:8px}}
pre{{background:#f4f4f4;padding:8px;font-size:11px}} th{{background:#f0f0f0;vertical-align:bottom}}
#summary{{border:2px solid #1f77b4;background:#f3f8fc;padding:4px 16px;margin:1em 0}} #summary li{{margin:4px 0}}
details summary{{cursor:pointer;color:#555;font-size:12px}}</style></head><body>
<h1>SpacingRegistration study</h1>{_summary(analysis, advice)}
<p>{len(runs)} finished runs of {len(store.spec.runs())}; reference spacing {analysis.reference_spacing:g}.
Displacements are compared in voxels of each run's image; spread = per-voxel largest distance of a repeat
from the repeats' mean field.</p>{truth}
<h2>Diagnosis</h2><ul id="diagnosis">{statements}</ul>
{f'<h2>Advice</h2><ul id="advice">{advice_items}</ul>' if advice_items else ""}
<h2>Per spacing and mode</h2>{_table(group_columns(analysis), groups, "groups")}
<h2>Plots</h2>{figures}
<h2>Runs</h2>{_table(run_columns(analysis), runs, "runs")}
<h2>Specification</h2><pre>{spec}</pre>
</body></html>
"""
