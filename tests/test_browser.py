"""The node's page in a real browser: headless Chromium, driven by selenium, against a real
`cm serve` on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from cloudmanager.testing import sha256_hex
from tests.servers.node import NodeServer

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: How long to wait for the page or a download (a wait, not a measure).
WAIT_S = 60


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[tuple[WebDriver, Path]]:
    """Headless Chromium, and the folder its downloads go to."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Page.setDownloadBehavior",
                               {"behavior": "allow", "downloadPath": str(downloads)})
        yield driver, downloads
    finally:
        driver.quit()


def _wait_for(driver: WebDriver, by: str, value: str) -> WebElement:
    """The element, once the page shows it."""
    return WebDriverWait(driver, WAIT_S).until(expected_conditions.presence_of_element_located((by, value)))


def _log_in(driver: WebDriver, server: NodeServer, token: str) -> None:
    driver.get(f"{server.base_url}/")
    _wait_for(driver, By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()


def test_log_in_see_a_file_and_download_it(node_server: NodeServer, browser: tuple[WebDriver, Path],
                                           files: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    driver, downloads = browser
    name = f"quarterly report {secrets.token_hex(3)}.txt"
    data = os.urandom(3000)
    source = files / "report.bin"
    source.write_bytes(data)
    digest = sha256_hex(data)
    with node_server.client() as client:
        client.put(digest, name, source)

    _log_in(driver, node_server, node_server.token)
    link = _wait_for(driver, By.LINK_TEXT, name)
    row = link.find_element(By.XPATH, "./ancestor::tr")
    assert digest[:12] in row.text and "2.9 KiB" in row.text
    gauge = driver.find_element(By.TAG_NAME, "meter")
    assert int(gauge.get_attribute("max") or 0) == 1 << 30 and int(gauge.get_attribute("value") or 0) >= 3000
    assert "vault" in driver.find_element(By.ID, "hosts").text
    screenshot = tmp_path / "node-page.png"
    assert driver.save_screenshot(str(screenshot))
    with capsys.disabled():
        print(f"\nscreenshot of the node's page: {screenshot}")

    link.click()
    saved = downloads / name
    WebDriverWait(driver, WAIT_S).until(
        lambda _: saved.exists() and not any(downloads.glob("*.crdownload")))
    assert saved.read_bytes() == data

    driver.find_element(By.ID, "logout").click()
    _wait_for(driver, By.ID, "token")
    assert name not in driver.page_source


def test_a_wrong_token_shows_the_error(node_server: NodeServer, browser: tuple[WebDriver, Path]) -> None:
    driver, _ = browser
    _log_in(driver, node_server, "not the token")
    problem = _wait_for(driver, By.ID, "problem")
    assert problem.text == "Wrong token."
    assert driver.find_elements(By.ID, "files") == [] and driver.find_elements(By.ID, "token")
