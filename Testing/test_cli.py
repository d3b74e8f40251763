"""The command line: outputs written, every user mistake one line with exit status 2."""

import contextlib
import io
import json
import re
import tempfile
import unittest
from pathlib import Path

import SimpleITK as sitk

from testdata import pet_like_pair_files, run_cli

from SpacingRegistrationLib import cli


class CommandLineTest(unittest.TestCase):
    def setUp(self):
        self.folder = Path(tempfile.mkdtemp())
        self.fixed, self.moving = pet_like_pair_files(self.folder)

    def test_register_writes_transform_summary_and_trace(self):
        output = self.folder / "out"
        status, out, _ = run_cli("register", "--fixed", self.fixed, "--moving", self.moving, "--quiet",
                                 "--scales-estimator", "none", "--reproducible", "--lbfgs2-number-of-iterations", 4,
                                 "--output", output)
        self.assertEqual(status, 0)
        self.assertIn("iterations per libLBFGS run: [4, 4]", out)
        summary = json.loads((output / "result.json").read_text())
        self.assertEqual(summary["iterations_per_run"], [4, 4])
        self.assertEqual(summary["settings"]["lbfgs2"]["number_of_iterations"], 4)
        transform = sitk.ReadTransform(str(output / "transform.tfm"))
        self.assertEqual(len(transform.GetParameters()), 375)
        self.assertEqual(len((output / "trace.csv").read_text().splitlines()), 1 + 8)
        self.assertIn(str(output / "result.html"), out)

        # The result page: the answer first, both maps with their colour bars, the trace with its libLBFGS restart.
        page = (output / "result.html").read_text()
        self.assertEqual(re.findall(r'<li data-kind="(\w+)"', page), ["moved", "stop", "metric", "folding", "warnings"])
        self.assertIn("Did it move?</b> Yes: largest displacement", page)
        magnitude, jacobian = re.findall(r'<svg [^>]*class="anatomy-map"[^>]*>.*?</svg>', page, re.S)
        vmax = float(re.search(r'data-vmax="([^"]+)"', magnitude).group(1))
        self.assertAlmostEqual(vmax, summary["displacement"]["max_voxels"], delta=1e-5 * vmax)
        self.assertIn('data-unit="voxels"', magnitude)
        self.assertIn('data-folding="0"', jacobian)
        self.assertIn('id="summary" data-moved="true" data-folding="0"', page)
        for fragment in (magnitude, jacobian):
            self.assertEqual(fragment.count('class="colour-bar"'), 1)
            self.assertEqual(fragment.count("<image "), 3)  # axial, coronal, sagittal
        self.assertEqual(page.count('class="event-marker"'), 1)  # LBFGS2's second libLBFGS run
        help_text = io.StringIO()
        with contextlib.redirect_stdout(help_text), self.assertRaises(SystemExit):
            cli.main(["register", "--help"])
        self.assertIn("result.html", help_text.getvalue())

    def test_settings_file_is_overridden_by_options(self):
        settings = self.folder / "settings.json"
        settings.write_text(json.dumps({"scales_estimator": "none", "mesh_size": [3, 3, 3],
                                        "lbfgs2": {"number_of_iterations": 2}}))
        status, out, _ = run_cli("register", "--fixed", self.fixed, "--moving", self.moving, "--quiet",
                                 "--settings", settings, "--mesh-size", 1, 1, 1)
        self.assertEqual(status, 0)
        self.assertIn("iterations per libLBFGS run: [2, 2]", out)
        self.assertIn("[4, 4, 4] control points per axis", run_cli("grid", "--image", self.fixed, "--mesh-size", 1, 1, 1)[1])

    def test_a_control_point_spacing_given_alone_defines_the_grid(self):
        from SpacingRegistrationLib.grid import mesh_size_for
        from SpacingRegistrationLib.settings import from_dict

        image = sitk.ReadImage(str(self.fixed))
        for option, value in (("--grid-spacing-mm", 60.0), ("--grid-spacing-voxels", 9.0)):
            with self.subTest(option):
                mesh = mesh_size_for(image, from_dict({option[2:].replace("-", "_"): value}))
                self.assertNotEqual(mesh, [2, 2, 2])
                status, out, _ = run_cli("grid", "--image", self.fixed, option, value)
                self.assertEqual(status, 0)
                self.assertIn(f"mesh {mesh}", out)

    def test_grid_reports_the_geometry(self):
        status, out, _ = run_cli("grid", "--image", self.fixed, "--mesh-size", 2, 2, 2, "--json", self.folder / "g.json")
        self.assertEqual(status, 0)
        self.assertIn("[5, 5, 5] control points per axis", out)
        numbers = json.loads((self.folder / "g.json").read_text())
        self.assertEqual(numbers["inside_count"] + numbers["outside_count"], 125)

    def test_user_mistakes_are_one_line_with_status_2(self):
        cases = [
            (("register", "--fixed", self.folder / "absent.nrrd", "--moving", self.moving), "fixed image file not found"),
            (("register", "--fixed", self.fixed, "--moving", self.moving, "--mesh-size", 0, 2, 2), "mesh_size"),
            (("register", "--fixed", self.fixed, "--moving", self.moving, "--sampling-percentage", 150),
             "sampling_percentage"),
            (("register", "--fixed", self.fixed, "--moving", self.moving, "--spacing-override", -1), "spacing_override"),
            (("register", "--fixed", self.fixed, "--moving", self.moving, "--settings", self.folder / "none.json"),
             "settings file not found"),
            (("grid", "--image", self.fixed, "--transform", self.folder / "none.tfm"), "transform file not found"),
        ]
        for arguments, expected in cases:
            with self.subTest(expected):
                status, out, err = run_cli(*arguments)
                self.assertEqual(status, 2)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(expected, err)
                self.assertNotIn("Traceback", err)


if __name__ == "__main__":
    unittest.main()
