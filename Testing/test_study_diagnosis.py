"""The study diagnosis separates rounding from variability: a run-to-run spread at or below the stated threshold is
reported as negligible, with the threshold, and a larger one as variability from the work units; a difference across
spacings in normalised units is "removed", "removed in practice" or "not removed" by stated thresholds."""

import testdata  # noqa: F401  (puts SpacingRegistration/ on sys.path)

import unittest
from types import SimpleNamespace

from SpacingRegistrationLib import report, study_diagnosis


def group(mode, spacing, spread, bitwise=False):
    return SimpleNamespace(mode=mode, spacing=spacing, runs=["a", "b"], seeds=[1, 1], bitwise_identical=bitwise,
                           spread_voxels={"max": spread}, relative_spread=spread / 2.0,
                           iterations={"min": 30, "max": 34}, work_units=[2])


class ThreadsStatementTest(unittest.TestCase):
    def test_rounding_spread_is_negligible_and_a_real_one_is_variability(self):
        analysis = SimpleNamespace(groups=[group("native-default", 4.0, 2.66e-15), group("native-default", 1.0, 0.69),
                                           group("native-reproducible", 1.0, 0.0, bitwise=True)],
                                   scales_estimator="physical_shift_fast", optimizer="lbfgs2")
        statements = {s["figures"]["spacing"]: s for s in study_diagnosis._threads(analysis)}
        rounding, real = statements[4.0], statements[1.0]
        self.assertTrue(rounding["figures"]["negligible"])
        self.assertIn("a rounding difference, not variability", rounding["text"])
        self.assertIn(f"{study_diagnosis.NEGLIGIBLE_SPREAD_VOXELS:g}-voxel threshold", rounding["text"])
        self.assertFalse(real["figures"]["negligible"])
        self.assertIn("differ by up to 0.69 voxels", real["text"])
        self.assertIn("bit-identical with one work unit", real["text"])
        self.assertNotIn("physical_shift scales estimator makes this worse", real["text"])
        analysis.scales_estimator = "physical_shift"
        real = next(s for s in study_diagnosis._threads(analysis) if not s["figures"]["negligible"])
        self.assertIn("The physical_shift scales estimator makes this worse", real["text"])

    def test_the_threshold_is_the_boundary(self):
        at = study_diagnosis.NEGLIGIBLE_SPREAD_VOXELS
        analysis = SimpleNamespace(groups=[group("native-default", 1.0, at), group("native-default", 2.0, at * 10)],
                                   scales_estimator="physical_shift", optimizer="lbfgs2")
        statements = {s["figures"]["spacing"]: s["figures"]["negligible"] for s in study_diagnosis._threads(analysis)}
        self.assertEqual(statements, {1.0: True, 2.0: False})


def moved_group(mode, spacing, difference):
    return SimpleNamespace(mode=mode, spacing=spacing, iterations={"mean": 5},
                           difference_from_reference_voxels=None if spacing == 1.0 else {"max": difference})


class NormalisedUnitsStatementTest(unittest.TestCase):
    def verdict(self, normalised_difference):
        groups = [moved_group(mode, spacing, difference) for spacing in (1.0, 10.0)
                  for mode, difference in (("native-reproducible", 0.572), ("normalised-reproducible",
                                                                            normalised_difference))]
        analysis = SimpleNamespace(groups=groups, reference_spacing=1.0, statements=[])
        analysis.statements = study_diagnosis._spacing_effect(analysis)
        statement = next(s for s in analysis.statements if s["kind"] == "normalised_units")
        summary = dict((kind, answer) for kind, _question, answer in report._summary_lines(analysis, []))
        return statement, summary["normalised_units"]

    def test_bit_level_practical_and_real_differences_are_told_apart(self):
        same, same_answer = self.verdict(1e-12)
        rounding, rounding_answer = self.verdict(6.39e-6)
        real, real_answer = self.verdict(0.05)
        self.assertEqual([s["figures"]["removed"] for s in (same, rounding, real)], ["yes", "in practice", "no"])
        self.assertIn("remove the spacing effect:", same["text"])
        self.assertIn("remove the spacing effect in practice", rounding["text"])
        self.assertIn("6.4e-06 voxels (native units: up to 0.572 voxels)", rounding["text"])
        self.assertIn("still differ across spacings by up to 0.05 voxels", real["text"])
        self.assertTrue(same_answer.startswith("Yes: "))
        self.assertTrue(rounding_answer.startswith("In practice: "), rounding_answer)
        self.assertTrue(real_answer.startswith("No: "))

    def test_the_practical_threshold_is_the_boundary(self):
        at = study_diagnosis.PRACTICAL_SAME_VOXELS
        self.assertEqual(self.verdict(at)[0]["figures"]["removed"], "in practice")
        self.assertEqual(self.verdict(at * 1.01)[0]["figures"]["removed"], "no")


if __name__ == "__main__":
    unittest.main()
