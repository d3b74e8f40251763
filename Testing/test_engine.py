"""The registration engine on the MNI152-derived PET-like pair: diagnosis, modes, cancel, bad input.

Most tests use scales_estimator='none' and few iterations: the physical-shift estimator costs ~1 s per
metric evaluation for a [2,2,2] mesh whatever the image size. Tests of the reported set-up itself use it.
"""

import contextlib
import io
import os
import tempfile
import threading
import unittest

import numpy as np
import SimpleITK as sitk

from testdata import pet_like_pair

from SpacingRegistrationLib import diagnostics, probes, registration
from SpacingRegistrationLib.displacement import displacement_array, to_voxel_units
from SpacingRegistrationLib.settings import Lbfgs2Settings, RegistrationSettings

FAST = RegistrationSettings(scales_estimator="none", reproducible=True)


def fast(**changes) -> RegistrationSettings:
    return FAST.replace(**changes)


class ReproducibleModeTest(unittest.TestCase):
    def test_repeats_are_bit_identical(self):
        pair = pet_like_pair()
        first = registration.run(pair.fixed, pair.moving, FAST)
        second = registration.run(pair.fixed, pair.moving, FAST)
        self.assertTrue(first.moved)
        self.assertEqual(first.threading["work_units"], 1)
        self.assertEqual(first.threading["global_default_threads"], 1)
        np.testing.assert_array_equal(first.coefficients_mm, second.coefficients_mm)
        self.assertEqual([r.metric for r in first.trace], [r.metric for r in second.trace])
        self.assertFalse(any("bitwise" in w for w in first.warnings))

    def test_several_work_units_are_reported_as_not_bitwise_repeatable(self):
        pair = pet_like_pair()
        settings = fast(reproducible=False, number_of_work_units=2, number_of_threads=2,
                        lbfgs2={"number_of_iterations": 3})
        result = registration.run(pair.fixed, pair.moving, settings)
        self.assertEqual(result.threading["work_units"], 2)
        self.assertTrue(any("not bitwise repeatable" in w for w in result.warnings), result.warnings)

    def test_global_thread_count_is_restored(self):
        before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        pair = pet_like_pair()
        registration.run(pair.fixed, pair.moving, fast(lbfgs2={"number_of_iterations": 1}))
        self.assertEqual(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(), before)


class NormalisedModeTest(unittest.TestCase):
    """Results in voxel units do not depend on a uniform rescaling of the spacing."""

    @classmethod
    def setUpClass(cls):
        pair = pet_like_pair()
        cls.pair = pair
        cls.results = {s: registration.run(pair.fixed, pair.moving, fast(spacing_override=s, normalised_units=True))
                       for s in (1.0, 4.0, 0.25, 10.0, 0.1)}

    def test_power_of_two_spacings_are_bit_identical(self):
        reference = self.results[1.0]
        self.assertTrue(reference.moved)
        for s in (4.0, 0.25):
            np.testing.assert_array_equal(self.results[s].coefficients_voxels, reference.coefficients_voxels,
                                          err_msg=f"spacing {s}")
            self.assertEqual(self.results[s].iterations_per_run, reference.iterations_per_run)

    def test_other_spacings_agree_within_1e_12_voxels(self):
        reference = self.results[1.0].coefficients_voxels
        for s in (10.0, 0.1):
            difference = np.abs(self.results[s].coefficients_voxels - reference).max()
            self.assertLessEqual(difference, 1e-12, f"spacing {s}")

    def test_result_is_in_the_overridden_physical_units(self):
        result = self.results[4.0]
        self.assertEqual(result.spacing, (4.0, 4.0, 4.0))
        self.assertEqual(result.normalisation_factor, 4.0)
        direction = np.asarray(self.pair.fixed.GetDirection()).reshape(3, 3)
        expected_mm = np.moveaxis(np.moveaxis(result.coefficients_voxels * 4.0, 0, -1) @ direction.T, -1, 0)
        np.testing.assert_allclose(result.coefficients_mm, expected_mm, rtol=0, atol=1e-12)
        self.assertEqual(result.grid.grid_spacing, tuple(4.0 * v for v in self.results[1.0].grid.grid_spacing))

    def test_transform_maps_points_like_the_scaled_unit_result(self):
        """T_s(x) = o + s * T_1((x - o) / s): compare displacement fields in voxels on the image grids."""
        fixed_1 = sitk.Image(self.pair.fixed)
        fixed_1.SetSpacing([1.0] * 3)
        fixed_4 = sitk.Image(self.pair.fixed)
        fixed_4.SetSpacing([4.0] * 3)
        voxels_1 = to_voxel_units(displacement_array(self.results[1.0].transform, fixed_1), fixed_1)
        voxels_4 = to_voxel_units(displacement_array(self.results[4.0].transform, fixed_4), fixed_4)
        self.assertGreater(np.abs(voxels_1).max(), 0.1)
        np.testing.assert_allclose(voxels_4, voxels_1, rtol=0, atol=1e-9)


