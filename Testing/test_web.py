"""End-to-end test of the web front end (SpacingRegistrationWeb) in headless Chromium through Selenium.

The test starts ``python -m SpacingRegistrationWeb`` on a free localhost port, clicks through it as a user would
(sample pair, grid, bad inputs, a registration, a small study) and checks the slice view's pixels for the grid's
model colours. It is skipped only when Chromium, chromedriver or Selenium are absent.
Set SPACINGREG_WEB_SCREENSHOTS=<folder> to keep the screenshots (docs/images/web_*.png are made this way).
"""

import io
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import numpy as np

import browser
from SpacingRegistrationLib.mrml.bridge import GRID_COLORS

ROOT = pathlib.Path(__file__).resolve().parents[1]

if browser.AVAILABLE:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

SERVER_START_SECONDS = 90
SAMPLE_SECONDS = 240  # the first time, the sample pair is made from the MNI152 template
REGISTRATION_SECONDS = 180
STUDY_SECONDS = 300


def _freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def colourPixelCount(rgb: np.ndarray, colour, tolerance: int = 30) -> int:
    """Pixels of an (H, W, 3) uint8 picture within ``tolerance`` (per channel) of a 0..1 RGB model colour."""
    target = np.round(np.asarray(colour) * 255).astype(int)
    return int(np.all(np.abs(rgb[..., :3].astype(int) - target) <= tolerance, axis=-1).sum())


