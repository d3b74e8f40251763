#!/usr/bin/env python
"""Run-to-run spread with the default threads: the reported set-up against its fast equivalent.

    .venv/bin/python Testing/benchmarks/bench_thread_spread.py [--repeats 3] [--spacing 1]

The report's own experiment: the same registration repeated with one sampling seed and SimpleITK's default
threads, on the bundled demo pair (MNI152 PET-like, 4 mm, as ``spacingreg demo`` makes it) with its spacing
overridden to ``--spacing`` mm. Repeats of the reported set-up (``physical_shift``) and of its fast equivalent
(``physical_shift_fast``) alternate. Per configuration: iterations per libLBFGS run and error against the known
deformation of every repeat, and the largest field difference (voxels) over every pair of repeats. Several
work units make Mattes MI's derivative sums depend on thread timing; the reported set-up's scale, which jumps at
rounding level, then sends the repeats onto different paths (docs/fast-equivalent.md). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SpacingRegistration"))

from SpacingRegistrationLib import registration, sample_data  # noqa: E402
from SpacingRegistrationLib.displacement import displacement_array, to_voxel_units  # noqa: E402
from SpacingRegistrationLib.images import with_spacing  # noqa: E402
from SpacingRegistrationLib.settings import RegistrationSettings  # noqa: E402
from SpacingRegistrationLib.truth import error_of_voxel_field, truth_from_image  # noqa: E402

CONFIGURATIONS = {"reported set-up": "physical_shift", "fast equivalent": "physical_shift_fast"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each configuration (at least 2)")
    parser.add_argument("--spacing", type=float, default=1.0, help="spacing override in mm (the report's 1 mm)")
    parser.add_argument("--seed", type=int, default=1, help="the sampling seed every repeat uses")
    arguments = parser.parse_args(argv)
    if arguments.repeats < 2:
        parser.error("--repeats must be at least 2: the spread is between repeats")
    paths = sample_data.fetch_mni152()
    pair = sample_data.make_pet_like_pair(paths["gm"], paths["wm"], voxel_size_mm=4.0)
    grid = with_spacing(pair.fixed, arguments.spacing)
    truth = truth_from_image(pair.displacement, pair.fixed, "the demo pair's known deformation")
    runs = {name: [] for name in CONFIGURATIONS}
    for repeat in range(arguments.repeats):
        for name, estimator in CONFIGURATIONS.items():
            settings = RegistrationSettings(scales_estimator=estimator, spacing_override=arguments.spacing,
                                            sampling_seed=arguments.seed)
            started = time.perf_counter()
            result = registration.run(pair.fixed, pair.moving, settings)
            field = to_voxel_units(displacement_array(result.transform, grid), grid)
            error = error_of_voxel_field(truth, field, None).recovered.mean_voxels
            runs[name].append(field)
            print(f"  repeat {repeat + 1} {name}: iterations {result.iterations_per_run}, moved {result.moved}, "
                  f"mean error {error:.4f} voxels, {time.perf_counter() - started:.1f} s wall, "
                  f"{result.threading.get('global_default_threads')} threads", flush=True)
    print(f"\nlargest field difference between two repeats (voxels), spacing {arguments.spacing:g} mm, "
          f"seed {arguments.seed}, default threads:")
    for name, fields in runs.items():
        spreads = [float(np.linalg.norm(a - b, axis=-1).max()) for a, b in itertools.combinations(fields, 2)]
        print(f"  {name:<16} smallest {min(spreads):.3g}, largest {max(spreads):.3g} over {len(spreads)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
