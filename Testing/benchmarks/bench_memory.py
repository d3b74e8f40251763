#!/usr/bin/env python
"""Memory of repeated registrations in one process (issue 6): does the resident set grow?

    .venv/bin/python Testing/benchmarks/bench_memory.py [--count 100]

Runs ``count`` small registrations (a 24^3 blob pair, scales estimator 'none', two LBFGS2 iterations, so the
whole loop takes a few seconds) and prints the resident memory (VmRSS) before, after a warm-up of 10 runs and
at the end. The growth after the warm-up is what a leak would show; Testing/test_robustness.py checks a
generous bound on it.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SpacingRegistration"))

from SpacingRegistrationLib import registration  # noqa: E402
from SpacingRegistrationLib.settings import RegistrationSettings  # noqa: E402

WARMUP = 10


def resident_bytes() -> int:
    """Current resident set size (VmRSS) of this process."""
    with open("/proc/self/status") as stream:
        line = next(line for line in stream if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _blob(size: int, shift: float) -> sitk.Image:
    z, y, x = np.mgrid[:size, :size, :size]
    values = np.exp(-((x - size / 2 - shift) ** 2 + (y - size / 2) ** 2 + (z - size / 2) ** 2) / (size * 1.5))
    return sitk.GetImageFromArray(values.astype(np.float32))


def measure(count: int = 100, size: int = 24) -> dict:
    """Resident memory around ``count`` consecutive registrations; sampled after every run."""
    fixed, moving = _blob(size, 0.0), _blob(size, 1.5)
    settings = RegistrationSettings(scales_estimator="none").replace(lbfgs2={"number_of_iterations": 2})
    gc.collect()
    before = resident_bytes()
    samples = []
    started = time.perf_counter()
    for _ in range(count):
        result = registration.run(fixed, moving, settings)
        del result
        gc.collect()
        samples.append(resident_bytes())
    elapsed = time.perf_counter() - started
    after_warmup = samples[min(WARMUP, count) - 1]
    return {"count": count, "size": size, "seconds": elapsed, "before_bytes": before,
            "after_warmup_bytes": after_warmup, "end_bytes": samples[-1], "max_bytes": max(samples),
            "growth_after_warmup_bytes": samples[-1] - after_warmup,
            "slope_bytes_per_run": float(np.polyfit(np.arange(WARMUP, count), samples[WARMUP:], 1)[0])
            if count > WARMUP + 1 else float("nan")}


def describe(figures: dict) -> str:
    mib = 1024 ** 2
    return (f"{figures['count']} registrations of {figures['size']}^3 in {figures['seconds']:.1f} s: resident memory "
            f"{figures['before_bytes'] / mib:.1f} MiB before, {figures['after_warmup_bytes'] / mib:.1f} MiB after "
            f"{WARMUP}, {figures['end_bytes'] / mib:.1f} MiB at the end (max {figures['max_bytes'] / mib:.1f}); "
            f"growth after the warm-up {figures['growth_after_warmup_bytes'] / mib:+.2f} MiB, "
            f"slope {figures['slope_bytes_per_run'] / 1024:+.1f} KiB per run")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=24)
    arguments = parser.parse_args()
    print(describe(measure(arguments.count, arguments.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
