#!/usr/bin/env python
"""The accuracy check on the real mouse FDG PET gates (issue 11 §2-§3): does its advice find a configuration
better than identity on the synthetic truth *and* on the dense metric of the real pair?

    nice -n 10 .venv/bin/python Testing/benchmarks/bench_accuracy.py [--output DIR] [--seeds 4] [--workers 2]
        [--candidates NAME ...]

1. ``accuracy.check_accuracy`` on gate T with the reported set-up (its fast estimator), the default candidates
   (or ``--candidates``) over ``--seeds`` seeds: ranking and advice (resumed if ``--output`` holds the check).
2. The real pair (gate T fixed, gate R moving) registered with your settings and with every recommended change,
   over the same seeds, as ordinary studies: the plausibility check's dense metric against identity per seed.
Goal: the best recommendation beats identity on the synthetic truth (mean error over seeds) and on the real
pair's dense metric in every seed. Prints the figures and writes bench_accuracy.json; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "SpacingRegistration"))

from SpacingRegistrationLib import accuracy, advice  # noqa: E402
from SpacingRegistrationLib.images import read_image  # noqa: E402
from SpacingRegistrationLib.settings import RegistrationSettings  # noqa: E402
from SpacingRegistrationLib.study_runner import run_study  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def dense_metric_per_seed(settings, seeds, fixed, moving, folder, workers) -> list[dict]:
    """The real pair registered with ``settings`` at each seed: identity and result on the dense metric."""
    spec = accuracy.candidate_spec(accuracy.Candidate("real", "real pair", {}), settings,
                                   accuracy.check_spacing(settings, fixed)[0], seeds)
    outcome = run_study(spec, fixed, moving, folder, workers=workers)
    rows = [outcome.store.rows[run.run_id] for run in spec.runs() if run.run_id in outcome.store.rows]
    return [{"seed": row["seed"], "identity": row["summary"]["plausibility"]["metric_identity"],
             "result": row["summary"]["plausibility"]["metric_result"],
             "better": row["summary"]["plausibility"]["improvement"] > 0,
             "cpu_s": row["summary"]["timing"]["cpu_s"]} for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "output" / "bench_accuracy")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--candidates", nargs="+")
    arguments = parser.parse_args()
    gate_t, gate_r = DATA / "mouse_fdg_pet_gate_T.nrrd", DATA / "mouse_fdg_pet_gate_R.nrrd"
    if not gate_t.is_file():
        print(f"skipped: the mouse PET gates are not in {DATA}")
        return 0
    user = RegistrationSettings()
    check = accuracy.check_accuracy(gate_t, arguments.output / "check", user, candidates=arguments.candidates,
                                    options=accuracy.CheckOptions(seeds=arguments.seeds), workers=arguments.workers)
    print("Synthetic truth (mean error over seeds, voxels):")
    for row in check.ranking:
        print(f"  {row['rank']:>2}. {row['candidate']:<24} {row['error_mean_voxels']:.3f} (worst "
              f"{row['error_worst_voxels']:.3f}, identity {row['identity_error_mean_voxels']:.3f}), "
              f"{row['cpu_mean_s']:.3g} s CPU per run")
    for recommendation in check.recommendations:
        print(f"  - {recommendation.kind}: {recommendation.text}")
    base, _note = accuracy.base_settings(user)
    fixed, moving = read_image(gate_t), read_image(gate_r)
    seeds = json.loads((arguments.output / "check" / accuracy.CHECK_FILE).read_text())["seeds"]
    configurations = {"yours": base}
    configurations.update({r.figures["candidate"]: advice.apply_recommendation(base, r)
                           for r in check.recommendations if r.kind == "recommended"})
    real = {}
    print("Real pair (gate T fixed, gate R moving), dense metric per seed (lower is better):")
    for name, settings in configurations.items():
        real[name] = dense_metric_per_seed(settings, seeds, fixed, moving, arguments.output / "real" / name,
                                           arguments.workers)
        better = sum(r["better"] for r in real[name])
        results = ", ".join(f"{r['result']:.4f}" for r in real[name])
        print(f"  {name:<24} identity {real[name][0]['identity']:.4f}, results {results}: better than identity in "
              f"{better} of {len(real[name])}")
    top = advice.best(check.recommendations)
    verdict = None
    if top is not None:
        name = top.figures["candidate"]
        row = next(r for r in check.ranking if r["candidate"] == name)
        verdict = {"configuration": name, "changes": top.changes,
                   "synthetic_better_than_identity": row["error_mean_voxels"] < row["identity_error_mean_voxels"],
                   "real_dense_metric_better_every_seed": all(r["better"] for r in real[name])}
    print(f"Verdict: {verdict}")
    (arguments.output / "bench_accuracy.json").write_text(json.dumps(
        {"ranking": check.ranking, "recommendations": [r.as_dict() for r in check.recommendations],
         "real_pair": real, "verdict": verdict}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
