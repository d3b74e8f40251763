"""The accuracy check and the advice: synthetic deformation, ranking as studies, outputs, advice, Logic, CLI, resume.

Runs on a 24^3 crop of the real mouse FDG PET gate (skipped with the reason when the shared data are absent), with
a few LBFGS2 iterations and 2 sampling seeds per candidate.
"""

import testdata  # noqa: F401  (puts SpacingRegistration/ on sys.path)

import contextlib
import csv
import io
import json
import shutil
import tempfile
import threading
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpacingRegistrationLib import accuracy, advice, cli
from SpacingRegistrationLib.displacement import displacement_array
from SpacingRegistrationLib.settings import RegistrationSettings, leaf_paths, to_dict
from SpacingRegistrationLib.study_store import StudyFolderError, open_study

GATE = testdata.SHARED_DATA / "mouse_fdg_pet_gate_T.nrrd"
#: Your settings in these tests: the reported set-up, reproducible, 10 iterations.
SETTINGS = RegistrationSettings(reproducible=True).replace(lbfgs2={"number_of_iterations": 10})
OPTIONS = accuracy.CheckOptions(seeds=2)


def gate_crop() -> sitk.Image:
    """The central 24^3 voxels of the real mouse PET gate (0.8 mm)."""
    return sitk.ReadImage(str(GATE))[8:32, 8:32, 8:32]


def oblique_crop() -> sitk.Image:
    """The gate crop with anisotropic spacing, an offset origin and a rotated direction (NRRD rounds it)."""
    image = sitk.ReadImage(str(GATE))[8:32, 6:34, 10:30]
    image.SetSpacing((0.8, 1.1, 1.6))
    image.SetOrigin((-7.0, 3.0, 11.0))
    angle = 0.3
    image.SetDirection((np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0))
    return image


def _leaf_values(settings: RegistrationSettings) -> dict:
    values = to_dict(settings)
    result = {}
    for path in leaf_paths():
        first, _dot, rest = path.partition(".")
        result[path] = values[first] if not rest else values[first][int(rest)] if rest.isdigit() else values[first][rest]
    return result


@unittest.skipUnless(GATE.is_file(), f"the real mouse PET gate is not at {GATE}")
class SyntheticDeformationTest(unittest.TestCase):
    def test_no_folding_requested_amplitude_and_not_representable(self):
        image = gate_crop()
        for amplitude, seed in ((3.0, 0), (1.5, 7)):
            pair = accuracy.make_pair(image, accuracy.CheckOptions(amplitude_voxels=amplitude, deformation_seed=seed),
                                      avoid_meshes=[[2, 2, 2], [4, 4, 4]])
            self.assertAlmostEqual(pair.max_voxels, amplitude, places=6)
            field = np.linalg.norm(pair.truth_mm / 0.8, axis=-1)
            self.assertAlmostEqual(float(field.max()), amplitude, places=6)
            self.assertGreater(pair.min_jacobian, 0.0)
            self.assertTrue(all(4 % m and 2 % m for m in pair.truth_mesh), pair.truth_mesh)
            for mesh in ([2, 2, 2], [4, 4, 4]):
                floor = accuracy.representation_floor(pair.truth_mm, image, mesh)
                self.assertGreater(floor["mean_voxels"], 1e-3, f"the truth is representable on mesh {mesh}")
        # The fit itself is exact for a field the registration grid can represent.
        control = sitk.BSplineTransformInitializer(image, [4, 4, 4])
        control.SetParameters(np.random.default_rng(3).standard_normal(len(control.GetParameters())).tolist())
        self.assertLess(accuracy.representation_floor(displacement_array(control, image), image, [4, 4, 4])["max_voxels"],
                        1e-9)
        # The moving image is the user's image; the fixed one is it deformed.
        pair = accuracy.make_pair(image, accuracy.CheckOptions())
        np.testing.assert_array_equal(sitk.GetArrayFromImage(pair.moving), sitk.GetArrayFromImage(image))
        self.assertFalse(np.array_equal(sitk.GetArrayFromImage(pair.fixed), sitk.GetArrayFromImage(image)))

    def test_oblique_anisotropic_image_with_a_mask_noise_and_intensity_change(self):
        image = oblique_crop()
        control = sitk.BSplineTransformInitializer(image, [3, 4, 5])
        control.SetParameters(np.random.default_rng(4).standard_normal(len(control.GetParameters())).tolist())
        self.assertLess(accuracy.representation_floor(displacement_array(control, image), image, [3, 4, 5])["max_voxels"],
                        1e-6)
        mask = sitk.GetArrayFromImage(image) > 20
        options = accuracy.CheckOptions(seeds=1, noise_percent=2.0, intensity_gamma=0.7)
        with tempfile.TemporaryDirectory() as folder:
            outcome = accuracy.check_accuracy(image, Path(folder) / "check", SETTINGS.replace(scales_estimator="none"),
                                              candidates=["sampling-25"], options=options, mask=mask,
                                              executor="sequential")
            self.assertEqual(len(outcome.completed), 2)
            self.assertTrue(any("anisotropic" in note for note in outcome.notes), outcome.notes)
            self.assertEqual({row["spacing"] for row in outcome.ranking}, {float(np.mean(image.GetSpacing()))})
            store = open_study(Path(folder) / "check" / "candidates" / "yours")  # its inputs survive the NRRD round trip
            self.assertEqual(len(store.rows), 1)
            np.testing.assert_array_equal(store.mask_array(), mask)  # the candidate's metric ran on the mask too
            analysis = json.loads((store.folder / "report" / "analysis.json").read_text())["analysis"]
            self.assertEqual(analysis["truth"]["voxels"], int(mask.sum()))

    def test_a_folding_amplitude_is_refused(self):
        with self.assertRaisesRegex(accuracy.AccuracyCheckError, "folds"):
            accuracy.make_pair(gate_crop(), accuracy.CheckOptions(amplitude_voxels=20.0))


