"""Running a study: sequentially, on a local process pool (default), or on Dask distributed.

Workers only compute; the calling process writes every finished run to the study folder at once, so a
crash, a cancel or Ctrl-C keeps all finished runs, and running the same study again resumes it. A worker
that dies has its run retried on a fresh pool. Pools and Dask take one run per free worker from a
:class:`RunQueue`, which starts the costliest runs first, so that the last minutes are not one long run on one core.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import numbers
import os
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from . import registration, resources
from .images import check_pair, read_image
from .method import central_region_radius
from .settings import SettingsError, from_dict, to_dict
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


def check_executor(executor: str, scheduler: str | None = None, workers: int | None = None) -> None:
    """Refuse an unknown executor, a pool of fewer than one process, and Dask without the address of a running
    scheduler, before any work."""
    if executor not in EXECUTORS:
        raise SettingsError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers is not None and not (isinstance(workers, numbers.Integral) and workers >= 1):
        raise SettingsError(f"workers (pool processes) must be an integer >= 1, got {workers!r}")
    if executor == "dask" and not scheduler:
        raise SettingsError("the dask executor needs the address of a running Dask scheduler (e.g. tcp://host:8786); "
                            "on this machine alone use the default process pool")


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
    check_executor(executor, scheduler, workers)
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
    queue = RunQueue(pending, store.fixed_path)
    while queue and not cancel.is_set():
        if _pool_round(queue, store, workers, context, worker_cancel, finish, cancel, attempts, outcome) and queue:
            outcome.worker_restarts += 1


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
    """``runs`` with the costliest first (stable), so that a pool does not end with one long run on one core.

    Of equal estimates, native-unit runs at larger spacings go first: their first line search fails more often (its
    load grows with the spacing squared, docs/spacing-effect.md), and a failing search evaluates the metric up to
    line_search_maximum_evaluations times, so these are the runs that take longest when one does.
    """
    size = _read(str(fixed_path)).GetSize() if runs else ()
    return sorted(runs, key=lambda run: (-estimated_cost(run, size),
                                         0.0 if run.settings.normalised_units else -run.spacing))


class RunQueue:
    """Pending runs handed to free workers one at a time, the costliest first as far as the study knows by then.

    The repeats of one mode and spacing cost about the same, but what they cost shows only once one of them has run:
    a run whose first line search fails can take ten times as long as one that converges, which no estimate from the
    settings foresees. So one run of every group starts first (in :func:`longest_first` order), then runs of the
    group whose runs took, or are taking, longest: the long runs start early and short ones fill every core's end.
    """

    def __init__(self, runs: list[Run], fixed_path, clock: Callable[[], float] = time.monotonic):
        self.waiting = longest_first(runs, fixed_path)
        self.clock = clock
        self.started: dict[str, tuple[tuple, float]] = {}
        self.durations: dict[tuple, list[float]] = {}
        self.tried: set[tuple] = set()

    def __len__(self) -> int:
        return len(self.waiting)

    def take(self) -> Run:
        """The next run to start (the queue must not be empty)."""
        now = self.clock()
        untried = [run for run in self.waiting if _group(run) not in self.tried]
        run = untried[0] if untried else max(self.waiting, key=lambda r: self._seconds(_group(r), now))
        self.waiting.remove(run)
        self.tried.add(_group(run))
        self.started[run.run_id] = (_group(run), now)
        return run

    def finished(self, run: Run):
        group, start = self.started.pop(run.run_id)
        self.durations.setdefault(group, []).append(self.clock() - start)

    def put_back(self, run: Run):
        """``run`` did not finish (its worker died) and is to be started again."""
        self.started.pop(run.run_id, None)
        self.waiting.insert(0, run)

    def _seconds(self, group: tuple, now: float) -> float:
        """A run of ``group``: its finished runs' mean, at least as long as its runs still running have taken."""
        finished = self.durations.get(group, [])
        running = [now - start for key, start in self.started.values() if key == group]
        return max(running + ([sum(finished) / len(finished)] if finished else []), default=0.0)


def _group(run: Run) -> tuple:
    return run.mode, run.spacing


def _pool_round(queue: RunQueue, store, workers, context, worker_cancel, finish, cancel, attempts, outcome) -> bool:
    """Run ``queue`` on a fresh pool, one run per free worker; True when a worker died (the pool is then unusable and
    its unfinished runs are back in ``queue``, or failed after MAX_ATTEMPTS)."""
    broken, slots = False, min(workers, len(queue))
    with concurrent.futures.ProcessPoolExecutor(max_workers=slots, mp_context=context,
                                                initializer=_initialise_worker, initargs=(worker_cancel,)) as pool:
        running = {}
        while True:
            while queue and len(running) < slots and not broken and not cancel.is_set():
                run = queue.take()
                try:
                    running[pool.submit(_execute_in_worker, task_for(run, store))] = run
                except BrokenProcessPool:
                    queue.put_back(run)
                    broken = True
            if not running:
                return broken
            done, _ = concurrent.futures.wait(running, timeout=CANCEL_POLL_SECONDS,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                run = running.pop(future)
                try:
                    payload = future.result()
                except BrokenProcessPool:
                    broken = True
                    attempts[run.run_id] += 1
                    if attempts[run.run_id] >= MAX_ATTEMPTS:
                        outcome.failed[run.run_id] = f"its worker process died {MAX_ATTEMPTS} times"
                    else:
                        queue.put_back(run)
                    continue
                except concurrent.futures.CancelledError:
                    continue
                queue.finished(run)
                finish(payload)
            if cancel.is_set():
                worker_cancel.set()
                for future in running:
                    future.cancel()


def _run_on_dask(pending: list[Run], store, scheduler: str, finish, cancel, outcome: StudyOutcome):
    """One run per worker thread at a time (re-read as workers come and go), so that each free thread gets the run
    the :class:`RunQueue` picks by then."""
    from distributed import Client, as_completed

    queue = RunQueue(pending, store.fixed_path)
    with Client(scheduler) as client:
        client.run(_initialise_worker)
        running, completed = {}, as_completed()

        def fill():
            while queue and len(running) < max(1, sum(client.nthreads().values())):
                run = queue.take()
                key = f"spacingreg-{run.run_id}-{os.getpid()}"
                future = client.submit(execute_task, task_for(run, store), key=key, pure=False,
                                       retries=MAX_ATTEMPTS - 1)
                running[future] = run
                completed.add(future)

        fill()
        for future in completed:
            run = running.pop(future)
            queue.finished(run)
            try:
                finish(future.result())
            except Exception as error:  # noqa: BLE001 - a failed task is reported, the others go on
                outcome.failed[run.run_id] = f"{type(error).__name__}: {error}"
            if cancel.is_set():
                client.cancel(list(running))
                break
            fill()
