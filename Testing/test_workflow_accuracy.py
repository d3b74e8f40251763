"""The accuracy check as both front ends see it: the Workflow starts it as a child-process job, reports progress,
cancels, exposes the ranking and the advice, and applies a recommendation to the panel's parameters.

Runs on a 24^3 crop of the real mouse FDG PET gate (skipped with the reason when the shared data are absent), with
10 LBFGS2 iterations, 2 sampling seeds and one candidate besides yours.
"""

import testdata  # noqa: F401  (puts SpacingRegistration/ on sys.path)

import shutil
import tempfile
import time
import unittest
from pathlib import Path

import SimpleITK as sitk

from SpacingRegistrationLib import advice, parameters
from SpacingRegistrationLib.mrml import bridge
from SpacingRegistrationLib.mrml.logic import RegistrationLogic
from SpacingRegistrationLib.settings import RegistrationSettings
from SpacingRegistrationLib.workflow import ACCURACY_COLUMNS, Workflow

GATE = testdata.SHARED_DATA / "mouse_fdg_pet_gate_T.nrrd"
SETTINGS = RegistrationSettings(reproducible=True).replace(lbfgs2={"number_of_iterations": 10})


def pollUntilEnd(testCase, workflow, seconds=300):
    deadline = time.monotonic() + seconds
    statuses = []
    while workflow.accuracyRunning:
        testCase.assertLess(time.monotonic(), deadline, "the accuracy check did not end")
        if workflow.poll():
            statuses.append(workflow.accuracyStatus)
        time.sleep(0.05)
    return statuses


@unittest.skipUnless(GATE.is_file(), f"the real mouse PET gate is not at {GATE}")
class WorkflowAccuracyTest(unittest.TestCase):
    def setUp(self):
        self.folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.scene = bridge.createScene()
        self.fixed = bridge.volumeNodeFromImage(self.scene, sitk.ReadImage(str(GATE))[8:32, 8:32, 8:32], "gate")
        self.workflow = Workflow(RegistrationLogic(scene=self.scene))

    def test_ranking_and_advice_arrive_and_a_recommendation_changes_exactly_its_parameters(self):
        w = self.workflow
        self.assertTrue(w.startAccuracyCheck(self.fixed, SETTINGS, self.folder / "check",
                                             candidates=["sampling-0.5", "sampling-25"], seeds=2,
                                             executor="sequential"))
        self.assertTrue(w.accuracyRunning)
        self.assertFalse(w.startAccuracyCheck(self.fixed, SETTINGS), "a second check while one runs")
        statuses = pollUntilEnd(self, w)
        self.assertEqual(w.error, "")
        self.assertIn("candidate 2/3 (sampling-0.5): 1/2 runs", statuses)
        self.assertEqual(w.accuracyProgress, 1.0)
        self.assertIn("3 candidates ranked", w.accuracyStatus)
        # The ranking: one row per candidate, best first, "vs yours" against your settings.
        self.assertEqual(len(w.accuracyRanking), 3)
        self.assertTrue(all(len(row) == len(ACCURACY_COLUMNS) for row in w.accuracyRanking))
        self.assertEqual([row[0] for row in w.accuracyRanking], ["1", "2", "3"])
        errors = [float(row[2]) for row in w.accuracyRanking]
        self.assertEqual(errors, sorted(errors))
        self.assertEqual([row[5] for row in w.accuracyRanking if row[1] == "your settings"], ["yours"])
        self.assertEqual(len(w.rankingText.splitlines()), 4)
        self.assertTrue(w.rankingText.startswith("Rank"))
        bad = next(row for row in w.accuracyRanking if row[1] == "sampling 0.5 %")
        self.assertGreater(float(bad[5].split()[0]), 0.0)  # worse than yours
        # The advice: the outcome's recommendations in order, as plain dicts.
        self.assertEqual([r["text"] for r in w.recommendations], [r.text for r in w.accuracy.recommendations])
        self.assertIn(w.recommendations[0]["text"], w.adviceText)
        appliable = w.appliableRecommendations
        self.assertTrue(appliable)
        values = parameters.parameter_values_from_settings(SETTINGS)
        for index, label in appliable:
            recommendation = w.recommendations[index]
            changed = w.applyRecommendation(index, values)
            named = {name for name, path in parameters.SETTING_PARAMETERS.items()
                     if path in advice.changed_paths(recommendation["changes"])}
            self.assertEqual(set(changed), {name for name in named if changed.get(name, values[name]) != values[name]})
            self.assertTrue(changed, label)
            self.assertEqual(changed, {name: value for name, value in
                                       RegistrationLogic.applyRecommendation(values, recommendation).items()
                                       if values[name] != value})
            self.assertEqual(parameters.settings_from_parameter_values({**values, **changed}),
                             advice.apply_recommendation(SETTINGS, recommendation))
        self.assertEqual(w.applyRecommendation(next(i for i, r in enumerate(w.recommendations)
                                                    if r["changes"] == {"sampling_percentage": 25.0}), values),
                         {"samplingPercentage": 25.0})

    def test_cancel_ends_the_check_and_a_missing_volume_is_one_clear_error(self):
        w = self.workflow
        self.assertTrue(w.startAccuracyCheck(self.fixed, SETTINGS, self.folder / "check",
                                             candidates=["sampling-25", "sampling-10"], seeds=2,
                                             executor="sequential"))
        w.cancelAccuracyCheck()
        self.assertTrue(w.accuracyStatus.startswith("Cancelling"))
        pollUntilEnd(self, w, seconds=60)
        self.assertFalse(w.accuracyRunning)
        self.assertEqual(w.error, "")
        self.assertIn("ancelled", w.accuracyStatus)
        self.assertLess(len(w.accuracyRanking), 3)  # not every candidate ran
        errors = w.errorCount
        self.assertFalse(w.startAccuracyCheck(None, SETTINGS))
        self.assertEqual(w.errorCount, errors + 1)
        self.assertIn("choose a fixed volume", w.error)
        self.assertFalse(w.accuracyRunning)


if __name__ == "__main__":
    unittest.main()