@unittest.skipUnless(GATE.is_file(), f"the real mouse PET gate is not at {GATE}")
class AccuracyCheckTest(unittest.TestCase):
    """One check shared by the tests: your settings, a deliberately bad candidate (0.5 % sampling), 25 % sampling."""

    @classmethod
    def setUpClass(cls):
        cls.folder = Path(tempfile.mkdtemp())
        cls.image = gate_crop()
        cls.outcome = accuracy.check_accuracy(cls.image, cls.folder / "check", SETTINGS,
                                              candidates=["sampling-0.5", "sampling-25"], options=OPTIONS,
                                              executor="sequential")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)

    def _row(self, name):
        return next(row for row in self.outcome.ranking if row["candidate"] == name)

    def test_bad_candidate_ranks_below_yours(self):
        yours, bad = self._row("yours"), self._row("sampling-0.5")
        self.assertGreater(bad["rank"], yours["rank"])
        self.assertGreater(bad["error_mean_voxels"] - yours["error_mean_voxels"], accuracy.tie_threshold(bad, yours))
        self.assertLess(yours["error_mean_voxels"], yours["identity_error_mean_voxels"])
        worse = [r for r in self.outcome.recommendations if r.figures.get("candidate") == "sampling-0.5"]
        self.assertEqual([r.kind for r in worse], ["worse"])
        self.assertEqual(worse[0].changes, {"sampling_percentage": 0.5})
        # Ranked by mean error over the seeds.
        errors = [row["error_mean_voxels"] for row in self.outcome.ranking]
        self.assertEqual(errors, sorted(errors))

    def test_candidates_are_studies_with_the_truth(self):
        for row in self.outcome.ranking:
            store = open_study(self.folder / "check" / "candidates" / row["candidate"])
            self.assertEqual(len(store.rows), 2)
            self.assertEqual([run.seed for run in store.spec.runs()], [1, 2])
            self.assertTrue(store.truth_path.is_file())
            self.assertTrue((self.folder / "check" / row["report"]).is_file())
            run_errors = json.loads((store.folder / "report" / "analysis.json").read_text())["analysis"]["run_errors"]
            self.assertAlmostEqual(np.mean([e["recovered"]["mean_voxels"] for e in run_errors.values()]),
                                   row["error_mean_voxels"], places=12)
        self.assertEqual(self._row("sampling-0.5")["mode"], "native-reproducible")

    def test_ranking_json_csv_and_page_agree(self):
        paths = self.outcome.paths
        saved = json.loads(paths["json"].read_text())
        self.assertEqual(saved["ranking"], json.loads(json.dumps(self.outcome.ranking)))
        self.assertEqual(saved["negligible_voxels"], accuracy.NEGLIGIBLE_VOXELS)
        with paths["csv"].open() as stream:
            rows = list(csv.DictReader(stream))
        self.assertEqual([r["candidate"] for r in rows], [r["candidate"] for r in self.outcome.ranking])
        for row, expected in zip(rows, self.outcome.ranking):
            self.assertEqual(int(row["rank"]), expected["rank"])
            self.assertEqual(float(row["error_mean_voxels"]), expected["error_mean_voxels"])
            self.assertEqual(float(row["error_worst_voxels"]), expected["error_worst_voxels"])
        page = paths["html"].read_text()
        for row in self.outcome.ranking:
            self.assertIn(f'href="{row["report"]}"', page)
        self.assertIn("<svg", page)
        self.assertIn(f"{accuracy.NEGLIGIBLE_VOXELS:g} voxels", page)

    def test_recommendation_applied_changes_exactly_its_parameters(self):
        for recommendation in self.outcome.recommendations:
            if not recommendation.changes:
                continue
            before, after = _leaf_values(SETTINGS), _leaf_values(advice.apply_recommendation(SETTINGS, recommendation))
            changed = {path for path in before if before[path] != after[path]}
            self.assertEqual(changed, {p for p in advice.changed_paths(recommendation.changes) if before[p] != after[p]})
            self.assertTrue(changed)
            self.assertTrue(changed <= advice.changed_paths(recommendation.changes))
            # The dict form in ranking.json applies the same way.
            self.assertEqual(advice.apply_recommendation(SETTINGS, recommendation.as_dict()),
                             advice.apply_recommendation(SETTINGS, recommendation))

    def test_logic_applies_a_recommendation_to_parameters_and_resumes_the_check(self):
        from SpacingRegistrationLib import parameters
        from SpacingRegistrationLib.mrml import bridge
        from SpacingRegistrationLib.mrml.logic import RegistrationLogic

        recommendation = advice.Recommendation("recommended", "use 25 % sampling and a finer mesh",
                                               {"sampling_percentage": 25.0, "mesh_size": [3, 3, 3],
                                                "lbfgs2": {"line_search_accuracy": 0.01}})
        values = parameters.parameter_values_from_settings(SETTINGS)
        applied = RegistrationLogic.applyRecommendation(values, recommendation)
        changed = {name for name in values if values[name] != applied[name]}
        self.assertEqual(changed, {"samplingPercentage", "meshSizeX", "meshSizeY", "meshSizeZ",
                                   "lbfgs2LineSearchAccuracy"})
        self.assertEqual(parameters.settings_from_parameter_values(applied),
                         advice.apply_recommendation(SETTINGS, recommendation))
        self.assertEqual(RegistrationLogic.applyRecommendation(SETTINGS, recommendation).sampling_percentage, 25.0)
        # checkAccuracy on a volume node: the same check, resumed, redoes nothing.
        scene = bridge.createScene()
        node = bridge.volumeNodeFromImage(scene, self.image, "gate crop")
        outcome = RegistrationLogic(scene=scene).checkAccuracy(node, SETTINGS, self.folder / "check",
                                                               candidates=["sampling-0.5", "sampling-25"], seeds=2,
                                                               executor="sequential")
        self.assertEqual(outcome.completed, [])
        self.assertEqual(len(outcome.skipped), 6)
        self.assertEqual([r["error_mean_voxels"] for r in outcome.ranking],
                         [r["error_mean_voxels"] for r in self.outcome.ranking])