class ReportedSetUpTest(unittest.TestCase):
    """The report's settings (physical-shift scales, 2.5 % REGULAR sampling, LBFGS2 defaults)."""

    def test_large_spacing_never_moves_and_normalised_mode_registers_it(self):
        pair = pet_like_pair()
        native = registration.run(pair.fixed, pair.moving, RegistrationSettings(spacing_override=10.0, reproducible=True))
        self.assertFalse(native.moved)
        self.assertEqual(native.trace, [])
        self.assertEqual(native.stop_reason, "line_search_failure")
        self.assertTrue(np.all(native.coefficients_mm == 0))
        self.assertGreater(native.optimizer["lbfgs2"]["sufficient_decrease_load"], 1.0)
        self.assertTrue(any("never moved" in w and "first line search failed" in w for w in native.warnings))

        normalised = registration.run(pair.fixed, pair.moving, RegistrationSettings(
            spacing_override=10.0, normalised_units=True, reproducible=True,
            lbfgs2=Lbfgs2Settings(number_of_iterations=2)))
        self.assertTrue(normalised.moved)
        self.assertEqual(normalised.iterations_per_run, [2, 2])
        # The load grows like the spacing squared: 10 mm in mm units vs 1 unit in normalised units.
        load = normalised.optimizer["lbfgs2"]["sufficient_decrease_load"]
        self.assertLess(load, 0.1)
        self.assertAlmostEqual(native.optimizer["lbfgs2"]["sufficient_decrease_load"] / load, 100.0, delta=1.0)
        self.assertLess(normalised.plausibility.metric_result, normalised.plausibility.metric_identity)
        scales = normalised.optimizer["scales"]
        self.assertTrue(scales["uniform_at_rounding_level"])
        self.assertTrue(any("uniform" in w for w in normalised.warnings))


class LbfgsRunsTest(unittest.TestCase):
    def test_iteration_limit_five_gives_two_runs_of_five(self):
        pair = pet_like_pair()
        result = registration.run(pair.fixed, pair.moving, fast(lbfgs2={"number_of_iterations": 5}))
        self.assertEqual(result.iterations_per_run, [5, 5])
        self.assertEqual([r.iteration for r in result.trace], [0, 1, 2, 3, 4] * 2)
        self.assertEqual(result.stop_reason, "maximum_iterations")
        self.assertTrue(any("2 times (5 + 5 iterations)" in w for w in result.warnings), result.warnings)

    def test_reported_metric_is_compared_with_the_value_at_the_result(self):
        pair = pet_like_pair()
        result = registration.run(pair.fixed, pair.moving, fast(lbfgs2={"number_of_iterations": 3}))
        # Ending on the iteration limit, the last evaluated point is the returned one.
        self.assertEqual(result.metric_reported, result.metric_reevaluated)
        self.assertEqual(result.trace[-1].metric, result.metric_reevaluated)

    def test_delta_test_is_classified(self):
        pair = pet_like_pair()
        result = registration.run(pair.fixed, pair.moving, fast(lbfgs2={"delta_convergence_distance": 3}))
        self.assertEqual(result.stop_description, "Unknown status")
        self.assertEqual(result.stop_reason, "delta_test")
        self.assertEqual(result.iterations_per_run[-1], 3)
        self.assertTrue(any("delta test" in w for w in result.warnings))


class StopClassificationTest(unittest.TestCase):
    def test_known_descriptions(self):
        cases = [
            ("lbfgs2", "A rounding error occurred or line-search steps have an insufficient reduction",
             "line_search_failure"),
            ("lbfgs2", "LineSearch reached maximum umber of iterations", "line_search_failure"),
            ("lbfgs2", "Already minimized", "converged"),
            ("lbfgs2", "Unknown status", "delta_test"),
            ("lbfgs2", "Something new", "other"),
            ("gradient_descent", "Convergence checker passed at iteration 9.", "converged"),
            ("gradient_descent", "Maximum number of iterations (100) exceeded.", "maximum_iterations"),
            ("lbfgsb", "CONVERGENCE: REL_REDUCTION_OF_F_<=_FACTOR*EPSMCH", "converged"),
        ]
        for optimizer, description, expected in cases:
            with self.subTest(description):
                self.assertEqual(diagnostics.classify_stop(optimizer, description), expected)


