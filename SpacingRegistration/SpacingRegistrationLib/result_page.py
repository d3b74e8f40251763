"""The page of one registration (``result.html``): the answer first, then the displacement magnitude and the Jacobian
determinant over the fixed image (folding in its own colour, the mask outline when a mask was used), the metric
trace with each libLBFGS restart marked, and every figure of the diagnosis. One self-contained file (inline SVG
holding PNG pictures) that the command line writes beside transform.tfm and that the panel and the web page open.
"""

from __future__ import annotations

import json
from html import escape

import numpy as np
import SimpleITK as sitk

from . import anatomy_maps, images, masks, svg
from .diagnosis_rows import WARNING_ROW, diagnosis_rows
from .diagnostics import STOP_REASON_TEXT, restart_events

#: File name of the page in a result folder.
PAGE_NAME = "result.html"


def registered_fixed(result, fixed: sitk.Image) -> sitk.Image:
    """The fixed image as the registration saw it (after a spacing override): the grid the transform lives on."""
    override = result.settings.spacing_override
    return fixed if override is None else images.with_spacing(fixed, override)


def page_html(result, fixed: sitk.Image, mask=None) -> str:
    """The whole page of ``result`` (registration.RegistrationResult) over ``fixed`` (the fixed image as given to
    registration.run); ``mask``: the fixed-image mask the run used (file, image or array; see masks.py), or None."""
    grid = registered_fixed(result, fixed)
    mask_array = None if mask is None else masks.as_array(masks.fixed_mask(mask, fixed))
    magnitude, jacobian = anatomy_maps.displacement_and_jacobian(result.mapping, grid)
    inside = np.isfinite(jacobian) & (True if mask_array is None else mask_array)
    folding = anatomy_maps.folding_count(jacobian, inside)
    smallest = float(jacobian[inside].min()) if inside.any() else float("nan")
    maps = anatomy_maps.displacement_maps(grid, magnitude, jacobian, "This registration", mask=mask_array,
                                          slices="max")
    del magnitude, jacobian
    trace = svg.metric_trace({"sampled metric": ([r.event_index for r in result.trace],
                                                 [r.metric for r in result.trace])},
                             "Metric per iteration event", restart_events(result.trace))
    lines = summary_lines(result, folding, smallest)
    items = "".join(f'<li data-kind="{kind}"><b>{escape(question)}</b> {escape(answer)}</li>'
                    for kind, question, answer in lines)
    warnings = "".join(f"<li>{escape(w)}</li>" for w in result.warnings) or "<li>None.</li>"
    rows = "".join(f"<tr><th>{escape(name)}</th><td>{escape(str(value))}</td></tr>"
                   for name, value in diagnosis_rows(result) if name != WARNING_ROW)
    settings = escape(json.dumps(result.summary()["settings"], indent=1))
    where = ("inside the mask (cyan outline)" if mask_array is not None else "over the whole fixed image")
    frame = ("" if result.settings.spacing_override is None else
             f" The registration ran with a spacing override of {result.settings.spacing_override:g} mm: voxels are "
             "the registered image's, millimetres those of the override.")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>SpacingRegistration result</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} figure{{display:inline-block;margin:8px}}
