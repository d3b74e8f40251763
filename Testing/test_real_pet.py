"""The reported set-up on the real mouse FDG PET gates (../shared/data): figures computed and consistent."""

import math
import unittest

import numpy as np

from testdata import SHARED_DATA

from SpacingRegistrationLib import registration, sample_data
from SpacingRegistrationLib.settings import RegistrationSettings


@unittest.skipUnless(SHARED_DATA.is_dir(), f"real PET data not found at {SHARED_DATA}")
class MousePetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        fixed, moving = sample_data.load_mouse_pet(SHARED_DATA)
        cls.result = registration.run(fixed, moving, RegistrationSettings(reproducible=True))

    def test_plausibility_figures_are_consistent(self):
        r = self.result
        p = r.plausibility
        for value in (p.metric_identity, p.metric_result, p.min_jacobian_determinant, r.metric_reevaluated):
            self.assertTrue(math.isfinite(value))
        self.assertEqual(p.improvement, p.metric_identity - p.metric_result)
        self.assertEqual(p.max_displacement_voxels, r.displacement.max_voxels)
        self.assertEqual(p.folding, p.min_jacobian_determinant <= 0)
        self.assertEqual(p.image_size_voxels, (40, 40, 40))
        self.assertAlmostEqual(r.displacement.max_mm, 0.8 * r.displacement.max_voxels, delta=1e-9)
        if p.metric_result > p.metric_identity:
            self.assertTrue(any("worse than the identity" in w for w in r.warnings))

    def test_run_is_fully_described(self):
        r = self.result
        self.assertTrue(r.moved)
        self.assertEqual(sum(r.iterations_per_run), len(r.trace))
        self.assertIn(r.stop_reason, ("converged", "line_search_failure", "maximum_iterations"))
        self.assertEqual(r.threading["work_units"], 1)
        lbfgs = r.optimizer["lbfgs2"]
        self.assertAlmostEqual(lbfgs["first_trial_step_voxels"], lbfgs["unit_parameter_shift_mm"] / 0.8, places=12)
        self.assertGreater(lbfgs["gradient_slope_ratio"], 1.0)
        self.assertEqual(r.coefficients_voxels.shape, (3, 5, 5, 5))
        self.assertAlmostEqual(float(np.abs(r.coefficients_voxels).max()),
                               float(np.abs(r.coefficients_mm).max()) / 0.8, places=9)


if __name__ == "__main__":
    unittest.main()
