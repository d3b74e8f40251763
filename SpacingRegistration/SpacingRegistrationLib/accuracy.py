"""The accuracy check: how right is a registration on the user's own image, and which settings are righter?

No truth is needed. The user's fixed image is deformed by a smooth known deformation u (a cubic BSpline on a
grid of its own: a prime mesh on a domain larger than the image, so that no registration grid can represent it
exactly, i.e. no inverse crime). The pair registered is (fixed(x + u(x)), fixed): the registration transform
T(x) = x + u(x) (fixed points to moving points) is then known without inverting anything.

Each candidate configuration runs as an ordinary study (one spacing, one mode, the sampling seeds as repeats,
the truth stored with it) in its own folder under the check's folder, so resume, pool/Dask and the study report
come from study_runner. The candidates are then ranked by their error over the seeds (mean, then worst seed),
and by time. Layout of a check folder::

    accuracy.json           what the check is (options, candidates with their settings, input fingerprint)
    inputs/fixed.nrrd       the deformed image (the registration's fixed image)
    inputs/moving.nrrd      the user's image (possibly with an intensity change and noise)
    inputs/truth.nrrd       u on the fixed grid (LPS mm)
    candidates/<name>/      one study folder per candidate (with report/ once analysed)
    ranking.json, ranking.csv, index.html
"""

from __future__ import annotations

import csv
import json
import math
import threading
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from . import masks, svg
from .displacement import displacement_array, minimum_jacobian_determinant, to_voxel_units
from .grid import mesh_size_for
from .images import check_image, read_image
from .settings import RegistrationSettings, SettingsError, from_dict, to_dict
from .study_spec import StudySpec
from .study_store import StudyFolderError, image_fingerprint, open_study
from .truth import truth_from_transform

#: Differences in mean error below this (voxels) are rounding, never "better"; the seed-to-seed spread also counts.
NEGLIGIBLE_VOXELS = 1e-6
#: Meshes tried for the synthetic deformation: primes, so that a registration mesh is rarely a multiple.
TRUTH_MESHES = (3, 5, 7, 11, 13)
#: The deformation's grid covers the image plus this fraction of its extent on each side (knots off the image's).
TRUTH_DOMAIN_MARGIN = 0.13
CHECK_FILE = "accuracy.json"


class AccuracyCheckError(SettingsError):
    """The check cannot run as asked; the message names the option and the problem."""


@dataclass(frozen=True)
class Candidate:
    """A configuration to try: a name (folder-safe), what it is, and its changes to the base settings."""

    name: str
    description: str
    changes: dict

    def settings(self, base: RegistrationSettings) -> RegistrationSettings:
        return apply_changes(base, self.changes)


@dataclass(frozen=True)
class CheckOptions:
    """How the synthetic pair is made and how many seeds each candidate runs."""

    amplitude_voxels: float = 3.0
    deformation_seed: int = 0
    seeds: int = 4
    noise_percent: float = 0.0
    intensity_gamma: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.amplitude_voxels, (int, float)) and math.isfinite(self.amplitude_voxels)
                and 0 < self.amplitude_voxels <= 20):
            raise AccuracyCheckError(f"amplitude_voxels must be in (0, 20], got {self.amplitude_voxels!r}")
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or not 1 <= self.seeds <= 100:
            raise AccuracyCheckError(f"seeds must be an integer in [1, 100], got {self.seeds!r}")
        if not (isinstance(self.noise_percent, (int, float)) and 0 <= self.noise_percent <= 100):
            raise AccuracyCheckError(f"noise_percent must be in [0, 100], got {self.noise_percent!r}")
        if not (isinstance(self.intensity_gamma, (int, float)) and 0.1 <= self.intensity_gamma <= 10):
            raise AccuracyCheckError(f"intensity_gamma must be in [0.1, 10], got {self.intensity_gamma!r}")


def apply_changes(settings: RegistrationSettings, changes: dict) -> RegistrationSettings:
    """``settings`` with ``changes`` applied; nested optimizer settings merge (``{"lbfgs2": {...}}``)."""
    values = to_dict(settings)
    for name, value in changes.items():
        if isinstance(value, dict) and isinstance(values.get(name), dict):
            values[name] = {**values[name], **value}
        else:
            values[name] = value
    return from_dict(values)


