"""The study's diagnosis in plain words, each statement with the figures that back it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .variability import GroupStatistics, StudyAnalysis

#: Below this many voxels two fields count as the same.
SAME_FIELD_VOXELS = 1e-9
#: Run-to-run spreads at or below this many voxels are rounding, reported as negligible rather than variability.
NEGLIGIBLE_SPREAD_VOXELS = 1e-6
#: Differences across spacings at or below this many voxels are far below any registration's accuracy (tenths of
#: a voxel at best): normalised units remove the spacing effect in practice, even where rounding keeps them from
#: bit identity (e.g. fixed and moving origins that differ by float32 rounding, as NIfTI headers store them: the
#: spacing override keeps origins, so that offset is not rescaled with the spacing).
PRACTICAL_SAME_VOXELS = 1e-3


def _statement(kind: str, text: str, **figures) -> dict:
    return {"kind": kind, "text": text, "figures": figures}


def diagnose(analysis: StudyAnalysis) -> list[dict]:
    """Statements on accuracy (with a known deformation), identity runs, threads, the spacing effect and
    normalised units."""
    statements = _accuracy(analysis)
    for group in analysis.groups:
        statements.extend(_identity_runs(group))
    statements.extend(_threads(analysis))
    statements.extend(_spacing_effect(analysis))
    return statements


def _accuracy(analysis: StudyAnalysis) -> list[dict]:
    """Which (mode, spacing) gives the lowest error against the known deformation, beside doing nothing. Groups
    that never moved are the identity itself: named as such, never as the lowest error."""
    if analysis.truth is None:
        return []
    identity = analysis.truth["identity"]["mean_voxels"]
    still = [f"{g.mode} at {g.spacing:g}" for g in analysis.groups if g.error is not None and not g.moved]
    scored = [g for g in analysis.groups if g.error is not None and g.moved]
    if not scored:
        return [_statement("accuracy", f"No run moved, so every error is doing nothing's ({identity:.3g} voxels mean).",
                           identity_mean_voxels=identity, never_moved=still, region=analysis.truth["region"])]
    best = min(scored, key=lambda g: g.error["mean_voxels"])
    worst = max(scored, key=lambda g: g.error["mean_voxels"])
    ties = [f"{g.mode} at {g.spacing:g}" for g in scored if g is not best
            and abs(g.error["mean_voxels"] - best.error["mean_voxels"]) <= SAME_FIELD_VOXELS]
    e = best.error
    text = (f"Lowest error against the known deformation: {best.mode} at spacing {best.spacing:g}, mean "
            f"{e['mean_voxels']:.3g} voxels over {len(best.runs)} run(s) (95th percentile {e['p95_voxels']:.3g}, max "
            f"{e['max_voxels']:.3g}; worst seed {best.error['worst_seed']}: {e['worst_mean_voxels']:.3g}; "
            f"mean {e['mean_mm']:.3g} mm), against {identity:.3g} voxels for doing nothing "
            + (f"({e['mean_voxels'] / identity:.0%} of it)." if identity else "(the known deformation is zero)."))
    if ties:
        text += f" Equal to within {SAME_FIELD_VOXELS:g} voxels: {', '.join(ties)}."
    if worst is not best:
        text += (f" Highest: {worst.mode} at spacing {worst.spacing:g}, mean {worst.error['mean_voxels']:.3g} "
                 f"voxels.")
    worse = [f"{g.mode} at {g.spacing:g}" for g in scored if g.error["mean_voxels"] > identity]
    if len(worse) == len(scored):
        text = ("Every spacing and mode is worse than doing nothing (identity): no run should be trusted over the "
                "unregistered images. " + text)
    elif worse:
        text += f" Worse than doing nothing: {', '.join(worse)}."
    if still:
        text += f" Never moved (their error is doing nothing's): {', '.join(still)}."
    return [_statement("accuracy", text, never_moved=still, mode=best.mode, spacing=best.spacing, mean_voxels=e["mean_voxels"],
                       p95_voxels=e["p95_voxels"], max_voxels=e["max_voxels"], mean_mm=e["mean_mm"],
                       worst_seed=e["worst_seed"], worst_mean_voxels=e["worst_mean_voxels"],
                       identity_mean_voxels=identity, highest_mode=worst.mode, highest_spacing=worst.spacing,
                       highest_mean_voxels=worst.error["mean_voxels"], worse_than_identity=worse,
                       region=analysis.truth["region"])]


def _identity_runs(group: GroupStatistics) -> list[dict]:
    if not group.never_moved:
        return []
    total = len(group.runs)
    cause = (f"the first line search failed in {group.first_line_search_failed} of them"
             if group.first_line_search_failed else "the optimizer stopped before any accepted step")
    load = "" if group.sufficient_decrease_load is None else \
        f" (lineSearchAccuracy x gradient/slope ratio {group.sufficient_decrease_load:.3g}; failure near 1)"
    return [_statement(
        "identity_run",
        f"At spacing {group.spacing:g} ({group.mode}) the transform never moved in {group.never_moved} of {total} "
        f"runs: {cause}{load}. Its zero variability is a registration that did not happen.",
        mode=group.mode, spacing=group.spacing, never_moved=group.never_moved, runs=total,
        first_line_search_failed=group.first_line_search_failed,
        sufficient_decrease_load=group.sufficient_decrease_load)]


def _threads(analysis: StudyAnalysis) -> list[dict]:
    statements = []
    for group in analysis.groups:
        units, threads = group.mode.split("-")
        if threads != "default" or len(group.runs) < 2 or len(set(group.seeds)) != 1 or group.bitwise_identical:
            continue
        single = next((g for g in analysis.groups if g.mode == f"{units}-reproducible" and g.spacing == group.spacing),
                      None)
        figures = dict(spacing=group.spacing, units=units, spread_max_voxels=group.spread_voxels["max"],
                       relative_spread=group.relative_spread, work_units=group.work_units,
                       negligible_threshold_voxels=NEGLIGIBLE_SPREAD_VOXELS)
        if group.spread_voxels["max"] <= NEGLIGIBLE_SPREAD_VOXELS:
            statements.append(_statement(
                "threads", f"At spacing {group.spacing:g} ({units}) repeats with the same seed are not bit-identical "
                f"but agree to within {group.spread_voxels['max']:.2g} voxels with "
                f"{'/'.join(map(str, group.work_units))} work units: below the {NEGLIGIBLE_SPREAD_VOXELS:g}-voxel "
                "threshold, a rounding difference, not variability.", negligible=True, **figures))
            continue
        text = (f"At spacing {group.spacing:g} ({units}) repeats with the same seed differ by up to "
                f"{group.spread_voxels['max']:.3g} voxels ({group.relative_spread:.1%} of the mean displacement; "
                f"iterations {group.iterations['min']:g}..{group.iterations['max']:g}) with "
                f"{'/'.join(map(str, group.work_units))} work units")
        if single is not None and single.bitwise_identical:
            text += (", and are bit-identical with one work unit: the run-to-run variability comes from several "
                     "work units (Mattes MI adds per-thread derivatives in lock order).")
        else:
            text += ("; with one seed, only the threads differ between them (Mattes MI adds per-thread derivatives "
                     "in lock order). Add the reproducible mode to confirm.")
        if (analysis.scales_estimator, analysis.optimizer) == ("physical_shift", "lbfgs2"):
            text += (" The physical_shift scales estimator makes this worse: its uniform scale jumps at rounding level "
                     "and sends the repeats onto different paths (on the demo pair at 1 mm its repeats differed by "
                     "0.9-2.2 voxels, those of physical_shift_fast by at most 3e-4; docs/fast-equivalent.md).")
        statements.append(_statement(
            "threads", text, negligible=False, **figures,
            reproducible_bitwise_identical=None if single is None else single.bitwise_identical))
    return statements


def _largest_difference(groups: list[GroupStatistics], reference: float) -> tuple[float, GroupStatistics] | None:
    others = [g for g in groups if g.spacing != reference and g.difference_from_reference_voxels]
    if not others:
        return None
    worst = max(others, key=lambda g: g.difference_from_reference_voxels["max"])
    return worst.difference_from_reference_voxels["max"], worst


def _spacing_effect(analysis: StudyAnalysis) -> list[dict]:
    statements = []
    by_mode: dict[str, list[GroupStatistics]] = {}
    for group in analysis.groups:
        by_mode.setdefault(group.mode, []).append(group)
    reference = analysis.reference_spacing
    worst = {mode: _largest_difference(groups, reference) for mode, groups in by_mode.items()}
    native_mode = "native-reproducible" if worst.get("native-reproducible") is not None else "native-default"
    native = worst.get(native_mode)
    if native is not None and native[0] > SAME_FIELD_VOXELS:
        difference, group = native
        iterations = [g.iterations["mean"] for g in by_mode[native_mode]]
        threads = "With one work unit the result still" if native_mode == "native-reproducible" else "The result"
        statements.append(_statement(
            "spacing_effect",
            f"{threads} depends on the spacing: at {group.spacing:g} it differs from spacing {reference:g} by up to "
            f"{difference:.3g} voxels (mean iterations per spacing {min(iterations):g}..{max(iterations):g}).",
            mode=native_mode, reference_spacing=reference, spacing=group.spacing, max_difference_voxels=difference))
    normalised = worst.get("normalised-reproducible")
    if normalised is not None:
        difference, group = normalised
        compared = f" (native units: up to {native[0]:.3g} voxels)" if native is not None else ""
        if difference <= SAME_FIELD_VOXELS:
            removed = "yes"
            text = (f"Normalised units remove the spacing effect: every spacing gives the result of spacing "
                    f"{reference:g} to within {difference:.2g} voxels{compared}.")
        elif difference <= PRACTICAL_SAME_VOXELS:
            removed = "in practice"
            text = (f"Normalised units remove the spacing effect in practice: every spacing gives the result of "
                    f"spacing {reference:g} to within {difference:.2g} voxels{compared}, far below a registration's "
                    f"accuracy but not to the bit (a rounding-size difference, for instance between the fixed and "
                    f"moving images' origins, carried along the optimizer's path).")
        else:
            removed = "no"
            text = (f"In normalised units the results still differ across spacings by up to {difference:.3g} voxels "
                    f"at {group.spacing:g}{compared}.")
        statements.append(_statement("normalised_units", text, removed=removed, reference_spacing=reference,
                                     max_difference_voxels=difference,
                                     native_max_difference_voxels=None if native is None else native[0]))
    return statements
