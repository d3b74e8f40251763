"""Studies: the three executions agree, nothing finished is lost, the report says what the numbers say."""

import html.parser
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from test_report_pictures import pictures
from testdata import FAST_SETTINGS as FAST, SMALL_STUDY as SPEC, pet_like_pair

from SpacingRegistrationLib import cli
from SpacingRegistrationLib.anatomy_maps import OUTLINE_COLOUR
from SpacingRegistrationLib.report import GROUP_COLUMNS, number, write_report
from SpacingRegistrationLib.settings import SettingsError
from SpacingRegistrationLib.study_runner import run_study
from SpacingRegistrationLib.study_spec import StudySpec
from SpacingRegistrationLib.study_store import StudyFolderError, open_study
from SpacingRegistrationLib.variability import analyse



def parameters(folder) -> dict[str, np.ndarray]:
    store = open_study(folder)
    return {run_id: np.asarray(store.read_transform(run_id).GetParameters()) for run_id in store.rows}


def assert_same_results(test, folder_a, folder_b):
    a, b = parameters(folder_a), parameters(folder_b)
    test.assertEqual(sorted(a), sorted(b))
    for run_id in a:
        np.testing.assert_array_equal(a[run_id], b[run_id], err_msg=run_id)
    rows_a, rows_b = open_study(folder_a).rows, open_study(folder_b).rows
    for run_id in a:
        test.assertEqual(rows_a[run_id]["trace"][-1]["metric"], rows_b[run_id]["trace"][-1]["metric"])
        test.assertEqual(rows_a[run_id]["summary"]["metric_reevaluated"], rows_b[run_id]["summary"]["metric_reevaluated"])