def base_settings(user: RegistrationSettings) -> tuple[RegistrationSettings, str | None]:
    """The settings every candidate starts from: the user's, with the fast equivalent of the physical-shift
    estimator (same registration, a fraction of the cost); the second value says so when it applies."""
    if user.scales_estimator == "physical_shift":
        return (user.replace(scales_estimator="physical_shift_fast"),
                "your settings use scales_estimator='physical_shift'; the candidates use its fast equivalent "
                "'physical_shift_fast' (name candidate scales-physical_shift to run the original too)")
    return user, None


def all_candidates(user: RegistrationSettings, fixed: sitk.Image) -> list[Candidate]:
    """Your settings, normalised units, reproducible mode, sampling 2.5/10/25 %, a mesh twice as fine, and the
    scales estimator original / fast / off."""
    base, _note = base_settings(user)
    mesh = [2 * m for m in mesh_size_for(fixed, base)]
    options = [Candidate("yours", "your settings", {}),
               Candidate("normalised", "normalised units (spacing-invariant)", {"normalised_units": True}),
               Candidate("reproducible", "reproducible mode (one work unit)", {"reproducible": True})]
    options += [Candidate(f"sampling-{p:g}", f"sampling {p:g} %", {"sampling_percentage": p}) for p in (2.5, 10.0, 25.0)]
    options.append(Candidate(f"mesh-{'x'.join(map(str, mesh))}", f"mesh {mesh} (control points twice as dense)",
                             {"grid_specification": "mesh_size", "mesh_size": mesh}))
    options += [Candidate(f"scales-{e}", f"scales estimator {e}", {"scales_estimator": e})
                for e in ("physical_shift", "physical_shift_fast", "none")]
    return options


def default_candidates(user: RegistrationSettings, fixed: sitk.Image) -> list[Candidate]:
    """:func:`all_candidates` without those whose settings equal your settings' or an earlier candidate's, and
    without ``scales-physical_shift`` when your settings use it (its fast equivalent runs instead; the original
    costs about 13 times the CPU on a 40^3 image and may be named)."""
    base, _note = base_settings(user)
    kept, seen = [], []
    skipped = {"scales-physical_shift"} if user.scales_estimator == "physical_shift" else set()
    for candidate in [c for c in all_candidates(user, fixed) if c.name not in skipped]:
        settings = candidate.settings(base)
        if candidate.name == "yours" or settings not in seen:
            kept.append(candidate)
            seen.append(settings)
    return kept


def resolve_candidates(candidates, user: RegistrationSettings, fixed: sitk.Image) -> list[Candidate]:
    """Candidate objects and names of :func:`all_candidates`, with ``yours`` (the baseline) first."""
    if candidates is None:
        return default_candidates(user, fixed)
    known = {c.name: c for c in all_candidates(user, fixed)}
    chosen = [c if isinstance(c, Candidate) else known.get(c) or parse_candidate(c, known) for c in candidates]
    if "yours" not in [c.name for c in chosen]:
        chosen.insert(0, known["yours"])
    names = [c.name for c in chosen]
    if len(set(names)) != len(names):
        raise AccuracyCheckError(f"candidate names must be unique, got {names}")
    return chosen


def parse_candidate(name: str, known=()) -> Candidate:
    """A candidate from its name: ``sampling-<percent>``, ``mesh-<x>x<y>x<z>``, ``iterations-<n>`` (LBFGS2) or
    ``scales-<estimator>``; anything else is an AccuracyCheckError listing the names."""
    kind, _dash, value = name.partition("-")
    try:
        if kind == "sampling":
            return Candidate(name, f"sampling {float(value):g} %", {"sampling_percentage": float(value)})
        if kind == "mesh":
            mesh = [int(v) for v in value.split("x")]
            if len(mesh) == 3:
                return Candidate(name, f"mesh {mesh}", {"grid_specification": "mesh_size", "mesh_size": mesh})
        if kind == "iterations":
            return Candidate(name, f"{int(value)} LBFGS2 iterations", {"lbfgs2": {"number_of_iterations": int(value)}})
        if kind == "scales" and value:
            return Candidate(name, f"scales estimator {value}", {"scales_estimator": value})
    except ValueError:
        pass
    raise AccuracyCheckError(f"unknown candidate {name!r}; known: {', '.join(known)}, or sampling-<percent>, "
                             "mesh-<x>x<y>x<z>, iterations-<n>, scales-<estimator>")


# --- the synthetic pair -------------------------------------------------------------------------------------------

