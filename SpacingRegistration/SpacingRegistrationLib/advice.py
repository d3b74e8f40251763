"""Advice with proof: recommendations in plain words, each with the figure behind it and the settings it changes.

Recommendations come from an accuracy check's ranking (:func:`from_ranking`) or from a study with a known
deformation (:func:`from_study`). A difference below the tie threshold (NEGLIGIBLE_VOXELS, or the seed-to-seed
spread when larger) is reported as negligible, never as better, and the threshold is part of the text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .accuracy import NEGLIGIBLE_VOXELS, apply_changes, tie_threshold
from .settings import RegistrationSettings

#: Kinds, in the order they are listed: a problem with your settings, a change that helps, one that makes no
#: real difference, one that makes things worse.
KINDS = ("warning", "recommended", "negligible", "worse")
#: A grid with more than this fraction of its control points outside the image is worth a warning.
OUTSIDE_WARNING_FRACTION = 0.5


@dataclass(frozen=True)
class Recommendation:
    kind: str
    text: str
    changes: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def recommendation_from_dict(values: dict) -> Recommendation:
    return Recommendation(values["kind"], values["text"], dict(values.get("changes") or {}),
                          dict(values.get("figures") or {}))


def apply_recommendation(settings: RegistrationSettings, recommendation) -> RegistrationSettings:
    """``settings`` with exactly the recommendation's changes (a Recommendation or its dict)."""
    changes = recommendation.changes if isinstance(recommendation, Recommendation) else recommendation["changes"]
    return apply_changes(settings, changes)


def from_ranking(ranking: list[dict]) -> list[Recommendation]:
    """Compare every candidate of an accuracy check with ``yours``; warnings about your settings first."""
    base = next((row for row in ranking if row["candidate"] == "yours"), None)
    if base is None:
        return []
    advice = _warnings(base, ranking)
    for row in ranking:
        if row is base:
            continue
        threshold = tie_threshold(row, base)
        gain = base["error_mean_voxels"] - row["error_mean_voxels"]
        figures = {"candidate": row["candidate"], "error_mean_voxels": row["error_mean_voxels"],
                   "yours_error_mean_voxels": base["error_mean_voxels"], "error_worst_voxels": row["error_worst_voxels"],
                   "yours_error_worst_voxels": base["error_worst_voxels"], "threshold_voxels": threshold,
                   "seeds": row["seeds_done"], "time_mean_s": row["time_mean_s"],
                   "yours_time_mean_s": base["time_mean_s"], "cpu_mean_s": row.get("cpu_mean_s"),
                   "yours_cpu_mean_s": base.get("cpu_mean_s")}
        compared = (f"mean error {row['error_mean_voxels']:.3g} voxels vs {base['error_mean_voxels']:.3g} with your "
                    f"settings over {row['seeds_done']} seeds (worst seed {row['error_worst_voxels']:.3g} vs "
                    f"{base['error_worst_voxels']:.3g}; {_cost(row)} vs {_cost(base)} per run)")
        changes = _changes(row)
        if abs(gain) <= threshold:
            advice.append(Recommendation("negligible", f"{row['description']} makes no real difference: {compared}; "
                                         f"the difference {abs(gain):.2g} is within {threshold:.2g} voxels (the larger "
                                         f"of {NEGLIGIBLE_VOXELS:g} and the seed-to-seed spread)", changes, figures))
        elif gain > 0:
            advice.append(Recommendation("recommended", f"Use {row['description']}: {compared}", changes, figures))
        else:
            advice.append(Recommendation("worse", f"Avoid {row['description']}: {compared}", changes, figures))
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(advice, key=lambda r: (order[r.kind], -(r.figures.get("yours_error_mean_voxels", 0)
                                                          - r.figures.get("error_mean_voxels", 0))))


def _cost(row: dict) -> str:
    """CPU time per run (wall time is noisy on shared machines), else wall time."""
    cpu = row.get("cpu_mean_s")
    return f"{cpu:.3g} s CPU" if cpu is not None and cpu == cpu else f"{row['time_mean_s']:.3g} s"


def best(recommendations: list[Recommendation]) -> Recommendation | None:
    """The recommendation with the largest gain, if any."""
    return next((r for r in recommendations if r.kind == "recommended"), None)


def _changes(row: dict) -> dict:
    import json

    return json.loads(row["changes"]) if isinstance(row["changes"], str) else dict(row["changes"])


