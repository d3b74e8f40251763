"""Running a study: sequentially, on a local process pool (default), or on Dask distributed.

Workers only compute; the calling process writes every finished run to the study folder at once, so a
crash, a cancel or Ctrl-C keeps all finished runs, and running the same study again resumes it. A worker
that dies has its run retried on a fresh pool. Pools and Dask get the costliest runs first
(:func:`longest_first`), so that the last minutes are not one long run on one core.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import threading
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from . import registration, resources
from .images import check_pair, read_image
from .method import central_region_radius
from .settings import from_dict, to_dict
from .study_spec import Run, StudySpec
from .study_store import StudyStore, create_or_open

EXECUTORS = ("sequential", "pool", "dask")
#: A run whose worker dies this many times is given up (and done again on the next resume).
MAX_ATTEMPTS = 3
#: How often a waiting pool checks the cancel event.
CANCEL_POLL_SECONDS = 0.2


@dataclass
class StudyOutcome:
    """What a call to :func:`run_study` did."""

    store: StudyStore
    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False
    worker_restarts: int = 0

    @property
    def finished(self) -> bool:
        return not self.cancelled and not self.failed and not self.store.pending()


ProgressCallback = Callable[[int, int, dict], None]


def task_for(run: Run, store: StudyStore) -> dict:
    """A picklable description of one run for a worker.

    Runs in a default-threads mode get this machine's default thread count explicitly, so that they run
    alike in any executor (pool workers default to one thread).
    """
    settings = run.settings
    if not settings.reproducible and settings.number_of_threads is None:
        settings = settings.replace(number_of_threads=sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())
    return {"run_id": run.run_id, "mode": run.mode, "spacing": run.spacing, "repeat": run.repeat, "seed": run.seed,
            "settings": to_dict(settings), "fixed": str(store.fixed_path), "moving": str(store.moving_path),
            "mask": str(store.mask_path) if store.mask_path.is_file() else None,
            "initial_transform": str(store.initial_path) if store.initial_path.is_file() else None}


@functools.lru_cache(maxsize=4)
def _read(path: str) -> sitk.Image:
    return read_image(path)


def execute_task(task: dict, cancel=None) -> dict:
    """Run one registration; the payload holds the summary, the trace and the transform's parameters."""
    mask = _read(task["mask"]) if task.get("mask") else None
    result = registration.run(_read(task["fixed"]), _read(task["moving"]), from_dict(task["settings"]), cancel=cancel,
                              mask=mask, initial_transform=task.get("initial_transform"))
    payload = {key: task[key] for key in ("run_id", "mode", "spacing", "repeat", "seed")}
    payload.update(cancelled=result.cancelled, summary=result.summary(),
                   trace=[dataclasses.asdict(record) for record in result.trace],
                   fixed_parameters=list(result.transform.GetFixedParameters()),
                   parameters=list(result.transform.GetParameters()))
    return payload


_worker_cancel = None


def _initialise_worker(cancel=None):
    """One ITK thread per worker process (the pool provides the parallelism); keep the shared cancel event."""
    global _worker_cancel
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _worker_cancel = cancel


def _execute_in_worker(task: dict) -> dict:
    return execute_task(task, _worker_cancel)