@dataclass
class SyntheticPair:
    fixed: sitk.Image
    moving: sitk.Image
    deformation: sitk.BSplineTransform
    truth_mm: np.ndarray
    max_voxels: float
    min_jacobian: float
    truth_mesh: list[int]


def synthetic_deformation(image: sitk.Image, amplitude_voxels: float, seed: int,
                          avoid_meshes=()) -> tuple[sitk.BSplineTransform, int]:
    """A smooth random cubic BSpline whose largest displacement is ``amplitude_voxels`` voxels on ``image``.

    Its mesh is the smallest of TRUTH_MESHES dividing none of ``avoid_meshes`` (the registration meshes: a
    BSpline is exactly representable on a mesh that its own mesh divides) and its domain sticks out of the
    image by TRUTH_DOMAIN_MARGIN on each side, so its knots are not the registration's.
    """
    avoid = [m for mesh in avoid_meshes for m in mesh]
    mesh = next((m for m in TRUTH_MESHES if all(a % m for a in avoid)), TRUTH_MESHES[-1])
    dimension = image.GetDimension()
    size = np.asarray(image.GetSize(), dtype=float)
    spacing = np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(dimension, dimension)
    extent = size * spacing
    domain_size = extent * (1 + 2 * TRUTH_DOMAIN_MARGIN)
    start = np.asarray(image.GetOrigin()) + direction @ (-0.5 * spacing - TRUTH_DOMAIN_MARGIN * extent)
    transform = sitk.BSplineTransform(dimension, 3)
    transform.SetTransformDomainOrigin(start.tolist())
    transform.SetTransformDomainPhysicalDimensions(domain_size.tolist())
    transform.SetTransformDomainMeshSize([mesh] * dimension)
    transform.SetTransformDomainDirection(direction.ravel().tolist())
    rng = np.random.default_rng(seed)
    coefficients = rng.standard_normal(len(transform.GetParameters()))
    transform.SetParameters(coefficients.tolist())
    largest = float(np.linalg.norm(to_voxel_units(displacement_array(transform, image), image), axis=-1).max())
    transform.SetParameters((coefficients * amplitude_voxels / largest).tolist())
    return transform, mesh


def make_pair(user_image: sitk.Image, options: CheckOptions, avoid_meshes=()) -> SyntheticPair:
    """(fixed(x + u(x)), fixed) from the user's image, with u from :func:`synthetic_deformation`.

    Refuses (AccuracyCheckError) a deformation that folds (a Jacobian determinant <= 0): a smaller amplitude is
    then needed for this image. The moving image gets ``intensity_gamma`` (on the image's range) and both images
    independent Gaussian noise of ``noise_percent`` % of the range, from the deformation seed.
    """
    image = sitk.Cast(check_image(user_image, "fixed image"), sitk.sitkFloat32)
    transform, mesh = synthetic_deformation(image, options.amplitude_voxels, options.deformation_seed, avoid_meshes)
    field_mm = displacement_array(transform, image)
    jacobian = minimum_jacobian_determinant(field_mm, image)
    if jacobian <= 0:
        raise AccuracyCheckError(f"the synthetic deformation of {options.amplitude_voxels:g} voxels folds on this "
                                 f"image (min Jacobian determinant {jacobian:.3f}); use a smaller amplitude")
    low, high = (float(v) for v in (sitk.GetArrayViewFromImage(image).min(), sitk.GetArrayViewFromImage(image).max()))
    warped = sitk.Resample(image, image, transform, sitk.sitkBSpline, 0.0, sitk.sitkFloat32, True)
    fixed = sitk.Clamp(warped, sitk.sitkFloat32, low, high)
    moving = image
    if options.intensity_gamma != 1.0 and high > low:
        moving = sitk.Pow((moving - low) / (high - low), float(options.intensity_gamma)) * (high - low) + low
    if options.noise_percent > 0:
        rng = np.random.default_rng(options.deformation_seed + 1)
        fixed, moving = (_with_noise(i, options.noise_percent / 100 * (high - low), rng) for i in (fixed, moving))
    largest = float(np.linalg.norm(to_voxel_units(field_mm, image), axis=-1).max())
    return SyntheticPair(fixed, sitk.Cast(moving, sitk.sitkFloat32), transform, field_mm, largest, jacobian,
                         [mesh] * image.GetDimension())


def _with_noise(image: sitk.Image, sigma: float, rng) -> sitk.Image:
    array = sitk.GetArrayFromImage(image)
    noisy = sitk.GetImageFromArray((array + rng.normal(0.0, sigma, array.shape)).astype(np.float32))
    noisy.CopyInformation(image)
    return noisy


def representation_floor(truth_mm: np.ndarray, image: sitk.Image, mesh_size) -> dict:
    """The error (voxels) of the best least-squares fit of the truth by a cubic BSpline on the registration grid
    of ``mesh_size`` over ``image``: no registration on that grid can do better; 0 would mean an inverse crime."""
    initial = sitk.BSplineTransformInitializer(image, [int(m) for m in mesh_size])
    fixed = np.asarray(initial.GetFixedParameters())
    dimension = image.GetDimension()
    points, origin = fixed[:dimension].astype(int), fixed[dimension:2 * dimension]
    spacing = fixed[2 * dimension:3 * dimension]
    direction = np.asarray(image.GetDirection()).reshape(dimension, dimension)
    bases = []
    for axis in range(dimension):  # grid axes follow the image's index axes (same direction)
        index = np.zeros((image.GetSize()[axis], dimension))
        index[:, axis] = np.arange(image.GetSize()[axis])
        physical = np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T
        t = ((physical - origin) @ direction)[:, axis] / spacing[axis]
        bases.append(_cubic_bspline(t[:, None] - np.arange(points[axis])[None, :]))
    field = to_voxel_units(truth_mm, image)  # numpy order [z, y, x, c]
    fitted = field
    for axis in range(dimension):  # separable least squares: apply each axis's projection in turn
        basis = bases[axis]
        projection = basis @ np.linalg.pinv(basis)
        fitted = np.moveaxis(np.tensordot(projection, np.moveaxis(fitted, dimension - 1 - axis, 0), axes=1),
                             0, dimension - 1 - axis)
    error = np.linalg.norm(fitted - field, axis=-1)
    return {"mesh_size": [int(m) for m in mesh_size], "mean_voxels": float(error.mean()),
            "max_voxels": float(error.max())}


def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t < 1, 2 / 3 - t ** 2 + t ** 3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


# --- running the check --------------------------------------------------------------------------------------------

ProgressCallback = Callable[[str, int, int, dict], None]


@dataclass
class CheckOutcome:
    """What :func:`check_accuracy` did and found."""

    folder: Path
    ranking: list[dict]
    recommendations: list
    paths: dict[str, Path] = field(default_factory=dict)
    cancelled: bool = False
    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_spacing(user: RegistrationSettings, image: sitk.Image) -> tuple[float, str | None]:
    """The one spacing the check registers at: the user's spacing override, else the image's own (isotropic)
    spacing, else the mean spacing of an anisotropic image (said in the note)."""
    if user.spacing_override is not None:
        return float(user.spacing_override), None
    spacing = np.asarray(image.GetSpacing())
    if np.allclose(spacing, spacing[0], rtol=1e-6):
        return float(spacing[0]), None
    mean = float(spacing.mean())
    return mean, f"the image is anisotropic ({[float(v) for v in spacing]} mm): the check registers it at {mean:g} mm isotropic"


def mode_of(settings: RegistrationSettings) -> str:
    return (f"{'normalised' if settings.normalised_units else 'native'}-"
            f"{'reproducible' if settings.reproducible else 'default'}")


def candidate_spec(candidate: Candidate, base: RegistrationSettings, spacing: float, seeds: list[int]) -> StudySpec:
    settings = candidate.settings(base)
    return StudySpec(settings=settings, spacings=(spacing,), repeats=len(seeds), seeds=tuple(seeds),
                     modes=(mode_of(settings),))


def check_accuracy(fixed, output, settings: RegistrationSettings | None = None, candidates=None,
                   options: CheckOptions | None = None, mask=None, executor: str = "pool", workers=None,
                   scheduler=None, progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None) -> CheckOutcome:
    """Run (or resume) the accuracy check of ``settings`` on the image ``fixed`` (image or file) into ``output``.

    ``candidates``: Candidate objects or names of default candidates (default: :func:`default_candidates`).
    ``mask`` (image, numpy bool array or file; see :func:`masks.fixed_mask`) restricts the metric and the error
    figures.
    ``progress(candidate, done, total, row)`` follows each finished run; ``cancel`` stops the check, keeping every
    finished run (running the same check again resumes it).
    """
    from . import advice
    from .study_runner import check_executor, run_study

    check_executor(executor, scheduler, workers)
    user = settings or RegistrationSettings()
    options = options or CheckOptions()
    image = check_image(read_image(fixed, "fixed image") if isinstance(fixed, (str, Path)) else fixed, "fixed image")
    chosen = resolve_candidates(candidates, user, image)
    base, estimator_note = base_settings(user)
    spacing, spacing_note = check_spacing(user, image)
    first_seed = user.sampling_seed if user.sampling_seed is not None else 1
    seeds = [first_seed + k for k in range(options.seeds)]
    specs = {c.name: candidate_spec(c, base, spacing, seeds) for c in chosen}  # validates every candidate first
    mask_image = None if mask is None else masks.fixed_mask(mask, image)
    folder = Path(output)
    description = {"options": asdict(options), "user_settings": to_dict(user), "spacing": spacing, "seeds": seeds,
                   "candidates": [{"name": c.name, "description": c.description, "changes": c.changes,
                                   "spec": specs[c.name].to_dict()} for c in chosen],
                   "image": image_fingerprint(image)}
    pair_inputs = _open_or_create(folder, description, image, options,
                                  [mesh_size_for(image, s.settings) for s in specs.values()])
    notes = [n for n in (estimator_note, spacing_note) if n]
    outcome = CheckOutcome(folder, [], [], notes=notes)
    cancel = cancel or threading.Event()
    fixed_image, moving_image, truth = pair_inputs
    for candidate in chosen:
        if cancel.is_set():
            break
        study = run_study(specs[candidate.name], fixed_image, moving_image, folder / "candidates" / candidate.name,
                          executor=executor, workers=workers, scheduler=scheduler, cancel=cancel, truth=truth,
                          mask=mask_image,
                          progress=None if progress is None else
                          (lambda done, total, row, name=candidate.name: progress(name, done, total, row)))
        outcome.completed += [f"{candidate.name}/{r}" for r in study.completed]
        outcome.skipped += [f"{candidate.name}/{r}" for r in study.skipped]
        if study.failed:
            notes.append(f"candidate {candidate.name}: {len(study.failed)} run(s) failed "
                         f"({'; '.join(f'{k}: {v}' for k, v in study.failed.items())})")
    outcome.cancelled = cancel.is_set()
    outcome.ranking = rank(folder, chosen, masks.as_array(mask_image))
    outcome.recommendations = advice.from_ranking(outcome.ranking)
    outcome.paths = write_outputs(folder, outcome, description)
    return outcome


