"""The explorer page in a real browser against a running gateway: pick a metric and two
devices, draw the chart, and check that it shows exactly the gateway's answer, with breaches
marked, the cache outcome, and copy-as snippets that name the same question. No console
error may occur. Saves a screenshot.

Usage: explorer_check.py http://127.0.0.1:PORT SCREENSHOT.png
"""

import sys
import time
import urllib.parse

import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

import browser

gateway, screenshot = sys.argv[1].rstrip("/"), sys.argv[2]
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def chart_state(driver):
    return driver.find_element(By.ID, "chart").get_attribute("data-state")


driver = browser.start()
try:
    driver.get(gateway + "/")
    wait = WebDriverWait(driver, 30)
    # The page loads the catalog and draws a first chart by itself.
    wait.until(lambda d: d.execute_script("return window.explorer && window.explorer.ready"))
    check(chart_state(driver) == "drawn", f"first view not drawn: {chart_state(driver)}")

    # The metric picker is the catalog, with labels and units.
    catalog = requests.get(gateway + "/v1/metrics", timeout=10).json()["metrics"]
    picker = Select(driver.find_element(By.ID, "metric"))
    options = {o.get_attribute("value"): o.text for o in picker.options}
    check(set(options) == {m["name"] for m in catalog}, "the picker is not the catalog")
    check(options.get("bandwidth") == "Bandwidth (bytes/sec)", f"label and unit: {options.get('bandwidth')}")

    # A person's question: bandwidth, two devices, the last 24 hours, breaches marked.
    picker.select_by_value("bandwidth")
    devices = driver.find_element(By.ID, "devices")
    devices.clear()
    devices.send_keys("456, 123")
    driver.find_element(By.CSS_SELECTOR, 'input[name="range"][value="24h"]').click()
    Select(driver.find_element(By.ID, "interval")).select_by_value("15min")
    before = driver.execute_script("return window.explorer.url")
    driver.find_element(By.ID, "show").click()
    wait.until(lambda d: d.execute_script("return window.explorer.url") != before
               and not d.execute_script("return window.explorer.loading"))
    check(chart_state(driver) == "drawn", f"not drawn: {chart_state(driver)}")

    url = driver.execute_script("return window.explorer.url")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    check(query.get("metric") == "bandwidth", f"metric in {url}")
    check(query.get("devices") == "123,456", f"devices in {url}")
    check(query.get("interval") == "15min", f"interval in {url}")
    check(query.get("breachtimes") == "true", f"breachtimes in {url}")
    check(query.get("from") == "now-24h" and "to" not in query, f"a rolling range in {url}")

    # The chart holds exactly what the gateway answers for that question (now a cache hit).
    answer = requests.get(gateway + url, timeout=10)
    check(answer.status_code == 200, f"{url}: {answer.status_code}")
    check("hit" in answer.headers.get("Cache-Status", ""), "the page's request filled the cache")
    body = answer.json()
    shown = driver.execute_script("return window.explorer.series")
    check([s["did"] for s in shown] == [123, 456], f"series: {[s['did'] for s in shown]}")
    for s, expected in zip(shown, body["series"]):
        check(s["timestamps"] == [p["timestamp"] for p in expected["points"]], f"timestamps of did {s['did']}")
        check(s["values"] == [p["value"] for p in expected["points"]], f"values of did {s['did']}")
        check(len(s["values"]) >= 96, f"a day at 15 min: {len(s['values'])} points")
        check(s["unit"] == "bytes/sec", f"unit {s['unit']}")
    chart = driver.find_element(By.ID, "chart")
    expected_points = sum(1 for s in body["series"] for p in s["points"] if p["value"] is not None)
    check(chart.get_attribute("data-points") == str(expected_points), "data-points")
    check(chart.get_attribute("data-breaches") == str(len(body["breaches"])), "data-breaches")
    check(len(body["breaches"]) > 0, "a day of two devices has model breaches to mark")
    rows = driver.find_elements(By.CSS_SELECTOR, "#breach-list tbody tr")
    check(len(rows) == len(body["breaches"]), f"breach rows: {len(rows)}")
    check(len(driver.find_elements(By.CSS_SELECTOR, "#chart canvas")) == 1, "one canvas")

    # The cache outcome of the page's own request.
    cache = driver.find_element(By.ID, "cache-status").text
    check(cache.startswith("Cache-Status: metricgate;"), f"cache outcome: {cache!r}")
    check(driver.find_element(By.ID, "cache-badge").text != "", "cache badge")

    # Copy as: the same question in each language.
    for lang, needle in (
        ("curl", f"curl -s '{gateway}{url}'"),
        ("python", '"devices": "123,456"'),
        ("typescript", 'devices: ["123", "456"]'),
    ):
        driver.find_element(By.CSS_SELECTOR, f'.tabs [data-lang="{lang}"]').click()
        text = driver.find_element(By.ID, "snippet").text
        check(needle in text, f"{lang} snippet lacks {needle!r}:\n{text}")

    errors = browser.console_errors(driver)
    check(not errors, f"console errors: {errors}")

    # A bad question shows the gateway's problem, not a broken chart. (The browser logs the
    # 400 itself as a failed load: the only console error allowed from here on.)
    devices.clear()
    devices.send_keys("123")
    driver.find_element(By.CSS_SELECTOR, 'input[name="range"][value="7d"]').click()
    Select(driver.find_element(By.ID, "interval")).select_by_value("1min")
    driver.find_element(By.ID, "show").click()
    wait.until(lambda d: d.find_element(By.ID, "problem").is_displayed())
    problem = driver.find_element(By.ID, "problem").text
    check("interval" in problem and "coarser" in problem, f"problem shown: {problem!r}")
    bad_url = driver.execute_script("return window.explorer.url")
    for entry in browser.console_errors(driver):
        expected = bad_url in entry["message"] and "400" in entry["message"]
        check(expected, f"console error: {entry}")

    # Back to the good view for the screenshot.
    Select(driver.find_element(By.ID, "interval")).select_by_value("auto")
    devices.clear()
    devices.send_keys("123, 456")
    driver.find_element(By.CSS_SELECTOR, 'input[name="range"][value="24h"]').click()
    driver.find_element(By.CSS_SELECTOR, '.tabs [data-lang="python"]').click()
    driver.find_element(By.ID, "show").click()
    wait.until(lambda d: chart_state(d) == "drawn" and not d.find_element(By.ID, "problem").is_displayed())
    time.sleep(0.2)  # let the canvas paint before the picture (the test's outcome is decided above)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(900, min(height + 200, 2400)))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(screenshot)

    errors = browser.console_errors(driver)
    check(not errors, f"console errors: {errors}")
finally:
    driver.quit()

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("explorer OK")