class CancelTest(unittest.TestCase):
    def test_cancel_after_three_iterations_returns_a_marked_partial_result(self):
        pair = pet_like_pair()
        cancel = threading.Event()
        seen = []

        def progress(record):
            seen.append(record)
            if len(seen) == 3:
                cancel.set()

        result = registration.run(pair.fixed, pair.moving, fast(), progress=progress, cancel=cancel)
        self.assertTrue(result.cancelled)
        self.assertEqual(result.stop_reason, "cancelled")
        self.assertEqual(len(result.trace), 3)
        self.assertTrue(result.moved)
        self.assertIn("partial result", result.warnings[0])
        # The partial transform is the position of the last iteration seen: same sampled metric, bit for bit.
        self.assertEqual(result.metric_reevaluated, result.trace[-1].metric)

    def test_cancel_before_start_stops_at_the_first_iteration(self):
        pair = pet_like_pair()
        cancel = threading.Event()
        cancel.set()
        result = registration.run(pair.fixed, pair.moving, fast(), cancel=cancel)
        self.assertTrue(result.cancelled)
        self.assertEqual(len(result.trace), 1)


class AccuracyTest(unittest.TestCase):
    def test_registration_recovers_part_of_the_known_deformation(self):
        pair = pet_like_pair()
        result = registration.run(pair.fixed, pair.moving, fast(mesh_size=(4, 4, 4)))
        truth = to_voxel_units(sitk.GetArrayFromImage(pair.displacement), pair.fixed)
        found = to_voxel_units(displacement_array(result.transform, pair.fixed), pair.fixed)
        brain = sitk.GetArrayFromImage(pair.fixed) > np.percentile(sitk.GetArrayFromImage(pair.fixed), 60)
        error_before = np.linalg.norm(truth[brain], axis=-1).mean()
        error_after = np.linalg.norm((found - truth)[brain], axis=-1).mean()
        self.assertLess(error_after, 0.8 * error_before)
        self.assertFalse(result.plausibility.folding)

    def test_mask_restricts_the_statistics(self):
        pair = pet_like_pair()
        values = sitk.GetArrayFromImage(pair.fixed)
        mask = values > np.percentile(values, 60)
        result = registration.run(pair.fixed, pair.moving, fast(lbfgs2={"number_of_iterations": 3}), mask=mask)
        self.assertEqual(result.displacement.voxels, int(mask.sum()))


@contextlib.contextmanager
def _standard_error_of_this_process():
    """What this process writes to file descriptor 2 (ITK's C++ warnings) inside the block, as a StringIO."""
    printed = io.StringIO()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as stream:
        os.dup2(stream.fileno(), 2)
        try:
            yield printed
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            stream.seek(0)
            printed.write(stream.read().decode(errors="replace"))


