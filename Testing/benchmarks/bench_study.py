#!/usr/bin/env python
"""Study benchmark: the process pool against the report's sequential loop, and Dask's overhead per run.

    .venv/bin/python Testing/benchmarks/bench_study.py [--quick]

The baseline is what the report's user ran: a plain Python loop over spacings and repeats calling
SimpleITK with default threads (the reported set-up spends nearly all its time in the single-threaded scales
estimator, so default threads run it about as fast as one thread). The pool runs the same registrations as a study
(one worker per core, one ITK thread each, mode native-reproducible), with every run's diagnosis, writing every run
to its folder. Dask runs the same study on a LocalCluster with as many single-threaded worker processes. Variants
are interleaved and repeated; the minimum wall time is kept, CPU time beside it, and the load average beside every
round (other processes make the ratios unreliable). The full study is the report's (spacings 1, 4 and 10 mm) on the
demo's pair (47x56x49 voxels) with bounded iterations: the 10 mm runs never move, spending ten times as long in
failing line searches, which the scheduling has to start early enough to balance.

Where the pool's time goes is printed from its best round: the registrations' CPU (``Execute``, from the study's
rows), the rest of its CPU (each run's diagnosis, reading and recording; worker start-up; this process), and the
idle core-seconds (start-up, the last run alone on one core, other load). Goal: pool / sequential <= 0.55 on
2 cores. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SpacingRegistration"))

from bench_engine import bare_method  # noqa: E402  (this folder is on sys.path when run as a script)
from SpacingRegistrationLib import sample_data  # noqa: E402
from SpacingRegistrationLib.settings import RegistrationSettings  # noqa: E402
from SpacingRegistrationLib.study_runner import run_study  # noqa: E402
from SpacingRegistrationLib.study_spec import StudySpec  # noqa: E402

FULL = {"voxel_size_mm": 4.0, "spacings": (1.0, 4.0, 10.0), "repeats": 2, "iterations": 2, "rounds": 2}
QUICK = {"voxel_size_mm": 4.0, "spacings": (1.0, 4.0), "repeats": 2, "iterations": 2, "rounds": 1}
GOAL = 0.55
SEQUENTIAL = "sequential loop (default threads)"


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def load() -> str:
    return "load " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def seed_style_loop(fixed: sitk.Image, moving: sitk.Image, spacings, repeats: int, iterations: int):
    """The report's script: SetSpacing, then the bare registration with default threads, in a plain loop."""
    for spacing in spacings:
        for _ in range(repeats):
            f, m = sitk.Image(fixed), sitk.Image(moving)
            f.SetSpacing([spacing] * 3)
            m.SetSpacing([spacing] * 3)
            bare_method(f, iterations, work_units=None).Execute(f, m)


def _worker_cpu() -> float:
    times = os.times()
    return times.user + times.system


class Measured:
    """Wall and CPU seconds of one variant's round; a study's rows and the times its runs finished."""

    def __init__(self, function, workers=None):
        self.rows, self.finished = {}, []
        worker_cpu = (lambda: sum(workers.run(_worker_cpu).values())) if workers is not None else (lambda: 0.0)
        cpu, workers_before, self.start = cpu_seconds(), worker_cpu(), time.perf_counter()
        function(self)
        self.wall = time.perf_counter() - self.start
        self.cpu = cpu_seconds() - cpu + worker_cpu() - workers_before

    def progress(self, done, total, row):
        self.finished.append(time.perf_counter() - self.start)


