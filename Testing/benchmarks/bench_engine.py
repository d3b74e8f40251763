#!/usr/bin/env python
"""Benchmark of the SpacingRegistration engine against a bare SimpleITK script (problem.md items 6, 8, 10).

    .venv/bin/python Testing/benchmarks/bench_engine.py [--quick]

1. Engine overhead: ``registration.run()`` against a bare SimpleITK script doing the same registration in
   the same process (same images and settings, one work unit for both, so the work is identical and the
   results must be bit-identical), interleaved and repeated; minimum wall and CPU times, and where the
   engine's time outside ``Execute`` goes (instrumented run).
2. Peak memory of each, in a fresh subprocess (this file with a hidden flag): the peak RSS after the run
   minus the peak RSS after the imports and reading the images. Both ``ru_maxrss`` and ``VmHWM`` are
   printed; the ratio uses ``VmHWM`` because a child's ``ru_maxrss`` starts at the parent's peak on Linux.
3. Where the time of a BSpline/LBFGS2 run goes (process CPU time, one work unit): one metric evaluation,
   one physical-shift scales estimation, one step-scale (learning-rate) estimation, and the share of an
   LBFGS2 run spent in evaluations that do not end in an iteration event (libLBFGS start evaluations and
   rejected line-search trials), resolved from CPU-clock-stamped iteration events.
4. The post-run diagnosis's cost against the registration's (``run()`` outside ``Execute`` / ``Execute``) on a
   ~64^3 pair, for the fast equivalent (goal <= 10 %) and the reported set-up (goal <= 3 %); --diagnosis-only
   runs this section alone.

Timings are printed, never asserted. Full mode uses a pair of at least 96 voxels per axis (1.7 mm
voxels) and bounded LBFGS2 iterations; --quick runs everything at 4 mm with fewer iterations.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SpacingRegistration"))

from SpacingRegistrationLib import diagnostics, images, method, probes, registration, sample_data  # noqa: E402
from SpacingRegistrationLib.settings import Lbfgs2Settings, RegistrationSettings  # noqa: E402

FULL = {"voxel_size_mm": 1.7, "iterations": 5, "repeats": 3, "metric_iterations": 11, "component_repeats": 3}
QUICK = {"voxel_size_mm": 4.0, "iterations": 2, "repeats": 3, "metric_iterations": 11, "component_repeats": 3}
MINIMUM_FULL_SIZE = 96
GOALS = {"wall": 1.03, "cpu": 1.03, "memory": 1.3}
MESH_SIZE = [2, 2, 2]


# --------------------------------------------------------------------------------------------------------
# The two registrations
# --------------------------------------------------------------------------------------------------------

def engine_settings(iterations: int) -> RegistrationSettings:
    """The reported set-up (the defaults), bounded iterations, one work unit."""
    return RegistrationSettings(number_of_work_units=1, lbfgs2=Lbfgs2Settings(number_of_iterations=iterations))


def bare_method(fixed: sitk.Image, iterations: int, work_units: int | None = 1) -> sitk.ImageRegistrationMethod:
    """What a user would write: Mattes 50, REGULAR 2.5 % seed 1, linear, LBFGS2 defaults, physical shift
    (``work_units`` None: SimpleITK's default threads)."""
    R = sitk.ImageRegistrationMethod()
    R.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    R.SetMetricSamplingStrategy(R.REGULAR)
    R.SetMetricSamplingPercentage(0.025, 1)
    R.SetInterpolator(sitk.sitkLinear)
    R.SetOptimizerAsLBFGS2(numberOfIterations=iterations)
    R.SetOptimizerScalesFromPhysicalShift()
    if work_units is not None:
        R.SetNumberOfWorkUnits(work_units)
    R.SetInitialTransform(sitk.BSplineTransformInitializer(fixed, MESH_SIZE), inPlace=True)
    return R


def bare_run(fixed: sitk.Image, moving: sitk.Image, iterations: int) -> sitk.Transform:
    return bare_method(fixed, iterations).Execute(fixed, moving)


def engine_run(fixed: sitk.Image, moving: sitk.Image, iterations: int) -> registration.RegistrationResult:
    return registration.run(fixed, moving, engine_settings(iterations))


def timed(function, *args):
    """(result, wall s, process CPU s) of one call, after a garbage collection."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def parameters(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(transform.GetParameters()), np.asarray(transform.GetFixedParameters())


# --------------------------------------------------------------------------------------------------------
# Instrumentation of the engine (wraps module attributes in this process only; restored afterwards)
# --------------------------------------------------------------------------------------------------------

class CallProfiler:
    """Inclusive wall time per (function, call site), with the nesting depth of its first call."""

    def __init__(self):
        self.records: dict[tuple[str, str], list] = {}
        self.depth = 0
        self.restore: list[tuple[object, str, object]] = []

    def wrap(self, owner, name: str, label: str):
        original = getattr(owner, name)
        profiler = self

        def wrapper(*args, **kwargs):
            frame = sys._getframe(1)
            site = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
            record = profiler.records.setdefault((label, site), [0, 0.0, profiler.depth])
            profiler.depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                record[1] += time.perf_counter() - start
                record[0] += 1
                profiler.depth -= 1

        setattr(owner, name, wrapper)
        self.restore.append((owner, name, original))

    def __enter__(self):
        targets = [
            (images, "check_pair"), (registration, "initial_bspline"), (method, "build_method"),
            (sitk.ImageRegistrationMethod, "Execute"), (sitk.ImageRegistrationMethod, "MetricEvaluate"),
            (probes, "sampled_metric"), (diagnostics, "optimizer_report"), (diagnostics, "lbfgs2_report"),
            (probes, "metric_value_and_gradient"), (probes, "plausibility_metric"), (probes, "scales_estimation_seconds"), (diagnostics, "estimator_report"), (probes, "max_shift"), (probes, "slope_along"),
            (registration, "_assemble"), (registration, "_coefficients"), (registration, "displacement_array"),
            (registration, "field_statistics"), (registration, "grid_geometry"), (registration, "_plausibility"),
            (registration, "minimum_jacobian_determinant"),
            (diagnostics, "warnings_for"),
        ]
        for owner, name in targets:
            prefix = owner.__name__.split(".")[-1]
            self.wrap(owner, name, f"{prefix}.{name}")
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self.restore):
            setattr(owner, name, original)
        self.restore.clear()


# --------------------------------------------------------------------------------------------------------
# Section 1: engine overhead
# --------------------------------------------------------------------------------------------------------

def section_overhead(fixed, moving, config) -> dict:
    iterations, repeats = config["iterations"], config["repeats"]
    print(f"\n=== 1. Engine overhead: run() vs bare SimpleITK, same process, {repeats} interleaved repeats ===")
    print(f"    LBFGS2 numberOfIterations={iterations} (per libLBFGS run), SetNumberOfWorkUnits(1) for both")
    print("    (the last engine run is instrumented: ~20 Python wrapper calls around engine functions, microseconds)")
    rows, engine_results, bare_transforms = [], [], []
    profiler = CallProfiler()
    for repeat in range(repeats):
        order = ("engine", "bare") if repeat % 2 == 0 else ("bare", "engine")
        row = {"repeat": repeat}
        for which in order:
            if which == "engine":
                last = repeat == repeats - 1
                with profiler if last else contextlib.nullcontext():
                    result, wall, cpu = timed(engine_run, fixed, moving, iterations)
                if last:
                    profiled_wall = wall
                engine_results.append(result)
                row.update(engine_wall=wall, engine_cpu=cpu, engine_execute=result.timing["total_s"],
                           engine_execute_cpu=result.timing["cpu_s"])
            else:
                transform, wall, cpu = timed(bare_run, fixed, moving, iterations)
                bare_transforms.append(transform)
                row.update(bare_wall=wall, bare_cpu=cpu)
        rows.append(row)
        print(f"    repeat {repeat} ({order[0]} first): engine wall {row['engine_wall']:7.3f} s  cpu "
              f"{row['engine_cpu']:7.3f} s  (Execute wall {row['engine_execute']:7.3f} s, cpu {row['engine_execute_cpu']:7.3f} s) | bare wall "
              f"{row['bare_wall']:7.3f} s  cpu {row['bare_cpu']:7.3f} s")

    reference, reference_fixed = parameters(bare_transforms[0])
    identical = all(np.array_equal(parameters(t)[0], reference) and np.array_equal(parameters(t)[1], reference_fixed)
                    for t in bare_transforms + [r.transform for r in engine_results])
    worst = max(float(np.abs(parameters(t)[0] - reference).max())
                for t in bare_transforms + [r.transform for r in engine_results])
    first = engine_results[0]
    print(f"    results: {'bit-identical' if identical else 'NOT bit-identical'} parameters across all "
          f"{2 * repeats} runs ({reference.size} parameters, max |difference| {worst:.3g} mm, "
          f"max |coefficient| {np.abs(reference).max():.4g} mm); engine: iterations per libLBFGS run "
          f"{first.iterations_per_run}, stop '{first.stop_description}'")

    best = {key: min(row[key] for row in rows) for key in rows[0] if key != "repeat"}
    outside = [row["engine_wall"] - row["engine_execute"] for row in rows]
    summary = {
        "identical": identical,
        "engine_wall": best["engine_wall"], "engine_cpu": best["engine_cpu"],
        "bare_wall": best["bare_wall"], "bare_cpu": best["bare_cpu"],
        "engine_execute": best["engine_execute"],
        "wall_ratio": best["engine_wall"] / best["bare_wall"],
        "cpu_ratio": best["engine_cpu"] / best["bare_cpu"],
        "execute_ratio": best["engine_execute"] / best["bare_wall"],
        "outside_execute": min(outside),
    }
    print(f"    minimum over repeats     engine        bare    engine/bare (goal <= {GOALS['wall']})")
    print(f"      wall              {summary['engine_wall']:9.3f} s {summary['bare_wall']:9.3f} s   "
          f"{summary['wall_ratio']:.3f}")
    print(f"      CPU               {summary['engine_cpu']:9.3f} s {summary['bare_cpu']:9.3f} s   "
          f"{summary['cpu_ratio']:.3f}")
    summary["execute_cpu_ratio"] = best["engine_execute_cpu"] / best["bare_cpu"]
    print(f"      Execute only      {summary['engine_execute']:9.3f} s {summary['bare_wall']:9.3f} s   "
          f"{summary['execute_ratio']:.3f}   (engine timing['total_s'] vs bare wall: observer cost)")
    print(f"      Execute CPU       {best['engine_execute_cpu']:9.3f} s {summary['bare_cpu']:9.3f} s   "
          f"{summary['execute_cpu_ratio']:.3f}   (engine timing['cpu_s'] vs bare CPU)")
    print(f"    engine time outside Execute = wall of run() - timing['total_s']: min {min(outside):.3f} s, "
          f"max {max(outside):.3f} s ({min(outside) / summary['engine_wall']:.1%} of run())")

    summary["breakdown"] = print_profile(profiler, profiled_wall)
    return summary


def print_profile(profiler: CallProfiler, total: float) -> list:
    """Inclusive time per engine step and call site of the instrumented run."""
    print(f"    where run() time goes (instrumented run, {total:.3f} s; inclusive times, indented = "
          "called from the line above; call site = file:line of the call):")
    rows = []
    for (label, site), (count, seconds, depth) in profiler.records.items():
        rows.append((label, site, count, seconds, depth))
        print(f"      {'  ' * depth}{label:<{44 - 2 * depth}} {site:<20} x{count:<3} {seconds:8.3f} s "
              f"{seconds / total:6.1%}")
    main_execute = sum(s for label, site, c, s, d in rows if label.endswith(".Execute") and d == 0)
    print(f"      outside the registration's own Execute: {total - main_execute:.3f} s "
          f"({(total - main_execute) / total:.1%} of run())")
    return rows


# --------------------------------------------------------------------------------------------------------
# Section 2: peak memory, each in a fresh subprocess
# --------------------------------------------------------------------------------------------------------

def peak_rss_kb() -> dict[str, int]:
    """Peak resident set size so far, two ways (kB on Linux).

    ``ru_maxrss`` is the brief's measure, but Linux carries the parent's high-water mark into a child across
    fork + exec (``signal->maxrss`` is updated from the old mm in exec), so in a child started from this big
    parent it starts at the parent's peak. ``VmHWM`` (/proc/self/status) belongs to the child's own address
    space, created at exec, so it is the one the ratio uses.
    """
    values = {"ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":")
                values[f"{key}_kb"] = int(value.split()[0])
    except OSError:
        pass
    return values


def memory_child(which: str, directory: str, iterations: int):
    """Hidden mode: read the pair, measure the peak RSS, run one registration, measure again."""
    fixed = sitk.ReadImage(str(Path(directory) / "fixed.mha"))
    moving = sitk.ReadImage(str(Path(directory) / "moving.mha"))
    gc.collect()
    report = {"which": which, "baseline": peak_rss_kb()}
    if which == "engine":
        original = probes.sampled_metric  # its first call comes right after Execute (registration.run)

        def first_call_marks_execute_end(*args, **kwargs):
            report.setdefault("after_execute", peak_rss_kb())
            return original(*args, **kwargs)

        probes.sampled_metric = first_call_marks_execute_end
        engine_run(fixed, moving, iterations)
    else:
        bare_run(fixed, moving, iterations)
    report["peak"] = peak_rss_kb()
    print(json.dumps(report))


def section_memory(fixed, moving, config) -> dict:
    print("\n=== 2. Peak memory: peak RSS after the run minus after imports + reading the pair, fresh subprocess each ===")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_engine_") as directory:
        sitk.WriteImage(fixed, str(Path(directory) / "fixed.mha"))
        sitk.WriteImage(moving, str(Path(directory) / "moving.mha"))
        for which in ("engine", "bare"):
            command = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", which, directory,
                       str(config["iterations"])]
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode != 0:
                raise RuntimeError(f"memory child '{which}' failed:\n{completed.stderr}")
            results[which] = json.loads(completed.stdout.strip().splitlines()[-1])
    image_mb = 2 * fixed.GetNumberOfPixels() * 4 / 1024**2
    key = "VmHWM_kb" if "VmHWM_kb" in results["bare"]["peak"] else "ru_maxrss_kb"
    for which in ("engine", "bare"):
        r = results[which]
        base, peak = r["baseline"], r["peak"]
        extra = (peak[key] - base[key]) / 1024
        line = (f"    {which:<6} {key[:-3]}: baseline {base[key] / 1024:7.1f} MB, peak {peak[key] / 1024:7.1f} MB, "
                f"peak - baseline {extra:6.1f} MB")
        if "after_execute" in r:
            line += f" (up to the end of Execute {(r['after_execute'][key] - base[key]) / 1024:.1f} MB)"
        print(line)
        print(f"           ru_maxrss: baseline {base['ru_maxrss_kb'] / 1024:7.1f} MB, peak "
              f"{peak['ru_maxrss_kb'] / 1024:7.1f} MB, peak - baseline "
              f"{(peak['ru_maxrss_kb'] - base['ru_maxrss_kb']) / 1024:6.1f} MB")
        r["extra_mb"] = extra
    if key == "VmHWM_kb":
        print("    (ru_maxrss in a child starts at the parent's peak: Linux carries it across fork + exec, so the")
        print("     ratio uses VmHWM, the child's own high-water mark; the two agree once the child exceeds the parent)")
    ratio = results["engine"]["extra_mb"] / results["bare"]["extra_mb"] if results["bare"]["extra_mb"] > 0 \
        else float("inf")
    print(f"    ratio engine/bare of (peak - baseline): {ratio:.3f} (goal <= {GOALS['memory']}); "
          f"for scale, the two input images are {image_mb:.1f} MB (float32)")
    return {"ratio": ratio, **{f"{k}_mb": v["extra_mb"] for k, v in results.items()}}


# --------------------------------------------------------------------------------------------------------
# Section 3: where the time of a run goes
# --------------------------------------------------------------------------------------------------------

def gradient_descent_seconds(fixed, moving, iterations: int, scales: bool, learning_rate: str) -> float:
    """Process CPU time of a learning-rate-0 gradient descent (same metric set-up, one work unit; CPU time so
    that other load on the machine does not enter the differences)."""
    R = sitk.ImageRegistrationMethod()
    R.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    R.SetMetricSamplingStrategy(R.REGULAR)
    R.SetMetricSamplingPercentage(0.025, 1)
    R.SetInterpolator(sitk.sitkLinear)
    estimate = {"never": R.Never, "once": R.Once}[learning_rate]
    R.SetOptimizerAsGradientDescent(learningRate=0.0, numberOfIterations=iterations, estimateLearningRate=estimate)
    if scales:
        R.SetOptimizerScalesFromPhysicalShift()
    R.SetNumberOfWorkUnits(1)
    R.SetInitialTransform(sitk.BSplineTransformInitializer(fixed, MESH_SIZE), inPlace=True)
    gc.collect()
    start = time.process_time()
    R.Execute(fixed, moving)
    return time.process_time() - start


def dense_metric_seconds(fixed, moving) -> float:
    """One MetricEvaluate over every voxel at the identity (what the engine's plausibility check runs twice)."""
    R = sitk.ImageRegistrationMethod()
    R.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    R.SetMetricSamplingStrategy(R.NONE)
    R.SetInterpolator(sitk.sitkLinear)
    R.SetNumberOfWorkUnits(1)
    R.SetInitialTransform(sitk.BSplineTransformInitializer(fixed, MESH_SIZE), inPlace=False)
    gc.collect()
    start = time.process_time()
    R.MetricEvaluate(fixed, moving)
    return time.process_time() - start


def section_components(fixed, moving, config) -> dict:
    n, repeats = config["metric_iterations"], config["component_repeats"]
    print(f"\n=== 3. Where the time goes ({'x'.join(map(str, fixed.GetSize()))} voxels, "
          f"{fixed.GetSpacing()[0]:g} mm, one work unit) ===")
    print("    method: gradient descent with learning rate 0 and the same metric set-up, process CPU time (one work "
          f"unit), minimum of {repeats} repeats each;")
    print(f"      metric evaluation M = (T_GD({n} it) - T_GD(1 it)) / {n - 1}   [GetValueAndDerivative on the samples]")
    print("      scales estimation E = (T_GD(1 it, physical shift) - T_GD(1 it)) / 2   [ITK estimates the scales")
    print("        twice in StartOptimization: GradientDescentOptimizerBasev4 and ObjectToObjectOptimizerBase]")
    print("      step-scale estimation S = T_GD(1 it, physical shift, learning rate Once) - T_GD(1 it, physical shift)")
    print("        [EstimateStepScale: the largest shift of the gradient over every voxel (full-domain sampling)]")
    timings = {}
    for key, args in (("gd1", (1, False, "never")), ("gdn", (n, False, "never")),
                      ("scales", (1, True, "never")), ("scales_once", (1, True, "once"))):
        timings[key] = min(gradient_descent_seconds(fixed, moving, *args) for _ in range(repeats))
    dense = min(dense_metric_seconds(fixed, moving) for _ in range(repeats))
    M = (timings["gdn"] - timings["gd1"]) / (n - 1)
    setup = timings["gd1"] - M
    E = (timings["scales"] - timings["gd1"]) / 2
    S = timings["scales_once"] - timings["scales"]
    print(f"    T_GD(1) {timings['gd1']:.4f} s, T_GD({n}) {timings['gdn']:.4f} s, T_GD(1, shift) {timings['scales']:.4f} s, "
          f"T_GD(1, shift, Once) {timings['scales_once']:.4f} s")
    print(f"    one metric evaluation (sampled, value + derivative) M = {M * 1000:9.2f} ms")
    print(f"    one physical-shift scales estimation           E = {E * 1000:9.2f} ms  ({E / M:.0f} x M)")
    print(f"    one step-scale (learning-rate) estimation      S = {S * 1000:9.2f} ms  ({S / M:.0f} x M)")
    print(f"    Execute set-up without optimisation (T_GD(1) - M)  = {setup * 1000:9.2f} ms")
    print(f"    one dense MetricEvaluate (every voxel)              = {dense * 1000:9.2f} ms  ({dense / M:.0f} x M)")
    print("    LBFGS2 (ITK 5.4 LBFGS2Optimizerv4::EvaluateCost) pays per metric evaluation: M, then S while the "
          "iteration counter is 0,")
    print("    then E again (EstimateScalesAtEachIteration): c = M + E, or c0 = M + E + S; E is estimated twice "
          "more at the start.")
    c, c0 = M + E, M + E + S
    print(f"    => per evaluation c = {c * 1000:.1f} ms (scales {E / c:.1%}), c0 = {c0 * 1000:.1f} ms "
          f"(scales + step scale {(E + S) / c0:.1%})")
    components = {"M": M, "E": E, "S": S, "setup": setup, "dense": dense, "c": c, "c0": c0}
    components.update(lbfgs2_timeline(fixed, moving, config["iterations"], components))
    return components


def lbfgs2_timeline(fixed, moving, iterations, k) -> dict:
    """Bare LBFGS2 run with iteration events stamped on the process CPU clock; each interval between events
    is resolved into metric evaluations with the per-evaluation costs measured above."""
    R = bare_method(fixed, iterations)
    events = []
    R.AddCommand(sitk.sitkIterationEvent, lambda: events.append((time.process_time(), R.GetOptimizerIteration())))
    gc.collect()
    start, wall = time.process_time(), time.perf_counter()
    R.Execute(fixed, moving)
    end, wall = time.process_time(), time.perf_counter() - wall
    total = end - start
    cap = 40   # SetOptimizerAsLBFGS2's default lineSearchMaximumEvaluations
    start_overhead = k["setup"] + 2 * k["E"]

    # gaps: start -> event 0, event j-1 -> event j, last event -> end. The evaluations of a gap all see the
    # iteration counter of the previous event (0 at the start), which decides whether S is paid.
    times = [start] + [t for t, _ in events] + [end]
    counters = [0] + [it for _, it in events]
    restarts = [j for j in range(1, len(events)) if events[j][1] <= events[j - 1][1]]
    run_starts = {0: 1}
    if restarts:
        run_starts[restarts[0]] = run_starts.get(restarts[0], 0) + 1
    else:
        run_starts[len(events)] = run_starts.get(len(events), 0) + 1   # second libLBFGS run began after the last event
    gaps = []
    for j in range(len(times) - 1):
        seconds = times[j + 1] - times[j]
        unit = k["c0"] if counters[j] == 0 else k["c"]
        work = seconds - (start_overhead if j == 0 else 0.0)
        evaluations = work / unit
        accepted = 1 if j < len(events) else 0
        gaps.append({"seconds": seconds, "unit": unit, "evaluations": evaluations, "rounded": max(0, round(evaluations)),
                     "accepted": accepted, "starts": run_starts.get(j, 0)})
    n_eval = sum(g["rounded"] for g in gaps)
    n_events = len(events)
    rejected = sum(max(0, g["rounded"] - g["accepted"] - g["starts"]) for g in gaps)
    rejected_seconds = sum(max(0, g["rounded"] - g["accepted"] - g["starts"]) * g["unit"] for g in gaps)
    not_event_seconds = sum(max(0, g["rounded"] - g["accepted"]) * g["unit"] for g in gaps)
    n_s = sum(g["rounded"] for g, cnt in zip(gaps, counters) if cnt == 0)
    residual = max(abs(g["evaluations"] - g["rounded"]) for g in gaps)
    scales_seconds = 2 * k["E"] + n_eval * k["E"] + n_s * k["S"]
    metric_seconds = n_eval * k["M"]
    explained = start_overhead + n_eval * k["c"] + n_s * k["S"]
    simple = (total - start_overhead - n_events * k["c"]) / total

    print(f"    LBFGS2 run (bare, numberOfIterations={iterations}): {total:.3f} s CPU ({wall:.3f} s wall), {n_events} "
          f"iteration events {[it for _, it in events]}, stop '{R.GetOptimizerStopConditionDescription()}'")
    print("    method: SimpleITK has no metric-evaluation event, so each interval between iteration events is divided")
    print("      by the cost of one evaluation (c0 while the counter is 0, else c; the first interval minus set-up + 2E);")
    print("      evaluations not ending in an event = libLBFGS start evaluations (one per libLBFGS run) + rejected")
    print("      line-search trials (incl. a final failing line search)")
    print("      interval      CPU seconds  evaluations (unit)   -> rounded, ending in event, run starts")
    for j, g in enumerate(gaps):
        name = "start->ev0" if j == 0 else (f"ev{j - 1}->ev{j}" if j < len(events) else f"ev{j - 1}->end")
        if not events:
            name = "start->end"
        searches = max(1, g["accepted"]) + (g["starts"] if j > 0 else 0)   # line searches in this interval
        flag = f"  (> {cap} x line searches: the unit is too small here)" if g["rounded"] > cap * searches + g["starts"] \
            else ""
        print(f"      {name:<14} {g['seconds']:8.3f}  {g['evaluations']:8.2f} ({'c0' if g['unit'] == k['c0'] else 'c '})"
              f"        -> {g['rounded']:3d}, {g['accepted']}, {g['starts']}{flag}")
    singles = [g["seconds"] / g["unit"] for g in gaps[1:] if g["rounded"] == 1]
    print(f"    largest distance of an interval from a whole number of evaluations: {residual:.2f} "
          f"(model check; explained {explained:.3f} s of {total:.3f} s)")
    if singles:
        print(f"    one-evaluation intervals took {min(singles):.3f}..{max(singles):.3f} x the unit measured with "
              "gradient descent (in-run cost check)")
    print(f"    evaluations {n_eval}: {n_events} ending in an iteration event, {n_eval - n_events} not "
          f"({n_eval - n_events - rejected} libLBFGS start(s), {rejected} rejected line-search trial(s))")
    print(f"    share of the run in evaluations that do not end in an iteration event: {not_event_seconds / total:.1%} "
          f"(rejected line-search trials alone {rejected_seconds / total:.1%}); simple estimate "
          f"(total - set-up - 2E - events x c) / total = {simple:.1%}")
    print(f"    share of the run in scales estimation (2E + evaluations x E + {n_s} x S): {scales_seconds / total:.1%}; "
          f"in the metric itself (evaluations x M): {metric_seconds / total:.1%}")
    return {"lbfgs_total": total, "evaluations": n_eval, "events": n_events, "rejected": rejected,
            "not_event_share": not_event_seconds / total, "rejected_share": rejected_seconds / total,
            "scales_share": scales_seconds / total, "metric_share": metric_seconds / total, "residual": residual}


# --------------------------------------------------------------------------------------------------------
# Section 4: what the post-run diagnosis costs against the registration (issue 10 §2)
# --------------------------------------------------------------------------------------------------------

DIAGNOSIS_GOALS = {"physical_shift_fast": 0.10, "physical_shift": 0.03}
DIAGNOSIS_VOXEL_SIZE_MM = 3.0   # about 64^3 voxels (59 x 71 x 62)


def section_diagnosis(rounds: int) -> dict:
    """run() wall time outside Execute (probes, fields, Jacobian, grid, estimator timing, warnings) over
    Execute's wall time, for the fast equivalent (minimum of ``rounds``) and the reported set-up (one run: it
    takes minutes), complete runs in reproducible mode on a ~64^3 pair."""
    paths = sample_data.fetch_mni152()
    pair = sample_data.make_pet_like_pair(paths["gm"], paths["wm"], voxel_size_mm=DIAGNOSIS_VOXEL_SIZE_MM)
    print(f"\n=== 4. Diagnosis cost: run() outside Execute / Execute, {'x'.join(map(str, pair.fixed.GetSize()))} voxels, "
          "reproducible mode, complete runs ===")
    results = {}
    for estimator, repeats in (("physical_shift_fast", rounds), ("physical_shift", 1)):
        rows = []
        for _ in range(repeats):
            result, wall, cpu = timed(registration.run, pair.fixed, pair.moving,
                                      RegistrationSettings(reproducible=True, scales_estimator=estimator))
            rows.append((wall - result.timing["total_s"], result.timing["total_s"], wall, cpu))
            print(f"    {estimator:<20} run() {wall:8.2f} s (CPU {cpu:8.2f} s), Execute {result.timing['total_s']:8.2f} s, "
                  f"diagnosis {rows[-1][0]:.3f} s, iterations {result.iterations_per_run}")
        diagnosis = min(r[0] for r in rows)
        execute = min(r[1] for r in rows)
        ratio = diagnosis / execute
        goal = DIAGNOSIS_GOALS[estimator]
        results[estimator] = {"diagnosis": diagnosis, "execute": execute, "ratio": ratio, "goal": goal}
        print(f"    {estimator:<20} diagnosis / registration = {diagnosis:.3f} / {execute:.3f} s = {ratio:.2%} "
              f"(goal <= {goal:.0%}): {'MET' if ratio <= goal else 'NOT MET'}")
    return results


# --------------------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 mm pair, fewer iterations (< 2 min)")
    parser.add_argument("--voxel-size", type=float, help="voxel size of the PET-like pair in mm")
    parser.add_argument("--iterations", type=int, help="LBFGS2 numberOfIterations (0 = unbounded)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats in section 1 (>= 3)")
    parser.add_argument("--diagnosis-only", action="store_true", help="only section 4 (diagnosis cost)")
    parser.add_argument("--_memory-child", nargs=3, metavar=("WHICH", "DIR", "ITERATIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._memory_child:
        which, directory, iterations = args._memory_child
        memory_child(which, directory, int(iterations))
        return

    if args.diagnosis_only:
        section_diagnosis(args.repeats or 3)
        return
    config = dict(QUICK if args.quick else FULL)
    for key, value in (("voxel_size_mm", args.voxel_size), ("iterations", args.iterations), ("repeats", args.repeats)):
        if value is not None:
            config[key] = value
    started = time.perf_counter()
    print(f"bench_engine ({'quick' if args.quick else 'full'}): SimpleITK {sitk.Version_VersionString()}, "
          f"ITK {sitk.Version_ITKVersionString()}, numpy {np.__version__}, global default threads "
          f"{sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}, CPUs {len(__import__('os').sched_getaffinity(0))}")
    paths = sample_data.fetch_mni152()
    pair = sample_data.make_pet_like_pair(paths["gm"], paths["wm"], voxel_size_mm=config["voxel_size_mm"])
    fixed, moving = pair.fixed, pair.moving
    size = fixed.GetSize()
    print(f"pair: {pair.description}")
    if not args.quick:
        status = "OK" if min(size) >= MINIMUM_FULL_SIZE else "WARNING: smaller than"
        print(f"size check: {list(size)} {status} {MINIMUM_FULL_SIZE} voxels on every axis")

    overhead = section_overhead(fixed, moving, config)
    memory = section_memory(fixed, moving, config)
    components = section_components(fixed, moving, config)
    diagnosis = section_diagnosis(config["repeats"])

    def mark(value, goal):
        return "meets goal" if value <= goal else "ABOVE goal"

    print("\n=== Summary ===")
    print(f"    {'quantity':<58} {'value':>10}  goal")
    print(f"    {'wall engine/bare (min of ' + str(config['repeats']) + ')':<58} {overhead['wall_ratio']:>10.3f}  "
          f"<= {GOALS['wall']}  {mark(overhead['wall_ratio'], GOALS['wall'])}")
    print(f"    {'CPU engine/bare':<58} {overhead['cpu_ratio']:>10.3f}  <= {GOALS['cpu']}  "
          f"{mark(overhead['cpu_ratio'], GOALS['cpu'])}")
    print(f"    {'Execute only: engine timing[total_s] / bare wall':<58} {overhead['execute_ratio']:>10.3f}")
    print(f"    {'engine outside Execute (s)':<58} {overhead['outside_execute']:>10.3f}")
    print(f"    {'peak memory (peak - baseline) engine/bare':<58} {memory['ratio']:>10.3f}  <= {GOALS['memory']}  "
          f"{mark(memory['ratio'], GOALS['memory'])}")
    print(f"    {'bit-identical parameters engine vs bare':<58} {'yes' if overhead['identical'] else 'NO':>10}")
    print(f"    {'scales estimation E / metric evaluation M':<58} {components['E'] / components['M']:>10.1f}")
    print(f"    {'LBFGS2 run share in scales estimation':<58} {components['scales_share']:>10.1%}")
    print(f"    {'LBFGS2 run share in evaluations not ending in an event':<58} {components['not_event_share']:>10.1%}")
    print(f"    {'LBFGS2 run share in rejected line-search trials':<58} {components['rejected_share']:>10.1%}")
    for estimator, d in diagnosis.items():
        label = f"diagnosis / registration, {estimator} (~64^3)"
        print(f"    {label:<58} {d['ratio']:>10.2%}  <= {d['goal']:.0%}  {mark(d['ratio'], d['goal'])}")
    print(f"total benchmark time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