def run_study(spec: StudySpec, fixed, moving, output, executor: str = "pool", workers: int | None = None,
              scheduler: str | None = None, progress: ProgressCallback | None = None,
              cancel: threading.Event | None = None, memory_limit_bytes: int | None = None,
              truth=None, mask=None, initial_transform=None) -> StudyOutcome:
    """Run every pending run of ``spec`` on ``fixed``/``moving`` (images or file paths) into ``output``.

    ``executor``: ``sequential`` (in this process), ``pool`` (``workers`` processes, default one per
    core) or ``dask`` (``scheduler`` address of a Dask distributed scheduler). ``progress(done, total, row)``
    is called after each finished run; setting ``cancel`` stops the study, keeping what finished.
    Before the study folder is touched, every run's memory is estimated (times the pool's concurrent runs)
    against ``memory_limit_bytes`` (default: what this machine has available; Dask workers check their own).
    ``truth`` (a known deformation, see :func:`study_store.create_or_open`) is stored with the study; the
    analysis measures every run's error against it. ``mask`` (a fixed-image mask, see :mod:`masks`) is stored
    with the study too; every run's metric and statistics use it. ``initial_transform`` (a file or a transform,
    see :mod:`initial_transforms`) is stored with the study and composed before every run's BSpline; a resume
    need not name it again.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if executor == "dask" and not scheduler:
        raise ValueError("the dask executor needs a scheduler address")
    fixed = read_image(fixed, "fixed image") if isinstance(fixed, (str, Path)) else fixed
    moving = read_image(moving, "moving image") if isinstance(moving, (str, Path)) else moving
    check_pair(fixed, moving)
    if executor != "dask":
        concurrent = min(workers or os.cpu_count() or 1, len(spec.runs())) if executor == "pool" else 1
        for run in spec.runs():
            resources.check_registration_memory(fixed, moving, run.settings, memory_limit_bytes, concurrent)
    store = create_or_open(output, spec, fixed, moving, truth, mask, initial_transform)
    outcome = StudyOutcome(store, skipped=sorted(store.rows))
    pending = store.pending()
    total = len(spec.runs())
    cancel = cancel or threading.Event()

    def finish(payload: dict):
        if payload["cancelled"]:
            return
        row = store.record(payload)
        outcome.completed.append(row["run_id"])
        if progress is not None:
            progress(len(store.rows), total, row)

    try:
        if executor == "sequential":
            for run in pending:
                if cancel.is_set():
                    break
                finish(execute_task(task_for(run, store), cancel))
        elif executor == "pool":
            _run_on_pool(pending, store, workers or os.cpu_count() or 1, finish, cancel, outcome)
        else:
            _run_on_dask(pending, store, scheduler, finish, cancel, outcome)
    except KeyboardInterrupt:
        cancel.set()
    outcome.cancelled = cancel.is_set()
    return outcome


def _run_on_pool(pending: list[Run], store, workers: int, finish, cancel, outcome: StudyOutcome):
    attempts = {run.run_id: 0 for run in pending}
    context = multiprocessing.get_context("spawn")
    worker_cancel = context.Event()
    remaining = longest_first(pending, store.fixed_path)
    while remaining and not cancel.is_set():
        remaining = _pool_round(remaining, store, workers, context, worker_cancel, finish, cancel, attempts, outcome)


#: Rough costs (seconds) of one metric evaluation's parts, measured on 2 cores (SimpleITK 2.5, ITK 5.4): a
#: sampled Mattes MI value and derivative per sample, the scales estimator per transformed point (parameters x
#: central-region voxels x 2 per estimation), its learning-rate estimate per image voxel (while the iteration
#: counter is 0). Only their ratios matter: they order runs, they do not predict times.
SECONDS_PER_SAMPLE = 5e-6
SECONDS_PER_ESTIMATOR_POINT = 1.4e-6
SECONDS_PER_STEP_SCALE_VOXEL = 1.5e-6


def estimated_cost(run: Run, image_size) -> float:
    """A relative cost of one metric evaluation of ``run`` on an image of ``image_size`` voxels per axis."""
    settings = run.settings
    voxels = float(np.prod(image_size))
    samples = voxels if settings.sampling_strategy == "none" else voxels * settings.sampling_percentage / 100.0
    cost = samples * SECONDS_PER_SAMPLE
    if settings.scales_estimator != "none":
        region = float(np.prod([min(2 * central_region_radius(settings) + 1, n) for n in image_size]))
        parameters = len(image_size) * float(np.prod([m + 3 for m in settings.mesh_size]))
        cost += parameters * region * 2 * SECONDS_PER_ESTIMATOR_POINT + voxels * SECONDS_PER_STEP_SCALE_VOXEL
    return cost


def longest_first(runs: list[Run], fixed_path) -> list[Run]:
    """``runs`` with the costliest first (stable), so that a pool does not end with one long run on one core."""
    size = _read(str(fixed_path)).GetSize() if runs else ()
    return sorted(runs, key=lambda run: -estimated_cost(run, size))


def _pool_round(runs, store, workers, context, worker_cancel, finish, cancel, attempts, outcome) -> list[Run]:
    """Submit ``runs`` to a fresh pool; return the runs to retry because a worker died."""
    retry = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(runs)), mp_context=context,
                                                initializer=_initialise_worker, initargs=(worker_cancel,)) as pool:
        futures = {pool.submit(_execute_in_worker, task_for(run, store)): run for run in runs}
        waiting = set(futures)
        while waiting:
            done, waiting = concurrent.futures.wait(waiting, timeout=CANCEL_POLL_SECONDS,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                run = futures[future]
                try:
                    finish(future.result())
                except BrokenProcessPool:
                    attempts[run.run_id] += 1
                    if attempts[run.run_id] >= MAX_ATTEMPTS:
                        outcome.failed[run.run_id] = f"its worker process died {MAX_ATTEMPTS} times"
                    else:
                        retry.append(run)
                except concurrent.futures.CancelledError:
                    pass
            if cancel.is_set():
                worker_cancel.set()
                for future in waiting:
                    future.cancel()
    if retry:
        outcome.worker_restarts += 1
    return retry


def _run_on_dask(pending: list[Run], store, scheduler: str, finish, cancel, outcome: StudyOutcome):
    from distributed import Client, as_completed

    with Client(scheduler) as client:
        client.run(_initialise_worker)
        futures = {client.submit(execute_task, task_for(run, store), key=f"spacingreg-{run.run_id}-{os.getpid()}",
                                 pure=False, retries=MAX_ATTEMPTS - 1): run
                   for run in longest_first(pending, store.fixed_path)}
        for future in as_completed(futures):
            run = futures[future]
            try:
                finish(future.result())
            except Exception as error:  # noqa: BLE001 - a failed task is reported, the others go on
                outcome.failed[run.run_id] = f"{type(error).__name__}: {error}"
            if cancel.is_set():
                client.cancel(list(futures))
                break
