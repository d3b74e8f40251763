"""The child side of a job (``spacingreg job FOLDER``): run what ``job.json`` asks and report it as JSON lines.

Protocol (one JSON object per line on the original stdout; see jobs.py for the parent): ``started``,
``iteration`` (registration), ``plan`` (study: runs, executor, workers), ``run`` (study or accuracy check: one
per finished run), ``warning``, then one of ``result``, ``cancelled`` or ``error`` (one sentence). Everything else
the process prints, C++ included, goes to stderr, which the parent keeps in ``job.log``. SIGTERM (the parent's
cancel) stops at the next iteration: a cancelled registration writes nothing; a cancelled study or accuracy check
keeps its finished runs in its folder (a study skips its report).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import traceback
from pathlib import Path

from . import registration
from .images import InputImageError, read_image
from .resources import ResourceError
from .settings import SettingsError, from_dict
from .study_spec import spec_from_dict
from .study_store import StudyFolderError

USER_ERRORS = (SettingsError, InputImageError, StudyFolderError, ResourceError, FileNotFoundError,
               NotADirectoryError, PermissionError, ValueError, registration.RegistrationFailedError)


class Protocol:
    """JSON lines on the process's original stdout; file descriptor 1 then points at stderr."""

    def __init__(self):
        sys.stdout.flush()
        self._stream = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
        os.dup2(2, 1)
        self._lock = threading.Lock()

    def emit(self, event: str, **fields):
        with self._lock:
            self._stream.write(json.dumps({"event": event, **fields}, default=float) + "\n")
            self._stream.flush()


def _atomic_pickle(value, path: Path):
    temporary = path.with_name(path.name + ".part")
    with temporary.open("wb") as stream:
        pickle.dump(value, stream)
    os.replace(temporary, path)


def _registration(job: dict, folder: Path, protocol: Protocol, cancel: threading.Event) -> int:
    from .cli import write_result
    from .jobs import OUTPUT_FOLDER, RESULT_PICKLE

    settings = from_dict(job["settings"])
    fixed = read_image(folder / "fixed.nrrd", "fixed image")
    moving = read_image(folder / "moving.nrrd", "moving image")
    count = 0

    def progress(record):
        nonlocal count
        count += 1
        protocol.emit("iteration", count=count, iteration=record.iteration, lbfgs_run=record.lbfgs_run,
                      metric=record.metric, step_max_voxels=record.step_max_voxels)

    mask = folder / "mask.nrrd" if job.get("mask") else None
    initial = folder / job["initial_transform"] if job.get("initial_transform") else None
    result = registration.run(fixed, moving, settings, progress=progress, cancel=cancel, mask=mask,
                              initial_transform=initial)
    if result.cancelled or cancel.is_set():
        protocol.emit("cancelled")
        return 130
    for warning in result.warnings:
        protocol.emit("warning", text=warning)
    output = folder / OUTPUT_FOLDER
    paths = write_result(result, output, fixed, mask)
    _atomic_pickle(result, output / RESULT_PICKLE)
    protocol.emit("result", stop_reason=result.stop_reason, moved=result.moved, iterations=count,
                  files={name: str(path) for name, path in paths.items()})
    return 0


def _study(job: dict, folder: Path, protocol: Protocol, cancel: threading.Event) -> int:
    from .jobs import OUTPUT_FOLDER, STUDY_PICKLE
    from .report import write_report
    from .study_runner import run_study
    from .variability import analyse

    spec = spec_from_dict(job["spec"])
    study_folder = Path(job["study_folder"])

    def progress(done: int, total: int, row: dict):
        protocol.emit("run", done=done, total=total, run_id=row["run_id"])

    workers = {"sequential": 1, "pool": job.get("workers") or os.cpu_count(), "dask": None}[job["executor"]]
    protocol.emit("plan", total=len(spec.runs()), executor=job["executor"], workers=workers)
    outcome = run_study(spec, folder / "fixed.nrrd", folder / "moving.nrrd", study_folder, executor=job["executor"],
                        workers=job.get("workers"), scheduler=job.get("scheduler"), progress=progress, cancel=cancel)
    for run_id, reason in outcome.failed.items():
        protocol.emit("warning", text=f"run {run_id} failed: {reason}")
    report = None
    if outcome.store.rows and not outcome.cancelled:
        analysis = analyse(outcome.store, output=study_folder / "report" / "maps",
                           mask=outcome.store.mask_array())
        paths = write_report(outcome.store, analysis, study_folder / "report")
        output = folder / OUTPUT_FOLDER
        output.mkdir(exist_ok=True)
        _atomic_pickle((analysis, paths), output / STUDY_PICKLE)
        report = str(paths["html"])
    protocol.emit("result", study_folder=str(study_folder), runs=len(outcome.store.rows),
                  completed=len(outcome.completed), skipped=len(outcome.skipped), failed=outcome.failed,
                  cancelled=outcome.cancelled, finished=outcome.finished, report=report)
    return 130 if outcome.cancelled else 0


def _accuracy(job: dict, folder: Path, protocol: Protocol, cancel: threading.Event) -> int:
    from .accuracy import CheckOptions, check_accuracy
    from .jobs import ACCURACY_PICKLE, OUTPUT_FOLDER

    def progress(candidate: str, done: int, total: int, row: dict):
        protocol.emit("run", candidate=candidate, done=done, total=total, run_id=row["run_id"])

    outcome = check_accuracy(folder / "fixed.nrrd", job["output"], from_dict(job["settings"]),
                             candidates=job["candidates"], options=CheckOptions(**job["options"]),
                             mask=folder / "mask.nrrd" if job["mask"] else None, executor=job["executor"],
                             workers=job.get("workers"), scheduler=job.get("scheduler"), progress=progress,
                             cancel=cancel)
    for note in outcome.notes:
        protocol.emit("warning", text=note)
    output = folder / OUTPUT_FOLDER
    output.mkdir(exist_ok=True)
    _atomic_pickle(outcome, output / ACCURACY_PICKLE)
    protocol.emit("result", folder=str(outcome.folder), cancelled=outcome.cancelled,
                  paths={name: str(path) for name, path in outcome.paths.items()})
    return 130 if outcome.cancelled else 0


def run_job(folder) -> int:
    """Run the job in ``folder``; the exit status is 0 (result), 130 (cancelled), 2 (bad input) or 1 (failure)."""
    protocol = Protocol()
    cancel = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: cancel.set())
    folder = Path(folder)
    try:
        job = json.loads((folder / "job.json").read_text())
        protocol.emit("started", kind=job["kind"], pid=os.getpid())
        kinds = {"registration": _registration, "study": _study, "accuracy": _accuracy}
        return kinds[job["kind"]](job, folder, protocol, cancel)
    except USER_ERRORS as error:
        protocol.emit("error", message=str(error), type=type(error).__name__)
        return 2
    except Exception as error:  # noqa: BLE001 - an engine failure (e.g. an ITK exception) is one message
        traceback.print_exc()
        lines = str(error).strip().splitlines()  # ITK's messages end with the one line that says what went wrong
        protocol.emit("error", message=f"{type(error).__name__}: {lines[-1] if lines else 'no message'}",
                      type=type(error).__name__)
        return 1
