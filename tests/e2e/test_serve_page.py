"""The web page of `s2s serve` in a real browser: headless Chromium (Debian's chromium and chromium-driver, which
.ci/run installs) loads the page from a running server, types a sentence and reads the answer from the page."""

from __future__ import annotations

import shutil
import signal
import sys

import pytest

from tests.e2e.test_serve import LINES, start
from tests.helpers import ROOT

pytest.importorskip("selenium.webdriver")
if not (shutil.which("chromium") and shutil.which("chromedriver")):
    pytest.skip("needs Chromium and ChromeDriver: apt-get install chromium chromium-driver", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from page_screenshot import open_chromium  # noqa: E402  (the README's screenshot opens the page the same way)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = open_chromium(tmp_path_factory.mktemp("chromium"), (1100, 900))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(trained_run, trained_language_model, tmp_path_factory):
    served = tmp_path_factory.mktemp("page")
    shutil.copytree(trained_language_model, served / "play")
    process, port = start([trained_run, served / "play"])
    yield f"http://127.0.0.1:{port}/"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def test_the_page_translates_a_typed_sentence_and_shows_its_attention(browser, page, translator):
    browser.get(page)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.ID, "status").text.startswith("ready"))
    browser.find_element(By.ID, "translate-input").send_keys(LINES[0])
    browser.find_element(By.ID, "translate-button").click()
    shown = wait.until(lambda b: b.find_elements(By.ID, "translation-text"))[0].text
    assert shown == translator.best(LINES[:1])[0]
    heat_map_rows = browser.find_elements(By.CSS_SELECTOR, "#translate-output table.heat tbody tr")
    assert len(heat_map_rows) == len(translator.translate(LINES[:1])[0][0].target_pieces) + 1  # and EOS


def test_the_page_shows_generated_text_as_it_streams(browser, page):
    browser.get(page)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "nav button[data-task=language_model]"))
    browser.find_element(By.CSS_SELECTOR, "nav button[data-task=language_model]").click()
    browser.find_element(By.ID, "generate-prompt").send_keys("ROMEO:")
    length = browser.find_element(By.ID, "generate-length")
    length.clear()
    length.send_keys("40")
    browser.find_element(By.ID, "generate-button").click()
    wait.until(lambda b: b.find_element(By.ID, "generate-button").is_enabled())
    written = browser.find_element(By.ID, "generate-output").text
    assert written.startswith("ROMEO:") and len(written) > len("ROMEO:")


def test_the_page_lists_every_endpoint_from_the_openapi_description(browser, page):
    browser.get(page)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "nav button[data-task=api]"))
    browser.find_element(By.CSS_SELECTOR, "nav button[data-task=api]").click()
    listed = {h.text for h in wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#api-list h3"))}
    assert {"POST /translate", "POST /generate", "GET /models", "GET /health/ready"} <= listed