@unittest.skipUnless(browser.AVAILABLE, browser.skip_reason("the web test"))
class WebFrontEndTest(unittest.TestCase):
    """One server and one browser for the class; the test methods run in name order and build on each other."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = pathlib.Path(tempfile.mkdtemp(prefix="spacingreg-webtest-"))
        cls.shots = pathlib.Path(os.environ.get("SPACINGREG_WEB_SCREENSHOTS") or cls.tmp / "shots")
        cls.shots.mkdir(parents=True, exist_ok=True)
        cls.port = _freePort()
        cls.url = f"http://127.0.0.1:{cls.port}/"
        cls.serverLog = open(cls.tmp / "server.log", "wb")
        cls.server = subprocess.Popen(
            [sys.executable, "-m", "SpacingRegistrationWeb", "--host", "127.0.0.1", "--port", str(cls.port),
             "--output-dir", str(cls.tmp / "output")],
            cwd=str(ROOT), stdout=cls.serverLog, stderr=subprocess.STDOUT)
        cls.driver = None
        try:
            deadline = time.monotonic() + SERVER_START_SECONDS
            while True:
                if cls.server.poll() is not None:
                    raise RuntimeError(f"the server exited with code {cls.server.returncode}:\n{cls._serverTail()}")
                try:
                    urllib.request.urlopen(cls.url, timeout=5).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the server did not answer within {SERVER_START_SECONDS} s") from None
                    time.sleep(0.5)
            cls.driver = browser.start(cls.tmp / "chromium-profile", 1600, 1200)
            cls.driver.set_script_timeout(30)
            cls.driver.get(cls.url)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.driver is not None:
            cls.driver.quit()
            cls.driver = None
        if cls.server.poll() is None:
            cls.server.terminate()
            try:
                cls.server.wait(15)
            except subprocess.TimeoutExpired:
                cls.server.kill()
                cls.server.wait(15)
        cls.serverLog.close()

    @classmethod
    def _serverTail(cls, lines=40) -> str:
        cls.serverLog.flush()
        text = (cls.tmp / "server.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # --- helpers ----------------------------------------------------------------------------------------------------

    def _byId(self, elementId):
        return self.driver.find_element(By.ID, elementId)

    def _text(self, elementId) -> str:
        elements = self.driver.find_elements(By.ID, elementId)
        return elements[0].text if elements else ""

    def _waitFor(self, condition, seconds, what):
        try:
            return WebDriverWait(self.driver, seconds, poll_frequency=0.25,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(lambda _d: condition())
        except Exception as error:  # TimeoutException: say what was awaited, with the server's log
            raise self._failure(f"timed out after {seconds} s waiting for {what}") from error

    def _failure(self, message) -> AssertionError:
        """``message`` with the page's status and error and the server's log; a screenshot is kept."""
        self.driver.save_screenshot(str(self.shots / "failure.png"))
        return AssertionError(f"{message}; status {self._text('status')!r}, error {self._text('error-message')!r}\n"
                              f"server log:\n{self._serverTail()}")

    def _type(self, elementId, text):
        field = self._byId(elementId)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        field.send_keys(str(text))
        field.send_keys(Keys.TAB)

    def _selection(self, elementId) -> str:
        """The text a VSelect shows as its value ("" while the page redraws it)."""
        try:
            return " ".join(e.text.strip() for e in self._field(elementId).find_elements(
                By.CSS_SELECTOR, ".v-select__selection-text"))
        except StaleElementReferenceException:
            return ""

    def _field(self, elementId):
        return self._byId(elementId).find_element(
            By.XPATH, "./ancestor::div[contains(concat(' ', @class, ' '), ' v-field ')]")

    def _menuItems(self):
        return [e for e in self.driver.find_elements(By.CSS_SELECTOR, ".v-overlay .v-list-item") if e.is_displayed()]

    def _choose(self, elementId, itemText, seconds=60):
        """Pick an item of a VSelect as a user does: open its menu, click the item, close the menu. Vuetify opens
        and closes menus with a transition, so a click can land on a closing overlay or an element can go stale;
        the pick is repeated until the field shows the item."""
        deadline = time.monotonic() + seconds
        while self._selection(elementId) != itemText:
            if time.monotonic() > deadline:
                raise self._failure(f"{elementId} shows {self._selection(elementId)!r}, not {itemText!r}, "
                                    f"after {seconds} s of picking")
            try:
                if not self._menuItems():
                    self._field(elementId).click()
                item = WebDriverWait(self.driver, 5, poll_frequency=0.25, ignored_exceptions=(WebDriverException,)) \
                    .until(lambda _d: next((e for e in self._menuItems() if e.text.strip() == itemText), None))
                item.click()
            except WebDriverException:  # stale, intercepted or not shown in time: look again
                pass
            self.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
            try:
                WebDriverWait(self.driver, 5, poll_frequency=0.25, ignored_exceptions=(WebDriverException,)) \
                    .until(lambda _d: not self._menuItems())
            except WebDriverException:
                pass

    def _clearSelect(self, elementId):
        self._field(elementId).find_element(By.CSS_SELECTOR, ".v-field__clearable .v-icon").click()

    def _error(self) -> str:
        return self._text("error-message")

    def _closeError(self):
        for button in self.driver.find_elements(By.CSS_SELECTOR, "#error-message .v-alert__close button"):
            button.click()
        self._waitFor(lambda: not self._error(), 10, "the error message to close")

    def _axialPicture(self) -> np.ndarray:
        """(H, W, 3) pixels of the axial slice view (the largest view of the 'Axial Primary' layout)."""
        from PIL import Image

        def views():
            shown = [e for e in self.driver.find_elements(By.CSS_SELECTOR, "#views img.image-display-area")
                     if e.is_displayed() and (e.get_attribute("src") or "").startswith("blob:")]
            return shown if len(shown) >= 4 else None

        images = self._waitFor(views, 30, "the four views (axial, 3D, coronal, sagittal)")
        axial = max(images, key=lambda e: e.size["width"] * e.size["height"])
        return np.asarray(Image.open(io.BytesIO(axial.screenshot_as_png)).convert("RGB"))

    def _loaded(self) -> bool:
        fields = self.driver.find_elements(By.XPATH, "//input[@id='fixed-select']/ancestor::div[contains(@class, "
                                                     "'v-field')][1]")
        return bool(fields) and "fixed_1" in fields[0].text

    # --- tests ------------------------------------------------------------------------------------------------------

    def test_1_sample_loads_and_grid_shows_in_slice_view(self):
        self._waitFor(self._loaded, SAMPLE_SECONDS, "the sample pair to load")
        before = self._axialPicture()
        self.assertLess(colourPixelCount(before, GRID_COLORS["imageExtentBox"]), 20,
                        "no grid colour before Show grid")
        self._byId("show-grid").click()
        self._waitFor(lambda: "control points inside the image" in self._text("grid-summary"), 30, "the grid summary")
        self.assertIn("1 control points inside the image, 124 outside", self._text("grid-summary"))
        counts = {}

        def gridDrawn():
            picture = self._axialPicture()
            counts.update({key: colourPixelCount(picture, GRID_COLORS[key])
                           for key in ("imageExtentBox", "latticePlanes", "controlPointsOutside")})
            return all(count >= 100 for count in counts.values())

        self._waitFor(gridDrawn, 30, "grid colours in the axial view")
        self.driver.save_screenshot(str(self.shots / "web_grid.png"))
        print(f"\naxial view pixels of each grid colour: {counts}")

    def test_2_bad_inputs_show_messages(self):
        self._waitFor(self._loaded, SAMPLE_SECONDS, "the sample pair to load")
        # mesh 0
        self._type("meshSizeX", "0")
        self._byId("show-grid").click()
        self._waitFor(lambda: "mesh_size must be at least 1" in self._error(), 20, "the mesh-size message")
        self.driver.save_screenshot(str(self.shots / "web_bad_mesh.png"))
        self._closeError()
        self._type("meshSizeX", "2")
        # an unreadable file and a missing one
        bad = self.tmp / "not_a_volume.nrrd"
        bad.write_text("this is not an image\n")
        self._type("paths-text", f"{bad}\n{self.tmp / 'missing.nrrd'}")
        self._byId("load-paths").click()
        self._waitFor(lambda: "is not an NRRD file" in self._error(), 30, "the unreadable-file message")
        self.assertIn("missing.nrrd: no such file", self._error())
        self._closeError()
        # an advanced field that is not JSON
        self._type("advanced-json", "{not json")
        self._byId("run-registration").click()
        self._waitFor(lambda: "not valid JSON" in self._error(), 20, "the JSON message")
        self._closeError()
        self._type("advanced-json", "")
        # no fixed volume
        self._clearSelect("fixed-select")
        self._byId("run-registration").click()
        self._waitFor(lambda: "Cannot start the registration: The fixed volume is not set" in self._error(), 20,
                      "the no-volume message")
        self._byId("run-study").click()
        self._waitFor(lambda: "Cannot start the study: The fixed volume is not set" in self._error(), 20,
                      "the no-volume message of the study")
        self._closeError()
        # the server is still alive and usable
        self._choose("fixed-select", "fixed_1")
        self._byId("show-grid").click()
        self._waitFor(lambda: "Grid shown" in self._text("status") and not self._error(), 30,
                      "the grid after the bad inputs")
        self.assertIsNone(self.server.poll(), "the server must not crash on bad input")

    def test_3_registration_and_small_study(self):
        self._waitFor(self._loaded, SAMPLE_SECONDS, "the sample pair to load")
        self._choose("scalesEstimator", "none")
        self._type("lbfgs2NumberOfIterations", "5")
        self._type("samplingSeed", "1")
        self._byId("run-registration").click()
        self._waitFor(lambda: self.driver.find_elements(By.CSS_SELECTOR, "#diagnosis-table tbody tr"),
                      REGISTRATION_SECONDS, "the diagnosis table")
        diagnosis = self._byId("diagnosis-table").text
        self.assertIn("scales estimator", diagnosis)
        self.assertIn("none", diagnosis)
        self.assertIn("Finished", self._text("status"))
        # The registration's result page (the panel's "Open result report"), served from the output folder.
        link = self._waitFor(lambda: self._byId("result-link").get_attribute("href"), 30, "the result page link")
        self.assertTrue(link.startswith(self.url), link)
        page = urllib.request.urlopen(link, timeout=10).read().decode("utf-8", "replace")
        self.assertIn('data-folding="0"', page)
        self.assertEqual(page.count('class="colour-bar"'), 2)

        self._type("study-spacings", "4 8")
        self._type("study-repeats", "1")
        time.sleep(0.5)  # the typed values reach the server's state before the click's trigger does
        self._byId("run-study").click()
        self._waitFor(lambda: self.driver.find_elements(By.CSS_SELECTOR, "#study-groups-table tbody tr"),
                      STUDY_SECONDS, "the study table")
        rows = self.driver.find_elements(By.CSS_SELECTOR, "#study-groups-table tbody tr")
        self.assertEqual(len(rows), 2 * 2, "2 spacings x 2 modes (1 repeat each)")
        self.assertEqual(len(self.driver.find_elements(By.CSS_SELECTOR, "#study-runs-table tbody tr")), 4)
        self.assertIn("4 runs", self._text("study-status"))
        self.assertGreaterEqual(len(self.driver.find_elements(By.CSS_SELECTOR, "#study-results .sr-svg svg")), 1)
        link = self._byId("study-groups-link").get_attribute("href")
        self.assertTrue(link.startswith(self.url), link)
        page = urllib.request.urlopen(link, timeout=10).read().decode("utf-8", "replace")
        self.assertIn("<svg", page)
        self.assertFalse(self._error())
        self.driver.save_screenshot(str(self.shots / "web_study.png"))
        # both ran as child processes through the job controller: their job folders hold the protocol's outputs
        jobs = {json.loads((folder / "job.json").read_text())["kind"]: folder
                for folder in (self.tmp / "output" / "jobs").iterdir()}
        self.assertEqual(set(jobs), {"registration", "study"})
        self.assertTrue((jobs["registration"] / "output" / "transform.tfm").is_file())
        self.assertTrue((jobs["study"] / "output" / "study.pickle").is_file())
        results = self._byId("study-results")
        self.driver.execute_script("arguments[0].scrollIntoView(true);", results)
        time.sleep(0.5)
        self.driver.save_screenshot(str(self.shots / "web_results.png"))

    def test_4_accuracy_check_ranks_and_a_recommendation_sets_the_form(self):
        self._type("accuracy-seeds", "1")
        time.sleep(0.5)  # the typed value reaches the server's state before the click's trigger does
        self._byId("check-accuracy").click()
        self._waitFor(lambda: self.driver.find_elements(By.CSS_SELECTOR, "#accuracy-table tbody tr"),
                      STUDY_SECONDS, "the accuracy ranking")
        self.assertFalse(self._error())
        self.assertIn("candidates ranked", self._text("accuracy-status"))
        rows = [row.text for row in self.driver.find_elements(By.CSS_SELECTOR, "#accuracy-table tbody tr")]
        self.assertGreaterEqual(len(rows), 2)
        self.assertTrue(rows[0].startswith("1"), rows)
        self.assertEqual(sum("yours" in row for row in rows), 1, rows)
        page = urllib.request.urlopen(self._byId("accuracy-link").get_attribute("href"), timeout=10).read()
        self.assertIn(b"<svg", page)
        self.assertTrue(self._text("accuracy-text").startswith("- "))

        def form():  # every field of the drawer: the settings form and the advanced JSON
            return [(e.get_attribute("id"), e.get_attribute("value"), e.is_selected())
                    for e in self.driver.find_elements(By.CSS_SELECTOR, ".v-navigation-drawer input, "
                                                                        ".v-navigation-drawer textarea")]

        before = form()
        self._byId("apply-recommendation").click()
        self._waitFor(lambda: self._text("status").startswith("Applied: "), 10, "the recommendation applied")
        self.assertFalse(self._error())
        time.sleep(0.5)
        self.assertNotEqual(form(), before)
        self.driver.save_screenshot(str(self.shots / "web_accuracy.png"))

    def test_5_initial_transform_file_and_mask_reach_the_registration_job(self):
        import SimpleITK as sitk

        self._type("initial-path", str(self.tmp / "missing.tfm"))
        time.sleep(0.5)
        self._byId("run-registration").click()
        self._waitFor(lambda: "no such file" in self._error(), 30, "the missing initial transform's message")
        self._closeError()
        good = self.tmp / "initial.tfm"
        sitk.WriteTransform(sitk.TranslationTransform(3, (2.0, 0.0, 0.0)), str(good))
        self._type("initial-path", str(good))
        self._choose("mask-select", "fixed_1")
        self._choose("scalesEstimator", "none")
        self._type("lbfgs2NumberOfIterations", "5")
        time.sleep(0.5)  # the typed values reach the server's state before the click's trigger does
        folders = self.tmp / "output" / "jobs"
        before = set(folders.iterdir())

        def finished():
            return [f for f in set(folders.iterdir()) - before if (f / "output" / "bspline.tfm").is_file()]

        self._byId("run-registration").click()
        job = self._waitFor(finished, REGISTRATION_SECONDS, "the registration with an initial transform")[0]
        description = json.loads((job / "job.json").read_text())
        self.assertEqual(description["initial_transform"], "initial.tfm")
        self.assertTrue(description["mask"])
        self.assertTrue((job / "mask.nrrd").is_file())
        self._waitFor(lambda: "Finished" in self._text("status"), 30, "the finished status")
        self.assertFalse(self._error())

        # A study started with the same inputs stores them, as `spacingreg study --mask --initial-transform` does.
        studies = set((self.tmp / "output").glob("study-*"))

        def reported():
            return [s for s in set((self.tmp / "output").glob("study-*")) - studies
                    if (s / "report" / "report.html").is_file()]

        self._byId("run-study").click()
        study = self._waitFor(reported, STUDY_SECONDS, "the masked study's report")[0]
        self.assertTrue((study / "inputs" / "mask.nrrd").is_file())
        self.assertTrue((study / "inputs" / "initial.tfm").is_file())
        self.assertFalse(self._error())


if __name__ == "__main__":
    unittest.main()
