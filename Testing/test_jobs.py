"""The job controller (SpacingRegistrationLib/jobs.py) on its own: real child processes, no Qt, no MRML.

Protocol order, cancel within a second (a registration leaves nothing that looks finished, a study keeps its
finished runs and resumes), and a child that fails or dies gives one sentence and no result.
"""

import testdata

import os
import signal
import tempfile
import time
import unittest
from pathlib import Path

from SpacingRegistrationLib import jobs
from SpacingRegistrationLib.images import InputImageError
from SpacingRegistrationLib.registration import RegistrationFailedError
from SpacingRegistrationLib.settings import SettingsError, from_dict
from SpacingRegistrationLib.study_spec import StudySpec
from SpacingRegistrationLib.study_store import open_study

#: A registration that runs for minutes unless stopped.
LONG = from_dict({"scales_estimator": "none", "optimizer": "gradient_descent",
                  "gradient_descent": {"number_of_iterations": 1000000, "learning_rate": 1e-6,
                                       "convergence_minimum_value": 1e-30, "estimate_learning_rate": "never"}})


def eventsUntil(job, predicate, seconds=60.0) -> list:
    """Poll (as a front end's loop does) until an event satisfies ``predicate``; the events seen."""
    events, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        for event in job.poll():
            events.append(event)
            if predicate(event):
                return events
        time.sleep(0.02)
    raise AssertionError(f"no such event within {seconds} s; got {[e['event'] for e in events]}")


class RegistrationJobTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pair = testdata.pet_like_pair()

    def test_progress_events_arrive_in_order(self):
        job = jobs.start_registration(self.pair.fixed, self.pair.moving, testdata.FAST_SETTINGS)
        self.addCleanup(job.remove_folder)
        events = eventsUntil(job, lambda e: e["event"] == "end", 120)
        kinds = " ".join(e["event"] for e in events)
        self.assertRegex(kinds, r"^started( iteration)+( warning)* result end$")
        counts = [e["count"] for e in events if e["event"] == "iteration"]
        self.assertEqual(counts, list(range(1, len(counts) + 1)))
        self.assertEqual(events[0]["pid"], job.process.pid)
        self.assertEqual(job.state, jobs.FINISHED)
        self.assertEqual(events[-2]["iterations"], len(counts))
        result = job.registration_result()
        self.assertEqual(len(result.trace), len(counts))
        self.assertTrue((job.folder / "output" / "transform.tfm").is_file())
        self.assertEqual(job.poll(), [])  # nothing after the end

    def test_cancel_ends_the_child_within_a_second_and_returns_nothing(self):
        job = jobs.start_registration(self.pair.fixed, self.pair.moving, LONG)
        self.addCleanup(job.remove_folder)
        eventsUntil(job, lambda e: e["event"] == "iteration")
        started = time.monotonic()
        job.cancel()
        self.assertTrue(job.wait(1.0), "the child still runs a second after cancel")
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertIsNotNone(job.process.poll())
        self.assertEqual(job.state, jobs.CANCELLED)
        self.assertIsNone(job.result)
        self.assertFalse((job.folder / "output" / jobs.RESULT_PICKLE).exists())
        with self.assertRaisesRegex(jobs.JobError, "cancelled"):
            job.registration_result()
        self.assertEqual(job.poll()[-1]["event"], "end")

    def test_killed_child_is_one_clear_error(self):
        job = jobs.start_registration(self.pair.fixed, self.pair.moving, LONG)
        self.addCleanup(job.remove_folder)
        eventsUntil(job, lambda e: e["event"] == "iteration")
        os.kill(job.process.pid, signal.SIGKILL)
        end = eventsUntil(job, lambda e: e["event"] == "end", 10)[-1]
        self.assertEqual(end["state"], jobs.FAILED)
        self.assertEqual(job.error, end["error"])
        self.assertRegex(job.error, r"^The registration process was killed \(SIGKILL; .*\) and left no result\.$")
        self.assertIsNone(job.result)

    def test_engine_error_in_the_child_is_its_one_line_message(self):
        constant = testdata.sitk.Image(self.pair.fixed.GetSize(), testdata.sitk.sitkFloat32)
        constant.CopyInformation(self.pair.fixed)
        job = jobs.start_registration(constant, self.pair.moving, testdata.FAST_SETTINGS)
        self.addCleanup(job.remove_folder)
        self.assertTrue(job.wait(60))
        self.assertEqual(job.state, jobs.FAILED)
        self.assertIn("constant", job.error)
        self.assertNotIn("\n", job.error)
        self.assertEqual(job.process.returncode, 2)
        with self.assertRaisesRegex(InputImageError, "constant"):  # the child's input error, as its own type
            job.registration_result()

    def test_an_itk_failure_in_the_child_comes_back_as_its_one_sentence(self):
        starved = testdata.FAST_SETTINGS.replace(sampling_percentage=1e-5)
        job = jobs.start_registration(self.pair.fixed, self.pair.moving, starved)
        self.addCleanup(job.remove_folder)
        self.assertTrue(job.wait(60))
        self.assertEqual((job.state, job.process.returncode), (jobs.FAILED, 2))
        with self.assertRaisesRegex(RegistrationFailedError, "the metric has too few samples"):
            job.registration_result()

    def test_child_environment_puts_the_library_first(self):
        environment = jobs.child_environment({"PYTHONPATH": "/elsewhere"})
        self.assertEqual(environment["PYTHONPATH"].split(os.pathsep), [str(jobs.LIBRARY_ROOT), "/elsewhere"])
        self.assertEqual(jobs.command("py", Path("f"))[1:4], ["-m", "SpacingRegistrationLib.cli", "job"])