class FastEquivalentTest(unittest.TestCase):
    """scales_estimator='physical_shift_fast' against the reported set-up (issue 10 §1)."""

    def test_same_registration_up_to_rounding_with_a_different_uniform_scale(self):
        pair = pet_like_pair()
        base = RegistrationSettings(reproducible=True, lbfgs2=Lbfgs2Settings(number_of_iterations=2))
        reported = registration.run(pair.fixed, pair.moving, base)
        with _standard_error_of_this_process() as printed:
            quick = registration.run(pair.fixed, pair.moving, base.replace(scales_estimator="physical_shift_fast"))
        self.assertTrue(reported.moved and quick.moved)
        # Scales of exactly 1 (no parameter variation moves a voxel), and ITK's warning saying so is not printed.
        self.assertEqual({r.scales_min for r in quick.trace} | {r.scales_max for r in quick.trace}, {1.0})
        self.assertNotIn("voxel position", printed.getvalue())
        self.assertEqual(reported.iterations_per_run, quick.iterations_per_run)
        for result in (reported, quick):
            scales = result.optimizer["scales"]
            self.assertTrue(scales["uniform_at_rounding_level"])
            self.assertFalse(scales["changed_during_run"])
        # Different uniform scales (the estimator saw other voxels), which ITK's learning rate cancels ...
        self.assertNotEqual(reported.trace[0].scales_min, quick.trace[0].scales_min)
        # ... so the transforms agree to rounding, far below any registration difference.
        difference = to_voxel_units(displacement_array(reported.transform, pair.fixed)
                                    - displacement_array(quick.transform, pair.fixed), pair.fixed)
        self.assertLess(float(np.abs(difference).max()), 1e-9)
        self.assertGreater(float(np.abs(reported.coefficients_voxels).max()), 0.01)
        # The diagnosis says what the estimator cost and points from the reported set-up to the fast equivalent.
        slow, cheap = reported.optimizer["scales_estimator"], quick.optimizer["scales_estimator"]
        self.assertEqual((slow["central_region_radius"], cheap["central_region_radius"]), (5, 0))
        self.assertGreater(slow["one_estimation_s"], 20 * cheap["one_estimation_s"])
        self.assertGreater(slow["share_of_registration"], cheap["share_of_registration"])
        self.assertTrue(0 <= cheap["share_of_registration"] <= slow["share_of_registration"] <= 1)
        pointer = "scales_estimator='physical_shift_fast' runs the same estimator"
        self.assertTrue(any(pointer in w and "took about" in w for w in reported.warnings))
        self.assertTrue(any("took about" in w for w in quick.warnings))
        self.assertFalse(any(pointer in w for w in quick.warnings))

    def test_a_run_without_iterations_does_not_call_its_scales_uniform_or_not(self):
        pair = pet_like_pair()
        fixed, moving = sitk.Shrink(pair.fixed, [2, 2, 2]), sitk.Shrink(pair.moving, [2, 2, 2])
        settings = RegistrationSettings(reproducible=True, sampling_seed=1, scales_estimator="physical_shift_fast",
                                        lbfgs2=Lbfgs2Settings(line_search_maximum_evaluations=1))
        result = registration.run(fixed, moving, settings)
        self.assertFalse(result.moved)
        self.assertIsNone(result.optimizer["scales"]["uniform_at_rounding_level"])
        cost = next(w for w in result.warnings if "took about" in w)
        self.assertIn("its scales are not known (no iteration completed)", cost)
        self.assertNotIn("uniform", cost)

    def test_no_estimator_reports_no_estimator_cost_and_skips_the_slope_probes(self):
        pair = pet_like_pair()
        result = registration.run(pair.fixed, pair.moving, fast(lbfgs2={"number_of_iterations": 2}))
        self.assertNotIn("scales_estimator", result.optimizer)
        self.assertIsNone(result.optimizer["lbfgs2"]["gradient_slope_ratio"])
        self.assertGreater(result.optimizer["lbfgs2"]["handed_gradient_norm"], 0)


class CheapDiagnosisTest(unittest.TestCase):
    """The diagnosis's cheaper evaluations keep the figures' meaning (issue 10 §2)."""

    def test_value_probes_without_gradient_filters_give_the_same_value_to_the_bit(self):
        pair = pet_like_pair()
        settings = fast()
        transform = registration.initial_bspline(pair.fixed, settings)
        transform.SetParameters((0.5 * np.ones(len(transform.GetParameters()))).tolist())
        with_filters = probes._probe(pair.fixed, pair.moving, transform, settings, 0.0, gradient_filters=True)[0]
        self.assertEqual(probes.sampled_metric(pair.fixed, pair.moving, transform, settings), with_filters)

    def test_plausibility_is_the_fixed_sample_metric_at_identity_and_result(self):
        pair = pet_like_pair()
        result = registration.run(pair.fixed, pair.moving, fast(lbfgs2={"number_of_iterations": 3}))
        p = result.plausibility
        identity = sitk.BSplineTransform(result.transform)
        identity.SetParameters([0.0] * len(identity.GetParameters()))
        self.assertEqual(p.metric_identity, probes.plausibility_metric(pair.fixed, pair.moving, identity, FAST))
        self.assertEqual(p.metric_result, probes.plausibility_metric(pair.fixed, pair.moving, result.transform, FAST))
        self.assertEqual(p.improvement, p.metric_identity - p.metric_result)
        self.assertGreater(p.improvement, 0)  # the registration improves the match on points it did not optimise
        self.assertIn("REGULAR sample", p.evaluation)
        # A different sample set from the optimizer's: the value at the result differs from the re-evaluated one.
        self.assertNotEqual(p.metric_result, result.metric_reevaluated)


if __name__ == "__main__":
    unittest.main()
