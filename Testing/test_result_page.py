"""The result page of one registration (result_page.py): a folding transform shows its folding (count, words and
colour), a mask is outlined and bounds the figures, a spacing override draws the maps on the registered grid, and
write_result writes the page whole with the other files or leaves the folder as it was."""

import dataclasses
import re
import tempfile
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from testdata import FAST_SETTINGS
from test_report_pictures import pictures
from test_robustness import blob, folder_digest

from SpacingRegistrationLib import anatomy_maps, cli, registration, result_page
from SpacingRegistrationLib.images import InputImageError

QUICK = FAST_SETTINGS.replace(lbfgs2={"number_of_iterations": 2}, reproducible=True)


def anatomy_maps_of(page: str) -> list[str]:
    """The page's two anatomy-map <svg> elements: displacement magnitude, then Jacobian determinant."""
    return re.findall(r'<svg [^>]*class="anatomy-map"[^>]*>.*?</svg>', page, re.S)


class ResultPageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fixed, cls.moving = blob(), blob(shift=1.5)
        cls.result = registration.run(cls.fixed, cls.moving, QUICK)

    def test_a_folding_transform_shows_its_folding(self):
        folding = type(self.result.transform)(self.result.transform)
        rng = np.random.default_rng(0)
        folding.SetParameters(rng.normal(0.0, 15.0, len(folding.GetParameters())).tolist())  # on a 16 mm image
        page = result_page.page_html(dataclasses.replace(self.result, transform=folding), self.fixed)
        count = int(re.search(r'id="summary" data-moved="true" data-folding="(\d+)"', page).group(1))
        self.assertGreater(count, 0)
        _, jacobian = anatomy_maps_of(page)
        self.assertIn(f'data-folding="{count}"', jacobian)
        self.assertIn(f"Jacobian determinant ({count} folding voxels)", jacobian)
        self.assertIn(f"Is it a valid deformation?</b> No: {count} voxels fold", page)
        colours = {tuple(pixels[..., :3].reshape(-1, 3)[i]) for _, pixels in pictures(jacobian)
                   for i in range(pixels.shape[0] * pixels.shape[1])}
        self.assertIn(anatomy_maps.FOLDING_COLOUR, colours)
        self.assertIn('data-folding="0"', result_page.page_html(self.result, self.fixed))  # the real result does not

    def test_mask_and_spacing_override(self):
        z, y, x = np.mgrid[:16, :16, :16]
        mask = (x - 8) ** 2 + (y - 8) ** 2 + (z - 8) ** 2 <= 25
        result = registration.run(self.fixed, self.moving, QUICK.replace(spacing_override=2.0), mask=mask)
        page = result_page.page_html(result, self.fixed, mask)
        magnitude, _ = anatomy_maps_of(page)
        vmax = float(re.search(r'data-vmax="([^"]+)"', magnitude).group(1))
        self.assertAlmostEqual(vmax, result.displacement.max_voxels, delta=1e-5 * vmax)  # same voxels, same region
        self.assertIn("inside the mask (cyan outline)", page)
        self.assertIn("spacing override of 2 mm", page)
        outlined = [np.all(pixels[..., :3] == anatomy_maps.OUTLINE_COLOUR, axis=-1).sum()
                    for _, pixels in pictures(magnitude)]
        self.assertTrue(all(n > 0 for n in outlined), outlined)

    def test_error_against_a_truth_and_a_run_that_never_moved(self):
        truth = sitk.TranslationTransform(3, (1.5, 0.0, 0.0))  # the moving blob is the fixed one shifted by +x
        result = registration.run(self.fixed, self.moving, QUICK, truth=truth)
        page = result_page.page_html(result, self.fixed)
        self.assertIn('<li data-kind="error"><b>How far is it from the known deformation?</b> Mean error '
                      f"{result.error.recovered.mean_voxels:.3g} voxels", page)
        self.assertIn(f"against {result.error.identity.mean_voxels:.3g} voxels for doing nothing", page)

        still = type(result.transform)(result.transform)
        still.SetParameters([0.0] * len(still.GetParameters()))
        page = result_page.page_html(dataclasses.replace(result, transform=still, moved=False, trace=[], error=None),
                                     self.fixed)
        self.assertIn("Did it move?</b> No: every BSpline coefficient is exactly zero", page)
        self.assertIn('data-moved="false" data-folding="0"', page)
        self.assertNotIn('data-kind="error"', page)
        self.assertIn("Metric per iteration event: no data", page)

    def test_the_page_is_written_whole_with_the_other_files_or_not_at_all(self):
        folder = Path(tempfile.mkdtemp(prefix="sr-page-"))
        paths = cli.write_result(self.result, folder, self.fixed)
        self.assertEqual(paths["page"], folder / "result.html")
        before = folder_digest(folder)
        self.assertEqual(sorted(before), ["result.html", "result.json", "trace.csv", "transform.tfm"])
        with self.assertRaisesRegex(InputImageError, "mask array's shape"):
            cli.write_result(self.result, folder, self.fixed, mask=np.ones((3, 3, 3), bool))
        self.assertEqual(folder_digest(folder), before)  # nothing replaced, no temporary file left


if __name__ == "__main__":
    unittest.main()
