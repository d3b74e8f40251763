#!/usr/bin/env python
"""Render the user guide's pictures into docs/images/ with Slicer's own displayable managers (offscreen).

    .venv/bin/python docs/make_screenshots.py

The volume is a synthetic PET-like phantom (a warm body with hot spots), so the pictures carry no
third-party data. The study report and result page pictures need Debian's chromium; without it they are skipped
(the report's difference maps also need chromedriver).
The web pictures (docs/images/web_*.png) come from the browser test, run with the phantom in place of the sample
pair.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SpacingRegistration"))

from SpacingRegistrationLib import registration  # noqa: E402
from SpacingRegistrationLib.cli import write_result  # noqa: E402
from SpacingRegistrationLib.mrml import bridge, rendering  # noqa: E402
from SpacingRegistrationLib.grid import grid_geometry  # noqa: E402
from SpacingRegistrationLib.report import write_report  # noqa: E402
from SpacingRegistrationLib.settings import RegistrationSettings  # noqa: E402
from SpacingRegistrationLib.study_runner import run_study  # noqa: E402
from SpacingRegistrationLib.study_spec import StudySpec  # noqa: E402
from SpacingRegistrationLib.variability import analyse  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"
#: The moving phantom is the fixed one moved by this many voxels along +x.
SHIFT_VOXELS = 1.5


def phantom(shift_voxels: float = 0.0) -> sitk.Image:
    """64x56x48 voxels of 2 mm: an ellipsoidal body, two hot spots and a ring (a PET-like heart)."""
    z, y, x = np.mgrid[:48, :56, :64].astype(float)
    x = x - shift_voxels
    body = (((x - 32) / 26) ** 2 + ((y - 28) / 22) ** 2 + ((z - 24) / 20) ** 2) < 1
    ring = np.abs(np.sqrt((x - 38) ** 2 + (y - 24) ** 2 + (z - 24) ** 2) - 6) < 2
    spots = np.exp(-((x - 20) ** 2 + (y - 34) ** 2 + (z - 20) ** 2) / 8) + np.exp(-((x - 30) ** 2 + (y - 16) ** 2
                                                                                   + (z - 30) ** 2) / 6)
    values = 1.0 * body + 4.0 * ring + 6.0 * spots
    image = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(values.astype(np.float32)), 1.0)
    image.SetSpacing([2.0, 2.0, 2.0])
    return image


def grid_pictures(fixed: sitk.Image):
    scene = bridge.createScene()
    volume = bridge.volumeNodeFromImage(scene, fixed, "phantom")
    geometry = grid_geometry(sitk.BSplineTransformInitializer(fixed, [2, 2, 2]), fixed)
    bridge.controlGridModelNodes(scene, geometry, "grid")
    for orientation in rendering.ORIENTATIONS:
        rendering.renderSliceView(scene, orientation, volume, IMAGES / f"grid_{orientation.lower()}.png",
                                  size=(420, 420), margin=0.35)
    rendering.render3DView(scene, IMAGES / "grid_3d.png", size=(520, 420), volumeNode=volume)
    print(f"grid: {geometry.inside_count} inside, {geometry.outside_count} outside")


def known_shift(fixed: sitk.Image, folder) -> Path:
    """The moving phantom is the fixed one shifted by +x: its known deformation, as a transform file."""
    truth = Path(folder) / "truth.tfm"
    sitk.WriteTransform(sitk.TranslationTransform(3, (SHIFT_VOXELS * fixed.GetSpacing()[0], 0.0, 0.0)), str(truth))
    return truth


def screenshot(page: Path, picture: Path, folder, height: int = 1900):
    """A headless-chromium picture of an HTML page, 1300 pixels wide."""
    subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={folder}/chromium", f"--window-size=1300,{height}",
                    f"--screenshot={picture}", page.as_uri()], check=True, capture_output=True, timeout=120)


def report_picture(fixed: sitk.Image, moving: sitk.Image):
    if shutil.which("chromium") is None:
        print("chromium not found: report picture skipped")
        return
    with tempfile.TemporaryDirectory() as folder:
        spec = StudySpec(settings=RegistrationSettings(scales_estimator="none", mesh_size=(3, 3, 3)),
                         spacings=(1.0, 2.0, 4.0, 10.0), repeats=3,
                         modes=("native-default", "native-reproducible", "normalised-reproducible"))
        outcome = run_study(spec, fixed, moving, Path(folder) / "study", executor="pool",
                            truth=known_shift(fixed, folder))
        paths = write_report(outcome.store, analyse(outcome.store, output=Path(folder) / "maps"), Path(folder) / "report")
        screenshot(paths["html"], IMAGES / "report.png", folder)
        print("report picture written")
        if shutil.which("chromedriver") is None:
            print("chromedriver not found: report difference maps picture skipped")
            return
        element_screenshot(paths["html"], "figure:has(figcaption.difference-maps)",
                           IMAGES / "report_difference_maps.png", folder)
    print("report difference maps picture written")


def element_screenshot(page: Path, selector: str, picture: Path, folder):
    """A picture of one element of an HTML page (anywhere on it, not only the first screen), via chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1300,1900",
                 "--force-device-scale-factor=1", f"--user-data-dir={folder}/chromedriver"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(page.as_uri())
        driver.find_element(By.CSS_SELECTOR, selector).screenshot(str(picture))
    finally:
        driver.quit()


def result_page_picture(fixed: sitk.Image, moving: sitk.Image):
    """The result page of one registration of the phantom pair (what `spacingreg register --output` writes)."""
    if shutil.which("chromium") is None:
        print("chromium not found: result page picture skipped")
        return
    with tempfile.TemporaryDirectory() as folder:
        settings = RegistrationSettings(scales_estimator="none", mesh_size=(3, 3, 3), reproducible=True)
        result = registration.run(fixed, moving, settings, truth=known_shift(fixed, folder))
        paths = write_result(result, Path(folder) / "result", fixed)
        screenshot(paths["page"], IMAGES / "result_page.png", folder, height=1500)
    print("result page picture written")


def web_pictures(fixed: sitk.Image, moving: sitk.Image):
    """Testing/test_web.py with the phantom as the web app's sample pair, keeping its screenshots."""
    with tempfile.TemporaryDirectory() as cache:
        sample = Path(cache) / "pet_like_4mm"  # where the web app looks for its sample pair
        sample.mkdir()
        sitk.WriteImage(fixed, str(sample / "fixed.nrrd"))
        sitk.WriteImage(moving, str(sample / "moving.nrrd"))
        environment = {**os.environ, "SPACINGREG_CACHE": cache, "SPACINGREG_WEB_SCREENSHOTS": str(IMAGES)}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "Testing/test_web.py"], check=True, env=environment,
                       cwd=Path(__file__).resolve().parents[1])
    (IMAGES / "web_study.png").unlink(missing_ok=True)
    print("web pictures written")


def main():
    IMAGES.mkdir(exist_ok=True)
    fixed, moving = phantom(), phantom(shift_voxels=SHIFT_VOXELS)
    grid_pictures(fixed)
    report_picture(fixed, moving)
    result_page_picture(fixed, moving)
    web_pictures(fixed, moving)


if __name__ == "__main__":
    main()