def _warnings(base: dict, ranking: list[dict]) -> list[Recommendation]:
    advice = []
    identity = base["identity_error_mean_voxels"]
    if base["error_mean_voxels"] >= identity:
        advice.append(Recommendation("warning", f"Your settings do no better than doing nothing: mean error "
                                     f"{base['error_mean_voxels']:.3g} voxels against {identity:.3g} for the identity",
                                     {}, {"error_mean_voxels": base["error_mean_voxels"],
                                          "identity_error_mean_voxels": identity}))
    if base["dense_metric_better_than_identity"] < base["seeds_done"]:
        advice.append(Recommendation("warning", f"With your settings the dense metric is worse than identity in "
                                     f"{base['seeds_done'] - base['dense_metric_better_than_identity']} of "
                                     f"{base['seeds_done']} seeds: the sampled metric over-fits",
                                     {}, {"dense_metric_better_than_identity": base["dense_metric_better_than_identity"],
                                          "seeds": base["seeds_done"]}))
    outside, total = base["control_points_outside"], base["control_points"]
    if total and outside / total > OUTSIDE_WARNING_FRACTION:
        finer = [row for row in ranking if "mesh_size" in _changes(row) and row is not base]
        changes = _changes(finer[0]) if finer and finer[0]["error_mean_voxels"] < base["error_mean_voxels"] else {}
        advice.append(Recommendation("warning", f"mesh {base['mesh_size']} puts {outside} of {total} control points "
                                     "outside the image" + (f"; {finer[0]['description']} gives "
                                                            f"{finer[0]['error_mean_voxels']:.3g} voxels"
                                                            if changes else ""),
                                     changes, {"control_points_outside": outside, "control_points": total}))
    return advice


def from_study(analysis) -> list[Recommendation]:
    """From a study with a known deformation: the (mode, spacing) that moved with the lowest mean error over its
    repeats, against every other group; groups within the tie threshold of it are negligible differences. A group
    that never moved is the identity, never a recommendation; when no group that moved beats doing nothing, the
    advice is that warning alone."""
    groups = [g for g in analysis.groups if g.error is not None]
    moved = [g for g in groups if g.moved]
    if len(groups) < 2 or not moved:
        return []
    spread = {id(g): float(np.std([analysis.run_errors[r]["recovered"]["mean_voxels"] for r in g.runs]))
              for g in groups}
    top = min(moved, key=lambda g: g.error["mean_voxels"])
    identity = analysis.truth["identity"]["mean_voxels"]
    if top.error["mean_voxels"] >= identity - max(NEGLIGIBLE_VOXELS, spread[id(top)]):
        return [Recommendation(
            "warning", f"No configuration of this study that moved does better than doing nothing: the best, "
            f"{top.mode} at spacing {top.spacing:g}, has mean error {top.error['mean_voxels']:.3g} voxels against "
            f"{identity:.3g} for the identity. Compare other settings (sampling, mesh, estimator) with "
            "`spacingreg accuracy`.", {},
            {"best_mode": top.mode, "best_spacing": top.spacing, "best_error_mean_voxels": top.error["mean_voxels"],
             "identity_error_mean_voxels": identity})]
    units, threads = top.mode.split("-")
    changes = {"spacing_override": top.spacing, "normalised_units": units == "normalised",
               "reproducible": threads == "reproducible"}
    advice = []
    if all(len(set(g.seeds)) <= 1 for g in groups):
        advice.append(Recommendation(
            "warning", "Each configuration was run with one sampling seed, so these errors have no seed-to-seed "
            "spread to be judged against: a different seed moves the error as much as these settings do. Repeat the "
            "study with several seeds (--seed-policy per_repeat, --repeats 4 or more) before choosing.", {},
            {"seeds_per_configuration": 1}))
    for group in sorted((g for g in groups if g is not top), key=lambda g: g.error["mean_voxels"]):
        threshold = max(NEGLIGIBLE_VOXELS, spread[id(top)], spread[id(group)])
        difference = group.error["mean_voxels"] - top.error["mean_voxels"]
        figures = {"best_mode": top.mode, "best_spacing": top.spacing, "best_error_mean_voxels": top.error["mean_voxels"],
                   "mode": group.mode, "spacing": group.spacing, "error_mean_voxels": group.error["mean_voxels"],
                   "threshold_voxels": threshold, "identity_error_mean_voxels": identity}
        if difference <= threshold:
            advice.append(Recommendation("negligible", f"{group.mode} at spacing {group.spacing:g} is as good as "
                                         f"{top.mode} at {top.spacing:g}: mean error {group.error['mean_voxels']:.3g} "
                                         f"vs {top.error['mean_voxels']:.3g} voxels, within {threshold:.2g} voxels",
                                         {}, figures))
        else:
            advice.append(Recommendation("recommended", f"Use {top.mode} at spacing {top.spacing:g} rather than "
                                         f"{group.mode} at {group.spacing:g}: mean error "
                                         f"{top.error['mean_voxels']:.3g} vs {group.error['mean_voxels']:.3g} voxels "
                                         f"(doing nothing: {identity:.3g})", changes, figures))
    return advice


def changed_paths(changes: dict) -> set[str]:
    """The settings field paths (settings.leaf_paths form) a change dict names: ``{"lbfgs2": {"a": 1}}`` ->
    ``lbfgs2.a``, ``mesh_size`` -> its three axes."""
    paths = set()
    for name, value in changes.items():
        if isinstance(value, dict):
            paths.update(f"{name}.{inner}" for inner in value)
        elif name == "mesh_size":
            paths.update(f"mesh_size.{axis}" for axis in range(len(value)))
        else:
            paths.add(name)
    return paths
