"""Headless Chromium for the browser tests (the web front end, the report page): what is installed and one way
to start it, so that every such test drives the same browser the same way."""

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import PIL.Image  # noqa: F401  (the tests read the browser's pixels)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    SELENIUM = True
except ImportError:
    SELENIUM = False
AVAILABLE = bool(CHROMIUM and CHROMEDRIVER and SELENIUM)
#: No sandbox (containers), no GPU, nothing fetched in the background, one device pixel per CSS pixel.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--force-device-scale-factor=1")


def skip_reason(test: str) -> str:
    return (f"{test} needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver), selenium "
            f"and Pillow; found chromium={CHROMIUM}, chromedriver={CHROMEDRIVER}, selenium/Pillow={SELENIUM}")


def start(profile_folder, width: int, height: int):
    """A headless Chromium window of ``width`` x ``height`` pixels driven through chromedriver, its profile in
    ``profile_folder``."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + (f"--window-size={width},{height}", f"--user-data-dir={profile_folder}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver
