"""A study's output folder: nothing finished is ever lost, nothing half-written is ever trusted.

Layout::

    study.json               the specification and a fingerprint of the input images
    inputs/fixed.nrrd, inputs/moving.nrrd
    inputs/truth.nrrd        the known deformation on the fixed grid, when the study has one
    inputs/mask.nrrd         the fixed-image mask (0/1 on the fixed grid) of every run, when the study has one
    inputs/initial.tfm       the initial transform composed before every run's BSpline, when the study has one
                             (inputs/initial.h5 for a composite, which a text file cannot always hold)
    runs.jsonl               one row per finished run (appended whole, fsync'ed)
    transforms/<run_id>.tfm  the run's BSpline (written to a temporary name, then renamed)

A row counts only if it parses and its transform file exists with the digest the row recorded; anything else
(a line cut by a crash, a transform deleted or replaced, duplicated rows) is dropped when the folder is opened,
and that run is done again. A folder whose rows the specification cannot have produced (study.json edited by
hand) or whose input images changed is refused, naming the file; a replaced input is restored when the study is
resumed with the original images.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import initial_transforms, masks
from .images import InputImageError, read_image
from .safe_writes import write_transform
from .settings import SettingsError, to_dict
from .truth import Truth, as_truth, load_truth
from .study_spec import StudySpec, spec_from_dict
from .transform_files import read_bspline


class StudyFolderError(ValueError):
    """The output folder cannot hold this study; the message says why."""


#: Decimals (mm, direction entries) of the geometry in an image fingerprint.
GEOMETRY_DECIMALS = 9


def image_fingerprint(image: sitk.Image) -> str:
    """SHA-256 of the voxels and the geometry, rounded to GEOMETRY_DECIMALS: NRRD stores an oblique direction
    times the spacing, so an image read back differs from the one written in the last bits."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).tobytes())
    geometry = [round(value, GEOMETRY_DECIMALS) + 0.0 for value in (*image.GetSpacing(), *image.GetOrigin(),
                                                                    *image.GetDirection())]
    digest.update(repr((image.GetSize(), geometry, image.GetPixelIDValue())).encode())
    return digest.hexdigest()


def _write_atomically(path: Path, write):
    temporary = path.with_name(path.name + ".part")
    write(temporary)
    os.replace(temporary, path)


@dataclass
class StudyStore:
    """An opened study folder with its finished rows."""

    folder: Path
    spec: StudySpec
    rows: dict[str, dict] = field(default_factory=dict)
    dropped_lines: int = 0
    #: Input files restored from the images a resume was given (they had been replaced or damaged).
    repaired: list[str] = field(default_factory=list)

    @property
    def fixed_path(self) -> Path:
        return self.folder / "inputs" / "fixed.nrrd"

    @property
    def moving_path(self) -> Path:
        return self.folder / "inputs" / "moving.nrrd"

    @property
    def runs_path(self) -> Path:
        return self.folder / "runs.jsonl"

    @property
    def truth_path(self) -> Path:
        return self.folder / "inputs" / "truth.nrrd"

    def truth(self, fixed: sitk.Image) -> Truth | None:
        """The study's known deformation on ``fixed`` (its fixed image), or None."""
        return load_truth(self.truth_path, fixed) if self.truth_path.is_file() else None

    @property
    def mask_path(self) -> Path:
        return self.folder / "inputs" / "mask.nrrd"

    def mask_array(self) -> np.ndarray | None:
        """The study's fixed-image mask (numpy order, boolean), or None: the analysis' statistics use it."""
        return masks.as_array(read_image(self.mask_path, "study mask")) if self.mask_path.is_file() else None

    @property
    def initial_path(self) -> Path:
        """The stored initial transform's file (it may not exist: the study has none)."""
        h5 = self.folder / "inputs" / "initial.h5"
        return h5 if h5.is_file() else self.folder / "inputs" / "initial.tfm"

    def initial_transform(self) -> sitk.Transform | None:
        """The initial transform every run composed before its BSpline (in the files' space), or None."""
        return initial_transforms.load(self.initial_path) if self.initial_path.is_file() else None

    def transform_path(self, run_id: str) -> Path:
        return self.folder / "transforms" / f"{run_id}.tfm"

    def record(self, payload: dict) -> dict:
        """Write a finished run: its transform first, then its row. Returns the row."""
        transform = sitk.BSplineTransform(3, 3)
        transform.SetFixedParameters(payload["fixed_parameters"])
        transform.SetParameters(payload["parameters"])
        path = self.transform_path(payload["run_id"])
        temporary = path.with_name(path.stem + ".part.tfm")  # WriteTransform picks the format by extension
        row = {key: value for key, value in payload.items() if key not in ("fixed_parameters", "parameters")}
        row["transform"] = str(path.relative_to(self.folder))
        size = self.runs_path.stat().st_size if self.runs_path.is_file() else 0
        try:
            write_transform(transform, temporary)
            row["transform_sha256"] = _file_digest(temporary)  # a transform replaced by hand is detected
            line = json.dumps(row, default=float) + "\n"
            os.replace(temporary, path)
            with self.runs_path.open("a") as stream:
                stream.write(line)
                stream.flush()
                os.fsync(stream.fileno())
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            with contextlib.suppress(OSError), self.runs_path.open("r+") as stream:
                stream.truncate(size)  # no half row; the run's transform without a row is redone
            reason = error.strerror or str(error)
            raise StudyFolderError(f"cannot record run {payload['run_id']} in {self.folder}: {reason}; "
                                   f"the {len(self.rows)} finished run(s) are kept, run again to resume") from None
        self.rows[row["run_id"]] = row
        return row

    def read_transform(self, run_id: str) -> sitk.BSplineTransform:
        return read_bspline(self.transform_path(run_id), f"transform of run {run_id}")

    def pending(self):
        """Runs of the specification without a finished row."""
        return [run for run in self.spec.runs() if run.run_id not in self.rows]


def create_or_open(folder, spec: StudySpec, fixed: sitk.Image, moving: sitk.Image, truth=None,
                   mask=None, initial_transform=None) -> StudyStore:
    """Start a study in ``folder``, or reopen it to resume: the same study (spec, images, truth and mask) only.

    ``mask`` (a fixed-image mask, see :func:`masks.fixed_mask`) is stored on the fixed grid beside the inputs;
    every run's metric and statistics use it.

    ``truth`` (a known deformation: file, transform, displacement image or :class:`truth.Truth`) is stored
    on the fixed grid beside the inputs.

    ``initial_transform`` (a file or a transform, see :mod:`initial_transforms`) is stored beside the inputs and
    fingerprinted by its parameters: a resume need not name it, a different one is refused.
    """
    folder = Path(folder)
    fingerprint = {"fixed": image_fingerprint(fixed), "moving": image_fingerprint(moving)}
    truth_image = None if truth is None else as_truth(truth, fixed).as_image()
    if truth_image is not None:
        fingerprint["truth"] = image_fingerprint(truth_image)
    mask_image = None if mask is None else masks.fixed_mask(mask, fixed)
    if mask_image is not None:
        fingerprint["mask"] = image_fingerprint(mask_image)
    initial = None if initial_transform is None else initial_transforms.load(initial_transform)
    if initial is not None:
        fingerprint["initial"] = initial_transforms.fingerprint(initial)
    description = {"spec": spec.to_dict(), "inputs": fingerprint}
    study_file = folder / "study.json"
    if study_file.is_file():
        existing = _read_study_file(study_file)
        if truth is None and isinstance(existing.get("inputs"), dict) and "truth" in existing["inputs"]:
            description["inputs"]["truth"] = existing["inputs"]["truth"]  # resuming need not name the truth again
        if mask is None and isinstance(existing.get("inputs"), dict) and "mask" in existing["inputs"]:
            description["inputs"]["mask"] = existing["inputs"]["mask"]  # nor the mask
        stored_initial = existing["inputs"].get("initial") if isinstance(existing.get("inputs"), dict) else None
        if initial is None and stored_initial is not None:
            description["inputs"]["initial"] = stored_initial  # nor the initial transform
        elif initial is not None and stored_initial != fingerprint["initial"]:
            what = "another initial transform" if stored_initial else "no initial transform"
            raise StudyFolderError(f"{folder} was made with {what}, not {_named(initial_transform)}; resume it "
                                   "without --initial-transform or choose another output folder")
        if existing != description:
            raise StudyFolderError(f"{folder} holds a different study (other settings, images, truth or mask); "
                                   "choose another output folder")
        return _load(folder, spec, existing["inputs"], {"fixed": fixed, "moving": moving, "mask": mask_image,
                                                         "initial": initial})
    if folder.exists() and any(folder.iterdir()):
        raise StudyFolderError(f"{folder} is not empty and holds no study; choose an empty or new folder")
    try:
        for sub in ("inputs", "transforms"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        store = StudyStore(folder, spec)
        _write_atomically(store.fixed_path, lambda p: sitk.WriteImage(fixed, str(p), useCompression=True, imageIO="NrrdImageIO"))
        _write_atomically(store.moving_path, lambda p: sitk.WriteImage(moving, str(p), useCompression=True, imageIO="NrrdImageIO"))
        if truth_image is not None:
            _write_atomically(store.truth_path, lambda p: sitk.WriteImage(truth_image, str(p), useCompression=True,
                                                                           imageIO="NrrdImageIO"))
        if mask_image is not None:
            _write_atomically(store.mask_path, lambda p: sitk.WriteImage(mask_image, str(p), useCompression=True,
                                                                          imageIO="NrrdImageIO"))
        if initial is not None:
            _write_initial(store, initial)
        _write_atomically(study_file, lambda p: p.write_text(json.dumps(description, indent=2)))
    except OSError as error:
        raise StudyFolderError(f"cannot write the study to {folder}: {error.strerror or error}") from None
    return store


def open_study(folder) -> StudyStore:
    """Reopen an existing study folder (for analysis and reports)."""
    folder = Path(folder)
    study_file = folder / "study.json"
    if not study_file.is_file():
        raise StudyFolderError(f"{folder} holds no study (study.json not found)")
    description = _read_study_file(study_file)
    try:
        spec = spec_from_dict(description["spec"])
    except SettingsError as error:
        raise StudyFolderError(f"{study_file} is damaged: {error}") from None
    return _load(folder, spec, description["inputs"])


def _read_study_file(study_file: Path) -> dict:
    try:
        description = json.loads(study_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StudyFolderError(f"{study_file} is damaged: {error}") from None
    if not isinstance(description, dict) or not isinstance(description.get("spec"), dict) \
            or not isinstance(description.get("inputs"), dict):
        raise StudyFolderError(f"{study_file} is damaged: it needs a 'spec' and an 'inputs' object")
    return description


def _named(initial_transform) -> str:
    return str(initial_transform) if isinstance(initial_transform, (str, Path)) else "the given initial transform"


def _write_initial(store: StudyStore, initial: sitk.Transform):
    """inputs/initial.tfm (or .h5 for a composite), written under a temporary name, read back, then renamed."""
    path = store.folder / "inputs" / ("initial.h5" if isinstance(initial, sitk.CompositeTransform) else "initial.tfm")
    temporary = path.with_name(path.stem + ".part" + path.suffix)  # WriteTransform picks the format by extension
    write_transform(initial, temporary)
    os.replace(temporary, path)


def _check_initial(store: StudyStore, expected: str, given: sitk.Transform | None):
    """The stored initial transform must still have its fingerprint; restored from the one a resume was given."""
    path = store.initial_path
    try:
        actual, reason = initial_transforms.fingerprint(initial_transforms.load(path)), ""
    except InputImageError as error:
        actual, reason = None, f" ({error})"
    if actual == expected:
        return
    if given is not None and initial_transforms.fingerprint(given) == expected:
        for stale in (store.folder / "inputs" / "initial.tfm", store.folder / "inputs" / "initial.h5"):
            stale.unlink(missing_ok=True)
        _write_initial(store, given)
        store.repaired.append(str(store.initial_path.relative_to(store.folder)))
        return
    raise StudyFolderError(f"{path} is not the initial transform this study was made with (changed or damaged by hand"
                           f"{reason}); put the original back, or resume the study with its original initial "
                           "transform to restore it")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _check_inputs(store: StudyStore, fingerprints: dict, images: dict | None):
    """Each stored input (inputs/<name>.nrrd) must still be the image study.json fingerprinted. One replaced or
    damaged by hand is restored from the image a resume was given when that image has the fingerprint; otherwise
    the study is refused, naming the file."""
    for name, expected in fingerprints.items():
        if name == "initial":
            _check_initial(store, expected, (images or {}).get(name))
            continue
        path = store.folder / "inputs" / f"{name}.nrrd"
        try:
            actual, reason = image_fingerprint(read_image(path, f"study input {name}")), ""
        except InputImageError as error:
            actual, reason = None, f" ({error})"
        if actual == expected:
            continue
        given = (images or {}).get(name)
        if given is not None and image_fingerprint(given) == expected:
            _write_atomically(path, lambda p: sitk.WriteImage(given, str(p), useCompression=True, imageIO="NrrdImageIO"))
            store.repaired.append(str(path.relative_to(store.folder)))
            continue
        raise StudyFolderError(f"{path} is not the image this study was made with (changed or damaged by hand{reason}); "
                               "put the original back, or resume the study with its original images to restore it")


def _transform_intact(store: StudyStore, row: dict) -> bool:
    """The row's transform file exists and (for rows that record it) has the digest written with it."""
    path = store.transform_path(row["run_id"])
    return path.is_file() and ("transform_sha256" not in row or _file_digest(path) == row["transform_sha256"])


def _row_conflict(row: dict, run) -> str:
    """Why ``row`` cannot be a result of ``run`` of the specification ('' when it can)."""
    if run is None:
        return "is not a run of the specification"
    for key in ("mode", "spacing", "repeat", "seed"):
        if key in row and row[key] != getattr(run, key):
            return f"has {key} {row[key]!r} where the specification says {getattr(run, key)!r}"
    recorded = (row.get("summary") or {}).get("settings")
    if isinstance(recorded, dict):
        expected = to_dict(run.settings)
        if run.settings.number_of_threads is None:  # default-threads runs record the count they used
            recorded = {**recorded, "number_of_threads": None}
        if recorded != expected:
            changed = sorted(k for k in set(expected) | set(recorded) if expected.get(k) != recorded.get(k))
            return f"was made with other settings ({', '.join(changed)})"
    return ""


def _load(folder: Path, spec: StudySpec, fingerprints: dict | None = None, images: dict | None = None) -> StudyStore:
    """The folder's finished rows, after checking it against hand edits. Repaired (the runs are redone): a line
    cut short, a row whose transform file is missing or was replaced, duplicated rows (one is kept when they are
    identical, none when they differ). Refused, naming the file: a row that the specification in study.json
    cannot have produced (the spec was edited), an input image that changed."""
    store = StudyStore(folder, spec)
    if fingerprints is not None:
        _check_inputs(store, fingerprints, images)
    if not store.runs_path.is_file():
        return store
    runs = {run.run_id: run for run in spec.runs()}
    kept, conflicting, dropped = {}, set(), 0
    for line in store.runs_path.read_text().splitlines(keepends=True):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if not line.endswith("\n") or not isinstance(row, dict) or "run_id" not in row \
                or not _transform_intact(store, row):
            dropped += 1
            continue
        conflict = _row_conflict(row, runs.get(row["run_id"]))
        if conflict:
            raise StudyFolderError(
                f"{store.runs_path}: the row of run {row['run_id']} {conflict}: {folder / 'study.json'} or the runs "
                "were edited by hand; restore study.json or start the study in a new folder")
        if row["run_id"] in kept:
            dropped += 1
            if kept[row["run_id"]][0] != line:
                conflicting.add(row["run_id"])
            continue
        kept[row["run_id"]] = (line, row)
    for run_id in conflicting:
        del kept[run_id]
        dropped += 1
    if dropped:
        _write_atomically(store.runs_path, lambda p: p.write_text("".join(line for line, _ in kept.values())))
    store.rows = {run_id: row for run_id, (_, row) in kept.items()}
    store.dropped_lines = dropped
    return store
