"""Study scheduling: pools and Dask get the costliest runs first (issue 10 §3); orders only, never timings (the
queue's clock is a counter the test sets)."""

import tempfile
import unittest
from pathlib import Path

from testdata import pet_like_pair_files

from SpacingRegistrationLib.settings import RegistrationSettings
from SpacingRegistrationLib.study_runner import RunQueue, estimated_cost, longest_first
from SpacingRegistrationLib.study_spec import StudySpec


def runs_of(estimator: str, percentage: float = 2.5):
    spec = StudySpec(settings=RegistrationSettings(scales_estimator=estimator, sampling_percentage=percentage),
                     spacings=(1.0, 4.0), repeats=2, modes=("native-reproducible",))
    return spec.runs()


class LongestFirstTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory()
        cls.fixed, _ = pet_like_pair_files(Path(cls.folder.name))

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def test_the_reported_estimator_costs_most_and_its_fast_equivalent_little_more_than_none(self):
        size = (47, 56, 49)
        reported, quick, none = (estimated_cost(runs_of(name)[0], size)
                                 for name in ("physical_shift", "physical_shift_fast", "none"))
        self.assertGreater(reported, 5 * quick)
        self.assertGreater(quick, none)
        self.assertGreater(estimated_cost(runs_of("none", 25.0)[0], size), none)

    def test_costliest_runs_come_first_then_larger_native_spacings_and_equal_ones_keep_their_order(self):
        cheap, dear, middle = runs_of("none"), runs_of("physical_shift"), runs_of("none", 25.0)
        ordered = longest_first(cheap + middle + dear, self.fixed)
        self.assertEqual([run.settings.scales_estimator for run in ordered[:len(dear)]], ["physical_shift"] * len(dear))
        larger_first = [run for runs in (dear, middle, cheap) for run in sorted(runs, key=lambda r: -r.spacing)]
        self.assertEqual(ordered, larger_first)
        normalised = StudySpec(spacings=(1.0, 4.0), repeats=2, modes=("normalised-reproducible",)).runs()
        self.assertEqual(longest_first(normalised, self.fixed), normalised)

    def test_one_run_of_each_group_first_then_the_group_that_took_longest(self):
        now = [0.0]
        runs = StudySpec(spacings=(1.0, 4.0, 10.0), repeats=3, modes=("native-reproducible",)).runs()
        queue = RunQueue(runs, self.fixed, clock=lambda: now[0])
        first = [queue.take() for _ in range(2)]
        self.assertEqual([run.spacing for run in first], [10.0, 4.0])
        now[0] = 5.0
        queue.finished(first[1])  # spacing 4 took 5 s; spacing 10 is still running
        self.assertEqual(queue.take().spacing, 1.0)  # a group not yet seen before any known one
        now[0] = 6.0
        queue.finished(first[0])  # spacing 10 took 6 s; spacing 1 has run 1 s so far
        self.assertEqual(queue.take().spacing, 10.0)
        now[0] = 20.0  # spacing 1 has now run longer than any finished run: it goes next
        self.assertEqual(queue.take().spacing, 1.0)
        self.assertEqual([queue.take().spacing for _ in range(len(queue))], [1.0, 10.0, 4.0, 4.0])

    def test_a_run_put_back_is_taken_again(self):
        queue = RunQueue(runs_of("none"), self.fixed, clock=lambda: 0.0)
        run = queue.take()
        queue.put_back(run)
        self.assertEqual(len(queue), len(runs_of("none")))
        self.assertIn(run, [queue.take() for _ in range(len(queue))])

    def test_no_runs_need_no_image(self):
        self.assertEqual(longest_first([], Path(self.folder.name) / "missing.nrrd"), [])


if __name__ == "__main__":
    unittest.main()
