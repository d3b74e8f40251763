"""The study report in a real browser: the answer first, maps over the anatomy, plots that read.

A small study with a known deformation (tiny images, sequential, three iterations) is reported and opened in
headless Chromium; the checks read the DOM and the rendered pixels. Skipped only when Chromium, chromedriver or
Selenium are absent. Set SPACINGREG_REPORT_SCREENSHOT=<file.png> to keep a screenshot of the page's top
(docs/images/report.png is made this way).
"""

import io
import json
import os
import re
import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import browser
from testdata import FAST_SETTINGS, pet_like_pair

from SpacingRegistrationLib.anatomy_maps import SEQUENTIAL
from SpacingRegistrationLib.report import shown, write_report
from SpacingRegistrationLib.study_diagnosis import NEGLIGIBLE_SPREAD_VOXELS
from SpacingRegistrationLib.study_runner import run_study
from SpacingRegistrationLib.study_spec import StudySpec
from SpacingRegistrationLib.study_store import open_study
from SpacingRegistrationLib.svg import LOG_SPAN, mode_name
from SpacingRegistrationLib.variability import analyse

if browser.AVAILABLE:
    from PIL import Image
    from selenium.webdriver.common.by import By
#: Three iterations, a sampling seed per repeat (a real run-to-run spread to map); normalised units give every
#: spacing the same field to rounding beside native units' sub-voxel differences: a series spanning decades.
SPEC = StudySpec(settings=FAST_SETTINGS, spacings=(1.0, 4.0, 10.0), repeats=2, seed_policy="per_repeat",
                 modes=("native-default", "normalised-reproducible"))
#: Reads every chart: its title, y scale and y tick labels.
CHARTS_SCRIPT = """
return Array.from(document.querySelectorAll('svg')).filter(s => s.querySelector('rect.plot-area')).map(s => ({
  title: s.querySelector('text[font-weight="bold"]').textContent,
  scale: s.querySelector('rect.plot-area').dataset.yScale,
  ticks: Array.from(s.querySelectorAll('text.y-tick')).map(t => t.textContent)}));
"""


def tick_value(label: str) -> float:
    """A tick label as a number ("1e-06", "10⁻³", "0.5", "−2")."""
    label = label.replace("\u2212", "-").replace("\u00d7", "x").strip()
    superscripts = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")
    power = re.fullmatch(r"10([⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)", label)
    return 10.0 ** int(power.group(1).translate(superscripts)) if power else float(label)


