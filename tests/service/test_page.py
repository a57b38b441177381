"""The web page in a real browser: headless Chromium (Debian's) driven by Selenium.

Screenshots go to ``$DATAKILN_ARTIFACTS`` (default ``test-artifacts/``) and are kept.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.service.conftest import image_spec

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("DATAKILN_ARTIFACTS", ROOT / "test-artifacts")) / "service"


def _browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service as DriverService

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip(
            "no Chromium here: install Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver; .ci/run does)"
        )
    options = Options()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1000")
    # an explicit driver path: Selenium then never tries to download one
    return webdriver.Chrome(service=DriverService(executable_path=driver), options=options)


@pytest.fixture
def browser():
    driver = _browser()
    yield driver
    driver.quit()


def test_page_shows_a_job_succeed_and_the_cache(service, raw_images, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    from selenium.common.exceptions import StaleElementReferenceException

    # the page redraws a table when its data changes: an element may go stale between looks
    wait = WebDriverWait(
        browser, 120, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    )
    browser.get(service.url + "/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "health"), "service up"))

    status, job = service.call("POST", "/jobs", {"spec": image_spec(raw_images, output="pets")})
    assert status == 200
    row = f"job-{job['id']}"
    wait.until(ec.presence_of_element_located((By.ID, row)))
    browser.save_screenshot(str(ARTIFACTS / "jobs-submitted.png"))
    wait.until(lambda d: d.find_element(By.ID, row).get_attribute("data-state") == "succeeded")
    text = browser.find_element(By.ID, row).text
    assert "succeeded" in text
    assert "inputs 41 = baked 40 + rejected 1" in text
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '#caches tr[data-name="pets"]')))
    browser.save_screenshot(str(ARTIFACTS / "jobs-succeeded.png"))

    browser.find_element(By.CSS_SELECTOR, '#caches tr[data-name="pets"] a').click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "summary"), "inputs 41"))
    assert browser.find_element(By.ID, "title").text == "pets"
    assert "c0 (20)" in browser.find_element(By.ID, "classes").text
    reasons = browser.find_elements(By.CSS_SELECTOR, "#rejected tr.rejected-reason")
    assert len(reasons) == 1
    assert "broken.png" in reasons[0].text
    fields = browser.find_element(By.ID, "fields").text
    assert "images" in fields
    assert "uint8" in fields
    wait.until(
        lambda d: d.execute_script(
            "const i = document.getElementById('preview'); return i.complete && i.naturalWidth;"
        )
    )
    browser.save_screenshot(str(ARTIFACTS / "cache-page.png"))
    assert (ARTIFACTS / "cache-page.png").stat().st_size > 10_000