#summary{{border:2px solid #1f77b4;background:#f3f8fc;padding:4px 16px}} #summary li{{margin:4px 0}}
#diagnosis{{border-collapse:collapse;font-size:12px}} #diagnosis th,#diagnosis td{{border:1px solid #ccc;
padding:2px 6px;text-align:left}} #diagnosis th{{background:#f0f0f0;font-weight:normal}}
pre{{background:#f4f4f4;padding:8px;font-size:11px}} details summary{{cursor:pointer;color:#555}}</style>
</head><body>
<h1>SpacingRegistration result</h1>
<section id="summary" data-moved="{str(result.moved).lower()}" data-folding="{folding}"
 data-stop-reason="{escape(result.stop_reason)}"><h2>Summary</h2><ul>{items}</ul></section>
<h2>Warnings</h2><ul id="warnings">{warnings}</ul>
<h2>Displacement and Jacobian determinant</h2>
<p>Over the fixed image, through the slices where each map is largest inside the mask or, without one, the object
(fixed image above its mean); figures {where}. The displacement is
|T(x) - x| of the whole mapping in voxels; a Jacobian determinant below 1 is compression, above 1 expansion, and
at or below 0 the deformation folds (green).{frame}</p>
<figure id="maps">{maps}</figure>
<h2>Metric trace</h2><figure id="trace">{trace}</figure>
<h2>Diagnosis</h2><details open><summary>every figure</summary><table id="diagnosis">{rows}</table></details>
<h2>Settings</h2><details><summary>settings (JSON)</summary><pre>{settings}</pre></details>
</body></html>
"""


def summary_lines(result, folding: int, smallest_jacobian: float) -> list[tuple[str, str, str]]:
    """(kind, question, answer with its figure) for the summary box, in the order a reader asks."""
    runs = result.iterations_per_run
    total = sum(sum(level) for level in result.iterations_per_level) or sum(runs)
    if result.cancelled:
        moved = f"Cancelled after {len(result.trace)} iteration event(s): this is a partial result."
    elif not result.moved:
        moved = ("No: every BSpline coefficient is exactly zero, so the result is the starting transform. Zero "
                 "variability here is a registration that did not happen.")
    else:
        d = result.displacement
        region = " inside the mask" if result.masked else ""
        moved = (f"Yes: largest displacement {d.max_voxels:.3g} voxels ({d.max_mm:.3g} mm), mean {d.mean_voxels:.3g} "
                 f"voxels{region}.")
    levels = (f" over {len(result.iterations_per_level)} pyramid levels" if len(result.iterations_per_level) > 1
              else "")
    reason = STOP_REASON_TEXT.get(result.stop_reason, result.stop_reason)
    lines = [("moved", "Did it move?", moved),
             ("stop", "Why did it stop?",
              f"{reason[:1].upper()}{reason[1:]} ('{result.stop_description}'), after "
              f"{total} iterations{levels}; the last level ran libLBFGS {len(runs)} time(s): "
              f"{' + '.join(map(str, runs)) or '0'} iterations.")]
    p = result.plausibility
    if p is not None:
        better = p.metric_result < p.metric_identity
        lines.append(("metric", "Is it better than doing nothing?",
                      f"{'Yes' if better else 'No'}: the metric is {p.metric_identity:.5g} at identity and "
                      f"{p.metric_result:.5g} at the result (lower is better; the same fixed sample for both)."))
    valid = (f"Yes: no voxel folds; the smallest Jacobian determinant is {smallest_jacobian:.3g}." if folding == 0 else
             f"No: {folding} voxel{'s' if folding != 1 else ''} fold (Jacobian determinant <= 0, green on the map); "
             f"the smallest determinant is {smallest_jacobian:.3g}.")
    lines.append(("folding", "Is it a valid deformation?", valid))
    if result.error is not None:
        e, i = result.error.recovered, result.error.identity
        lines.append(("error", "How far is it from the known deformation?",
                      f"Mean error {e.mean_voxels:.3g} voxels (95th percentile {e.p95_voxels:.3g}, max "
                      f"{e.max_voxels:.3g}; mean {e.mean_mm:.3g} mm) against {i.mean_voxels:.3g} voxels for doing "
                      f"nothing (ratio {result.error.relative_to_identity:.2g}: below 1 is better than nothing), "
                      f"over the {result.error.region}."))
    count = len(result.warnings)
    lines.append(("warnings", "Anything to watch?",
                  "No warning." if not count else f"{count} warning{'s' if count != 1 else ''} (in full below): "
                  + " ".join(_headline(w) for w in result.warnings[:3]) + (" ..." if count > 3 else "")))
    return lines


def _headline(warning: str) -> str:
    """A warning's first clause (up to its first colon, semicolon or full stop), as a sentence."""
    cut = min((i for i in map(warning.find, (": ", "; ", ". ")) if i > 0), default=len(warning))
    return warning[:cut].rstrip(".") + "."