class StudyJobTest(unittest.TestCase):
    def test_dask_without_a_scheduler_is_refused_before_a_job_starts(self):
        pair = testdata.pet_like_pair()
        spec = StudySpec(settings=testdata.FAST_SETTINGS, spacings=(1.0,), repeats=1)
        with tempfile.TemporaryDirectory() as folder:
            for start in (lambda: jobs.start_study(pair.fixed, pair.moving, spec, Path(folder) / "study",
                                                   executor="dask", folder=Path(folder) / "job"),
                          lambda: jobs.start_accuracy_check(pair.fixed, testdata.FAST_SETTINGS, Path(folder) / "check",
                                                            executor="dask", folder=Path(folder) / "job")):
                with self.assertRaisesRegex(SettingsError, "running Dask scheduler"):
                    start()
            self.assertEqual(list(Path(folder).iterdir()), [])

    def test_cancel_keeps_finished_runs_and_the_study_resumes(self):
        pair = testdata.pet_like_pair()
        spec = StudySpec(settings=testdata.FAST_SETTINGS, spacings=(1.0, 2.0, 3.0, 4.0), repeats=3,
                         modes=("native-reproducible", "normalised-reproducible"))
        with tempfile.TemporaryDirectory() as folder:
            study = Path(folder) / "study"
            job = jobs.start_study(pair.fixed, pair.moving, spec, study, executor="pool", workers=2)
            self.addCleanup(job.remove_folder)
            events = eventsUntil(job, lambda e: e["event"] == "run", 180)
            started = time.monotonic()
            job.cancel()
            self.assertTrue(job.wait(1.0), "the study's processes still run a second after cancel")
            self.assertLess(time.monotonic() - started, 1.0)
            events += job.poll()
            self.assertEqual(job.state, jobs.CANCELLED)
            self.assertEqual(events[1]["event"], "plan")
            self.assertEqual((events[1]["executor"], events[1]["workers"], events[1]["total"]), ("pool", 2, 24))
            reported = {e["run_id"] for e in events if e["event"] == "run"}
            kept = set(open_study(study).rows)
            self.assertTrue(reported <= kept, (reported, kept))
            self.assertLess(len(kept), 24)

            again = jobs.start_study(pair.fixed, pair.moving, spec, study, executor="pool", workers=2)
            self.addCleanup(again.remove_folder)
            events = eventsUntil(again, lambda e: e["event"] == "end", 300)
            self.assertEqual(again.state, jobs.FINISHED, again.error)
            self.assertEqual(again.result["skipped"], len(kept))
            self.assertEqual(again.result["runs"], 24)
            dones = [e["done"] for e in events if e["event"] == "run"]
            self.assertEqual(dones, sorted(dones))
            store, analysis, paths = again.study_result()
            self.assertEqual(len(store.rows), 24)
            self.assertTrue(Path(paths["html"]).is_file())
            self.assertEqual(len(analysis.groups), 8)


class AccuracyJobTest(unittest.TestCase):
    def test_accuracy_check_runs_as_a_job_and_its_outcome_comes_back(self):
        pair = testdata.pet_like_pair()
        with tempfile.TemporaryDirectory() as folder:
            job = jobs.start_accuracy_check(pair.fixed, testdata.FAST_SETTINGS, Path(folder) / "check",
                                            candidates=["yours", "reproducible"], options={"seeds": 2}, workers=2)
            self.addCleanup(job.remove_folder)
            events = eventsUntil(job, lambda e: e["event"] == "end", 300)
            self.assertEqual(job.state, jobs.FINISHED, job.error)
            runs = [e for e in events if e["event"] == "run"]
            self.assertEqual({e["candidate"] for e in runs}, {"yours", "reproducible"})
            self.assertEqual(len(runs), 4)
            outcome = job.accuracy_result()
            self.assertEqual(sorted(r["candidate"] for r in outcome.ranking), ["reproducible", "yours"])
            self.assertTrue(all(Path(p).is_file() for p in outcome.paths.values()))
            self.assertEqual(events[-2]["paths"], {name: str(path) for name, path in outcome.paths.items()})


if __name__ == "__main__":
    unittest.main()
