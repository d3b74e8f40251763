#!/usr/bin/env python
"""Study benchmark: the process pool against the report's sequential loop, and Dask's overhead per run.

    .venv/bin/python Testing/benchmarks/bench_study.py [--quick]

The baseline is what the report's user ran: a plain Python loop over spacings and repeats calling
SimpleITK with default threads. The pool runs the same registrations as a study (one worker per core,
one ITK thread each, mode native-reproducible), writing every run to its folder. Dask runs the same study
on a LocalCluster with as many single-threaded worker processes. Variants are interleaved and repeated;
the minimum wall time is kept, CPU time (this process and its finished children) is printed beside it.
Goal: pool / sequential <= 0.55 on 2 cores. Nothing is asserted. Spacing 10 is left out of the full study:
its runs spend most of their time in failing line searches, which measures libLBFGS, not the study machinery.
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

FULL = {"voxel_size_mm": 2.7, "spacings": (0.5, 1.0, 2.0, 4.0), "repeats": 3, "iterations": 3, "rounds": 2}
QUICK = {"voxel_size_mm": 4.0, "spacings": (1.0, 4.0), "repeats": 2, "iterations": 2, "rounds": 1}
GOAL = 0.55


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def seed_style_loop(fixed: sitk.Image, moving: sitk.Image, spacings, repeats: int, iterations: int):
    """The report's script: SetSpacing, then the bare registration with default threads, in a plain loop."""
    for spacing in spacings:
        for _ in range(repeats):
            f, m = sitk.Image(fixed), sitk.Image(moving)
            f.SetSpacing([spacing] * 3)
            m.SetSpacing([spacing] * 3)
            bare_method(f, iterations, work_units=None).Execute(f, m)


def timed(function) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    function()
    return time.perf_counter() - wall, cpu_seconds() - cpu


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
          f"default threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")

    from distributed import LocalCluster

    scratch = Path(tempfile.mkdtemp())
    results = {"sequential loop (default threads)": [], "pool study": [], "dask study": []}
    with LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        for round_index in range(config["rounds"]):
            results["sequential loop (default threads)"].append(timed(lambda: seed_style_loop(
                pair.fixed, pair.moving, spec.spacings, spec.repeats, config["iterations"])))
            for name, executor in (("pool study", "pool"), ("dask study", "dask")):
                folder = scratch / f"{executor}{round_index}"
                outcome = None

                def study():
                    nonlocal outcome
                    outcome = run_study(spec, pair.fixed, pair.moving, folder, executor=executor, workers=cores,
                                        scheduler=cluster.scheduler_address)

                results[name].append(timed(study))
                assert outcome.finished, f"{name} did not finish: {outcome.failed}"
                shutil.rmtree(folder)
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f} s" for k, v in results.items()))
    shutil.rmtree(scratch, ignore_errors=True)

    best = {name: min(values) for name, values in results.items()}
    baseline_wall = best["sequential loop (default threads)"][0]
    print(f"\n{'variant':36} {'wall s':>8} {'CPU s':>8} {'wall ratio':>10}")
    for name, (wall, cpu) in best.items():
        print(f"{name:36} {wall:8.1f} {cpu:8.1f} {wall / baseline_wall:10.3f}")
    pool_ratio = best["pool study"][0] / baseline_wall
    dask_overhead = (best["dask study"][0] - best["pool study"][0]) / runs
    print(f"\npool / sequential loop wall ratio: {pool_ratio:.3f} (goal <= {GOAL}) "
          f"{'MET' if pool_ratio <= GOAL else 'NOT MET'}")
    print(f"Dask overhead per run against the pool: {dask_overhead:+.3f} s "
          f"({dask_overhead / (best['pool study'][0] / runs):+.1%} of a run)")
    print("CPU time counts this process and its children once they have exited (pool workers; the Dask "
          "cluster's workers outlive the measurement, so the Dask CPU column misses them).")


if __name__ == "__main__":
    main()