def breakdown(measured: Measured, sequential_cpu: float, workers: int) -> list[str]:
    """Where a study's wall time went, in core-seconds of its ``workers`` cores."""
    rows = measured.rows.values()
    execute_cpu = sum(row["summary"]["timing"]["cpu_s"] for row in rows)
    runs = len(measured.rows)
    rest = measured.cpu - execute_cpu
    idle = workers * measured.wall - measured.cpu
    alone = measured.wall - measured.finished[-2] if len(measured.finished) > 1 else measured.wall
    return [f"{workers} cores x {measured.wall:.1f} s wall = {workers * measured.wall:.1f} core-s:",
            f"  registrations (Execute, from the rows)  {execute_cpu:7.1f} CPU s "
            f"(the sequential loop: {sequential_cpu:.1f} CPU s)",
            f"  the rest (diagnosis, reads, records, start-up)  {rest:7.1f} CPU s = {rest / runs:.2f} s per run",
            f"  idle (start-up, tail, other load)  {idle:7.1f} core-s; the last run ran alone for {alone:.1f} s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small version (about a minute)")
    config = QUICK if parser.parse_args().quick else FULL
    paths = sample_data.fetch_mni152()
    pair = sample_data.make_pet_like_pair(paths["gm"], paths["wm"], voxel_size_mm=config["voxel_size_mm"])
    size = pair.fixed.GetSize()
    spec = StudySpec(settings=RegistrationSettings().replace(lbfgs2={"number_of_iterations": config["iterations"]}),
                     spacings=config["spacings"], repeats=config["repeats"], modes=("native-reproducible",))
    runs = len(spec.runs())
    cores = os.cpu_count() or 1
    print(f"pair {list(size)} voxels; study {len(spec.spacings)} spacings x {spec.repeats} repeats = {runs} runs, "
          f"reported set-up with LBFGS2 numberOfIterations={config['iterations']}; {cores} cores; "
          f"default threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}; {load()}")

    from distributed import Client, LocalCluster

    scratch = Path(tempfile.mkdtemp())
    results = {SEQUENTIAL: [], "pool study": [], "dask study": []}
    with LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as workers:
        for round_index in range(config["rounds"]):
            results[SEQUENTIAL].append(Measured(lambda _: seed_style_loop(
                pair.fixed, pair.moving, spec.spacings, spec.repeats, config["iterations"])))
            for name, executor in (("pool study", "pool"), ("dask study", "dask")):
                folder = scratch / f"{executor}{round_index}"

                def study(measured):
                    outcome = run_study(spec, pair.fixed, pair.moving, folder, executor=executor, workers=cores,
                                        scheduler=cluster.scheduler_address, progress=measured.progress)
                    assert outcome.finished, f"{name} did not finish: {outcome.failed}"
                    measured.rows = outcome.store.rows

                results[name].append(Measured(study, workers if executor == "dask" else None))
                shutil.rmtree(folder)
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1].wall:.1f} s wall {v[-1].cpu:.1f} s CPU"
                                                          for k, v in results.items()) + f"; {load()}", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)

    best = {name: min(values, key=lambda m: m.wall) for name, values in results.items()}
    baseline = best[SEQUENTIAL]
    print(f"\n{'variant':36} {'wall s':>8} {'CPU s':>8} {'wall ratio':>10}")
    for name, measured in best.items():
        print(f"{name:36} {measured.wall:8.1f} {measured.cpu:8.1f} {measured.wall / baseline.wall:10.3f}")
    pool_ratio = best["pool study"].wall / baseline.wall
    print("\npool study, best round: " + "\n".join(breakdown(best["pool study"], baseline.cpu, cores)))
    dask_overhead = (best["dask study"].wall - best["pool study"].wall) / runs
    dask_cpu = (best["dask study"].cpu - best["pool study"].cpu) / runs
    print(f"\npool / sequential loop wall ratio: {pool_ratio:.3f} (goal <= {GOAL}) "
          f"{'MET' if pool_ratio <= GOAL else 'NOT MET'}; {load()}")
    print(f"Dask overhead per run against the pool: {dask_overhead:+.3f} s wall "
          f"({dask_overhead / (best['pool study'].wall / runs):+.1%} of a run), {dask_cpu:+.3f} s CPU "
          "(Dask CPU counts this process and the cluster's workers)")


if __name__ == "__main__":
    main()