@unittest.skipUnless(GATE.is_file(), f"the real mouse PET gate is not at {GATE}")
class ResumeAndCommandLineTest(unittest.TestCase):
    def setUp(self):
        self.folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.folder, True)

    def test_interrupted_check_resumes_without_redoing_finished_runs(self):
        cancel = threading.Event()
        finished = []

        def progress(candidate, done, total, row):
            finished.append(f"{candidate}/{row['run_id']}")
            cancel.set()  # interrupt after the first finished run

        image = gate_crop()
        first = accuracy.check_accuracy(image, self.folder / "check", SETTINGS, candidates=["iterations-1"],
                                        options=OPTIONS, executor="sequential", progress=progress, cancel=cancel)
        self.assertTrue(first.cancelled)
        self.assertEqual(first.completed, finished)
        self.assertEqual(len(finished), 1)
        self.assertIn("Cancelled", first.paths["html"].read_text())
        second = accuracy.check_accuracy(image, self.folder / "check", SETTINGS, candidates=["iterations-1"],
                                         options=OPTIONS, executor="sequential")
        self.assertFalse(second.cancelled)
        self.assertEqual(second.skipped, finished)
        self.assertEqual(len(second.completed), 3)
        self.assertFalse(set(second.completed) & set(finished))
        # Another deformation in the same folder is another check: refused, nothing touched.
        with self.assertRaisesRegex(StudyFolderError, "different accuracy check"):
            accuracy.check_accuracy(image, self.folder / "check", SETTINGS,
                                    options=accuracy.CheckOptions(seeds=2, amplitude_voxels=2.0))

    def _cli(self, *arguments):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(["accuracy", *arguments])
        return status, out.getvalue(), err.getvalue()

    def test_command_line_end_to_end_and_bad_input(self):
        fixed = self.folder / "gate.nrrd"
        sitk.WriteImage(gate_crop(), str(fixed))
        output = self.folder / "check"
        status, out, _err = self._cli("--fixed", str(fixed), "--output", str(output), "--candidates", "sampling-25",
                                      "--seeds", "1", "--executor", "sequential", "--reproducible",
                                      "--lbfgs2-number-of-iterations", "5", "--scales-estimator", "none")
        self.assertEqual(status, 0, out)
        ranking = json.loads((output / "ranking.json").read_text())["ranking"]
        self.assertEqual(sorted(r["candidate"] for r in ranking), ["sampling-25", "yours"])
        for row in ranking:
            self.assertIn(f"{row['candidate']:<28} mean error {row['error_mean_voxels']:.4g} voxels", out)
        self.assertTrue((output / "ranking.csv").is_file() and (output / "index.html").is_file())
        for arguments, message in (
                (("--fixed", str(self.folder / "missing.nrrd"), "--output", str(self.folder / "a")), "missing.nrrd"),
                (("--fixed", str(fixed), "--output", str(self.folder / "b"), "--seeds", "0"), "seeds"),
                (("--fixed", str(fixed), "--output", str(self.folder / "c"), "--candidates", "bogus"), "bogus"),
                (("--fixed", str(fixed), "--output", str(self.folder / "d"), "--amplitude-voxels", "-1"),
                 "amplitude"),
                (("--fixed", str(fixed), "--output", str(fixed)), str(fixed))):
            status, _out, err = self._cli(*arguments)
            self.assertEqual(status, 2, err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIn(message, err)


@unittest.skipUnless(GATE.is_file(), f"the real mouse PET gate is not at {GATE}")
class AdviceFromStudyTest(unittest.TestCase):
    def test_study_with_a_truth_gives_the_best_mode_and_spacing_with_its_figures(self):
        from SpacingRegistrationLib.study_runner import run_study
        from SpacingRegistrationLib.study_spec import StudySpec
        from SpacingRegistrationLib.truth import truth_from_transform
        from SpacingRegistrationLib.variability import analyse

        pair = accuracy.make_pair(gate_crop(), accuracy.CheckOptions())
        spec = StudySpec(settings=SETTINGS.replace(scales_estimator="none"), spacings=(0.8, 4.0), repeats=2,
                         seed_policy="per_repeat", modes=("native-reproducible", "normalised-reproducible"))
        with tempfile.TemporaryDirectory() as folder:
            outcome = run_study(spec, pair.fixed, pair.moving, folder, executor="sequential",
                                truth=truth_from_transform(pair.deformation, pair.fixed))
            analysis = analyse(outcome.store)
        found = advice.from_study(analysis)
        best = min((g for g in analysis.groups if g.moved), key=lambda g: g.error["mean_voxels"])
        self.assertLess(best.error["mean_voxels"], analysis.truth["identity"]["mean_voxels"])  # so: advice per group
        self.assertEqual(len(found), 3)
        for recommendation in found:
            figures = recommendation.figures
            self.assertEqual((figures["best_mode"], figures["best_spacing"]), (best.mode, best.spacing))
            difference = figures["error_mean_voxels"] - figures["best_error_mean_voxels"]
            self.assertEqual(recommendation.kind, "negligible" if difference <= figures["threshold_voxels"]
                             else "recommended")
            self.assertGreaterEqual(figures["threshold_voxels"], accuracy.NEGLIGIBLE_VOXELS)
            if recommendation.kind == "recommended":
                applied = advice.apply_recommendation(SETTINGS, recommendation)
                self.assertEqual(applied.spacing_override, best.spacing)
                self.assertEqual(accuracy.mode_of(applied), best.mode)
                self.assertIn(f"{figures['best_error_mean_voxels']:.3g}", recommendation.text)


class AdviceFromHandMadeStudyTest(unittest.TestCase):
    """A group that never moved is the identity: never the recommendation, and when nothing that moved beats
    doing nothing the advice says so instead of recommending a configuration."""

    @staticmethod
    def _analysis(errors: dict, identity: float, seeds=(1, 2)):
        from types import SimpleNamespace

        groups, run_errors = [], {}
        for (mode, spacing), (mean, moved) in errors.items():
            runs = [f"{mode}_s{spacing:g}_r{k}" for k in range(2)]
            run_errors.update({run: {"recovered": {"mean_voxels": mean}} for run in runs})
            groups.append(SimpleNamespace(mode=mode, spacing=spacing, runs=runs, moved=2 * moved, seeds=seeds,
                                          error={"mean_voxels": mean}))
        return SimpleNamespace(groups=groups, run_errors=run_errors, truth={"identity": {"mean_voxels": identity}})

    def test_a_group_that_never_moved_is_not_recommended(self):
        analysis = self._analysis({("native-default", 1.0): (2.49, True), ("native-default", 4.0): (1.67, True),
                                   ("native-default", 10.0): (1.64, False)}, identity=1.64)
        found = advice.from_study(analysis)
        self.assertEqual([r.kind for r in found], ["warning"])
        self.assertEqual(found[0].changes, {})
        self.assertEqual((found[0].figures["best_spacing"], found[0].figures["identity_error_mean_voxels"]), (4.0, 1.64))
        self.assertIn("does better than doing nothing", found[0].text)

    def test_the_best_group_that_moved_is_recommended_over_the_identity(self):
        analysis = self._analysis({("normalised-reproducible", 1.0): (0.6, True), ("native-default", 1.0): (1.2, True),
                                   ("native-default", 10.0): (1.64, False)}, identity=1.64)
        found = advice.from_study(analysis)
        self.assertEqual([r.kind for r in found], ["recommended", "recommended"])
        self.assertTrue(all(r.figures["best_mode"] == "normalised-reproducible" for r in found))
        self.assertEqual(found[0].changes, {"spacing_override": 1.0, "normalised_units": True, "reproducible": True})

    def test_one_seed_per_configuration_is_flagged(self):
        analysis = self._analysis({("normalised-reproducible", 1.0): (0.6, True), ("native-default", 1.0): (1.2, True)},
                                  identity=1.64, seeds=(1, 1))
        found = advice.from_study(analysis)
        self.assertEqual([r.kind for r in found], ["warning", "recommended"])
        self.assertIn("one sampling seed", found[0].text)


class AdviceTest(unittest.TestCase):
    """Advice from hand-made rankings: what counts as better, negligible or worse, and the threshold shown."""

    @staticmethod
    def _row(name, mean, std=0.0, **changes):
        return {"candidate": name, "description": name, "changes": json.dumps(changes), "error_mean_voxels": mean,
                "error_worst_voxels": mean + std, "error_seed_std_voxels": std, "seeds_done": 4, "time_mean_s": 1.0,
                "identity_error_mean_voxels": 1.5, "dense_metric_better_than_identity": 4, "mesh_size": [2, 2, 2],
                "control_points": 125, "control_points_outside": 124}

    def test_negligible_better_worse_and_warnings(self):
        ranking = [self._row("yours", 0.9, 0.01), self._row("same", 0.9 + 5e-7, 0.0, reproducible=True),
                   self._row("within-spread", 0.895, 0.01, normalised_units=True),
                   self._row("better", 0.4, 0.02, sampling_percentage=10.0),
                   self._row("worse", 1.2, 0.02, lbfgs2={"number_of_iterations": 1})]
        found = {r.figures.get("candidate"): r for r in advice.from_ranking(ranking)}
        self.assertEqual(found["same"].kind, "negligible")
        self.assertEqual(found["within-spread"].kind, "negligible")
        self.assertIn("within 0.01 voxels", found["within-spread"].text)
        self.assertEqual(found["better"].kind, "recommended")
        self.assertIn("0.4 voxels vs 0.9", found["better"].text)
        self.assertEqual(found["better"].changes, {"sampling_percentage": 10.0})
        self.assertEqual(found["worse"].kind, "worse")
        warnings = [r for r in advice.from_ranking(ranking) if r.kind == "warning"]
        self.assertEqual(len(warnings), 1)
        self.assertIn("124 of 125 control points outside the image", warnings[0].text)
        kinds = [r.kind for r in advice.from_ranking(ranking)]
        self.assertEqual(kinds, sorted(kinds, key=advice.KINDS.index))
        self.assertEqual(advice.best(advice.from_ranking(ranking)).figures["candidate"], "better")

    def test_no_better_than_identity_is_a_warning(self):
        ranking = [self._row("yours", 1.6)]
        texts = [r.text for r in advice.from_ranking(ranking) if r.kind == "warning"]
        self.assertTrue(any("no better than doing nothing" in t for t in texts), texts)


if __name__ == "__main__":
    unittest.main()
