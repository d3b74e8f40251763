#!/usr/bin/env python
"""Job benchmark: a registration as a child-process job (what the panel and the web app run) against the same
registration in this process (what the console's computeRegistration runs).

    .venv/bin/python Testing/benchmarks/bench_jobs.py [--quick]

The job's wall time includes everything a user waits for: writing the inputs to the job folder, starting the
child Python, importing the library, the registration, the result files, and reading the result back. The two
variants are interleaved and repeated; the minimum wall time is kept, CPU time (this process and its finished
children) beside it. The worker thread the panel used before needed a GIL-slicing poll measured 1.4x slower
than in-process; goal for the job: ratio <= 1.2 on a registration of a few seconds. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SpacingRegistration"))

from SpacingRegistrationLib import jobs, registration, sample_data  # noqa: E402
from SpacingRegistrationLib.settings import RegistrationSettings  # noqa: E402

FULL = {"voxel_size_mm": 2.7, "iterations": 20, "rounds": 3}
QUICK = {"voxel_size_mm": 4.0, "iterations": 10, "rounds": 2}
GOAL = 1.2


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def timed(function) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    function()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def as_job(fixed, moving, settings):
    job = jobs.start_registration(fixed, moving, settings)
    job.wait()
    result = job.registration_result()
    job.remove_folder()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller pair, fewer iterations and rounds")
    options = parser.parse_args(argv)
    plan = QUICK if options.quick else FULL
    paths = sample_data.fetch_mni152()
    pair = sample_data.make_pet_like_pair(paths["gm"], paths["wm"], voxel_size_mm=plan["voxel_size_mm"])
    settings = RegistrationSettings(scales_estimator="none", reproducible=True).replace(
        lbfgs2={"number_of_iterations": plan["iterations"]})
    variants = {"in process": lambda: registration.run(pair.fixed, pair.moving, settings),
                "child-process job": lambda: as_job(pair.fixed, pair.moving, settings)}
    best = {name: (float("inf"), 0.0) for name in variants}
    for round_index in range(plan["rounds"]):
        for name, function in variants.items():
            wall, cpu = timed(function)
            print(f"round {round_index + 1} {name}: wall {wall:.2f} s, CPU {cpu:.2f} s", flush=True)
            if wall < best[name][0]:
                best[name] = (wall, cpu)
    ratio = best["child-process job"][0] / best["in process"][0]
    print(f"\nimage {list(pair.fixed.GetSize())} at {plan['voxel_size_mm']} mm, {plan['iterations']} iterations per "
          f"libLBFGS run, reproducible (one thread)")
    for name, (wall, cpu) in best.items():
        print(f"  {name:18s} min wall {wall:.2f} s (CPU {cpu:.2f} s)")
    print(f"  job / in process: {ratio:.2f} (goal <= {GOAL}: {'met' if ratio <= GOAL else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