def worker_pids() -> list[int]:
    """Live process-pool workers started by this process (spawned Python children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        parent = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        if parent == os.getpid() and "spawn_main" in command:
            pids.append(int(entry.name))
    return pids


class ExecutionTest(unittest.TestCase):
    """Sequential, process pool and Dask give the same bits; interruptions change nothing."""

    @classmethod
    def setUpClass(cls):
        cls.root = Path(tempfile.mkdtemp())
        cls.pair = pet_like_pair()
        cls.sequential = cls.root / "sequential"
        outcome = run_study(SPEC, cls.pair.fixed, cls.pair.moving, cls.sequential, executor="sequential")
        assert outcome.finished, outcome

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def test_pool_equals_sequential(self):
        outcome = run_study(SPEC, self.pair.fixed, self.pair.moving, self.root / "pool", executor="pool", workers=2)
        self.assertTrue(outcome.finished)
        self.assertEqual(len(outcome.completed), 8)
        assert_same_results(self, self.sequential, self.root / "pool")

    def test_dask_equals_sequential(self):
        from distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
            outcome = run_study(SPEC, self.pair.fixed, self.pair.moving, self.root / "dask", executor="dask",
                                scheduler=cluster.scheduler_address)
        self.assertTrue(outcome.finished, outcome.failed)
        assert_same_results(self, self.sequential, self.root / "dask")

    def test_resumed_study_equals_uninterrupted(self):
        folder = self.root / "resumed"
        cancel = threading.Event()

        def stop_after_three(done, total, row):
            if done == 3:
                cancel.set()

        first = run_study(SPEC, self.pair.fixed, self.pair.moving, folder, executor="sequential",
                          progress=stop_after_three, cancel=cancel)
        self.assertTrue(first.cancelled)
        self.assertEqual(len(open_study(folder).rows), 3)
        second = run_study(SPEC, self.pair.fixed, self.pair.moving, folder, executor="sequential")
        self.assertTrue(second.finished)
        self.assertEqual(len(second.skipped), 3)
        self.assertEqual(len(second.completed), 5)
        assert_same_results(self, self.sequential, folder)

    def test_killed_worker_is_retried_and_the_study_completes(self):
        folder = self.root / "killed"
        killed = []

        def kill_a_worker(done, total, row):
            if not killed:
                pids = worker_pids()
                self.assertTrue(pids, "no pool worker found to kill")
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        outcome = run_study(SPEC, self.pair.fixed, self.pair.moving, folder, executor="pool", workers=2,
                            progress=kill_a_worker)
        self.assertEqual(len(killed), 1)
        self.assertGreaterEqual(outcome.worker_restarts, 1)
        self.assertTrue(outcome.finished, outcome.failed)
        assert_same_results(self, self.sequential, folder)

    def test_damaged_rows_are_dropped_and_redone(self):
        folder = self.root / "damaged"
        shutil.copytree(self.sequential, folder)
        runs = folder / "runs.jsonl"
        lines = runs.read_text().splitlines(keepends=True)
        lost = json.loads(lines[1])["run_id"]
        (folder / "transforms" / f"{json.loads(lines[4])['run_id']}.tfm").unlink()
        runs.write_text("".join(lines[:1] + lines[2:]) + lines[1][:40])  # a row cut by a crash, at the end
        store = open_study(folder)
        self.assertEqual(store.dropped_lines, 2)
        self.assertEqual(len(store.pending()), 2)
        self.assertIn(lost, {run.run_id for run in store.pending()})
        outcome = run_study(SPEC, self.pair.fixed, self.pair.moving, folder, executor="sequential")
        self.assertEqual(len(outcome.completed), 2)
        assert_same_results(self, self.sequential, folder)

    def test_a_folder_holding_another_study_is_refused(self):
        other = StudySpec(settings=FAST, spacings=(1.0, 2.0), repeats=2, modes=SPEC.modes)
        with self.assertRaisesRegex(StudyFolderError, "holds a different study"):
            run_study(other, self.pair.fixed, self.pair.moving, self.sequential, executor="sequential")
        with self.assertRaisesRegex(StudyFolderError, "holds a different study"):
            run_study(SPEC, self.pair.moving, self.pair.fixed, self.sequential, executor="sequential")


class SpecTest(unittest.TestCase):
    def test_bad_specifications_are_named(self):
        cases = {
            "at least one spacing": dict(spacings=()),
            "duplicate spacing": dict(spacings=(1.0, 1.0)),
            "spacings must be > 0": dict(spacings=(1.0, 0.0)),
            "repeats must be": dict(repeats=0),
            "one seed per repeat": dict(repeats=2, seeds=(1,)),
            "mode must be": dict(modes=("native-fast",)),
            "reference_spacing": dict(reference_spacing=3.0),
        }
        for expected, change in cases.items():
            with self.subTest(expected), self.assertRaisesRegex(SettingsError, expected):
                StudySpec(**{"settings": FAST, **change})

    def test_runs_carry_mode_spacing_and_seed(self):
        spec = StudySpec(settings=FAST, spacings=(1.0, 10.0), repeats=3, seed_policy="per_repeat",
                         modes=("native-default", "normalised-reproducible"))
        runs = spec.runs()
        self.assertEqual(len(runs), 12)
        self.assertEqual([r.seed for r in runs[:3]], [1, 2, 3])
        last = runs[-1]
        self.assertEqual(last.run_id, "normalised-reproducible_s10_r2")
        self.assertTrue(last.settings.normalised_units and last.settings.reproducible)
        self.assertEqual(last.settings.spacing_override, 10.0)
        self.assertFalse(runs[0].settings.reproducible)

    def test_unwritable_output_is_refused(self):
        with tempfile.NamedTemporaryFile() as blocker:
            with self.assertRaisesRegex(StudyFolderError, "cannot write the study"):
                run_study(SPEC, pet_like_pair().fixed, pet_like_pair().moving, Path(blocker.name) / "study",
                          executor="sequential")


class _CellReader(html.parser.HTMLParser):
    """Cells of the report's tables, by table id: each cell's full-precision data-value (the text is rounded)."""

    def __init__(self):
        super().__init__()
        self.tables, self.table = {}, None

    def handle_starttag(self, tag, attributes):
        attributes = dict(attributes)
        if tag == "table":
            self.table = self.tables.setdefault(attributes["id"], [])
        elif tag == "tr" and self.table is not None:
            self.table.append({})
        elif tag == "td":
            self.table[-1][attributes["data-column"]] = attributes["data-value"]

    def handle_endtag(self, tag):
        if tag == "table":
            self.table = None


class ReportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.folder = Path(tempfile.mkdtemp())
        pair = pet_like_pair()
        # Runs at spacing 10 with one line-search evaluation never move: an identity run for the diagnosis.
        spec = StudySpec(settings=FAST, spacings=(1.0, 4.0, 10.0), repeats=2,
                         modes=("native-default", "native-reproducible", "normalised-reproducible"))
        run_study(spec, pair.fixed, pair.moving, cls.folder, executor="sequential")
        cls.identity = cls.folder / "identity"
        identity_spec = StudySpec(settings=FAST.replace(lbfgs2={"line_search_maximum_evaluations": 1}),
                                  spacings=(1.0,), repeats=1, modes=("native-reproducible",))
        run_study(identity_spec, pair.fixed, pair.moving, cls.identity, executor="sequential")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)

    def test_report_numbers_equal_the_json(self):
        store = open_study(self.folder)
        paths = write_report(store, analyse(store), self.folder / "report")
        data = json.loads(paths["json"].read_text())
        reader = _CellReader()
        reader.feed(paths["html"].read_text())
        self.assertEqual(len(reader.tables["groups"]), 1 + len(data["groups"]))
        for shown, group in zip(reader.tables["groups"][1:], data["groups"]):
            for column in GROUP_COLUMNS:
                self.assertEqual(shown[column], number(group[column]), column)
        for shown, run in zip(reader.tables["runs"][1:], data["runs"]):
            self.assertEqual(shown["metric_reevaluated"], number(run["metric_reevaluated"]))
            self.assertEqual(shown["iterations"], number(run["iterations"]))
        self.assertIn("<svg", paths["html"].read_text())
        self.assertNotIn("src=\"http", paths["html"].read_text())

    def test_diagnosis_follows_the_numbers(self):
        analysis = analyse(open_study(self.folder))
        kinds = {s["kind"] for s in analysis.statements}
        self.assertIn("spacing_effect", kinds)
        self.assertIn("normalised_units", kinds)
        normalised = next(s for s in analysis.statements if s["kind"] == "normalised_units")
        self.assertIn("remove the spacing effect", normalised["text"])
        self.assertLess(normalised["figures"]["max_difference_voxels"], 1e-9)
        native = analysis.group("native-reproducible", 4.0)
        self.assertTrue(native.bitwise_identical)
        self.assertEqual(native.spread_voxels["max"], 0.0)
        self.assertGreater(native.difference_from_reference_voxels["max"], 0.01)

    def test_diagnosis_names_an_identity_run(self):
        analysis = analyse(open_study(self.identity))
        statement = next(s for s in analysis.statements if s["kind"] == "identity_run")
        self.assertIn("never moved in 1 of 1 runs", statement["text"])
        self.assertIn("first line search failed", statement["text"])
        self.assertEqual(analysis.groups[0].never_moved, 1)

    def test_spread_maps_are_images_on_the_fixed_grid(self):
        store = open_study(self.folder)
        analysis = analyse(store, output=self.folder / "maps")
        group = analysis.group("native-default", 1.0)
        spread = sitk.ReadImage(group.spread_map)
        fixed = sitk.ReadImage(str(store.fixed_path))
        self.assertEqual(spread.GetSize(), fixed.GetSize())
        self.assertEqual(spread.GetSpacing(), fixed.GetSpacing())
        self.assertAlmostEqual(float(sitk.GetArrayViewFromImage(spread).max()), group.spread_voxels["max"], places=6)

    def test_difference_maps_are_the_distance_between_mean_fields(self):
        """Each other spacing's map is |mean field - the reference spacing's mean field| in voxels of each run's own
        grid, recomputed here from the stored transforms; the reference spacing has no map."""
        store = open_study(self.folder)
        analysis = analyse(store, output=self.folder / "maps")
        fixed = sitk.ReadImage(str(store.fixed_path))
        reference = store.spec.reference

        def mean_field_voxels(mode, spacing):
            """Along the physical axes: the direction is a rotation, so lengths in voxels are lengths in mm / spacing."""
            return np.mean([sitk.GetArrayFromImage(sitk.TransformToDisplacementField(
                store.read_transform(run_id), sitk.sitkVectorFloat64, fixed.GetSize(), fixed.GetOrigin(),
                (spacing,) * 3, fixed.GetDirection())) / spacing
                for run_id, row in store.rows.items() if row["mode"] == mode and row["spacing"] == spacing], axis=0)

        for mode in store.spec.modes:
            self.assertIsNone(analysis.group(mode, reference).difference_map)
            at_reference = mean_field_voxels(mode, reference)
            for spacing in set(store.spec.spacings) - {reference}:
                group = analysis.group(mode, spacing)
                written = sitk.ReadImage(group.difference_map)
                self.assertEqual((written.GetSize(), written.GetSpacing(), written.GetOrigin()),
                                 (fixed.GetSize(), fixed.GetSpacing(), fixed.GetOrigin()))
                expected = np.linalg.norm(mean_field_voxels(mode, spacing) - at_reference, axis=-1)
                np.testing.assert_allclose(sitk.GetArrayFromImage(written), expected, rtol=1e-6, atol=1e-12)
                self.assertAlmostEqual(group.difference_from_reference_voxels["max"], expected.max(), places=12)
        self.assertGreater(analysis.group("native-reproducible", 10.0).difference_from_reference_voxels["max"], 0.01)
        data = json.loads(write_report(store, analysis, self.folder / "maps_report")["json"].read_text())
        self.assertEqual([g["difference_map"] for g in data["analysis"]["groups"]],
                         [g.difference_map for g in analysis.groups])

    def test_command_line_study_and_report(self):
        out = self.folder / "cli"
        fixed, moving = open_study(self.folder).fixed_path, open_study(self.folder).moving_path
        status = cli.main(["study", "--fixed", str(fixed), "--moving", str(moving), "--output", str(out),
                           "--spacings", "1", "4", "--repeats", "1", "--modes", "native-reproducible",
                           "--executor", "sequential", "--scales-estimator", "none",
                           "--lbfgs2-number-of-iterations", "2"])
        self.assertEqual(status, 0)
        self.assertTrue((out / "report" / "report.html").is_file())
        self.assertEqual(len(open_study(out).rows), 2)
        (out / "report" / "report.html").unlink()
        self.assertEqual(cli.main(["report", "--study", str(out)]), 0)
        self.assertTrue((out / "report" / "report.html").is_file())
        self.assertEqual(cli.main(["study", "--fixed", str(fixed), "--moving", str(moving), "--output", str(out),
                                   "--spacings", "1", "1"]), 2)


class MaskedDifferenceMapTest(unittest.TestCase):
    def test_difference_is_measured_inside_the_mask_and_outlined(self):
        """With a study mask: the figures are the map's largest value inside the mask, the report's slices go through
        it and the mask's outline is drawn over the anatomy; the map itself covers the whole grid."""
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, folder, True)
        pair = pet_like_pair()
        inside = np.zeros(pair.fixed.GetSize()[::-1], bool)
        inside[10:30, 12:40, 8:30] = True
        mask = sitk.GetImageFromArray(inside.astype(np.uint8))
        mask.CopyInformation(pair.fixed)
        spec = StudySpec(settings=FAST, spacings=(1.0, 4.0), repeats=1, modes=("native-reproducible",))
        run_study(spec, pair.fixed, pair.moving, folder / "study", executor="sequential", mask=mask)
        store = open_study(folder / "study")
        analysis = analyse(store, output=folder / "maps", mask=store.mask_array())
        group = analysis.group("native-reproducible", 4.0)
        difference = sitk.GetArrayFromImage(sitk.ReadImage(group.difference_map))
        self.assertAlmostEqual(group.difference_from_reference_voxels["max"], float(difference[inside].max()), places=6)
        self.assertNotEqual(difference[inside].max(), difference.max(), "the largest difference is outside the mask")
        page = write_report(store, analysis, folder / "report")["html"].read_text()
        figure = page[page.index("Difference from the reference spacing 1 per voxel"):]
        figure = figure[:figure.index("</figure>")]
        peak = np.unravel_index(np.where(inside, difference, -np.inf).argmax(), inside.shape)
        self.assertEqual([int(i) for i in re.findall(r"(?:axial|coronal|sagittal) [kji]=(\d+)", figure)],
                         [int(i) for i in peak])
        self.assertIn("largest difference inside the mask", figure)
        found = pictures(figure)
        self.assertEqual(len(found), 3)
        for _, pixels in found:
            self.assertTrue((pixels[..., :3] == OUTLINE_COLOUR).all(axis=-1).any(), "the mask outline is drawn")


if __name__ == "__main__":
    unittest.main()
