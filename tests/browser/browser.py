"""Headless Chromium (Debian's chromium and chromium-driver) under Selenium, as the browser
tests drive it: a fresh profile, nothing fetched from the network but the page's own host."""

import os
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def start(width=1280, height=1000):
    """A headless Chromium whose console messages are kept for get_log("browser")."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="metricgate-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Selenium Manager would look for drivers online; Debian's driver is given explicitly.
    os.environ.setdefault("SE_OFFLINE", "true")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def console_errors(driver):
    """Console messages at error level (uncaught exceptions, failed loads, CSP refusals)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