def _open_or_create(folder: Path, description: dict, image: sitk.Image, options: CheckOptions, meshes):
    """The synthetic (fixed, moving, truth transform-free field) of the check in ``folder``: made and stored the
    first time, read back when resuming; a folder holding another check or anything else is refused."""
    check_file = folder / CHECK_FILE
    inputs = {name: folder / "inputs" / f"{name}.nrrd" for name in ("fixed", "moving", "truth")}
    if check_file.is_file():
        try:
            existing = json.loads(check_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise StudyFolderError(f"{check_file} is damaged ({error}); use another output folder") from None
        if _identity(existing) != _identity(json.loads(json.dumps(description))):
            raise StudyFolderError(f"{folder} holds a different accuracy check (other image, settings, options, "
                                   "spacing or seeds); use another output folder")
        if not all(p.is_file() for p in inputs.values()):
            raise StudyFolderError(f"{folder}/inputs is incomplete; use another output folder")
        names = {c["name"] for c in existing["candidates"]}
        added = [c for c in description["candidates"] if c["name"] not in names]
        if added:
            _write_check(check_file, {**existing, "candidates": existing["candidates"] + added})
        return read_image(inputs["fixed"]), read_image(inputs["moving"]), str(inputs["truth"])
    if folder.exists() and any(p.name != "inputs" for p in folder.iterdir()):  # inputs alone: a check cut short
        raise StudyFolderError(f"{folder} is not empty and holds no accuracy check; use another output folder")
    pair = make_pair(image, options, meshes)
    truth = truth_from_transform(pair.deformation, pair.fixed, "synthetic deformation")
    (folder / "inputs").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(pair.fixed, str(inputs["fixed"]), True)
    sitk.WriteImage(pair.moving, str(inputs["moving"]), True)
    sitk.WriteImage(truth.as_image(), str(inputs["truth"]), True)
    synthetic = {"max_voxels": pair.max_voxels, "min_jacobian_determinant": pair.min_jacobian,
                 "truth_mesh": pair.truth_mesh, "domain_margin": TRUTH_DOMAIN_MARGIN,
                 "representation_floor": [representation_floor(pair.truth_mm, image, m)
                                          for m in {tuple(m): m for m in meshes}.values()]}
    _write_check(check_file, {**description, "synthetic": synthetic})  # last: a check cut short before is made afresh
    # The images as read back: NRRD rounds an oblique direction, and the studies fingerprint their inputs as stored.
    return read_image(inputs["fixed"]), read_image(inputs["moving"]), str(inputs["truth"])


def _identity(check: dict) -> dict:
    """What makes two checks the same synthetic pair and seeds (candidates may be added to a check later)."""
    return {k: v for k, v in check.items() if k not in ("synthetic", "candidates")}


def _write_check(check_file: Path, values: dict):
    temporary = check_file.with_suffix(".part")
    temporary.write_text(json.dumps(values, indent=1))
    temporary.replace(check_file)


# --- ranking ------------------------------------------------------------------------------------------------------

RANKING_COLUMNS = ("rank", "candidate", "description", "changes", "mode", "spacing", "seeds_done", "seeds",
                   "error_mean_voxels", "error_worst_voxels", "error_best_voxels", "error_seed_std_voxels",
                   "error_p95_voxels", "error_max_voxels", "error_mean_mm", "identity_error_mean_voxels",
                   "relative_to_identity", "dense_metric_better_than_identity", "moved", "time_mean_s", "cpu_mean_s",
                   "mesh_size", "control_points", "control_points_outside", "tied_with_best", "report")


def rank(folder: Path, candidates: list[Candidate], mask=None) -> list[dict]:
    """One row per candidate with finished runs, best first: mean error over seeds, then worst seed, then time.

    A candidate within the tie threshold of the best (NEGLIGIBLE_VOXELS or the larger seed-to-seed spread of
    the two) is marked ``tied_with_best``.
    """
    from .report import write_report
    from .variability import analyse

    rows = []
    for candidate in candidates:
        study_folder = folder / "candidates" / candidate.name
        if not (study_folder / "study.json").is_file():
            continue
        store = open_study(study_folder)
        if not store.rows:
            continue
        analysis = analyse(store, mask=mask)
        paths = write_report(store, analysis, study_folder / "report")
        group = analysis.groups[0]
        errors = [analysis.run_errors[r]["recovered"]["mean_voxels"] for r in group.runs]
        summaries = [store.rows[r]["summary"] for r in group.runs]
        rows.append({
            "candidate": candidate.name, "description": candidate.description,
            "changes": json.dumps(candidate.changes, sort_keys=True), "mode": group.mode, "spacing": group.spacing,
            "seeds_done": len(group.runs), "seeds": len(store.spec.runs()),
            "error_mean_voxels": float(np.mean(errors)), "error_worst_voxels": float(np.max(errors)),
            "error_best_voxels": float(np.min(errors)), "error_seed_std_voxels": float(np.std(errors)),
            "error_p95_voxels": group.error["p95_voxels"],
            "error_max_voxels": max(analysis.run_errors[r]["recovered"]["max_voxels"] for r in group.runs),
            "error_mean_mm": group.error["mean_mm"],
            "identity_error_mean_voxels": analysis.truth["identity"]["mean_voxels"],
            "relative_to_identity": float(np.mean(errors)) / analysis.truth["identity"]["mean_voxels"],
            "dense_metric_better_than_identity": sum((s["plausibility"] or {}).get("improvement", 0) > 0
                                                     for s in summaries),
            "moved": sum(s["moved"] for s in summaries),
            "time_mean_s": float(np.mean([s["timing"]["total_s"] for s in summaries])),
            "cpu_mean_s": float(np.mean([s["timing"].get("cpu_s", float("nan")) for s in summaries])),
            "mesh_size": summaries[0]["grid"]["mesh_size"],
            "control_points": summaries[0]["grid"]["inside_count"] + summaries[0]["grid"]["outside_count"],
            "control_points_outside": summaries[0]["grid"]["outside_count"],
            "report": str(Path(paths["html"]).relative_to(folder)),
        })
    rows.sort(key=lambda r: (r["error_mean_voxels"], r["error_worst_voxels"], r["time_mean_s"]))
    if rows:
        best = rows[0]
        for position, row in enumerate(rows, start=1):
            row["rank"] = position
            row["tied_with_best"] = bool(row["error_mean_voxels"] - best["error_mean_voxels"]
                                         <= tie_threshold(row, best))
    return rows


def tie_threshold(a: dict, b: dict) -> float:
    """Below this difference of mean error (voxels) two candidates are equally good: rounding or seed spread."""
    return max(NEGLIGIBLE_VOXELS, a["error_seed_std_voxels"], b["error_seed_std_voxels"])


def write_outputs(folder: Path, outcome: CheckOutcome, description: dict) -> dict[str, Path]:
    """ranking.json (everything), ranking.csv (the table) and index.html (table, plot, advice, links)."""
    paths = {"json": folder / "ranking.json", "csv": folder / "ranking.csv", "html": folder / "index.html"}
    check = json.loads((folder / CHECK_FILE).read_text())
    recommendations = [r.as_dict() for r in outcome.recommendations]
    paths["json"].write_text(json.dumps({"ranking": outcome.ranking, "recommendations": recommendations,
                                         "notes": outcome.notes, "synthetic": check.get("synthetic"),
                                         "negligible_voxels": NEGLIGIBLE_VOXELS, "cancelled": outcome.cancelled,
                                         "check": description}, indent=1, default=float))
    with paths["csv"].open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=RANKING_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in RANKING_COLUMNS} for row in outcome.ranking)
    paths["html"].write_text(_html(outcome, check))
    return paths