@unittest.skipUnless(browser.AVAILABLE, browser.skip_reason("the report page test"))
class ReportPageTest(unittest.TestCase):
    driver = None

    @classmethod
    def setUpClass(cls):
        cls.root = Path(tempfile.mkdtemp())
        pair = pet_like_pair()
        truth = cls.root / "truth.nrrd"
        sitk.WriteImage(pair.displacement, str(truth))
        run_study(SPEC, pair.fixed, pair.moving, cls.root / "study", executor="sequential", truth=truth)
        store = open_study(cls.root / "study")
        cls.analysis = analyse(store, output=cls.root / "maps")
        cls.paths = write_report(store, cls.analysis, cls.root / "report")
        cls.data = json.loads(cls.paths["json"].read_text())
        try:
            cls.driver = browser.start(cls.root / "chromium", 1300, 1900)
            cls.driver.get(cls.paths["html"].as_uri())
        except BaseException:
            cls.tearDownClass()
            raise
        keep = os.environ.get("SPACINGREG_REPORT_SCREENSHOT")
        if keep:
            cls.driver.save_screenshot(keep)

    @classmethod
    def tearDownClass(cls):
        if cls.driver is not None:
            cls.driver.quit()
            cls.driver = None
        shutil.rmtree(cls.root, ignore_errors=True)

    def test_summary_comes_first_and_lists_every_diagnosis_kind(self):
        kinds = {s["kind"] for s in self.data["analysis"]["statements"]}
        self.assertTrue({"accuracy", "spacing_effect", "normalised_units"} <= kinds, kinds)
        summary = self.driver.find_element(By.ID, "summary")
        listed = [item.get_attribute("data-kind") for item in summary.find_elements(By.TAG_NAME, "li")]
        self.assertTrue(kinds <= set(listed), (kinds, listed))
        self.assertEqual(len(listed), len(set(listed)), "one line per kind")
        self.assertIn("advice", listed)  # a truth: the configuration to use, and why
        headings = self.driver.find_elements(By.TAG_NAME, "h2")
        self.assertEqual(headings[0].text, "Summary")
        self.assertLess(summary.location["y"], self.driver.find_element(By.ID, "diagnosis").location["y"])
        for item in summary.find_elements(By.TAG_NAME, "li"):
            self.assertRegex(item.text, r"\d", "each answer carries its figure")
        accuracy = summary.find_element(By.CSS_SELECTOR, 'li[data-kind="accuracy"]').text
        best = next(s for s in self.data["analysis"]["statements"] if s["kind"] == "accuracy")["figures"]
        self.assertIn(f"{best['mean_voxels']:.3g} voxels", accuracy)
        self.assertIn(f"{best['identity_mean_voxels']:.3g}", accuracy)

    def test_figures_behind_each_statement_are_folded(self):
        items = self.driver.find_elements(By.CSS_SELECTOR, "#diagnosis > li")
        self.assertEqual(len(items), len(self.data["analysis"]["statements"]))
        for item, statement in zip(items, self.data["analysis"]["statements"]):
            details = item.find_element(By.TAG_NAME, "details")
            self.assertIsNone(details.get_attribute("open"))
            pre = details.find_element(By.TAG_NAME, "pre")
            self.assertFalse(pre.is_displayed())
            self.assertEqual(json.loads(pre.get_attribute("textContent")), statement["figures"])

    def test_tables_have_labels_with_units_and_rounded_values(self):
        headers = [h.text for h in self.driver.find_elements(By.CSS_SELECTOR, "#groups th")]
        self.assertIn("run-to-run spread, max (voxels)", headers)
        self.assertIn("error, mean (voxels)", headers)
        self.assertFalse([h for h in headers if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", h)], "no field names")
        cells = self.driver.find_elements(By.CSS_SELECTOR, '#groups td[data-column="error_mean_voxels"]')
        self.assertEqual(len(cells), len(self.data["groups"]))
        for cell, group in zip(cells, self.data["groups"]):
            self.assertEqual(float(cell.get_attribute("data-value")), group["error_mean_voxels"])
            self.assertEqual(cell.text, shown(group["error_mean_voxels"], "error_mean_voxels"))
            self.assertLessEqual(len(cell.text.replace("-", "").replace(".", "")), 8)

    def test_maps_have_a_colour_bar_and_anatomy_under_them(self):
        maps = self.driver.find_elements(By.CSS_SELECTOR, "svg.anatomy-map")
        moved_with_spread = [g for g in self.analysis.groups if g.spread_voxels["max"] > 0]
        self.assertTrue(moved_with_spread, "the study has a run-to-run spread to map")
        self.assertTrue(maps)
        for figure in maps:
            bars = figure.find_elements(By.CSS_SELECTOR, "g.colour-bar")
            self.assertEqual(len(bars), 1, "one shared colour bar per figure")
            self.assertTrue(bars[0].find_elements(By.CSS_SELECTOR, "text.colour-bar-tick"))
            self.assertIn("voxels", bars[0].text)
            slices = figure.find_elements(By.CSS_SELECTOR, "image")
            texts = self.driver.execute_script("return Array.from(arguments[0].querySelectorAll('text'))"
                                               ".map(t => t.textContent);", figure)
            labels = [m.groups() for t in texts if (m := re.fullmatch(r"(axial|coronal|sagittal) [kji]=(\d+)", t))]
            self.assertGreaterEqual(len(slices), 3)
            self.assertEqual(len(labels), len(slices))
            for picture, (view, index) in zip(slices, labels):
                self.assertGreater(self._anatomy_correlation(self._pixels(picture), view, int(index)), 0.3,
                                   f"the fixed image shows under the {view} slice")

    def test_difference_maps_share_one_scale_over_the_anatomy(self):
        """Every other spacing's difference from the reference spacing in one figure: one colour bar in voxels whose
        top is the largest drawn difference, slices through each map's largest value with the fixed image under
        them, and the groups that differ only by rounding named in the caption instead of drawn."""
        figures = [f for f in self.driver.find_elements(By.TAG_NAME, "figure")
                   if f.find_elements(By.CSS_SELECTOR, "figcaption.difference-maps")]
        self.assertEqual(len(figures), 1)
        maps = figures[0].find_elements(By.CSS_SELECTOR, "svg.anatomy-map")
        self.assertEqual(len(maps), 1, "every compared group on one scale")
        compared = {(g.mode, g.spacing): sitk.GetArrayFromImage(sitk.ReadImage(g.difference_map))
                    for g in self.analysis.groups if g.difference_map}
        self.assertEqual(set(compared), {(m, s) for m in SPEC.modes for s in SPEC.spacings if s != SPEC.reference})
        drawn = {key: values for key, values in compared.items() if values.max() > NEGLIGIBLE_SPREAD_VOXELS}
        self.assertTrue(drawn and len(drawn) < len(compared), "native units differ, normalised ones only by rounding")
        top = max(float(values.max()) for values in drawn.values())
        self.assertAlmostEqual(float(maps[0].get_attribute("data-vmax")) / top, 1, places=5)
        fixed = sitk.GetArrayFromImage(sitk.ReadImage(str(open_study(self.root / "study").fixed_path)))
        inside = fixed > fixed.mean()  # slices through the largest difference inside the object, not the background
        bars = maps[0].find_elements(By.CSS_SELECTOR, "g.colour-bar")
        self.assertEqual(len(bars), 1)
        self.assertIn("voxels", bars[0].text)
        self.assertIn(f"{top:.3g} (max)", bars[0].text)
        bar = self._pixels(bars[0].find_element(By.CSS_SELECTOR, "rect")).astype(float)
        for row, (_, colour) in ((bar[2], SEQUENTIAL[-1]), (bar[-3], SEQUENTIAL[0])):  # top: the max; bottom: 0
            self.assertLess(np.abs(row.mean(axis=0) - colour).max(), 40, (row.mean(axis=0), colour))

        texts = self.driver.execute_script("return Array.from(arguments[0].querySelectorAll('text'))"
                                           ".map(t => t.textContent);", maps[0])
        rows = [t for t in texts if t.endswith(f" vs {SPEC.reference:g}")]
        self.assertEqual(rows, [f"{mode_name(m)}: spacing {s:g} vs {SPEC.reference:g}" for m, s in drawn])
        labels = [(m.group(1), int(m.group(2))) for t in texts
                  if (m := re.fullmatch(r"(axial|coronal|sagittal) [kji]=(\d+)", t))]
        self.assertEqual([index for _, index in labels],
                         [int(i) for values in drawn.values()
                          for i in np.unravel_index(np.where(inside, values, -np.inf).argmax(), values.shape)])
        pictures = maps[0].find_elements(By.TAG_NAME, "image")
        self.assertEqual(len(pictures), len(labels))
        for picture, (view, index) in zip(pictures, labels):
            pixels = self._pixels(picture)
            self.assertGreater(self._anatomy_correlation(pixels, view, index), 0.3, f"anatomy under {view} {index}")
            chroma = pixels.max(axis=-1).astype(int) - pixels.min(axis=-1)
            self.assertGreater((chroma > 60).mean(), 0.1, f"the difference is coloured in the {view} slice")

        caption = figures[0].find_element(By.CSS_SELECTOR, "figcaption.difference-maps").text
        self.assertIn(f"spacing {SPEC.reference:g}", caption)
        self.assertIn("voxels of its own run's image", caption)
        for mode, spacing in set(compared) - set(drawn):
            self.assertIn(f"{mode_name(mode)} at spacing {spacing:g} (", caption)

    def _anatomy_correlation(self, pixels: np.ndarray, view: str, index: int) -> float:
        """How well the picture's brightness follows the fixed image's slice (best of the four flips)."""
        fixed = sitk.GetArrayFromImage(pet_like_pair().fixed).astype(float)
        anatomy = {"axial": lambda: fixed[index], "coronal": lambda: fixed[:, index, :],
                   "sagittal": lambda: fixed[:, :, index]}[view]()
        brightness = np.asarray(Image.fromarray(pixels).convert("L").resize(anatomy.shape[::-1], Image.BILINEAR),
                                dtype=float)
        flips = (anatomy, anatomy[::-1], anatomy[:, ::-1], anatomy[::-1, ::-1])
        return max(float(np.corrcoef(brightness.ravel(), f.ravel())[0, 1]) for f in flips)

    def test_no_plot_has_a_negative_count_axis(self):
        charts = self.driver.execute_script(CHARTS_SCRIPT)
        never = next(c for c in charts if c["title"].startswith("Runs that never moved"))
        self.assertEqual(never["scale"], "integer")
        counts = [c for c in charts if c["scale"] == "integer"]
        for chart in counts:
            values = [tick_value(t) for t in chart["ticks"]]
            self.assertGreaterEqual(min(values), 0, chart)
            self.assertTrue(all(v.is_integer() for v in values), chart)
        self.assertGreater(max(tick_value(t) for t in never["ticks"]), 0)

    def test_log_axis_when_a_series_spans_more_than_three_decades(self):
        charts = {c["title"]: c for c in self.driver.execute_script(CHARTS_SCRIPT)}
        plotted = {"Run-to-run spread vs spacing": "spread_voxels_max",
                   "Difference from spacing": "difference_from_reference_voxels_max",
                   "Error against the known deformation vs spacing": "error_mean_voxels"}
        checked = 0
        for prefix, column in plotted.items():
            chart = next(c for title, c in charts.items() if title.startswith(prefix))
            values = [g[column] for g in self.data["groups"] if g[column] is not None and g[column] > 0]
            spans = values and max(values) / min(values) > LOG_SPAN
            self.assertEqual(chart["scale"], "log" if spans else "linear", (prefix, values))
            if chart["scale"] == "log":
                ticks = [tick_value(t) for t in chart["ticks"]]
                ratios = {round(np.log10(b / a), 6) for a, b in zip(ticks, ticks[1:])}
                self.assertTrue(ratios and all(r >= 1 for r in ratios), ticks)  # whole decades
                checked += 1
        self.assertGreaterEqual(checked, 1, "normalised units' rounding-size differences beside native units' "
                                            "sub-voxel ones span decades")

    def test_metric_traces_mark_the_liblbfgs_restart(self):
        restarted = {row["mode"] for row in self.data["runs"]
                     if any(r["lbfgs_run"] > 0 for r in self.data["traces"][row["run_id"]])}
        self.assertTrue(restarted)
        for figure in self.driver.find_elements(By.CSS_SELECTOR, "figure"):
            title = figure.find_elements(By.CSS_SELECTOR, 'text[font-weight="bold"]')
            if title and title[0].text.startswith("Metric per iteration event"):
                markers = figure.find_elements(By.CSS_SELECTOR, "g.event-marker")
                self.assertTrue(markers, title[0].text)
                self.assertIn("restart", markers[0].text)

    def _pixels(self, element) -> np.ndarray:
        """The rendered pixels of ``element`` (scrolled into view)."""
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        box = self.driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                         "return [r.left, r.top, r.right, r.bottom];", element)
        shot = np.asarray(Image.open(io.BytesIO(self.driver.get_screenshot_as_png())).convert("RGB"))
        left, top, right, bottom = (int(round(v)) for v in box)
        crop = shot[max(top, 0) + 1:bottom - 1, max(left, 0) + 1:right - 1]
        self.assertGreater(crop.size, 0)
        return crop


class IdentityRunSummaryTest(unittest.TestCase):
    """A run that never moved (one line-search evaluation) is named in the summary, with the accuracy line saying
    every error is doing nothing's, and its count axis starts at zero with whole-number ticks."""

    def test_identity_run_is_summarised(self):
        root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root, True)
        pair = pet_like_pair()
        spec = StudySpec(settings=FAST_SETTINGS.replace(lbfgs2={"line_search_maximum_evaluations": 1}),
                         spacings=(1.0,), repeats=1, modes=("native-reproducible",))
        run_study(spec, pair.fixed, pair.moving, root / "study", executor="sequential", truth=pair.displacement)
        store = open_study(root / "study")
        page = write_report(store, analyse(store), root / "report")["html"].read_text()
        summary = page[page.index('<section id="summary">'):page.index("</section>")]
        self.assertIn('data-kind="identity_run"', summary)
        self.assertIn("1 of 1 runs", summary)
        self.assertIn('data-kind="accuracy"', summary)
        self.assertIn("no run moved", summary)
        chart = page[page.index("Runs that never moved"):]
        chart = chart[:chart.index("</svg>")]
        ticks = [tick_value(t) for t in re.findall(r'class="y-tick"[^>]*>([^<]+)<', chart)]
        self.assertEqual(min(ticks), 0)
        self.assertGreaterEqual(max(ticks), 1)
        self.assertTrue(all(t.is_integer() for t in ticks), ticks)


if __name__ == "__main__":
    unittest.main()
