"""The study diagnosis separates rounding from variability: a run-to-run spread at or below the stated threshold is
reported as negligible, with the threshold, and a larger one as variability from the work units."""

import testdata  # noqa: F401  (puts SpacingRegistration/ on sys.path)

import unittest
from types import SimpleNamespace

from SpacingRegistrationLib import study_diagnosis


def group(mode, spacing, spread, bitwise=False):
    return SimpleNamespace(mode=mode, spacing=spacing, runs=["a", "b"], seeds=[1, 1], bitwise_identical=bitwise,
                           spread_voxels={"max": spread}, relative_spread=spread / 2.0,
                           iterations={"min": 30, "max": 34}, work_units=[2])


class ThreadsStatementTest(unittest.TestCase):
    def test_rounding_spread_is_negligible_and_a_real_one_is_variability(self):
        analysis = SimpleNamespace(groups=[group("native-default", 4.0, 2.66e-15), group("native-default", 1.0, 0.69),
                                           group("native-reproducible", 1.0, 0.0, bitwise=True)])
        statements = {s["figures"]["spacing"]: s for s in study_diagnosis._threads(analysis)}
        rounding, real = statements[4.0], statements[1.0]
        self.assertTrue(rounding["figures"]["negligible"])
        self.assertIn("a rounding difference, not variability", rounding["text"])
        self.assertIn(f"{study_diagnosis.NEGLIGIBLE_SPREAD_VOXELS:g}-voxel threshold", rounding["text"])
        self.assertFalse(real["figures"]["negligible"])
        self.assertIn("differ by up to 0.69 voxels", real["text"])
        self.assertIn("bit-identical with one work unit", real["text"])

    def test_the_threshold_is_the_boundary(self):
        at = study_diagnosis.NEGLIGIBLE_SPREAD_VOXELS
        analysis = SimpleNamespace(groups=[group("native-default", 1.0, at), group("native-default", 2.0, at * 10)])
        statements = {s["figures"]["spacing"]: s["figures"]["negligible"] for s in study_diagnosis._threads(analysis)}
        self.assertEqual(statements, {1.0: True, 2.0: False})


if __name__ == "__main__":
    unittest.main()