def error_plot(ranking: list[dict]) -> str:
    """Mean and worst-seed error per candidate (bars, labelled by rank), identity's error as a third bar."""
    names = [str(row["rank"]) for row in ranking]
    return svg.bar_chart(names, {"mean over seeds": [r["error_mean_voxels"] for r in ranking],
                                 "worst seed": [r["error_worst_voxels"] for r in ranking],
                                 "doing nothing": [r["identity_error_mean_voxels"] for r in ranking]},
                         "Error against the synthetic deformation, by rank", "mean error (voxels)")


def _html(outcome: CheckOutcome, check: dict) -> str:
    from .report import number

    synthetic = check.get("synthetic") or {}
    columns = [c for c in RANKING_COLUMNS if c not in ("report", "changes")]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns) + "<th>report</th>"
    body = "".join("<tr>" + "".join(f"<td>{escape(number(row.get(c)))}</td>" for c in columns)
                   + f'<td><a href="{escape(row["report"])}">study report</a></td></tr>' for row in outcome.ranking)
    advice_items = "".join(f"<li><b>{escape(r.kind)}</b>: {escape(r.text)}</li>" for r in outcome.recommendations)
    notes = "".join(f"<li>{escape(n)}</li>" for n in outcome.notes)
    floors = ", ".join(f"mesh {f['mesh_size']}: {f['mean_voxels']:.3g} mean / {f['max_voxels']:.3g} max voxels"
                       for f in synthetic.get("representation_floor", []))
    status = "<p><b>Cancelled: the ranking covers the finished runs only; run the check again to resume.</b></p>" \
        if outcome.cancelled else ""
    plot = error_plot(outcome.ranking) if outcome.ranking else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Accuracy check</title></head><body>"
            f"<h1>Is my registration right? Accuracy check</h1>{status}"
            f"<p>Your image deformed by a known smooth BSpline (mesh {synthetic.get('truth_mesh')}, largest "
            f"displacement {synthetic.get('max_voxels', float('nan')):.3g} voxels, min Jacobian determinant "
            f"{synthetic.get('min_jacobian_determinant', float('nan')):.3g}), registered back with each candidate "
            f"over the sampling seeds {check['seeds']} at spacing {check['spacing']:g} mm. Best error any "
            f"registration grid could reach (least-squares fit): {escape(floors)}.</p>"
            f"<ul>{notes}</ul><h2>Advice</h2><p>Differences below {NEGLIGIBLE_VOXELS:g} voxels or within the "
            f"seed-to-seed spread are negligible.</p><ul>{advice_items}</ul><h2>Ranking</h2>{plot}"
            f"<table border='1' cellspacing='0' id='ranking'><tr>{head}</tr>{body}</table></body></html>")
